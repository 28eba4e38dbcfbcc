//! The routes that answer themselves: RedirectAction (the Location built as Envoy's
//! `Http::Utility::newUri` builds it) and DirectResponseAction.

use super::{
    RequestParts,
    error::{FieldError, FieldResult},
    rewrite::Rewrite,
};
use bytes::Bytes;
use envoy_types::pb::envoy::config::{
    core::v3::{DataSource, data_source},
    route::v3::{DirectResponseAction, RedirectAction, redirect_action},
};
use http::{HeaderValue, StatusCode};

#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// Keep the request's path.
    Keep,
    /// path_redirect; a query in it replaces the request's and is never stripped.
    Path { path: Box<str>, has_query: bool },
    /// prefix_rewrite or regex_rewrite of the request's path.
    Rewrite(Rewrite),
}

#[derive(Debug, Clone)]
pub struct Redirect {
    /// https_redirect or scheme_redirect; None: the request's scheme.
    pub scheme: Option<Box<str>>,
    pub host: Option<Box<str>>,
    /// ":PORT" when port_redirect is set.
    pub port: Option<Box<str>>,
    pub path: RedirectPath,
    pub strip_query: bool,
    pub status: StatusCode,
}

impl Redirect {
    pub(crate) fn compile(r: &RedirectAction, matched_len: Option<usize>) -> FieldResult<Redirect> {
        use redirect_action::{
            PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
        };
        let scheme = match &r.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".into()),
            Some(S::SchemeRedirect(s)) if !s.is_empty() => Some(s.to_ascii_lowercase().into()),
            _ => None,
        };
        let path = match &r.path_rewrite_specifier {
            None => RedirectPath::Keep,
            Some(P::PathRedirect(p)) if p.is_empty() => RedirectPath::Keep,
            Some(P::PathRedirect(p)) => {
                RedirectPath::Path { path: p.as_str().into(), has_query: p.contains('?') }
            }
            Some(P::PrefixRewrite(p)) => {
                RedirectPath::Rewrite(Rewrite::Prefix { replacement: p.as_str().into(), matched_len })
            }
            Some(P::RegexRewrite(r)) => {
                RedirectPath::Rewrite(Rewrite::regex(r).map_err(|e| e.within("regex_rewrite"))?)
            }
            Some(P::PathRewrite(_)) => return Err(FieldError::unsupported("path_rewrite")),
        };
        let status = match C::try_from(r.response_code) {
            Ok(C::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(C::Found) => StatusCode::FOUND,
            Ok(C::SeeOther) => StatusCode::SEE_OTHER,
            Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => {
                return Err(FieldError::invalid(
                    "response_code",
                    format!("unknown code {}", r.response_code),
                ));
            }
        };
        Ok(Redirect {
            scheme,
            host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.as_str().into()),
            port: (r.port_redirect != 0).then(|| format!(":{}", r.port_redirect).into()),
            path,
            strip_query: r.strip_query,
            status,
        })
    }

    /// The Location header for `req`.
    pub fn location(&self, req: &RequestParts<'_>) -> HeaderValue {
        let request_scheme = req.scheme();
        let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
        let port = self.port.as_deref().unwrap_or("");
        let host = match &self.host {
            Some(h) => &**h,
            None => request_host(req.authority().unwrap_or(""), request_scheme, scheme, port),
        };
        let request_path = req.parts.uri.path_and_query().map_or("", |p| p.as_str());
        let mut path: std::borrow::Cow<'_, str> = match &self.path {
            RedirectPath::Keep => request_path.into(),
            RedirectPath::Path { path, has_query: true } => (&**path).into(),
            RedirectPath::Path { path, has_query: false } => match request_path.find('?') {
                Some(q) => format!("{path}{}", &request_path[q..]).into(),
                None => (&**path).into(),
            },
            RedirectPath::Rewrite(r) => r.path(request_path).into(),
        };
        if !path.starts_with('/') {
            path = format!("/{path}").into();
        }
        let keeps_query = matches!(self.path, RedirectPath::Path { has_query: true, .. });
        let path = match path.find('?') {
            Some(q) if self.strip_query && !keeps_query => &path[..q],
            _ => &path[..],
        };
        let location = format!("{scheme}://{host}{port}{path}");
        HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/"))
    }
}

/// Envoy's `processRequestHost`: the request's host, without its port when the redirect
/// sets a port, or when the scheme changes away from the port's default (http://h:80 →
/// https://h).
fn request_host<'h>(host: &'h str, request_scheme: &str, new_scheme: &str, new_port: &str) -> &'h str {
    let port_start = if host.starts_with('[') { host.rfind("]:").map(|i| i + 1) } else { host.rfind(':') };
    let Some(at) = port_start else { return host };
    let port = &host[at..];
    let mut remove = !new_port.is_empty();
    if new_scheme != request_scheme {
        remove |= request_scheme == "https" && port == ":443";
        remove |= request_scheme == "http" && port == ":80";
    }
    if remove { &host[..at] } else { host }
}

