//! AuthorizationPolicy and PeerAuthentication → `istio.security.Authorization` and the
//! policies each Workload lists. In-process: YAML → file source → store → translate, then
//! the resources decoded and compared with what istiod sends ztunnel (its testdata in
//! pilot/pkg/serviceregistry/ambient/testdata, where Weft does the same) or with Weft's
//! documented differences (translate/policy.rs).

use prost::Message;
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_xds::{
    istio::{
        security::{
            Action, Address as Cidr, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch,
            StringMatch, string_match::MatchType,
        },
        workload::{Address, Workload, address},
    },
    server::{ProxyIdentity, Snapshot},
    type_url,
};

fn translate(yaml: &str) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
    let errors: Vec<String> = store.diagnostics().iter().map(|d| d.to_string()).collect();
    assert!(errors.iter().all(|e| !e.starts_with("error")), "{errors:#?}");
    translate::snapshot(&store.snapshot(), &Options::default())
}

/// Namespaces `foo` (ambient) and `bar`, pods `a` (app: a, node n1) and `b` (app: b, node
/// n2) in foo, `c` (app: a, node n3) in bar, `sys` (app: a, node n4) in istio-system.
const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: foo, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: bar, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: foo, labels: { app: a } }
spec: { nodeName: n1 }
status: { podIP: 10.1.1.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: foo, labels: { app: b } }
spec: { nodeName: n2 }
status: { podIP: 10.1.2.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: c, namespace: bar, labels: { app: a } }
spec: { nodeName: n3 }
status: { podIP: 10.1.3.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: sys, namespace: istio-system, labels: { app: a } }
spec: { nodeName: n4 }
status: { podIP: 10.1.4.2 }
"#;

struct Translated {
    snap: Snapshot,
}

impl Translated {
    fn of(policies: &str) -> Translated {
        Translated { snap: translate(&format!("{PODS}---\n{policies}")) }
    }

    fn authorization_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .snap
            .resources
            .get(type_url::AUTHORIZATION)
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        names
    }

    fn authorization(&self, name: &str) -> Authorization {
        let r = self
            .resource(name)
            .unwrap_or_else(|| panic!("no authorization {name}: {:?}", self.authorization_names()));
        Authorization::decode(r.resource.value.as_slice()).unwrap()
    }

    fn resource(&self, name: &str) -> Option<&weft_xds::server::ScopedResource> {
        self.snap.resources.get(type_url::AUTHORIZATION).into_iter().flatten().find(|r| r.name == name)
    }

    /// Which of the nodes n1..n4 receive the resource.
    fn nodes(&self, name: &str) -> Vec<&'static str> {
        let r = self.resource(name).unwrap();
        ["n1", "n2", "n3", "n4"]
            .into_iter()
            .filter(|n| {
                r.scope.matches(&ProxyIdentity {
                    id: format!("agent-{n}"),
                    node_name: Some((*n).into()),
                    ..Default::default()
                })
            })
            .collect()
    }

    fn workload(&self, pod: &str) -> Workload {
        self.snap.resources[type_url::ADDRESS]
            .iter()
            .find_map(|r| match Address::decode(r.resource.value.as_slice()).unwrap().r#type {
                Some(address::Type::Workload(w)) if w.name == pod => Some(w),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no workload {pod}"))
    }

    fn listed(&self, pod: &str) -> Vec<String> {
        self.workload(pod).authorization_policies
    }
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

fn cidr(bytes: &[u8], length: u32) -> Cidr {
    Cidr { address: bytes.to_vec(), length }
}

fn clause(matches: Vec<Match>) -> Clause {
    Clause { matches }
}

fn one(m: Match) -> Clause {
    clause(vec![m])
}

fn ap(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec:\n{spec}---\n"
    )
}

// ---- AuthorizationPolicy --------------------------------------------------------------------

