//! End-to-end: what the mesh refuses, each refusal with a log line that says why.
//!
//! The TLS cases use `weft-hbone-probe`, an HBONE client or server holding whatever
//! certificate the test gives it. It runs in a pod outside the mesh (a compromised
//! workload) and mints certificates with weftd's own CA key (a node that stole it) or with
//! a CA of its own. Each test first shows the probe succeeding with a good certificate, so a
//! refusal is the mesh's doing and not the probe's.

use anyhow::{Context, Result};
use std::{net::SocketAddr, path::Path, time::Duration};
use weft_hbone::Identity;
use weft_tests::{
    Pod,
    agent::Agent,
    certs::{self, MeshCa, TestCa},
    logs,
    probe::{self, Credentials},
    scenario::{self, Scenario},
};

const APP_PORT: u16 = 9080;
const HBONE_PORT: u16 = 15008;
const PATIENCE: Duration = Duration::from_secs(10);

fn spiffe(namespace: &str, sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}").parse().expect("a SPIFFE identity")
}

/// Writes `pem` as `<name>-chain.pem` / `<name>-key.pem` beside the mesh root.
fn credentials(dir: &Path, name: &str, pem: &certs::Pem, roots: &Path) -> Result<Credentials> {
    let files = pem.write(dir, name)?;
    Ok(Credentials { cert: files.chain, key: files.key, roots: roots.to_owned() })
}

fn addr(pod: &Pod, port: u16) -> SocketAddr {
    SocketAddr::from((pod.ip(), port))
}

#[test]
fn inbound_hbone_refuses_foreign_expired_and_misaddressed_clients() -> Result<()> {
    let mut s = Scenario::new("neg_inbound")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    // The probe's pod is outside the mesh: nothing captures its dial to :15008.
    let attacker = s.bed.pod(&n1, "legacy", "attacker")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    let neighbour = s.bed.pod(&n2, "mesh", "neighbour")?;
    s.config
        .namespace("mesh", true)
        .namespace("legacy", false)
        .pod(&attacker, "legacy", &[], &[])
        .pod(&server, "mesh", &[], &[APP_PORT])
        .pod(&neighbour, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let a2 = s.agent(&n2)?;
    a2.wait_enrolled(&["neighbour", "server"], PATIENCE)?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let nbr = scenario::serve(&neighbour, "v1", &[APP_PORT])?;

    let weftd = s.control_plane(&n1)?;
    let mesh_ca = MeshCa::from_dir(weftd.ca_dir())?;
    let roots = weftd.root_cert();
    let dir = s.dir.join("certs");
    std::fs::create_dir_all(&dir)?;
    let probe_id = spiffe("legacy", "attacker");
    let server_id = spiffe("mesh", "server");
    let good = credentials(&dir, "good", &mesh_ca.issue_for(&probe_id, Duration::from_secs(3600))?, &roots)?;
    let foreign_pem = certs::foreign(&TestCa::new(), &probe_id);
    let foreign = credentials(&dir, "foreign", &foreign_pem, &roots)?;
    let expired_pem = mesh_ca.issue_expired(&probe_id)?;
    let expired = credentials(&dir, "expired", &expired_pem, &roots)?;
    // The minted certificates are what their names say, checked as a peer would.
    assert!(certs::verify(&foreign_pem, mesh_ca.root_pem()).unwrap_err().contains("unknown issuer"));
    assert!(certs::verify(&expired_pem, mesh_ca.root_pem()).unwrap_err().contains("expired"));

    let hbone = addr(&server, HBONE_PORT);
    let app = addr(&server, APP_PORT);
    let attacker_ip = attacker.ip().to_string();
    let agent_log =
        |fragments: &[&str]| logs::wait_for_line("n2's agent", || a2.stderr(), fragments, PATIENCE);

    // A certificate from the mesh's CA: the CONNECT is served, the application sees the
    // probe's address, the agent logs the identity the certificate carried.
    let r = probe::connect_from(&attacker, hbone, app, &server_id, &good, "H")?;
    assert!(r.ok(), "the probe with a mesh certificate must get through: {r:?}\n{}", a2.stderr());
    assert!(r.reply().starts_with(&format!("server v1 {attacker_ip}:")), "{r:?}");
    assert_eq!(scenario::accepts(&srv), 1);
    agent_log(&["connection complete", "inbound", &format!("src.identity={probe_id}")])?;

    // Another CA: refused in the handshake, before any CONNECT.
    let r = probe::connect_from(&attacker, hbone, app, &server_id, &foreign, "H")?;
    assert!(!r.ok() && r.status().is_none(), "a foreign CA's certificate must fail the handshake: {r:?}");
    let line = agent_log(&["HBONE TLS handshake refused", &attacker_ip, "not issued by the mesh CA"])?;
    assert!(line.contains("WARN"), "a refusal is a warning: {line}");

    // Expired, though signed by the mesh's CA.
    let r = probe::connect_from(&attacker, hbone, app, &server_id, &expired, "H")?;
    assert!(!r.ok() && r.status().is_none(), "an expired certificate must fail the handshake: {r:?}");
    agent_log(&["HBONE TLS handshake refused", &attacker_ip, "certificate has expired"])?;

    // A good certificate, but a CONNECT to an address that is not this pod's: a
    // neighbour on the same node, and the pod's own loopback. 400, as ztunnel answers.
    let elsewhere = addr(&neighbour, APP_PORT);
    let r = probe::connect_from(&attacker, hbone, elsewhere, &server_id, &good, "H")?;
    assert_eq!(r.status(), Some(400), "a CONNECT to another pod through this one must be refused: {r:?}");
    agent_log(&[
        "inbound HBONE connection refused",
        &format!("destination {elsewhere} is not an address of pod mesh/server"),
    ])?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], APP_PORT));
    let r = probe::connect_from(&attacker, hbone, loopback, &server_id, &good, "H")?;
    assert_eq!(r.status(), Some(400), "{r:?}");
    agent_log(&[
        "inbound HBONE connection refused",
        &format!("destination {loopback} is a loopback or mesh port"),
    ])?;

    assert_eq!(scenario::accepts(&srv), 1, "no refused probe reached the application");
    assert_eq!(scenario::accepts(&nbr), 0, "the neighbour was never reached through the server's tunnel");
    Ok(())
}

