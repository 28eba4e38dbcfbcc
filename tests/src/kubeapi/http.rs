//! The HTTP side: routes a GET to discovery, a list, a single object or a watch, a POST to
//! a create or a TokenReview, a PUT to a replace (both admitted by the validating webhooks
//! first), and answers with the JSON the real API server sends.

use super::{
    Shared,
    admission::{self, Operation, Write},
    resources::{RESOURCES, by_path},
    store::{ApiError, ListQuery, WatchQuery},
};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    header,
};
use serde_json::{Value, json};
use std::{collections::HashMap, convert::Infallible, time::Duration};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// How long a watch lasts when the client sets no `timeoutSeconds`. The real server picks a
/// random length between 30 and 60 minutes; any long value will do here.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The largest request body accepted (a TokenReview, a Secret).
const MAX_BODY: usize = 1 << 20;

/// Where TokenReviews are posted.
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

pub(crate) async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query());
    let watching = query.flag("watch");
    let method = request.method().clone();
    shared.record(method.as_str(), &path, watching, &request.uri().to_string());
    if method == Method::PATCH
        || method == Method::DELETE
        || (method == Method::PUT && path.ends_with("/status"))
    {
        return super::writes::handle(shared, request, &path, &query).await;
    }
    if method == Method::POST || method == Method::PUT {
        let body = match read_json(request).await {
            Ok(body) => body,
            Err(e) => return error(&e),
        };
        if method == Method::POST && path == TOKEN_REVIEWS {
            return json_response(StatusCode::CREATED, &shared.review(&body));
        }
        return write(shared, &method, &path, &query, body).await;
    }
    if method != Method::GET {
        let message = format!("the fake API server serves GET, POST, PUT, PATCH and DELETE, not {method}");
        return error(&ApiError { code: 405, reason: "MethodNotAllowed", message });
    }

    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        ["version"] => Ok(
            json!({ "major": "1", "minor": "34", "gitVersion": "v1.34.0-weft-fake", "platform": "linux/amd64" }),
        ),
        ["api"] => Ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }],
        })),
        ["apis"] => Ok(group_list(shared)),
        ["api", version] => resource_list(shared, "", version),
        ["apis", group, version] => resource_list(shared, group, version),
        ["api", version, rest @ ..] => return resource(shared, "", version, rest, &query, watching).await,
        ["apis", group, version, rest @ ..] => {
            return resource(shared, group, version, rest, &query, watching).await;
        }
        _ => Err(ApiError::not_found()),
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error(&e),
    }
}

/// The body of a POST or PUT, as JSON.
async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = read_body(request).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// A request's body, up to [`MAX_BODY`].
pub(super) async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    Ok(limited
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes())
}

/// A create (POST to a collection) or replace (PUT to an object), admitted by the
/// validating webhooks first; with `dryRun=All`, admitted and not stored.
async fn write(shared: &Shared, method: &Method, path: &str, query: &Query, body: Value) -> Response<Body> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return error(&ApiError::not_found()),
    };
    let (plural, namespace, name) = match *rest {
        [plural] => (plural, None, None),
        ["namespaces", namespace, plural] => (plural, Some(namespace), None),
        ["namespaces", namespace, plural, name] => (plural, Some(namespace), Some(name)),
        [plural, name] => (plural, None, Some(name)),
        _ => return error(&ApiError::not_found()),
    };
    let Some(resource) = by_path(group, version, plural) else { return error(&ApiError::not_found()) };
    let dry_run = query.get("dryRun") == Some("All");
    let result = async {
        let (operation, status) = match (method, name) {
            (&Method::POST, None) => (Operation::Create, StatusCode::CREATED),
            (&Method::PUT, Some(_)) => (Operation::Update, StatusCode::OK),
            _ => {
                return Err(ApiError {
                    code: 405,
                    reason: "MethodNotAllowed",
                    message: format!("{method} is not served on {path}"),
                });
            }
        };
        // What would be stored, checked as the store checks it, and the version it replaces.
        let (object, object_name) = shared.store().checked(resource, version, namespace, body)?;
        let old = shared.store().get(resource, version, namespace, &object_name);
        match (operation, &old) {
            (Operation::Create, Some(_)) if dry_run => {
                return Err(ApiError::about(resource, &object_name, true));
            }
            (Operation::Update, None) if dry_run => {
                return Err(ApiError::about(resource, &object_name, false));
            }
            _ => {}
        }
        let write =
            Write { operation, resource, version, object: &object, old_object: old.as_ref(), dry_run };
        admission::admit(shared, &write).await?;
        if dry_run {
            return Ok((status, object));
        }
        let mut store = shared.store();
        let stored = match name {
            None => store.create(resource, version, namespace, object)?,
            Some(name) => store.replace(resource, version, namespace, name, object)?,
        };
        Ok((status, stored))
    }
    .await;
    match result {
        Ok((status, object)) => json_response(status, &object),
        Err(e) => error(&e),
    }
}