#[test]
fn l4_fields_become_clauses_to_from_then_each_condition() {
    let t = Translated::of(&ap(
        "full",
        "foo",
        r#"  selector: { matchLabels: { app: a } }
  action: ALLOW
  rules:
  - to: [{ operation: { ports: ["80", "8080"], notPorts: ["9090"] } }]
    from:
    - source:
        principals: [cluster.local/ns/bar/sa/c, "cluster.local/ns/bar/*", "*/sa/c", "*"]
        notPrincipals: [cluster.local/ns/bar/sa/evil]
        namespaces: [bar]
        notNamespaces: [baz]
        ipBlocks: [10.0.0.0/8, 192.0.2.1]
        notIpBlocks: [10.9.0.0/16]
    - source: { serviceAccounts: [c, other/d], notServiceAccounts: [bar/evil] }
    when:
    - { key: source.ip, values: [10.1.0.0/16], notValues: [10.1.9.9] }
    - { key: source.namespace, values: [bar] }
    - { key: source.principal, notValues: [cluster.local/ns/bar/sa/evil] }
    - { key: destination.port, values: ["80"] }
    - { key: destination.ip, values: ["10.1.1.2"] }
"#,
    ));
    let a = t.authorization("foo/full");
    assert_eq!((a.name.as_str(), a.namespace.as_str()), ("full", "foo"));
    assert_eq!((a.scope(), a.action(), a.dry_run), (Scope::WorkloadSelector, Action::Allow, false));
    let want = Rule {
        clauses: vec![
            one(Match {
                destination_ports: vec![80, 8080],
                not_destination_ports: vec![9090],
                ..Default::default()
            }),
            clause(vec![
                Match {
                    namespaces: vec![exact("bar")],
                    not_namespaces: vec![exact("baz")],
                    principals: vec![
                        exact("cluster.local/ns/bar/sa/c"),
                        prefix("cluster.local/ns/bar/"),
                        suffix("/sa/c"),
                        presence(),
                    ],
                    not_principals: vec![exact("cluster.local/ns/bar/sa/evil")],
                    source_ips: vec![cidr(&[10, 0, 0, 0], 8), cidr(&[192, 0, 2, 1], 32)],
                    not_source_ips: vec![cidr(&[10, 9, 0, 0], 16)],
                    ..Default::default()
                },
                Match {
                    // A bare service account is in the policy's namespace.
                    service_accounts: vec![
                        ServiceAccountMatch { namespace: "foo".into(), service_account: "c".into() },
                        ServiceAccountMatch { namespace: "other".into(), service_account: "d".into() },
                    ],
                    not_service_accounts: vec![ServiceAccountMatch {
                        namespace: "bar".into(),
                        service_account: "evil".into(),
                    }],
                    ..Default::default()
                },
            ]),
            one(Match {
                source_ips: vec![cidr(&[10, 1, 0, 0], 16)],
                not_source_ips: vec![cidr(&[10, 1, 9, 9], 32)],
                ..Default::default()
            }),
            one(Match { namespaces: vec![exact("bar")], ..Default::default() }),
            one(Match { not_principals: vec![exact("cluster.local/ns/bar/sa/evil")], ..Default::default() }),
            one(Match { destination_ports: vec![80], ..Default::default() }),
            one(Match { destination_ips: vec![cidr(&[10, 1, 1, 2], 32)], ..Default::default() }),
        ],
    };
    assert_eq!(a.rules, vec![want]);
}

#[test]
fn allow_nothing_and_allow_everything() {
    let t = Translated::of(&(ap("nothing", "foo", "  {}\n") + &ap("everything", "bar", "  rules: [{}]\n")));
    assert_eq!(t.authorization("foo/nothing").rules, vec![], "no rules: allows nothing");
    assert_eq!(
        t.authorization("bar/everything").rules,
        vec![Rule { clauses: vec![] }],
        "one empty rule: allows all"
    );
}

#[test]
fn allow_rules_that_need_http_are_left_out() {
    let t = Translated::of(&ap(
        "mixed",
        "foo",
        r#"  rules:
  - to: [{ operation: { methods: [GET], ports: ["80"] } }]
  - from: [{ source: { requestPrincipals: ["*"] } }]
  - when: [{ key: "request.headers[x-user]", values: [admin] }]
  - to: [{ operation: { ports: ["9090"] } }]
"#,
    ));
    // Only the last rule is L4; the others would need HTTP, so they allow nothing.
    let a = t.authorization("foo/mixed");
    assert_eq!(
        a.rules,
        vec![Rule { clauses: vec![one(Match { destination_ports: vec![9090], ..Default::default() })] }]
    );

    let t = Translated::of(&ap("get-only", "foo", "  rules:\n  - to: [{ operation: { methods: [GET] } }]\n"));
    assert_eq!(t.authorization("foo/get-only").rules, vec![], "an ALLOW of only HTTP rules allows nothing");
}

