//! The file source: a directory of YAML files, watched by polling.
//!
//! Every `*.yaml`/`*.yml` file under the directory (recursively; hidden files and
//! directories such as a ConfigMap mount's `..data` are skipped) is split into documents
//! on `---` lines; each document becomes a [`RawObject`] whose [`Origin`] is the file and
//! the document's first line. A `kind: List` document contributes its `items`.
//!
//! The first [`FileSource::poll`] emits a [`SourceEvent::Reset`] with everything found;
//! later polls stat every file (mtime, size, inode — so an editor's rename-into-place is
//! seen) and emit `Upsert`s and `Delete`s for what changed. A document that is not YAML,
//! or lacks `apiVersion`, `kind` or `metadata.name`, is reported as
//! [`SourceEvent::Unreadable`] at its file and line, and the objects its file contributed
//! before stay in force. When a problem goes away the source sends a fresh `Reset`
//! (the store diffs it, so nothing unchanged is re-pushed) so that stale diagnostics are
//! cleared.

use super::{ObjectKey, Origin, RawObject, SourceEvent};
use crate::config::kinds::{is_cluster_scoped, split_api_version};
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// How often the directory is polled by [`FileSource::run`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The namespace of a namespaced object whose YAML does not say, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Errors that stop the file source from starting.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The configuration directory is missing or unreadable.
    #[error("cannot read config directory {}: {source} (check the path and its permissions)", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    /// The configuration path is a file, not a directory.
    #[error("config path {} is not a directory: give the directory that holds the YAML files", .0.display())]
    NotADirectory(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    size: u64,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp { modified: meta.modified().ok(), size: meta.len(), inode: meta.ino(), device: meta.dev() }
    }
}

/// A problem to report as `Unreadable`.
type Problem = (Origin, String);

#[derive(Debug, Clone)]
struct FileState {
    stamp: Stamp,
    /// Hash of the content, to tell a real change from a racy re-read.
    content: u64,
    objects: Vec<RawObject>,
    problems: Vec<Problem>,
}

/// File times have coarse (jiffy) granularity, so two writes of the same size within a
/// few milliseconds can leave the same stamp. As git does for its index, a file modified
/// this recently is read again on every poll and compared by content.
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl Stamp {
    fn is_racy(&self, now: SystemTime) -> bool {
        self.modified.is_none_or(|m| now.duration_since(m).map_or(true, |age| age < RACY_WINDOW))
    }
}

/// Watches one directory of YAML files.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    interval: Duration,
    files: BTreeMap<PathBuf, FileState>,
    /// The objects sent so far (after removing duplicates), by key.
    sent: BTreeMap<ObjectKey, RawObject>,
    /// The problems reported so far.
    reported: BTreeSet<(String, String)>,
    started: bool,
}

impl FileSource {
    /// A source for `root`, which must be a readable directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, FileSourceError> {
        let root = root.into();
        let meta = std::fs::metadata(&root)
            .map_err(|source| FileSourceError::Unreadable { path: root.clone(), source })?;
        if !meta.is_dir() {
            return Err(FileSourceError::NotADirectory(root));
        }
        std::fs::read_dir(&root)
            .map_err(|source| FileSourceError::Unreadable { path: root.clone(), source })?;
        Ok(FileSource {
            root,
            interval: DEFAULT_POLL_INTERVAL,
            files: BTreeMap::new(),
            sent: BTreeMap::new(),
            reported: BTreeSet::new(),
            started: false,
        })
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the directory once: a `Reset` followed by any `Unreadable`s.
    pub fn read_once(root: impl Into<PathBuf>) -> Result<Vec<SourceEvent>, FileSourceError> {
        Ok(FileSource::new(root)?.poll())
    }

