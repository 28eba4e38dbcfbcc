//! RBAC evaluation must not allocate for string, prefix and exact matches, header and path
//! matchers, principals (the peer identity filter state), addresses and ports: counted
//! with dhat's global allocator, in a test binary of its own.

use envoy_types::pb::envoy::{
    config::{
        core::v3::CidrRange,
        rbac::v3::{self as pb, Permission, Policy, Principal, permission, principal, rbac::Action},
        route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
    },
    extensions::filters::http::rbac::v3::Rbac as RbacFilter,
    r#type::matcher::v3::{
        FilterStateMatcher, PathMatcher, StringMatcher, filter_state_matcher, path_matcher,
        string_matcher::MatchPattern,
    },
};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::HashMap;
use weft_waypoint::{
    rbac::{Rbac, Subject, Verdict},
    route::RequestParts,
};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn string(p: MatchPattern) -> StringMatcher {
    StringMatcher { match_pattern: Some(p), ignore_case: false }
}

fn filter(action: Action, policy: Policy) -> Rbac {
    Rbac::compile(&RbacFilter {
        rules: Some(pb::Rbac {
            action: action as i32,
            policies: HashMap::from([("p".to_owned(), policy)]),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn evaluation_does_not_allocate() {
    let perm = |rule| Permission { rule: Some(rule) };
    let id = |identifier| Principal { identifier: Some(identifier) };
    let allow = filter(
        Action::Allow,
        Policy {
            permissions: vec![perm(permission::Rule::AndRules(permission::Set {
                rules: vec![
                    perm(permission::Rule::UrlPath(PathMatcher {
                        rule: Some(path_matcher::Rule::Path(string(MatchPattern::Prefix("/api".into())))),
                    })),
                    perm(permission::Rule::Header(HeaderMatcher {
                        name: ":method".into(),
                        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string(
                            MatchPattern::Exact("GET".into()),
                        ))),
                        ..Default::default()
                    })),
                    perm(permission::Rule::DestinationPort(80)),
                ],
            }))],
            principals: vec![id(principal::Identifier::AndIds(principal::Set {
                ids: vec![
                    id(principal::Identifier::FilterState(FilterStateMatcher {
                        key: "io.istio.peer_principal".into(),
                        matcher: Some(filter_state_matcher::Matcher::StringMatch(string(
                            MatchPattern::Exact("spiffe://cluster.local/ns/bookinfo/sa/productpage".into()),
                        ))),
                    })),
                    id(principal::Identifier::RemoteIp(CidrRange {
                        address_prefix: "10.0.0.0".into(),
                        prefix_len: Some(UInt32Value { value: 8 }),
                    })),
                    id(principal::Identifier::Header(HeaderMatcher {
                        name: "x-user".into(),
                        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string(
                            MatchPattern::Prefix("ja".into()),
                        ))),
                        ..Default::default()
                    })),
                ],
            }))],
            ..Default::default()
        },
    );
    let deny = filter(
        Action::Deny,
        Policy {
            permissions: vec![perm(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(string(MatchPattern::Exact("/admin".into())))),
            }))],
            principals: vec![id(principal::Identifier::Any(true))],
            ..Default::default()
        },
    );
    let (parts, ()) =
        http::Request::get("/api/x?y=1").header("x-user", "jason").body(()).unwrap().into_parts();
    let mut req = RequestParts::new(&parts, "10.1.2.3:5000".parse().unwrap());
    req.identity = Some("spiffe://cluster.local/ns/bookinfo/sa/productpage");
    let subject = Subject { req: &req, destination: "10.96.0.10:80".parse().unwrap() };

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().total_blocks;
    for _ in 0..100 {
        assert_eq!(deny.evaluate(&subject), Verdict::Allowed);
        assert_eq!(allow.evaluate(&subject), Verdict::Allowed);
    }
    let allocations = dhat::HeapStats::get().total_blocks - before;
    assert_eq!(allocations, 0, "RBAC evaluation allocated {allocations} blocks in 200 evaluations");
}
