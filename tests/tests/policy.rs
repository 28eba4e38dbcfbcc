//! End-to-end: Istio's AuthorizationPolicy and PeerAuthentication, written as YAML into
//! weftd's config directory, enforced by the server's agent: each allowed connection
//! reaches the application, each denied one is refused before it, logged with the policy
//! and the reason, and counted in istio_tcp_connections_failed_total{response_flags="DENY"}.
//! Root, network namespaces, real eBPF programs, real agent and weftd processes.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};
use weft_tests::{
    Pod, Proc,
    agent::{Agent, AgentOptions},
    logs::{self, AGENT_JSON_ARGS},
    scenario::{self, Scenario},
};

const HTTP_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9090;
const POLICY_FILE: &str = "policies.yaml";
const DENIED: &str = "connection denied by policy";

fn json_logs() -> AgentOptions {
    AgentOptions { args: AGENT_JSON_ARGS.map(String::from).to_vec(), ..Default::default() }
}

/// Waits until `agent` has `workload` listing exactly the policies `want` (sorted) and
/// holds each of them: before that, a connection could be decided on the old policies
/// (or refused, fail closed, for a policy listed but not yet held).
fn wait_policies(agent: &Agent, workload: &str, want: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dump = agent.config_dump()?;
        let listed: Vec<&str> = dump["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == workload)
            .and_then(|w| w["authorization_policies"].as_array())
            .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        let held: Vec<&str> =
            dump["policies"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
        if listed == want && want.iter().all(|p| held.contains(p)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{workload} lists policies {listed:?} (agent holds {held:?}); waited for {want:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection from `client` to `server`'s `port`: whether the echo went through, and
/// whether the application saw it (an accept line).
fn connects(client: &Pod, server: &Pod, app: &Proc, port: u16) -> Result<bool> {
    let before = scenario::accepts(app);
    let r = scenario::echo(client, &format!("{}:{port}", server.ip()), 4096)?;
    let reached_app = scenario::accepts(app) > before;
    if r.ok() != reached_app {
        bail!(
            "{} -> {port}: echo {r:?} but the app saw {} new connections",
            client.name(),
            scenario::accepts(app) - before
        );
    }
    Ok(r.ok())
}

/// The agent's refusals of connections to `port` with `fields`, as logged.
fn denials(agent: &Agent, server: &Pod, port: u16, fields: &[(&str, &str)]) -> usize {
    let dst = format!("{}:{port}", server.ip());
    let mut all = vec![("dst.addr", dst.as_str())];
    all.extend_from_slice(fields);
    logs::matching(&agent.stderr(), DENIED, &all).len()
}

fn denied_total(agent: &Agent, labels: &[(&str, &str)]) -> Result<u64> {
    let mut all = vec![("reporter", "destination"), ("response_flags", "DENY")];
    all.extend_from_slice(labels);
    agent.metric("istio_tcp_connections_failed_total", &all)
}

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
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
  action: ALLOW
  rules:
  - from: [{ source: { namespaces: [front] } }]
    to: [{ operation: { ports: ["8080"] } }]
"#;

#[test]
fn deny_by_principal_allow_by_namespace_and_port_scoped_rules() -> Result<()> {
    let mut s = Scenario::new("policy_authz")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let web = s.bed.pod(&n1, "front", "web")?;
    let evil = s.bed.pod(&n1, "front", "evil")?;
    let other = s.bed.pod(&n1, "other", "other")?;
    let server = s.bed.pod(&n2, "shop", "server")?;
    s.config
        .namespace("front", true)
        .namespace("other", true)
        .namespace("shop", true)
        .pod(&web, "front", &[], &[])
        .pod(&evil, "front", &[], &[])
        .pod(&other, "other", &[], &[])
        .pod(&server, "shop", &[("app", "server")], &[HTTP_PORT, METRICS_PORT]);
    s.write_kubernetes_yaml(POLICY_FILE, POLICIES)?;
    s.config.write()?;
    let a1 = s.agent_with(&n1, json_logs())?;
    let a2 = s.agent_with(&n2, json_logs())?;
    a1.wait_enrolled(&["evil", "other", "web"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    wait_policies(&a2, "server", &["shop/front-on-8080", "shop/no-evil"])?;
    let app = scenario::serve(&server, "v1", &[HTTP_PORT, METRICS_PORT])?;

    // ALLOW by namespace, on its port.
    assert!(connects(&web, &server, &app, HTTP_PORT)?, "front/web may reach 8080\n{}", a2.stderr());
    // DENY by principal, although the ALLOW would let its namespace in.
    assert!(!connects(&evil, &server, &app, HTTP_PORT)?, "front/evil is denied");
    // The ALLOW is scoped to 8080: the same client on another port is denied.
    assert!(!connects(&web, &server, &app, METRICS_PORT)?, "9090 is not allowed to anyone");
    // Another namespace does not match the ALLOW.
    assert!(!connects(&other, &server, &app, HTTP_PORT)?, "other/other is not allowed");

    let evil_id = "spiffe://cluster.local/ns/front/sa/evil";
    let web_id = "spiffe://cluster.local/ns/front/sa/web";
    let other_id = "spiffe://cluster.local/ns/other/sa/other";
    let deny_matched = [("policy", "shop/no-evil"), ("reason", "a DENY policy matched")];
    let allow_missed = [("policy", "shop/front-on-8080"), ("reason", "the ALLOW policy did not match")];
    let log = a2.stderr();
    for (port, identity, why) in [
        (HTTP_PORT, evil_id, &deny_matched),
        (METRICS_PORT, web_id, &allow_missed),
        (HTTP_PORT, other_id, &allow_missed),
    ] {
        let mut fields = why.to_vec();
        fields.push(("src.identity", identity));
        assert_eq!(denials(&a2, &server, port, &fields), 1, "{identity} -> {port} logged as {why:?}:\n{log}");
    }
    assert_eq!(logs::matching(&log, DENIED, &[]).len(), 3, "one log line per refusal:\n{log}");
    assert_eq!(denied_total(&a2, &[])?, 3, "each refusal is counted");
    for identity in [evil_id, web_id, other_id] {
        assert_eq!(denied_total(&a2, &[("source_principal", identity)])?, 1, "{identity}");
    }
    assert_eq!(
        a2.metric("istio_tcp_connections_opened_total", &[("reporter", "destination")])?,
        1,
        "only the allowed connection was opened"
    );

    // Without the DENY policy the same client gets in: it was the policy that refused it.
    s.write_kubernetes_yaml(POLICY_FILE, POLICIES.split("---\n").nth(1).expect("two documents"))?;
    wait_policies(&a2, "server", &["shop/front-on-8080"])?;
    assert!(connects(&evil, &server, &app, HTTP_PORT)?, "front/evil is let in once no-evil is gone");
    assert_eq!(denied_total(&a2, &[])?, 3);
    Ok(())
}

fn peer_authentication(mesh: &str, shop: Option<&str>, port_9090: Option<&str>) -> String {
    let mut yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{ name: default, namespace: istio-system }}\nspec: {{ mtls: {{ mode: {mesh} }} }}\n"
    );
    if let Some(mode) = shop {
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{ name: default, namespace: shop }}\nspec: {{ mtls: {{ mode: {mode} }} }}\n"
        ));
    }
    if let Some(mode) = port_9090 {
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{ name: metrics-open, namespace: shop }}\n\
             spec:\n  selector: {{ matchLabels: {{ app: server }} }}\n  portLevelMtls: {{ {METRICS_PORT}: {{ mode: {mode} }} }}\n"
        ));
    }
    yaml
}