    /// Polls until the receiver is dropped: the first poll's `Reset` at once, then changes
    /// every interval. File system work runs on tokio's blocking pool.
    pub async fn run(mut self, tx: mpsc::Sender<SourceEvent>) {
        loop {
            let polled = tokio::task::spawn_blocking(move || {
                let events = self.poll();
                (self, events)
            })
            .await;
            let events;
            (self, events) = match polled {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "file source poll panicked; stopping");
                    return;
                }
            };
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// One look at the directory; returns the events since the last look.
    pub fn poll(&mut self) -> Vec<SourceEvent> {
        let mut walk = Walk::default();
        walk.dir(&self.root);

        // Files that are new or changed are read again; unchanged ones keep their state.
        let now = SystemTime::now();
        let mut files = BTreeMap::new();
        for (path, stamp) in walk.files {
            let previous = self.files.remove(&path);
            if let Some(prev) = &previous
                && prev.stamp == stamp
                && !stamp.is_racy(now)
            {
                files.insert(path, previous.unwrap());
                continue;
            }
            // `None`: vanished between stat and read, as if removed.
            if let Some(state) = read_file(&path, stamp, previous.as_ref()) {
                files.insert(path, state);
            }
        }
        // Files under a directory that could not be read are kept as they were.
        for (path, state) in std::mem::take(&mut self.files) {
            if walk.failed_dirs.iter().any(|(d, _)| path.starts_with(d)) {
                files.insert(path, state);
            }
        }
        self.files = files;

        // The effective set: the first definition of a key (by path, then line) wins.
        let mut effective: BTreeMap<ObjectKey, RawObject> = BTreeMap::new();
        let mut problems: Vec<Problem> = walk
            .failed_dirs
            .iter()
            .map(|(d, e)| (Origin::File { path: d.clone(), line: 1 }, format!("cannot read directory: {e}")))
            .collect();
        for state in self.files.values() {
            problems.extend(state.problems.iter().cloned());
            for object in &state.objects {
                match effective.get(&object.key) {
                    Some(first) => problems.push((
                        object.origin.clone(),
                        format!(
                            "{} is already defined at {}; this definition is ignored",
                            object.key, first.origin
                        ),
                    )),
                    None => {
                        effective.insert(object.key.clone(), object.clone());
                    }
                }
            }
        }

        let now_reported: BTreeSet<(String, String)> =
            problems.iter().map(|(o, m)| (o.to_string(), m.clone())).collect();
        let mut events = Vec::new();
        if !self.started || !self.reported.is_subset(&now_reported) {
            events.push(SourceEvent::Reset(effective.values().cloned().collect()));
            events.extend(problems.iter().map(|(origin, message)| SourceEvent::Unreadable {
                origin: origin.clone(),
                message: message.clone(),
            }));
        } else {
            for (key, object) in &effective {
                if self.sent.get(key) != Some(object) {
                    events.push(SourceEvent::Upsert(object.clone()));
                }
            }
            for key in self.sent.keys() {
                if !effective.contains_key(key) {
                    events.push(SourceEvent::Delete(key.clone()));
                }
            }
            for (origin, message) in &problems {
                if !self.reported.contains(&(origin.to_string(), message.clone())) {
                    events.push(SourceEvent::Unreadable { origin: origin.clone(), message: message.clone() });
                }
            }
        }
        self.started = true;
        self.sent = effective;
        self.reported = now_reported;
        events
    }
}

#[derive(Default)]
struct Walk {
    files: BTreeMap<PathBuf, Stamp>,
    failed_dirs: Vec<(PathBuf, io::Error)>,
}

impl Walk {
    fn dir(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.failed_dirs.push((dir.to_path_buf(), e));
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            // Follow symlinks, as a ConfigMap mount's files are symlinks.
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_dir() {
                self.dir(&path);
            } else if meta.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                self.files.insert(path, Stamp::of(&meta));
            }
        }
    }
}

/// Reads and splits one file. `None` if it vanished.
fn read_file(path: &Path, stamp: Stamp, previous: Option<&FileState>) -> Option<FileState> {
    let mut content = 0;
    let (objects, problems) = match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => (
            Vec::new(),
            vec![(Origin::File { path: path.to_path_buf(), line: 1 }, format!("cannot read file: {e}"))],
        ),
        Ok(bytes) => {
            content = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            };
            if let Some(prev) = previous
                && prev.content == content
            {
                return Some(FileState { stamp, ..prev.clone() });
            }
            match String::from_utf8(bytes) {
                Ok(text) => parse_documents(path, &text),
                Err(_) => (
                    Vec::new(),
                    vec![(
                        Origin::File { path: path.to_path_buf(), line: 1 },
                        "file is not UTF-8 text".into(),
                    )],
                ),
            }
        }
    };
    let mut state = FileState { stamp, content, objects, problems };
    // Unreadable input keeps what the file contributed before.
    if !state.problems.is_empty()
        && let Some(prev) = previous
    {
        let present: BTreeSet<ObjectKey> = state.objects.iter().map(|o| o.key.clone()).collect();
        state.objects.extend(prev.objects.iter().filter(|o| !present.contains(&o.key)).cloned());
    }
    Some(state)
}

