//! End-to-end: the agent failing, restarting, draining, and bad configuration. Enrolled
//! traffic fails closed; it never bypasses the mesh: a transfer in flight through HBONE
//! breaks when either agent dies, and is never finished around it.

use anyhow::Result;
use std::time::{Duration, Instant};
use weft_tests::{
    Signal,
    scenario::{self, Scenario},
};

const APP_PORT: u16 = 9080;

#[test]
fn killed_agent_fails_closed_and_a_restarted_one_serves_within_5s() -> Result<()> {
    let mut s = Scenario::new("fail_sigkill")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let outsider = s.bed.pod(&n1, "legacy", "outsider")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config
        .namespace("mesh", true)
        .namespace("legacy", false)
        .pod(&client, "mesh", &[], &[])
        .pod(&server, "mesh", &[], &[APP_PORT])
        .pod(&outsider, "legacy", &[], &[]);
    s.config.write()?;
    let mut a1 = s.agent(&n1)?;
    let mut a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());
    assert!(scenario::echo(&client, &to, 4096)?.ok());
    assert!(
        scenario::echo(&outsider, &to, 4096)?.ok(),
        "an unenrolled client reaches the enrolled server through its agent"
    );
    assert_eq!(scenario::accepts(&srv), 2);

    // Outbound: the client's agent dies. Its pod's connections are refused; nothing
    // reaches the server directly.
    a1.kill(Signal::SIGKILL)?;
    a1.proc().wait_timeout(Duration::from_secs(5))?;
    let r = scenario::echo(&client, &to, 4096)?;
    assert!(!r.ok(), "an enrolled pod's connection must not succeed without its agent: {r:?}");
    assert_eq!(r.error_kind(), Some("ConnectionRefused"), "{r:?}");
    assert_eq!(scenario::accepts(&srv), 2, "nothing went out directly");

    // Inbound: the server's agent dies. Connections to the enrolled server are refused,
    // never handed to the app outside the mesh.
    a2.kill(Signal::SIGKILL)?;
    a2.proc().wait_timeout(Duration::from_secs(5))?;
    let r = scenario::echo(&outsider, &to, 4096)?;
    assert!(!r.ok(), "{r:?}");
    assert_eq!(r.error_kind(), Some("ConnectionRefused"), "{r:?}");
    assert_eq!(scenario::accepts(&srv), 2, "the app saw no connection while its agent was down");

    // Both come back: the pinned programs and maps are re-adopted.
    let started = Instant::now();
    a1.restart()?;
    a2.restart()?;
    loop {
        let out = scenario::echo(&client, &to, 4096)?;
        let inb = scenario::echo(&outsider, &to, 4096)?;
        if out.ok() && inb.ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not serving 5 s after restart: {out:?} {inb:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let via = [("reporter", "source"), ("source_workload", "client")];
    assert!(a1.metric("istio_tcp_connections_opened_total", &via)? >= 1, "through the restarted agent");
    Ok(())
}

/// Starts `steady` (one connection, a checked 4 KiB echo every 50 ms) from `client` and
/// waits until its first chunk came back.
fn steady_transfer(client: &weft_tests::Pod, to: &str, secs: u64) -> Result<weft_tests::Proc> {
    let mut cmd = std::process::Command::new(weft_tests::bins::path("weft-testapp"));
    cmd.args(["steady", "--to", to, "--secs", &secs.to_string(), "--interval-ms", "50"]);
    let transfer = client.spawn(cmd)?;
    transfer.wait_for_line(|l| l.contains("\"streaming\""), Duration::from_secs(10))?;
    Ok(transfer)
}

/// Waits for a transfer that must break, and returns its result line.
fn broken(transfer: &mut weft_tests::Proc, why: &str) -> Result<serde_json::Value> {
    let status = transfer
        .wait_timeout(Duration::from_secs(15))?
        .unwrap_or_else(|| panic!("{why}: the transfer neither broke nor ended within 15 s"));
    let line = transfer.stdout_lines().pop().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&line)?;
    assert!(!status.success() && json["ok"] == false, "{why}: the transfer must fail, not complete: {line}");
    Ok(json)
}

