//! PEM in and out: certificates split from a PEM file one by one, and DER written back as
//! PEM, so the chain weftd answers has one certificate per element (what ztunnel expects).

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// The certificates of a PEM text, in order. Other blocks (keys) are skipped; a broken
/// certificate block is an error with the reason.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// A DER certificate as a PEM block, with a trailing newline.
pub fn encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap().self_signed(&key).unwrap();
        let text = format!("{}{}", encode(cert.der()), key.serialize_pem());
        let certs = certificates(text.as_bytes()).unwrap();
        assert_eq!(certs, [cert.der().clone()]);
        assert_eq!(encode(cert.der()), cert.pem().replace("\r\n", "\n"));
        assert!(certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err());
    }
}
