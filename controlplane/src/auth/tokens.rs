//! The token file of local mode (`weftd --token-file`): who each bearer token is.
//!
//! The format is Kubernetes' static token file (`kube-apiserver --token-auth-file`): one
//! line per token, comma-separated, `token,user[,uid[,"group1,group2"]]`; only the first
//! two fields are read. Blank lines and lines starting with `#` are skipped. The user says
//! who holds the token, with Kubernetes' names:
//!
//! ```text
//! # an agent's bootstrap token: it may act for node n1
//! 6f1d0c…,system:node:n1
//! # a waypoint's token: service account waypoint of namespace bookinfo
//! 91ab3e…,system:serviceaccount:bookinfo:waypoint
//! ```
//!
//! The file is looked at (one `stat`) on every authentication and read again when it
//! changed, so tokens can be added and revoked without a restart. A version that does not
//! parse is reported and the last good one stays in force.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use tracing::{error, info};

/// Who holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `system:node:<node>`: the agent of that node.
    Node(String),
    /// `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount { namespace: String, name: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Node(node) => write!(f, "system:node:{node}"),
            Subject::ServiceAccount { namespace, name } => {
                write!(f, "system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

impl Subject {
    /// Parses a Kubernetes user name of a node or a service account.
    pub fn parse(user: &str) -> Result<Subject, String> {
        if let Some(node) = user.strip_prefix("system:node:") {
            if node.is_empty() || node.contains(':') {
                return Err(format!("{user:?}: expected system:node:<node name>"));
            }
            return Ok(Subject::Node(node.to_owned()));
        }
        if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
            return match rest.split(':').collect::<Vec<_>>().as_slice() {
                [namespace, name] if !namespace.is_empty() && !name.is_empty() => {
                    Ok(Subject::ServiceAccount {
                        namespace: (*namespace).to_owned(),
                        name: (*name).to_owned(),
                    })
                }
                _ => Err(format!("{user:?}: expected system:serviceaccount:<namespace>:<name>")),
            };
        }
        Err(format!(
            "user {user:?} is neither a node (system:node:<node>) nor a service account \
             (system:serviceaccount:<namespace>:<name>)"
        ))
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    Syntax { path: PathBuf, line: usize, reason: String },
}

/// The file, and the tokens of its last good version.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// What the file looked like when last read.
    stamp: Stamp,
    tokens: HashMap<String, Subject>,
}

/// Enough of a file's metadata to notice a change: replaced (inode), rewritten (mtime,
/// nanosecond resolution here) or resized.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Stamp { inode: meta.ino(), modified: meta.modified().ok(), len: meta.len() })
    }
}

impl TokenFile {
    /// Reads the file; weftd does not start on a missing or broken one.
    pub fn open(path: &Path) -> Result<TokenFile, TokenFileError> {
        let (stamp, tokens) = read(path)?;
        info!(path = %path.display(), tokens = tokens.len(), "token file loaded");
        Ok(TokenFile { path: path.to_owned(), state: Mutex::new(State { stamp, tokens }) })
    }

    /// Who holds `token`, per the file as it is now.
    pub fn lookup(&self, token: &str) -> Option<Subject> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if Stamp::of(&self.path).is_ok_and(|now| now != state.stamp) {
            match read(&self.path) {
                Ok((stamp, tokens)) => {
                    info!(path = %self.path.display(), tokens = tokens.len(), "token file changed; reloaded");
                    *state = State { stamp, tokens };
                }
                Err(e) => {
                    error!(error = %e, "token file changed but cannot be used; keeping its last good version");
                    // Not read again until it changes once more.
                    if let Ok(stamp) = Stamp::of(&self.path) {
                        state.stamp = stamp;
                    }
                }
            }
        }
        state.tokens.get(token).cloned()
    }
}

fn read(path: &Path) -> Result<(Stamp, HashMap<String, Subject>), TokenFileError> {
    let failed = |error| TokenFileError::Read { path: path.to_owned(), error };
    let stamp = Stamp::of(path).map_err(failed)?;
    let text = std::fs::read_to_string(path).map_err(failed)?;
    let tokens = parse(&text).map_err(|(line, reason)| TokenFileError::Syntax {
        path: path.to_owned(),
        line,
        reason,
    })?;
    Ok((stamp, tokens))
}

/// Parses the file's text; an error carries the (1-based) line.
pub fn parse(text: &str) -> Result<HashMap<String, Subject>, (usize, String)> {
    let mut tokens = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ',').map(|f| f.trim().trim_matches('"'));
        let (Some(token), Some(user)) = (fields.next(), fields.next()) else {
            return Err((number, "expected token,user (Kubernetes' static token file format)".into()));
        };
        if token.is_empty() {
            return Err((number, "empty token".into()));
        }
        if token.contains(char::is_whitespace) {
            return Err((number, "a token may not contain whitespace".into()));
        }
        let subject = Subject::parse(user).map_err(|reason| (number, reason))?;
        if tokens.insert(token.to_owned(), subject).is_some() {
            return Err((number, "this token is listed twice".into()));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_static_token_format() {
        let tokens = parse(
            "# agents\nt1,system:node:n1\n\n\"t2\",\"system:serviceaccount:bookinfo:waypoint\",uid-2,\"g1,g2\"\n",
        )
        .unwrap();
        assert_eq!(tokens["t1"], Subject::Node("n1".into()));
        assert_eq!(
            tokens["t2"],
            Subject::ServiceAccount { namespace: "bookinfo".into(), name: "waypoint".into() }
        );
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, line, part) in [
            ("t1\n", 1, "expected token,user"),
            ("t1,system:node:n1\nt1,system:node:n2\n", 2, "listed twice"),
            ("\nt1,alice\n", 2, "neither a node"),
            ("t1,system:serviceaccount:ns\n", 1, "system:serviceaccount:<namespace>:<name>"),
            (",system:node:n1\n", 1, "empty token"),
        ] {
            let (at, reason) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(reason.contains(part), "{text:?}: {reason}");
        }
    }

    #[test]
    fn changes_are_picked_up_and_a_broken_version_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "t1,system:node:n1\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.lookup("t1"), Some(Subject::Node("n1".into())));
        assert_eq!(file.lookup("t2"), None);

        // Replaced by rename, as a careful writer does.
        let tmp = dir.path().join("tokens.tmp");
        std::fs::write(&tmp, "t2,system:node:n2\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(file.lookup("t1"), None, "revoked");
        assert_eq!(file.lookup("t2"), Some(Subject::Node("n2".into())));

        std::fs::write(&tmp, "garbage\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(file.lookup("t2"), Some(Subject::Node("n2".into())), "last good version kept");

        assert!(TokenFile::open(&dir.path().join("missing")).is_err());
    }
}
