//! The signing key and certificates, checked once when loaded, and the certificates made
//! with them: workload certificates from CSRs, and weftd's own serving certificate.
//!
//! Certificates follow istiod's (security/pkg/pki/util/generate_cert.go): an empty subject
//! and a critical URI SAN, digitalSignature + keyEncipherment, serverAuth + clientAuth, a
//! random 128-bit serial, valid from a little before now (clock skew) and never past the
//! signing certificate.

use super::pem;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use weft_hbone::Identity;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

/// Istio's file names, in a `cacerts` directory, in weftd's CA directory and in its
/// Kubernetes Secret alike.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const ROOT_CERT: &str = "root-cert.pem";

/// How far back a certificate's validity starts, for peers whose clock runs behind
/// weftd's: istiod's ClockSkewGracePeriod, 2 minutes. Capped at a quarter of the TTL, so
/// that a 30 s test certificate is still refreshed at about half its real life (ztunnel
/// refreshes at the middle of notBefore..notAfter).
const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Why the CA's own material cannot be used. Each names where it came from and which file.
#[derive(Debug, thiserror::Error)]
#[error("{file} in {place}: {reason}")]
pub struct MaterialError {
    /// The directory or Secret, e.g. "/etc/cacerts" or "Secret istio-system/weft-ca-secret".
    pub place: String,
    /// The file (or Secret key): ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
    pub file: &'static str,
    pub reason: String,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A requested validity above the maximum: refused, as istiod does (TTL_ERROR).
    #[error(
        "requested validity {requested:?} is longer than the maximum {max:?} (weftd --max-workload-cert-ttl)"
    )]
    TtlTooLong { requested: Duration, max: Duration },
    /// The signing certificate has expired: nothing it signs would be valid.
    #[error("the CA's signing certificate expired at {0}; replace it (plug-in CA files or the CA Secret)")]
    SigningCertExpired(Rfc3339),
    /// rcgen could not build or sign the certificate.
    #[error("cannot make the certificate: {0}")]
    Generate(rcgen::Error),
}

impl From<rcgen::Error> for SignError {
    fn from(e: rcgen::Error) -> Self {
        SignError::Generate(e)
    }
}

/// A time printed as RFC 3339 (UTC), for messages.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = time::OffsetDateTime::from(self.0);
        match t.format(&time::format_description::well_known::Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{t}"),
        }
    }
}

/// Validity settings of workload certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// When the CSR asks for none: istiod's DEFAULT_WORKLOAD_CERT_TTL, 24 h.
    pub default: Duration,
    /// The most a CSR may ask for: istiod's MAX_WORKLOAD_CERT_TTL, 90 days.
    pub max: Duration,
}

impl Default for Validity {
    fn default() -> Self {
        Validity { default: Duration::from_secs(24 * 3600), max: Duration::from_secs(90 * 24 * 3600) }
    }
}

impl Validity {
    /// The validity for a request's `validity_duration` (seconds; 0 or less: the default).
    pub fn for_request(&self, requested_secs: i64) -> Result<Duration, SignError> {
        let Ok(secs) = u64::try_from(requested_secs) else { return Ok(self.default) };
        if secs == 0 {
            return Ok(self.default);
        }
        let requested = Duration::from_secs(secs);
        if requested > self.max {
            return Err(SignError::TtlTooLong { requested, max: self.max });
        }
        Ok(requested)
    }
}

