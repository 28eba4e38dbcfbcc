//! Reading a workload's CSR: its signature must verify, and it must ask for exactly one
//! thing, a SPIFFE workload identity as a URI SAN. What else it asks for (subject, key
//! usages) is ignored: the CA decides those, as istiod does.

use rcgen::{CertificateSigningRequestParams, PublicKey, SanType};
use weft_hbone::{Identity, IdentityError};

/// A CSR that asks for one workload identity.
#[derive(Debug)]
pub struct WorkloadCsr {
    /// The identity of the CSR's URI SAN.
    pub identity: Identity,
    /// The key the certificate will carry.
    pub public_key: PublicKey,
}

/// Why a CSR is refused before any authorization (INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the CSR is not a PEM-encoded PKCS#10 certificate request")]
    Unparseable,
    #[error("the CSR's signature does not verify with the key it carries")]
    BadSignature,
    #[error("the CSR uses a key or signature algorithm the CA does not support (use ECDSA P-256)")]
    UnsupportedAlgorithm,
    #[error("the CSR carries an extension the CA does not read; ask only for a URI SAN")]
    UnsupportedExtension,
    #[error("the CSR names no identity: it needs one URI SAN spiffe://<trust-domain>/ns/<ns>/sa/<sa>")]
    NoSan,
    #[error("the CSR names {0} subject alternative names; it may name exactly one, the SPIFFE ID")]
    SeveralSans(usize),
    #[error("the CSR's subject alternative name {0} is not a URI; only a SPIFFE ID may be asked for")]
    NotUri(String),
    #[error("the CSR's URI SAN is not a workload identity: {0}")]
    NotWorkloadIdentity(#[from] IdentityError),
}

impl WorkloadCsr {
    pub fn parse(pem: &str) -> Result<WorkloadCsr, CsrError> {
        let csr = CertificateSigningRequestParams::from_pem(pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CsrError::BadSignature,
            rcgen::Error::UnsupportedExtension => CsrError::UnsupportedExtension,
            rcgen::Error::UnsupportedSignatureAlgorithm => CsrError::UnsupportedAlgorithm,
            _ => CsrError::Unparseable,
        })?;
        let identity = match csr.params.subject_alt_names.as_slice() {
            [] => return Err(CsrError::NoSan),
            [SanType::URI(uri)] => uri.as_str().parse::<Identity>()?,
            [other] => return Err(CsrError::NotUri(describe(other))),
            more => return Err(CsrError::SeveralSans(more.len())),
        };
        Ok(WorkloadCsr { identity, public_key: csr.public_key })
    }
}

fn describe(san: &SanType) -> String {
    match san {
        SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
        SanType::URI(uri) => format!("URI:{}", uri.as_str()),
        _ => "otherName".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A CSR for these SANs with a fresh key, as an agent makes it.
    pub(crate) fn csr(sans: Vec<SanType>) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = sans;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    pub(crate) fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn one_spiffe_uri_is_accepted() {
        let (key, pem) = csr(vec![uri("spiffe://cluster.local/ns/bookinfo/sa/reviews")]);
        let parsed = WorkloadCsr::parse(&pem).unwrap();
        assert_eq!(parsed.identity, Identity::new("cluster.local", "bookinfo", "reviews").unwrap());
        assert_eq!(rcgen::PublicKeyData::der_bytes(&parsed.public_key), key.public_key_raw());
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let cases = [
            (vec![], CsrError::NoSan),
            (
                vec![SanType::DnsName("reviews.bookinfo".try_into().unwrap())],
                CsrError::NotUri("DNS:reviews.bookinfo".into()),
            ),
            (
                vec![uri("spiffe://cluster.local/ns/a/sa/b"), uri("spiffe://cluster.local/ns/a/sa/c")],
                CsrError::SeveralSans(2),
            ),
        ];
        for (sans, want) in cases {
            let (_, pem) = csr(sans);
            assert_eq!(WorkloadCsr::parse(&pem).unwrap_err(), want);
        }
        let (_, pem) = csr(vec![uri("spiffe://cluster.local/ns/a")]);
        assert!(matches!(WorkloadCsr::parse(&pem), Err(CsrError::NotWorkloadIdentity(_))));
        assert_eq!(WorkloadCsr::parse("hello").unwrap_err(), CsrError::Unparseable);
    }

    #[test]
    fn a_tampered_csr_does_not_verify() {
        use rustls_pki_types::pem::PemObject as _;
        let (_, pem) = csr(vec![uri("spiffe://cluster.local/ns/a/sa/b")]);
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        // The signature is the last field: flipping its last byte breaks it.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let tampered = super::super::pem::encode(&bytes).replace("CERTIFICATE", "CERTIFICATE REQUEST");
        assert_eq!(WorkloadCsr::parse(&tampered).unwrap_err(), CsrError::BadSignature);
    }
}
