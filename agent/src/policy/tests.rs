//! Istio's documented AuthorizationPolicy and PeerAuthentication semantics at L4, checked
//! on resources shaped as istiod (and weftd) send them.

use std::{net::IpAddr, sync::Arc};
use weft_hbone::Identity;
use weft_xds::istio::{
    security::{
        self, Authorization, Clause, Match, Rule, ServiceAccountMatch, StringMatch, string_match::MatchType,
    },
    workload::Extension,
};

use super::*;

// ---- building resources ----------------------------------------------------------------

fn policy(
    ns: &str,
    name: &str,
    scope: security::Scope,
    action: security::Action,
    rules: Vec<Rule>,
) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: ns.into(),
        scope: scope as i32,
        action: action as i32,
        rules,
        ..Default::default()
    }
}

fn allow(ns: &str, name: &str, rules: Vec<Rule>) -> Authorization {
    policy(ns, name, security::Scope::Namespace, security::Action::Allow, rules)
}

fn deny(ns: &str, name: &str, rules: Vec<Rule>) -> Authorization {
    policy(ns, name, security::Scope::Namespace, security::Action::Deny, rules)
}

/// A rule from its clauses, each clause a list of matches (OR).
fn rule(clauses: Vec<Vec<Match>>) -> Rule {
    Rule { clauses: clauses.into_iter().map(|matches| Clause { matches }).collect() }
}

/// A rule of one clause of one match: the common `from: [{source: …}]` shape.
fn when(m: Match) -> Rule {
    rule(vec![vec![m]])
}

fn exact(s: &str) -> StringMatch {
    StringMatch { match_type: Some(MatchType::Exact(s.into())) }
}

fn prefix(s: &str) -> StringMatch {
    StringMatch { match_type: Some(MatchType::Prefix(s.into())) }
}

fn suffix(s: &str) -> StringMatch {
    StringMatch { match_type: Some(MatchType::Suffix(s.into())) }
}

fn presence() -> StringMatch {
    StringMatch { match_type: Some(MatchType::Presence(())) }
}

fn block(cidr: &str) -> security::Address {
    let (ip, len) = cidr.split_once('/').unwrap();
    let ip: IpAddr = ip.parse().unwrap();
    let address = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    security::Address { address, length: len.parse().unwrap() }
}

fn store(policies: &[Authorization]) -> PolicyStore {
    let named: Vec<(String, &Authorization)> =
        policies.iter().map(|p| (format!("{}/{}", p.namespace, p.name), p)).collect();
    PolicyStore::from_resources(named.iter().map(|(n, p)| (n.as_str(), *p))).expect("valid policies")
}

// ---- connections -----------------------------------------------------------------------

const SRC: &str = "10.0.1.5";
const DST: &str = "10.0.2.7";

fn id(principal: &str) -> Identity {
    Identity::from_principal(principal).unwrap()
}

fn conn<'a>(identity: Option<&'a Identity>, src: &str, port: u16) -> ConnectionAttrs<'a> {
    ConnectionAttrs {
        source_identity: identity,
        source_ip: src.parse().unwrap(),
        destination_ip: DST.parse().unwrap(),
        destination_port: port,
    }
}

/// The decision for a connection to a workload of namespace `ns` listing `named`.
fn decide(store: &PolicyStore, c: &ConnectionAttrs<'_>, ns: &str, named: &[&str]) -> Decision {
    store.evaluate(c, &DestinationWorkload { namespace: ns, policies: named }).decision
}

fn denied_by(policy: &str, reason: DenyReason) -> Decision {
    Decision::Deny(Denial { policy: policy.into(), reason })
}

// ---- the decision ----------------------------------------------------------------------

#[test]
fn without_policies_everything_is_allowed() {
    let s = store(&[]);
    assert_eq!(decide(&s, &conn(None, SRC, 80), "shop", &[]), Decision::Allow);
}

