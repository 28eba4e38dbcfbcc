//! From a source's [`RawObject`] to a validated [`ConfigObject`]: find the kind, check the
//! API version, deserialize into the typed form (schema errors name the field path), then
//! run the kind's validator.

use super::diagnostic::Diagnostic;
use super::kinds::{self, ConfigObject, Kind, KindLookup, ObjectMeta, split_api_version};
use super::validate::{self, Report, SCHEMA_ERROR, names};
use crate::source::{ObjectKey, RawObject};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The outcome of checking one object: the object when it has no errors, and every
/// finding (errors and warnings).
#[derive(Debug, Clone)]
pub struct Checked {
    pub object: Option<ConfigObject>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and validates one object. Warnings of an accepted object are dropped; use
/// [`check`] to keep them.
pub fn parse(raw: &RawObject) -> Result<ConfigObject, Vec<Diagnostic>> {
    let checked = check(raw);
    checked.object.ok_or(checked.diagnostics)
}

/// Parses and validates one object, keeping warnings. Kinds weftd deliberately ignores
/// (a Deployment) give no object and no diagnostics.
pub fn check(raw: &RawObject) -> Checked {
    let mut diagnostics = Vec::new();
    let object = check_into(raw, &mut diagnostics);
    Checked { object, diagnostics }
}

fn check_into(raw: &RawObject, out: &mut Vec<Diagnostic>) -> Option<ConfigObject> {
    let key = &raw.key;
    let origin = &raw.origin;
    let error =
        |field: &str, message: String| Diagnostic::error(key, origin, field, message).with_code(SCHEMA_ERROR);
    let (group, version) = split_api_version(&raw.api_version);

    let kind = match Kind::lookup(group, &key.kind) {
        KindLookup::Supported(kind) => kind,
        KindLookup::Ignored => return None,
        KindLookup::Unsupported => {
            out.push(Diagnostic::warning(
                key,
                origin,
                "kind",
                format!("{} {} is not supported by weftd; ignored", raw.api_version, key.kind),
            ));
            return None;
        }
        KindLookup::Unknown => {
            out.push(error("kind", unknown_kind_message(group, &raw.api_version, &key.kind)));
            return None;
        }
    };
    if !kind.versions().contains(&version) {
        out.push(error(
            "apiVersion",
            format!(
                "unsupported apiVersion {:?} for {}: use {}",
                raw.api_version,
                kind.name(),
                kind.versions()
                    .iter()
                    .map(|v| format!("{group}{}{v}", if group.is_empty() { "" } else { "/" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return None;
    }

    // The common case reads the typed object straight from the text, with no `Value`
    // tree in between (building one costs more than the typed object itself). Anything
    // out of the ordinary takes the second path, which builds the tree and says exactly
    // what is wrong; both give the same object for the same text.
    let object = match from_text(kind, raw) {
        Some(object) => object,
        None => from_tree(kind, raw, out)?,
    };

    let mut report = Report::default();
    validate::validate(&object, &mut report);
    let has_errors = report.has_errors();
    out.extend(report.findings.into_iter().map(|f| Diagnostic {
        severity: f.severity,
        code: f.code,
        object: Some(key.clone()),
        origin: origin.clone(),
        field: f.field,
        message: f.message,
    }));
    if has_errors { None } else { Some(object) }
}

/// The top-level fields an Istio or Gateway API object may have.
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Kubernetes core kinds carry many fields weftd does not read; the others deny unknown
/// top-level fields.
fn denies_unknown_fields(kind: Kind) -> bool {
    !matches!(kind.group(), "" | kinds::DISCOVERY)
}

/// The object read straight from its text, or `None` if anything is out of the ordinary:
/// a `null` (which [`from_tree`] strips first), an unknown top-level field, a bad name, a
/// schema error. `None` only means "take the other path", which finds and reports it.
fn from_text(kind: Kind, raw: &RawObject) -> Option<ConfigObject> {
    let text = &*raw.json;
    // `contains("null")` also catches a string holding "null": harmless, the slow path
    // gives the same result.
    if !text.trim_start().starts_with('{') || text.contains("null") || !has_valid_names(&raw.key) {
        return None;
    }
    if denies_unknown_fields(kind) {
        // Borrowed keys: a key with an escape fails here and goes the slow way.
        let fields: BTreeMap<&str, IgnoredAny> = serde_json::from_str(text).ok()?;
        if !fields.keys().all(|f| TOP_LEVEL_FIELDS.contains(f)) {
            return None;
        }
    }
    typed(kind, &raw.key, Text(text)).ok()
}

/// The object read through a `serde_json::Value` tree (nulls stripped), with every problem
/// reported into `out`.
fn from_tree(kind: Kind, raw: &RawObject, out: &mut Vec<Diagnostic>) -> Option<ConfigObject> {
    let key = &raw.key;
    let error = |field: &str, message: String| {
        Diagnostic::error(key, &raw.origin, field, message).with_code(SCHEMA_ERROR)
    };
    let mut value: Value = match serde_json::from_str(&raw.json) {
        Ok(value) => value,
        Err(e) => {
            // Sources hand over text they serialised themselves; this is a bug upstream.
            out.push(error("", format!("the object is not valid JSON: {e}")));
            return None;
        }
    };
    strip_nulls(&mut value);
    let Value::Object(map) = &value else {
        out.push(error("", "an object must be a mapping".into()));
        return None;
    };
    if denies_unknown_fields(kind) {
        for field in map.keys() {
            if !TOP_LEVEL_FIELDS.contains(&field.as_str()) {
                out.push(error(
                    field,
                    format!("unknown field `{field}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"),
                ));
            }
        }
    }
    if !names::is_k8s_name(&key.name) {
        out.push(error(
            "metadata.name",
            format!("invalid name {:?}: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", key.name),
        ));
    }
    if let Some(ns) = &key.namespace
        && !names::is_k8s_namespace(ns)
    {
        out.push(error(
            "metadata.namespace",
            format!("invalid namespace {ns:?}: use a lower-case DNS label"),
        ));
    }
    if !out.is_empty() {
        return None;
    }
    match typed(kind, key, Tree(value)) {
        Ok(object) => Some(object),
        Err((field, message)) => {
            out.push(error(&field, message));
            None
        }
    }
}

fn has_valid_names(key: &ObjectKey) -> bool {
    names::is_k8s_name(&key.name) && key.namespace.as_deref().is_none_or(names::is_k8s_namespace)
}

/// What a typed object is deserialized from.
trait Input {
    type Error;
    fn read<T: DeserializeOwned>(self) -> Result<T, Self::Error>;
}

/// Compact JSON text, read directly.
struct Text<'a>(&'a str);

impl Input for Text<'_> {
    type Error = serde_json::Error;
    fn read<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0)
    }
}

/// A `Value` tree; errors name the failing field's path.
struct Tree(Value);

impl Input for Tree {
    type Error = (String, String);
    fn read<T: DeserializeOwned>(self) -> Result<T, (String, String)> {
        deserialize(self.0)
    }
}

/// Deserializes the typed form of `kind`, fills in what the key knows and wraps it.
fn typed<I: Input>(kind: Kind, key: &ObjectKey, input: I) -> Result<ConfigObject, I::Error> {
    let fill = |meta: &mut ObjectMeta| {
        meta.namespace = key.namespace.clone().unwrap_or_default();
        if meta.name.is_empty() {
            meta.name = key.name.clone();
        }
    };
    macro_rules! typed {
        ($variant:ident) => {{
            let mut object: kinds::$variant = input.read()?;
            fill(&mut object.metadata);
            ConfigObject::$variant(Arc::new(object))
        }};
    }
    Ok(match kind {
        Kind::Namespace => typed!(Namespace),
        Kind::Pod => typed!(Pod),
        Kind::Service => typed!(Service),
        Kind::EndpointSlice => typed!(EndpointSlice),
        Kind::VirtualService => typed!(VirtualService),
        Kind::DestinationRule => typed!(DestinationRule),
        Kind::Gateway => typed!(Gateway),
        Kind::ServiceEntry => typed!(ServiceEntry),
        Kind::Sidecar => typed!(Sidecar),
        Kind::WorkloadEntry => typed!(WorkloadEntry),
        Kind::AuthorizationPolicy => typed!(AuthorizationPolicy),
        Kind::PeerAuthentication => typed!(PeerAuthentication),
        Kind::KubernetesGateway => typed!(KubernetesGateway),
        Kind::HttpRoute => typed!(HttpRoute),
        Kind::ReferenceGrant => typed!(ReferenceGrant),
    })
}

/// Deserializes with the path of the failing field: `("spec.http[0].timeout", "invalid duration …")`.
fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// Kubernetes and protobuf JSON read `null` as "not set"; serde would call it a type error.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn unknown_kind_message(group: &str, api_version: &str, kind: &str) -> String {
    let known: Vec<&str> = Kind::all().iter().filter(|k| k.group() == group).map(|k| k.name()).collect();
    if known.is_empty() {
        return format!(
            "unknown kind {kind:?} (apiVersion {api_version}): weftd reads Namespace, Pod, Service, EndpointSlice and the networking.istio.io, security.istio.io and gateway.networking.k8s.io kinds"
        );
    }
    let suggestion = known
        .iter()
        .map(|k| (edit_distance(&k.to_ascii_lowercase(), &kind.to_ascii_lowercase()), *k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| format!("; did you mean {k}?"))
        .unwrap_or_default();
    format!("unknown kind {kind:?} for apiVersion {api_version} (known: {}){suggestion}", known.join(", "))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Origin;
    use serde_json::json;

    fn raw(value: Value) -> (Kind, RawObject) {
        let api_version = value["apiVersion"].as_str().unwrap().to_string();
        let (group, _) = split_api_version(&api_version);
        let kind = value["kind"].as_str().unwrap().to_string();
        let KindLookup::Supported(k) = Kind::lookup(group, &kind) else { panic!("{kind}") };
        let key = ObjectKey {
            group: group.into(),
            namespace: (!k.is_cluster_scoped()).then(|| "ns".into()),
            name: value["metadata"]["name"].as_str().unwrap().into(),
            kind,
        };
        (k, RawObject::from_value(key, api_version, &value, Origin::File { path: "t.yaml".into(), line: 1 }))
    }

    #[test]
    fn text_and_tree_read_the_same_object() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
                   "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}, "extra": {"ignored": [1, 2.5]}}),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v"},
                   "spec": {"hosts": ["reviews"], "http": [{
                       "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 0.1}}},
                       "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}]}}),
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "d"},
                   "spec": {"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"enabled": true}}},
                            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
        ];
        for value in objects {
            let (kind, raw) = raw(value);
            let fast = from_text(kind, &raw).unwrap_or_else(|| panic!("{} not read from text", raw.key));
            let mut out = Vec::new();
            let slow = from_tree(kind, &raw, &mut out);
            assert!(out.is_empty(), "{out:?}");
            assert_eq!(Some(fast), slow);
        }
    }

    #[test]
    fn nulls_and_unknown_fields_take_the_tree_path() {
        let (kind, with_null) = raw(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                           "spec": {"nodeName": null, "containers": null}}));
        assert!(from_text(kind, &with_null).is_none());
        assert!(parse(&with_null).is_ok(), "nulls are stripped");

        let (kind, unknown) = raw(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                         "metadata": {"name": "d"}, "spec": {"host": "r"}, "sepc": {}}));
        assert!(from_text(kind, &unknown).is_none());
        let errors = parse(&unknown).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "sepc");
    }
}