/// A list, get or watch of one resource: `rest` is what follows `/api/v1` or
/// `/apis/<group>/<version>`.
async fn resource(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &Query,
    watching: bool,
) -> Response<Body> {
    let (plural, namespace, name) = match *rest {
        [plural] => (plural, None, None),
        ["namespaces", namespace, plural] => (plural, Some(namespace), None),
        ["namespaces", namespace, plural, name] => (plural, Some(namespace), Some(name)),
        [plural, name] => (plural, None, Some(name)),
        _ => return error(&ApiError::not_found()),
    };
    let Some(resource) = by_path(group, version, plural) else { return error(&ApiError::not_found()) };
    if namespace.is_some() && !RESOURCES[resource].namespaced {
        return error(&ApiError::not_found());
    }
    if shared.store().is_failed(resource) {
        return error(&ApiError::not_found());
    }

    if let Some(name) = name {
        let object = shared.store().get(resource, version, namespace, name);
        return match object {
            Some(object) => json_response(StatusCode::OK, &object),
            None => error(&ApiError {
                code: 404,
                reason: "NotFound",
                message: format!("{plural}.{group} {name:?} not found"),
            }),
        };
    }
    let resource_version = match query.resource_version() {
        Ok(rv) => rv,
        Err(e) => return error(&e),
    };
    if watching {
        let watch = WatchQuery {
            resource_version,
            bookmarks: query.flag("allowWatchBookmarks"),
            send_initial_events: query.flag("sendInitialEvents"),
        };
        let timeout = query.get("timeoutSeconds").and_then(|s| s.parse().ok()).map(Duration::from_secs);
        return open_watch(
            shared,
            resource,
            version,
            namespace,
            &watch,
            timeout.unwrap_or(DEFAULT_WATCH_TIMEOUT),
        )
        .await;
    }
    let list = ListQuery {
        resource_version,
        exact: query.get("resourceVersionMatch") == Some("Exact"),
        limit: query.get("limit").and_then(|s| s.parse().ok()),
        continue_token: query.get("continue").filter(|s| !s.is_empty()).map(str::to_owned),
    };
    match shared.store().list(resource, version, namespace, &list) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error(&e),
    }
}

/// A watch: a chunked stream of JSON lines, one event each, until the timeout, the
/// client leaving, or the test dropping watches.
async fn open_watch(
    shared: &Shared,
    resource: usize,
    version: &str,
    namespace: Option<&str>,
    query: &WatchQuery,
    timeout: Duration,
) -> Response<Body> {
    // While the test holds watches, the request waits here unanswered, as if the server
    // were unreachable; what changes meanwhile is what the watch then starts from.
    let mut paused = shared.paused.subscribe();
    let _ = paused.wait_for(|paused| !paused).await;
    let lines = {
        let mut store = shared.store();
        if store.is_failed(resource) {
            return error(&ApiError::not_found());
        }
        store.watch(resource, version, namespace.map(str::to_owned), query)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let events = futures::stream::unfold(lines, move |mut lines| async move {
        tokio::select! {
            line = lines.recv() => line.map(|line| (Ok::<_, Infallible>(Frame::data(line)), lines)),
            () = tokio::time::sleep_until(deadline) => None,
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(events).boxed())
        .expect("a valid response")
}

/// `/apis`: the groups with at least one served resource.
fn group_list(shared: &Shared) -> Value {
    let store = shared.store();
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (index, r) in RESOURCES.iter().enumerate() {
        if r.group.is_empty() || store.is_failed(index) {
            continue;
        }
        match groups.iter_mut().find(|(group, _)| *group == r.group) {
            Some((_, versions)) => {
                for version in r.versions {
                    if !versions.contains(version) {
                        versions.push(version);
                    }
                }
            }
            None => groups.push((r.group, r.versions.to_vec())),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
                .collect();
            json!({ "name": group, "preferredVersion": versions[0], "versions": versions })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/api/v1`, `/apis/<group>/<version>`: the resources served in one group version.
fn resource_list(shared: &Shared, group: &str, version: &str) -> Result<Value, ApiError> {
    let store = shared.store();
    let resources: Vec<Value> = RESOURCES
        .iter()
        .enumerate()
        .filter(|(index, r)| r.group == group && r.versions.contains(&version) && !store.is_failed(*index))
        .map(|(_, r)| {
            json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    if resources.is_empty() {
        return Err(ApiError::not_found());
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Ok(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("JSON serialises");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("a valid response")
}

pub(super) fn error(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.status())
}

/// A request's query parameters, percent-decoded.
pub(super) struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()).map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        });
        Query(pairs.collect())
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// `resourceVersion`: unset, empty and "0" all mean "any version" (`None`).
    fn resource_version(&self) -> Result<Option<u64>, ApiError> {
        match self.get("resourceVersion") {
            None | Some("" | "0") => Ok(None),
            Some(rv) => rv
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}"))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            })
            .flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
