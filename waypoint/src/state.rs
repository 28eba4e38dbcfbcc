//! What every part of the waypoint shares: the config snapshot in force, the waypoint's
//! certificate, the HBONE client, the xDS status and the counters.

use crate::{
    config::ProxyType, identity::WaypointIdentity, metrics::Metrics, snapshot::Snapshot,
    upstream::conn::HboneClient, xds::XdsStatus,
};
use arc_swap::ArcSwap;
use std::{
    net::IpAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

pub struct Shared {
    /// The configuration in force; swapped whole by the xDS client.
    pub snapshot: ArcSwap<Snapshot>,
    pub identity: Arc<WaypointIdentity>,
    /// HBONE origination towards endpoints.
    pub hbone: HboneClient,
    /// HTTP/2 and pool settings of HBONE, both ways.
    pub hbone_settings: weft_hbone::Settings,
    /// For the admin endpoint only (never read on the data path).
    pub xds_status: Mutex<XdsStatus>,
    pub metrics: Metrics,
    /// An ADS stream to the control plane is open (for the metrics).
    pub xds_connected: AtomicBool,
    /// A waypoint or a gateway: what "ready" means.
    pub proxy_type: ProxyType,
    /// The proxy's own pod address (`--pod-ip`): a gateway finds its own workload's names
    /// by it, for the source side of its metrics.
    pub pod_ip: IpAddr,
}

impl Shared {
    pub fn new(identity: Arc<WaypointIdentity>, hbone_settings: weft_hbone::Settings) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            hbone: HboneClient {
                pool: weft_hbone::Pool::new(hbone_settings.clone()),
                identity: identity.clone(),
            },
            identity,
            hbone_settings,
            xds_status: Mutex::default(),
            metrics: Metrics::default(),
            xds_connected: AtomicBool::new(false),
            proxy_type: ProxyType::Waypoint,
            pod_ip: IpAddr::from([0, 0, 0, 0]),
        }
    }

    /// Ready: a certificate and a first configuration from the control plane: a
    /// waypoint's HBONE termination and dispatch table, a gateway's (router's) listeners.
    pub fn ready(&self) -> bool {
        let snapshot = self.snapshot.load();
        let configured = match self.proxy_type {
            ProxyType::Waypoint => snapshot.terminate.is_some() && snapshot.main_internal,
            ProxyType::Router => snapshot.listeners_received,
        };
        configured && self.identity.current().is_some()
    }
}