#[test]
fn deny_is_checked_before_allow() {
    let bad = id("cluster.local/ns/shop/sa/bad");
    let good = id("cluster.local/ns/shop/sa/good");
    let s = store(&[
        allow("shop", "allow-all", vec![rule(vec![])]),
        deny(
            "shop",
            "deny-bad",
            vec![when(Match {
                principals: vec![exact("cluster.local/ns/shop/sa/bad")],
                ..Default::default()
            })],
        ),
    ]);
    assert_eq!(
        decide(&s, &conn(Some(&bad), SRC, 80), "shop", &[]),
        denied_by("shop/deny-bad", DenyReason::DenyPolicyMatched),
        "the ALLOW matches too, but DENY wins"
    );
    assert_eq!(decide(&s, &conn(Some(&good), SRC, 80), "shop", &[]), Decision::Allow);
}

#[test]
fn any_allow_policy_makes_what_it_does_not_match_denied() {
    let from_front = allow(
        "shop",
        "from-front",
        vec![when(Match { namespaces: vec![exact("front")], ..Default::default() })],
    );
    let s = store(&[from_front]);
    let front = id("cluster.local/ns/front/sa/web");
    let other = id("cluster.local/ns/other/sa/web");
    assert_eq!(decide(&s, &conn(Some(&front), SRC, 80), "shop", &[]), Decision::Allow);
    assert_eq!(
        decide(&s, &conn(Some(&other), SRC, 80), "shop", &[]),
        denied_by("shop/from-front", DenyReason::NoAllowMatched { allow_policies: 1 })
    );
    assert_eq!(
        decide(&s, &conn(None, SRC, 80), "shop", &[]),
        denied_by("shop/from-front", DenyReason::NoAllowMatched { allow_policies: 1 }),
        "plaintext has no namespace"
    );
    assert_eq!(
        decide(&s, &conn(Some(&other), SRC, 80), "elsewhere", &[]),
        Decision::Allow,
        "a namespace policy stays in its namespace"
    );

    // A second ALLOW policy widens what is allowed.
    let s = store(&[
        allow(
            "shop",
            "from-front",
            vec![when(Match { namespaces: vec![exact("front")], ..Default::default() })],
        ),
        allow(
            "shop",
            "from-other",
            vec![when(Match { namespaces: vec![exact("other")], ..Default::default() })],
        ),
    ]);
    assert_eq!(decide(&s, &conn(Some(&other), SRC, 80), "shop", &[]), Decision::Allow);
    let third = id("cluster.local/ns/third/sa/x");
    assert_eq!(
        decide(&s, &conn(Some(&third), SRC, 80), "shop", &[]),
        denied_by("shop/from-front", DenyReason::NoAllowMatched { allow_policies: 2 })
    );
}

#[test]
fn allow_nothing_and_allow_all_as_istio_documents_them() {
    let peer = id("cluster.local/ns/a/sa/b");
    // `spec: {}`: an ALLOW policy without rules matches nothing, so it denies everything.
    let nothing = store(&[allow("shop", "allow-nothing", vec![])]);
    for c in [conn(Some(&peer), SRC, 80), conn(None, SRC, 9090)] {
        assert_eq!(
            decide(&nothing, &c, "shop", &[]),
            denied_by("shop/allow-nothing", DenyReason::NoAllowMatched { allow_policies: 1 })
        );
    }
    // `rules: [{}]`: one rule without clauses matches everything.
    let all = store(&[allow("shop", "allow-all", vec![rule(vec![])])]);
    assert_eq!(decide(&all, &conn(None, SRC, 80), "shop", &[]), Decision::Allow);
    // DENY with `rules: [{}]` denies everything, whatever else allows.
    let deny_all = store(&[
        deny("shop", "deny-all", vec![rule(vec![])]),
        allow("shop", "allow-all", vec![rule(vec![])]),
    ]);
    assert_eq!(
        decide(&deny_all, &conn(Some(&peer), SRC, 80), "shop", &[]),
        denied_by("shop/deny-all", DenyReason::DenyPolicyMatched)
    );
}

