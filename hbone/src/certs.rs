//! Workload certificates, the mesh's trust bundle, and certificate signing requests.
//!
//! A [`WorkloadCertificate`] is checked once, when it is built: its leaf names exactly one
//! SPIFFE workload identity in a URI SAN, and its private key is the leaf's. After that
//! every user (TLS configs, rotation, dumps) can rely on it without checking again. The
//! private key is made on the node that uses it ([`new_csr`]); only the CSR travels.

use crate::identity::{Identity, IdentityError};
use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
    pem::{self, PemObject},
};
use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// Why a certificate, key, bundle or CSR could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The PEM text holds no `CERTIFICATE` block.
    #[error("no CERTIFICATE block in the {what} PEM")]
    NoCertificate { what: &'static str },
    /// The PEM text holds no private key block.
    #[error("no private key (PRIVATE KEY or EC PRIVATE KEY block) in the key PEM")]
    NoPrivateKey,
    /// The PEM framing itself is broken.
    #[error("cannot read the {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    /// A certificate's DER does not parse as X.509.
    #[error("certificate {index} of the {what} is not valid X.509: {reason}")]
    BadCertificate { what: &'static str, index: usize, reason: String },
    /// The leaf carries no URI SAN, so it names no workload.
    #[error("the leaf certificate has no URI SAN: a workload certificate must name its SPIFFE identity")]
    NoUriSan,
    /// The leaf carries more than one URI SAN; a workload has exactly one identity.
    #[error("the leaf certificate has {} URI SANs ({}): a workload certificate names exactly one", .0.len(), .0.join(", "))]
    SeveralUriSans(Vec<String>),
    /// The URI SAN is not a SPIFFE workload identity.
    #[error("the leaf's URI SAN {uri:?} is not a workload identity: {source}")]
    NotWorkloadIdentity {
        uri: String,
        #[source]
        source: IdentityError,
    },
    /// The private key does not belong to the leaf certificate.
    #[error(
        "the private key does not match the leaf certificate's public key (key and certificate from different requests?)"
    )]
    KeyMismatch,
    /// The private key is not one rustls (ring) can sign with.
    #[error("cannot use the private key: {0}")]
    BadKey(String),
    /// The certificates do not form a chain: one is not issued by the next.
    #[error("certificate {index} of the chain is not issued by certificate {}: the chain must be the leaf, then each issuer in order", .index + 1)]
    BrokenChain { index: usize },
    /// A trust bundle holds no root.
    #[error("the trust bundle holds no certificate")]
    EmptyBundle,
    /// A certificate of the trust bundle is not a CA.
    #[error("certificate {index} of the trust bundle ({subject}) is not a CA certificate")]
    NotCa { index: usize, subject: String },
    /// rustls refused the roots or the verifier built from them.
    #[error("cannot build a verifier from the trust bundle: {0}")]
    Verifier(String),
    /// Making a key or a CSR failed.
    #[error("cannot make a certificate signing request for {identity}: {reason}")]
    Csr { identity: String, reason: String },
}

/// The crypto provider of the whole mesh: ring, TLS 1.3 AES-GCM suites only (as ztunnel:
/// the FIPS-approved suites; AES-128 first because it is the faster of the two on
/// AES-NI hardware and as strong as the mesh needs). Built once.
pub(crate) fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| {
        use rustls::crypto::ring::{cipher_suite, default_provider};
        Arc::new(CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            ..default_provider()
        })
    })
}

/// A workload's certificate chain and private key, checked on construction.
///
/// Cheap to share behind an `Arc`: the key is loaded into a signer once, and every TLS
/// config built from this certificate reuses it.
pub struct WorkloadCertificate {
    identity: Identity,
    /// The leaf first, then the intermediates (a trailing root is dropped: peers have it).
    chain: Vec<CertificateDer<'static>>,
    certified: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    /// The leaf's serial number in hex, to tell one certificate from its successor.
    serial: String,
}

