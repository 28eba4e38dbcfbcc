//! `istio.v1.auth.IstioCertificateService/CreateCertificate` on the secure port, as istiod
//! serves it (security/pkg/server/ca/server.go): authenticate the caller, read the CSR,
//! check the caller may hold the identity it names, sign.
//!
//! Where weftd differs from istiod: istiod ignores the CSR's SANs and signs the caller's own
//! identity (or the `ImpersonatedIdentity` a trusted node proxy names); weftd signs the
//! identity the CSR names, after checking the caller may hold it, and accepts
//! `ImpersonatedIdentity` only when it names the same identity.

use super::{CertificateAuthority, SignError, WorkloadCsr};
use crate::{auth::Authenticator, metrics::ControlPlaneMetrics};
use std::sync::{Arc, atomic::Ordering::Relaxed};
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use weft_xds::ca::IMPERSONATED_IDENTITY;
use weft_xds::ca::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use weft_xds::ca::proto::{IstioCertificateRequest, IstioCertificateResponse};

/// The CSR service.
#[derive(Debug, Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    auth: Arc<Authenticator>,
    metrics: Arc<ControlPlaneMetrics>,
}

impl CaService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        auth: Arc<Authenticator>,
        metrics: Arc<ControlPlaneMetrics>,
    ) -> Self {
        CaService { ca, auth, metrics }
    }

    /// The tonic service to mount.
    pub fn server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr();
        // istiod counts every request as a CSR, then what became of it.
        self.metrics.csrs.fetch_add(1, Relaxed);
        let caller = self.auth.authenticate(peer, request.metadata()).await.map_err(|e| {
            self.metrics.authentication_failures.fetch_add(1, Relaxed);
            e.status()
        })?;
        let request = request.into_inner();
        let peer_text = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let invalid = |reason: String| {
            warn!(target: "weftd::auth", peer = peer_text, %caller, reason, "refused a malformed CSR");
            Status::invalid_argument(reason)
        };
        let csr = WorkloadCsr::parse(&request.csr).map_err(|e| invalid(e.to_string()))?;
        if let Some(impersonated) = impersonated_identity(&request)
            && impersonated != csr.identity.to_string()
        {
            return Err(invalid(format!(
                "{IMPERSONATED_IDENTITY} {impersonated} differs from the CSR's identity {}",
                csr.identity
            )));
        }
        self.auth.authorize_identity(peer, &caller, &csr.identity).map_err(|e| e.status())?;
        let (chain, ttl) = self.ca.sign(&csr, request.validity_duration).map_err(|e| {
            warn!(target: "weftd::auth", peer = peer_text, %caller, identity = %csr.identity, error = %e, "could not sign");
            match e {
                // istiod: TTL_ERROR is INVALID_ARGUMENT, anything else INTERNAL.
                SignError::TtlTooLong { .. } => Status::invalid_argument(e.to_string()),
                _ => Status::internal(e.to_string()),
            }
        })?;
        self.metrics.issued.fetch_add(1, Relaxed);
        info!(peer = peer_text, %caller, identity = %csr.identity, ttl_s = ttl.as_secs(), "certificate issued");
        Ok(Response::new(IstioCertificateResponse { cert_chain: chain }))
    }
}

/// The `ImpersonatedIdentity` metadata string, if the request carries one.
fn impersonated_identity(request: &IstioCertificateRequest) -> Option<&str> {
    match request.metadata.as_ref()?.fields.get(IMPERSONATED_IDENTITY)?.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}
