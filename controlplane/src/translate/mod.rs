//! Config snapshot → xDS snapshot.
//!
//! - `workload.rs`: Istio's workload API for agents (Address).
//! - `policy.rs`: AuthorizationPolicy and PeerAuthentication as agents enforce them
//!   (Authorization), and the policies each workload lists.
//! - `envoy/`: standard Envoy v3 resources for waypoints (Listener, RouteConfiguration,
//!   Cluster, ClusterLoadAssignment), so a stock Envoy can stand in for Weft's waypoint.
//! - `incremental.rs`: the [`Translator`] weftd runs, which turns pod-only changes into
//!   updates of what they touch.
//!
//! Translation is a pure function of the validated config: same config, same resources.
//! Resource versions are left to the xDS server, which hashes the encoded bytes (stable
//! across restarts), so its diff sends only what really changed.

pub mod envoy;
pub mod incremental;
pub mod policy;
pub mod workload;

pub use incremental::{Output, Translator};

use crate::config::store::ConfigSnapshot;
use weft_xds::{server::Snapshot, type_url};

/// Mesh settings translation reads.
#[derive(Debug, Clone)]
pub struct Options {
    pub trust_domain: String,
    /// `cluster.local` in `name.namespace.svc.cluster.local`.
    pub domain_suffix: String,
    /// Istio's root namespace: AuthorizationPolicies and PeerAuthentications there are
    /// mesh-wide.
    pub root_namespace: String,
    /// The cluster name in workload uids (`Kubernetes//Pod/ns/name`).
    pub cluster_id: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            trust_domain: "cluster.local".into(),
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
        }
    }
}

/// Everything weftd serves, for one config generation.
pub fn snapshot(cfg: &ConfigSnapshot, opts: &Options) -> Snapshot {
    let mut snap = Snapshot::new(cfg.generation.to_string());
    for r in workload::addresses(cfg, opts) {
        snap.add(type_url::ADDRESS, r);
    }
    for r in policy::authorizations(cfg, opts) {
        snap.add(type_url::AUTHORIZATION, r);
    }
    for (type_url, r) in envoy::resources(cfg, opts) {
        snap.add(type_url, r);
    }
    snap
}