/// ztunnel's structural edge cases (its `rbac_empty_policy` test), kept exactly.
#[test]
fn empty_matches_clauses_and_rules_behave_as_in_ztunnel() {
    let matches = |rules: Vec<Rule>| {
        let p = Policy::from_proto("ns/p", &allow("ns", "p", rules)).unwrap();
        p.matches(&conn(None, SRC, 80))
    };
    assert!(!matches(vec![rule(vec![vec![Match::default()]])]), "a match with no field set matches nothing");
    assert!(matches(vec![rule(vec![vec![]])]), "a clause without matches matches everything");
    assert!(matches(vec![rule(vec![])]), "a rule without clauses matches everything");
    assert!(!matches(vec![]), "a policy without rules matches nothing");
    // An empty match beside a real one is skipped, not a wildcard.
    let port_80 = Match { destination_ports: vec![80], ..Default::default() };
    let p = Policy::from_proto("ns/p", &allow("ns", "p", vec![rule(vec![vec![Match::default(), port_80]])]))
        .unwrap();
    assert!(p.matches(&conn(None, SRC, 80)));
    assert!(!p.matches(&conn(None, SRC, 81)));
}

// ---- sources ---------------------------------------------------------------------------

#[test]
fn principals_exact_prefix_suffix_presence_and_negation() {
    let cart = id("cluster.local/ns/shop/sa/cart");
    let web = id("cluster.local/ns/front/sa/web");
    let cases: [(&str, StringMatch, [bool; 3]); 4] = [
        // (what, match, [cart, web, plaintext])
        ("exact", exact("cluster.local/ns/shop/sa/cart"), [true, false, false]),
        ("prefix", prefix("cluster.local/ns/shop/"), [true, false, false]),
        ("suffix", suffix("/sa/web"), [false, true, false]),
        ("presence (*): any authenticated peer", presence(), [true, true, false]),
    ];
    for (what, sm, want) in cases {
        let p = Policy::from_proto(
            "ns/p",
            &allow("ns", "p", vec![when(Match { principals: vec![sm.clone()], ..Default::default() })]),
        )
        .unwrap();
        let got = [
            p.matches(&conn(Some(&cart), SRC, 80)),
            p.matches(&conn(Some(&web), SRC, 80)),
            p.matches(&conn(None, SRC, 80)),
        ];
        assert_eq!(got, want, "principals {what}");
        let p = Policy::from_proto(
            "ns/p",
            &allow("ns", "p", vec![when(Match { not_principals: vec![sm], ..Default::default() })]),
        )
        .unwrap();
        let got = [
            p.matches(&conn(Some(&cart), SRC, 80)),
            p.matches(&conn(Some(&web), SRC, 80)),
            p.matches(&conn(None, SRC, 80)),
        ];
        assert_eq!(got, want.map(|w| !w), "notPrincipals {what}");
    }
}

#[test]
fn namespaces_and_service_accounts_come_from_the_verified_identity() {
    let cart = id("cluster.local/ns/shop/sa/cart");
    let other_td = id("other.td/ns/shop/sa/cart");
    let web = id("cluster.local/ns/front/sa/web");
    let ns = Policy::from_proto(
        "ns/p",
        &allow(
            "ns",
            "p",
            vec![when(Match {
                namespaces: vec![exact("shop"), prefix("fr")],
                not_namespaces: vec![exact("front")],
                ..Default::default()
            })],
        ),
    )
    .unwrap();
    assert!(ns.matches(&conn(Some(&cart), SRC, 80)));
    assert!(!ns.matches(&conn(Some(&web), SRC, 80)), "the negative list wins over a positive prefix");
    assert!(!ns.matches(&conn(None, SRC, 80)));

    let sa = ServiceAccountMatch { namespace: "shop".into(), service_account: "cart".into() };
    let by_sa = Policy::from_proto(
        "ns/p",
        &allow("ns", "p", vec![when(Match { service_accounts: vec![sa.clone()], ..Default::default() })]),
    )
    .unwrap();
    assert!(by_sa.matches(&conn(Some(&cart), SRC, 80)));
    assert!(by_sa.matches(&conn(Some(&other_td), SRC, 80)), "trust domain is not compared, as in ztunnel");
    assert!(!by_sa.matches(&conn(Some(&web), SRC, 80)));
    assert!(!by_sa.matches(&conn(None, SRC, 80)));
    let not_sa = Policy::from_proto(
        "ns/p",
        &allow("ns", "p", vec![when(Match { not_service_accounts: vec![sa], ..Default::default() })]),
    )
    .unwrap();
    assert!(!not_sa.matches(&conn(Some(&cart), SRC, 80)));
    assert!(not_sa.matches(&conn(None, SRC, 80)));
}