#[test]
fn strict_refuses_plaintext_from_outside_the_mesh_permissive_accepts_it() -> Result<()> {
    let mut s = Scenario::new("policy_peer_auth")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let web = s.bed.pod(&n1, "front", "web")?;
    let outsider = s.bed.pod(&n1, "legacy", "outsider")?;
    let server = s.bed.pod(&n2, "shop", "server")?;
    s.config
        .namespace("front", true)
        .namespace("shop", true)
        .namespace("legacy", false)
        .pod(&web, "front", &[], &[])
        .pod(&outsider, "legacy", &[], &[])
        .pod(&server, "shop", &[("app", "server")], &[HTTP_PORT, METRICS_PORT]);
    s.write_kubernetes_yaml(POLICY_FILE, &peer_authentication("PERMISSIVE", None, None))?;
    s.config.write()?;
    let a1 = s.agent_with(&n1, json_logs())?;
    let a2 = s.agent_with(&n2, json_logs())?;
    a1.wait_enrolled(&["web"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    wait_policies(&a2, "server", &[])?;
    let app = scenario::serve(&server, "v1", &[HTTP_PORT, METRICS_PORT])?;
    let outsider_ip = outsider.ip().to_string();

    // PERMISSIVE: plaintext from the unenrolled pod is accepted, through the agent.
    assert!(connects(&outsider, &server, &app, HTTP_PORT)?, "PERMISSIVE accepts plaintext\n{}", a2.stderr());
    let plaintext = [("reporter", "destination"), ("connection_security_policy", "none")];
    assert_eq!(a2.metric("istio_tcp_connections_opened_total", &plaintext)?, 1);
    assert!(connects(&web, &server, &app, HTTP_PORT)?, "mesh clients work under PERMISSIVE");

    // STRICT, mesh-wide: plaintext is refused before the app; mesh clients still work.
    let strict = "istio-system/istio_converted_static_strict";
    s.write_kubernetes_yaml(POLICY_FILE, &peer_authentication("STRICT", None, None))?;
    wait_policies(&a2, "server", &[strict])?;
    assert!(!connects(&outsider, &server, &app, HTTP_PORT)?, "STRICT refuses plaintext");
    assert!(!connects(&outsider, &server, &app, METRICS_PORT)?, "on every port");
    let mtls_required = "mTLS is required (PeerAuthentication STRICT) and the client connected in plaintext";
    let refused = [("policy", strict), ("reason", mtls_required), ("src.addr", outsider_ip.as_str())];
    for port in [HTTP_PORT, METRICS_PORT] {
        assert_eq!(denials(&a2, &server, port, &refused), 1, "refusal on {port} logged:\n{}", a2.stderr());
    }
    assert_eq!(denied_total(&a2, &[("connection_security_policy", "none")])?, 2);
    assert!(connects(&web, &server, &app, HTTP_PORT)?, "mesh clients work under STRICT\n{}", a2.stderr());
    assert!(connects(&web, &server, &app, METRICS_PORT)?);

    // STRICT for the server's namespace only, with one port of the workload PERMISSIVE.
    let converted = "shop/converted_peer_authentication_metrics-open";
    s.write_kubernetes_yaml(
        POLICY_FILE,
        &peer_authentication("PERMISSIVE", Some("STRICT"), Some("PERMISSIVE")),
    )?;
    wait_policies(&a2, "server", &[converted])?;
    assert!(connects(&outsider, &server, &app, METRICS_PORT)?, "the PERMISSIVE port accepts plaintext");
    assert!(!connects(&outsider, &server, &app, HTTP_PORT)?, "the namespace's STRICT holds on the others");
    let refused = [("policy", converted), ("reason", mtls_required), ("src.addr", outsider_ip.as_str())];
    assert_eq!(denials(&a2, &server, HTTP_PORT, &refused), 1, "{}", a2.stderr());
    assert_eq!(denied_total(&a2, &[])?, 3);
    assert!(connects(&web, &server, &app, HTTP_PORT)?, "mesh clients work");
    assert!(connects(&web, &server, &app, METRICS_PORT)?);
    Ok(())
}