#[test]
fn a_server_presenting_another_identity_is_refused_by_the_clients_agent() -> Result<()> {
    let mut s = Scenario::new("neg_server_id")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    // In the mesh, but its node runs no agent: the probe holds its :15008 instead, as a
    // compromised node could.
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    a1.wait_enrolled(&["client"], PATIENCE)?;
    let weftd = s.control_plane(&n1)?;
    let mesh_ca = MeshCa::from_dir(weftd.ca_dir())?;
    let roots = weftd.root_cert();
    let dir = s.dir.join("certs");
    std::fs::create_dir_all(&dir)?;
    let listen = SocketAddr::from(([0, 0, 0, 0], HBONE_PORT));
    let to = addr(&server, APP_PORT).to_string();
    let hello = || scenario::client(&client, &["hello", "--to", &to], Duration::from_secs(20));

    // A mesh-signed certificate, but for another service account than the server's.
    let impostor_id = spiffe("mesh", "impostor");
    let impostor =
        credentials(&dir, "impostor", &mesh_ca.issue_for(&impostor_id, Duration::from_secs(3600))?, &roots)?;
    let mut probe_server = probe::serve_in(&server, listen, &impostor)?;
    let r = hello()?;
    assert!(!r.ok(), "the client's agent must not carry traffic to a server with the wrong identity: {r:?}");
    let line = logs::wait_for_line(
        "n1's agent",
        || a1.stderr(),
        &[
            "connection complete",
            &format!("the server presented {impostor_id} but {} was expected", spiffe("mesh", "server")),
        ],
        PATIENCE,
    )?;
    assert!(line.contains("outbound"), "{line}");
    assert!(probe::events(&probe_server, "connect").is_empty(), "no CONNECT reached the impostor");
    probe_server.kill(weft_tests::Signal::SIGKILL)?;
    probe_server.wait_timeout(Duration::from_secs(5))?;

    // The same probe with the server's own identity is trusted: the refusal above was
    // about the identity alone.
    let server_id = spiffe("mesh", "server");
    let genuine =
        credentials(&dir, "genuine", &mesh_ca.issue_for(&server_id, Duration::from_secs(3600))?, &roots)?;
    let probe_server = probe::serve_in(&server, listen, &genuine)?;
    let r = hello()?;
    assert!(r.ok(), "{r:?}\n{}", a1.stderr());
    assert!(
        r.json["reply"].as_str().unwrap_or_default().starts_with(&format!("weft-hbone-probe {server_id} ")),
        "{r:?}"
    );
    let connects = probe::events(&probe_server, "connect");
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(
        connects[0]["identity"],
        spiffe("mesh", "client").to_string(),
        "the client's agent presented the client's certificate"
    );
    assert_eq!(connects[0]["authority"], to, "CONNECT names the original destination");
    Ok(())
}

