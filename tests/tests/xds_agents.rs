//! End-to-end: agents fed by weftd over xDS (Istio's workload API, delta ADS) instead of
//! a local file. Enrollment follows the namespace label in weftd's YAML; the agents keep
//! serving while weftd is down and resync when it returns.

use anyhow::{Context, Result};
use std::{
    path::Path,
    time::{Duration, Instant},
};
use weft_tests::{
    Pod, Signal,
    agent::Agent,
    scenario::{self, Scenario},
    weftd::Weftd,
};

const PORT: u16 = 9080;
const VIP: &str = "198.19.0.20";

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name)).context("rename into place")
}

fn namespace(ambient: bool) -> String {
    let labels = if ambient { "{ istio.io/dataplane-mode: ambient }" } else { "{}" };
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: shop, labels: {labels} }}\n")
}

fn pod(p: &Pod, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: shop, uid: {uid}, labels: {{ app: {app} }} }}\nspec:\n  nodeName: {node}\n  containers: [{{ name: app, ports: [{{ containerPort: {PORT} }}] }}]\nstatus: {{ podIP: {ip} }}\n",
        name = p.name(),
        uid = p.uid(),
        node = p.node_name(),
        ip = p.ip()
    )
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f()? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn agents_follow_weftd_and_keep_serving_while_it_is_down() -> Result<()> {
    let s = Scenario::new("xds_agents")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "shop", "client")?;
    let server = s.bed.pod(&n2, "shop", "server")?;
    let config = s.dir.join("config");
    std::fs::create_dir_all(&config)?;
    write(&config, "namespace.yaml", &namespace(false))?;
    write(&config, "pods.yaml", &format!("{}---\n{}", pod(&client, "client"), pod(&server, "server")))?;
    write(
        &config,
        "service.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: server, namespace: shop }}\nspec: {{ clusterIP: {VIP}, ports: [{{ port: 80, targetPort: {PORT} }}], selector: {{ app: server }} }}\n"
        ),
    )?;
    let mut weftd = Weftd::start(&n1, &config)?;
    let url = weftd.ads_url();
    let a1 = Agent::start_xds(&s.bed, &n1, &weftd)?;
    let a2 = Agent::start_xds(&s.bed, &n2, &weftd)?;
    let srv = scenario::serve(&server, "v1", &[PORT])?;
    let direct = format!("{}:{PORT}", server.ip());
    let opened = |a: &Agent| a.metric("istio_tcp_connections_opened_total", &[("source_workload", "client")]);

    // Not enrolled yet: direct, nothing through the agents.
    assert!(a1.enrolled()?.is_empty() && a2.enrolled()?.is_empty());
    assert!(scenario::echo(&client, &direct, 65536)?.ok());
    assert_eq!((opened(&a1)?, opened(&a2)?), (0, 0));
    let dump = a1.config_dump()?;
    assert_eq!(dump["model_source"]["source"], url.as_str(), "{dump}");

    // Label the namespace in weftd's YAML: both agents enroll their pod, live.
    write(&config, "namespace.yaml", &namespace(true))?;
    a1.wait_enrolled(&["client"], Duration::from_secs(5))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(5))?;
    let r = scenario::echo(&client, &format!("{VIP}:80"), 1 << 20)?;
    assert!(r.ok(), "VIP through the agents, resolved from xDS: {r:?}\n{}", a1.stderr());
    assert_eq!((opened(&a1)?, opened(&a2)?), (1, 1));

    // weftd dies: the agents keep their last model and keep carrying traffic.
    weftd.proc().kill(Signal::SIGKILL)?;
    weftd.proc().wait_timeout(Duration::from_secs(5))?;
    assert!(scenario::echo(&client, &direct, 65536)?.ok());
    assert_eq!((opened(&a1)?, opened(&a2)?), (2, 2), "still captured with weftd down");
    assert_eq!(a1.enrolled()?, ["client"]);

    // While it is down the namespace is unlabelled; weftd returns (with the root it
    // persisted, which the agents still trust) and the agents resync.
    write(&config, "namespace.yaml", &namespace(false))?;
    weftd.restart()?;
    a1.wait_enrolled(&[], Duration::from_secs(20))?;
    a2.wait_enrolled(&[], Duration::from_secs(20))?;
    assert!(scenario::echo(&client, &direct, 65536)?.ok(), "released pods talk directly");
    assert_eq!((opened(&a1)?, opened(&a2)?), (2, 2));
    assert_eq!(scenario::accepts(&srv), 4);

    // weftd lists both agents as synced on the workload API.
    wait_until("both agents synced", Duration::from_secs(10), || {
        let (_, syncz) = weftd.get("/debug/syncz")?;
        let v: serde_json::Value = serde_json::from_str(&syncz)?;
        let agents = v.as_array().into_iter().flatten().filter(|p| {
            p["types"].as_array().into_iter().flatten().any(|t| {
                t["type_url"] == "type.googleapis.com/istio.workload.Address" && t["state"] == "SYNCED"
            })
        });
        Ok(agents.count() == 2)
    })?;
    Ok(())
}
