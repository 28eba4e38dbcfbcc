//! Wires the agent together: config → datapath → model source, enrollment, proxies,
//! admin → drain.

use crate::{
    admin::{self, AdminView},
    config::Config,
    datapath::{Datapath, DatapathConfig},
    drain::Drain,
    enrollment::{self, Enrollment},
    identity::{Ca, CaSigner, SecretManager},
    inpod::{self, server::Handovers},
    localconfig::{self, ConfigStatus},
    metrics::Metrics,
    netns::NetNs,
    podnet::PodNet,
    proxy::sockets::{PodSockets, Sockets},
    state::Shared,
    xds,
};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::{
    sync::{Arc, Mutex, atomic::Ordering, mpsc},
    time::Duration,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use weft_model::WorkloadState;

pub async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = %serde_json::to_string(&config)?, "starting weft-agent");
    let cgroup = config.cgroup.clone().context("cgroup resolved by validate()")?;

    // From a file, the model is there before anything starts; from xDS it arrives later,
    // and the agent stays not ready until it does.
    let state = match &config.local_config {
        Some(path) => localconfig::load(path, &config.trust_domain).context("initial local config")?,
        None => WorkloadState::default(),
    };
    let host_netns = NetNs::current().context("opening the agent's own netns")?;
    let home_inode = host_netns.inode();
    let (datapath, orig_dst, bypass) = Datapath::load(&DatapathConfig {
        cgroup,
        bpffs_dir: config.bpffs_dir.clone(),
        cgroup_root: crate::config::cgroup2_root().context("finding the cgroup v2 mount")?,
        excluded_ports: config.excluded_ports.clone(),
        excluded_inbound_ports: config.excluded_inbound_ports.clone(),
    })
    .context("loading the eBPF datapath")?;

    let sockets = Sockets::Pods(PodSockets {
        orig_dst,
        bypass,
        home: NetNs::current().context("opening the agent's own netns")?,
        mark: config.mark,
        inbound_mark: config.inbound_mark,
        app_ports: Default::default(),
    });
    let shared = Arc::new(Shared {
        state: ArcSwap::from_pointee(state),
        policies: ArcSwap::from_pointee(crate::policy::PolicyStore::default()),
        metrics: Metrics::default(),
        sockets,
        secrets: SecretManager::new(ca(&config)?, config.cert_ttl, tokio::runtime::Handle::current()),
        pool: weft_hbone::Pool::new(weft_hbone::Settings::default()),
        hbone: weft_hbone::Settings::default(),
        drain: Arc::new(Drain::default()),
    });

    // Which netns is which pod's: CNI handovers on a socket, and the kubelet's cgroups.
    let sandboxes = Arc::new(inpod::Sandboxes::default());
    let kubepods = config.kubepods_cgroup.as_ref().map(inpod::Kubepods::new);
    match &kubepods {
        Some(k) => {
            info!(root = %k.root().display(), driver = ?k.driver(), "running pods are found in the kubepods cgroup")
        }
        None => warn!(
            "no kubepods cgroup (--kubepods-cgroup): pods that started before the agent are not found, only pods \
             the CNI plugin hands over"
        ),
    }
    let cni_listener = inpod::server::bind(&config.cni_socket).context("opening the CNI handover socket")?;
    let binder = Arc::new(inpod::Binder::new(sandboxes.clone(), kubepods.clone()));

    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?,
        ),
        None => None,
    };
    let enrollment = Enrollment::new(
        datapath,
        shared.clone(),
        host_netns,
        PodNet { inbound_mark: config.inbound_mark, proc_sys: config.proc_sys_dir.clone() },
        binder,
        config.node.clone(),
        tokio::runtime::Handle::current(),
    );
    let (commands, command_rx) = mpsc::channel();
    let reconcile = commands.clone();
    tokio::spawn(inpod::server::serve(
        cni_listener,
        Handovers {
            sandboxes: sandboxes.clone(),
            home_inode,
            on_handover: Box::new(move || {
                let _ = reconcile.send(enrollment::Command::Reconcile);
            }),
        },
    ));
    if let Some(kubepods) = kubepods {
        tokio::spawn(inpod::server::collect_garbage(sandboxes, kubepods));
    }
    let model_source = Arc::new(Mutex::new(ConfigStatus {
        source: match (&config.local_config, &config.xds_address) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => unreachable!("validate() requires a model source"),
        },
        generation: 0,
        last_error: None,
    }));
    let readiness_listener = match config.readiness_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --readiness-addr {addr}"))?,
        ),
        None => None,
    };
    let view = Arc::new(AdminView {
        config: config.clone(),
        shared: shared.clone(),
        enrollment: enrollment.status(),
        model_source: model_source.clone(),
    });
    if let Some(listener) = readiness_listener {
        tokio::spawn(crate::readiness::serve(listener, view.enrollment.clone()));
    }
    tokio::spawn(admin::serve(admin_listener, view));
    if let Some(listener) = metrics_listener {
        let for_render = shared.clone();
        let render: weft_telemetry::listener::Render = Arc::new(move || admin::exposition(&for_render));
        tokio::spawn(weft_telemetry::listener::serve(listener, render, None));
    }

    let _xds_client = match (&config.local_config, &config.xds_address) {
        (Some(path), _) => {
            model_source.lock().expect("config status lock").generation = 1;
            shared.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(localconfig::watch(
                path.clone(),
                config.trust_domain.clone(),
                shared.clone(),
                commands.clone(),
                model_source,
            ));
            None
        }
        (None, Some(url)) => {
            let (client, mut first) = xds::start(&config, shared.clone(), commands.clone(), model_source)
                .context("starting the xDS client")?;
            info!(endpoint = %url, "waiting for the first workload addresses from the control plane");
            tokio::spawn(xds::count_terminations(client.state(), shared.clone()));
            let _ = first.wait_for(|got| *got).await;
            Some(client)
        }
        (None, None) => unreachable!("validate() requires a model source"),
    };
    // Only now, with a model: an empty set written before it would tell the plugin that
    // no pod needs the agent.
    let mesh = shared.clone();
    tokio::spawn(inpod::server::publish_mesh_namespaces(
        config.cni_socket.clone(),
        Duration::from_secs(1),
        move || inpod::mesh_namespaces(&mesh.state.load()),
    ));
    // The enrollment thread tells when it ends, however it ends: a panic there leaves the
    // pods' kernel state unmanaged, and an agent that kept reporting ready would be lying.
    let (enrollment_thread, ended_rx) = spawn_watched("enrollment", move || enrollment.run(command_rx))
        .context("spawning the enrollment thread")?;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: draining"),
        _ = sigint.recv() => info!("SIGINT: draining"),
        _ = ended_rx => {
            let panicked = tokio::task::spawn_blocking(move || enrollment_thread.join()).await?.is_err();
            anyhow::bail!(
                "the enrollment thread {}; exiting so the agent is restarted (pods stay captured: \
                 their eBPF state is pinned)",
                if panicked { "panicked" } else { "stopped" }
            );
        }
    }
    let _ = commands.send(enrollment::Command::StopAccepting);
    shared.drain.begin();
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

