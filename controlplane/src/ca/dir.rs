//! CA material in a directory, in Istio's `cacerts` layout: ca-cert.pem, ca-key.pem,
//! root-cert.pem and (for an intermediate) cert-chain.pem.
//!
//! Two uses: a plug-in CA the operator provides (`--cacerts-dir`, read only, as istiod reads
//! /etc/cacerts), and weftd's own root in local mode (`--ca-dir`): made on first start and
//! written there, read back on every later start. The key file is 0600 and a key file
//! others can read is refused, as ssh refuses such a key.

use super::authority::{CA_CERT, CA_KEY, CERT_CHAIN, MaterialError, ROOT_CERT, SigningMaterial};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// Why a CA directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// A file is missing or unreadable.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: std::path::PathBuf, error: io::Error },
    /// A file cannot be written.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: std::path::PathBuf, error: io::Error },
    /// The key file is readable by group or others.
    #[error("{} is readable by others (mode {mode:o}): a CA key must be private; run chmod 600 on it", path.display())]
    KeyExposed { path: std::path::PathBuf, mode: u32 },
    /// The directory holds some of a CA but not the key.
    #[error("{} holds {CA_CERT} but no {CA_KEY}: restore the key, or empty the directory to make a new root", dir.display())]
    Incomplete { dir: std::path::PathBuf },
    /// The files are there but are not a usable CA.
    #[error(transparent)]
    Material(#[from] MaterialError),
}

/// Loads a plug-in CA from Istio's cacerts layout; cert-chain.pem is optional (without it
/// the signing certificate must be signed by a root directly). The key's mode is the
/// operator's business, as with istiod: a Kubernetes Secret volume is 0644 unless its
/// defaultMode says otherwise.
pub fn load_plugin(dir: &Path) -> Result<SigningMaterial, DirError> {
    load(dir, false)
}

/// Loads weftd's own root from `dir`, or makes one there (ECDSA P-256, valid for
/// `root_ttl`) when the directory is empty or absent. Returns the material and whether it
/// was made now.
pub fn load_or_create(
    dir: &Path,
    trust_domain: &str,
    root_ttl: Duration,
) -> Result<(SigningMaterial, bool), DirError> {
    if dir.join(CA_KEY).exists() {
        return Ok((load(dir, true)?, false));
    }
    if dir.join(CA_CERT).exists() {
        return Err(DirError::Incomplete { dir: dir.to_owned() });
    }
    let write = |path: &Path, error| DirError::Write { path: path.to_owned(), error };
    fs::create_dir_all(dir).map_err(|e| write(dir, e))?;
    let (material, cert_pem, key_pem) = SigningMaterial::generate_root(trust_domain, root_ttl)?;
    // Certificates first, the key last: a crash in between leaves no key, which the next
    // start treats as "make a new root" rather than as a CA with a missing certificate.
    write_file(&dir.join(CA_CERT), cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(ROOT_CERT), cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(CA_KEY), key_pem.as_bytes(), 0o600)?;
    Ok((material, true))
}

/// Reads a CA directory; `private_key` refuses a key file others can read.
fn load(dir: &Path, private_key: bool) -> Result<SigningMaterial, DirError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|error| DirError::Read { path, error })
    };
    let key_path = dir.join(CA_KEY);
    let mode = fs::metadata(&key_path)
        .map_err(|error| DirError::Read { path: key_path.clone(), error })?
        .permissions()
        .mode();
    if private_key && mode & 0o077 != 0 {
        return Err(DirError::KeyExposed { path: key_path, mode: mode & 0o777 });
    }
    let cert = read(CA_CERT)?;
    let key = read(CA_KEY)?;
    let roots = read(ROOT_CERT)?;
    let chain = match fs::read(dir.join(CERT_CHAIN)) {
        Ok(chain) => Some(chain),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(DirError::Read { path: dir.join(CERT_CHAIN), error }),
    };
    Ok(SigningMaterial::from_pem(&dir.display().to_string(), &cert, &key, chain.as_deref(), &roots)?)
}

/// Writes a whole file under a temporary name and renames it into place, so a reader never
/// sees half of it; `mode` is set at creation (a key is never briefly world-readable).
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), DirError> {
    let failed = |error| DirError::Write { path: path.to_owned(), error };
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(failed)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(failed)?;
    fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

    #[test]
    fn a_root_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let (first, made) = load_or_create(&ca, "cluster.local", TEN_YEARS).unwrap();
        assert!(made);
        let mode = fs::metadata(ca.join(CA_KEY)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, made) = load_or_create(&ca, "cluster.local", TEN_YEARS).unwrap();
        assert!(!made);
        assert_eq!(first.roots_pem(), again.roots_pem());
        assert!(again.is_self_signed());
    }

    #[test]
    fn an_exposed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), "cluster.local", TEN_YEARS).unwrap();
        fs::set_permissions(dir.path().join(CA_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(dir.path(), "cluster.local", TEN_YEARS).unwrap_err().to_string();
        assert!(e.contains("is readable by others (mode 644)") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_certificate_without_its_key_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), "cluster.local", TEN_YEARS).unwrap();
        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let e = load_or_create(dir.path(), "cluster.local", TEN_YEARS).unwrap_err();
        assert!(matches!(e, DirError::Incomplete { .. }), "{e}");
    }
}
