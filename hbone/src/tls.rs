//! The mesh's rustls configurations: mutual TLS 1.3, ring, ALPN `h2`, SPIFFE identities.
//!
//! - [`server_config`]: presents a workload certificate, requires a client certificate,
//!   verifies its chain against the trust bundle (webpki) and that it names a workload of
//!   the server's trust domain (as ztunnel's `TrustDomainVerifier`). [`accept`] runs the
//!   handshake and returns the client's [`Identity`].
//! - [`client_config`]: presents a workload certificate and verifies the server's chain
//!   against the bundle, then checks the server leaf's URI SAN is one of the identities
//!   the caller expects, instead of a DNS name (as ztunnel's `IdentityVerifier`). The
//!   server name sent is fixed and SNI is off: nothing routes on it.
//!
//! Configs are built once and shared (`Arc`): the key is parsed once per certificate
//! ([`WorkloadCertificate`]), the roots and the client verifier once per bundle
//! ([`TrustBundle`]); a client config per (certificate, expected identities) costs a few
//! small allocations. Session resumption is off on both sides, as in ztunnel: a
//! resumed session would skip the identity check against what the control plane says now.
//!
//! Every rejection is a [`TlsError`] that names the reason: unknown issuer (another
//! CA), expired, identity mismatch (presented and expected), no usable URI SAN, or the
//! peer's refusal of our certificate (the alert it sent).

use crate::{
    certs::{CertError, TrustBundle, WorkloadCertificate, leaf_identity, provider},
    identity::Identity,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    server::{
        NoServerSessionStorage, ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::SingleCertAndKey,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::{
    fmt, io,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::io::{AsyncRead, AsyncWrite};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Whose certificate a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The client's (seen by a server).
    Client,
    /// The server's (seen by a client).
    Server,
    /// Our own (checked before use, see [`WorkloadCertificate::verify`]).
    Local,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Server => "server",
            Peer::Local => "local",
        })
    }
}