#[test]
fn ip_blocks_match_source_and_destination_cidrs() {
    let p = Policy::from_proto(
        "ns/p",
        &allow(
            "ns",
            "p",
            vec![when(Match {
                source_ips: vec![block("10.0.0.0/16"), block("2001:db8::/32")],
                not_source_ips: vec![block("10.0.9.0/24")],
                ..Default::default()
            })],
        ),
    )
    .unwrap();
    assert!(p.matches(&conn(None, "10.0.1.5", 80)));
    assert!(!p.matches(&conn(None, "10.0.9.5", 80)), "notIpBlocks");
    assert!(!p.matches(&conn(None, "10.1.0.1", 80)));
    assert!(p.matches(&conn(None, "2001:db8:1::1", 80)));

    // A dual-stack socket reports an IPv4 peer as IPv4-mapped IPv6.
    let s = store(&[allow(
        "ns",
        "p",
        vec![when(Match { source_ips: vec![block("10.0.0.0/16")], ..Default::default() })],
    )]);
    assert_eq!(decide(&s, &conn(None, "::ffff:10.0.1.5", 80), "ns", &[]), Decision::Allow);

    let to_dst = Policy::from_proto(
        "ns/p",
        &allow(
            "ns",
            "p",
            vec![when(Match { destination_ips: vec![block(&format!("{DST}/32"))], ..Default::default() })],
        ),
    )
    .unwrap();
    assert!(to_dst.matches(&conn(None, SRC, 80)));
    let elsewhere = ConnectionAttrs { destination_ip: "10.0.2.8".parse().unwrap(), ..conn(None, SRC, 80) };
    assert!(!to_dst.matches(&elsewhere));
}

// ---- destinations and conditions --------------------------------------------------------

#[test]
fn ports_and_not_ports() {
    let p = Policy::from_proto(
        "ns/p",
        &allow("ns", "p", vec![when(Match { destination_ports: vec![80, 8080], ..Default::default() })]),
    )
    .unwrap();
    assert!(p.matches(&conn(None, SRC, 8080)));
    assert!(!p.matches(&conn(None, SRC, 9090)));
    let p = Policy::from_proto(
        "ns/p",
        &allow("ns", "p", vec![when(Match { not_destination_ports: vec![9090], ..Default::default() })]),
    )
    .unwrap();
    assert!(p.matches(&conn(None, SRC, 8080)));
    assert!(!p.matches(&conn(None, SRC, 9090)));
}

/// `from`, `to` and each `when` are clauses of one rule, all of which must hold; the
/// entries of one `from` (or `to`) are alternatives.
#[test]
fn from_to_and_when_clauses_all_hold() {
    let web = id("cluster.local/ns/front/sa/web");
    let api = id("cluster.local/ns/front/sa/api");
    let rules = vec![rule(vec![
        // to: [{operation: {ports: ["8080"]}}]
        vec![Match { destination_ports: vec![8080], ..Default::default() }],
        // from: [{source: {principals: [.../web]}}, {source: {ipBlocks: [10.0.1.0/24]}}]
        vec![
            Match { principals: vec![exact("cluster.local/ns/front/sa/web")], ..Default::default() },
            Match { source_ips: vec![block("10.0.1.0/24")], ..Default::default() },
        ],
        // when: [{key: source.namespace, values: [front]}]
        vec![Match { namespaces: vec![exact("front")], ..Default::default() }],
        // when: [{key: destination.port, notValues: ["8443"]}]
        vec![Match { not_destination_ports: vec![8443], ..Default::default() }],
    ])];
    let s = store(&[allow("shop", "p", rules)]);
    let no = |c| decide(&s, &c, "shop", &[]) != Decision::Allow;
    assert!(!no(conn(Some(&web), "10.9.9.9", 8080)), "web by principal");
    assert!(!no(conn(Some(&api), "10.0.1.9", 8080)), "api by source address");
    assert!(no(conn(Some(&api), "10.9.9.9", 8080)), "api from elsewhere");
    assert!(no(conn(Some(&web), "10.9.9.9", 9090)), "wrong port");
    assert!(no(conn(None, "10.0.1.9", 8080)), "plaintext fails source.namespace");
}

