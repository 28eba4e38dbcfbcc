//! One AdmissionReview (admission.k8s.io/v1) in, one decision out, as istiod's validation
//! server decides: CREATE and UPDATE of a kind weftd reads go through the same parse and
//! validation weftd applies when it reads the object ([`crate::config::parse::check`]);
//! everything else is allowed.
//!
//! Where weftd differs from istiod, and why: istiod refuses a kind of its groups it does not
//! know ("unrecognized type"); weftd allows it, because the rules of the webhook cover whole
//! API groups and weftd implements fewer of their kinds than istiod (an EnvoyFilter is not
//! weftd's to refuse). It still counts it as istiod does (`reason="unknown_type"`).

use crate::config::{
    diagnostic::Severity,
    kinds::{Kind, KindLookup, split_api_version},
    parse,
};
use crate::source::{ObjectKey, Origin, RawObject};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};

/// istiod's annotation that makes its own webhook refuse an object: the probe that tells
/// the webhook controller the webhook answers (see `controller.rs`).
pub const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";

/// Why a request body is not an AdmissionReview weftd can answer (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("cannot decode the body as an admission.k8s.io/v1 AdmissionReview: {0}")]
    Decode(#[from] serde_json::Error),
    /// A well-formed review without `request`.
    #[error("the AdmissionReview has no request: {0}")]
    NoRequest(#[from] kube::core::admission::ConvertAdmissionReviewError),
}

/// How a decision is counted (istiod's `galley_validation_passed` and
/// `galley_validation_failed{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Validated and valid.
    Passed,
    /// Not validated or not valid, with istiod's reason label; `counted` is false for a dry
    /// run (istiod counts no failure of a dry run).
    Failed { reason: &'static str, counted: bool },
}

/// istiod's reason labels.
pub const UNSUPPORTED_OPERATION: &str = "unsupported_operation";
pub const UNKNOWN_TYPE: &str = "unknown_type";
pub const INVALID_RESOURCE: &str = "invalid_resource";
pub const YAML_DECODE_ERROR: &str = "yaml_decode_error";

/// A decision: the AdmissionReview to answer with, and what to count under which resource.
#[derive(Debug)]
pub struct Decision {
    pub review: AdmissionReview<DynamicObject>,
    pub allowed: bool,
    pub outcome: Outcome,
    /// `(group, version, resource)` of the request, istiod's metric labels.
    pub resource: (String, String, String),
}

/// Decides one AdmissionReview given as its JSON body.
pub fn review(body: &[u8]) -> Result<Decision, BadReview> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into()?;
    let (response, outcome) = decide(&request);
    let r = &request.resource;
    Ok(Decision {
        allowed: response.allowed,
        review: response.into_review(),
        outcome,
        resource: (r.group.clone(), r.version.clone(), r.resource.clone()),
    })
}

fn decide(request: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, Outcome) {
    let allow = AdmissionResponse::from(request);
    let failed = |reason| Outcome::Failed { reason, counted: !request.dry_run };
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return (allow, failed(UNSUPPORTED_OPERATION));
    }
    let Some(object) = &request.object else {
        return (
            deny(allow, "cannot decode configuration: the request has no object".into()),
            failed(YAML_DECODE_ERROR),
        );
    };
    let group = request.kind.group.as_str();
    let kind = match Kind::lookup(group, &request.kind.kind) {
        KindLookup::Supported(kind) => kind,
        _ => return (allow, failed(UNKNOWN_TYPE)),
    };
    let raw = match raw_object(request, kind, object) {
        Ok(raw) => raw,
        Err(message) => return (deny(allow, message), failed(YAML_DECODE_ERROR)),
    };
    let what = match &raw.key.namespace {
        Some(ns) => format!("{} {ns}/{}", raw.key.kind, raw.key.name),
        None => format!("{} {}", raw.key.kind, raw.key.name),
    };
    if object.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ALWAYS_REJECT)) {
        let message =
            format!("configuration is invalid: {what}: {ALWAYS_REJECT:?} annotation found, rejecting");
        return (deny(allow, message), failed(INVALID_RESOURCE));
    }
    let checked = parse::check(&raw);
    let line = |d: &crate::config::diagnostic::Diagnostic| {
        if d.field.is_empty() { d.message.clone() } else { format!("{}: {}", d.field, d.message) }
    };
    let errors: Vec<String> =
        checked.diagnostics.iter().filter(|d| d.severity == Severity::Error).map(line).collect();
    if !errors.is_empty() {
        let message = format!("configuration is invalid: {what}: {}", errors.join("; "));
        return (deny(allow, message), failed(INVALID_RESOURCE));
    }
    let warnings: Vec<String> =
        checked.diagnostics.iter().filter(|d| d.severity == Severity::Warning).map(line).collect();
    let mut allow = allow;
    allow.warnings = (!warnings.is_empty()).then_some(warnings);
    (allow, Outcome::Passed)
}

/// A refusal as istiod words it (`status.message`, code 400); the API server prefixes
/// `admission webhook "<name>" denied the request: `.
fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 400;
    response.result.reason = "BadRequest".into();
    response
}

/// The object as weftd's sources hand objects over, so validation is the one they get.
fn raw_object(
    request: &AdmissionRequest<DynamicObject>,
    kind: Kind,
    object: &DynamicObject,
) -> Result<RawObject, String> {
    let name = object.metadata.name.clone().unwrap_or_else(|| request.name.clone());
    let namespace = object.metadata.namespace.clone().or_else(|| request.namespace.clone());
    let key = ObjectKey {
        group: kind.group().to_owned(),
        kind: kind.name().to_owned(),
        namespace: if kind.is_cluster_scoped() { None } else { namespace },
        name,
    };
    // The API server stores every version of a kind with one schema and weftd reads them
    // all in the version it watches; like istiod, judge the object by its group and kind and
    // not refuse a version weftd does not list.
    let given = object.types.as_ref().map(|t| t.api_version.as_str()).unwrap_or_default();
    let version = match split_api_version(given) {
        (g, v) if g == kind.group() && kind.versions().contains(&v) => v,
        _ => kind.versions()[0],
    };
    let api_version =
        if kind.group().is_empty() { version.to_owned() } else { format!("{}/{version}", kind.group()) };
    let mut object = object.clone();
    object.metadata.managed_fields = None;
    if let Some(types) = &mut object.types {
        types.api_version.clone_from(&api_version);
    }
    let json = serde_json::to_string(&object).map_err(|e| format!("cannot decode configuration: {e}"))?;
    let origin =
        Origin::Kubernetes { resource_version: object.metadata.resource_version.clone().unwrap_or_default() };
    Ok(RawObject { key, api_version, json: json.into(), origin })
}
