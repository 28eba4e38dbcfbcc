//! Path rewrites (RouteAction prefix_rewrite / regex_rewrite, and the same in
//! RedirectAction), as Envoy's `currentUrlPathAfterRewriteWithMatchedPath`: a prefix
//! rewrite replaces the part of the path the route matched (its prefix or exact path;
//! the whole path for a regex route) and keeps the rest and the query; a regex rewrite
//! replaces every match in the path without the query, then appends the query.

use super::error::{FieldError, FieldResult};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use http::{Uri, uri::PathAndQuery};

#[derive(Debug, Clone)]
pub enum Rewrite {
    Prefix {
        replacement: Box<str>,
        /// Bytes the route's path match covered; None: the whole path (regex routes).
        matched_len: Option<usize>,
    },
    Regex {
        pattern: regex::Regex,
        substitution: Box<str>,
    },
}

/// An RE2 substitution (`\1`, `\\`) as a `regex` replacement string (`${1}`, `$$`).
pub(crate) fn substitution(s: &str) -> FieldResult<Box<str>> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => out.push('\\'),
                other => {
                    return Err(FieldError::invalid(
                        "substitution",
                        format!(
                            "{s:?}: invalid rewrite pattern (\\{})",
                            other.map(String::from).unwrap_or_default()
                        ),
                    ));
                }
            },
            c => out.push(c),
        }
    }
    Ok(out.into())
}

impl Rewrite {
    pub(crate) fn regex(r: &RegexMatchAndSubstitute) -> FieldResult<Rewrite> {
        let pattern = r.pattern.as_ref().ok_or_else(|| FieldError::invalid("pattern", "required"))?;
        let mut pattern = super::matcher::search_regex(pattern, "pattern")?;
        let substitution = substitution(&r.substitution)?;
        // A substitution naming a group the pattern lacks: Envoy accepts the config and
        // RE2's GlobalReplace then replaces nothing (tests/refusals_vs_envoy.rs). A pattern
        // that never matches does the same here.
        let groups = r.substitution.split('\\').skip(1).filter_map(|s| s.chars().next()?.to_digit(10));
        if groups.max().is_some_and(|d| d as usize >= pattern.captures_len()) {
            pattern = regex::Regex::new(r"[^\s\S]").expect("a valid regex");
        }
        Ok(Rewrite::Regex { pattern, substitution })
    }

    /// The rewritten path and query of a request path (`/a/b?x=1`).
    pub fn path(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.find('?') {
            Some(q) => path_and_query.split_at(q),
            None => (path_and_query, ""),
        };
        match self {
            Rewrite::Prefix { replacement, matched_len } => {
                let cut = matched_len.unwrap_or(path.len()).min(path_and_query.len());
                let rest = path_and_query.get(cut..).unwrap_or("");
                let mut out = String::with_capacity(replacement.len() + rest.len());
                out.push_str(replacement);
                out.push_str(rest);
                out
            }
            Rewrite::Regex { pattern, substitution } => {
                let mut out = pattern.replace_all(path, &**substitution).into_owned();
                out.push_str(query);
                out
            }
        }
    }

    /// The request URI with its path rewritten (scheme and authority kept).
    pub fn apply(&self, uri: &Uri) -> Uri {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let mut new = self.path(pq);
        // Envoy sends what the rewrite produced; an origin-form request needs a leading
        // slash to be sent at all.
        if !new.starts_with('/') {
            new.insert(0, '/');
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = PathAndQuery::try_from(new).ok().or(parts.path_and_query);
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

    fn regex(p: &str, s: &str) -> Rewrite {
        Rewrite::regex(&RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher { regex: p.into(), ..Default::default() }),
            substitution: s.into(),
        })
        .unwrap()
    }

    /// RouteAction.prefix_rewrite: "/prefix" rewritten to "/" turns /prefix/etc into //etc
    /// (Envoy's documented pitfall) and keeps the query.
    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix() {
        let r = Rewrite::Prefix { replacement: "/".into(), matched_len: Some("/prefix".len()) };
        assert_eq!(r.path("/prefix/etc?x=1"), "//etc?x=1");
        let r = Rewrite::Prefix { replacement: "/v2".into(), matched_len: Some("/v1".len()) };
        assert_eq!(r.apply(&"http://h/v1/a?q".parse().unwrap()).to_string(), "http://h/v2/a?q");
        // A regex route's match is the whole path; the query stays.
        let r = Rewrite::Prefix { replacement: "/x".into(), matched_len: None };
        assert_eq!(r.path("/a/b?q=1"), "/x?q=1");
    }

    /// RouteAction.regex_rewrite examples from the Envoy docs.
    #[test]
    fn regex_rewrite_examples_from_the_docs() {
        let r = regex("^/service/([^/]+)(/.*)$", "\\2/instance/\\1");
        assert_eq!(r.path("/service/foo/v1/api"), "/v1/api/instance/foo");
        let r = regex("one", "two");
        assert_eq!(r.path("/xxx/one/yyy/one/zzz?one"), "/xxx/two/yyy/two/zzz?one");
        let r = regex("^(.*?)one(.*)$", "\\1two\\2");
        assert_eq!(r.path("/xxx/one/yyy/one/zzz"), "/xxx/two/yyy/one/zzz");
        let r = regex("(?i)/xxx/", "/yyy/");
        assert_eq!(r.path("/aaa/XxX/bbb"), "/aaa/yyy/bbb");
        // A missing group: RE2 replaces nothing.
        let r = regex("a", "\\1");
        assert_eq!(r.path("/aaa?a"), "/aaa?a");
    }
}