#[test]
fn weftd_refuses_calls_without_credentials_or_for_another_node() -> Result<()> {
    let mut s = Scenario::new("neg_weftd_auth")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    // weftd on n1; the calls come from n2, across the underlay.
    s.control_plane(&n1)?;
    // The agent of n2 holds the certificate of its own pod, and of no other.
    let a2 = s.agent(&n2)?;
    a2.wait_enrolled(&["server"], PATIENCE)?;
    let held = wait_certificates(&a2, 1)?;
    assert_eq!(held, [spiffe("mesh", "server").to_string()]);

    let weftd = s.control_plane(&n1)?;
    let n2_ads = weftd.agent_credentials("n2")?;
    let n2_ip = n2.ip().to_string();
    let (client_id, server_id) = (spiffe("mesh", "client"), spiffe("mesh", "server"));

    // From n2's network namespace, as a process there would call.
    let results = n2.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let ca = |token: Option<&Path>| {
                let config = weft_xds::ca::CaClientConfig::new(
                    n2_ads.url.clone(),
                    Some(n2_ads.tls()),
                    token.map(Path::to_owned),
                );
                weft_xds::ca::CaClient::new(config).context("CA client settings")
            };
            let sign = |client: weft_xds::ca::CaClient, id: Identity| async move {
                let (_key, csr) = weft_hbone::new_csr(&id)?;
                anyhow::Ok(client.sign(&id.to_string(), &csr, Duration::ZERO).await)
            };
            let own = sign(ca(Some(&n2_ads.token_file))?, server_id.clone()).await?;
            let without_token = sign(ca(None)?, server_id.clone()).await?;
            let other_nodes_pod = sign(ca(Some(&n2_ads.token_file))?, client_id.clone()).await?;
            let xds_without_token = xds_refusal(&n2_ads, None, "n2").await?;
            let xds_as_n1 = xds_refusal(&n2_ads, Some(&n2_ads.token_file), "n1").await?;
            anyhow::Ok((own, without_token, other_nodes_pod, xds_without_token, xds_as_n1))
        })
    })?;
    let (own, without_token, other_nodes_pod, xds_without_token, xds_as_n1) = results;

    // The bed's path works: n2's token gets n2's pod's identity.
    let chain = own.context("n2's agent asking for its own pod's identity")?;
    assert_eq!(chain.len(), 2, "leaf and root");

    let e = without_token.expect_err("a CSR without a token must be refused");
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    let e = other_nodes_pod.expect_err("n2 may not have the identity of a pod on n1");
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("no pod of service account mesh/client runs on node n2"), "{e}");
    assert!(xds_without_token.contains("Unauthenticated"), "{xds_without_token}");
    assert!(
        xds_as_n1.contains("PermissionDenied") && xds_as_n1.contains("may not claim node n1"),
        "{xds_as_n1}"
    );

    // weftd says so, naming the caller's address.
    let weftd = s.control_plane(&n1)?;
    let peer = format!("peer={n2_ip}:");
    let log = |fragments: &[&str]| logs::wait_for_line("weftd", || weftd.stderr(), fragments, PATIENCE);
    log(&["refused a call to the secure port", &peer, "Unauthenticated"])?;
    log(&[
        "refused a certificate",
        &peer,
        &format!("identity={client_id}"),
        "no pod of service account mesh/client runs on node n2",
    ])?;
    log(&["refused an xDS stream", &peer, "node_name=\"n1\"", "may not claim node n1"])?;

    // And the agent of n2 still holds only its own pod's certificate.
    assert_eq!(wait_certificates(&a2, 1)?, [server_id.to_string()]);
    Ok(())
}

/// Opens an ADS stream claiming `node` with `token` and returns why weftd ended it.
async fn xds_refusal(
    ads: &weft_tests::weftd::AdsCredentials,
    token: Option<&Path>,
    node: &str,
) -> Result<String> {
    let mut config = weft_xds::client::ClientConfig::new(
        ads.url.clone(),
        format!("ztunnel~0.0.0.0~probe.{node}~{node}.svc.cluster.local"),
        vec![weft_xds::type_url::ADDRESS.to_owned()],
    );
    config.tls = Some(ads.tls());
    config.token_file = token.map(Path::to_owned);
    config.node_name = Some(node.to_owned());
    config.initial_backoff = Duration::from_millis(100);
    let client = weft_xds::client::AdsClient::start(config, |_: weft_xds::client::Update| Ok(()))?;
    let mut state = client.state();
    let ended = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.last_error.is_some())).await;
    let error = match ended {
        Ok(Ok(s)) => s.last_error.clone().unwrap_or_default(),
        _ => String::from("(the stream was not ended)"),
    };
    client.stop().await;
    Ok(error)
}

/// The identities the agent holds certificates for, once it holds `count` valid ones.
fn wait_certificates(agent: &Agent, count: usize) -> Result<Vec<String>> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let dump = agent.config_dump()?;
        let certs = dump["certificates"].as_array().cloned().unwrap_or_default();
        if certs.len() == count && certs.iter().all(|c| c["state"] == "valid") {
            return Ok(certs.iter().filter_map(|c| c["identity"].as_str().map(str::to_owned)).collect());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "agent holds {certs:?}, not {count} valid certificates"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