/// Why a TLS handshake (or a config) failed, by reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// The peer's chain does not lead to a root of the trust bundle.
    #[error(
        "the {peer} certificate is not issued by the mesh CA (unknown issuer): it comes from another CA, or the trust bundle is stale"
    )]
    UnknownIssuer { peer: Peer },
    /// The peer's certificate (or one of its issuers) has expired.
    #[error("the {peer} certificate has expired{}", since(.not_after, .now))]
    Expired { peer: Peer, not_after: Option<SystemTime>, now: Option<SystemTime> },
    /// The peer's certificate is not valid yet (a clock skew between nodes?).
    #[error("the {peer} certificate is not valid yet{}: are the nodes' clocks in step?", until(.not_before, .now))]
    NotYetValid { peer: Peer, not_before: Option<SystemTime>, now: Option<SystemTime> },
    /// The server presented another workload's identity than the caller expects.
    #[error("the server presented {presented} but {} was expected", expected_list(.expected))]
    IdentityMismatch { presented: Identity, expected: Vec<Identity> },
    /// The client's identity is of another trust domain than the server's.
    #[error("the client presented {presented}, outside this server's trust domain {expected:?}")]
    TrustDomain { presented: Identity, expected: String },
    /// The peer's leaf does not name exactly one SPIFFE workload identity.
    #[error("the {peer} certificate names no usable workload identity: {source}")]
    PeerIdentity {
        peer: Peer,
        #[source]
        source: CertError,
    },
    /// The client sent no certificate.
    #[error("the client presented no certificate: HBONE requires mutual TLS")]
    NoClientCertificate,
    /// The peer sent an alert: it refused our certificate or the handshake.
    #[error("the peer refused the handshake ({alert:?}): {}", alert_hint(*.alert))]
    RefusedByPeer { alert: AlertDescription },
    /// The handshake completed without ALPN `h2`.
    #[error("the peer did not negotiate ALPN h2 (offered {offered:?}): it does not speak HBONE")]
    NoH2 { offered: Option<String> },
    /// Any other TLS failure.
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The connection failed (closed, reset) during the handshake.
    #[error("the connection failed during the TLS handshake: {0}")]
    Io(Arc<io::Error>),
    /// A configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// Classifies a rustls error; `peer` says whose certificate a certificate error is about.
    pub fn from_rustls(err: rustls::Error, peer: Peer) -> TlsError {
        match err {
            rustls::Error::InvalidCertificate(cert_err) => match cert_err {
                CertificateError::UnknownIssuer => TlsError::UnknownIssuer { peer },
                CertificateError::Expired => TlsError::Expired { peer, not_after: None, now: None },
                CertificateError::ExpiredContext { time, not_after } => TlsError::Expired {
                    peer,
                    not_after: Some(system_time(not_after)),
                    now: Some(system_time(time)),
                },
                CertificateError::NotValidYet => TlsError::NotYetValid { peer, not_before: None, now: None },
                CertificateError::NotValidYetContext { time, not_before } => TlsError::NotYetValid {
                    peer,
                    not_before: Some(system_time(not_before)),
                    now: Some(system_time(time)),
                },
                CertificateError::Other(OtherError(inner)) => match inner.downcast_ref::<TlsError>() {
                    Some(ours) => ours.clone(),
                    None => TlsError::Handshake(rustls::Error::InvalidCertificate(CertificateError::Other(
                        OtherError(inner),
                    ))),
                },
                other => TlsError::Handshake(rustls::Error::InvalidCertificate(other)),
            },
            rustls::Error::NoCertificatesPresented => TlsError::NoClientCertificate,
            rustls::Error::AlertReceived(alert) => TlsError::RefusedByPeer { alert },
            other => TlsError::Handshake(other),
        }
    }

    /// Classifies an I/O error from a TLS stream (tokio-rustls wraps rustls errors in it).
    pub fn from_io(err: io::Error, peer: Peer) -> TlsError {
        match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls_err) => TlsError::from_rustls(rustls_err.clone(), peer),
            None => TlsError::Io(Arc::new(err)),
        }
    }

    /// Whether the failure is about a certificate (worth a warning with the peer's address),
    /// rather than a connection that went away.
    pub fn is_certificate_problem(&self) -> bool {
        !matches!(self, TlsError::Io(_) | TlsError::Config(_))
    }
}

/// The server side of the mesh's mTLS for one workload certificate; build once per
/// certificate and share.
pub fn server_config(cert: &WorkloadCertificate, roots: &TrustBundle) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = SpiffeClientVerifier {
        inner: roots.client_verifier.clone(),
        trust_domain: cert.identity().trust_domain().to_owned(),
    };
    let mut config = ServerConfig::builder_with_provider(provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Clients never resume (see the module doc): tickets and a session cache would be
    // work per handshake for nothing.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The client side for one workload certificate towards a server that must present one of
/// `expected`. Cheap (the key and roots are shared); keep it per destination identity.
pub fn client_config(
    cert: &WorkloadCertificate,
    roots: &TrustBundle,
    expected: &[Identity],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = SpiffeServerVerifier { roots: roots.roots().clone(), expected: expected.to_vec() };
    let mut config = ClientConfig::builder_with_provider(provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The server name given to rustls: fixed, never sent (SNI is off), never checked.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into())
}

/// Runs the client handshake and checks ALPN `h2`. The server's identity was checked by
/// the config's verifier. A refusal of *our* certificate by the server arrives after this
/// returns (TLS 1.3 sends the client's certificate last): it surfaces on the first read
/// as [`TlsError::RefusedByPeer`] (see [`TlsError::from_io`]).
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    io: IO,
) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name(), io)
        .await
        .map_err(|e| TlsError::from_io(e, Peer::Server))?;
    check_alpn(stream.get_ref().1)?;
    Ok(stream)
}

/// Runs the server handshake, checks ALPN `h2`, and returns the client's identity (its
/// chain and trust domain were checked by the config's verifier).
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> Result<(tokio_rustls::server::TlsStream<IO>, Identity), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(|e| TlsError::from_io(e, Peer::Client))?;
    let conn = stream.get_ref().1;
    check_alpn(conn)?;
    let identity = peer_identity(conn, Peer::Client)?;
    Ok((stream, identity))
}