// ---- scopes ----------------------------------------------------------------------------

#[test]
fn policies_apply_by_scope() {
    let any = rule(vec![]);
    let s = store(&[
        policy(
            "istio-system",
            "mesh-deny-9000",
            security::Scope::Global,
            security::Action::Deny,
            vec![when(Match { destination_ports: vec![9000], ..Default::default() })],
        ),
        policy(
            "shop",
            "ns-deny-9001",
            security::Scope::Namespace,
            security::Action::Deny,
            vec![when(Match { destination_ports: vec![9001], ..Default::default() })],
        ),
        policy(
            "shop",
            "selected-deny-all",
            security::Scope::WorkloadSelector,
            security::Action::Deny,
            vec![any],
        ),
    ]);
    let c = |port| conn(None, SRC, port);
    assert_eq!(
        decide(&s, &c(9000), "other", &[]),
        denied_by("istio-system/mesh-deny-9000", DenyReason::DenyPolicyMatched),
        "global: everywhere"
    );
    assert_eq!(decide(&s, &c(9001), "other", &[]), Decision::Allow, "namespace: only its own");
    assert_eq!(
        decide(&s, &c(9001), "shop", &[]),
        denied_by("shop/ns-deny-9001", DenyReason::DenyPolicyMatched)
    );
    assert_eq!(
        decide(&s, &c(80), "shop", &[]),
        Decision::Allow,
        "selector: only where the workload names it"
    );
    assert_eq!(
        decide(&s, &c(80), "shop", &["shop/selected-deny-all"]),
        denied_by("shop/selected-deny-all", DenyReason::DenyPolicyMatched)
    );
}

#[test]
fn an_unknown_policy_name_is_skipped_and_reported() {
    let s = store(&[]);
    let e = s.evaluate(
        &conn(None, SRC, 80),
        &DestinationWorkload { namespace: "shop", policies: &["shop/not-yet"] },
    );
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(
        e.observations,
        vec![Observation { policy: "shop/not-yet".into(), kind: ObservationKind::UnknownPolicy }]
    );
    // The agent's connection path does not let it through.
    assert_eq!(e.fail_closed(), denied_by("shop/not-yet", DenyReason::PolicyUnknown));
}

// ---- PeerAuthentication as converted by istiod ------------------------------------------

fn static_strict() -> Authorization {
    policy(
        "istio-system",
        STATIC_STRICT_POLICY,
        security::Scope::WorkloadSelector,
        security::Action::Deny,
        vec![when(Match { not_principals: vec![presence()], ..Default::default() })],
    )
}

const STRICT: &str = "istio-system/istio_converted_static_strict";

#[test]
fn strict_refuses_plaintext_and_permissive_accepts_it() {
    let peer = id("cluster.local/ns/front/sa/web");
    let s = store(&[static_strict()]);
    // STRICT (mesh, namespace or workload): the workload lists the static policy.
    assert_eq!(
        decide(&s, &conn(None, SRC, 80), "shop", &[STRICT]),
        denied_by(STRICT, DenyReason::MtlsRequired)
    );
    assert_eq!(decide(&s, &conn(Some(&peer), SRC, 80), "shop", &[STRICT]), Decision::Allow);
    // PERMISSIVE (or DISABLE, which an ambient agent treats alike): nothing listed.
    assert_eq!(decide(&s, &conn(None, SRC, 80), "shop", &[]), Decision::Allow);
}

