//! Istio YAML → weftd's translation → the agent's policy store → decisions. In-process, no
//! sockets: the cases of the issue's end-to-end list (DENY by principal, ALLOW by namespace,
//! port-scoped rules, STRICT versus PERMISSIVE for a client outside the mesh, port-level
//! overrides, rules that need HTTP) checked on what the two halves make together.

use prost::Message;
use weft_agent::policy::{
    ConnectionAttrs, Decision, DenyReason, DestinationWorkload, ObservationKind, PolicyStore,
};
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_hbone::Identity;
use weft_xds::{
    istio::{
        security::Authorization,
        workload::{Address, Workload, address},
    },
    server::ProxyIdentity,
    type_url,
};

/// Pods: `server` (app: server, node n1) in `shop`, and clients anywhere (only their
/// identity and address matter here).
const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: shop, labels: { app: server } }
spec: { nodeName: n1, serviceAccountName: server }
status: { podIP: 10.1.1.2 }
"#;

/// What the agent on n1 holds after weftd translated `policies`, and the server's record.
struct Agent {
    store: PolicyStore,
    server: Workload,
}

impl Agent {
    fn with(policies: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), format!("{MESH}---\n{policies}")).unwrap();
        let mut store = ConfigStore::new();
        store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
        let errors: Vec<String> = store.diagnostics().iter().map(|d| d.to_string()).collect();
        assert!(errors.iter().all(|e| !e.starts_with("error")), "{errors:#?}");
        let snap = translate::snapshot(&store.snapshot(), &Options::default());

        // What the xDS server sends the agent of node n1.
        let n1 = ProxyIdentity { id: "agent-n1".into(), node_name: Some("n1".into()), ..Default::default() };
        let held: Vec<(String, Authorization)> = snap
            .resources
            .get(type_url::AUTHORIZATION)
            .into_iter()
            .flatten()
            .filter(|r| r.scope.matches(&n1))
            .map(|r| (r.name.clone(), Authorization::decode(r.resource.value.as_slice()).unwrap()))
            .collect();
        let store = PolicyStore::from_resources(held.iter().map(|(n, a)| (n.as_str(), a)))
            .expect("weftd sends valid policies");
        let server = snap.resources[type_url::ADDRESS]
            .iter()
            .find_map(|r| match Address::decode(r.resource.value.as_slice()).unwrap().r#type {
                Some(address::Type::Workload(w)) if w.name == "server" => Some(w),
                _ => None,
            })
            .unwrap();
        Agent { store, server }
    }

    /// The decision for a connection from `principal` (None: plaintext) at `src` to the
    /// server's `port`.
    fn decide(&self, principal: Option<&str>, src: &str, port: u16) -> Decision {
        self.evaluate(principal, src, port).decision
    }

    fn evaluate(&self, principal: Option<&str>, src: &str, port: u16) -> weft_agent::policy::Evaluation {
        let identity = principal.map(|p| Identity::from_principal(p).unwrap());
        let conn = ConnectionAttrs {
            source_identity: identity.as_ref(),
            source_ip: src.parse().unwrap(),
            destination_ip: "10.1.1.2".parse().unwrap(),
            destination_port: port,
        };
        let dest = DestinationWorkload {
            namespace: &self.server.namespace,
            policies: &self.server.authorization_policies,
        };
        self.store.evaluate(&conn, &dest)
    }
}

const FRONT: Option<&str> = Some("cluster.local/ns/front/sa/web");
const EVIL: Option<&str> = Some("cluster.local/ns/front/sa/evil");
const OTHER: Option<&str> = Some("cluster.local/ns/other/sa/web");
const PLAIN: Option<&str> = None;
const SRC: &str = "10.1.2.9";

fn denied(d: &Decision, reason: fn(&DenyReason) -> bool, policy: &str) -> bool {
    matches!(d, Decision::Deny(x) if reason(&x.reason) && &*x.policy == policy)
}

#[test]
fn deny_by_principal_allow_by_namespace_and_ports() {
    let agent = Agent::with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-evil, namespace: shop }
