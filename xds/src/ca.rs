//! Istio's certificate service (`istio.v1.auth.IstioCertificateService`): the generated
//! messages, client and server, and [`CaClient`], which asks weftd (or istiod) to sign a
//! CSR over the same TLS and bearer token as the ADS client.
//!
//! The private key never travels: the caller makes the key and the CSR, and gets back the
//! certificate chain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use prost_types::{Struct, Value, value::Kind};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::connect::{self, Bearer, ClientTls, ConnectError};

/// `istio.v1.auth`, generated from `xds/proto/ca.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
}

use proto::istio_certificate_service_client::IstioCertificateServiceClient;
use proto::{IstioCertificateRequest, IstioCertificateResponse};

/// The CSR metadata key naming the identity a node proxy asks for on a workload's behalf
/// (Istio's `security.ImpersonatedIdentity`).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Where the CA is and how to reach it.
#[derive(Clone, Debug)]
pub struct CaClientConfig {
    /// The CA's gRPC endpoint: `https://weftd.istio-system.svc:15012`.
    pub endpoint: String,
    /// How to check the CA's certificate; required for an https endpoint.
    pub tls: Option<ClientTls>,
    /// File holding the bearer token, read at every call.
    pub token_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Longest a signing call may take, connection included.
    pub request_timeout: Duration,
}

impl CaClientConfig {
    /// Settings with default timeouts.
    pub fn new(endpoint: impl Into<String>, tls: Option<ClientTls>, token_file: Option<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls,
            token_file,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The settings or their files do not allow a connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The call failed: the CA refused (UNAUTHENTICATED, PERMISSION_DENIED,
    /// INVALID_ARGUMENT, …) or could not be reached (UNAVAILABLE, DEADLINE_EXCEEDED).
    #[error("CA at {endpoint} answered {code:?}: {message}")]
    Refused { endpoint: String, code: tonic::Code, message: String },
    /// The CA answered without a certificate.
    #[error("CA at {endpoint} answered with an empty certificate chain")]
    EmptyChain { endpoint: String },
}

impl CaClientError {
    /// The gRPC code of a failed call, if the call was made.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CaClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A client of the CA. Cheap to share (`Arc`); calls may run concurrently over one HTTP/2
/// connection.
#[derive(Debug)]
pub struct CaClient {
    config: CaClientConfig,
    /// The channel and the root it was built to trust; rebuilt when the root file changes.
    channel: Mutex<Option<(Vec<u8>, Channel)>>,
}

impl CaClient {
    /// Checks the settings; connects lazily, at the first call.
    pub fn new(config: CaClientConfig) -> Result<CaClient, CaClientError> {
        connect::check(&config.endpoint, config.tls.as_ref())?;
        Ok(CaClient { config, channel: Mutex::new(None) })
    }

    /// Asks the CA to sign `csr_pem` for `identity` (the SPIFFE ID the CSR's URI SAN
    /// names, sent as `ImpersonatedIdentity` metadata as ztunnel does, so istiod accepts
    /// the request too), valid for `validity` (zero asks for the CA's default). Returns the
    /// chain as the CA sent it: the leaf first, the root last, one PEM certificate each.
    pub async fn sign(
        &self,
        identity: &str,
        csr_pem: &str,
        validity: Duration,
    ) -> Result<Vec<String>, CaClientError> {
        let channel = self.channel().await?;
        let token = self.config.token_file.as_deref().map(connect::bearer).transpose()?;
        let mut client = IstioCertificateServiceClient::with_interceptor(channel, Bearer(token));
        let metadata = Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_owned(),
                Value { kind: Some(Kind::StringValue(identity.to_owned())) },
            )]),
        };
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_owned(),
            validity_duration: i64::try_from(validity.as_secs()).unwrap_or(i64::MAX),
            metadata: Some(metadata),
        });
        request.set_timeout(self.config.request_timeout);
        let refused = |status: tonic::Status| CaClientError::Refused {
            endpoint: self.config.endpoint.clone(),
            code: status.code(),
            message: status_message(&status),
        };
        let IstioCertificateResponse { cert_chain } =
            client.create_certificate(request).await.map_err(refused)?.into_inner();
        if cert_chain.is_empty() {
            return Err(CaClientError::EmptyChain { endpoint: self.config.endpoint.clone() });
        }
        Ok(cert_chain)
    }

    /// The channel to the CA, rebuilt if the root certificate file changed since it was
    /// made. Connects lazily: a CA that is down fails the call, not this.
    async fn channel(&self) -> Result<Channel, CaClientError> {
        let root = self.config.tls.as_ref().map(connect::read_root).transpose()?.unwrap_or_default();
        let mut cached = self.channel.lock().await;
        if let Some((trusted, channel)) = cached.as_ref()
            && *trusted == root
        {
            return Ok(channel.clone());
        }
        let tls = self.config.tls.as_ref().map(|tls| (tls, root.as_slice()));
        let channel =
            connect::endpoint(&self.config.endpoint, tls, self.config.connect_timeout)?.connect_lazy();
        *cached = Some((root, channel.clone()));
        Ok(channel)
    }
}

/// A status's message with what lies under it: for a transport failure tonic's message is
/// only "transport error", and the reason (refused, unknown CA) is in the source chain.
fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let next = e.to_string();
        if !message.contains(&next) {
            message.push_str(": ");
            message.push_str(&next);
        }
        source = e.source();
    }
    message
}