#[test]
fn killed_agent_breaks_hbone_transfers_in_flight_refuses_new_ones_and_recovers() -> Result<()> {
    let mut s = Scenario::new("fail_hbone_kill")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let mut a1 = s.agent(&n1)?;
    let mut a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());
    let via_hbone =
        [("reporter", "destination"), ("source_principal", "spiffe://cluster.local/ns/mesh/sa/client")];

    for side in ["client", "server"] {
        // A cross-node transfer through HBONE, in flight when the agent is killed.
        let accepted = scenario::accepts(&srv);
        let through_hbone = a2.metric("istio_tcp_connections_opened_total", &via_hbone)?;
        let mut transfer = steady_transfer(&client, &to, 30)?;
        std::thread::sleep(Duration::from_millis(500));
        let agent = if side == "client" { &mut a1 } else { &mut a2 };
        agent.kill(Signal::SIGKILL)?;
        agent.proc().wait_timeout(Duration::from_secs(5))?;
        let json = broken(&mut transfer, &format!("the {side}'s agent was killed"))?;
        assert!(json["chunks"].as_u64().unwrap_or(0) < 30 * 20, "{json}");

        // While it is down, new connections fail closed: nothing reaches the server.
        let r = scenario::echo(&client, &to, 4096)?;
        assert!(!r.ok(), "a connection must not succeed while the {side}'s agent is down: {r:?}");
        // Refused in the pod's own netns when its agent is gone; reset by the client's
        // agent when the server's is gone (its HBONE dial to :15008 failed).
        let kind = if side == "client" { "ConnectionRefused" } else { "ConnectionReset" };
        assert_eq!(r.error_kind(), Some(kind), "{r:?}");
        assert_eq!(scenario::accepts(&srv), accepted + 1, "only the transfer reached the application");

        // Restarted, it serves again within seconds.
        let started = Instant::now();
        agent.restart()?;
        loop {
            let r = scenario::echo(&client, &to, 4096)?;
            if r.ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not serving 5 s after the {side}'s agent restarted: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Through HBONE, as the client: the restarted agents did not fall back to plain TCP.
        // (A restarted server agent counts from zero.)
        let now = a2.metric("istio_tcp_connections_opened_total", &via_hbone)?;
        let expected = if side == "server" { 1 } else { through_hbone + 2 };
        assert!(now >= expected, "connections via HBONE on the server's agent: {now}, want {expected}");
    }
    Ok(())
}

