//! Wires the agent together: config → datapath → enrollment, proxies, admin → drain.

use crate::{
    admin::{self, AdminView},
    config::Config,
    datapath::{Datapath, DatapathConfig},
    drain::Drain,
    enrollment::{self, Enrollment},
    localconfig::{self, ConfigStatus},
    metrics::Metrics,
    netns::NetNs,
    state::Shared,
};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, mpsc};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

pub async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = %serde_json::to_string(&config)?, "starting weft-agent");
    let cgroup = config.cgroup.clone().context("cgroup resolved by validate()")?;

    let mesh = localconfig::load(&config.local_config).context("initial local config")?;
    let host_netns = NetNs::current().context("opening the agent's own netns")?;
    let (datapath, orig_dst) = Datapath::load(&DatapathConfig {
        cgroup,
        bpffs_dir: config.bpffs_dir.clone(),
        mark: config.mark,
        excluded_ports: config.excluded_ports.clone(),
    })
    .context("loading the eBPF datapath")?;

    let shared = Arc::new(Shared {
        mesh: ArcSwap::from_pointee(mesh),
        metrics: Metrics::default(),
        orig_dst,
        host_netns,
        mark: config.mark,
        trust_domain: config.trust_domain.clone(),
        drain: Arc::new(Drain::default()),
    });
    shared.metrics.config_reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;

    let enrollment =
        Enrollment::new(datapath, shared.clone(), config.node.clone(), tokio::runtime::Handle::current());
    let enrollment_status = enrollment.status();
    let (commands, command_rx) = mpsc::channel();
    let enrollment_thread = std::thread::Builder::new()
        .name("enrollment".into())
        .spawn(move || enrollment.run(command_rx))
        .context("spawning the enrollment thread")?;

    let config_status = Arc::new(Mutex::new(ConfigStatus {
        path: config.local_config.clone(),
        generation: 1,
        last_error: None,
    }));
    tokio::spawn(localconfig::watch(
        config.local_config.clone(),
        shared.clone(),
        commands.clone(),
        config_status.clone(),
    ));
    let view = Arc::new(AdminView {
        config: config.clone(),
        shared: shared.clone(),
        enrollment: enrollment_status,
        local_config: config_status,
    });
    tokio::spawn(admin::serve(admin_listener, view));

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: draining"),
        _ = sigint.recv() => info!("SIGINT: draining"),
    }
    let _ = commands.send(enrollment::Command::StopAccepting);
    tokio::task::spawn_blocking(move || enrollment_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("enrollment thread panicked"))?;
    let left = shared.drain.wait_idle(config.drain_timeout).await;
    if left > 0 {
        warn!(connections = left, timeout = ?config.drain_timeout, "drain timed out; closing what is left");
    } else {
        info!("drained");
    }
    Ok(())
}
