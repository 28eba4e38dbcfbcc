//! The writes beyond create and replace, for what weftd's waypoint controller and weftctl
//! send: PATCH (JSON merge patch, server-side apply), DELETE with the garbage collector's
//! cascade, and the `/status` subresource.
//!
//! - A PATCH's create or update is admitted by the validating webhooks (`admission.rs`)
//!   before it is stored, as a POST or PUT is.
//! - `PATCH` with `application/merge-patch+json` changes an existing object (404 if there is
//!   none); with `application/apply-patch+yaml` (a `fieldManager` is required, `force`
//!   accepted) it creates the object if absent and merges the applied fields otherwise
//!   (`patch.rs` says how faithfully). Other patch types get 415.
//! - A write to an object leaves its `status` alone, and a write to `…/status` (PATCH or
//!   PUT) changes only `status`, as for every kind with a status subresource.
//! - A write that changes nothing keeps the resourceVersion and sends no watch event.
//! - `DELETE` removes the object and answers it; then, as Kubernetes' garbage collector does
//!   in the background, every object whose `metadata.ownerReferences` names the deleted
//!   object's uid is deleted too, recursively (unless `propagationPolicy` is `Orphan`).
//!   The cascade is immediate here, where the real collector takes a moment.

use super::{
    Shared, admission,
    http::{Body, Query, error, json_response, read_body},
    patch,
    resources::{RESOURCES, by_path},
    store::ApiError,
};
use hyper::{Method, Request, StatusCode, body::Incoming, header};
use serde_json::Value;

/// The object a write is addressed to.
struct Target<'a> {
    resource: usize,
    version: &'a str,
    namespace: Option<&'a str>,
    name: &'a str,
    /// Addressed to its `/status` subresource.
    status: bool,
}

impl<'a> Target<'a> {
    fn parse(path: &'a str) -> Result<Target<'a>, ApiError> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::not_found()),
        };
        let (namespace, plural, name, sub) = match *rest {
            ["namespaces", namespace, plural, name] => (Some(namespace), plural, name, None),
            ["namespaces", namespace, plural, name, sub] => (Some(namespace), plural, name, Some(sub)),
            [plural, name] => (None, plural, name, None),
            [plural, name, sub] => (None, plural, name, Some(sub)),
            _ => return Err(ApiError::not_found()),
        };
        let resource = by_path(group, version, plural).ok_or_else(ApiError::not_found)?;
        if RESOURCES[resource].namespaced != namespace.is_some() {
            return Err(ApiError::not_found());
        }
        let status = match sub {
            None => false,
            Some("status") => true,
            Some(_) => return Err(ApiError::not_found()),
        };
        Ok(Target { resource, version, namespace, name, status })
    }

    fn describe(&self) -> String {
        let r = &RESOURCES[self.resource];
        format!("{}.{} {:?}", r.plural, r.group, self.name)
    }
}

/// Answers a PATCH, a DELETE, or a PUT to `…/status`.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    path: &str,
    query: &Query,
) -> hyper::Response<Body> {
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let result = async {
        let target = Target::parse(path)?;
        if shared.store().is_failed(target.resource) {
            return Err(ApiError::not_found());
        }
        let body = read_body(request).await?;
        match method {
            Method::DELETE => delete(shared, &target, query, &body).map(|o| (StatusCode::OK, o)),
            Method::PATCH => patch(shared, &target, query, &content_type, &body).await,
            Method::PUT if target.status => put_status(shared, &target, &body).map(|o| (StatusCode::OK, o)),
            _ => Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: format!("{method} is not served on {path}"),
            }),
        }
    }
    .await;
    match result {
        Ok((status, object)) => json_response(status, &object),
        Err(e) => error(&e),
    }
}

/// A body as JSON, or as YAML (an apply patch may be either).
fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is neither JSON nor YAML: {e}")))
    })
}