/// Envoy's default max_direct_response_body_size_bytes.
pub const DEFAULT_MAX_DIRECT_RESPONSE_BODY: usize = 4096;

#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

impl DirectResponse {
    pub(crate) fn compile(d: &DirectResponseAction, max_body: usize) -> FieldResult<DirectResponse> {
        let status = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| FieldError::invalid("status", format!("{} is not in [200, 600)", d.status)))?;
        if d.body_format.is_some() {
            return Err(FieldError::unsupported("body_format"));
        }
        let body = match &d.body {
            None => None,
            Some(DataSource { specifier: Some(data_source::Specifier::InlineString(s)), .. }) => {
                Some(Bytes::from(s.clone()))
            }
            Some(DataSource { specifier: Some(data_source::Specifier::InlineBytes(b)), .. }) => {
                Some(Bytes::from(b.clone()))
            }
            Some(DataSource { specifier: None, .. }) => None,
            Some(_) => return Err(FieldError::unsupported("body (only inline_string and inline_bytes)")),
        };
        if body.as_ref().is_some_and(|b| b.len() > max_body) {
            return Err(FieldError::invalid(
                "body",
                format!("longer than max_direct_response_body_size_bytes ({max_body})"),
            ));
        }
        Ok(DirectResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(r: &RedirectAction, matched: Option<usize>, uri: &str, host: &str) -> String {
        let parts = http::Request::get(uri).header("host", host).body(()).unwrap().into_parts().0;
        let req = RequestParts::new(&parts, "10.0.0.1:1".parse().unwrap());
        Redirect::compile(r, matched).unwrap().location(&req).to_str().unwrap().to_owned()
    }

    /// RedirectAction fields: host_redirect, port_redirect, path_redirect (with and without
    /// its own query), prefix_rewrite, strip_query, https_redirect / scheme_redirect and the
    /// port dropped when the scheme changes away from its default port.
    #[test]
    fn location_as_envoy_builds_it() {
        use redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
        let host = RedirectAction { host_redirect: "new.example".into(), ..Default::default() };
        assert_eq!(location(&host, None, "/a?b=1", "old:8080"), "http://new.example/a?b=1");
        let port = RedirectAction { port_redirect: 9090, ..Default::default() };
        assert_eq!(location(&port, None, "/a", "old:8080"), "http://old:9090/a");
        let path = RedirectAction {
            path_rewrite_specifier: Some(P::PathRedirect("/new".into())),
            ..Default::default()
        };
        assert_eq!(location(&path, None, "/old?q=1", "h"), "http://h/new?q=1");
        let path_q = RedirectAction {
            path_rewrite_specifier: Some(P::PathRedirect("/new?x=2".into())),
            strip_query: true,
            ..Default::default()
        };
        assert_eq!(location(&path_q, None, "/old?q=1", "h"), "http://h/new?x=2");
        let strip = RedirectAction {
            path_rewrite_specifier: Some(P::PathRedirect("/new".into())),
            strip_query: true,
            ..Default::default()
        };
        assert_eq!(location(&strip, None, "/old?q=1", "h"), "http://h/new");
        let prefix = RedirectAction {
            path_rewrite_specifier: Some(P::PrefixRewrite("/v2".into())),
            ..Default::default()
        };
        assert_eq!(location(&prefix, Some(3), "/v1/x?y", "h:8080"), "http://h:8080/v2/x?y");
        let https =
            RedirectAction { scheme_rewrite_specifier: Some(S::HttpsRedirect(true)), ..Default::default() };
        assert_eq!(location(&https, None, "/a", "h:80"), "https://h/a");
        assert_eq!(location(&https, None, "/a", "h:8080"), "https://h:8080/a");
        let scheme =
            RedirectAction { scheme_rewrite_specifier: scheme_redirect("HTTPS"), ..Default::default() };
        assert_eq!(location(&scheme, None, "/a", "[::1]:80"), "https://[::1]/a");
    }

    fn scheme_redirect(s: &str) -> Option<redirect_action::SchemeRewriteSpecifier> {
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s.into()))
    }

    /// DirectResponseAction.status must be in [200, 600); the body is bounded by
    /// max_direct_response_body_size_bytes.
    #[test]
    fn direct_response_bounds() {
        let ok = DirectResponseAction {
            status: 418,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString("tea".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = DirectResponse::compile(&ok, 4096).unwrap();
        assert_eq!((d.status.as_u16(), d.body.as_deref()), (418, Some(&b"tea"[..])));
        assert!(
            DirectResponse::compile(&DirectResponseAction { status: 100, ..Default::default() }, 4096)
                .is_err()
        );
        assert!(DirectResponse::compile(&ok, 2).is_err());
    }
}