/// One `---`-separated document: the line of its first content (1-based), the line its
/// text starts at, and the text.
struct Document {
    first_line: usize,
    start_line: usize,
    text: String,
}

fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = Document { first_line: 0, start_line: 1, text: String::new() };
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let marker = line.strip_prefix("---").filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if marker.is_some() || line.trim_end() == "..." {
            docs.push(std::mem::replace(
                &mut current,
                Document { first_line: 0, start_line: number + 1, text: String::new() },
            ));
            // Content after the marker on the same line (rare) belongs to the document.
            if let Some(rest) = marker.map(str::trim).filter(|r| !r.is_empty() && !r.starts_with('#')) {
                current.start_line = number;
                current.first_line = number;
                current.text.push_str(rest);
                current.text.push('\n');
            }
            continue;
        }
        let trimmed = line.trim_start();
        if current.first_line == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            current.first_line = number;
        }
        current.text.push_str(line);
        current.text.push('\n');
    }
    docs.push(current);
    docs.retain(|d| d.first_line != 0);
    docs
}

fn parse_documents(path: &Path, text: &str) -> (Vec<RawObject>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for doc in split_documents(text) {
        let origin = Origin::File { path: path.to_path_buf(), line: doc.first_line };
        let value = match serde_yaml::from_str::<serde_yaml::Value>(&doc.text) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| doc.start_line + l.line() - 1).unwrap_or(doc.first_line);
                let message = shift_line_numbers(&e.to_string(), doc.start_line - 1);
                let what = guess_object(&doc.text)
                    .map(|o| format!("{o} (from line {}) ", doc.first_line))
                    .unwrap_or_default();
                problems.push((
                    Origin::File { path: path.to_path_buf(), line },
                    format!("{what}is not YAML: {message}"),
                ));
                continue;
            }
        };
        let value = match yaml_to_json(value) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(message) => {
                problems.push((origin, message));
                continue;
            }
        };
        let is_list =
            value.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List"))
                && value.get("items").is_some_and(Value::is_array);
        if is_list {
            if let Some(Value::Array(items)) = value.get("items") {
                for item in items {
                    match to_raw(item, &origin) {
                        Ok(raw) => objects.push(raw),
                        Err(message) => {
                            problems.push((origin.clone(), format!("in items of a List: {message}")))
                        }
                    }
                }
            }
            continue;
        }
        match to_raw(&value, &origin) {
            Ok(raw) => objects.push(raw),
            Err(message) => problems.push((origin, message)),
        }
    }
    (objects, problems)
}

/// For a document that is not YAML, a best guess at which object it meant to be
/// (`VirtualService/bookinfo/reviews`), read from its `kind:` and `metadata:` lines, so
/// the report names it.
fn guess_object(text: &str) -> Option<String> {
    let scalar = |line: &str, key: &str| {
        let v = line.trim_start().strip_prefix(key)?.trim();
        let v = v.split(" #").next().unwrap_or(v).trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty() && !v.starts_with(['[', '{', '&', '*', '|', '>'])).then(|| v.to_string())
    };
    let mut kind = None;
    let (mut name, mut namespace) = (None, None);
    let mut in_metadata = false;
    let mut child_indent = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_metadata = line.trim_end() == "metadata:";
            if let Some(k) = scalar(line, "kind:") {
                kind = Some(k);
            }
            continue;
        }
        if in_metadata {
            let ci = *child_indent.get_or_insert(indent);
            if indent == ci {
                if let Some(n) = scalar(line, "name:") {
                    name.get_or_insert(n);
                }
                if let Some(n) = scalar(line, "namespace:") {
                    namespace.get_or_insert(n);
                }
            }
        }
    }
    let kind = kind?;
    Some(match (namespace, name) {
        (Some(ns), Some(n)) => format!("{kind}/{ns}/{n}"),
        (None, Some(n)) => format!("{kind}/{n}"),
        _ => kind,
    })
}

