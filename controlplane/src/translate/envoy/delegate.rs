//! VirtualService delegation, merged before translation as Istio merges it
//! (pilot/pkg/model/virtualservice.go `MergeHTTPRoutes`, and the caller in
//! virtualservice_controller.go): a root route with `delegate` is replaced by the
//! delegate's routes, each with the root's match conditions merged in and the root's
//! settings where the delegate has none. A delegate that does not exist, or a delegate
//! route whose match conflicts with the root's, drops only that route.

use crate::config::{
    kinds::virtual_service::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService},
    store::ConfigSnapshot,
};
use std::collections::BTreeMap;

/// A route to translate and the namespace its short host names are relative to (a
/// delegate's routes resolve in the delegate's namespace).
pub struct Resolved<'a> {
    pub route: std::borrow::Cow<'a, HttpRoute>,
    pub namespace: &'a str,
}

/// The HTTP routes of `vs` with every delegation merged in.
pub fn resolve<'a>(cfg: &'a ConfigSnapshot, vs: &'a VirtualService) -> Vec<Resolved<'a>> {
    let mut out = Vec::with_capacity(vs.spec.http.len());
    for (i, http) in vs.spec.http.iter().enumerate() {
        let Some(d) = &http.delegate else {
            out.push(Resolved { route: std::borrow::Cow::Borrowed(http), namespace: &vs.metadata.namespace });
            continue;
        };
        let ns = d.namespace.as_deref().unwrap_or(&vs.metadata.namespace);
        let Some(delegate) = cfg.virtual_services.get(ns, &d.name) else {
            tracing::warn!(
                virtual_service = %format!("{}/{}", vs.metadata.namespace, vs.metadata.name),
                route = i,
                delegate = %format!("{ns}/{}", d.name),
                "delegate VirtualService not found: its route is left out (as in Istio)"
            );
            continue;
        };
        if !exported_to(delegate, &vs.metadata.namespace) {
            tracing::warn!(
                delegate = %format!("{ns}/{}", d.name),
                root_namespace = %vs.metadata.namespace,
                "delegate VirtualService is not exported to the root's namespace: its route is left out"
            );
            continue;
        }
        for sub in &delegate.spec.http {
            if let Some(merged) = merge(http, sub) {
                out.push(Resolved {
                    route: std::borrow::Cow::Owned(merged),
                    namespace: &delegate.metadata.namespace,
                });
            } else {
                tracing::warn!(
                    root = ?http.name,
                    delegate_route = ?sub.name,
                    "delegate route's match conflicts with the root's: left out (as in Istio)"
                );
            }
        }
    }
    out
}

fn exported_to(vs: &VirtualService, namespace: &str) -> bool {
    let e = &vs.spec.export_to;
    e.is_empty()
        || e.iter().any(|x| x == "*" || x == namespace || (x == "." && vs.metadata.namespace == namespace))
}

/// Istio's `mergeHTTPRoute`: `None` on a match conflict.
pub fn merge(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let mut out = delegate.clone();
    out.matches = merge_matches(&root.matches, &delegate.matches)?;
    out.name = match (&root.name, &delegate.name) {
        (r, None) => r.clone(),
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (None, d) => d.clone(),
    };
    out.delegate = None;
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

fn merge_matches(root: &[HttpMatchRequest], delegate: &[HttpMatchRequest]) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for sub in delegate {
        let mut found = false;
        for r in root {
            if has_conflict(r, sub) {
                continue;
            }
            out.push(merge_match(r, sub));
            found = true;
        }
        if !found {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn merged_map<V: Clone>(root: &BTreeMap<String, V>, delegate: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut m = root.clone();
    m.extend(delegate.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

fn merge_match(root: &HttpMatchRequest, delegate: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = delegate.clone();
    out.name = match (&root.name, &delegate.name) {
        (r, None) => r.clone(),
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (None, d) => d.clone(),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(uri, scheme, method, authority, port, source_namespace, stat_prefix);
    out.headers = merged_map(&root.headers, &delegate.headers);
    out.without_headers = merged_map(&root.without_headers, &delegate.without_headers);
    out.query_params = merged_map(&root.query_params, &delegate.query_params);
    out.source_labels = merged_map(&root.source_labels, &delegate.source_labels);
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Istio's `hasConflict`: whether the delegate's match cannot narrow the root's.
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs.iter().any(|(r, l)| string_conflict(r.as_ref(), l.as_ref())) {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter().any(|(k, lv)| string_conflict(r.get(k), Some(lv)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r > 0
        && l > 0
        && r != l
    {
        return true;
    }
    if root.source_namespace.is_some() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf.source_labels.iter().any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v)) {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// Istio's `stringMatchConflict`.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else { return false };
    let set = |m: &StringMatch| m.regex.is_some() || m.prefix.is_some() || m.exact.is_some();
    if root.regex.is_some() && set(leaf) {
        return true;
    }
    if leaf.regex.is_some() && set(root) {
        return true;
    }
    if let Some(exact) = &root.exact {
        return leaf.prefix.is_some() || leaf.exact.as_ref() != Some(exact);
    }
    if let Some(prefix) = &root.prefix {
        if let Some(lp) = &leaf.prefix {
            return !lp.starts_with(prefix.as_str());
        }
        if let Some(le) = &leaf.exact {
            return !le.starts_with(prefix.as_str());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Option<StringMatch> {
        Some(StringMatch { prefix: Some(p.into()), ..Default::default() })
    }

    #[test]
    fn delegate_routes_narrow_the_root_and_inherit_its_settings() {
        let root = HttpRoute {
            name: Some("root".into()),
            matches: vec![HttpMatchRequest { uri: prefix("/api"), ..Default::default() }],
            timeout: Some(crate::config::duration::IstioDuration(std::time::Duration::from_secs(3))),
            ..Default::default()
        };
        let ok = HttpRoute {
            name: Some("v1".into()),
            matches: vec![HttpMatchRequest { uri: prefix("/api/v1"), ..Default::default() }],
            ..Default::default()
        };
        let m = merge(&root, &ok).unwrap();
        assert_eq!(m.name.as_deref(), Some("root-v1"));
        assert_eq!(m.matches[0].uri, prefix("/api/v1"));
        assert_eq!(m.timeout, root.timeout);
        let conflict = HttpRoute {
            matches: vec![HttpMatchRequest { uri: prefix("/other"), ..Default::default() }],
            ..Default::default()
        };
        assert!(merge(&root, &conflict).is_none());
        let catch_all = merge(&root, &HttpRoute::default()).unwrap();
        assert_eq!(catch_all.matches[0].uri, prefix("/api"));
    }
}
