//! The real `weft-waypoint` binary: its command line, and a run against an in-process
//! control plane (ADS and CA on one plaintext port, as weftd's debugging setup) that ends
//! with a request routed through it over HBONE.

mod support;

use http::StatusCode;
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};
use support::{Ads, Backend, Client, NS};
use weft_hbone::testing::TestCa;

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free now (the binary binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn bad_flags_exit_with_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-waypoint"))
        .args(["--xds-address", "http://127.0.0.1:1", "--ca-root-cert", "/nonexistent/root.pem"])
        .args(["--namespace", NS, "--service-account", "waypoint"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ca-root-cert /nonexistent/root.pem: no such file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_gets_its_certificate_and_config_from_the_control_plane_and_routes() {
    let stdout = route_through_the_binary(&[]).await;
    assert_eq!(stdout, "", "no access log unless asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_json_lines_on_stdout_with_the_flag() {
    let stdout = route_through_the_binary(&["--access-log"]).await;
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let ok =
        lines.iter().find(|l| l["response_code"] == 200).unwrap_or_else(|| panic!("no 200 logged: {stdout}"));
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v2/from-the-binary");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["authority"], "reviews.bookinfo.svc.cluster.local");
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["bytes_sent"], "reviews-v2 /v2/from-the-binary HTTP/2.0".len());
    assert_eq!(ok["upstream_host"], "127.0.0.3:8080");
    assert_eq!(ok["downstream_local_address"], "10.96.0.10:80");
    for field in ["start_time", "duration", "bytes_received", "downstream_remote_address", "upstream_cluster"]
    {
        assert!(ok.get(field).is_some(), "{field} missing: {ok}");
    }
}

/// Runs the binary (with `extra` flags) against an in-process control plane until a
/// request is routed through it; returns what it wrote on stdout.
async fn route_through_the_binary(extra: &[&str]) -> String {
    let ca = Arc::new(TestCa::new());
    let (v1, hbone_port) = Backend::start(&ca, "reviews-v1", "127.0.0.2:8080".parse().unwrap(), 0).await;
    let (v2, _) = Backend::start(&ca, "reviews-v2", "127.0.0.3:8080".parse().unwrap(), hbone_port).await;
    let ads = Ads::start_with_ca(Some(ca.clone())).await;
    ads.server.publish(support::snapshot("v1", hbone_port, support::main_internal(), &[&v1, &v2])).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let hbone: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("http://{}", ads.addr);
    let mut waypoint = Process(
        Command::new(env!("CARGO_BIN_EXE_weft-waypoint"))
            .args(["--xds-address", &url, "--ca-root-cert", root.to_str().unwrap()])
            .args(["--namespace", NS, "--service-account", "waypoint", "--cert-ttl", "1h"])
            .args(["--hbone-address", &hbone.to_string(), "--admin-address", &admin.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = waypoint.0.stdout.take().expect("piped stdout");
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        if admin_get(admin, "/ready").await.is_some_and(|(s, _)| s == StatusCode::OK) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the waypoint never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, dump) = admin_get(admin, "/config_dump").await.unwrap();
    assert!(dump.contains("spiffe://cluster.local/ns/bookinfo/sa/waypoint"), "{dump}");
    // Ready means listeners and clusters; the route table follows by name.
    let client = Client::new(&ca, hbone);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let a = client.h1("GET", "/v2/from-the-binary", "").await;
        if a.status == StatusCode::OK {
            assert_eq!(a.body, "reviews-v2 /v2/from-the-binary HTTP/2.0");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never routed: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted (and logged) when the response ends: wait until the metrics show it, then
    // stop the binary and read all it wrote.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (_, stats) = admin_get(admin, "/stats/prometheus").await.unwrap();
        if stats
            .lines()
            .any(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the request was never counted: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(waypoint);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    out
}

async fn admin_get(admin: SocketAddr, path: &str) -> Option<(StatusCode, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
