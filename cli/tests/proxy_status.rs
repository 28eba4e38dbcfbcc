//! `weftctl proxy-status` and `weftctl config-dump` against a real weftd process (reading a
//! YAML directory) with two real ADS clients on its secure port (TLS, bearer tokens): a
//! node agent that accepts everything and a waypoint that rejects its routes. weftctl reads
//! weftd's debug port, which needs no credentials. Loopback sockets only, no root.
//!
//! The weftd binary is another package's, so cargo does not build it for these tests: run
//! `cargo build --bins` first (`cargo xtask test` does). It is looked up beside this test's
//! executable, in target/<profile>/ (or in $WEFT_BIN_DIR).

use serde_json::Value;
use std::{
    process::{Command, Output},
    time::Duration,
};
use tokio::time::{Instant, sleep};
use weft_tests::weftd::LoopbackWeftd;
use weft_xds::{
    client::{AdsClient, Update},
    type_url,
};

const PATIENCE: Duration = Duration::from_secs(30);

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint } }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: bookinfo, labels: { app: reviews, version: v1 } }
spec: { nodeName: n1, containers: [{ name: reviews, image: reviews, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 198.18.1.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v2, namespace: bookinfo, labels: { app: reviews, version: v2 } }
spec: { nodeName: n2, containers: [{ name: reviews, image: reviews, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 198.18.2.2 }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 198.19.0.10, ports: [{ name: http, port: 9080, targetPort: 9080 }], selector: { app: reviews } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec: { host: reviews, subsets: [{ name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } }] }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 80 }
        - { destination: { host: reviews, subset: v2 }, weight: 20 }
"#;

/// What the waypoint says when it rejects its routes.
const REJECTION: &str = "route inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local: weighted clusters are not supported by this test proxy";

/// A weftd process on a YAML directory (see `LoopbackWeftd`).
struct Weftd {
    inner: LoopbackWeftd,
    _config: tempfile::TempDir,
}

impl std::ops::Deref for Weftd {
    type Target = LoopbackWeftd;
    fn deref(&self) -> &LoopbackWeftd {
        &self.inner
    }
}

impl Weftd {
    fn start(yaml: &str) -> Weftd {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write the mesh");
        let inner = LoopbackWeftd::local(&weft_tests::bins::path("weftd"), dir.path(), &[], "info");
        Weftd { inner, _config: dir }
    }

    /// Polls `/debug/syncz` until `done` holds for it.
    async fn until_syncz(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            if let Ok((200, body)) = self.get("/debug/syncz").await {
                if let Ok(Value::Array(proxies)) = serde_json::from_str(&body)
                    && done(&proxies)
                {
                    return;
                }
                last = body;
            }
            if let Some(status) = self.inner.exited() {
                panic!("weftd exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}; last syncz:\n{last}");
            sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Runs weftctl off the runtime's worker threads, so the ADS clients keep answering.
async fn weftctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_weftctl")).args(&args).output().expect("run weftctl")
    })
    .await
    .expect("weftctl task")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// A type's entry in one proxy's syncz record.
fn type_state<'a>(proxies: &'a [Value], proxy: &str, type_url: &str) -> Option<&'a Value> {
    proxies
        .iter()
        .find(|p| p["proxy_id"] == proxy)?
        .get("types")?
        .as_array()?
        .iter()
        .find(|t| t["type_url"] == type_url)
}

fn state_is(proxies: &[Value], proxy: &str, type_url: &str, state: &str) -> bool {
    type_state(proxies, proxy, type_url).is_some_and(|t| t["state"] == state)
}

/// The whitespace-separated cells of the table row of `proxy`.
fn row(table: &str, proxy: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(proxy))
        .unwrap_or_else(|| panic!("no row for {proxy}:\n{table}"));
    // "STALE (NACK)" is one cell.
    line.replace(" (NACK)", "_(NACK)").split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_shows_synced_agents_and_nacking_waypoints() {
    let mut weftd = Weftd::start(MESH);
    let agent_token = weftd.inner.node_token("n1");
    let waypoint_token = weftd.inner.service_account_token("bookinfo", "waypoint");

    let mut agent =
        weftd.client_config("agent-n1", &[type_url::ADDRESS, type_url::AUTHORIZATION], &agent_token);
    agent.node_name = Some("n1".into());
    let agent = AdsClient::start(agent, |_: Update| Ok(())).expect("agent");

    let types = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE, type_url::ENDPOINT];
    let mut waypoint = weftd.client_config("waypoint-bookinfo", &types, &waypoint_token);
    waypoint.namespace = Some("bookinfo".into());
    let waypoint = AdsClient::start(waypoint, |update: Update| {
        if update.type_url == type_url::ROUTE && !update.is_empty() {
            Err(REJECTION.to_owned())
        } else {
            Ok(())
        }
    })
    .expect("waypoint");

    weftd
        .until_syncz("agent synced, waypoint's routes rejected", |p| {
            state_is(p, "agent-n1", type_url::ADDRESS, "SYNCED")
                && state_is(p, "agent-n1", type_url::AUTHORIZATION, "SYNCED")
                && state_is(p, "waypoint-bookinfo", type_url::CLUSTER, "SYNCED")
                && state_is(p, "waypoint-bookinfo", type_url::LISTENER, "SYNCED")
                && state_is(p, "waypoint-bookinfo", type_url::ENDPOINT, "SYNCED")
                && type_state(p, "waypoint-bookinfo", type_url::ROUTE)
                    .is_some_and(|t| !t["last_nack"].is_null())
        })
        .await;

    let out = weftctl(&["proxy-status", "--weftd", &weftd.debug_url()]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}"); // shown with --nocapture, or when the test fails
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let header: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "NODE", "CDS", "LDS", "EDS", "RDS", "ADDRESS", "AUTHZ", "VERSION"],
        "{stdout}"
    );

    let agent_row = row(&stdout, "agent-n1");
    assert_eq!(
        agent_row[1..8],
        ["n1", "IGNORED", "IGNORED", "IGNORED", "IGNORED", "SYNCED", "SYNCED"],
        "{stdout}"
    );
    let waypoint_row = row(&stdout, "waypoint-bookinfo");
    assert_eq!(
        waypoint_row[1..8],
        ["bookinfo", "SYNCED", "SYNCED", "SYNCED", "STALE_(NACK)", "IGNORED", "IGNORED"],
        "{stdout}"
    );
    let nack = stdout
        .lines()
        .find(|l| l.starts_with("waypoint-bookinfo RDS NACK "))
        .unwrap_or_else(|| panic!("no NACK line:\n{stdout}"));
    assert!(nack.ends_with(&format!(": {REJECTION}")), "{nack}");
    assert_eq!(stdout.lines().filter(|l| l.contains(" NACK ")).count(), 1, "{stdout}");

    // The same through the environment variable, as JSON.
    let out = tokio::task::spawn_blocking({
        let url = weftd.debug_url();
        move || {
            Command::new(env!("CARGO_BIN_EXE_weftctl"))
                .args(["proxy-status", "-o", "json"])
                .env("WEFTD_DEBUG_ADDR", url)
                .output()
                .expect("run weftctl")
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json:#}");

    // config-dump: the agent's addresses, summarised.
    let out = weftctl(&["config-dump", "agent-n1", "--weftd", &weftd.debug_url()]).await;
    let dump = text(&out.stdout);
    println!("{dump}");
    assert_eq!(out.status.code(), Some(0), "{dump}{}", text(&out.stderr));
    assert!(dump.starts_with("proxy agent-n1 (connection "), "{dump}");
    assert!(dump.contains("\nADDRESS  type.googleapis.com/istio.workload.Address  sent "), "{dump}");
    assert!(dump.contains("\nAUTHZ  type.googleapis.com/istio.security.Authorization  sent "), "{dump}");
    for expected in [
        "workload 198.18.1.2 on n1, HBONE, services [bookinfo/reviews.bookinfo.svc.cluster.local]",
        "workload 198.18.2.2 on n2, HBONE",
        "service reviews.bookinfo.svc.cluster.local 198.19.0.10 ports 9080→9080",
    ] {
        assert!(dump.contains(expected), "{expected:?} missing:\n{dump}");
    }

    // The waypoint's Envoy resources, summarised.
    let out = weftctl(&["config-dump", "waypoint-bookinfo", "--weftd", &weftd.debug_url()]).await;
    let dump = text(&out.stdout);
    println!("{dump}");
    assert_eq!(out.status.code(), Some(0), "{dump}{}", text(&out.stderr));
    for expected in [
        "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local",
        // Mesh pods are reached over HBONE, through the connect_originate listener.
        "1 endpoint: 198.18.1.2:9080 via connect_originate\n",
        "2 endpoints: 198.18.1.2:9080 via connect_originate, 198.18.2.2:9080 via connect_originate\n",
        "connect_terminate",
        "0.0.0.0:15008, 1 filter chain\n",
        "internal, 1 filter chain\n",
        // The rejected routes: sent, never acknowledged, not held.
        "\nRDS  type.googleapis.com/envoy.config.route.v3.RouteConfiguration  sent 1  acked -  0 resources\n",
    ] {
        assert!(dump.contains(expected), "{expected:?} missing:\n{dump}");
    }

    // config-dump of one type, decoded in full: the waypoint's clusters.
    let out = weftctl(&[
        "config-dump",
        "waypoint-bookinfo",
        "--type",
        "cds",
        "--decode",
        "--weftd",
        &weftd.debug_url(),
    ])
    .await;
    let dump = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{dump}{}", text(&out.stderr));
    assert!(dump.contains("CDS  type.googleapis.com/envoy.config.cluster.v3.Cluster  sent "), "{dump}");
    assert!(!dump.contains("\nLDS "), "{dump}");
    assert!(
        dump.contains("--- inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local (version "),
        "{dump}"
    );
    assert!(dump.contains("Cluster {\n"), "{dump}");

    // The JSON carries the bodies. weftd dumps what the proxy holds: nothing of the
    // routes it rejected, but the version it was sent.
    // Clusters: main_internal, connect_originate, reviews and its two subsets.
    for (kind, type_url, count) in [("cds", type_url::CLUSTER, 5), ("rds", type_url::ROUTE, 0)] {
        let out = weftctl(&[
            "config-dump",
            "waypoint-bookinfo",
            "-o",
            "json",
            "--type",
            kind,
            "--weftd",
            &weftd.debug_url(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let types = json["types"].as_array().expect("types");
        assert_eq!(types.len(), 1, "{json:#}");
        assert_eq!(types[0]["type_url"], type_url);
        let resources = types[0]["resources"].as_array().expect("resources");
        assert_eq!(resources.len(), count, "{json:#}");
        assert!(resources.iter().all(|r| r["value_base64"].is_string()), "{json:#}");
        assert!(types[0]["sent_version"].is_string(), "{json:#}");
    }

    // A proxy weftd does not know: weftd's hint, exit 2.
    let out = weftctl(&["config-dump", "nobody", "--weftd", &weftd.debug_url()]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no proxy with id \"nobody\" is connected"), "{stderr}");
    assert!(stderr.contains("agent-n1"), "{stderr}");

    agent.stop().await;
    waypoint.stop().await;
}

#[test]
fn unreachable_weftd_exits_2_with_a_hint() {
    let url = format!("http://127.0.0.1:{}", weft_tests::weftd::free_port());
    for command in ["proxy-status", "config-dump x"] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.extend(["--weftd", &url]);
        let out = Command::new(env!("CARGO_BIN_EXE_weftctl")).args(&args).output().expect("run weftctl");
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot reach weftd at {url} ("))
                && stderr.contains("is it running? pass --weftd"),
            "{command}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
