//! Where configuration comes from: a directory of YAML files (`file.rs`) or a Kubernetes
//! API server (`kube.rs`). Both emit the same [`SourceEvent`]s of [`RawObject`]s — objects
//! as their source holds them, not yet parsed into Weft's types — so that parsing,
//! validation and everything after are shared, and a source stays thin.

pub mod file;
pub mod kube;

use serde_json::Value;
use std::{fmt, path::PathBuf, sync::Arc};

/// Identifies an object across sources: API group, kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group without version: "" for core, "networking.istio.io", …
    pub group: String,
    pub kind: String,
    /// `None` for cluster-scoped kinds (Namespace).
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Where an object came from, so a diagnostic can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A document in a YAML file; `line` is 1-based, the document's first line.
    File { path: PathBuf, line: usize },
    /// An object read from the Kubernetes API.
    Kubernetes { resource_version: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Kubernetes { resource_version } => {
                write!(f, "kubernetes (resourceVersion {resource_version})")
            }
        }
    }
}

/// One object as its source holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub key: ObjectKey,
    /// e.g. "networking.istio.io/v1beta1"; the version part matters for parsing.
    pub api_version: String,
    /// The whole object (apiVersion, kind, metadata, spec, …) as compact JSON text.
    ///
    /// Text rather than a [`Value`] tree: a Pod as a tree takes several times the memory
    /// of its text, and a relist holds every object of the cluster at once. Shared, so
    /// that the copy a source keeps and the one it sends are one allocation.
    pub json: Arc<str>,
    pub origin: Origin,
}

impl RawObject {
    /// An object given as a JSON value (a test's `json!`, a YAML document).
    pub fn from_value(key: ObjectKey, api_version: String, value: &Value, origin: Origin) -> RawObject {
        // `Value`'s `Display` writes compact JSON and cannot fail.
        RawObject { key, api_version, json: value.to_string().into(), origin }
    }

    /// The object as a JSON value, to look into it (tests, tools). Parsing reads the text
    /// itself.
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.json)
    }
}

/// What a source tells the config store.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// An object was created or changed.
    Upsert(RawObject),
    /// An object is gone.
    Delete(ObjectKey),
    /// The source's complete current set, replacing everything it sent before (a
    /// Kubernetes relist after `410 Gone`, or a file source's first scan).
    Reset(Vec<RawObject>),
    /// The source has sent its whole initial state (a Kubernetes source: every kind
    /// listed once): what the store holds from it is the cluster's configuration and may be
    /// served. A source whose first event is a Reset sends none.
    Synced,
    /// Input the source could not turn into objects at all (a YAML syntax error): the
    /// objects it sent before from the same place stay in force.
    Unreadable { origin: Origin, message: String },
}
