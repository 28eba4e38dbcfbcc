//! weftd's own TLS on the secure port (15012): a server certificate issued by weftd's CA
//! to itself, with the DNS names and IPs clients connect by (istiod's default is
//! `istiod.<ns>.svc`; weftd's is `weftd.<ns>.svc`), renewed at half its life; and the
//! listener that hands tonic (and the webhook, 15017) one TLS stream per connection.
//!
//! The serving key is made in memory at every issue and never written anywhere.

use super::{CertificateAuthority, SignError};
use rcgen::KeyPair;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, error, info, warn};

/// What weftd's certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Why weftd's certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("cannot issue weftd's serving certificate")]
    Sign(#[from] SignError),
    #[error("cannot make weftd's serving key")]
    Key(#[from] rcgen::Error),
    #[error("cannot use weftd's serving key with rustls")]
    Rustls(#[from] rustls::Error),
}

/// The certificate the secure port presents; swapped in place when renewed, so new
/// connections get the new one and open ones keep theirs.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    not_after: RwLock<SystemTime>,
    names: ServingNames,
    ttl: Duration,
}

impl ServingCertificate {
    /// Issues the first certificate, valid for `ttl` (or less, if the CA expires sooner).
    pub fn issue(
        ca: &CertificateAuthority,
        names: ServingNames,
        ttl: Duration,
    ) -> Result<Arc<Self>, ServingError> {
        let (key, not_after) = make(ca, &names, ttl)?;
        info!(dns = ?names.dns_names, ips = ?names.ips, ttl_s = ttl.as_secs(), "weftd's serving certificate issued");
        Ok(Arc::new(ServingCertificate {
            current: RwLock::new(key),
            not_after: RwLock::new(not_after),
            names,
            ttl,
        }))
    }

    /// Renews the certificate at half its life, for ever. A failed renewal is retried every
    /// minute while the current certificate keeps being served.
    pub async fn renew(self: Arc<Self>, ca: Arc<CertificateAuthority>) {
        loop {
            let not_after = *self.not_after.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left / 2).await;
            loop {
                match make(&ca, &self.names, self.ttl) {
                    Ok((key, not_after)) => {
                        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
                        *self.not_after.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            not_after;
                        info!("weftd's serving certificate renewed");
                        break;
                    }
                    Err(e) => {
                        error!(error = %e, "cannot renew weftd's serving certificate; retrying in a minute");
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            }
        }
    }

    /// The rustls configuration of a port of weftd: TLS 1.3, these ALPN protocols (`h2` for
    /// the secure port's gRPC, `http/1.1` for the webhook), this certificate, no client
    /// certificate (callers authenticate with tokens; the API server calls the webhook
    /// without one).
    pub fn tls_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, ServingError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

fn make(
    ca: &CertificateAuthority,
    names: &ServingNames,
    ttl: Duration,
) -> Result<(Arc<CertifiedKey>, SystemTime), ServingError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let (chain, not_after) = ca.material().sign_server(&key, &names.dns_names, &names.ips, ttl)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)?;
    Ok((Arc::new(CertifiedKey::new(chain, signing)), not_after))
}

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections of `listener`, for tonic's `serve_with_incoming`. Each handshake
/// runs on its own task, so a slow or silent client holds up nobody else.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors or similar: pass rather than spin.
                        warn!(error = %e, "secure port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "secure port: TLS handshake failed"),
                    Err(_) => debug!(%peer, "secure port: TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
