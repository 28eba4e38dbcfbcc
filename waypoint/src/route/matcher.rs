//! Envoy's request matchers, compiled: StringMatcher, HeaderMatcher, QueryParameterMatcher
//! and a RouteMatch's path specifiers, with Envoy's semantics (config/route/v3
//! route_components.proto). Matching borrows the request and does not allocate.

use super::{
    RequestParts,
    error::{FieldError, FieldResult},
};
use envoy_types::pb::envoy::{
    config::route::v3::{HeaderMatcher, QueryParameterMatcher, header_matcher, query_parameter_matcher},
    r#type::{
        matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
        v3::{FractionalPercent, fractional_percent::DenominatorType},
    },
};
use http::header::HeaderName;

/// A regex compiled for a full match, as Envoy's RE2 `FullMatch` does.
pub(crate) fn full_regex(m: &RegexMatcher, field: &str) -> FieldResult<regex::bytes::Regex> {
    regex::bytes::Regex::new(&format!(r"\A(?:{})\z", m.regex))
        .map_err(|e| FieldError::invalid(field, format!("regex {:?}: {e}", m.regex)))
}

/// A regex compiled to search (rewrites replace every match, as RE2 `GlobalReplace`).
pub(crate) fn search_regex(m: &RegexMatcher, field: &str) -> FieldResult<regex::Regex> {
    regex::Regex::new(&m.regex).map_err(|e| FieldError::invalid(field, format!("regex {:?}: {e}", m.regex)))
}

/// envoy.type.matcher.v3.StringMatcher. `ignore_case` compares ASCII case-insensitively,
/// as Envoy does, and has no effect on regexes.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact { value: Box<[u8]>, ignore_case: bool },
    Prefix { value: Box<[u8]>, ignore_case: bool },
    Suffix { value: Box<[u8]>, ignore_case: bool },
    Contains { value: Box<[u8]>, ignore_case: bool },
    Regex(regex::bytes::Regex),
}

impl StringMatch {
    pub(crate) fn compile(m: &StringMatcher) -> FieldResult<StringMatch> {
        use string_matcher::MatchPattern;
        let ignore_case = m.ignore_case;
        let bytes = |s: &String| s.as_bytes().to_vec().into_boxed_slice();
        Ok(match &m.match_pattern {
            Some(MatchPattern::Exact(v)) => StringMatch::Exact { value: bytes(v), ignore_case },
            // Proto validation: prefix, suffix and contains need at least one byte.
            Some(MatchPattern::Prefix(v)) if !v.is_empty() => {
                StringMatch::Prefix { value: bytes(v), ignore_case }
            }
            Some(MatchPattern::Suffix(v)) if !v.is_empty() => {
                StringMatch::Suffix { value: bytes(v), ignore_case }
            }
            Some(MatchPattern::Contains(v)) if !v.is_empty() => {
                StringMatch::Contains { value: bytes(v), ignore_case }
            }
            Some(MatchPattern::Prefix(_) | MatchPattern::Suffix(_) | MatchPattern::Contains(_)) => {
                return Err(FieldError::invalid("", "must not be empty"));
            }
            Some(MatchPattern::SafeRegex(r)) => StringMatch::Regex(full_regex(r, "safe_regex")?),
            Some(MatchPattern::Custom(_)) => return Err(FieldError::unsupported("custom")),
            None => {
                return Err(FieldError::invalid(
                    "match_pattern",
                    "one of exact, prefix, suffix, contains, safe_regex is required",
                ));
            }
        })
    }

    pub fn matches(&self, v: &[u8]) -> bool {
        match self {
            StringMatch::Exact { value, ignore_case: false } => v == &value[..],
            StringMatch::Exact { value, ignore_case: true } => v.eq_ignore_ascii_case(value),
            StringMatch::Prefix { value, ignore_case } => {
                v.len() >= value.len() && eq(&v[..value.len()], value, *ignore_case)
            }
            StringMatch::Suffix { value, ignore_case } => {
                v.len() >= value.len() && eq(&v[v.len() - value.len()..], value, *ignore_case)
            }
            StringMatch::Contains { value, ignore_case } => {
                v.len() >= value.len() && v.windows(value.len()).any(|w| eq(w, value, *ignore_case))
            }
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

fn eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b }
}

/// Where a header matcher reads its value. Envoy's pseudo-headers are parts of the
/// request line in `http::request::Parts`.
#[derive(Debug, Clone)]
pub(crate) enum HeaderSource {
    Method,
    Path,
    Authority,
    Scheme,
    Named(HeaderName),
}

impl HeaderSource {
    pub(crate) fn parse(name: &str) -> FieldResult<HeaderSource> {
        Ok(match name.to_ascii_lowercase().as_str() {
            ":method" => HeaderSource::Method,
            ":path" => HeaderSource::Path,
            // Envoy keeps the Host header as `:authority`, and a matcher on `host` reads it.
            ":authority" | "host" => HeaderSource::Authority,
            ":scheme" => HeaderSource::Scheme,
            n if n.starts_with(':') => return Err(FieldError::unsupported(format!("name {name:?}"))),
            n => HeaderSource::Named(
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| FieldError::invalid("name", format!("{name:?} is not a header name")))?,
            ),
        })
    }

