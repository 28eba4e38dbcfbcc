//! `--local-config`: the workload model from a YAML file, watched live.
//!
//! The file is polled (every 200 ms) rather than watched with inotify: editors and
//! config-map mounts replace files by rename, and a stat per tick follows every way a
//! file can change. A file that fails to parse or validate is reported and ignored;
//! the last good model stays in force.

use crate::{enrollment, state::Shared};
use serde::Serialize;
use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::Ordering, mpsc},
    time::Duration,
};
use tracing::{error, info};
use weft_model::{AddressTable, ConvertError, Mesh, ModelError, WorkloadState};

const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("cannot read local config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("local config rejected: {0}")]
    Invalid(#[from] ModelError),
    #[error("local config rejected: {0}")]
    Unusable(#[from] ConvertError),
}

/// What the admin endpoint shows about where the model comes from (this file, or xDS).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConfigStatus {
    /// The file's path or the xDS endpoint.
    pub source: String,
    /// Accepted versions since start, the first included.
    pub generation: u64,
    /// Why the newest version of the file was rejected, while it stays rejected.
    pub last_error: Option<String>,
}

/// Reads, validates and translates the file into the model (the same Addresses weftd
/// would send for it, through the same conversion).
pub fn load(path: &Path, trust_domain: &str) -> Result<WorkloadState, LocalConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LocalConfigError::Read { path: path.to_owned(), source })?;
    let mesh = Mesh::from_yaml(&text, &path.display().to_string())?;
    let addresses = mesh.to_addresses(trust_domain);
    let mut table = AddressTable::new(trust_domain);
    table.replace(addresses.iter().map(|(n, a)| (n.as_str(), a)))?;
    Ok(table.state())
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    mtime_ns: i128,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
        inode: m.ino(),
    })
}

/// Polls `path` forever, publishing each valid version to `shared.mesh` and nudging the
/// enrollment loop.
pub async fn watch(
    path: PathBuf,
    trust_domain: String,
    shared: Arc<Shared>,
    enrollment: mpsc::Sender<enrollment::Command>,
    status: Arc<Mutex<ConfigStatus>>,
) {
    let mut last = stamp(&path);
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        let (p, td) = (path.clone(), trust_domain.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&p, &td)).await.expect("config load task");
        match loaded {
            Ok(state) => {
                shared.state.store(Arc::new(state));
                shared.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
                let mut st = status.lock().expect("config status lock");
                st.generation += 1;
                st.last_error = None;
                info!(path = %path.display(), generation = st.generation, "local config applied");
                let _ = enrollment.send(enrollment::Command::Reconcile);
            }
            Err(e) => {
                shared.metrics.config_rejected.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "local config rejected; keeping the last good one");
                status.lock().expect("config status lock").last_error = Some(e.to_string());
            }
        }
    }
}