spec:
  selector: { matchLabels: { app: server } }
  action: DENY
  rules: [{ from: [{ source: { principals: [cluster.local/ns/front/sa/evil] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: front-on-8080, namespace: shop }
spec:
  selector: { matchLabels: { app: server } }
  rules:
  - from: [{ source: { namespaces: [front] } }]
    to: [{ operation: { ports: ["8080"] } }]
"#,
    );
    assert_eq!(agent.server.authorization_policies, ["shop/front-on-8080", "shop/no-evil"]);
    assert_eq!(agent.decide(FRONT, SRC, 8080), Decision::Allow);
    assert!(denied(&agent.decide(EVIL, SRC, 8080), |r| *r == DenyReason::DenyPolicyMatched, "shop/no-evil"));
    let not_allowed = |r: &DenyReason| matches!(r, DenyReason::NoAllowMatched { .. });
    assert!(denied(&agent.decide(FRONT, SRC, 9090), not_allowed, "shop/front-on-8080"), "wrong port");
    assert!(denied(&agent.decide(OTHER, SRC, 8080), not_allowed, "shop/front-on-8080"), "wrong namespace");
    assert!(denied(&agent.decide(PLAIN, SRC, 8080), not_allowed, "shop/front-on-8080"), "no identity");
}

#[test]
fn strict_versus_permissive_for_a_client_outside_the_mesh() {
    let strict = Agent::with(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: STRICT } }\n",
    );
    let mtls_required = |r: &DenyReason| *r == DenyReason::MtlsRequired;
    assert!(denied(
        &strict.decide(PLAIN, SRC, 8080),
        mtls_required,
        "istio-system/istio_converted_static_strict"
    ));
    assert_eq!(strict.decide(FRONT, SRC, 8080), Decision::Allow);

    let permissive = Agent::with(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec: { mtls: { mode: PERMISSIVE } }\n",
    );
    assert_eq!(permissive.decide(PLAIN, SRC, 8080), Decision::Allow);

    // STRICT for the namespace, PERMISSIVE on one port of the server.
    let port = Agent::with(
        r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: shop }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: metrics-open, namespace: shop }
spec:
  selector: { matchLabels: { app: server } }
  portLevelMtls: { 9090: { mode: PERMISSIVE } }
"#,
    );
    assert_eq!(port.decide(PLAIN, SRC, 9090), Decision::Allow);
    assert!(denied(
        &port.decide(PLAIN, SRC, 8080),
        mtls_required,
        "shop/converted_peer_authentication_metrics-open"
    ));
    assert_eq!(port.decide(FRONT, SRC, 8080), Decision::Allow);
}

#[test]
fn rules_that_need_http_deny_rather_than_allow() {
    let allow_get = Agent::with(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: get-only, namespace: shop }\nspec:\n  rules: [{ to: [{ operation: { methods: [GET] } }] }]\n",
    );
    assert!(
        matches!(allow_get.decide(FRONT, SRC, 8080), Decision::Deny(_)),
        "an ALLOW of GET allows no connection"
    );

    let deny_post = Agent::with(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: no-post, namespace: shop }\nspec:\n  action: DENY\n  rules: [{ to: [{ operation: { methods: [POST] } }] }]\n",
    );
    assert!(
        denied(&deny_post.decide(FRONT, SRC, 8080), |r| *r == DenyReason::DenyPolicyMatched, "shop/no-post"),
        "a DENY of POST denies every connection, since the agent cannot tell"
    );
}

#[test]
fn ip_blocks_and_audit() {
    let agent = Agent::with(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: from-pods, namespace: shop }
spec:
  rules: [{ from: [{ source: { ipBlocks: [10.1.0.0/16], notIpBlocks: [10.1.9.0/24] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: audit-plaintext, namespace: shop }
spec:
  action: AUDIT
  rules: [{ from: [{ source: { notPrincipals: ["*"] } }] }]
"#,
    );
    assert_eq!(agent.decide(FRONT, "10.1.2.9", 80), Decision::Allow);
    assert!(matches!(agent.decide(FRONT, "10.1.9.9", 80), Decision::Deny(_)));
    assert!(matches!(agent.decide(FRONT, "192.0.2.1", 80), Decision::Deny(_)));
    let e = agent.evaluate(PLAIN, "10.1.2.9", 80);
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(e.observations.len(), 1);
    assert_eq!(
        (&*e.observations[0].policy, e.observations[0].kind),
        ("shop/audit-plaintext", ObservationKind::Audit)
    );
}