    /// Whether any of the request's values satisfies `f`; None when the header is absent.
    /// Envoy (1.40, checked by waypoint/tests/route_vs_envoy.rs) matches a header with
    /// several values when one of them matches, not their ","-joined form.
    pub(crate) fn any_value(&self, req: &RequestParts<'_>, mut f: impl FnMut(&[u8]) -> bool) -> Option<bool> {
        let parts = req.parts;
        let one = |v: Option<&[u8]>, f: &mut dyn FnMut(&[u8]) -> bool| v.map(f);
        match self {
            HeaderSource::Method => one(Some(parts.method.as_str().as_bytes()), &mut f),
            HeaderSource::Path => one(parts.uri.path_and_query().map(|p| p.as_str().as_bytes()), &mut f),
            HeaderSource::Authority => one(req.authority().map(str::as_bytes), &mut f),
            HeaderSource::Scheme => one(Some(req.scheme().as_bytes()), &mut f),
            HeaderSource::Named(name) => {
                let mut values = parts.headers.get_all(name).into_iter().peekable();
                values.peek()?;
                Some(values.any(|v| f(v.as_bytes())))
            }
        }
    }
}

#[derive(Debug, Clone)]
enum ValueMatch {
    String(StringMatch),
    /// `[start, end)` on the value read as a signed integer.
    Range {
        start: i64,
        end: i64,
    },
    Present(bool),
}

/// envoy.config.route.v3.HeaderMatcher.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    source: HeaderSource,
    value: ValueMatch,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatch {
    #[expect(
        deprecated,
        reason = "the legacy exact/prefix/suffix/contains/regex fields are still Envoy's API"
    )]
    pub(crate) fn compile(m: &HeaderMatcher) -> FieldResult<HeaderMatch> {
        use header_matcher::HeaderMatchSpecifier as S;
        let source = HeaderSource::parse(&m.name)?;
        let legacy = |value: &String, make: fn(Box<[u8]>) -> StringMatch| {
            ValueMatch::String(make(value.as_bytes().to_vec().into_boxed_slice()))
        };
        let value = match &m.header_match_specifier {
            Some(S::ExactMatch(v)) => legacy(v, |value| StringMatch::Exact { value, ignore_case: false }),
            Some(S::PrefixMatch(v)) => legacy(v, |value| StringMatch::Prefix { value, ignore_case: false }),
            Some(S::SuffixMatch(v)) => legacy(v, |value| StringMatch::Suffix { value, ignore_case: false }),
            Some(S::ContainsMatch(v)) => {
                legacy(v, |value| StringMatch::Contains { value, ignore_case: false })
            }
            Some(S::SafeRegexMatch(r)) => {
                ValueMatch::String(StringMatch::Regex(full_regex(r, "safe_regex_match")?))
            }
            Some(S::RangeMatch(r)) => ValueMatch::Range { start: r.start, end: r.end },
            Some(S::PresentMatch(p)) => ValueMatch::Present(*p),
            Some(S::StringMatch(s)) => {
                ValueMatch::String(StringMatch::compile(s).map_err(|e| e.within("string_match"))?)
            }
            // No specifier: the header must be present (Envoy's HeaderDataPresentMatch).
            None => ValueMatch::Present(true),
        };
        Ok(HeaderMatch {
            source,
            value,
            invert: m.invert_match,
            missing_as_empty: m.treat_missing_header_as_empty,
        })
    }

    /// Envoy's `HeaderDataBaseImpl::matchesHeaders`: a missing header matches only a
    /// present_match (false, or true inverted) unless treat_missing_header_as_empty;
    /// otherwise the value match, inverted by invert_match.
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        let hit = match self.source.any_value(req, |v| self.value_matches(v)) {
            Some(hit) => hit,
            None if self.missing_as_empty => self.value_matches(b""),
            None => return matches!(self.value, ValueMatch::Present(p) if p == self.invert),
        };
        hit != self.invert
    }

    fn value_matches(&self, value: &[u8]) -> bool {
        match &self.value {
            ValueMatch::String(s) => s.matches(value),
            ValueMatch::Range { start, end } => std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim_ascii().strip_prefix('+').unwrap_or(s.trim_ascii()).parse::<i64>().ok())
                .is_some_and(|n| *start <= n && n < *end),
            ValueMatch::Present(p) => *p,
        }
    }
}

