//! The test bed and the test app, end to end: pods reach each other across nodes without
//! NAT, processes land in the right namespace and cgroup, and nothing is left behind, even
//! when a test panics. Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use weft_tests::bed::KEEP_ON_FAILURE_ENV;
use weft_tests::{Pod, Proc, Signal, TestBed};

const PORT: u16 = 9080;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn echo_and_hello_between_pods_on_the_same_and_on_different_nodes() {
    let bed = TestBed::new("echo_and_hello").unwrap();
    let n1 = bed.node("n1").unwrap();
    let n2 = bed.node("n2").unwrap();
    let server = bed.pod(&n1, "default", "reviews-v1").unwrap();
    let same_node = bed.pod(&n1, "default", "ratings").unwrap();
    let other_node = bed.pod(&n2, "default", "productpage").unwrap();
    let serving = serve(&server, "reviews", "v1");
    let to = format!("{}:{PORT}", server.ip());

    for client in [&same_node, &other_node] {
        let (status, echo) = run_client(client, &["echo", "--to", &to, "--bytes", "8388608"]);
        assert!(status.success(), "echo from {}: {echo}", client.name());
        assert_eq!(echo["ok"], true);
        assert_eq!(echo["received"], 8_388_608);
        assert_eq!(echo["peer"], to);

        let (status, hello) = run_client(client, &["hello", "--to", &to]);
        assert!(status.success(), "hello from {}: {hello}", client.name());
        let reply = hello["reply"].as_str().unwrap();
        let fields: Vec<&str> = reply.split(' ').collect();
        assert_eq!(fields[..2], ["reviews", "v1"], "reply {reply:?}");
        let peer: SocketAddr = fields[2].parse().unwrap();
        assert_eq!(peer.ip(), client.ip(), "the server must see the client's pod IP (no NAT)");
    }

    let accepted_from: Vec<String> = serving
        .stdout_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "accept")
        .map(|event| event["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accepted_from.len(), 4, "{accepted_from:?}");
    for client in [&same_node, &other_node] {
        let prefix = format!("{}:", client.ip());
        assert!(accepted_from.iter().any(|peer| peer.starts_with(&prefix)), "{accepted_from:?}");
    }
}

#[test]
fn pods_are_laid_out_as_the_kubelet_lays_them_out() {
    let bed = TestBed::new("pod_placement").unwrap();
    let n1 = bed.node("n1").unwrap();
    let pod = bed.pod(&n1, "default", "reviews-v1").unwrap();
    assert!(weft_model::is_pod_uid(pod.uid()), "{}", pod.uid());
    assert_eq!(pod.cgroup_path(), n1.cgroup_path().join(format!("kubepods/besteffort/pod{}", pod.uid())));
    assert_eq!(n1.kubepods_path(), n1.cgroup_path().join("kubepods"));

    // The sandbox's pause process holds the pod's namespace in the pod's cgroup.
    let pause = pod.pause_pid().expect("the pause process runs");
    assert_eq!(cgroup_of(pause), pod.cgroup_path().join("pause"));
    assert_eq!(netns_of(pause), file_identity(&pod.netns_path()));

    // Application processes: the app container's cgroup, below the node's cgroup where the
    // agent attaches its capture programs, and the pod's namespace.
    let in_pod = pod.spawn(sleep()).unwrap();
    assert_eq!(cgroup_of(in_pod.pid()), pod.app_cgroup_path());
    assert!(pod.app_cgroup_path().starts_with(n1.cgroup_path()));
    let members = std::fs::read_to_string(pod.app_cgroup_path().join("cgroup.procs")).unwrap();
    assert!(members.lines().any(|pid| pid == in_pod.pid().to_string()), "{members}");
    assert_eq!(netns_of(in_pod.pid()), file_identity(&pod.netns_path()));

    let on_node = n1.spawn(sleep()).unwrap();
    assert_eq!(netns_of(on_node.pid()), file_identity(&n1.netns_path()));
    assert!(
        !cgroup_of(on_node.pid()).starts_with(n1.cgroup_path()),
        "node processes stay out of the pods' cgroups"
    );

    // The CNI socket of the node is in the bed's own directory (no agent created it here).
    assert!(n1.cni_socket().starts_with(format!("/run/weft-testbed-cni/{}", bed.id())));
    assert!(!n1.cni_socket().exists());
}

#[test]
fn node_run_reaches_pods_over_http_from_the_node_gateway_address() {
    let bed = TestBed::new("node_run_http").unwrap();
    let n1 = bed.node("n1").unwrap();
    let pod = bed.pod(&n1, "default", "reviews-v2").unwrap();
    let _serving = serve(&pod, "reviews", "v2");

    let response = n1.run(|| {
        let mut stream = TcpStream::connect((pod.ip(), PORT)).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["name"], "reviews");
    assert_eq!(body["version"], "v2");
    let peer: SocketAddr = body["peer"].as_str().unwrap().parse().unwrap();
    assert_eq!(peer.ip(), n1.pod_gateway());

    // A panic inside `run` reaches the caller.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n1.run(|| panic!("inside"))));
    assert!(caught.is_err());
}

#[test]
fn a_refused_connection_is_reported_with_its_kind() {
    let bed = TestBed::new("refused").unwrap();
    let n1 = bed.node("n1").unwrap();
    let idle = bed.pod(&n1, "default", "idle").unwrap();
    let client = bed.pod(&n1, "default", "client").unwrap();
    let to = format!("{}:{PORT}", idle.ip());
    for args in [&["echo", "--to", &to, "--bytes", "10"][..], &["hello", "--to", &to]] {
        let (status, result) = run_client(&client, args);
        assert_eq!(status.code(), Some(2), "{result}");
        assert_eq!(result["ok"], false);
        assert_eq!(result["error"], "connect");
        assert_eq!(result["kind"], "ConnectionRefused");
    }
}

#[test]
fn benchmark_clients_print_their_results() {
    let bed = TestBed::new("bench_clients").unwrap();
    let n1 = bed.node("n1").unwrap();
    let n2 = bed.node("n2").unwrap();
    let server = bed.pod(&n1, "default", "server").unwrap();
    let client = bed.pod(&n2, "default", "client").unwrap();
    let _serving = serve(&server, "server", "v1");
    let to = format!("{}:{PORT}", server.ip());

    let (status, result) = run_client(&client, &["throughput", "--to", &to, "--secs", "1"]);
    assert!(status.success(), "{result}");
    assert!(result["bytes"].as_u64().unwrap() > 0, "{result}");
    assert!(result["gbit_per_s"].as_f64().unwrap() > 0.0, "{result}");

    let (status, result) = run_client(&client, &["latency", "--to", &to, "--count", "200", "--warmup", "10"]);
    assert!(status.success(), "{result}");
    assert_eq!(result["count"], 200);
    let (p50, p99) = (result["p50_us"].as_f64().unwrap(), result["p99_us"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{result}");

    let (status, result) = run_client(&client, &["connrate", "--to", &to, "--secs", "1", "--threads", "2"]);
    assert!(status.success(), "{result}");
    assert!(result["conns"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
}

#[test]
fn the_server_holds_two_thousand_connections() {
    let bed = TestBed::new("hold_2000").unwrap();
    let n1 = bed.node("n1").unwrap();
    let server = bed.pod(&n1, "default", "server").unwrap();
    let client = bed.pod(&n1, "default", "client").unwrap();
    let serving = serve(&server, "server", "v1");
    let to = format!("{}:{PORT}", server.ip());

    let mut hold = testapp(&["hold", "--to", &to, "--count", "2000"]);
    hold.stdin(Stdio::piped());
    let mut holding = client.spawn(hold).unwrap();
    holding.wait_for_line(|line| line.contains(r#""event":"holding""#), Duration::from_secs(60)).unwrap();
    let accepts = || serving.stdout_lines().iter().filter(|l| l.contains(r#""accept""#)).count();
    for _ in 0..500 {
        if accepts() >= 2000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(accepts(), 2000);

    // Held connections still get answers.
    let (status, hello) = run_client(&client, &["hello", "--to", &to]);
    assert!(status.success(), "{hello}");

    holding.close_stdin();
    let status = holding.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "hold exits 0 on stdin EOF: {status:?}");
}

#[test]
fn dropping_the_bed_removes_everything_and_kills_its_processes() {
    let bed = TestBed::new("drop_cleans_up").unwrap();
    let n1 = bed.node("n1").unwrap();
    let pod = bed.pod(&n1, "default", "reviews-v1").unwrap();
    let kept = pod.spawn(sleep()).unwrap();
    let leaked = n1.spawn(sleep()).unwrap();
    let leaked_pid = leaked.pid();
    std::mem::forget(leaked);
    let pin_dir = scratch_dir(bed.id());
    bed.register_cleanup_dir(&pin_dir).unwrap();
    let made = Made::of(&bed);

    drop(bed);
    made.assert_gone();
    assert!(!pin_dir.exists(), "registered cleanup dir {} is still there", pin_dir.display());
    assert!(!is_running(kept.pid()), "a Proc still held by the test is killed");
    assert!(!is_running(leaked_pid), "a leaked Proc is killed through the bed's registry");
    drop(kept);
}

#[test]
fn a_panicking_test_still_cleans_up() {
    if std::env::var_os(KEEP_ON_FAILURE_ENV).is_some() {
        eprintln!("skipped: {KEEP_ON_FAILURE_ENV} keeps failed beds on purpose");
        return;
    }
    let made = Mutex::new(None);
    let leaked_pid = Mutex::new(0);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bed = TestBed::new("panic_cleans_up").unwrap();
        let n1 = bed.node("n1").unwrap();
        let n2 = bed.node("n2").unwrap();
        let pod = bed.pod(&n2, "default", "reviews-v1").unwrap();
        let _running = serve(&pod, "reviews", "v1");
        let leaked = n1.spawn(sleep()).unwrap();
        *leaked_pid.lock().unwrap() = leaked.pid();
        std::mem::forget(leaked);
        *made.lock().unwrap() = Some(Made::of(&bed));
        panic!("a deliberate failure inside a test body");
    }));
    assert!(outcome.is_err());
    made.into_inner().unwrap().expect("the test body ran").assert_gone();
    assert!(!is_running(leaked_pid.into_inner().unwrap()));
}

#[test]
fn sweep_removes_namespaces_and_cgroups_no_bed_owns() {
    // Ensures the sweep that every process's first bed runs is over, so the leftovers made
    // below are removed by the explicit call.
    drop(TestBed::new("sweep_first").unwrap());
    let id = format!("{:06x}", (std::process::id() as u64 * 7919 + 0xa5a5) & 0xff_ffff);
    let netns = format!("wb{id}n1");
    let status = Command::new("ip").args(["netns", "add", &netns]).status().unwrap();
    assert!(status.success());
    let cgroup = cgroup2_mount().join(format!("weft-test-{id}"));
    std::fs::create_dir_all(cgroup.join("n1")).unwrap();
    let cni_dir = Path::new("/run/weft-testbed-cni").join(&id);
    std::fs::create_dir_all(cni_dir.join("n1")).unwrap();

    // Not asserting the count: a parallel test process's sweep may have got there first.
    TestBed::sweep_stale().unwrap();
    assert!(!netns_names().contains(&netns), "{netns} survived the sweep");
    assert!(!cgroup.exists(), "{} survived the sweep", cgroup.display());
    assert!(!cni_dir.exists(), "{} survived the sweep", cni_dir.display());
}

#[test]
fn describe_gives_a_way_into_every_namespace() {
    let bed = TestBed::new("describe").unwrap();
    let n1 = bed.node("n1").unwrap();
    let pod = bed.pod(&n1, "default", "reviews-v1").unwrap();
    let text = bed.describe();
    for path in [n1.netns_path(), pod.netns_path()] {
        let line = format!("nsenter --net={} bash", path.display());
        assert!(text.contains(&line), "{text}");
    }
    assert!(text.contains(&format!("pod reviews-v1 {}", pod.ip())), "{text}");
    assert!(text.contains(&format!("namespace default uid {}", pod.uid())), "{text}");
    let k = n1.index();
    assert!(text.contains(&format!("node n1 {}", Ipv4Addr::new(198, 18, 0, k))), "{text}");
    assert_eq!(pod.ip(), Ipv4Addr::new(198, 18, k, 2), "the first pod of node k is 198.18.k.2");
}

// ---- what the tests above share ----

fn testapp(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-testapp"));
    cmd.args(args);
    cmd
}

fn sleep() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("300");
    cmd
}

/// Starts `serve` on `PORT` in `pod` and waits until it listens.
fn serve(pod: &Pod, name: &str, version: &str) -> Proc {
    let port = PORT.to_string();
    let proc = pod.spawn(testapp(&["serve", "--name", name, "--version", version, "--port", &port])).unwrap();
    proc.wait_for_line(|line| line.contains(r#""event":"listening""#), Duration::from_secs(10)).unwrap();
    proc
}

/// Runs a testapp client in `pod` to the end; returns its exit status and result line.
fn run_client(pod: &Pod, args: &[&str]) -> (ExitStatus, Value) {
    let mut proc = pod.spawn(testapp(args)).unwrap();
    let Some(status) = proc.wait_timeout(CLIENT_TIMEOUT).unwrap() else {
        proc.kill(Signal::SIGKILL).unwrap();
        panic!("{args:?} did not finish in {CLIENT_TIMEOUT:?}: {}", proc.stderr_text());
    };
    let last = proc
        .stdout_lines()
        .pop()
        .unwrap_or_else(|| panic!("{args:?} printed nothing ({status}); stderr: {}", proc.stderr_text()));
    (status, serde_json::from_str(&last).unwrap())
}

/// What a bed made, to check after it is gone.
struct Made {
    id: String,
    cgroup: PathBuf,
}

impl Made {
    fn of(bed: &TestBed) -> Made {
        let id = bed.id().to_owned();
        assert!(netns_names().iter().any(|name| name.contains(&id)));
        assert!(bed.cgroup_path().is_dir());
        Made { id, cgroup: bed.cgroup_path().to_owned() }
    }

    fn assert_gone(&self) {
        let left: Vec<String> = netns_names().into_iter().filter(|name| name.contains(&self.id)).collect();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        assert!(!self.cgroup.exists(), "cgroup {} left behind", self.cgroup.display());
        assert!(!Path::new("/run/weft-testbed").join(&self.id).exists(), "state file left behind");
        assert!(
            !Path::new("/run/weft-testbed-cni").join(&self.id).exists(),
            "CNI socket directory left behind"
        );
    }
}

/// Names in `ip netns list` (which prints `NAME` or `NAME (id: N)`).
fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A process counts as gone once it has exited, even if no one has reaped it yet.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]), Some("Z" | "X")),
        Err(_) => false,
    }
}

fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields[2] == "cgroup2")
        .map(|fields| PathBuf::from(fields[1]))
        .expect("cgroup2 is mounted")
}

/// The absolute cgroup v2 directory of a process.
fn cgroup_of(pid: u32) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let relative = text.lines().find_map(|line| line.strip_prefix("0::")).unwrap();
    cgroup2_mount().join(relative.trim_start_matches('/'))
}

fn netns_of(pid: u32) -> (u64, u64) {
    file_identity(Path::new(&format!("/proc/{pid}/ns/net")))
}

fn file_identity(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// A directory standing in for the agent's bpffs pin directory.
fn scratch_dir(id: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-test-pins-{id}"));
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    std::fs::write(dir.join("maps/conntrack"), "pinned").unwrap();
    dir
}