async fn patch(
    shared: &Shared,
    target: &Target<'_>,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let r = &RESOURCES[target.resource];
    let body = parse(body)?;
    let live = shared.store().get(target.resource, target.version, target.namespace, target.name);
    let (mut merged, created, manager, operation) = match content_type {
        "application/merge-patch+json" => {
            let Some(mut live) = live.clone() else { return Err(not_found(target)) };
            patch::merge_patch(&mut live, &body);
            (live, false, query.get("fieldManager").unwrap_or("unknown").to_owned(), "Update")
        }
        "application/apply-patch+yaml" => {
            let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
                return Err(ApiError::bad_request(
                    "PATCH requests with apply content type must have a fieldManager".into(),
                ));
            };
            check_applied(target, &body)?;
            match live.clone() {
                Some(mut live) => {
                    patch::apply_merge(&mut live, &body);
                    (live, false, manager.to_owned(), "Apply")
                }
                None if target.status => return Err(not_found(target)),
                None => (body, true, manager.to_owned(), "Apply"),
            }
        }
        other => {
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the fake API server takes application/merge-patch+json and application/apply-patch+yaml \
                     patches, not {other:?}"
                ),
            });
        }
    };
    // The subresource rule: status from a status write only, everything else from the rest.
    keep_status_rule(&mut merged, live.as_ref(), target.status);
    merged["apiVersion"] = r.api_version(target.version).into();
    merged["kind"] = r.kind.into();
    merged["metadata"]["name"] = target.name.into();
    if let Some(namespace) = target.namespace {
        merged["metadata"]["namespace"] = namespace.into();
    }
    if let Some(live) = &live
        && patch::content(live) == patch::content(&merged)
    {
        return Ok((StatusCode::OK, live.clone()));
    }
    // The create or update a patch makes is admitted like any other (a subresource is not).
    let dry_run = query.get("dryRun") == Some("All");
    if !target.status {
        let operation = if created { admission::Operation::Create } else { admission::Operation::Update };
        let write = admission::Write {
            operation,
            resource: target.resource,
            version: target.version,
            object: &merged,
            old_object: live.as_ref(),
            dry_run,
        };
        admission::admit(shared, &write).await?;
    }
    if dry_run {
        return Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, merged));
    }
    let subresource = target.status.then_some("status");
    patch::record_manager(&mut merged, &manager, operation, &r.api_version(target.version), subresource);
    let mut store = shared.store();
    store.apply(merged);
    let stored =
        store.get(target.resource, target.version, target.namespace, target.name).expect("just stored");
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, stored))
}

/// An applied configuration must name the object it is sent to.
fn check_applied(target: &Target<'_>, body: &Value) -> Result<(), ApiError> {
    let r = &RESOURCES[target.resource];
    if body["kind"].as_str() != Some(r.kind) || body["apiVersion"].as_str().is_none() {
        return Err(ApiError::bad_request(format!(
            "an applied configuration needs apiVersion and kind {:?}, got kind {}",
            r.kind, body["kind"]
        )));
    }
    if body["metadata"]["name"].as_str() != Some(target.name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            body["metadata"]["name"], target.name
        )));
    }
    if let (Some(url), Some(given)) = (target.namespace, body["metadata"]["namespace"].as_str())
        && url != given
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({given}) does not match the namespace on the URL ({url})"
        )));
    }
    Ok(())
}

/// A status write changes only `status`; any other write leaves it as it was.
fn keep_status_rule(merged: &mut Value, live: Option<&Value>, status_write: bool) {
    let live_status = live.and_then(|l| l.get("status")).cloned();
    if status_write {
        let status = merged.get("status").cloned();
        *merged = live.cloned().unwrap_or_default();
        match status {
            Some(status) => merged["status"] = status,
            None => {
                merged.as_object_mut().map(|o| o.remove("status"));
            }
        }
        return;
    }
    let Some(fields) = merged.as_object_mut() else { return };
    match live_status {
        Some(status) => fields.insert("status".into(), status),
        None => fields.remove("status"),
    };
}

fn put_status(shared: &Shared, target: &Target<'_>, body: &[u8]) -> Result<Value, ApiError> {
    let r = &RESOURCES[target.resource];
    let body = parse(body)?;
    let mut store = shared.store();
    let Some(live) = store.get(target.resource, target.version, target.namespace, target.name) else {
        return Err(not_found(target));
    };
    if let Some(given) = body["metadata"]["resourceVersion"].as_str()
        && !given.is_empty()
        && Some(given) != live["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                target.describe()
            ),
        });
    }
    let mut merged = body;
    keep_status_rule(&mut merged, Some(&live), true);
    if patch::content(&live) == patch::content(&merged) {
        return Ok(live);
    }
    patch::record_manager(&mut merged, "unknown", "Update", &r.api_version(target.version), Some("status"));
    store.apply(merged);
    Ok(store.get(target.resource, target.version, target.namespace, target.name).expect("just stored"))
}

fn delete(shared: &Shared, target: &Target<'_>, query: &Query, body: &[u8]) -> Result<Value, ApiError> {
    let options = if body.is_empty() { Value::Null } else { parse(body)? };
    let policy = query.get("propagationPolicy").or(options["propagationPolicy"].as_str());
    let orphan = policy == Some("Orphan");
    // Served in the version asked for, as the real server answers a DELETE.
    let mut store = shared.store();
    let Some(object) = store.get(target.resource, target.version, target.namespace, target.name) else {
        return Err(not_found(target));
    };
    store.delete_cascading(target.resource, target.namespace, target.name, orphan);
    Ok(object)
}

fn not_found(target: &Target<'_>) -> ApiError {
    ApiError { code: 404, reason: "NotFound", message: format!("{} not found", target.describe()) }
}