#[test]
fn port_level_mtls_overrides() {
    let peer = id("cluster.local/ns/front/sa/web");
    // STRICT with `portLevelMtls: {9090: PERMISSIVE}` (istiod's testdata
    // peer-authn-strict-and-permissive-port-mtls): one rule, deny plaintext except on 9090.
    let strict_but_9090 = policy(
        "shop",
        "converted_peer_authentication_strict-and-permissive-mtls",
        security::Scope::WorkloadSelector,
        security::Action::Deny,
        vec![rule(vec![
            vec![Match { not_principals: vec![presence()], ..Default::default() }],
            vec![Match { not_destination_ports: vec![9090], ..Default::default() }],
        ])],
    );
    // PERMISSIVE with `portLevelMtls: {8080: STRICT, 9090: STRICT}` (testdata
    // peer-authn-permissive-root-permissive-namespace-strict-workload-ports).
    let permissive_but_two = policy(
        "shop",
        "converted_peer_authentication_workload",
        security::Scope::WorkloadSelector,
        security::Action::Deny,
        vec![
            when(Match {
                destination_ports: vec![8080],
                not_principals: vec![presence()],
                ..Default::default()
            }),
            when(Match {
                destination_ports: vec![9090],
                not_principals: vec![presence()],
                ..Default::default()
            }),
        ],
    );
    let s = store(&[static_strict(), strict_but_9090, permissive_but_two]);

    let a = ["shop/converted_peer_authentication_strict-and-permissive-mtls"];
    assert_eq!(decide(&s, &conn(None, SRC, 9090), "shop", &a), Decision::Allow);
    assert_eq!(decide(&s, &conn(None, SRC, 80), "shop", &a), denied_by(a[0], DenyReason::MtlsRequired));
    assert_eq!(decide(&s, &conn(Some(&peer), SRC, 80), "shop", &a), Decision::Allow);

    let b = ["shop/converted_peer_authentication_workload"];
    assert_eq!(decide(&s, &conn(None, SRC, 80), "shop", &b), Decision::Allow);
    for port in [8080, 9090] {
        assert_eq!(decide(&s, &conn(None, SRC, port), "shop", &b), denied_by(b[0], DenyReason::MtlsRequired));
        assert_eq!(decide(&s, &conn(Some(&peer), SRC, port), "shop", &b), Decision::Allow);
    }
}

#[test]
fn strict_and_authorization_policies_combine() {
    // STRICT plus an ALLOW by namespace: plaintext is refused for mTLS, not for the ALLOW.
    let front = id("cluster.local/ns/front/sa/web");
    let s = store(&[
        static_strict(),
        allow(
            "shop",
            "from-front",
            vec![when(Match { namespaces: vec![exact("front")], ..Default::default() })],
        ),
    ]);
    assert_eq!(
        decide(&s, &conn(None, SRC, 80), "shop", &[STRICT]),
        denied_by(STRICT, DenyReason::MtlsRequired)
    );
    assert_eq!(decide(&s, &conn(Some(&front), SRC, 80), "shop", &[STRICT]), Decision::Allow);
}

// ---- rules that needed HTTP attributes, as weftd converts them ---------------------------

#[test]
fn rules_that_needed_http_attributes_deny_rather_than_allow() {
    let peer = id("cluster.local/ns/front/sa/web");
    // ALLOW `to: [{operation: {methods: [GET]}}]`: the rule is left out, so the policy has
    // no rules and allows nothing.
    let s = store(&[allow("shop", "get-only", vec![])]);
    assert_eq!(
        decide(&s, &conn(Some(&peer), SRC, 80), "shop", &[]),
        denied_by("shop/get-only", DenyReason::NoAllowMatched { allow_policies: 1 })
    );
    // DENY `to: [{operation: {methods: [POST], ports: ["8080"]}}]`: the HTTP part is taken
    // as matching, leaving the port: every connection to 8080 is denied.
    let s = store(&[deny(
        "shop",
        "no-post",
        vec![when(Match { destination_ports: vec![8080], ..Default::default() })],
    )]);
    assert_eq!(
        decide(&s, &conn(Some(&peer), SRC, 8080), "shop", &[]),
        denied_by("shop/no-post", DenyReason::DenyPolicyMatched)
    );
    assert_eq!(decide(&s, &conn(Some(&peer), SRC, 80), "shop", &[]), Decision::Allow);
    // DENY `to: [{operation: {methods: [POST]}}]` only: the rule matches everything.
    let s = store(&[deny("shop", "no-post-anywhere", vec![rule(vec![])])]);
    assert_eq!(
        decide(&s, &conn(Some(&peer), SRC, 80), "shop", &[]),
        denied_by("shop/no-post-anywhere", DenyReason::DenyPolicyMatched)
    );
}

// ---- AUDIT and dry-run -----------------------------------------------------------------

