//! From a source's [`RawObject`] to a validated [`ConfigObject`]: find the kind, check the
//! API version, deserialize into the typed form (schema errors name the field path), then
//! run the kind's validator.

use super::diagnostic::Diagnostic;
use super::kinds::{self, ConfigObject, Kind, KindLookup, ObjectMeta, split_api_version};
use super::validate::{self, Report, SCHEMA_ERROR, names};
use crate::source::RawObject;
use serde::de::DeserializeOwned;
use serde_json::Value;
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

    let mut value = raw.value.clone();
    strip_nulls(&mut value);
    let Value::Object(map) = &value else {
        out.push(error("", "an object must be a mapping".into()));
        return None;
    };
    if !matches!(kind.group(), "" | kinds::DISCOVERY) {
        for field in map.keys() {
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&field.as_str()) {
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

    let fill = |meta: &mut ObjectMeta| {
        meta.namespace = key.namespace.clone().unwrap_or_default();
        if meta.name.is_empty() {
            meta.name = key.name.clone();
        }
    };
    macro_rules! typed {
        ($variant:ident) => {{
            let mut object: kinds::$variant = match deserialize(value) {
                Ok(o) => o,
                Err((field, message)) => {
                    out.push(error(&field, message));
                    return None;
                }
            };
            fill(&mut object.metadata);
            ConfigObject::$variant(Arc::new(object))
        }};
    }
    let object = match kind {
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