/// The CA the agent gets workload certificates from, when it has one (`--ca-address`, or
/// the xDS address, with `--ca-root-cert`): without it, HBONE fails closed.
fn ca(config: &Config) -> anyhow::Result<Option<Ca>> {
    let Some(client) = xds::ca_client(config).context("configuring the CA client")? else { return Ok(None) };
    let Some(root) = &config.ca_root_cert else {
        warn!("no --ca-root-cert: without the mesh root the agent cannot verify peers; HBONE is off");
        return Ok(None);
    };
    let pem = std::fs::read_to_string(root)
        .with_context(|| format!("reading --ca-root-cert {}", root.display()))?;
    let roots = weft_hbone::TrustBundle::from_pem(&pem)
        .with_context(|| format!("--ca-root-cert {}", root.display()))?;
    Ok(Some(Ca { signer: Arc::new(CaSigner(Arc::new(client))), roots }))
}

/// Spawns `f` on a thread named `name`; the receiver completes when the thread ends,
/// returning or panicking.
fn spawn_watched<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<(std::thread::JoinHandle<T>, tokio::sync::oneshot::Receiver<()>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _ended = EndSignal(Some(tx));
        f()
    })?;
    Ok((handle, rx))
}

/// Sends on drop, also while unwinding from a panic.
struct EndSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_thread_is_noticed() {
        let (handle, ended) = spawn_watched("doomed", || -> () { panic!("boom") }).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), ended).await.expect("noticed").unwrap();
        assert!(handle.join().is_err(), "it panicked");
        let (handle, ended) = spawn_watched("fine", || 7).unwrap();
        ended.await.unwrap();
        assert_eq!(handle.join().unwrap(), 7);
    }
}
