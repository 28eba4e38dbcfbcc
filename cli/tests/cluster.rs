//! weftctl against a cluster: the real weftctl binary and a real weftd (Kubernetes mode,
//! its waypoint controller on) on the fake API server of `weft_tests::kubeapi`, reached
//! with `--kube-url`. `waypoint apply` → weftd programs the Gateway → the namespace is
//! labelled; an existing `istio.io/use-waypoint` is refused without `--overwrite`; `list`
//! and `status` print istioctl's tables; `delete` takes the Deployment and Service with the
//! Gateway; `analyze --cluster` reads the API server's objects; `proxy-status --cluster`
//! finds weftd through its Service and EndpointSlice; on a terminal the wait is a spinner.
//! Loopback only, no root.
//!
//! The weftd binary is another package's: run `cargo build --bins` first (`cargo xtask
//! test` does).

use serde_json::{Value, json};
use std::{process::Output, time::Duration};
use weft_tests::kubeapi::FakeApiServer;
use weft_tests::poll::until;
use weft_tests::weftd::LoopbackWeftd;

const PATIENCE: Duration = Duration::from_secs(30);

async fn start_weftd(server: &FakeApiServer) -> LoopbackWeftd {
    let args = ["--kubernetes-url".as_ref(), server.url().as_ref()];
    let mut weftd = LoopbackWeftd::start(&weft_tests::bins::path("weftd"), &args, "info");
    weftd.wait_ready(PATIENCE).await;
    weftd
}

/// Runs weftctl with `--kube-url` off the runtime's threads (the fake server runs on it).
async fn weftctl(server: &FakeApiServer, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--kube-url".into(), server.url().to_owned()]);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weftctl")).args(&all).output().expect("run weftctl")
    })
    .await
    .expect("weftctl task")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn namespace(server: &FakeApiServer, name: &str, labels: Value) {
    server.apply(
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } }),
    );
}