#[test]
fn deny_rules_that_need_http_fail_closed() {
    let t = Translated::of(&ap(
        "deny",
        "foo",
        r#"  action: DENY
  rules:
  # HTTP only: taken as met, so the rule denies everything (istiod: no effect).
  - to: [{ operation: { methods: [POST] } }]
  # HTTP beside a port: the port remains.
  - to: [{ operation: { methods: [POST], ports: ["8080"] } }]
  # One alternative HTTP only: the whole `from` holds; the port clause remains.
  - from: [{ source: { namespaces: [bar] } }, { source: { requestPrincipals: [x] } }]
    to: [{ operation: { ports: ["9000"] } }]
  # An HTTP condition beside an L4 one: the L4 one remains.
  - when: [{ key: "request.auth.claims[iss]", values: [x] }, { key: source.ip, values: [10.0.0.1] }]
"#,
    ));
    let a = t.authorization("foo/deny");
    assert_eq!(a.action(), Action::Deny);
    assert_eq!(
        a.rules,
        vec![
            Rule { clauses: vec![] },
            Rule { clauses: vec![one(Match { destination_ports: vec![8080], ..Default::default() })] },
            Rule { clauses: vec![one(Match { destination_ports: vec![9000], ..Default::default() })] },
            Rule {
                clauses: vec![one(Match {
                    source_ips: vec![cidr(&[10, 0, 0, 1], 32)],
                    ..Default::default()
                })]
            },
        ]
    );
}

#[test]
fn remote_ip_blocks_are_the_source_address_at_l4() {
    let t = Translated::of(&ap(
        "remote",
        "foo",
        r#"  rules:
  - from: [{ source: { remoteIpBlocks: [10.2.0.0/16], notRemoteIpBlocks: [10.2.3.0/24], notIpBlocks: [10.2.4.4] } }]
  # Both lists hold the same address: only what both contain.
  - from: [{ source: { ipBlocks: [10.0.0.0/8, 192.0.2.0/24], remoteIpBlocks: [10.3.0.0/16, 172.16.0.0/12] } }]
  # Nothing in common: the rule can never match and is left out.
  - from: [{ source: { ipBlocks: [10.0.0.0/8], remoteIpBlocks: [192.0.2.0/24] } }]
  - when: [{ key: remote.ip, values: ["2001:db8::/32"] }]
"#,
    ));
    let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
    v6.resize(16, 0);
    assert_eq!(
        t.authorization("foo/remote").rules,
        vec![
            Rule {
                clauses: vec![one(Match {
                    source_ips: vec![cidr(&[10, 2, 0, 0], 16)],
                    not_source_ips: vec![cidr(&[10, 2, 4, 4], 32), cidr(&[10, 2, 3, 0], 24)],
                    ..Default::default()
                })]
            },
            Rule {
                clauses: vec![one(Match {
                    source_ips: vec![cidr(&[10, 3, 0, 0], 16)],
                    ..Default::default()
                })]
            },
            Rule { clauses: vec![one(Match { source_ips: vec![cidr(&v6, 32)], ..Default::default() })] },
        ]
    );
}

#[test]
fn source_service_account_condition_is_a_service_account_match() {
    let t = Translated::of(&ap(
        "sa",
        "foo",
        "  rules:\n  - when: [{ key: source.serviceAccount, values: [a, bar/c] }]\n",
    ));
    assert_eq!(
        t.authorization("foo/sa").rules[0].clauses,
        vec![one(Match {
            service_accounts: vec![
                ServiceAccountMatch { namespace: "foo".into(), service_account: "a".into() },
                ServiceAccountMatch { namespace: "bar".into(), service_account: "c".into() },
            ],
            ..Default::default()
        })]
    );
}

