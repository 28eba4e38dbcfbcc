//! End-to-end: workload certificates rotate under traffic. Agents ask for 30-second
//! certificates, so over a two-minute transfer each identity is renewed about ten times
//! (at half life); the transfer, a single connection, must come through intact, and new
//! connections must keep working with the fresh certificates.

use anyhow::{Context, Result};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};
use weft_tests::{
    agent::{Agent, AgentOptions},
    bins,
    scenario::{self, Scenario},
};

const APP_PORT: u16 = 9080;
const TTL_SECS: u64 = 30;
const TRANSFER_SECS: u64 = 120;

/// One look at the certificate an agent holds for `identity`.
#[derive(Debug, Clone)]
struct Seen {
    serial: String,
    rotations: u64,
    expiry: u64,
}

fn certificate(agent: &Agent, identity: &str) -> Result<Seen> {
    let dump = agent.config_dump()?;
    let certs = dump["certificates"].as_array().context("config_dump has no certificates")?;
    let c = certs
        .iter()
        .find(|c| c["identity"] == identity)
        .with_context(|| format!("no certificate for {identity} in {certs:?}"))?;
    anyhow::ensure!(c["state"] == "valid", "the certificate of {identity} is not valid: {c}");
    Ok(Seen {
        serial: c["serial"].as_str().context("serial")?.to_owned(),
        rotations: c["rotations"].as_u64().context("rotations")?,
        expiry: c["expiry"].as_u64().context("expiry")?,
    })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs()
}

#[test]
fn certificates_rotate_under_a_two_minute_transfer_which_stays_intact() -> Result<()> {
    let mut s = Scenario::new("rotation")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let short =
        AgentOptions { args: vec!["--cert-ttl".into(), format!("{TTL_SECS}s")], ..Default::default() };
    let a1 = s.agent_with(&n1, short.clone())?;
    let a2 = s.agent_with(&n2, short)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());
    let (client_id, server_id) =
        ("spiffe://cluster.local/ns/mesh/sa/client", "spiffe://cluster.local/ns/mesh/sa/server");

    // The certificates are as short as asked: weftd honoured the TTL (its validity starts
    // a little before now, for clock skew).
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match (certificate(&a1, client_id), certificate(&a2, server_id)) {
            (Ok(c), Ok(s)) => break (c, s),
            (c, s) if Instant::now() > deadline => anyhow::bail!("no certificates: {c:?} {s:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    for seen in [&first.0, &first.1] {
        assert!(
            seen.expiry <= unix_now() + TTL_SECS + 1,
            "a {TTL_SECS} s certificate was asked for: {seen:?}"
        );
    }

    // One connection for two minutes: a 4 KiB chunk every 100 ms, each echo checked.
    let mut transfer = {
        let mut cmd = std::process::Command::new(bins::path("weft-testapp"));
        cmd.args(["steady", "--to", &to, "--secs", &TRANSFER_SECS.to_string()]).args([
            "--interval-ms",
            "100",
            "--chunk",
            "4096",
        ]);
        client.spawn(cmd)?
    };
    transfer
        .wait_for_line(|l| l.contains("\"streaming\""), Duration::from_secs(10))
        .with_context(|| format!("the transfer did not start:\n{}", a1.stderr()))?;

    // Meanwhile: new connections every ten seconds, and the certificates as they change.
    let mut serials = (BTreeSet::from([first.0.serial.clone()]), BTreeSet::from([first.1.serial.clone()]));
    let mut fresh_connections = 0;
    let started = Instant::now();
    let result = loop {
        if let Some(status) = transfer.wait_timeout(Duration::from_secs(10))? {
            break status;
        }
        let r = scenario::echo(&client, &to, 256 * 1024)?;
        assert!(
            r.ok(),
            "a new connection failed {:?} into the transfer: {r:?}\n{}",
            started.elapsed(),
            a1.stderr()
        );
        fresh_connections += 1;
        serials.0.insert(certificate(&a1, client_id)?.serial);
        serials.1.insert(certificate(&a2, server_id)?.serial);
        assert!(started.elapsed() < Duration::from_secs(TRANSFER_SECS + 30), "the transfer does not end");
    };

    let line = transfer.stdout_lines().pop().unwrap_or_default();
    assert!(result.success(), "the transfer broke: {line}\n{}", transfer.stderr_text());
    let json: serde_json::Value = serde_json::from_str(&line)?;
    let chunks = json["chunks"].as_u64().unwrap_or(0);
    assert!(chunks >= TRANSFER_SECS * 10 * 9 / 10, "a chunk every 100 ms for {TRANSFER_SECS} s: {line}");
    assert_eq!(json["bytes"].as_u64(), Some(chunks * 4096), "{line}");

    // Rotation observed on both sides: renewed at half life, so about every 15 s at most.
    let last = (certificate(&a1, client_id)?, certificate(&a2, server_id)?);
    serials.0.insert(last.0.serial.clone());
    serials.1.insert(last.1.serial.clone());
    let least = TRANSFER_SECS / TTL_SECS * 2 - 2;
    for (who, seen, distinct) in [("client", &last.0, &serials.0), ("server", &last.1, &serials.1)] {
        assert!(
            seen.rotations >= least,
            "the {who}'s certificate was renewed {} times in {TRANSFER_SECS} s",
            seen.rotations
        );
        assert!(distinct.len() as u64 >= least, "the {who}'s serials seen: {distinct:?}");
        assert!(seen.expiry > unix_now(), "the {who}'s certificate in force has not expired: {seen:?}");
    }
    assert!(
        first.0.expiry < unix_now() && first.1.expiry < unix_now(),
        "the transfer outlived the certificates it started with"
    );

    // New connections still work after the last rotation, and the application saw the
    // transfer and every new connection as the client's own address.
    let r = scenario::echo(&client, &to, 256 * 1024)?;
    assert!(r.ok(), "{r:?}\n{}", a1.stderr());
    assert_eq!(scenario::accepts(&srv), 1 + fresh_connections + 1);
    assert!(scenario::accepted_peers(&srv).iter().all(|p| p.ip() == std::net::IpAddr::V4(client.ip())));
    let inbound =
        [("reporter", "destination"), ("source_principal", "spiffe://cluster.local/ns/mesh/sa/client")];
    let via_mesh = a2.metric("istio_tcp_connections_opened_total", &inbound)?;
    assert_eq!(
        via_mesh as usize,
        1 + fresh_connections + 1,
        "every connection came through HBONE as the client"
    );
    Ok(())
}