#[tokio::test]
async fn waypoint_apply_enrolls_the_namespace_once_programmed() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "bookinfo", json!({ "istio.io/dataplane-mode": "ambient" }));
    let _weftd = start_weftd(&server).await;

    let out =
        weftctl(&server, &["waypoint", "apply", "-n", "bookinfo", "--enroll-namespace", "--for", "service"])
            .await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out),
        "✅ waypoint bookinfo/waypoint applied\n✅ waypoint bookinfo/waypoint is ready!\n\
         ✅ namespace bookinfo labeled with \"istio.io/use-waypoint: waypoint\"\n"
    );
    // Not a terminal: the wait is shown as plain lines.
    assert!(!stderr(&out).contains('\r'), "{}", stderr(&out));
    let ns = server.object("Namespace", None, "bookinfo").unwrap();
    assert_eq!(ns["metadata"]["labels"]["istio.io/use-waypoint"], "waypoint");
    assert_eq!(ns["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient", "the other labels stay");
    let gw = server.object("Gateway.gateway.networking.k8s.io", Some("bookinfo"), "waypoint").unwrap();
    assert_eq!(gw["spec"]["gatewayClassName"], "weft-waypoint");
    assert_eq!(gw["metadata"]["labels"]["istio.io/waypoint-for"], "service");
    assert_eq!(gw["metadata"]["managedFields"][0]["manager"], "weftctl");
    assert!(server.object("Deployment", Some("bookinfo"), "waypoint").is_some());

    let list = weftctl(&server, &["waypoint", "list", "-n", "bookinfo"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(
        stdout(&list),
        "NAME       REVISION   TRAFFIC TYPE   PROGRAMMED\nwaypoint   default    service        True\n"
    );
    let all = weftctl(&server, &["waypoint", "list", "-A"]).await;
    assert!(stdout(&all).starts_with("NAMESPACE   NAME"), "{}", stdout(&all));
    assert!(stdout(&all).contains("bookinfo    waypoint"), "{}", stdout(&all));

    let status = weftctl(&server, &["waypoint", "status", "-n", "bookinfo"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    let lines: Vec<String> = stdout(&status).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("NAME       STATUS   TYPE         REASON       MESSAGE"), "{lines:?}");
    assert!(
        lines[1].starts_with("waypoint   True     Programmed   Programmed   Resource programmed, assigned to service(s) waypoint.bookinfo.svc.cluster.local:15008"),
        "{lines:?}"
    );

    // Another waypoint may not take the namespace over without --overwrite.
    let refused =
        weftctl(&server, &["waypoint", "apply", "-n", "bookinfo", "--name", "second", "--enroll-namespace"])
            .await;
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("namespace (bookinfo) already has an enrolled waypoint (istio.io/use-waypoint=waypoint); add --overwrite"),
        "{}",
        stderr(&refused)
    );
    assert!(
        server.object("Gateway.gateway.networking.k8s.io", Some("bookinfo"), "second").is_none(),
        "nothing applied"
    );
    let overwritten = weftctl(
        &server,
        &["waypoint", "apply", "-n", "bookinfo", "--name", "second", "--enroll-namespace", "--overwrite"],
    )
    .await;
    assert!(overwritten.status.success(), "{}", stderr(&overwritten));
    let ns = server.object("Namespace", None, "bookinfo").unwrap();
    assert_eq!(ns["metadata"]["labels"]["istio.io/use-waypoint"], "second");

    // Delete: the Gateway, and through its ownerReferences what weftd made for it.
    let deleted = weftctl(&server, &["waypoint", "delete", "waypoint", "nothere", "-n", "bookinfo"]).await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_eq!(stdout(&deleted), "waypoint bookinfo/nothere not found\nwaypoint bookinfo/waypoint deleted\n");
    for kind in ["Deployment", "Service", "ServiceAccount", "Gateway.gateway.networking.k8s.io"] {
        assert!(server.object(kind, Some("bookinfo"), "waypoint").is_none(), "{kind} left behind");
    }
    assert!(server.object("Deployment", Some("bookinfo"), "second").is_some());
    let all = weftctl(&server, &["waypoint", "delete", "--all", "-n", "bookinfo"]).await;
    assert_eq!(stdout(&all), "waypoint bookinfo/second deleted\n");
    let none = weftctl(&server, &["waypoint", "list", "-n", "bookinfo"]).await;
    assert_eq!(stdout(&none), "No waypoints found.\n");
}

#[tokio::test]
async fn waypoint_apply_warns_outside_the_mesh_and_reports_a_refused_gateway() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "plain", json!({}));
    let _weftd = start_weftd(&server).await;
    let out = weftctl(&server, &["waypoint", "apply", "-n", "plain", "--wait"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("⚠️ Warning: namespace is not enrolled in ambient."),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("kubectl label namespace plain istio.io/dataplane-mode=ambient"));
    assert!(stdout(&out).ends_with("✅ waypoint plain/waypoint is ready!\n"), "{}", stdout(&out));

    let missing = weftctl(&server, &["waypoint", "apply", "-n", "nosuch"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("namespace: nosuch not found"), "{}", stderr(&missing));
    let reserved = weftctl(&server, &["waypoint", "apply", "-n", "plain", "--name", "none"]).await;
    assert!(stderr(&reserved).contains("'none' is a reserved value"), "{}", stderr(&reserved));

    // A Gateway weftd refuses: the wait ends with weftd's reason instead of a timeout.
    server.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "broken", "namespace": "plain" },
        "spec": { "gatewayClassName": "weft-waypoint", "listeners": [{ "name": "mesh", "port": 80, "protocol": "HTTP" }] },
    }));
    until(PATIENCE, "broken's status", || {
        server
            .object("Gateway.gateway.networking.k8s.io", Some("plain"), "broken")
            .and_then(|g| g.get("status").cloned())
    })
    .await;
    let status = weftctl(&server, &["waypoint", "status", "-n", "plain", "broken"]).await;
    assert!(
        stdout(&status)
            .contains("broken   False    Accepted   ListenersNotValid   Expected a single listener"),
        "{}",
        stdout(&status)
    );
}