#[test]
fn actions_dry_run_and_what_agents_never_see() {
    let t = Translated::of(
        &(ap("audit", "foo", "  action: AUDIT\n  rules: [{}]\n")
            + &ap("custom", "foo", "  action: CUSTOM\n  provider: { name: ext }\n  rules: [{}]\n")
            + &ap(
                "for-waypoint",
                "foo",
                "  targetRefs: [{ kind: Service, group: \"\", name: svc }]\n  rules: [{}]\n",
            )
            + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: dry, namespace: foo, annotations: { istio.io/dry-run: \"true\" } }\nspec:\n  action: DENY\n  rules: [{}]\n"),
    );
    assert_eq!(
        t.authorization_names(),
        ["foo/audit", "foo/dry"],
        "CUSTOM and targetRef policies are not for agents"
    );
    assert_eq!(t.authorization("foo/audit").action(), Action::Audit);
    let dry = t.authorization("foo/dry");
    assert!(dry.dry_run && dry.action() == Action::Deny);
}

#[test]
fn scopes_and_the_agents_that_receive_them() {
    let t = Translated::of(
        &(ap("mesh", "istio-system", "  rules: [{}]\n")
            + &ap("mesh-a", "istio-system", "  selector: { matchLabels: { app: a } }\n  rules: [{}]\n")
            + &ap("ns", "foo", "  rules: [{}]\n")
            + &ap("sel-b", "foo", "  selector: { matchLabels: { app: b } }\n  rules: [{}]\n")
            + &ap("no-labels", "bar", "  selector: { matchLabels: {} }\n  rules: [{}]\n")),
    );
    assert_eq!(t.authorization("istio-system/mesh").scope(), Scope::Global);
    assert_eq!(t.nodes("istio-system/mesh"), ["n1", "n2", "n3", "n4"]);
    // A root-namespace policy with a selector selects workloads in every namespace.
    assert_eq!(t.authorization("istio-system/mesh-a").scope(), Scope::WorkloadSelector);
    assert_eq!(t.nodes("istio-system/mesh-a"), ["n1", "n3", "n4"]);
    assert_eq!(t.authorization("foo/ns").scope(), Scope::Namespace);
    assert_eq!(t.nodes("foo/ns"), ["n1", "n2"]);
    assert_eq!(t.authorization("foo/sel-b").scope(), Scope::WorkloadSelector);
    assert_eq!(t.nodes("foo/sel-b"), ["n2"]);
    assert_eq!(
        t.authorization("bar/no-labels").scope(),
        Scope::Namespace,
        "a selector without labels selects the namespace"
    );

    // Workloads list the selector policies that select them, sorted; nothing else.
    assert_eq!(t.listed("a"), ["istio-system/mesh-a"]);
    assert_eq!(t.listed("b"), ["foo/sel-b"]);
    assert_eq!(t.listed("c"), ["istio-system/mesh-a"]);
    assert_eq!(t.listed("sys"), ["istio-system/mesh-a"]);
}

#[test]
fn workloads_list_selector_policies_of_their_namespace_and_the_root() {
    let t = Translated::of(
        &(ap("z-local", "foo", "  selector: { matchLabels: { app: a } }\n  rules: [{}]\n")
            + &ap(
                "a-local",
                "foo",
                "  selector: { matchLabels: { app: a } }\n  action: DENY\n  rules: [{}]\n",
            )
            + &ap("mesh-a", "istio-system", "  selector: { matchLabels: { app: a } }\n  rules: [{}]\n")
            + &ap(
                "custom",
                "foo",
                "  selector: { matchLabels: { app: a } }\n  action: CUSTOM\n  provider: { name: ext }\n  rules: [{}]\n",
            )
            + &ap("other-ns", "bar", "  selector: { matchLabels: { app: b } }\n  rules: [{}]\n")),
    );
    assert_eq!(t.listed("a"), ["foo/a-local", "foo/z-local", "istio-system/mesh-a"]);
    assert_eq!(t.listed("b"), Vec::<String>::new(), "a selector in another namespace does not reach b");
}

// ---- PeerAuthentication ---------------------------------------------------------------------

fn pa(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec:\n{spec}---\n"
    )
}

fn mesh(mode: &str) -> String {
    pa("default", "istio-system", &format!("  mtls: {{ mode: {mode} }}\n"))
}

fn namespace(mode: &str) -> String {
    pa("default", "foo", &format!("  mtls: {{ mode: {mode} }}\n"))
}

/// A workload policy for app: a in foo; `ports` as `{9090: {mode: X}}` text.
fn workload(mode: Option<&str>, ports: &str) -> String {
    let mtls = mode.map(|m| format!("  mtls: {{ mode: {m} }}\n")).unwrap_or_default();
    let ports = if ports.is_empty() { String::new() } else { format!("  portLevelMtls: {ports}\n") };
    pa("workload", "foo", &format!("  selector: {{ matchLabels: {{ app: a }} }}\n{mtls}{ports}"))
}

