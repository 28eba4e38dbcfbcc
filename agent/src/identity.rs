//! Workload certificates for the pods of this node: made here, signed by the mesh's CA,
//! rotated at half life.
//!
//! The agent asks for a certificate only for identities of pods it has enrolled — bound to
//! a network namespace it found through the CNI handover or the pod's kubelet cgroup — so a
//! namespace that merely carries a pod's address gets no identity. The private key of each
//! certificate is generated here and never leaves the node: only the CSR goes to the CA.
//!
//! Connections read the current certificate of their pod's identity from a [`CertSlot`]
//! without a lock; a rotation swaps the slot's content, so new connections (and new pooled
//! HBONE connections) use the new certificate while established ones carry on unharmed.

use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::{runtime::Handle, sync::Notify, task::JoinHandle};
use tracing::{info, warn};
use weft_hbone::{Identity, TrustBundle, WorkloadCertificate};

/// Signs CSRs: the mesh's CA as seen from the agent (weftd's CreateCertificate).
pub trait Signer: Send + Sync + 'static {
    /// Returns the certificate chain (leaf first) for `csr_pem`, valid for about `ttl`.
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

/// A certificate in force, with the TLS server configuration built from it once.
pub struct CertState {
    pub cert: Arc<WorkloadCertificate>,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// The current certificate of one identity. Cheap to read from any task.
#[derive(Default)]
pub struct CertSlot {
    current: ArcSwapOption<CertState>,
    arrived: Notify,
}

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("CertSlot")
            .field("serial", &current.as_ref().map(|c| c.cert.serial_hex().to_owned()))
            .finish()
    }
}

/// Why a connection could not get a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no certificate for {identity} after {waited:?}: is the CA reachable? (see the agent's log)")]
    NotYet { identity: Identity, waited: Duration },
    #[error(
        "this agent has no CA (--ca-address): it cannot hold workload certificates, so it cannot speak HBONE"
    )]
    NoCa,
}

impl CertSlot {
    /// The certificate now, if one has arrived and is not expired.
    pub fn current(&self) -> Option<Arc<CertState>> {
        self.current.load_full().filter(|c| !c.cert.is_expired_at(SystemTime::now()))
    }

    /// The certificate, waiting up to `patience` for the first one.
    pub async fn get(
        &self,
        identity: &Identity,
        patience: Duration,
    ) -> Result<Arc<CertState>, IdentityError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.arrived.notified();
            if let Some(c) = self.current() {
                return Ok(c);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(IdentityError::NotYet { identity: identity.clone(), waited: patience });
            }
        }
    }

    fn set(&self, state: CertState) {
        self.current.store(Some(Arc::new(state)));
        self.arrived.notify_waiters();
    }
}

/// What the admin endpoint shows per identity.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    pub identity: String,
    pub pods: usize,
    pub state: &'static str,
    pub serial: Option<String>,
    pub not_before: Option<u64>,
    pub expiry: Option<u64>,
    pub refresh_at: Option<u64>,
    pub rotations: u64,
}

struct Tracked {
    slot: Arc<CertSlot>,
    pods: usize,
    task: JoinHandle<()>,
    rotations: Arc<std::sync::atomic::AtomicU64>,
}

/// The mesh's CA as the agent uses it: who signs, and the roots peers chain to.
pub struct Ca {
    pub signer: Arc<dyn Signer>,
    pub roots: TrustBundle,
}

/// The certificates of the identities this node's enrolled pods run as.
pub struct SecretManager {
    ca: Option<(Arc<dyn Signer>, Arc<TrustBundle>)>,
    ttl: Duration,
    runtime: Handle,
    tracked: Mutex<HashMap<Identity, Tracked>>,
}