/// The identity in the peer's leaf certificate, after a handshake with our configs.
/// `peer` says which side the peer is, for the error.
pub fn peer_identity(conn: &CommonState, peer: Peer) -> Result<Identity, TlsError> {
    let leaf = conn.peer_certificates().and_then(|c| c.first()).ok_or(match peer {
        Peer::Client => TlsError::NoClientCertificate,
        _ => TlsError::Handshake(rustls::Error::NoCertificatesPresented),
    })?;
    identity_of(leaf, peer)
}

fn check_alpn(conn: &CommonState) -> Result<(), TlsError> {
    match conn.alpn_protocol() {
        Some(ALPN_H2) => Ok(()),
        other => Err(TlsError::NoH2 { offered: other.map(|p| String::from_utf8_lossy(p).into_owned()) }),
    }
}

fn identity_of(der: &CertificateDer<'_>, peer: Peer) -> Result<Identity, TlsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::PeerIdentity {
        peer,
        source: CertError::BadCertificate { what: "peer", index: 0, reason: e.to_string() },
    })?;
    leaf_identity(&cert).map_err(|source| TlsError::PeerIdentity { peer, source })
}

/// Wraps one of our errors so rustls carries it through the handshake unchanged.
fn rejection(err: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// webpki path validation to the mesh roots, then the SPIFFE check in place of the
/// DNS-name check.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<Identity>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let presented = identity_of(end_entity, Peer::Server).map_err(rejection)?;
        if !self.expected.contains(&presented) {
            return Err(rejection(TlsError::IdentityMismatch { presented, expected: self.expected.clone() }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// rustls' webpki client verification, then: the leaf names one workload identity of the
/// server's trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let presented = identity_of(end_entity, Peer::Client).map_err(rejection)?;
        if presented.trust_domain() != self.trust_domain {
            return Err(rejection(TlsError::TrustDomain { presented, expected: self.trust_domain.clone() }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn system_time(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

fn format_time(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    match x509_parser::time::ASN1Time::from_timestamp(secs) {
        Ok(t) => t.to_string(),
        Err(_) => format!("unix time {secs}"),
    }
}

fn since(not_after: &Option<SystemTime>, now: &Option<SystemTime>) -> String {
    match (not_after, now) {
        (Some(a), Some(n)) => format!(" at {} (now {})", format_time(*a), format_time(*n)),
        _ => String::new(),
    }
}

fn until(not_before: &Option<SystemTime>, now: &Option<SystemTime>) -> String {
    match (not_before, now) {
        (Some(b), Some(n)) => format!(" before {} (now {})", format_time(*b), format_time(*n)),
        _ => String::new(),
    }
}

fn expected_list(expected: &[Identity]) -> String {
    match expected {
        [] => "no identity".to_owned(),
        [one] => one.to_string(),
        many => format!("one of {}", many.iter().map(Identity::to_string).collect::<Vec<_>>().join(", ")),
    }
}

fn alert_hint(alert: AlertDescription) -> &'static str {
    match alert {
        AlertDescription::UnknownCA => {
            "it does not trust our certificate's issuer (is our certificate from another CA, or its trust bundle stale?)"
        }
        AlertDescription::CertificateExpired => "it says our certificate is expired or not yet valid",
        AlertDescription::CertificateUnknown | AlertDescription::BadCertificate => {
            "it refused our certificate (another trust domain, or not the identity it expects?)"
        }
        AlertDescription::CertificateRequired => "it requires a client certificate",
        AlertDescription::NoApplicationProtocol => "it does not speak ALPN h2",
        AlertDescription::ProtocolVersion => "it does not speak TLS 1.3",
        _ => "see the peer's log for the reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{LeafSpec, TestCa};
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn id(td: &str, sa: &str) -> Identity {
        Identity::new(td, "shop", sa).unwrap()
    }

    struct Side<'a> {
        cert: &'a WorkloadCertificate,
        roots: &'a TrustBundle,
    }

    /// A handshake and one exchange over an in-memory pipe; each side's result is the
    /// peer identity it saw, or why it failed. The exchange surfaces a refusal of the
    /// client's certificate, which TLS 1.3 reports after the client's handshake is done.
    async fn run(
        client: Side<'_>,
        expected: &[Identity],
        server: Side<'_>,
        client_alpn: bool,
    ) -> (Result<Identity, TlsError>, Result<Identity, TlsError>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let mut client_config = client_config(client.cert, client.roots, expected).unwrap();
        if !client_alpn {
            let mut c = (*client_config).clone();
            c.alpn_protocols.clear();
            client_config = Arc::new(c);
        }
        let server_config = server_config(server.cert, server.roots).unwrap();
        let server = async move {
            let (mut s, identity) = accept(server_config, server_io).await?;
            let mut buf = [0; 4];
            s.read_exact(&mut buf).await.map_err(|e| TlsError::from_io(e, Peer::Client))?;
            s.write_all(b"pong").await.map_err(|e| TlsError::from_io(e, Peer::Client))?;
            s.flush().await.map_err(|e| TlsError::from_io(e, Peer::Client))?;
            Ok(identity)
        };
        let client = async move {
            let mut c = connect(client_config, client_io).await?;
            let identity = peer_identity(c.get_ref().1, Peer::Server)?;
            c.write_all(b"ping").await.map_err(|e| TlsError::from_io(e, Peer::Server))?;
            c.flush().await.map_err(|e| TlsError::from_io(e, Peer::Server))?;
            let mut buf = [0; 4];
            c.read_exact(&mut buf).await.map_err(|e| TlsError::from_io(e, Peer::Server))?;
            Ok(identity)
        };
        tokio::join!(client, server)
    }

    #[tokio::test]
    async fn each_side_sees_the_others_identity() {
        let ca = TestCa::with_intermediate();
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let (c, s) = (ca.issue(&cart, Duration::from_secs(600)), ca.issue(&pay, Duration::from_secs(600)));
        let roots = ca.trust_bundle();
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            &[cart.clone(), pay.clone()],
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        assert_eq!(client.unwrap(), pay);
        assert_eq!(server.unwrap(), cart);
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_refused() {
        let (ca, other) = (TestCa::new(), TestCa::new());
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let c = other.issue(&cart, Duration::from_secs(600));
        let s = ca.issue(&pay, Duration::from_secs(600));
        let roots = ca.trust_bundle();
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        let server = server.unwrap_err();
        assert!(matches!(server, TlsError::UnknownIssuer { peer: Peer::Client }), "{server}");
        assert!(server.to_string().contains("not issued by the mesh CA"), "{server}");
        let client = client.unwrap_err();
        assert!(matches!(client, TlsError::RefusedByPeer { alert: AlertDescription::UnknownCA }), "{client}");
        assert!(client.to_string().contains("another CA"), "{client}");
    }

    #[tokio::test]
    async fn a_server_certificate_from_another_ca_is_refused() {
        let (ca, other) = (TestCa::new(), TestCa::new());
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let c = ca.issue(&cart, Duration::from_secs(600));
        let s = other.issue(&pay, Duration::from_secs(600));
        let (roots, other_roots) = (ca.trust_bundle(), other.trust_bundle());
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &other_roots },
            true,
        )
        .await;
        let client = client.unwrap_err();
        assert!(matches!(client, TlsError::UnknownIssuer { peer: Peer::Server }), "{client}");
        assert!(
            matches!(server, Err(TlsError::RefusedByPeer { alert: AlertDescription::UnknownCA })),
            "{server:?}"
        );
    }

    #[tokio::test]
    async fn an_expired_client_certificate_is_refused_by_the_server() {
        let ca = TestCa::new();
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let c = ca.issue_expired(&cart);
        let s = ca.issue(&pay, Duration::from_secs(600));
        let roots = ca.trust_bundle();
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        let server = server.unwrap_err();
        assert!(
            matches!(server, TlsError::Expired { peer: Peer::Client, not_after: Some(_), now: Some(_) }),
            "{server}"
        );
        assert!(server.to_string().starts_with("the client certificate has expired at"), "{server}");
        let client = client.unwrap_err();
        assert!(
            matches!(client, TlsError::RefusedByPeer { alert: AlertDescription::CertificateExpired }),
            "{client}"
        );
    }

    #[tokio::test]
    async fn an_expired_server_certificate_is_refused_by_the_client() {
        let ca = TestCa::new();
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let c = ca.issue(&cart, Duration::from_secs(600));
        let s = ca.issue_expired(&pay);
        let roots = ca.trust_bundle();
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        let client = client.unwrap_err();
        assert!(matches!(client, TlsError::Expired { peer: Peer::Server, .. }), "{client}");
        assert!(
            matches!(server, Err(TlsError::RefusedByPeer { alert: AlertDescription::CertificateExpired })),
            "{server:?}"
        );
    }

    #[tokio::test]
    async fn a_server_presenting_another_identity_is_refused() {
        let ca = TestCa::new();
        let (cart, pay, evil) =
            (id("cluster.local", "cart"), id("cluster.local", "pay"), id("cluster.local", "evil"));
        let c = ca.issue(&cart, Duration::from_secs(600));
        let s = ca.issue(&evil, Duration::from_secs(600));
        let roots = ca.trust_bundle();
        let (client, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        let client = client.unwrap_err();
        match &client {
            TlsError::IdentityMismatch { presented, expected } => {
                assert_eq!(presented, &evil);
                assert_eq!(expected, &[pay]);
            }
            other => panic!("expected an identity mismatch, got {other}"),
        }
        assert_eq!(
            client.to_string(),
            "the server presented spiffe://cluster.local/ns/shop/sa/evil but spiffe://cluster.local/ns/shop/sa/pay was expected"
        );
        assert!(server.is_err(), "the client aborts the handshake");
    }

    #[tokio::test]
    async fn a_client_of_another_trust_domain_is_refused() {
        let ca = TestCa::new();
        let (cart, pay) = (id("other.domain", "cart"), id("cluster.local", "pay"));
        let c = ca.issue(&cart, Duration::from_secs(600));
        let s = ca.issue(&pay, Duration::from_secs(600));
        let roots = ca.trust_bundle();
        let (_, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            true,
        )
        .await;
        let server = server.unwrap_err();
        assert!(
            matches!(&server, TlsError::TrustDomain { expected, .. } if expected == "cluster.local"),
            "{server}"
        );
    }

    #[tokio::test]
    async fn a_client_without_alpn_h2_is_refused() {
        let ca = TestCa::new();
        let (cart, pay) = (id("cluster.local", "cart"), id("cluster.local", "pay"));
        let c = ca.issue(&cart, Duration::from_secs(600));
        let s = ca.issue(&pay, Duration::from_secs(600));
        let roots = ca.trust_bundle();
        let (_, server) = run(
            Side { cert: &c, roots: &roots },
            std::slice::from_ref(&pay),
            Side { cert: &s, roots: &roots },
            false,
        )
        .await;
        assert!(matches!(server, Err(TlsError::NoH2 { offered: None })), "{server:?}");
    }

    #[test]
    fn a_server_certificate_without_a_uri_san_is_refused() {
        let ca = TestCa::new();
        let pay = id("cluster.local", "pay");
        let spec = LeafSpec {
            uris: vec![],
            dns_names: vec!["pay.shop.svc".into()],
            ..LeafSpec::for_identity(&pay, Duration::from_secs(600))
        };
        let (chain, _) = ca.issue_pem(&spec);
        let chain: Vec<_> =
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
        let verifier = SpiffeServerVerifier { roots: ca.trust_bundle().roots().clone(), expected: vec![pay] };
        let now = UnixTime::now();
        let err = verifier.verify_server_cert(&chain[0], &[], &server_name(), &[], now).unwrap_err();
        let err = TlsError::from_rustls(err, Peer::Server);
        assert!(
            matches!(err, TlsError::PeerIdentity { peer: Peer::Server, source: CertError::NoUriSan }),
            "{err}"
        );
        assert!(err.to_string().contains("no URI SAN"), "{err}");
    }
}
