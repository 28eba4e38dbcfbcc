//! A small certificate authority for tests (`testing` feature): a root, an optional
//! intermediate, and workload certificates issued on demand — valid, expired, or with
//! whatever SANs a test needs. Not for production: keys live in memory and nothing is
//! persisted. Panics on failure, as test support does.

use crate::{
    certs::{TrustBundle, WorkloadCertificate},
    identity::Identity,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};
use time::OffsetDateTime;

/// What a leaf certificate says; [`LeafSpec::for_identity`] gives the usual one.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// URI SANs (a workload certificate has exactly one SPIFFE ID).
    pub uris: Vec<String>,
    /// DNS SANs (workload certificates have none; for negative tests).
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// `identity` as the only URI SAN, valid from a minute ago for `validity`.
    pub fn for_identity(identity: &Identity, validity: Duration) -> LeafSpec {
        let not_before = SystemTime::now() - Duration::from_secs(60);
        LeafSpec {
            uris: vec![identity.to_string()],
            dns_names: vec![],
            not_before,
            not_after: not_before + validity,
        }
    }
}

/// A test certificate authority. Every instance has its own keys and names, so two
/// instances are two CAs that do not trust each other.
pub struct TestCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: Option<CertifiedIssuer<'static, KeyPair>>,
}

impl TestCa {
    /// A CA that signs leaves with its root directly.
    pub fn new() -> TestCa {
        TestCa { root: root(), intermediate: None }
    }

    /// A CA whose leaves are signed by an intermediate, itself signed by the root (as a
    /// plug-in CA is laid out).
    pub fn with_intermediate() -> TestCa {
        let root = root();
        let mut params = ca_params("Weft test intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = new_key();
        let intermediate =
            CertifiedIssuer::signed_by(params, key, &root).expect("sign the test intermediate");
        TestCa { root, intermediate: Some(intermediate) }
    }

    /// The root, as a trust bundle.
    pub fn trust_bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(&self.root_pem()).expect("the test root makes a trust bundle")
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A certificate for `identity`, valid from a minute ago for `validity`.
    pub fn issue(&self, identity: &Identity, validity: Duration) -> WorkloadCertificate {
        self.issue_spec(&LeafSpec::for_identity(identity, validity))
    }

    /// A certificate for `identity` that expired an hour ago.
    pub fn issue_expired(&self, identity: &Identity) -> WorkloadCertificate {
        let now = SystemTime::now();
        let spec = LeafSpec {
            not_before: now - Duration::from_secs(7200),
            not_after: now - Duration::from_secs(3600),
            ..LeafSpec::for_identity(identity, Duration::ZERO)
        };
        self.issue_spec(&spec)
    }

    /// A certificate as `spec` says (which must name one workload identity).
    pub fn issue_spec(&self, spec: &LeafSpec) -> WorkloadCertificate {
        let (chain, key) = self.issue_pem(spec);
        WorkloadCertificate::from_pem(&chain, &key).expect("the test CA issues valid workload certificates")
    }

    /// The chain (leaf, then the intermediate if any) and the leaf's key, as PEM, for a
    /// leaf that need not be a valid workload certificate.
    pub fn issue_pem(&self, spec: &LeafSpec) -> (String, String) {
        let key = new_key();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| SanType::URI(u.clone().try_into().expect("an IA5 URI")))
            .chain(
                spec.dns_names
                    .iter()
                    .map(|d| SanType::DnsName(d.clone().try_into().expect("an IA5 DNS name"))),
            )
            .collect();
        params.not_before = OffsetDateTime::from(spec.not_before);
        params.not_after = OffsetDateTime::from(spec.not_after);
        params.serial_number = Some(next_serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, self.issuer()).expect("sign a test leaf");
        let mut chain = leaf.pem();
        if let Some(intermediate) = &self.intermediate {
            chain.push_str(&intermediate.pem());
        }
        (chain, key.serialize_pem())
    }

    /// Signs a CSR (PEM) for `validity` and answers as istiod does: the leaf, the
    /// intermediate if any, then the root, concatenated.
    pub fn sign_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, rcgen::Error> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = SystemTime::now();
        csr.params.not_before = OffsetDateTime::from(now - Duration::from_secs(60));
        csr.params.not_after = OffsetDateTime::from(now + validity);
        csr.params.serial_number = Some(next_serial());
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        csr.params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = csr.signed_by(self.issuer())?;
        let mut chain = leaf.pem();
        if let Some(intermediate) = &self.intermediate {
            chain.push_str(&intermediate.pem());
        }
        chain.push_str(&self.root.pem());
        Ok(chain)
    }

    fn issuer(&self) -> &rcgen::Issuer<'static, KeyPair> {
        self.intermediate.as_deref().unwrap_or(&self.root)
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

fn root() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = ca_params("Weft test root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, new_key()).expect("self-sign the test root")
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "weft-tests");
    // A serial in the name keeps two test CAs apart, as two real CAs would be.
    params.distinguished_name.push(DnType::CommonName, format!("{name} {}", next_serial_number()));
    let now = SystemTime::now();
    params.not_before = OffsetDateTime::from(now - Duration::from_secs(3600));
    params.not_after = OffsetDateTime::from(now + Duration::from_secs(10 * 365 * 24 * 3600));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key")
}

fn next_serial_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Mixed with the process id so CAs of parallel test processes differ too.
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn next_serial() -> rcgen::SerialNumber {
    rcgen::SerialNumber::from_slice(&next_serial_number().to_be_bytes())
}