/// serde_yaml reports positions inside the document text; make them file positions.
fn shift_line_numbers(message: &str, offset: usize) -> String {
    if offset == 0 {
        return message.to_string();
    }
    let re = regex::Regex::new(r"line (\d+)").expect("static regex");
    re.replace_all(message, |c: &regex::Captures<'_>| {
        let n: usize = c[1].parse().unwrap_or(0);
        format!("line {}", n + offset)
    })
    .into_owned()
}

fn yaml_to_json(value: serde_yaml::Value) -> Result<Value, String> {
    let mut value = value;
    value.apply_merge().map_err(|e| format!("invalid YAML merge key: {e}"))?;
    convert(value)
}

fn convert(value: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(Number::from_f64(f).ok_or_else(|| format!("number {n} cannot be represented"))?)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(convert).collect::<Result<_, _>>()?),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}: keys must be scalars")),
                };
                out.insert(key, convert(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => convert(tagged.value)?,
    })
}

/// Checks a document has what makes it an object and builds its key.
fn to_raw(value: &Value, origin: &Origin) -> Result<RawObject, String> {
    let Value::Object(map) = value else {
        return Err("document is not a mapping: expected an object with apiVersion, kind and metadata".into());
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let api_version = text(map.get("apiVersion"));
    let kind = text(map.get("kind"));
    let metadata = map.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")));
    let mut missing = Vec::new();
    if api_version.is_none() {
        missing.push("apiVersion");
    }
    if kind.is_none() {
        missing.push("kind");
    }
    if name.is_none() {
        missing.push("metadata.name");
    }
    if !missing.is_empty() {
        return Err(format!(
            "document has no {}: every object needs apiVersion, kind and metadata.name",
            missing.join(", ")
        ));
    }
    let (api_version, kind, name) = (api_version.unwrap(), kind.unwrap(), name.unwrap());
    let (group, _) = split_api_version(&api_version);
    let namespace = if is_cluster_scoped(group, &kind) {
        None
    } else {
        Some(text(metadata.and_then(|m| m.get("namespace"))).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()))
    };
    let key = ObjectKey { group: group.to_string(), kind, namespace, name };
    Ok(RawObject::from_value(key, api_version, value, origin.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_remembers_first_lines() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\n---\n\n# c\nkind: Pod\n...\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 3);
        assert_eq!(docs[1].first_line, 8);
        assert_eq!(docs[1].start_line, 6);
    }

    #[test]
    fn yaml_errors_point_at_the_file_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: [b\n";
        let (objects, problems) = parse_documents(Path::new("x.yaml"), text);
        assert_eq!(objects.len(), 1);
        assert_eq!(problems.len(), 1);
        let Origin::File { line, .. } = &problems[0].0 else { panic!() };
        assert!(*line >= 9, "line {line}: {}", problems[0].1);
        assert!(problems[0].1.starts_with("Namespace (from line 6) is not YAML"), "{}", problems[0].1);
    }

    #[test]
    fn missing_fields_are_named() {
        let (objects, problems) = parse_documents(Path::new("x.yaml"), "apiVersion: v1\nmetadata: {}\n");
        assert!(objects.is_empty());
        assert!(problems[0].1.contains("kind, metadata.name"), "{}", problems[0].1);
    }

    #[test]
    fn integer_keys_and_namespaces() {
        let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n";
        let (objects, _) = parse_documents(Path::new("x.yaml"), text);
        assert_eq!(objects[0].key.namespace.as_deref(), Some("default"));
        assert_eq!(objects[0].to_value().unwrap()["spec"]["portLevelMtls"]["8080"]["mode"], "DISABLE");
        let (objects, _) =
            parse_documents(Path::new("x.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n");
        assert_eq!(objects[0].key.namespace, None);
    }
}