/// The CA's key and certificates, checked: the key matches the signing certificate, which
/// is a CA whose chain leads to one of the roots.
pub struct SigningMaterial {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate's PEM when it is not itself a root, then the other
    /// intermediates: what follows the leaf in every chain weftd hands out.
    intermediates: Vec<(CertificateDer<'static>, String)>,
    /// root-cert.pem as given: one or more roots, the last element of every answer.
    roots_pem: String,
    roots: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    self_signed: bool,
}

impl std::fmt::Debug for SigningMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningMaterial")
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

impl SigningMaterial {
    /// Checks and loads the CA's files. `place` names where they came from in errors;
    /// `chain` is cert-chain.pem when there is one (it may start with ca-cert.pem and end
    /// with the root, as Istio's instructions build it; both are skipped).
    pub fn from_pem(
        place: &str,
        cert: &[u8],
        key: &[u8],
        chain: Option<&[u8]>,
        roots: &[u8],
    ) -> Result<SigningMaterial, MaterialError> {
        let error =
            |file: &'static str, reason: String| MaterialError { place: place.to_owned(), file, reason };

        let certs = pem::certificates(cert).map_err(|e| error(CA_CERT, e))?;
        let signing_der = match certs.as_slice() {
            [one] => one.clone(),
            [] => return Err(error(CA_CERT, "holds no PEM certificate".into())),
            more => {
                return Err(error(
                    CA_CERT,
                    format!(
                        "holds {} certificates; it must hold only the signing certificate (intermediates go in {CERT_CHAIN})",
                        more.len()
                    ),
                ));
            }
        };
        let signing = parse(&signing_der).map_err(|e| error(CA_CERT, e))?;
        if !signing.is_ca() {
            return Err(error(
                CA_CERT,
                "is not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        if let Ok(Some(usage)) = signing.key_usage()
            && !usage.value.key_cert_sign()
        {
            return Err(error(CA_CERT, "may not sign certificates (its keyUsage lacks keyCertSign)".into()));
        }
        let not_after = to_system_time(signing.validity().not_after.timestamp());
        let now = SystemTime::now();
        if now > not_after {
            return Err(error(CA_CERT, format!("expired at {}", Rfc3339(not_after))));
        }
        let not_before = to_system_time(signing.validity().not_before.timestamp());
        if now < not_before {
            return Err(error(CA_CERT, format!("is not valid before {}", Rfc3339(not_before))));
        }

        let key_text = std::str::from_utf8(key).map_err(|_| error(CA_KEY, "is not PEM text".into()))?;
        let key = KeyPair::from_pem(key_text).map_err(|e| {
            error(
                CA_KEY,
                format!("is not a private key weftd can sign with ({e}); expected PKCS#8 PEM, ECDSA P-256"),
            )
        })?;
        if key.subject_public_key_info() != signing.public_key().raw {
            return Err(error(CA_KEY, format!("does not belong to {CA_CERT}: their public keys differ")));
        }

        let roots = pem::certificates(roots).map_err(|e| error(ROOT_CERT, e))?;
        if roots.is_empty() {
            return Err(error(ROOT_CERT, "holds no PEM certificate".into()));
        }
        let parsed_roots =
            roots.iter().map(|r| parse(r).map_err(|e| error(ROOT_CERT, e))).collect::<Result<Vec<_>, _>>()?;

        let chain = match chain {
            Some(chain) => pem::certificates(chain).map_err(|e| error(CERT_CHAIN, e))?,
            None => Vec::new(),
        };
        let intermediates: Vec<CertificateDer<'static>> =
            chain.into_iter().filter(|c| *c != signing_der && !roots.contains(c)).collect();
        let parsed_intermediates = intermediates
            .iter()
            .map(|c| parse(c).map_err(|e| error(CERT_CHAIN, e)))
            .collect::<Result<Vec<_>, _>>()?;

        // Walk up: each certificate is signed by the next, the last by a root.
        let mut below = &signing;
        let mut below_name = CA_CERT.to_owned();
        for (i, above) in parsed_intermediates.iter().enumerate() {
            if below.verify_signature(Some(above.public_key())).is_err() {
                return Err(error(
                    CERT_CHAIN,
                    format!(
                        "certificate {} ({}) did not sign {below_name} ({}): list the chain from the signing certificate up to the root",
                        i + 1,
                        above.subject(),
                        below.subject()
                    ),
                ));
            }
            below = above;
            below_name = format!("certificate {} of {CERT_CHAIN}", i + 1);
        }
        let self_signed = roots.contains(&signing_der);
        if !self_signed
            && !parsed_roots.iter().any(|root| below.verify_signature(Some(root.public_key())).is_ok())
        {
            return Err(error(
                ROOT_CERT,
                format!(
                    "no root here signed {below_name} (issuer {}): the chain does not lead to these roots",
                    below.issuer()
                ),
            ));
        }

        let issuer = Issuer::from_ca_cert_der(&signing_der, key)
            .map_err(|e| error(CA_CERT, format!("cannot sign with it: {e}")))?;
        let mut chain_out = Vec::new();
        if !self_signed {
            chain_out.push((signing_der.clone(), pem::encode(&signing_der)));
        }
        chain_out.extend(intermediates.into_iter().map(|der| {
            let text = pem::encode(&der);
            (der, text)
        }));
        let roots_pem = roots_text(&roots);
        Ok(SigningMaterial { issuer, intermediates: chain_out, roots_pem, roots, not_after, self_signed })
    }

    /// A new self-signed root, as istiod makes on first start: ECDSA P-256, subject
    /// O=<trust domain>, valid for `ttl` (istiod's default: 10 years). Returns the
    /// material and the PEM of the certificate and the key, to be stored.
    pub fn generate_root(
        trust_domain: &str,
        ttl: Duration,
    ) -> Result<(SigningMaterial, String, String), MaterialError> {
        let failed = |e: rcgen::Error| MaterialError {
            place: "a new root".into(),
            file: CA_CERT,
            reason: format!("cannot generate it: {e}"),
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now.into();
        params.not_after = (now + ttl).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(failed)?;
        let cert_pem = pem::encode(cert.der());
        let key_pem = key.serialize_pem();
        // Through the same checks as a root read back from storage.
        let material = SigningMaterial::from_pem(
            "a new root",
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            None,
            cert_pem.as_bytes(),
        )?;
        Ok((material, cert_pem, key_pem))
    }

    /// root-cert.pem: what agents and proxies trust.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether the root signs directly (weftd's own root) rather than an intermediate.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// When the signing certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs a workload certificate for `identity` with the CSR's public key. Returns the
    /// chain as istiod answers it: the leaf, the intermediates, and root-cert.pem last.
    pub fn sign_workload(
        &self,
        public_key: &impl PublicKeyData,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        let uri = rcgen::string::Ia5String::try_from(identity.to_string())?;
        let params = self.leaf_params(
            vec![SanType::URI(uri)],
            ttl,
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let leaf = params.signed_by(public_key, &self.issuer)?;
        let mut chain = Vec::with_capacity(self.intermediates.len() + 2);
        chain.push(pem::encode(leaf.der()));
        chain.extend(self.intermediates.iter().map(|(_, pem)| pem.clone()));
        chain.push(self.roots_pem.clone());
        Ok(chain)
    }

    /// Signs a server certificate for weftd itself (`key` made by weftd, never stored).
    /// Returns the chain to present: the leaf and the intermediates.
    pub fn sign_server(
        &self,
        key: &KeyPair,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, SystemTime), SignError> {
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            sans.push(SanType::DnsName(rcgen::string::Ia5String::try_from(name.as_str())?));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let params = self.leaf_params(sans, ttl, &[ExtendedKeyUsagePurpose::ServerAuth])?;
        let not_after = params.not_after.into();
        let leaf = params.signed_by(key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().map(|(der, _)| der.clone()));
        Ok((chain, not_after))
    }

    fn leaf_params(
        &self,
        sans: Vec<SanType>,
        ttl: Duration,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<CertificateParams, SignError> {
        let now = SystemTime::now();
        if now >= self.not_after {
            return Err(SignError::SigningCertExpired(Rfc3339(self.not_after)));
        }
        let mut params = CertificateParams::default();
        // An empty subject: the identity is the SAN, which rcgen then marks critical.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = (now - CLOCK_SKEW.min(ttl / 4)).into();
        params.not_after = (now + ttl).min(self.not_after).into();
        Ok(params)
    }
}

/// The roots as one PEM text, one block each.
fn roots_text(roots: &[CertificateDer<'static>]) -> String {
    roots.iter().map(|r| pem::encode(r)).collect()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| format!("is not a valid X.509 certificate: {e}"))
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// 128 random bits with the top bit clear, so the DER integer stays positive (istiod's
/// genSerialNum).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_params(name: &str, not_after: SystemTime) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
        params.not_after = not_after.into();
        params
    }

    /// root → a → b: the PEMs of root, a, b and b's key.
    fn two_intermediates(b_not_after: SystemTime) -> (String, String, String, String) {
        let far = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("root", far);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let a_key = KeyPair::generate().unwrap();
        let a_params = ca_params("a", far);
        let a = a_params.signed_by(&a_key, &root_issuer).unwrap();
        let a_issuer = Issuer::new(a_params, a_key);
        let b_key = KeyPair::generate().unwrap();
        let b = ca_params("b", b_not_after).signed_by(&b_key, &a_issuer).unwrap();
        (root.pem(), a.pem(), b.pem(), b_key.serialize_pem())
    }

    #[test]
    fn validity_follows_istiod() {
        let v = Validity { default: Duration::from_secs(100), max: Duration::from_secs(1000) };
        assert_eq!(v.for_request(0).unwrap(), Duration::from_secs(100));
        assert_eq!(v.for_request(-7).unwrap(), Duration::from_secs(100));
        assert_eq!(v.for_request(1000).unwrap(), Duration::from_secs(1000));
        assert!(matches!(v.for_request(1001), Err(SignError::TtlTooLong { .. })));
    }

    #[test]
    fn a_chain_of_two_intermediates_in_order_is_accepted_and_handed_out() {
        let (root, a, b, b_key) = two_intermediates(SystemTime::now() + Duration::from_secs(3600));
        // cert-chain.pem as Istio builds it: the signing certificate first, the root last.
        let chain = format!("{b}{a}{root}");
        let material = SigningMaterial::from_pem(
            "test",
            b.as_bytes(),
            b_key.as_bytes(),
            Some(chain.as_bytes()),
            root.as_bytes(),
        )
        .unwrap();
        assert!(!material.is_self_signed());
        let key = KeyPair::generate().unwrap();
        let identity = Identity::new("cluster.local", "ns", "sa").unwrap();
        let out = material.sign_workload(&key, &identity, Duration::from_secs(24 * 3600)).unwrap();
        assert_eq!(out.len(), 4, "leaf, b, a, root");
        // The signer expires in an hour: so does the leaf, whatever was asked.
        let leaf = pem::certificates(out[0].as_bytes()).unwrap().remove(0);
        let leaf = X509Certificate::from_der(&leaf).unwrap().1;
        let left = leaf.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((3500..=3600).contains(&left), "{left}");
    }

    #[test]
    fn an_intermediate_missing_from_the_chain_is_named() {
        let (root, _a, b, b_key) = two_intermediates(SystemTime::now() + Duration::from_secs(3600));
        let e = SigningMaterial::from_pem("dir", b.as_bytes(), b_key.as_bytes(), None, root.as_bytes())
            .unwrap_err();
        assert_eq!(e.file, ROOT_CERT);
        assert!(e.reason.contains("the chain does not lead to these roots"), "{e}");
        let (root, a, b, b_key) = two_intermediates(SystemTime::now() + Duration::from_secs(3600));
        let reversed = format!("{root}{a}");
        let ok = SigningMaterial::from_pem(
            "dir",
            b.as_bytes(),
            b_key.as_bytes(),
            Some(reversed.as_bytes()),
            root.as_bytes(),
        );
        assert!(ok.is_ok(), "the root is skipped wherever it is");
        let (root, a, _, _) = two_intermediates(SystemTime::now() + Duration::from_secs(3600));
        let (_, _, b2, b2_key) = two_intermediates(SystemTime::now() + Duration::from_secs(3600));
        let e = SigningMaterial::from_pem(
            "dir",
            b2.as_bytes(),
            b2_key.as_bytes(),
            Some(a.as_bytes()),
            root.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.file, CERT_CHAIN);
        assert!(e.reason.contains("did not sign ca-cert.pem"), "{e}");
    }

    #[test]
    fn an_expired_signer_is_refused() {
        let (root, a, b, b_key) = two_intermediates(SystemTime::now() - Duration::from_secs(1));
        let e = SigningMaterial::from_pem(
            "dir",
            b.as_bytes(),
            b_key.as_bytes(),
            Some(a.as_bytes()),
            root.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.file, CA_CERT);
        assert!(e.reason.starts_with("expired at "), "{e}");
    }
}
