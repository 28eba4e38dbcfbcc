//! End-to-end: the agent binds each pod to its network namespace from sources a pod cannot
//! forge — the CNI handover for pods created while it runs, the kubelet cgroup for pods that
//! ran before it — and refuses everything else: a rogue namespace holding a pod's address,
//! and handovers that lie about the address or the UID. Also: what the plugin does while
//! the agent is down, and what binding a pod costs with a thousand other namespaces and
//! processes on the node.

use anyhow::{Context, Result, ensure};
use std::{
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::{Duration, Instant},
};
use weft_tests::{
    Signal,
    agent::Agent,
    bed::cni::{self, CniCall},
    bins,
    scenario::{self, Scenario},
};

const PORT: u16 = 9080;

/// The agent's stderr without terminal colour codes.
fn plain_log(agent: &Agent) -> String {
    let text = agent.stderr();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The agent's "pod bound" lines for pod `namespace/name`.
fn bound_lines(agent: &Agent, pod: &str) -> Vec<String> {
    let needle = format!("pod={pod} ");
    plain_log(agent)
        .lines()
        .filter(|l| l.contains("pod bound to its network namespace") && l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// The value of `name=value` in a log line (without the quotes of a string value).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|f| Some(f.strip_prefix(name)?.strip_prefix('=')?.trim_matches('"')))
}

/// Gives a bare namespace an interface holding `ip` (a veth pair with both ends inside,
/// since the dummy driver may be missing).
fn hold_address(netns: &weft_tests::bed::BareNetns, ip: Ipv4Addr) -> Result<()> {
    netns.ip_batch(&[
        "link add r0 type veth peer name r1".to_owned(),
        format!("addr add {ip}/32 dev r0"),
        "link set r0 up".to_owned(),
        "link set r1 up".to_owned(),
    ])
}

/// The agent's refusal lines naming pod `namespace/name`.
fn refusals(agent: &Agent, pod: &str) -> Vec<String> {
    let needle = format!("pod={pod} ");
    plain_log(agent)
        .lines()
        .filter(|l| l.contains("refusing to bind a pod to a network namespace") && l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f()? {
        ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn hello_reply(pod: &weft_tests::Pod, to: &str) -> Result<String> {
    let r = scenario::client(pod, &["hello", "--to", to], Duration::from_secs(30))?;
    ensure!(r.ok(), "hello to {to} from {}: {r:?}", pod.name());
    Ok(r.json["reply"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn running_pods_are_bound_by_cgroup_and_new_pods_by_the_cni_handover() -> Result<()> {
    let mut s = Scenario::new("bind_cgroup_then_cni")?;
    let n1 = s.bed.node("n1")?;
    let early = s.bed.pod(&n1, "shop", "early")?;
    s.config.namespace("shop", true).pod(&early, "shop", &[], &[PORT]);
    s.config.write()?;

    // (a) The pod ran before the agent: the plugin found no agent and let it start; the
    // agent finds it by its UID in the kubelet cgroup.
    let agent = s.agent(&n1)?;
    agent.wait_enrolled(&["early"], Duration::from_secs(10))?;
    let line = bound_lines(&agent, "shop/early").pop().context("no bound line for shop/early")?;
    assert_eq!(field(&line, "via"), Some("cgroup"), "{line}");
    assert_eq!(field(&line, "uid"), Some(early.uid()), "{line}");
    assert_eq!(
        field(&line, "pid"),
        early.pause_pid().map(|p| p.to_string()).as_deref(),
        "the pause process: {line}"
    );

    // (b) A pod made while the agent runs is handed over by the plugin before it starts.
    let late = s.bed.pod(&n1, "shop", "late")?;
    s.config.pod(&late, "shop", &[], &[PORT]).write()?;
    agent.wait_enrolled(&["early", "late"], Duration::from_secs(10))?;
    let line = bound_lines(&agent, "shop/late").pop().context("no bound line for shop/late")?;
    assert_eq!(field(&line, "via"), Some("cni"), "{line}");
    assert_eq!(field(&line, "netns"), Some(late.netns_path().to_str().unwrap()), "{line}");
    let log = plain_log(&agent);
    assert!(log.contains("CNI handover") && log.contains(late.uid()), "the handover was logged:\n{log}");

    // Both carry traffic through the agent.
    let _server = scenario::serve(&late, "v1", &[PORT])?;
    let reply = hello_reply(&early, &format!("{}:{PORT}", late.ip()))?;
    assert!(reply.starts_with("late v1"), "{reply}");
    let opened = |reporter| {
        agent.metric(
            "istio_tcp_connections_opened_total",
            &[("reporter", reporter), ("source_workload", "early")],
        )
    };
    assert_eq!(
        (opened("source")?, opened("destination")?),
        (1, 1),
        "out of early and into late through the agent"
    );

    // CNI CHECK finds the handover; DEL removes it, and CHECK then fails.
    let check = cni::invoke(&late.cni_call("CHECK", n1.cni_socket()))?;
    assert!(check.success, "{check:?}");
    let del = cni::invoke(&late.cni_call("DEL", n1.cni_socket()))?;
    assert!(del.success && del.stdout.is_empty(), "{del:?}");
    let check = cni::invoke(&late.cni_call("CHECK", n1.cni_socket()))?;
    assert!(!check.success && check.stdout.contains("holds no sandbox"), "{check:?}");
    Ok(())
}

#[test]
fn a_rogue_namespace_with_a_pods_address_and_lying_handovers_are_refused() -> Result<()> {
    let mut s = Scenario::new("bind_rogue")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n2, "shop", "client")?;
    // Three pods of n1 the control plane knows before they run: their UIDs and addresses.
    let [victim_ip, target_ip, other_ip] = s.bed.next_pod_ips(&n1, 3)[..] else { panic!("three addresses") };
    let (victim_uid, target_uid, other_uid) = (cni::new_pod_uid()?, cni::new_pod_uid()?, cni::new_pod_uid()?);
    s.config.namespace("shop", true).pod(&client, "shop", &[], &[]);
    for (name, uid, ip) in [
        ("victim", &victim_uid, victim_ip),
        ("target", &target_uid, target_ip),
        ("other", &other_uid, other_ip),
    ] {
        s.config.mesh.pods.push(weft_model::mesh::Pod {
            name: name.into(),
            namespace: "shop".into(),
            uid: Some(uid.clone()),
            ip: IpAddr::V4(ip),
            node: "n1".into(),
            service_account: name.into(),
            workload: None,
            labels: Default::default(),
            ports: vec![PORT],
            services: Vec::new(),
        });
    }
    s.config.write()?;

    // The rogue: a namespace on n1 holding the victim's address, with a process in it that
    // sits in n1's cgroup (where the capture programs are attached) but in no pod's cgroup,
    // listening where the victim will.
    let rogue = s.bed.bare_netns("rogue")?;
    hold_address(&rogue, victim_ip)?;
    let mut serve_rogue = Command::new(bins::path("weft-testapp"));
    serve_rogue.args(["serve", "--name", "rogue", "--version", "v0", "--port", &PORT.to_string()]);
    let rogue_server = n1.spawn_in_node_cgroup(serve_rogue, &rogue.path())?;
    rogue_server.wait_for_line(|l| l.contains("\"listening\""), Duration::from_secs(10))?;

    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    a2.wait_enrolled(&["client"], Duration::from_secs(10))?;
    // Several enrollment rounds pass; the victim stays pending, the rogue is never taken.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a1.enrolled()?, Vec::<String>::new());
    let pending = a1.config_dump()?["enrollment"]["pending"].clone();
    assert!(pending.as_array().unwrap().iter().any(|p| p == "shop/victim"), "{pending}");

    // No capture in the rogue namespace: a connection from it reaches the kernel's routing
    // (no route: unreachable), not a capture socket (that would be refused or accepted).
    let mut probe = Command::new(bins::path("weft-testapp"));
    probe.args(["hello", "--to", &format!("{}:{PORT}", Ipv4Addr::new(203, 0, 113, 1))]);
    let mut probe = n1.spawn_in_node_cgroup(probe, &rogue.path())?;
    probe.wait_timeout(Duration::from_secs(20))?.context("the probe did not finish")?;
    let result: serde_json::Value = serde_json::from_str(&probe.stdout_lines().pop().unwrap_or_default())?;
    assert_eq!(result["kind"], "NetworkUnreachable", "not captured: {result}");

    // A handover that lies about the address: the right name and UID, a namespace that
    // does not hold the pod's address (the rogue's).
    let lie = cni::invoke(&CniCall {
        command: "ADD",
        container_id: "lying-sandbox-1",
        netns: &rogue.path(),
        namespace: "shop",
        name: "target",
        uid: &target_uid,
        ip: target_ip,
        gateway: n1.pod_gateway(),
        agent_socket: n1.cni_socket(),
    })?;
    assert!(lie.success, "the agent takes the handover; binding is where it is checked: {lie:?}");
    wait_for("the refusal of target's handover", Duration::from_secs(10), || {
        Ok(!refusals(&a1, "shop/target").is_empty())
    })?;
    let line = refusals(&a1, "shop/target").pop().unwrap();
    assert!(
        line.contains(&format!("holds [{victim_ip}], not the control plane's address {target_ip}")),
        "the refusal names the expected and the found address: {line}"
    );

    // A handover that lies about the UID: the pod's name, a namespace holding its address,
    // another UID.
    let decoy = s.bed.bare_netns("decoy")?;
    hold_address(&decoy, other_ip)?;
    let wrong_uid = cni::new_pod_uid()?;
    let lie = cni::invoke(&CniCall {
        command: "ADD",
        container_id: "lying-sandbox-2",
        netns: &decoy.path(),
        namespace: "shop",
        name: "other",
        uid: &wrong_uid,
        ip: other_ip,
        gateway: n1.pod_gateway(),
        agent_socket: n1.cni_socket(),
    })?;
    assert!(lie.success, "{lie:?}");
    wait_for("the refusal of other's handover", Duration::from_secs(10), || {
        Ok(!refusals(&a1, "shop/other").is_empty())
    })?;
    let line = refusals(&a1, "shop/other").pop().unwrap();
    assert!(line.contains(&wrong_uid) && line.contains(&other_uid), "the refusal names both UIDs: {line}");
    assert_eq!(a1.enrolled()?, Vec::<String>::new(), "nothing bound on lies");
    // …and no certificate: the agent asks for an identity only for a pod it has bound.
    let held = a1.config_dump()?["certificates"].clone();
    assert_eq!(held, serde_json::json!([]), "no workload certificate for pods bound to nothing: {held}");

    // The real pods come: each is handed over by the runtime and bound, the lies replaced.
    let victim = s.bed.pod_with_uid(&n1, "shop", "victim", &victim_uid)?;
    let target = s.bed.pod_with_uid(&n1, "shop", "target", &target_uid)?;
    let other = s.bed.pod_with_uid(&n1, "shop", "other", &other_uid)?;
    assert_eq!((victim.ip(), target.ip(), other.ip()), (victim_ip, target_ip, other_ip));
    a1.wait_enrolled(&["other", "target", "victim"], Duration::from_secs(10))?;
    for (pod, netns) in [
        ("shop/victim", victim.netns_path()),
        ("shop/target", target.netns_path()),
        ("shop/other", other.netns_path()),
    ] {
        let line = bound_lines(&a1, pod).pop().with_context(|| format!("no bound line for {pod}"))?;
        assert_eq!(field(&line, "via"), Some("cni"), "{line}");
        assert_eq!(field(&line, "netns"), netns.to_str(), "{line}");
    }

    // Traffic meant for the victim reaches the victim, never the rogue.
    let _victim_server = scenario::serve(&victim, "v1", &[PORT])?;
    for _ in 0..3 {
        let reply = hello_reply(&client, &format!("{victim_ip}:{PORT}"))?;
        assert!(reply.starts_with("victim v1"), "{reply}");
    }
    assert_eq!(scenario::accepts(&rogue_server), 0, "the rogue saw no connection");
    assert_eq!(a1.metric("istio_tcp_connections_opened_total", &[("destination_workload", "victim")])?, 3);
    let held = a1.config_dump()?["certificates"].clone();
    let identities: Vec<&str> =
        held.as_array().unwrap().iter().filter_map(|c| c["identity"].as_str()).collect();
    assert_eq!(
        identities,
        ["other", "target", "victim"].map(|sa| format!("spiffe://cluster.local/ns/shop/sa/{sa}")),
        "certificates for the bound pods only: {held}"
    );
    Ok(())
}

#[test]
fn while_the_agent_is_down_mesh_pods_wait_and_other_pods_start() -> Result<()> {
    let mut s = Scenario::new("bind_agent_down")?;
    let n1 = s.bed.node("n1")?;
    let first = s.bed.pod(&n1, "shop", "first")?;
    s.config.namespace("shop", true).namespace("legacy", false).pod(&first, "shop", &[], &[]);
    s.config.write()?;
    let mut agent = s.agent(&n1)?;
    agent.wait_enrolled(&["first"], Duration::from_secs(10))?;
    let file = n1.cni_socket().with_file_name("mesh-namespaces.json");
    wait_for("the mesh-namespaces file", Duration::from_secs(5), || Ok(file.exists()))?;
    let listed: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    assert_eq!(listed["namespaces"], serde_json::json!(["shop"]), "{listed}");

    agent.kill(Signal::SIGKILL)?;
    agent.proc().wait_timeout(Duration::from_secs(5))?;
    // A pod outside the mesh starts as if the mesh were not there.
    let outside = s.bed.pod(&n1, "legacy", "outside")?;
    assert!(outside.pause_pid().is_some());
    // A mesh pod is held back: the runtime gets "try again later" and retries.
    let err = s.bed.pod(&n1, "shop", "held").expect_err("a mesh pod must not start without its agent");
    let text = format!("{err:#}");
    assert!(text.contains("must not start uncaptured") && text.contains("\"code\":11"), "{text}");

    // The agent is back: the retried sandbox is handed over and bound.
    agent.restart()?;
    let held = s.bed.pod(&n1, "shop", "held")?;
    s.config.pod(&outside, "legacy", &[], &[]).pod(&held, "shop", &[], &[]).write()?;
    agent.wait_enrolled(&["first", "held"], Duration::from_secs(10))?;
    let line = bound_lines(&agent, "shop/held").pop().context("no bound line for shop/held")?;
    assert_eq!(field(&line, "via"), Some("cni"), "{line}");
    Ok(())
}

/// Not a timed assertion: the figures are printed (run with `--nocapture`); what is asserted
/// is that binding looks at the pod's own processes only, however many others there are.
#[test]
fn binding_a_pod_does_not_look_at_the_nodes_other_processes_and_namespaces() -> Result<()> {
    const EXTRA: usize = 1000;
    const PODS: usize = 8;
    let mut s = Scenario::new("bind_cost")?;
    let n1 = s.bed.node("n1")?;
    s.config.namespace("shop", true);
    let add_pods = |s: &mut Scenario, prefix: &str| -> Result<Vec<String>> {
        let mut names = Vec::new();
        for i in 0..PODS {
            let pod = s.bed.pod(&n1, "shop", &format!("{prefix}-{i}"))?;
            s.config.pod(&pod, "shop", &[], &[]);
            names.push(pod.name().to_owned());
        }
        s.config.write()?;
        Ok(names)
    };
    let wait_all = |agent: &Agent, names: &[String]| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        agent.wait_enrolled(&names, Duration::from_secs(30))
    };
    // The "pod bound" lines of `pods`, each checked to come from `via`.
    let lines_of = |agent: &Agent, pods: &[String], via: &str| -> Result<Vec<String>> {
        pods.iter()
            .map(|p| {
                let line = bound_lines(agent, &format!("shop/{p}"))
                    .pop()
                    .with_context(|| format!("no bound line for {p}"))?;
                ensure!(field(&line, "via") == Some(via), "{p} not bound via {via}: {line}");
                Ok(line)
            })
            .collect()
    };

    // Quiet node: pods that ran before the agent (cgroup), then pods made while it runs (CNI).
    let mut pods = add_pods(&mut s, "before")?;
    let mut agent = s.agent(&n1)?;
    wait_all(&agent, &pods)?;
    let quiet_cgroup = lines_of(&agent, &pods, "cgroup")?;
    let handed = add_pods(&mut s, "handed")?;
    pods.extend(handed.iter().cloned());
    wait_all(&agent, &pods)?;
    let quiet_cni = lines_of(&agent, &handed, "cni")?;

    // A thousand processes on the node, each in a network namespace of its own, in the
    // node's cgroup (as host daemons or rogue processes would be), not in any pod's.
    let mut crowd = Command::new("sh");
    crowd.args([
        "-c",
        &format!("for i in $(seq {EXTRA}); do unshare --net sleep infinity & done; echo started; wait"),
    ]);
    let crowd = n1.spawn_in_node_cgroup(crowd, &n1.netns_path())?;
    crowd.wait_for_line(|l| l == "started", Duration::from_secs(60))?;
    let crowd_cgroup = n1.cgroup_path().join("cgroup.procs");
    wait_for("the crowd's namespaces", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&crowd_cgroup)?.lines().count() > EXTRA)
    })?;

    // The agent restarts and binds every running pod again, by cgroup (its handovers were in
    // memory); then new pods are handed over.
    agent.kill(Signal::SIGKILL)?;
    agent.proc().wait_timeout(Duration::from_secs(5))?;
    agent.restart()?;
    wait_all(&agent, &pods)?;
    let crowded_cgroup = lines_of(&agent, &pods, "cgroup")?;
    let after = add_pods(&mut s, "after")?;
    pods.extend(after.iter().cloned());
    wait_all(&agent, &pods)?;
    let crowded_cni = lines_of(&agent, &after, "cni")?;

    for line in quiet_cgroup.iter().chain(&crowded_cgroup) {
        assert_eq!(field(line, "processes_examined"), Some("1"), "only the pod's pause process: {line}");
    }
    let summary = |lines: &[String]| {
        let mut us: Vec<u64> = lines.iter().filter_map(|l| field(l, "elapsed_us")?.parse().ok()).collect();
        us.sort_unstable();
        format!("median {} µs, max {} µs over {}", us[us.len() / 2], us[us.len() - 1], us.len())
    };
    println!("binding one pod, node with 0 extra processes/namespaces vs {EXTRA}:");
    println!("  kubelet cgroup lookup: {} | {}", summary(&quiet_cgroup), summary(&crowded_cgroup));
    println!("  CNI handover:          {} | {}", summary(&quiet_cni), summary(&crowded_cni));
    Ok(())
}