const STRICT: &str = "istio-system/istio_converted_static_strict";
const CONVERTED: &str = "foo/converted_peer_authentication_workload";

fn not_ports(port: u32) -> Clause {
    one(Match { not_destination_ports: vec![port], ..Default::default() })
}

fn plaintext() -> Clause {
    one(Match { not_principals: vec![presence()], ..Default::default() })
}

fn plaintext_on(port: u32) -> Rule {
    Rule {
        clauses: vec![one(Match {
            destination_ports: vec![port],
            not_principals: vec![presence()],
            ..Default::default()
        })],
    }
}

/// (what, YAML, what pod `a` lists, whether pod `b` (same namespace, not selected) lists the
/// static STRICT policy, the converted policy's rules if one is sent).
type Case = (&'static str, String, Vec<&'static str>, bool, Option<Vec<Rule>>);

#[test]
fn peer_authentication_as_istiod_converts_it() {
    let cases: Vec<Case> = vec![
        ("mesh STRICT", mesh("STRICT"), vec![STRICT], true, None),
        ("mesh PERMISSIVE", mesh("PERMISSIVE"), vec![], false, None),
        (
            "namespace UNSET inherits mesh STRICT",
            mesh("STRICT") + &namespace("UNSET"),
            vec![STRICT],
            true,
            None,
        ),
        (
            "namespace PERMISSIVE overrides mesh STRICT",
            mesh("STRICT") + &namespace("PERMISSIVE"),
            vec![],
            false,
            None,
        ),
        ("namespace STRICT", mesh("PERMISSIVE") + &namespace("STRICT"), vec![STRICT], true, None),
        ("workload STRICT", workload(Some("STRICT"), ""), vec![STRICT], false, None),
        (
            "workload PERMISSIVE overrides namespace STRICT",
            namespace("STRICT") + &workload(Some("PERMISSIVE"), ""),
            vec![],
            true,
            None,
        ),
        (
            "DISABLE is PERMISSIVE to an agent",
            mesh("STRICT") + &workload(Some("DISABLE"), ""),
            vec![],
            true,
            None,
        ),
        (
            "peer-authn-strict-and-permissive-port-mtls",
            workload(Some("STRICT"), "{ 9090: { mode: PERMISSIVE } }"),
            vec![CONVERTED],
            false,
            Some(vec![Rule { clauses: vec![plaintext(), not_ports(9090)] }]),
        ),
        (
            "peer-authn-strict-port-mtls-strict-and-permissive",
            workload(Some("STRICT"), "{ 9090: { mode: STRICT }, 8080: { mode: PERMISSIVE } }"),
            vec![CONVERTED],
            false,
            Some(vec![Rule { clauses: vec![plaintext(), not_ports(8080)] }]),
        ),
        (
            "peer-authn-strict-and-strict-port-mtls: nothing to convert",
            workload(Some("STRICT"), "{ 8080: { mode: STRICT } }"),
            vec![STRICT],
            false,
            None,
        ),
        (
            "peer-authn-permissive-root-strict-namespace-permissive-workload",
            mesh("PERMISSIVE") + &namespace("STRICT") + &workload(None, "{ 9090: { mode: PERMISSIVE } }"),
            vec![CONVERTED],
            true,
            Some(vec![Rule { clauses: vec![not_ports(9090), plaintext()] }]),
        ),
        (
            "peer-authn-strict-root-unset-workload-port-mtls-strict-and-permissive",
            mesh("STRICT") + &workload(None, "{ 9090: { mode: PERMISSIVE }, 8080: { mode: STRICT } }"),
            vec![CONVERTED],
            true,
            Some(vec![Rule { clauses: vec![not_ports(9090), plaintext()] }]),
        ),
        (
            "peer-authn-permissive-root-permissive-namespace-strict-workload-ports",
            mesh("PERMISSIVE")
                + &namespace("PERMISSIVE")
                + &workload(None, "{ 9090: { mode: STRICT }, 8080: { mode: STRICT } }"),
            vec![CONVERTED],
            false,
            Some(vec![plaintext_on(8080), plaintext_on(9090)]),
        ),
        (
            "peer-authn-permissive-root-unset-namespace-mixed-workload-ports",
            mesh("PERMISSIVE")
                + &namespace("UNSET")
                + &workload(None, "{ 9090: { mode: STRICT }, 8080: { mode: PERMISSIVE } }"),
            vec![CONVERTED],
            false,
            Some(vec![plaintext_on(9090)]),
        ),
        (
            "workload PERMISSIVE with a STRICT port under a STRICT mesh",
            mesh("STRICT") + &workload(Some("PERMISSIVE"), "{ 9090: { mode: STRICT } }"),
            vec![CONVERTED],
            true,
            Some(vec![plaintext_on(9090)]),
        ),
        (
            "a DISABLE port under an inherited STRICT is exempt",
            namespace("STRICT") + &workload(None, "{ 9090: { mode: DISABLE } }"),
            vec![CONVERTED],
            true,
            Some(vec![Rule { clauses: vec![not_ports(9090), plaintext()] }]),
        ),
        (
            "a port UNSET follows its workload",
            workload(Some("STRICT"), "{ 9090: { mode: UNSET } }"),
            vec![STRICT],
            false,
            None,
        ),
    ];
    for (what, yaml, listed, b_strict, converted) in cases {
        let t = Translated::of(&yaml);
        assert_eq!(t.listed("a"), listed, "{what}: pod a lists");
        let static_strict = t.authorization(STRICT);
        assert_eq!(
            (static_strict.scope(), static_strict.action(), &static_strict.rules[..]),
            (Scope::WorkloadSelector, Action::Deny, &[Rule { clauses: vec![plaintext()] }][..]),
            "{what}: the static policy is sent whenever a PeerAuthentication exists"
        );
        assert_eq!(t.nodes(STRICT), ["n1", "n2", "n3", "n4"]);
        match converted {
            None => assert!(t.resource(CONVERTED).is_none(), "{what}: nothing converted"),
            Some(rules) => {
                let c = t.authorization(CONVERTED);
                assert_eq!((c.scope(), c.action()), (Scope::WorkloadSelector, Action::Deny), "{what}");
                assert_eq!(c.rules, rules, "{what}: converted rules");
                assert_eq!(t.nodes(CONVERTED), ["n1"], "{what}: only pod a's node");
            }
        }
        let b: &[&str] = if b_strict { &[STRICT] } else { &[] };
        assert_eq!(t.listed("b"), b, "{what}: pod b follows its namespace");
    }
}