impl fmt::Debug for WorkloadCertificate {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// From PEM: `chain` holds the leaf first, then its intermediates (and possibly the root,
    /// as Istio's CA answers); `key` holds the leaf's private key (PKCS#8 or SEC1).
    pub fn from_pem(chain: &str, key: &str) -> Result<WorkloadCertificate, CertError> {
        let chain = certificates_from_pem(chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => CertError::NoPrivateKey,
            other => CertError::Pem { what: "key", reason: other.to_string() },
        })?;
        WorkloadCertificate::from_der(chain, key)
    }

    /// From a chain made by [`new_csr`]'s key and the CA's answer.
    pub fn from_pem_with_key(chain: &str, key: &PrivateKey) -> Result<WorkloadCertificate, CertError> {
        let chain = certificates_from_pem(chain, "certificate chain")?;
        WorkloadCertificate::from_der(chain, key.der.clone_key().into())
    }

    /// From DER: the leaf first, then its intermediates (a trailing self-signed root is
    /// dropped), and the leaf's private key.
    pub fn from_der(
        mut chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<WorkloadCertificate, CertError> {
        let what = "certificate chain";
        let leaf_der = chain.first().ok_or(CertError::NoCertificate { what })?;
        let leaf = parse(leaf_der, what, 0)?;
        let identity = leaf_identity(&leaf)?;
        let not_before = to_system_time(leaf.validity().not_before.timestamp());
        let not_after = to_system_time(leaf.validity().not_after.timestamp());
        let serial = leaf.raw_serial_as_string().replace(':', "");

        // Each certificate must be issued by the next one; a root at the end is dropped
        // because the peer verifies against its own copy and sending it costs bytes in
        // every handshake.
        let mut keep = chain.len();
        for index in 0..chain.len() {
            let cert = parse(&chain[index], what, index)?;
            if let Some(next) = chain.get(index + 1) {
                let issuer = parse(next, what, index + 1)?;
                if cert.issuer().as_raw() != issuer.subject().as_raw() {
                    return Err(CertError::BrokenChain { index });
                }
            }
            if index > 0 && cert.subject().as_raw() == cert.issuer().as_raw() {
                keep = index;
                break;
            }
        }
        chain.truncate(keep);

        let signer =
            provider().key_provider.load_private_key(key).map_err(|e| CertError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain.clone(), signer);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch);
            }
            Err(e) => return Err(CertError::BadKey(e.to_string())),
        }
        Ok(WorkloadCertificate {
            identity,
            chain,
            certified: Arc::new(certified),
            not_before,
            not_after,
            serial,
        })
    }

    /// The SPIFFE identity the leaf names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf, then its intermediates, as presented in handshakes.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain as PEM (for config dumps; never the key).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| der_to_pem("CERTIFICATE", c)).collect()
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's serial number, hex.
    pub fn serial_hex(&self) -> &str {
        &self.serial
    }

    /// When the leaf expires (its notAfter).
    pub fn expiry(&self) -> SystemTime {
        self.not_after
    }

    /// When to ask for the next certificate: half-way through the validity, as Istio does,
    /// so that a CA outage of up to half the TTL goes unnoticed by the data path.
    pub fn refresh_at(&self) -> SystemTime {
        match self.not_after.duration_since(self.not_before) {
            Ok(validity) => self.not_before + validity / 2,
            Err(_) => self.not_before,
        }
    }

    /// Whether `now` is outside the leaf's validity.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Checks the chain against the mesh roots, as a peer would (e.g. on a freshly signed
    /// certificate, before it replaces the current one).
    pub fn verify(&self, roots: &TrustBundle, now: SystemTime) -> Result<(), crate::tls::TlsError> {
        let now = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
        roots
            .client_verifier
            .verify_client_cert(&self.chain[0], &self.chain[1..], now)
            .map(|_| ())
            .map_err(|e| crate::tls::TlsError::from_rustls(e, crate::tls::Peer::Local))
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

/// The mesh's root certificates: what peers' chains must lead to.
///
/// Cheap to clone (the parsed roots and the client verifier are shared), so one bundle
/// serves every TLS config on the node.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
    certificates: Arc<[CertificateDer<'static>]>,
    /// webpki client-certificate verification against `roots`, built once.
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle").field("roots", &self.certificates.len()).finish()
    }
}

