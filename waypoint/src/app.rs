//! Wires the waypoint together: certificate (CSR to the CA, renewed at half life) → ADS
//! client (config snapshots; it binds a gateway's listeners as they come) → HBONE listener
//! (the request path) and admin → shutdown.

use crate::{
    admin::{self, AdminView},
    config::Config,
    gateway::Sockets,
    identity::{self, CaSigner, Signer, WaypointIdentity},
    inbound,
    state::Shared,
    xds,
};
use anyhow::Context;
use std::{net::SocketAddr, sync::Arc};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinHandle,
};
use tracing::info;
use weft_hbone::TrustBundle;
use weft_xds::{
    ca::{CaClient, CaClientConfig},
    client::{AdsClient, ClientConfig, ClientTls},
};

/// What the waypoint is started with. `run` makes it from the command line; in-process
/// tests make it themselves (a test CA as signer, an in-process ADS server).
pub struct Wiring {
    pub config: Config,
    pub signer: Arc<dyn Signer>,
    /// The mesh root (`ROOTCA`).
    pub roots: TrustBundle,
    pub xds: ClientConfig,
}

/// A started waypoint.
pub struct Running {
    pub shared: Arc<Shared>,
    pub hbone_address: SocketAddr,
    pub admin_address: SocketAddr,
    shutdown: watch::Sender<bool>,
    xds: AdsClient,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The ADS client's connection state.
    pub fn xds_state(&self) -> watch::Receiver<weft_xds::client::ClientState> {
        self.xds.state()
    }

    /// Stops accepting, tells HBONE connections to drain (GOAWAY) and stops the ADS client.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        self.xds.stop().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Binds the listeners and starts every task.
pub async fn start(wiring: Wiring) -> anyhow::Result<Running> {
    let Wiring { config, signer, roots, xds: xds_config } = wiring;
    let identity = Arc::new(WaypointIdentity::new(config.identity()?, roots));
    let mut shared = Shared::new(identity.clone(), weft_hbone::Settings::default());
    shared.proxy_type = config.proxy_type;
    shared.pod_ip = config.pod_ip;
    let shared = Arc::new(shared);
    if config.access_log {
        shared.metrics.access_log.store(Some(Arc::new(crate::access_log::AccessLog::stdout())));
    }
    let hbone = TcpListener::bind(config.hbone_address)
        .await
        .with_context(|| format!("binding the HBONE address {}", config.hbone_address))?;
    let admin = TcpListener::bind(config.admin_address)
        .await
        .with_context(|| format!("binding the admin address {}", config.admin_address))?;
    let (hbone_address, admin_address) = (hbone.local_addr()?, admin.local_addr()?);
    let metrics = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?,
        ),
        None => None,
    };
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(identity::keep_fresh(identity, signer, config.cert_ttl)),
        tokio::spawn(admin::serve(
            admin,
            Arc::new(AdminView { config: config.clone(), shared: shared.clone() }),
        )),
        tokio::spawn(inbound::serve(hbone, shared.clone(), stop.clone())),
    ];
    if let Some(listener) = metrics {
        let for_render = shared.clone();
        let render: weft_telemetry::listener::Render = Arc::new(move || admin::exposition(&for_render));
        let for_ready = shared.clone();
        let ready: weft_telemetry::listener::Ready = Arc::new(move || admin::readiness(&for_ready));
        tasks.push(tokio::spawn(weft_telemetry::listener::serve(listener, render, Some(ready))));
    }
    let sockets = Sockets::new(shared.clone(), stop.clone());
    let xds = xds::start_with(xds_config, shared.clone(), sockets).context("starting the xDS client")?;
    let (mut state, watched) = (xds.state(), shared.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            let connected = state.borrow_and_update().connected;
            watched.xds_connected.store(connected, std::sync::atomic::Ordering::Relaxed);
            if state.changed().await.is_err() {
                break;
            }
        }
    }));
    info!(%hbone_address, %admin_address, identity = %shared.identity.identity(), "weft-waypoint started");
    Ok(Running { shared, hbone_address, admin_address, shutdown, xds, tasks })
}

/// Runs the waypoint until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = %serde_json::to_string(&config)?, "starting weft-waypoint");
    let pem = std::fs::read_to_string(&config.ca_root_cert)
        .with_context(|| format!("reading --ca-root-cert {}", config.ca_root_cert.display()))?;
    let roots = TrustBundle::from_pem(&pem)
        .with_context(|| format!("--ca-root-cert {}", config.ca_root_cert.display()))?;
    let ca_address = config.ca_address.clone().unwrap_or_else(|| config.xds_address.clone());
    let ca_tls = ca_address.starts_with("https://").then(|| ClientTls {
        root_cert: config.ca_root_cert.clone(),
        server_name: config.ca_server_name.clone(),
    });
    let ca = CaClient::new(CaClientConfig::new(&ca_address, ca_tls, config.token_file.clone()))
        .context("configuring the CA client")?;
    let xds = xds::client_config(&config);
    let running = start(Wiring { signer: Arc::new(CaSigner(Arc::new(ca))), roots, xds, config }).await?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: stopping"),
        _ = sigint.recv() => info!("SIGINT: stopping"),
    }
    running.stop().await;
    Ok(())
}
