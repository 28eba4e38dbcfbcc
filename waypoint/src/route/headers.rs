//! Header mutations (`*_headers_to_add` / `*_headers_to_remove`) with Envoy's
//! `HeaderParser::evaluateHeaders` semantics: removals first; then every value is formatted
//! and every append_action condition checked against the headers as they are after the
//! removals; then overwrites; then appends. A value that formats to "" is dropped unless
//! keep_empty_value.
//!
//! Values may use Envoy's substitution formatters; weft-waypoint knows the few below and
//! refuses the others (`%%` is a literal `%`):
//! `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` (and their
//! `DOWNSTREAM_DIRECT_…` twins: there is no proxy protocol in front of a waypoint),
//! `%DOWNSTREAM_PEER_URI_SAN%` and `%REQ(name)%`.

use super::error::{FieldError, FieldResult};
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;

/// What a formatter may read.
#[derive(Debug, Clone, Copy)]
pub struct FormatContext<'a> {
    pub downstream: SocketAddr,
    pub peer_identity: Option<&'a str>,
    /// The request's headers (for `%REQ(…)%`, also when mutating response headers).
    pub request_headers: Option<&'a HeaderMap>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    RemoteAddress,
    RemoteAddressWithoutPort,
    PeerUriSan,
    Req(HeaderName),
}

/// A header value: a literal, ready to insert, or pieces to format per request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Literal(HeaderValue),
    Format(Box<[Piece]>),
}

fn parse_format(s: &str) -> FieldResult<Value> {
    if !s.contains('%') {
        let v = HeaderValue::from_str(s)
            .map_err(|_| FieldError::invalid("value", format!("{s:?} is not a header value")))?;
        return Ok(Value::Literal(v));
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            literal.push('%');
            rest = r;
            continue;
        }
        let end = rest.find('%').ok_or_else(|| {
            FieldError::invalid("value", format!("{s:?}: unterminated variable expression"))
        })?;
        let command = &rest[..end];
        rest = &rest[end + 1..];
        let piece = match command {
            "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Piece::RemoteAddress,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
                Piece::RemoteAddressWithoutPort
            }
            "DOWNSTREAM_PEER_URI_SAN" => Piece::PeerUriSan,
            c if c.starts_with("REQ(") && c.ends_with(')') => {
                let name = &c[4..c.len() - 1];
                if name.contains('?') || name.starts_with(':') {
                    return Err(FieldError::unsupported(format!("value {s:?}: %{c}%")));
                }
                Piece::Req(HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    FieldError::invalid("value", format!("{s:?}: {name:?} is not a header name"))
                })?)
            }
            c => return Err(FieldError::unsupported(format!("value {s:?}: formatter %{c}%"))),
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
        }
        pieces.push(piece);
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal.into()));
    }
    if let [Piece::Literal(l)] = &pieces[..] {
        return parse_format(l)
            .map_err(|_| FieldError::invalid("value", format!("{s:?} is not a header value")));
    }
    Ok(Value::Format(pieces.into()))
}