impl TrustBundle {
    /// From PEM holding one or several root certificates.
    pub fn from_pem(pem: &str) -> Result<TrustBundle, CertError> {
        TrustBundle::from_der(certificates_from_pem(pem, "trust bundle")?)
    }

    /// From DER root certificates; each must be a CA certificate.
    pub fn from_der(certificates: Vec<CertificateDer<'static>>) -> Result<TrustBundle, CertError> {
        if certificates.is_empty() {
            return Err(CertError::EmptyBundle);
        }
        let mut roots = RootCertStore::empty();
        for (index, der) in certificates.iter().enumerate() {
            let cert = parse(der, "trust bundle", index)?;
            if !cert.is_ca() {
                return Err(CertError::NotCa { index, subject: cert.subject().to_string() });
            }
            roots.add(der.clone()).map_err(|e| CertError::BadCertificate {
                what: "trust bundle",
                index,
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider().clone())
            .build()
            .map_err(|e| CertError::Verifier(e.to_string()))?;
        Ok(TrustBundle { roots, certificates: certificates.into(), client_verifier })
    }

    /// The root certificates, in the order given.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// The roots as PEM.
    pub fn to_pem(&self) -> String {
        self.certificates.iter().map(|c| der_to_pem("CERTIFICATE", c)).collect()
    }

    pub(crate) fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Whether two bundles are the same shared value (not merely equal content).
    pub(crate) fn same_as(&self, other: &TrustBundle) -> bool {
        Arc::ptr_eq(&self.roots, &other.roots)
    }
}

/// A private key made on this node; its `Debug` never prints it.
pub struct PrivateKey {
    der: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// PKCS#8 PEM, for a caller that must persist the key (the agent keeps keys in memory).
    pub fn to_pem(&self) -> String {
        der_to_pem("PRIVATE KEY", self.der.secret_pkcs8_der())
    }
}

/// Makes a fresh ECDSA P-256 key and a CSR (PEM) asking for `identity` as the only URI SAN,
/// as ztunnel does: no subject, the SAN alone names the workload. The key stays here.
pub fn new_csr(identity: &Identity) -> Result<(PrivateKey, String), CertError> {
    let fail = |reason: String| CertError::Csr { identity: identity.to_string(), reason };
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    let uri = rcgen::string::Ia5String::try_from(identity.to_string()).map_err(|e| fail(e.to_string()))?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    // rcgen's default subject is "CN=rcgen self signed cert"; a CSR for a workload has none.
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| fail(e.to_string()))?;
    let csr_pem = csr.pem().map_err(|e| fail(e.to_string()))?;
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((PrivateKey { der }, csr_pem))
}

/// The SPIFFE identity of a leaf: its one URI SAN.
pub(crate) fn leaf_identity(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let sans = cert.subject_alternative_name().map_err(|e| CertError::BadCertificate {
        what: "leaf",
        index: 0,
        reason: format!("bad subjectAltName: {e}"),
    })?;
    let mut uris =
        sans.into_iter().flat_map(|ext| ext.value.general_names.iter()).filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let Some(first) = uris.next() else { return Err(CertError::NoUriSan) };
    if let Some(second) = uris.next() {
        let all = [first, second].into_iter().chain(uris).map(str::to_owned).collect();
        return Err(CertError::SeveralUriSans(all));
    }
    first.parse().map_err(|source| CertError::NotWorkloadIdentity { uri: first.to_owned(), source })
}

fn parse<'a>(
    der: &'a CertificateDer<'_>,
    what: &'static str,
    index: usize,
) -> Result<X509Certificate<'a>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::BadCertificate {
            what,
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(CertError::BadCertificate { what, index, reason: e.to_string() }),
    }
}

