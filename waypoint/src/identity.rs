//! The waypoint's own workload certificate, `spiffe://TD/ns/NS/sa/SA`: a key made here
//! (it never leaves the process), a CSR to weftd's CA, the certificate in a lock-free slot,
//! renewed at half life. It is the `default` secret of the Envoy resources (the server
//! certificate of HBONE termination and the client certificate of HBONE origination);
//! the mesh root (`--ca-root-cert`) is their `ROOTCA`.
//!
//! The agent's `identity.rs` does the same per enrolled identity; this is its one-identity
//! subset (copied, not shared: the agent's tracks identities by pod count).

use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};
use tokio::sync::Notify;
use tracing::{info, warn};
use weft_hbone::{Identity, TrustBundle, WorkloadCertificate};

/// Signs CSRs: weftd's CA, or a test CA.
pub trait Signer: Send + Sync + 'static {
    /// The certificate chain (leaf first) for `csr_pem`, valid for about `ttl`.
    fn sign(
        &self,
        identity: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send>>;
}

/// weftd's (or istiod's) certificate service as a [`Signer`].
pub struct CaSigner(pub Arc<weft_xds::ca::CaClient>);

impl Signer for CaSigner {
    fn sign(
        &self,
        identity: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send>> {
        let client = self.0.clone();
        let identity = identity.to_string();
        Box::pin(async move { client.sign(&identity, &csr_pem, ttl).await.map_err(|e| e.to_string()) })
    }
}

/// A certificate in force, with the HBONE server configuration built from it once.
pub struct CertState {
    pub cert: Arc<WorkloadCertificate>,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// The waypoint's certificate and the mesh root. Cheap to read from any task.
pub struct WaypointIdentity {
    identity: Identity,
    roots: TrustBundle,
    current: ArcSwapOption<CertState>,
    arrived: Notify,
    rotations: AtomicU64,
}

/// What the admin endpoint shows.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    pub identity: String,
    pub state: &'static str,
    pub serial: Option<String>,
    pub expiry: Option<u64>,
    pub rotations: u64,
}

/// Waits after a failed request before the next: doubles up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl WaypointIdentity {
    pub fn new(identity: Identity, roots: TrustBundle) -> WaypointIdentity {
        WaypointIdentity {
            identity,
            roots,
            current: ArcSwapOption::empty(),
            arrived: Notify::new(),
            rotations: AtomicU64::new(0),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The mesh root peers' certificates must chain to (`ROOTCA`).
    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    /// The certificate now (`default`), if one has arrived and is not expired.
    pub fn current(&self) -> Option<Arc<CertState>> {
        self.current.load_full().filter(|c| !c.cert.is_expired_at(SystemTime::now()))
    }

    /// Waits for the first certificate.
    pub async fn wait(&self) -> Arc<CertState> {
        loop {
            let arrived = self.arrived.notified();
            if let Some(c) = self.current() {
                return c;
            }
            arrived.await;
        }
    }

    pub fn view(&self) -> CertView {
        let current = self.current.load_full();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        CertView {
            identity: self.identity.to_string(),
            state: match &current {
                None => "pending",
                Some(c) if c.cert.is_expired_at(SystemTime::now()) => "expired",
                Some(_) => "valid",
            },
            serial: current.as_ref().map(|c| c.cert.serial_hex().to_owned()),
            expiry: current.as_ref().and_then(|c| secs(c.cert.expiry())),
            rotations: self.rotations.load(Ordering::Relaxed),
        }
    }

    fn set(&self, state: CertState) {
        if self.current.swap(Some(Arc::new(state))).is_some() {
            self.rotations.fetch_add(1, Ordering::Relaxed);
        }
        self.arrived.notify_waiters();
    }
}

/// Requests the certificate, then renews it at half life, forever (until the task is
/// dropped). A failed request is retried with backoff; the old certificate stays in force
/// meanwhile.
pub async fn keep_fresh(slot: Arc<WaypointIdentity>, signer: Arc<dyn Signer>, ttl: Duration) {
    let mut retry = RETRY_MIN;
    loop {
        match fetch(&slot, signer.as_ref(), ttl).await {
            Ok(state) => {
                retry = RETRY_MIN;
                let refresh_at = state.cert.refresh_at();
                info!(identity = %slot.identity, serial = state.cert.serial_hex(), expiry = ?state.cert.expiry(), "waypoint certificate in force");
                slot.set(state);
                tokio::time::sleep(refresh_at.duration_since(SystemTime::now()).unwrap_or_default()).await;
            }
            Err(error) => {
                warn!(identity = %slot.identity, %error, retry_in = ?retry, "cannot get the waypoint's certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn fetch(slot: &WaypointIdentity, signer: &dyn Signer, ttl: Duration) -> Result<CertState, String> {
    let identity = &slot.identity;
    let (key, csr) = weft_hbone::new_csr(identity).map_err(|e| format!("making a CSR: {e}"))?;
    let chain = signer.sign(identity, csr, ttl).await?;
    let cert = WorkloadCertificate::from_pem_with_key(&chain.concat(), &key)
        .map_err(|e| format!("the CA's answer is not a certificate for our key: {e}"))?;
    if cert.identity() != identity {
        return Err(format!("the CA signed {} where {identity} was asked for", cert.identity()));
    }
    cert.verify(&slot.roots, SystemTime::now())
        .map_err(|e| format!("the CA's certificate does not verify against the mesh root: {e}"))?;
    let server_config = weft_hbone::tls::server_config(&cert, &slot.roots).map_err(|e| e.to_string())?;
    Ok(CertState { cert: Arc::new(cert), server_config })
}
