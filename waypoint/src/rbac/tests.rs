//! One test per matcher kind, on hand-built protos: the verdicts Envoy's RBAC engine gives.

use super::*;
use envoy_types::pb::{
    envoy::{
        config::route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
        r#type::{
            matcher::v3::{FilterStateMatcher, RegexMatcher, StringMatcher, string_matcher::MatchPattern},
            v3::Int32Range,
        },
    },
    google::protobuf::UInt32Value,
};
use std::collections::HashMap;

const CLIENT: &str = "spiffe://cluster.local/ns/bookinfo/sa/productpage";

fn exact(v: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(MatchPattern::Exact(v.into())), ignore_case: false }
}

fn prefix(v: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(MatchPattern::Prefix(v.into())), ignore_case: false }
}

fn perm(rule: permission::Rule) -> pb::Permission {
    pb::Permission { rule: Some(rule) }
}

fn id(identifier: principal::Identifier) -> pb::Principal {
    pb::Principal { identifier: Some(identifier) }
}

fn any_id() -> pb::Principal {
    id(principal::Identifier::Any(true))
}

fn any_perm() -> pb::Permission {
    perm(permission::Rule::Any(true))
}

fn path(m: StringMatcher) -> pb::Permission {
    perm(permission::Rule::UrlPath(PathMatcher { rule: Some(path_matcher::Rule::Path(m)) }))
}

fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}

fn cidr(ip: &str, len: u32) -> CidrRange {
    CidrRange { address_prefix: ip.into(), prefix_len: Some(UInt32Value { value: len }) }
}

fn peer(m: StringMatcher) -> pb::Principal {
    id(principal::Identifier::FilterState(FilterStateMatcher {
        key: PEER_PRINCIPAL_KEY.into(),
        matcher: Some(filter_state_matcher::Matcher::StringMatch(m)),
    }))
}

fn filter(action: PbAction, policies: Vec<(&str, Vec<pb::Permission>, Vec<pb::Principal>)>) -> Rbac {
    let policies: HashMap<String, pb::Policy> = policies
        .into_iter()
        .map(|(n, permissions, principals)| {
            (n.to_owned(), pb::Policy { permissions, principals, ..Default::default() })
        })
        .collect();
    Rbac::compile(&RbacFilter {
        rules: Some(pb::Rbac { action: action as i32, policies, ..Default::default() }),
        ..Default::default()
    })
    .expect("compiles")
}

/// A request from CLIENT at 10.0.0.5 to the VIP 10.96.0.10:9080.
struct Req {
    parts: http::request::Parts,
    identity: Option<&'static str>,
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Req {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Req { parts: b.body(()).unwrap().into_parts().0, identity: Some(CLIENT) }
}

impl Req {
    fn verdict(&self, rbac: &Rbac) -> Verdict {
        let mut parts = RequestParts::new(&self.parts, "10.0.0.5:40000".parse().unwrap());
        parts.identity = self.identity;
        rbac.evaluate(&Subject { req: &parts, destination: "10.96.0.10:9080".parse().unwrap() })
    }