#[test]
fn audit_and_dry_run_are_reported_never_enforced() {
    let audit =
        policy("shop", "audit-all", security::Scope::Namespace, security::Action::Audit, vec![rule(vec![])]);
    let dry_deny = Authorization { dry_run: true, ..deny("shop", "dry-deny", vec![rule(vec![])]) };
    let s = store(&[audit, dry_deny]);
    let e =
        s.evaluate(&conn(None, SRC, 80), &DestinationWorkload::<&str> { namespace: "shop", policies: &[] });
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(
        e.observations,
        vec![
            Observation { policy: "shop/audit-all".into(), kind: ObservationKind::Audit },
            Observation { policy: "shop/dry-deny".into(), kind: ObservationKind::DryRunDenyMatched },
        ]
    );

    // A dry-run ALLOW alone does not default-deny; it reports that it would have.
    let front = id("cluster.local/ns/front/sa/web");
    let dry_allow = Authorization {
        dry_run: true,
        ..allow(
            "shop",
            "dry-allow",
            vec![when(Match { namespaces: vec![exact("front")], ..Default::default() })],
        )
    };
    let s = store(&[dry_allow]);
    let none: &[&str] = &[];
    let e = s.evaluate(&conn(None, SRC, 80), &DestinationWorkload { namespace: "shop", policies: none });
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(
        e.observations,
        vec![Observation { policy: "shop/dry-allow".into(), kind: ObservationKind::DryRunNoAllowMatched }]
    );
    let e =
        s.evaluate(&conn(Some(&front), SRC, 80), &DestinationWorkload { namespace: "shop", policies: none });
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(
        e.observations,
        vec![Observation { policy: "shop/dry-allow".into(), kind: ObservationKind::DryRunAllowMatched }]
    );

    // An AUDIT match is reported even when the connection is denied.
    let s = store(&[
        policy("shop", "audit-all", security::Scope::Namespace, security::Action::Audit, vec![rule(vec![])]),
        deny("shop", "deny-all", vec![rule(vec![])]),
    ]);
    let e = s.evaluate(&conn(None, SRC, 80), &DestinationWorkload { namespace: "shop", policies: none });
    assert_eq!(e.decision, denied_by("shop/deny-all", DenyReason::DenyPolicyMatched));
    assert_eq!(e.observations.len(), 1);
}

#[test]
fn denials_explain_themselves() {
    let d = Denial { policy: Arc::from(STRICT), reason: DenyReason::MtlsRequired };
    assert_eq!(
        d.to_string(),
        "denied by istio-system/istio_converted_static_strict: mTLS is required (PeerAuthentication STRICT) and the client connected in plaintext"
    );
    let d = Denial { policy: Arc::from("shop/a"), reason: DenyReason::NoAllowMatched { allow_policies: 3 } };
    assert_eq!(d.to_string(), "denied by shop/a: none of the 3 ALLOW policies matched");
}

// ---- validation ------------------------------------------------------------------------