#[tokio::test]
async fn analyze_and_proxy_status_against_the_cluster() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "bookinfo", json!({ "istio.io/dataplane-mode": "ambient" }));
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": { "hosts": ["reviews"], "http": [{ "route": [{ "destination": { "host": "reviews" }, "weight": -1 }] }] },
    }));
    let analysis = weftctl(&server, &["analyze", "--cluster"]).await;
    assert_eq!(analysis.status.code(), Some(1), "{}\n{}", stdout(&analysis), stderr(&analysis));
    assert!(stdout(&analysis).contains("VirtualService/bookinfo/reviews"), "{}", stdout(&analysis));
    assert!(stdout(&analysis).contains("kubernetes (resourceVersion"), "{}", stdout(&analysis));
    assert!(stderr(&analysis).contains("in the cluster"), "{}", stderr(&analysis));
    server.delete("VirtualService", Some("bookinfo"), "reviews");
    let clean = weftctl(&server, &["analyze", "--cluster"]).await;
    assert!(clean.status.success(), "{}", stdout(&clean));
    assert!(
        stderr(&clean).contains("No validation issues found when analyzing the cluster"),
        "{}",
        stderr(&clean)
    );

    // proxy-status finds weftd through its Service's debug port on a ready endpoint.
    let weftd = start_weftd(&server).await;
    let missing = weftctl(&server, &["proxy-status", "--cluster"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no Service istio-system/weftd"), "{}", stderr(&missing));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "weftd", "namespace": "istio-system" },
        "spec": { "clusterIP": "198.19.0.1", "selector": { "app": "weftd" },
                  "ports": [{ "name": "grpc-xds", "port": 15012 }, { "name": "http-monitoring", "port": 15014 }] },
    }));
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "weftd-abc", "namespace": "istio-system", "labels": { "kubernetes.io/service-name": "weftd" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
        "ports": [{ "name": "grpc-xds", "port": weftd.secure.port() }, { "name": "http-monitoring", "port": weftd.debug.port() }],
    }));
    let status = weftctl(&server, &["proxy-status", "--cluster", "-o", "json"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(serde_json::from_slice::<Value>(&status.stdout).unwrap(), json!([]));
    let dump = weftctl(&server, &["config-dump", "nobody", "--cluster"]).await;
    assert_eq!(dump.status.code(), Some(2));
    assert!(!stderr(&dump).contains("cannot reach weftd"), "weftd was reached: {}", stderr(&dump));
}

/// On a terminal the wait is a spinner line rewritten in place; with no weftd to program
/// the waypoint it ends at --waypoint-timeout, saying what it last saw. (`script`, from
/// util-linux, gives weftctl a pseudo-terminal.)
#[tokio::test]
async fn the_wait_shows_a_spinner_on_a_terminal_and_times_out_with_the_last_state() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "bookinfo", json!({ "istio.io/dataplane-mode": "ambient" }));
    let command = format!(
        "{} waypoint apply -n bookinfo --wait --waypoint-timeout 3s --kube-url {}",
        env!("CARGO_BIN_EXE_weftctl"),
        server.url()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .output()
            .expect("run script")
    })
    .await
    .unwrap();
    let screen = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("\r\x1b[2K⠋ waiting for waypoint bookinfo/waypoint to be programmed (0s)"),
        "{screen:?}"
    );
    assert!(screen.contains("⠙ waiting for waypoint bookinfo/waypoint to be programmed (1s)"), "{screen:?}");
    assert!(
        screen.contains(
            "timed out while waiting for waypoint bookinfo/waypoint after 3s: no status yet (is weftd running in Kubernetes mode?)"
        ),
        "{screen:?}"
    );
}
