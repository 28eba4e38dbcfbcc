//! Type URLs of the resources Weft serves over ADS.
//!
//! Istio's workload API for node agents (the same URLs istiod uses for ztunnel) and Envoy v3
//! resources for waypoints, gateways and real Envoys.

/// `istio.workload.Address`: a workload or a service, for node agents.
pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
/// `istio.security.Authorization`: an L4 authorization policy, for node agents.
pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";

/// Envoy listeners (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Envoy HTTP route tables (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Envoy upstream clusters (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Envoy cluster endpoints (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Envoy secrets: certificates and validation contexts (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Name;

    /// The Envoy constants must equal what envoy-types' generated code calls these messages.
    #[test]
    fn envoy_type_urls_match_generated_names() {
        assert_eq!(super::LISTENER, config::listener::v3::Listener::type_url());
        assert_eq!(super::ROUTE, config::route::v3::RouteConfiguration::type_url());
        assert_eq!(super::CLUSTER, config::cluster::v3::Cluster::type_url());
        assert_eq!(super::ENDPOINT, config::endpoint::v3::ClusterLoadAssignment::type_url());
        assert_eq!(super::SECRET, Secret::type_url());
    }
}