/// envoy.config.route.v3.QueryParameterMatcher on the first value of the parameter in
/// the raw (not percent-decoded) query, as Envoy's `parseQueryString`.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    name: Box<[u8]>,
    value: Option<StringMatch>,
    present: Option<bool>,
}

impl QueryMatch {
    pub(crate) fn compile(m: &QueryParameterMatcher) -> FieldResult<QueryMatch> {
        use query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let (value, present) = match &m.query_parameter_match_specifier {
            Some(S::StringMatch(s)) => {
                (Some(StringMatch::compile(s).map_err(|e| e.within("string_match"))?), None)
            }
            Some(S::PresentMatch(p)) => (None, Some(*p)),
            None => (None, None),
        };
        if m.name.is_empty() {
            return Err(FieldError::invalid("name", "must not be empty"));
        }
        Ok(QueryMatch { name: m.name.as_bytes().into(), value, present })
    }

    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(value) = query.and_then(|q| first_param(q.as_bytes(), &self.name)) else {
            return self.present == Some(false);
        };
        match (&self.present, &self.value) {
            (Some(p), _) => *p,
            (None, Some(m)) => m.matches(value),
            (None, None) => true,
        }
    }
}

/// The value of the first `name` or `name=value` in a query string ("" without `=`).
pub(crate) fn first_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    let query = query.split(|b| *b == b'#').next().unwrap_or(query);
    query.split(|b| *b == b'&').find_map(|param| match param.iter().position(|b| *b == b'=') {
        Some(eq) if &param[..eq] == name => Some(&param[eq + 1..]),
        None if param == name => Some(&b""[..]),
        _ => None,
    })
}

/// envoy.type.v3.FractionalPercent, sampled as Envoy's `evaluateFractionalPercent`:
/// `random % denominator < numerator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    pub const ALWAYS: Fraction = Fraction { numerator: 100, denominator: 100 };

    pub(crate) fn compile(p: &FractionalPercent) -> FieldResult<Fraction> {
        let denominator = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::Hundred) => 100,
            Ok(DenominatorType::TenThousand) => 10_000,
            Ok(DenominatorType::Million) => 1_000_000,
            Err(_) => {
                return Err(FieldError::invalid(
                    "denominator",
                    format!("unknown denominator {}", p.denominator),
                ));
            }
        };
        Ok(Fraction { numerator: p.numerator, denominator })
    }

    /// Whether a request with this random value falls in the fraction.
    pub fn sample(&self, random: u64) -> bool {
        random % u64::from(self.denominator) < u64::from(self.numerator)
    }
}

/// A RouteMatch's path specifier.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    Prefix(Box<[u8]>),
    Exact(Box<[u8]>),
    Regex(regex::bytes::Regex),
    /// The prefix must be followed by `/` or end the path.
    SeparatedPrefix(Box<[u8]>),
    /// CONNECT requests (which have no path).
    Connect,
}

impl PathMatch {
    /// Bytes of the path the route matched, where a prefix rewrite replaces them: the
    /// prefix for prefix routes, the whole path otherwise.
    pub(crate) fn matched_len(&self) -> Option<usize> {
        match self {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => Some(p.len()),
            PathMatch::Regex(_) | PathMatch::Connect => None,
        }
    }
}

/// envoy.config.route.v3.RouteMatch, compiled.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub(crate) path: PathMatch,
    case_sensitive: bool,
    runtime_fraction: Option<Fraction>,
    headers: Box<[HeaderMatch]>,
    query: Box<[QueryMatch]>,
    grpc: bool,
    filter_state: Box<[super::source::SourceMatch]>,
    /// From the route's `weft.source` metadata (see `source`).
    pub(crate) source: Option<super::source::SourceConditions>,
}