impl Value {
    fn format(&self, ctx: &FormatContext<'_>) -> Option<HeaderValue> {
        use std::fmt::Write;
        let pieces = match self {
            Value::Literal(v) => return Some(v.clone()),
            Value::Format(p) => p,
        };
        let mut out = String::new();
        for p in pieces.iter() {
            match p {
                Piece::Literal(l) => out.push_str(l),
                Piece::RemoteAddress => _ = write!(out, "{}", ctx.downstream),
                Piece::RemoteAddressWithoutPort => _ = write!(out, "{}", ctx.downstream.ip()),
                Piece::PeerUriSan => out.push_str(ctx.peer_identity.unwrap_or("")),
                Piece::Req(name) => {
                    if let Some(v) =
                        ctx.request_headers.and_then(|h| h.get(name)).and_then(|v| v.to_str().ok())
                    {
                        out.push_str(v);
                    }
                }
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Add {
    name: HeaderName,
    value: Value,
    action: AppendAction,
    keep_empty: bool,
}

/// One level's header mutations (a route, a virtual host, a weighted cluster or the route
/// configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    remove: Box<[HeaderName]>,
    add: Box<[Add]>,
    formatted: bool,
}

/// Envoy's `HeaderUtility::isModifiableHeader`: no pseudo-headers, no Host.
fn modifiable(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(':') && !name.eq_ignore_ascii_case("host")
}

impl HeaderMutations {
    pub(crate) fn compile(
        add: &[HeaderValueOption],
        remove: &[String],
        what: &str,
    ) -> FieldResult<HeaderMutations> {
        let remove = remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let field = format!("{what}_headers_to_remove[{i}]");
                if !modifiable(name) {
                    return Err(FieldError::invalid(
                        field,
                        format!("{name:?}: ':'-prefixed or host headers may not be removed"),
                    ));
                }
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| FieldError::invalid(field, format!("{name:?} is not a header name")))
            })
            .collect::<FieldResult<_>>()?;
        let add: Box<[Add]> = add
            .iter()
            .enumerate()
            .map(|(i, o)| compile_add(o).map_err(|e| e.within(&format!("{what}_headers_to_add[{i}]"))))
            .collect::<FieldResult<_>>()?;
        let formatted = add.iter().any(|a| matches!(a.value, Value::Format(_)));
        Ok(HeaderMutations { remove, add, formatted })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Applies the mutations to `headers`. Literal values are shared, not copied; only
    /// formatted values allocate.
    pub fn apply(&self, headers: &mut HeaderMap, ctx: &FormatContext<'_>) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        if self.add.is_empty() {
            return;
        }
        // Envoy formats every value and checks every condition before changing anything.
        let formatted: Vec<Option<HeaderValue>> =
            if self.formatted { self.add.iter().map(|a| a.value.format(ctx)).collect() } else { Vec::new() };
        let value_of = |i: usize, a: &Add| -> Option<HeaderValue> {
            let v = match &a.value {
                Value::Literal(v) => v.clone(),
                Value::Format(_) => formatted[i].clone()?,
            };
            (a.keep_empty || !v.is_empty()).then_some(v)
        };
        let mut decisions = Decisions::new(self.add.len());
        for (i, a) in self.add.iter().enumerate() {
            let present = headers.contains_key(&a.name);
            let d = match a.action {
                AppendAction::AppendIfExistsOrAdd => Decision::Append,
                AppendAction::AddIfAbsent if !present => Decision::Append,
                AppendAction::AddIfAbsent => Decision::Skip,
                AppendAction::OverwriteIfExists if !present => Decision::Skip,
                AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => Decision::Overwrite,
            };
            decisions.set(i, d);
        }
        for (i, a) in self.add.iter().enumerate() {
            if decisions.get(i) == Decision::Overwrite
                && let Some(v) = value_of(i, a)
            {
                headers.insert(a.name.clone(), v);
            }
        }
        for (i, a) in self.add.iter().enumerate() {
            if decisions.get(i) == Decision::Append
                && let Some(v) = value_of(i, a)
            {
                headers.append(a.name.clone(), v);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Skip,
    Append,
    Overwrite,
}

/// Decisions for up to 32 entries in two words on the stack; more take a vector.
enum Decisions {
    Small(u64),
    Large(Vec<Decision>),
}

impl Decisions {
    fn new(n: usize) -> Decisions {
        if n <= 32 { Decisions::Small(0) } else { Decisions::Large(vec![Decision::Skip; n]) }
    }
    fn set(&mut self, i: usize, d: Decision) {
        match self {
            Decisions::Small(bits) => *bits |= (d as u64) << (2 * i),
            Decisions::Large(v) => v[i] = d,
        }
    }
    fn get(&self, i: usize) -> Decision {
        match self {
            Decisions::Small(bits) => match (bits >> (2 * i)) & 3 {
                1 => Decision::Append,
                2 => Decision::Overwrite,
                _ => Decision::Skip,
            },
            Decisions::Large(v) => v[i],
        }
    }
}

fn compile_add(o: &HeaderValueOption) -> FieldResult<Add> {
    let h = o.header.as_ref().ok_or_else(|| FieldError::invalid("header", "required"))?;
    if !modifiable(&h.key) {
        return Err(FieldError::invalid(
            "header.key",
            format!("{:?}: ':'-prefixed or host headers may not be modified", h.key),
        ));
    }
    let name = HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes())
        .map_err(|_| FieldError::invalid("header.key", format!("{:?} is not a header name", h.key)))?;
    let raw;
    let text = if h.raw_value.is_empty() {
        h.value.as_str()
    } else {
        if !h.value.is_empty() {
            return Err(FieldError::invalid("header", "only one of value and raw_value may be set"));
        }
        raw = String::from_utf8(h.raw_value.clone())
            .map_err(|_| FieldError::unsupported("header.raw_value (not UTF-8)"))?;
        raw.as_str()
    };
    let value = parse_format(text).map_err(|e| e.within("header"))?;
    #[expect(deprecated, reason = "the legacy `append` field still has a meaning Envoy honours")]
    let legacy = o.append;
    let action = match (legacy, HeaderAppendAction::try_from(o.append_action)) {
        (Some(_), Ok(a)) if a != HeaderAppendAction::AppendIfExistsOrAdd => {
            return Err(FieldError::invalid("append", "append and append_action are mutually exclusive"));
        }
        (Some(b), _) if b.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (_, Err(_)) => {
            return Err(FieldError::invalid("append_action", format!("unknown action {}", o.append_action)));
        }
    };
    Ok(Add { name, value, action, keep_empty: o.keep_empty_value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeaderValue;

    fn opt(k: &str, v: &str, a: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeaderValue { key: k.into(), value: v.into(), ..Default::default() }),
            append_action: a as i32,
            ..Default::default()
        }
    }

    fn ctx() -> FormatContext<'static> {
        FormatContext {
            downstream: "10.0.0.1:4242".parse().unwrap(),
            peer_identity: Some("spiffe://td/ns/a/sa/b"),
            request_headers: None,
        }
    }

    /// HeaderValueOption.append_action: each of the four actions, removal before addition,
    /// and ADD_IF_ABSENT / OVERWRITE_IF_EXISTS judged on the headers after removals.
    #[test]
    fn append_actions_follow_envoy() {
        use HeaderAppendAction::*;
        let m = HeaderMutations::compile(
            &[
                opt("a", "1", AppendIfExistsOrAdd),
                opt("b", "2", AddIfAbsent),
                opt("c", "3", OverwriteIfExistsOrAdd),
                opt("d", "4", OverwriteIfExists),
                opt("e", "5", OverwriteIfExists),
                opt("f", "6", AddIfAbsent),
            ],
            &["f".into()],
            "request",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [("a", "0"), ("b", "0"), ("c", "0"), ("c", "00"), ("d", "0"), ("f", "0")] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m.apply(&mut h, &ctx());
        let all = |k: &str| h.get_all(k).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all("a"), ["0", "1"]);
        assert_eq!(all("b"), ["0"]);
        assert_eq!(all("c"), ["3"]);
        assert_eq!(all("d"), ["4"]);
        assert!(all("e").is_empty());
        assert_eq!(all("f"), ["6"], "removed first, then added as absent");
    }

    /// HeaderValueOption.keep_empty_value: empty values are dropped unless kept; the
    /// legacy `append: false` overwrites.
    #[test]
    fn empty_values_and_legacy_append() {
        #[expect(deprecated, reason = "testing the legacy field")]
        let legacy = HeaderValueOption {
            header: Some(PbHeaderValue { key: "x".into(), value: "new".into(), ..Default::default() }),
            append: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        };
        let mut keep = opt("k", "", HeaderAppendAction::AppendIfExistsOrAdd);
        keep.keep_empty_value = true;
        let m = HeaderMutations::compile(
            &[legacy, opt("e", "", HeaderAppendAction::AppendIfExistsOrAdd), keep],
            &[],
            "request",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x", HeaderValue::from_static("old"));
        m.apply(&mut h, &ctx());
        assert_eq!(h.get("x").unwrap(), "new");
        assert!(!h.contains_key("e"));
        assert_eq!(h.get("k").unwrap(), "");
    }

    #[test]
    fn formatters_and_refusals() {
        let m = HeaderMutations::compile(
            &[opt(
                "x-src",
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %% %DOWNSTREAM_PEER_URI_SAN%",
                HeaderAppendAction::AppendIfExistsOrAdd,
            )],
            &[],
            "request",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        m.apply(&mut h, &ctx());
        assert_eq!(h.get("x-src").unwrap(), "10.0.0.1 % spiffe://td/ns/a/sa/b");
        let err = HeaderMutations::compile(
            &[opt("x", "%START_TIME%", HeaderAppendAction::AppendIfExistsOrAdd)],
            &[],
            "request",
        )
        .unwrap_err();
        assert!(err.field.starts_with("request_headers_to_add[0].header"), "{err:?}");
        assert!(
            HeaderMutations::compile(
                &[opt(":path", "/", HeaderAppendAction::AppendIfExistsOrAdd)],
                &[],
                "request"
            )
            .is_err()
        );
        assert!(HeaderMutations::compile(&[], &["Host".into()], "request").is_err());
        assert!(
            HeaderMutations::compile(
                &[opt("x", "50%", HeaderAppendAction::AppendIfExistsOrAdd)],
                &[],
                "request"
            )
            .is_err()
        );
    }
}