    fn allowed(&self, rbac: &Rbac) -> bool {
        self.verdict(rbac) == Verdict::Allowed
    }
}

#[test]
fn allow_passes_only_what_a_policy_matches_and_deny_names_the_policy() {
    let allow = filter(PbAction::Allow, vec![("p", vec![path(prefix("/public"))], vec![any_id()])]);
    assert!(req("GET", "/public/x", &[]).allowed(&allow));
    assert_eq!(req("GET", "/private", &[]).verdict(&allow), Verdict::Denied(None));
    let deny = filter(
        PbAction::Deny,
        vec![
            ("b", vec![path(exact("/admin"))], vec![any_id()]),
            ("a", vec![any_perm()], vec![id(principal::Identifier::Authenticated(Default::default()))]),
        ],
    );
    assert_eq!(req("GET", "/admin", &[]).verdict(&deny), Verdict::Denied(Some("b".into())));
    assert!(req("GET", "/", &[]).allowed(&deny), "authenticated never matches on the internal connection");
    let no_policies = filter(PbAction::Allow, vec![]);
    assert!(!req("GET", "/", &[]).allowed(&no_policies), "an ALLOW filter without policies allows nothing");
    let log = filter(PbAction::Log, vec![("p", vec![any_perm()], vec![any_id()])]);
    assert!(req("GET", "/", &[]).allowed(&log));
    assert!(req("GET", "/", &[]).allowed(&Rbac::compile(&RbacFilter::default()).unwrap()), "no rules");
}

#[test]
fn url_path_ignores_the_query_and_header_path_does_not() {
    let p = filter(PbAction::Allow, vec![("p", vec![path(exact("/a"))], vec![any_id()])]);
    assert!(req("GET", "/a?x=1", &[]).allowed(&p));
    let h = filter(
        PbAction::Allow,
        vec![("p", vec![perm(permission::Rule::Header(header(":path", exact("/a"))))], vec![any_id()])],
    );
    assert!(!req("GET", "/a?x=1", &[]).allowed(&h));
    assert!(req("GET", "/a", &[]).allowed(&h));
}

#[test]
fn method_and_headers() {
    let m = filter(
        PbAction::Allow,
        vec![(
            "p",
            vec![perm(permission::Rule::Header(header(":method", exact("GET"))))],
            vec![id(principal::Identifier::Header(header("x-user", prefix("jas"))))],
        )],
    );
    assert!(req("GET", "/", &[("x-user", "jason")]).allowed(&m));
    assert!(!req("POST", "/", &[("x-user", "jason")]).allowed(&m));
    assert!(!req("GET", "/", &[]).allowed(&m), "a missing header matches no string");
}

#[test]
fn combinators() {
    let and_not = filter(
        PbAction::Allow,
        vec![(
            "p",
            vec![perm(permission::Rule::AndRules(permission::Set {
                rules: vec![
                    path(prefix("/api")),
                    perm(permission::Rule::NotRule(Box::new(path(prefix("/api/admin"))))),
                ],
            }))],
            vec![id(principal::Identifier::OrIds(principal::Set {
                ids: vec![peer(exact("spiffe://other")), peer(exact(CLIENT))],
            }))],
        )],
    );
    assert!(req("GET", "/api/x", &[]).allowed(&and_not));
    assert!(!req("GET", "/api/admin/x", &[]).allowed(&and_not));
    let not_id = filter(
        PbAction::Allow,
        vec![(
            "p",
            vec![perm(permission::Rule::OrRules(permission::Set {
                rules: vec![path(exact("/x")), any_perm()],
            }))],
            vec![id(principal::Identifier::NotId(Box::new(peer(exact(CLIENT)))))],
        )],
    );
    assert!(!req("GET", "/", &[]).allowed(&not_id));
    let and_ids = filter(
        PbAction::Allow,
        vec![(
            "p",
            vec![any_perm()],
            vec![id(principal::Identifier::AndIds(principal::Set {
                ids: vec![any_id(), peer(prefix("spiffe://"))],
            }))],
        )],
    );
    assert!(req("GET", "/", &[]).allowed(&and_ids));
}

#[test]
fn peer_principal_and_namespace_regex() {
    let ns = filter(
        PbAction::Allow,
        vec![(
            "p",
            vec![any_perm()],
            vec![peer(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: ".*/ns/bookinfo/.*".into(),
                    ..Default::default()
                })),
                ignore_case: false,
            })],
        )],
    );
    assert!(req("GET", "/", &[]).allowed(&ns));
    let mut other = req("GET", "/", &[]);
    other.identity = Some("spiffe://cluster.local/ns/other/sa/x");
    assert!(!other.allowed(&ns));
    other.identity = None;
    assert!(!other.allowed(&ns), "no identity: the filter state is absent, no match");
}

#[test]
fn addresses_and_ports() {
    let ip = |i: principal::Identifier| filter(PbAction::Allow, vec![("p", vec![any_perm()], vec![id(i)])]);
    assert!(req("GET", "/", &[]).allowed(&ip(principal::Identifier::DirectRemoteIp(cidr("10.0.0.0", 24)))));
    assert!(req("GET", "/", &[]).allowed(&ip(principal::Identifier::RemoteIp(cidr("10.0.0.5", 32)))));
    assert!(!req("GET", "/", &[]).allowed(&ip(principal::Identifier::RemoteIp(cidr("10.0.1.0", 24)))));
    assert!(!req("GET", "/", &[]).allowed(&ip(principal::Identifier::RemoteIp(cidr("::", 0)))), "family");
    let to = |r: permission::Rule| filter(PbAction::Allow, vec![("p", vec![perm(r)], vec![any_id()])]);
    assert!(req("GET", "/", &[]).allowed(&to(permission::Rule::DestinationPort(9080))));
    assert!(!req("GET", "/", &[]).allowed(&to(permission::Rule::DestinationPort(80))));
    assert!(req("GET", "/", &[]).allowed(&to(permission::Rule::DestinationIp(cidr("10.96.0.0", 16)))));
    assert!(
        req("GET", "/", &[])
            .allowed(&to(permission::Rule::DestinationPortRange(Int32Range { start: 9000, end: 9081 })))
    );
    assert!(
        !req("GET", "/", &[])
            .allowed(&to(permission::Rule::DestinationPortRange(Int32Range { start: 9000, end: 9080 })))
    );
}

#[test]
fn what_cannot_be_evaluated_is_refused_by_field() {
    let compile = |p: pb::Principal| {
        Rbac::compile(&RbacFilter {
            rules: Some(pb::Rbac {
                policies: HashMap::from([(
                    "pol".to_owned(),
                    pb::Policy { permissions: vec![any_perm()], principals: vec![p], ..Default::default() },
                )]),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let e = compile(id(principal::Identifier::FilterState(FilterStateMatcher {
        key: "other.key".into(),
        matcher: Some(filter_state_matcher::Matcher::StringMatch(exact("x"))),
    })))
    .unwrap_err();
    assert_eq!(e.field, "rules.policies[\"pol\"].principals[0].filter_state.key");
    let e = compile(id(principal::Identifier::Custom(Default::default()))).unwrap_err();
    assert_eq!(e.field, "rules.policies[\"pol\"].principals[0].custom");
    let e = compile(id(principal::Identifier::RemoteIp(cidr("10.0.0.0", 33)))).unwrap_err();
    assert_eq!(e.field, "rules.policies[\"pol\"].principals[0].remote_ip.prefix_len");
}