impl RouteMatch {
    pub(crate) fn compile(
        m: &envoy_types::pb::envoy::config::route::v3::RouteMatch,
    ) -> FieldResult<RouteMatch> {
        use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier as P;
        let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
        let fold = |s: &String| -> Box<[u8]> {
            if case_sensitive { s.as_bytes().into() } else { s.to_ascii_lowercase().into_bytes().into() }
        };
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(r)) => PathMatch::Regex(full_regex(r, "safe_regex")?),
            Some(P::PathSeparatedPrefix(p)) => {
                // Proto validation: `^[^?#]+[^?#/]$`.
                if p.is_empty() || p.ends_with('/') || p.contains(['?', '#']) {
                    return Err(FieldError::invalid(
                        "path_separated_prefix",
                        format!("{p:?}: must not be empty, end with '/' or contain '?' or '#'"),
                    ));
                }
                PathMatch::SeparatedPrefix(fold(p))
            }
            Some(P::ConnectMatcher(_)) => PathMatch::Connect,
            Some(P::PathMatchPolicy(_)) => return Err(FieldError::unsupported("path_match_policy")),
            None => return Err(FieldError::invalid("path_specifier", "a path specifier is required")),
        };
        let runtime_fraction = match &m.runtime_fraction {
            // A runtime key would let Envoy's runtime override the default; there is no
            // runtime here, so the default value is the fraction.
            Some(r) => Some(
                Fraction::compile(&r.default_value.unwrap_or_default())
                    .map_err(|e| e.within("runtime_fraction"))?,
            ),
            None => None,
        };
        // The `:weft-source` matcher is for stock Envoy only (see `source`).
        let headers = m
            .headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name != super::source::SOURCE_HEADER)
            .map(|(i, h)| HeaderMatch::compile(h).map_err(|e| e.within(&format!("headers[{i}]"))))
            .collect::<FieldResult<_>>()?;
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| QueryMatch::compile(q).map_err(|e| e.within(&format!("query_parameters[{i}]"))))
            .collect::<FieldResult<_>>()?;
        let filter_state = m
            .filter_state
            .iter()
            .enumerate()
            .map(|(i, f)| {
                super::source::SourceMatch::compile(f).map_err(|e| e.within(&format!("filter_state[{i}]")))
            })
            .collect::<FieldResult<_>>()?;
        if !m.cookies.is_empty() {
            return Err(FieldError::unsupported("cookies"));
        }
        if m.tls_context.is_some() {
            return Err(FieldError::unsupported("tls_context"));
        }
        if !m.dynamic_metadata.is_empty() {
            return Err(FieldError::unsupported("dynamic_metadata"));
        }
        Ok(RouteMatch {
            path,
            case_sensitive,
            runtime_fraction,
            headers,
            query,
            grpc: m.grpc.is_some(),
            filter_state,
            source: None,
        })
    }

    /// Envoy's `RouteEntryImplBase::matchRoute` plus the path check of each route kind.
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        let uri = &req.parts.uri;
        let pathless = uri.path_and_query().is_none();
        let path_ok = match &self.path {
            PathMatch::Connect => req.parts.method == http::Method::CONNECT,
            // Only the CONNECT matcher takes requests without a path.
            _ if pathless => false,
            PathMatch::Prefix(p) => {
                let path = uri.path().as_bytes();
                path.len() >= p.len() && eq_folded(&path[..p.len()], p, self.case_sensitive)
            }
            PathMatch::Exact(p) => eq_folded(uri.path().as_bytes(), p, self.case_sensitive),
            PathMatch::Regex(r) => r.is_match(uri.path().as_bytes()),
            PathMatch::SeparatedPrefix(p) => {
                let path = uri.path().as_bytes();
                path.len() >= p.len()
                    && (path.len() == p.len() || path[p.len()] == b'/')
                    && eq_folded(&path[..p.len()], p, self.case_sensitive)
            }
        };
        path_ok
            && self.runtime_fraction.is_none_or(|f| f.sample(req.random))
            && self.headers.iter().all(|h| h.matches(req))
            && (self.query.is_empty() || self.query.iter().all(|q| q.matches(uri.query())))
            && (!self.grpc || is_grpc(req))
            && self.filter_state.iter().all(|f| f.matches(req))
            && self.source.as_ref().is_none_or(|s| s.matches(req))
    }
}

/// `a` against a pattern already lowercased when matching ignores case.
fn eq_folded(a: &[u8], pattern: &[u8], case_sensitive: bool) -> bool {
    if case_sensitive {
        a == pattern
    } else {
        a.len() == pattern.len() && a.iter().zip(pattern).all(|(x, y)| x.to_ascii_lowercase() == *y)
    }
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: a path and content-type
/// `application/grpc`, or `application/grpc+…` / `application/grpc;…`.
fn is_grpc(req: &RequestParts<'_>) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    req.parts.uri.path_and_query().is_some()
        && req.parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|ct| {
            let ct = ct.as_bytes();
            ct == GRPC || (ct.starts_with(GRPC) && matches!(ct[GRPC.len()], b'+' | b';'))
        })
}
