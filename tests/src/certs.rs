//! Certificates a test mints to play a workload the mesh must refuse, or accept: signed
//! with weftd's own CA key ([`MeshCa`], as a compromised node holding that key could), or
//! by another CA altogether (`weft_hbone::testing::TestCa`). Written as PEM files for
//! `weft-hbone-probe`.

use anyhow::{Context, Result};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};
pub use weft_hbone::testing::{LeafSpec, TestCa};
use weft_hbone::{Identity, TrustBundle, WorkloadCertificate};

/// A leaf's chain (leaf first) and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub chain: String,
    pub key: String,
}

/// Where a [`Pem`] was written.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub chain: PathBuf,
    pub key: PathBuf,
}

impl Pem {
    /// Writes `<name>-chain.pem` and `<name>-key.pem` (0600) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<CertFiles> {
        use std::os::unix::fs::PermissionsExt;
        let files = CertFiles {
            chain: dir.join(format!("{name}-chain.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.chain, &self.chain)
            .with_context(|| format!("writing {}", files.chain.display()))?;
        std::fs::write(&files.key, &self.key).with_context(|| format!("writing {}", files.key.display()))?;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}

/// weftd's own CA (its `--ca-dir`: `ca-cert.pem` signs, `ca-key.pem` is its key), used
/// directly: what the mesh root vouches for, without asking weftd.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

impl MeshCa {
    /// Reads the signing certificate and key from weftd's CA directory. weftd's own root
    /// signs workload certificates directly, so a leaf needs no intermediate.
    pub fn from_dir(dir: &Path) -> Result<MeshCa> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let key = KeyPair::from_pem(&read("ca-key.pem")?).context("parsing weftd's ca-key.pem")?;
        let issuer =
            Issuer::from_ca_cert_pem(&read("ca-cert.pem")?, key).context("parsing weftd's ca-cert.pem")?;
        Ok(MeshCa { issuer, root_pem: read("root-cert.pem")? })
    }

    /// The mesh root (PEM), what every agent trusts.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A leaf as `spec` says (SANs and validity), signed by the mesh CA.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Pem> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("a P-256 key")?;
        let leaf = leaf_params(spec)?.signed_by(&key, &self.issuer).context("signing a leaf")?;
        Ok(Pem { chain: leaf.pem(), key: key.serialize_pem() })
    }

    /// A valid certificate for `identity`: what the mesh would give that workload.
    pub fn issue_for(&self, identity: &Identity, validity: Duration) -> Result<Pem> {
        self.issue(&LeafSpec::for_identity(identity, validity))
    }

    /// A certificate for `identity` that expired an hour ago.
    pub fn issue_expired(&self, identity: &Identity) -> Result<Pem> {
        let now = SystemTime::now();
        self.issue(&LeafSpec {
            not_before: now - Duration::from_secs(7200),
            not_after: now - Duration::from_secs(3600),
            ..LeafSpec::for_identity(identity, Duration::ZERO)
        })
    }
}

/// A certificate from `ca` (another CA than the mesh's) for `identity`.
pub fn foreign(ca: &TestCa, identity: &Identity) -> Pem {
    let (chain, key) = ca.issue_pem(&LeafSpec::for_identity(identity, Duration::from_secs(3600)));
    Pem { chain, key }
}

/// Checks a minted chain the way a peer would, so a test knows which of its properties
/// (issuer, validity, identity) the mesh is refusing.
pub fn verify(pem: &Pem, roots_pem: &str) -> Result<(), String> {
    let cert = WorkloadCertificate::from_pem(&pem.chain, &pem.key).map_err(|e| e.to_string())?;
    let roots = TrustBundle::from_pem(roots_pem).map_err(|e| e.to_string())?;
    cert.verify(&roots, SystemTime::now()).map_err(|e| e.to_string())
}

/// A workload leaf as the mesh CA makes one: no subject, the SANs, both TLS usages.
fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for uri in &spec.uris {
        params.subject_alt_names.push(SanType::URI(uri.clone().try_into().context("an IA5 URI")?));
    }
    for name in &spec.dns_names {
        params.subject_alt_names.push(SanType::DnsName(name.clone().try_into().context("an IA5 name")?));
    }
    params.not_before = time::OffsetDateTime::from(spec.not_before);
    params.not_after = time::OffsetDateTime::from(spec.not_after);
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn random_serial() -> SerialNumber {
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new().build_hasher().finish();
    // Positive (top bit clear), as DER integers for serials must be.
    SerialNumber::from_slice(&(n >> 1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA directory laid out as weftd writes it, from a test CA's root.
    fn mesh_ca_dir() -> (tempfile::TempDir, KeyPair) {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "cluster.local");
        let root = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca-cert.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        (dir, key)
    }

    #[test]
    fn mints_what_the_mesh_accepts_and_what_it_must_refuse() {
        let (dir, _) = mesh_ca_dir();
        let ca = MeshCa::from_dir(dir.path()).unwrap();
        let id: Identity = "spiffe://cluster.local/ns/mesh/sa/client".parse().unwrap();

        let good = ca.issue_for(&id, Duration::from_secs(600)).unwrap();
        assert_eq!(verify(&good, ca.root_pem()), Ok(()));
        let cert = WorkloadCertificate::from_pem(&good.chain, &good.key).unwrap();
        assert_eq!(cert.identity(), &id);

        let expired = ca.issue_expired(&id).unwrap();
        let e = verify(&expired, ca.root_pem()).unwrap_err();
        assert!(e.contains("expired"), "{e}");

        let other = TestCa::new();
        let e = verify(&foreign(&other, &id), ca.root_pem()).unwrap_err();
        assert!(e.contains("unknown issuer"), "{e}");
    }

    #[test]
    fn writes_the_key_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _) = mesh_ca_dir();
        let ca = MeshCa::from_dir(dir.path()).unwrap();
        let id: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let files = ca.issue_for(&id, Duration::from_secs(60)).unwrap().write(dir.path(), "b").unwrap();
        assert_eq!(std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&files.chain).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
