//! Wires the agent together: config → datapath → model source, enrollment, proxies,
//! admin → drain.

use crate::{
    admin::{self, AdminView},
    config::Config,
    datapath::{Datapath, DatapathConfig},
    drain::Drain,
    enrollment::{self, Enrollment},
    inpod::{self, server::Handovers},
    localconfig::{self, ConfigStatus},
    metrics::Metrics,
    netns::NetNs,
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
use weft_model::{Mesh, MeshIndex};

pub async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = %serde_json::to_string(&config)?, "starting weft-agent");
    let cgroup = config.cgroup.clone().context("cgroup resolved by validate()")?;

    // From a file, the model is there before anything starts; from xDS it arrives later,
    // and the agent stays not ready until it does.
    let mesh = match &config.local_config {
        Some(path) => localconfig::load(path).context("initial local config")?,
        None => MeshIndex::new(Mesh::default()),
    };
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
    let enrollment = Enrollment::new(
        datapath,
        shared.clone(),
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
            home_inode: shared.host_netns.inode(),
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
    let view = Arc::new(AdminView {
        config: config.clone(),
        shared: shared.clone(),
        enrollment: enrollment.status(),
        model_source: model_source.clone(),
    });
    tokio::spawn(admin::serve(admin_listener, view));

    let _xds_client = match (&config.local_config, &config.xds_address) {
        (Some(path), _) => {
            model_source.lock().expect("config status lock").generation = 1;
            shared.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(localconfig::watch(path.clone(), shared.clone(), commands.clone(), model_source));
            None
        }
        (None, Some(url)) => {
            let (client, mut first) =
                xds::start(url, &config.node, shared.clone(), commands.clone(), model_source)
                    .context("starting the xDS client")?;
            info!(endpoint = %url, "waiting for the first workload addresses from the control plane");
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
        move || inpod::mesh_namespaces(&mesh.mesh.load().mesh),
    ));
    let enrollment_thread = std::thread::Builder::new()
        .name("enrollment".into())
        .spawn(move || enrollment.run(command_rx))
        .context("spawning the enrollment thread")?;

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
