//! How a client reaches the control plane: the endpoint, the root certificate it checks the
//! server against, and the bearer token it presents. Shared by the ADS client and the CA
//! client.
//!
//! weftd serves xDS and its CA on one TLS port (15012, as istiod); clients present
//! `authorization: Bearer <token>` on every call. Both files are read again at every
//! connection (the ADS client) or call (the CA client), so a rotated token or root is
//! picked up without a restart, as ztunnel does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// How the client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file with the root certificate(s) the server's chain must lead to (weftd writes
    /// its root where agents read it).
    pub root_cert: PathBuf,
    /// The DNS name or IP the server's certificate must carry, when it is not the host of
    /// the endpoint (connecting by IP to a server whose certificate names
    /// `weftd.istio-system.svc`; ztunnel's ALT_XDS_HOSTNAME).
    pub server_name: Option<String>,
}

/// Why a client cannot reach the control plane with its settings.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint is not a URI tonic can connect to.
    #[error(
        "invalid control plane endpoint {endpoint:?}: {error} (expected e.g. https://weftd.istio-system.svc:15012)"
    )]
    InvalidEndpoint { endpoint: String, error: tonic::transport::Error },
    /// An https endpoint without a root certificate to check the server against.
    #[error(
        "{endpoint} is https but no root certificate was given to verify the server (pass the CA's root-cert.pem)"
    )]
    NoRootCert { endpoint: String },
    /// A root certificate for a plaintext endpoint: a sign of a mistyped endpoint.
    #[error(
        "{endpoint} is plain http but a root certificate was given: use https:// for weftd's TLS port (15012)"
    )]
    TlsForPlaintext { endpoint: String },
    /// The root certificate file cannot be read.
    #[error("cannot read the root certificate {}: {error}", path.display())]
    ReadRootCert { path: PathBuf, error: std::io::Error },
    /// The root certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    /// tonic refused the TLS settings.
    #[error("cannot set up TLS to {endpoint}: {error}")]
    Tls { endpoint: String, error: tonic::transport::Error },
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {error}", path.display())]
    ReadToken { path: PathBuf, error: std::io::Error },
    /// The token file is empty, or holds what cannot be an HTTP header value.
    #[error("the token file {} {reason}", path.display())]
    BadToken { path: PathBuf, reason: &'static str },
}

/// Checks the pairing of endpoint and TLS settings: https needs a root, http must not
/// have one.
pub(crate) fn check(endpoint: &str, tls: Option<&ClientTls>) -> Result<(), ConnectError> {
    let parsed = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| ConnectError::InvalidEndpoint { endpoint: endpoint.to_owned(), error })?;
    let https = parsed.uri().scheme_str() == Some("https");
    match (https, tls) {
        (true, None) => Err(ConnectError::NoRootCert { endpoint: endpoint.to_owned() }),
        (false, Some(_)) => Err(ConnectError::TlsForPlaintext { endpoint: endpoint.to_owned() }),
        _ => Ok(()),
    }
}

/// Reads the root certificate file (PEM, one or more certificates).
pub(crate) fn read_root(tls: &ClientTls) -> Result<Vec<u8>, ConnectError> {
    let pem = std::fs::read(&tls.root_cert)
        .map_err(|error| ConnectError::ReadRootCert { path: tls.root_cert.clone(), error })?;
    if !pem.windows(CERT_MARKER.len()).any(|w| w == CERT_MARKER) {
        return Err(ConnectError::NoCertificate { path: tls.root_cert.clone() });
    }
    Ok(pem)
}

const CERT_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// An endpoint for `endpoint`, over TLS trusting `root_pem` when `tls` is given.
pub(crate) fn endpoint(
    endpoint: &str,
    tls: Option<(&ClientTls, &[u8])>,
    connect_timeout: Duration,
) -> Result<Endpoint, ConnectError> {
    let mut built = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| ConnectError::InvalidEndpoint { endpoint: endpoint.to_owned(), error })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some((tls, root_pem)) = tls {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root_pem));
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        built = built
            .tls_config(config)
            .map_err(|error| ConnectError::Tls { endpoint: endpoint.to_owned(), error })?;
    }
    Ok(built)
}

/// The `authorization` metadata value for the token in `path`: `Bearer <token>`, the
/// file's content with surrounding whitespace (a trailing newline) removed.
pub(crate) fn bearer(path: &Path) -> Result<AsciiMetadataValue, ConnectError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConnectError::ReadToken { path: path.to_owned(), error })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConnectError::BadToken { path: path.to_owned(), reason: "is empty" });
    }
    if token.contains(char::is_whitespace) {
        return Err(ConnectError::BadToken {
            path: path.to_owned(),
            reason: "holds whitespace inside the token: it must hold one token",
        });
    }
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| ConnectError::BadToken {
        path: path.to_owned(),
        reason: "holds characters that cannot travel in an HTTP header",
    })
}

/// Adds `authorization: Bearer <token>` to every request of a client.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bearer(pub Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> ClientTls {
        ClientTls { root_cert: "/nonexistent/root-cert.pem".into(), server_name: None }
    }

    #[test]
    fn https_needs_a_root_and_http_refuses_one() {
        assert!(check("https://weftd:15012", Some(&tls())).is_ok());
        assert!(check("http://127.0.0.1:15010", None).is_ok());
        let e = check("https://weftd:15012", None).unwrap_err().to_string();
        assert!(e.contains("is https but no root certificate"), "{e}");
        let e = check("http://weftd:15012", Some(&tls())).unwrap_err().to_string();
        assert!(e.contains("use https://"), "{e}");
        assert!(matches!(check("not a uri", None), Err(ConnectError::InvalidEndpoint { .. })));
    }

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(bearer(&path).unwrap(), "Bearer s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(bearer(&path).unwrap_err().to_string().contains("is empty"));
        std::fs::write(&path, "two tokens").unwrap();
        assert!(bearer(&path).unwrap_err().to_string().contains("whitespace"));
        let missing = dir.path().join("missing");
        let e = bearer(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read the token file {}", missing.display())), "{e}");
    }

    #[test]
    fn root_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-cert.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let tls = ClientTls { root_cert: path.clone(), server_name: None };
        assert!(matches!(read_root(&tls), Err(ConnectError::NoCertificate { .. })));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert!(read_root(&tls).is_ok());
    }
}