#[test]
fn without_peer_authentication_nothing_is_sent_or_listed() {
    let t = Translated::of("");
    assert_eq!(t.authorization_names(), Vec::<String>::new());
    assert_eq!(t.listed("a"), Vec::<String>::new());
}

#[test]
fn the_oldest_workload_peer_authentication_wins() {
    let older = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: zz-older, namespace: foo, creationTimestamp: \"2024-01-01T00:00:00Z\" }\nspec:\n  selector: { matchLabels: { app: a } }\n  mtls: { mode: STRICT }\n  portLevelMtls: { 9090: { mode: PERMISSIVE } }\n---\n";
    let newer = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: aa-newer, namespace: foo, creationTimestamp: \"2025-01-01T00:00:00Z\" }\nspec:\n  selector: { matchLabels: { app: a } }\n  mtls: { mode: PERMISSIVE }\n---\n";
    let t = Translated::of(&(older.to_owned() + newer));
    assert_eq!(t.listed("a"), ["foo/converted_peer_authentication_zz-older"]);
}

#[test]
fn selectors_in_the_root_namespace_and_for_root_workloads() {
    // istiod ignores workload PeerAuthentications in the root namespace.
    let root_selector =
        pa("root-a", "istio-system", "  selector: { matchLabels: { app: a } }\n  mtls: { mode: STRICT }\n");
    let t = Translated::of(&root_selector);
    assert_eq!(t.listed("a"), Vec::<String>::new());
    assert_eq!(t.listed("sys"), Vec::<String>::new());
    // A pod in the root namespace follows the mesh-wide policy.
    let t = Translated::of(&mesh("STRICT"));
    assert_eq!(t.listed("sys"), [STRICT]);
}

#[test]
fn policies_and_peer_authentication_are_listed_together() {
    let t = Translated::of(
        &(ap("sel", "foo", "  selector: { matchLabels: { app: a } }\n  rules: [{}]\n") + &mesh("STRICT")),
    );
    assert_eq!(
        t.listed("a"),
        ["foo/sel", STRICT],
        "selector policies first, then PeerAuthentication (istiod's order)"
    );
}