#[test]
fn invalid_resources_are_errors_naming_policy_and_field() {
    let with_match = |m: Match| allow("shop", "p", vec![rule(vec![vec![Match::default()], vec![m]])]);
    let cases: Vec<(Authorization, &str)> = vec![
        (
            with_match(Match {
                source_ips: vec![security::Address { address: vec![10, 0, 0], length: 8 }],
                ..Default::default()
            }),
            "authorization shop/p: rules[0].clauses[1].matches[0].source_ips[0]: address has 3 bytes; IPv4 needs 4, IPv6 16",
        ),
        (
            with_match(Match {
                not_destination_ips: vec![
                    block("10.0.0.0/8"),
                    security::Address { address: vec![10, 0, 0, 0], length: 33 },
                ],
                ..Default::default()
            }),
            "authorization shop/p: rules[0].clauses[1].matches[0].not_destination_ips[1]: prefix length 33 is out of range for an IPv4 address (0..=32)",
        ),
        (
            with_match(Match {
                source_ips: vec![security::Address { address: vec![0; 16], length: 129 }],
                ..Default::default()
            }),
            "prefix length 129 is out of range for an IPv6 address (0..=128)",
        ),
        (
            with_match(Match { not_destination_ports: vec![80, 65536], ..Default::default() }),
            "authorization shop/p: rules[0].clauses[1].matches[0].not_destination_ports[1]: port 65536 is out of range (0..=65535)",
        ),
        (
            with_match(Match { principals: vec![StringMatch { match_type: None }], ..Default::default() }),
            "rules[0].clauses[1].matches[0].principals[0]: string match sets none of exact, prefix, suffix, presence",
        ),
        (
            with_match(Match {
                service_accounts: vec![ServiceAccountMatch {
                    namespace: "shop".into(),
                    service_account: String::new(),
                }],
                ..Default::default()
            }),
            "rules[0].clauses[1].matches[0].service_accounts[0].serviceAccount is empty",
        ),
        (
            with_match(Match {
                extensions: vec![Extension { name: "x.example/narrower".into(), config: None }],
                ..Default::default()
            }),
            "rules[0].clauses[1].matches[0].extensions: extension \"x.example/narrower\" is not understood",
        ),
        (
            Authorization { action: 7, ..allow("shop", "p", vec![]) },
            "authorization shop/p: action: unknown value 7",
        ),
        (
            Authorization { scope: 3, ..allow("shop", "p", vec![]) },
            "authorization shop/p: scope: unknown value 3",
        ),
        (
            Authorization { name: String::new(), ..allow("shop", "p", vec![]) },
            "authorization shop/p: name is empty",
        ),
    ];
    for (resource, want) in cases {
        let err = PolicyStore::from_resources([("shop/p", &resource)]).unwrap_err().to_string();
        assert!(err.contains(want), "{err}\n  does not contain\n{want}");
    }
    // An IPv4-mapped block is read as the IPv4 block it is.
    let mapped = security::Address {
        address: "::ffff:10.0.0.0".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec(),
        length: 104,
    };
    let s =
        store(&[allow("shop", "p", vec![when(Match { source_ips: vec![mapped], ..Default::default() })])]);
    assert_eq!(decide(&s, &conn(None, "10.1.2.3", 80), "shop", &[]), Decision::Allow);
}

// ---- cost ------------------------------------------------------------------------------

/// Counts this thread's allocations, so the test below sees only its own.
mod counting {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
    // const-initialised thread-local `Cell` without a destructor, so touching it neither
    // allocates nor re-enters the allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract for `alloc` is passed on as is.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System.alloc` above with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    pub fn allocations() -> usize {
        ALLOCATIONS.with(Cell::get)
    }
}

#[test]
fn allowing_and_denying_allocate_nothing() {
    let peer = id("cluster.local/ns/front/sa/web");
    let s = store(&[
        static_strict(),
        policy(
            "istio-system",
            "mesh-deny",
            security::Scope::Global,
            security::Action::Deny,
            vec![when(Match { source_ips: vec![block("192.0.2.0/24")], ..Default::default() })],
        ),
        allow(
            "shop",
            "from-front",
            vec![when(Match { principals: vec![prefix("cluster.local/ns/front/")], ..Default::default() })],
        ),
        policy(
            "shop",
            "selected",
            security::Scope::WorkloadSelector,
            security::Action::Allow,
            vec![when(Match { destination_ports: vec![8080], ..Default::default() })],
        ),
    ]);
    let named = ["shop/selected".to_owned(), STRICT.to_owned()];
    let dest = DestinationWorkload { namespace: "shop", policies: &named[..] };
    let allowed = conn(Some(&peer), SRC, 80);
    let refused = conn(None, SRC, 80);

    let before = counting::allocations();
    let a = s.evaluate(&allowed, &dest);
    let d = s.evaluate(&refused, &dest);
    let after = counting::allocations();
    assert_eq!(a.decision, Decision::Allow);
    assert_eq!(d.decision, denied_by(STRICT, DenyReason::MtlsRequired));
    assert_eq!(after - before, 0, "evaluate allocated");
    // The counter does count: one observation is one allocation.
    let audit =
        policy("shop", "audit", security::Scope::Namespace, security::Action::Audit, vec![rule(vec![])]);
    let s = store(&[audit]);
    let before = counting::allocations();
    let unnamed = DestinationWorkload { namespace: "shop", policies: &named[..0] };
    assert_eq!(s.evaluate(&allowed, &unnamed).observations.len(), 1);
    assert!(counting::allocations() > before);
}