fn certificates_from_pem(text: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { what });
    }
    Ok(certs)
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 { SystemTime::UNIX_EPOCH + magnitude } else { SystemTime::UNIX_EPOCH - magnitude }
}

fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{LeafSpec, TestCa};
    use crate::tls::{Peer, TlsError};

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "shop", sa).unwrap()
    }

    /// Whole seconds: X.509 times have no fractions.
    fn secs(t: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t)
    }

    #[test]
    fn certificate_gives_identity_chain_validity_and_refresh_time() {
        let ca = TestCa::with_intermediate();
        let spec = LeafSpec {
            not_before: secs(1_900_000_000),
            not_after: secs(1_900_000_000 + 24 * 3600),
            ..LeafSpec::for_identity(&id("cart"), Duration::ZERO)
        };
        let cert = ca.issue_spec(&spec);
        assert_eq!(cert.identity(), &id("cart"));
        assert_eq!(cert.chain().len(), 2, "leaf and intermediate");
        assert_eq!(cert.not_before(), secs(1_900_000_000));
        assert_eq!(cert.expiry(), secs(1_900_000_000 + 24 * 3600));
        assert_eq!(cert.refresh_at(), secs(1_900_000_000 + 12 * 3600), "half-way through the validity");
        assert!(!cert.is_expired_at(secs(1_900_000_000 + 24 * 3600)));
        assert!(cert.is_expired_at(secs(1_900_000_000 + 24 * 3600 + 1)));
        let pem = cert.chain_pem();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        assert_eq!(CertificateDer::pem_slice_iter(pem.as_bytes()).count(), 2);
    }

    #[test]
    fn csr_names_the_identity_and_its_answer_makes_a_certificate() {
        let (key, csr_pem) = new_csr(&id("cart")).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents).unwrap();
        let info = &csr.certification_request_info;
        assert_eq!(info.subject.iter_attributes().count(), 0, "no subject, the SAN names the workload");
        let uris: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec!["spiffe://cluster.local/ns/shop/sa/cart".to_owned()]);
        // id-ecPublicKey with the P-256 curve (prime256v1).
        let spki = &info.subject_pki;
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).unwrap();
        assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");

        // The CA answers leaf + intermediate + root; the root is dropped.
        let ca = TestCa::with_intermediate();
        let answer = ca.sign_csr(&csr_pem, Duration::from_secs(3600)).unwrap();
        assert_eq!(answer.matches("BEGIN CERTIFICATE").count(), 3);
        let cert = WorkloadCertificate::from_pem_with_key(&answer, &key).unwrap();
        assert_eq!(cert.identity(), &id("cart"));
        assert_eq!(cert.chain().len(), 2);
        cert.verify(&ca.trust_bundle(), SystemTime::now()).unwrap();
        // The same key as PEM (PKCS#8) works as well.
        let again = WorkloadCertificate::from_pem(&answer, &key.to_pem()).unwrap();
        assert_eq!(again.identity(), &id("cart"));
        assert_eq!(format!("{key:?}"), "PrivateKey(..)");
        assert!(!format!("{cert:?}").contains("PRIVATE"), "Debug never shows the key");
    }

    #[test]
    fn a_root_only_ca_gives_a_leaf_only_chain() {
        let ca = TestCa::new();
        let (key, csr) = new_csr(&id("cart")).unwrap();
        let answer = ca.sign_csr(&csr, Duration::from_secs(60)).unwrap();
        let cert = WorkloadCertificate::from_pem_with_key(&answer, &key).unwrap();
        assert_eq!(cert.chain().len(), 1);
    }

    #[test]
    fn what_is_not_a_workload_certificate() {
        let ca = TestCa::new();
        let spec = |uris: &[&str], dns: &[&str]| LeafSpec {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ..LeafSpec::for_identity(&id("x"), Duration::from_secs(60))
        };
        let (good_chain, good_key) = ca.issue_pem(&spec(&["spiffe://cluster.local/ns/shop/sa/cart"], &[]));
        let (other_chain, other_key) = ca.issue_pem(&spec(&["spiffe://cluster.local/ns/shop/sa/other"], &[]));
        let (no_uri, no_uri_key) = ca.issue_pem(&spec(&[], &["cart.shop.svc"]));
        let (two, two_key) = ca.issue_pem(&spec(
            &["spiffe://cluster.local/ns/shop/sa/a", "spiffe://cluster.local/ns/shop/sa/b"],
            &[],
        ));
        let (https, https_key) = ca.issue_pem(&spec(&["https://cart.shop"], &[]));
        let (not_workload, not_workload_key) = ca.issue_pem(&spec(&["spiffe://cluster.local/cart"], &[]));
        let garbage = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let broken_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        // A leaf followed by a certificate that did not issue it.
        let unrelated = format!("{good_chain}{}", TestCa::new().root_pem());

        let cases: Vec<(&str, String, String, &str)> = vec![
            ("empty chain", String::new(), good_key.clone(), "no CERTIFICATE block"),
            ("not base64", broken_base64.into(), good_key.clone(), "cannot read the certificate chain PEM"),
            ("not X.509", garbage.into(), good_key.clone(), "not valid X.509"),
            ("no key", good_chain.clone(), String::new(), "no private key"),
            ("another key", good_chain.clone(), other_key.clone(), "does not match the leaf"),
            ("no URI SAN", no_uri, no_uri_key, "no URI SAN"),
            ("two URI SANs", two, two_key, "2 URI SANs"),
            ("not SPIFFE", https, https_key, "is not a workload identity"),
            ("not a workload", not_workload, not_workload_key, "is not a workload identity"),
            ("out of order", unrelated, good_key.clone(), "is not issued by certificate 1"),
        ];
        for (what, chain, key, want) in cases {
            let err = WorkloadCertificate::from_pem(&chain, &key).unwrap_err().to_string();
            assert!(err.contains(want), "{what}: {err}");
        }
        assert!(WorkloadCertificate::from_pem(&other_chain, &other_key).is_ok());

        // And from DER: an empty chain.
        let key = PrivateKeyDer::from_pem_slice(good_key.as_bytes()).unwrap();
        assert!(matches!(
            WorkloadCertificate::from_der(vec![], key),
            Err(CertError::NoCertificate { what: "certificate chain" })
        ));
    }

    #[test]
    fn trust_bundles() {
        let (a, b) = (TestCa::new(), TestCa::with_intermediate());
        let both = TrustBundle::from_pem(&format!("{}{}", a.root_pem(), b.root_pem())).unwrap();
        assert_eq!(both.certificates().len(), 2);
        assert_eq!(TrustBundle::from_pem(&both.to_pem()).unwrap().certificates(), both.certificates());

        assert!(matches!(TrustBundle::from_pem(""), Err(CertError::NoCertificate { .. })));
        assert!(matches!(TrustBundle::from_der(vec![]), Err(CertError::EmptyBundle)));
        let leaf = a.issue(&id("cart"), Duration::from_secs(60));
        let err = TrustBundle::from_pem(&leaf.chain_pem()).unwrap_err();
        assert!(matches!(err, CertError::NotCa { index: 0, .. }), "{err}");

        // A certificate verifies against its own CA's bundle, or a bundle holding it, only.
        let now = SystemTime::now();
        leaf.verify(&a.trust_bundle(), now).unwrap();
        leaf.verify(&both, now).unwrap();
        let err = leaf.verify(&b.trust_bundle(), now).unwrap_err();
        assert!(matches!(err, TlsError::UnknownIssuer { peer: Peer::Local }), "{err}");
        let expired = a.issue_expired(&id("cart"));
        let err = expired.verify(&a.trust_bundle(), now).unwrap_err();
        assert!(matches!(err, TlsError::Expired { peer: Peer::Local, not_after: Some(_), .. }), "{err}");
        assert!(err.to_string().contains("has expired at"), "{err}");
    }
}
