//! The mTLS settings of HBONE, in and out (Istio's `buildCommonConnectTLSContext`): TLS 1.3,
//! ALPN h2, the proxy's own certificate as SDS secret `default` and the mesh root as
//! `ROOTCA`. The SDS configs name no `sds_config`: Envoy then takes the secrets from its
//! bootstrap (`static_resources.secrets`), and weft-waypoint maps them to its workload
//! certificate and the mesh root.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, SdsSecretConfig, TlsParameters, common_tls_context, tls_parameters::TlsProtocol,
};

/// SDS name of the proxy's own certificate (Istio's).
pub const CERTIFICATE_SECRET: &str = "default";
/// SDS name of the mesh root (Istio's).
pub const ROOT_SECRET: &str = "ROOTCA";

pub fn common_context() -> CommonTlsContext {
    let sds = |name: &str| SdsSecretConfig { name: name.to_owned(), ..Default::default() };
    CommonTlsContext {
        // Both bounds, as Istio sets them: Envoy's client side stops at TLS 1.2 by
        // default, so a minimum alone leaves no version to offer.
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        alpn_protocols: vec!["h2".into()],
        tls_certificate_sds_secret_configs: vec![sds(CERTIFICATE_SECRET)],
        validation_context_type: Some(common_tls_context::ValidationContextType::CombinedValidationContext(
            common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(Default::default()),
                validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}