/// Waits after a failed request before the next: doubles up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl SecretManager {
    /// `ca` is None when the agent has no CA: then no identity can be held.
    pub fn new(ca: Option<Ca>, ttl: Duration, runtime: Handle) -> SecretManager {
        let ca = ca.map(|ca| (ca.signer, Arc::new(ca.roots)));
        SecretManager { ca, ttl, runtime, tracked: Mutex::default() }
    }

    /// The mesh roots peers' certificates must chain to.
    pub fn roots(&self) -> Result<&TrustBundle, IdentityError> {
        self.ca.as_ref().map(|(_, roots)| &**roots).ok_or(IdentityError::NoCa)
    }

    /// Starts holding a certificate for `identity` (one more pod runs as it) and returns
    /// its slot. The first request goes out at once.
    pub fn track(&self, identity: &Identity) -> Result<Arc<CertSlot>, IdentityError> {
        let (signer, roots) = self.ca.clone().ok_or(IdentityError::NoCa)?;
        let mut tracked = self.tracked.lock().expect("identity lock");
        if let Some(t) = tracked.get_mut(identity) {
            t.pods += 1;
            return Ok(t.slot.clone());
        }
        let slot = Arc::new(CertSlot::default());
        let rotations = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = self.runtime.spawn(keep_fresh(
            identity.clone(),
            signer,
            roots,
            self.ttl,
            slot.clone(),
            rotations.clone(),
        ));
        info!(%identity, "holding a certificate for a new identity on this node");
        tracked.insert(identity.clone(), Tracked { slot: slot.clone(), pods: 1, task, rotations });
        Ok(slot)
    }

    /// One pod fewer runs as `identity`; the last one out stops its renewals and drops
    /// its key.
    pub fn untrack(&self, identity: &Identity) {
        let mut tracked = self.tracked.lock().expect("identity lock");
        if let Some(t) = tracked.get_mut(identity) {
            t.pods -= 1;
            if t.pods == 0 {
                t.task.abort();
                tracked.remove(identity);
                info!(%identity, "no pod runs as this identity any more; certificate dropped");
            }
        }
    }

    pub fn view(&self) -> Vec<CertView> {
        let tracked = self.tracked.lock().expect("identity lock");
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        let mut out: Vec<CertView> = tracked
            .iter()
            .map(|(id, t)| {
                let current = t.slot.current.load_full();
                CertView {
                    identity: id.to_string(),
                    pods: t.pods,
                    state: match &current {
                        None => "pending",
                        Some(c) if c.cert.is_expired_at(SystemTime::now()) => "expired",
                        Some(_) => "valid",
                    },
                    serial: current.as_ref().map(|c| c.cert.serial_hex().to_owned()),
                    not_before: current.as_ref().and_then(|c| secs(c.cert.not_before())),
                    expiry: current.as_ref().and_then(|c| secs(c.cert.expiry())),
                    refresh_at: current.as_ref().and_then(|c| secs(c.cert.refresh_at())),
                    rotations: t.rotations.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out
    }
}

impl Drop for SecretManager {
    fn drop(&mut self) {
        for t in self.tracked.get_mut().expect("identity lock").values() {
            t.task.abort();
        }
    }
}

/// Requests a certificate, then renews it at half life, forever (until aborted).
async fn keep_fresh(
    identity: Identity,
    signer: Arc<dyn Signer>,
    roots: Arc<TrustBundle>,
    ttl: Duration,
    slot: Arc<CertSlot>,
    rotations: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut retry = RETRY_MIN;
    loop {
        match fetch(&identity, signer.as_ref(), &roots, ttl).await {
            Ok(state) => {
                retry = RETRY_MIN;
                let refresh_at = state.cert.refresh_at();
                let renewed = slot.current.load().is_some();
                info!(%identity, serial = state.cert.serial_hex(), expiry = ?state.cert.expiry(), renewed, "workload certificate in force");
                if renewed {
                    rotations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                slot.set(state);
                let wait = refresh_at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                warn!(%identity, %error, retry_in = ?retry, "cannot get a workload certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn fetch(
    identity: &Identity,
    signer: &dyn Signer,
    roots: &TrustBundle,
    ttl: Duration,
) -> Result<CertState, String> {
    let (key, csr) = weft_hbone::new_csr(identity).map_err(|e| format!("making a CSR: {e}"))?;
    let chain = signer.sign(identity, csr, ttl).await?;
    let cert = WorkloadCertificate::from_pem_with_key(&chain.concat(), &key)
        .map_err(|e| format!("the CA's answer is not a certificate for our key: {e}"))?;
    if cert.identity() != identity {
        return Err(format!("the CA signed {} where {identity} was asked for", cert.identity()));
    }
    cert.verify(roots, SystemTime::now())
        .map_err(|e| format!("the CA's certificate does not verify against the mesh root: {e}"))?;
    let server_config = weft_hbone::tls::server_config(&cert, roots).map_err(|e| e.to_string())?;
    Ok(CertState { cert: Arc::new(cert), server_config })
}
