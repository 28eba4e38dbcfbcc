//! weftd's certificate authority: the root (or intermediate) it signs with, the CSR
//! service on the secure port, and weftd's own serving certificate.
//!
//! ```text
//!  where the signing key lives (chosen once at startup, first match wins):
//!    --cacerts-dir DIR  plug-in CA, Istio's cacerts layout, read only      (dir.rs)
//!    --ca-dir DIR       weftd's own root, made on first start, 0600 key    (dir.rs)
//!    Kubernetes mode    weftd's own root in Secret weft-ca-secret          (secret.rs)
//!        └─▶ SigningMaterial (authority.rs): checked key, chain to the roots
//!             ├─▶ CertificateAuthority::sign ◀── service.rs (IstioCertificateService:
//!             │                                   authenticate, read the CSR (csr.rs),
//!             │                                   authorize, sign)
//!             └─▶ serving.rs: weftd's TLS certificate for :15012, renewed at half life
//! ```
//!
//! What istiod does and weftd follows: a 10-year ECDSA self-signed root with O=<trust
//! domain>; workload certificates of 24 h by default, a request above the maximum (90 days)
//! refused; the answer's chain is leaf, intermediates, root last.

pub mod authority;
pub mod csr;
pub mod dir;
pub mod pem;
pub mod secret;
pub mod service;
pub mod serving;

pub use authority::{SignError, SigningMaterial, Validity};
pub use csr::{CsrError, WorkloadCsr};

use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

/// Validity of a self-signed root: istiod's CITADEL_SELF_SIGNED_CA_CERT_TTL, 10 years.
pub const ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Where the signing key lives.
#[derive(Clone)]
pub enum RootSource {
    /// A plug-in CA in Istio's cacerts layout, read only.
    PlugIn(PathBuf),
    /// weftd's own root in a directory, made there on first start.
    Directory(PathBuf),
    /// weftd's own root in the `weft-ca-secret` Secret of `namespace`.
    Secret { client: kube::Client, namespace: String },
}

impl std::fmt::Debug for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::PlugIn(dir) => f.debug_tuple("PlugIn").field(dir).finish(),
            RootSource::Directory(dir) => f.debug_tuple("Directory").field(dir).finish(),
            RootSource::Secret { namespace, .. } => {
                f.debug_struct("Secret").field("namespace", namespace).finish()
            }
        }
    }
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Dir(#[from] dir::DirError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
}

/// The CA: signing material, validity settings and the trust domain it signs for.
#[derive(Debug)]
pub struct CertificateAuthority {
    material: SigningMaterial,
    validity: Validity,
    trust_domain: String,
}

impl CertificateAuthority {
    pub fn new(material: SigningMaterial, validity: Validity, trust_domain: impl Into<String>) -> Self {
        CertificateAuthority { material, validity, trust_domain: trust_domain.into() }
    }

    /// Loads (or makes) the signing material from `source`.
    pub async fn load(
        source: &RootSource,
        validity: Validity,
        trust_domain: &str,
    ) -> Result<CertificateAuthority, CaError> {
        let material = match source {
            RootSource::PlugIn(dir) => {
                let material = dir::load_plugin(dir)?;
                info!(dir = %dir.display(), self_signed = material.is_self_signed(), "CA: plug-in CA loaded");
                material
            }
            RootSource::Directory(dir) => {
                let (material, made) = dir::load_or_create(dir, trust_domain, ROOT_TTL)?;
                info!(dir = %dir.display(), new = made, "CA: weftd's root loaded");
                material
            }
            RootSource::Secret { client, namespace } => {
                secret::load_or_create(client, namespace, trust_domain, ROOT_TTL).await?
            }
        };
        Ok(CertificateAuthority::new(material, validity, trust_domain))
    }

    pub fn material(&self) -> &SigningMaterial {
        &self.material
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Signs `csr` for its identity (authorization is the caller's business), valid for
    /// the request's `validity_duration` seconds (the default for 0). Returns the chain and
    /// the validity granted.
    pub fn sign(&self, csr: &WorkloadCsr, requested_secs: i64) -> Result<(Vec<String>, Duration), SignError> {
        let ttl = self.validity.for_request(requested_secs)?;
        let chain = self.material.sign_workload(&csr.public_key, &csr.identity, ttl)?;
        Ok((chain, ttl))
    }
}

/// The root file agents read in local mode: root-cert.pem of the CA directory.
pub fn root_file(dir: &Path) -> PathBuf {
    dir.join(authority::ROOT_CERT)
}