#[test]
fn sigterm_during_a_transfer_lets_it_complete() -> Result<()> {
    let mut s = Scenario::new("fail_sigterm")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let mut a1 = s.agent(&n1)?;
    let _a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());

    // A transfer long enough to be in flight when the signal lands.
    let mut transfer = {
        let mut cmd = std::process::Command::new(weft_tests::bins::path("weft-testapp"));
        cmd.args(["throughput", "--to", &to, "--secs", "3"]);
        client.spawn(cmd)?
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while scenario::accepts(&srv) == 0 {
        assert!(Instant::now() < deadline, "transfer never reached the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    a1.kill(Signal::SIGTERM)?;

    // New connections are refused while draining (fail closed)…
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = scenario::echo(&client, &to, 1024)?;
        if r.error_kind() == Some("ConnectionRefused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "draining agent still accepts new connections: {r:?}\n{}",
            a1.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // …and the one in flight completes.
    let status = transfer.wait_timeout(Duration::from_secs(30))?.expect("transfer finished");
    let line = transfer.stdout_lines().pop().unwrap_or_default();
    assert!(status.success(), "transfer failed across SIGTERM: {line}\n{}", transfer.stderr_text());
    let json: serde_json::Value = serde_json::from_str(&line)?;
    assert!(json["bytes"].as_u64().unwrap_or(0) > 0, "{line}");
    let exit = a1.proc().wait_timeout(Duration::from_secs(10))?.expect("agent exits after draining");
    assert!(exit.success(), "agent exit {exit:?}: {}", a1.stderr());
    assert!(a1.stderr().contains("drained"), "{}", a1.stderr());
    Ok(())
}

#[test]
fn corrupt_config_is_reported_and_the_last_good_one_stays_in_force() -> Result<()> {
    let mut s = Scenario::new("fail_corrupt")?;
    let n1 = s.bed.node("n1")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n1, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent_local(&n1)?;
    a1.wait_enrolled(&["client", "server"], Duration::from_secs(10))?;
    let _srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());

    s.config.write_raw("namespaces:\n  - name: mesh\n    labels: [not, a, map\npods: {}\n")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = loop {
        let dump = a1.config_dump()?;
        if let Some(e) = dump["model_source"]["last_error"].as_str() {
            break e.to_owned();
        }
        assert!(Instant::now() < deadline, "corrupt config not reported");
        std::thread::sleep(Duration::from_millis(50));
    };
    let path = s.config.path().display().to_string();
    assert!(error.contains(&format!("{path}:")), "error names the file and line: {error}");
    assert!(a1.stderr().contains("local config rejected"), "logged: {}", a1.stderr());
    assert_eq!(a1.metric("weft_config_rejected_total", &[])?, 1);

    // The old model is still in force: both pods enrolled, traffic still captured.
    a1.wait_enrolled(&["client", "server"], Duration::from_secs(1))?;
    assert!(scenario::echo(&client, &to, 65536)?.ok());
    assert_eq!(a1.metric("istio_tcp_connections_opened_total", &[("reporter", "source")])?, 1);

    // A semantically invalid file (two pods, one IP) is refused the same way.
    s.config.write_raw(&format!(
        "pods:\n - {{name: a, namespace: x, ip: {ip}, node: n1}}\n - {{name: b, namespace: x, ip: {ip}, node: n1}}\n",
        ip = client.ip()
    ))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while a1.metric("weft_config_rejected_total", &[])? < 2 {
        assert!(Instant::now() < deadline, "invalid config not rejected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dump = a1.config_dump()?;
    let e = dump["model_source"]["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("Pod/x/b") && e.contains("field ip"), "{e}");
    a1.wait_enrolled(&["client", "server"], Duration::from_secs(1))?;

    // Fixed again: accepted, error cleared.
    s.config.write()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a1.config_dump()?["model_source"]["last_error"].is_null() {
        assert!(Instant::now() < deadline, "fixed config not accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_failed_attach_is_a_loud_startup_error_never_a_silent_pass_through() -> Result<()> {
    let mut s = Scenario::new("fail_attach")?;
    let n1 = s.bed.node("n1")?;
    s.config.namespace("mesh", true);
    s.config.write()?;
    let bpffs_dir = format!("/sys/fs/bpf/weft-test-{}-n1", s.bed.id());
    s.bed.register_cleanup_dir(&bpffs_dir)?;
    let run = |cgroup: &str| -> Result<(i32, String)> {
        let mut cmd = std::process::Command::new(weft_tests::bins::path("weft-agent"));
        cmd.args(["run", "--node", "n1", "--cgroup", cgroup, "--bpffs-dir", &bpffs_dir])
            .arg("--local-config")
            .arg(s.config.path());
        let mut agent = n1.spawn(cmd)?;
        let status = agent.wait_timeout(Duration::from_secs(20))?.expect("agent exits");
        Ok((status.code().unwrap_or(-1), agent.stderr_text()))
    };

    // Not a cgroup at all: refused before anything is loaded, with the usage exit code.
    let (code, stderr) = run("/tmp")?;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--cgroup /tmp: not a cgroup v2 directory"), "{stderr}");

    // A cgroup v1 hierarchy passes the cheap check, but the kernel refuses to attach there:
    // the agent must stop and say so, not run without capture.
    let v1 = ["cpu", "memory", "pids"]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}"))
        .find(|p| std::path::Path::new(p).join("cgroup.procs").exists() && !p.contains("unified"));
    let v1 = v1.expect(
        "this test provokes a kernel attach failure with a cgroup v1 hierarchy, and this machine has none mounted",
    );
    let (code, stderr) = run(&v1)?;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("cannot attach weft_connect4 at {v1}")), "{stderr}");
    Ok(())
}
