//! What the plugin does for each CNI command. [`run`] is the whole plugin minus the
//! process: the binary hands it the environment and stdin and prints what it returns.

use crate::{
    protocol::{self, CallError, Op, PROTOCOL_VERSION, Request},
    spec::{CniError, Command, Env, IMPLEMENTED_VERSION, K8sArgs, NetConf, code, version_text},
};
use std::{path::Path, time::Duration};

/// How long the plugin waits for the agent, for the request and again for the answer.
/// istio-cni's plugin waits 5 s for its node agent too; the runtime's own timeout for a
/// sandbox is minutes.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The result (ADD), nothing (DEL, CHECK), the version list, or a CNI error object.
    pub stdout: String,
    /// Diagnostics for stderr, which runtimes keep in their logs.
    pub notes: Vec<String>,
    pub exit_code: u8,
}

/// Runs one invocation: `var` reads the `CNI_*` environment, `stdin` is the network
/// configuration.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8], timeout: Duration) -> Outcome {
    let mut notes = Vec::new();
    let failed = |err: CniError, version: &str, notes: Vec<String>| Outcome {
        stdout: err.to_json(version),
        notes,
        exit_code: 1,
    };
    let env = match Env::from_vars(var) {
        Ok(env) => env,
        Err(err) => return failed(err, IMPLEMENTED_VERSION, notes),
    };
    if env.command == Command::Version {
        return Outcome { stdout: version_text(), notes, exit_code: 0 };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(err) => return failed(err, IMPLEMENTED_VERSION, notes),
    };
    match handle(&env, &conf, &mut notes, timeout) {
        Ok(stdout) => Outcome { stdout, notes, exit_code: 0 },
        Err(err) => failed(err, &conf.cni_version, notes),
    }
}

fn handle(
    env: &Env,
    conf: &NetConf<'_>,
    notes: &mut Vec<String>,
    timeout: Duration,
) -> Result<String, CniError> {
    let socket = conf.agent_socket.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "agent_socket is not set in weft-cni's configuration: give the path weft-agent's --cni-socket names",
        )
    })?;
    if !socket.is_absolute() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("agent_socket {} is not an absolute path", socket.display()),
        ));
    }
    let (op, printed) = match env.command {
        Command::Add => (Op::Add, conf.result_text()),
        Command::Del => (Op::Del, String::new()),
        Command::Check if !conf.has_check() => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("CHECK does not exist in cniVersion {}", conf.cni_version),
            ));
        }
        Command::Check => (Op::Check, String::new()),
        Command::Version => unreachable!("VERSION is answered before the configuration is read"),
    };

    let args = K8sArgs::parse(env.args.as_deref().unwrap_or_default())?;
    let (Some(namespace), Some(name)) = (args.namespace.as_deref(), args.name.as_deref()) else {
        notes.push(
            "not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS): nothing to hand over"
                .into(),
        );
        return Ok(printed);
    };
    if conf.exclude_namespaces.iter().any(|n| n == namespace) {
        notes.push(format!("namespace {namespace} is excluded: pod {name} is not handed over"));
        return Ok(printed);
    }
    let container_id = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let Some(uid) = args.uid.as_deref() else {
        if op == Op::Del {
            notes.push(format!("pod {namespace}/{name}: no K8S_POD_UID in CNI_ARGS, nothing to forget"));
            return Ok(printed);
        }
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "pod {namespace}/{name}: CNI_ARGS has no K8S_POD_UID; weft binds pods by UID \
                 (containerd and CRI-O pass it)"
            ),
        ));
    };
    let netns = match op {
        Op::Add | Op::Check => Env::require(&env.netns, "CNI_NETNS")?.to_owned(),
        Op::Del => env.netns.clone().unwrap_or_default(),
    };
    let ips = if op == Op::Add { conf.prev_result_ips()? } else { Vec::new() };
    let request = Request {
        v: PROTOCOL_VERSION,
        op,
        container_id: container_id.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        netns,
        ips,
    };

    match protocol::call(socket, &request, timeout) {
        Ok(answer) if answer.ok => Ok(printed),
        Ok(answer) => {
            let why = answer.error.unwrap_or_else(|| "no reason given".into());
            if op == Op::Del {
                // DEL must succeed when there is nothing left to release.
                notes.push(format!("weft-agent did not forget pod {namespace}/{name}: {why}"));
                return Ok(printed);
            }
            Err(CniError::new(
                code::AGENT_REFUSED,
                format!("weft-agent refused pod {namespace}/{name}: {why}"),
            ))
        }
        Err(err) if op == Op::Del => {
            notes.push(format!(
                "{err}; the agent drops pod {namespace}/{name}'s sandbox itself once the pod's cgroup is gone"
            ));
            Ok(printed)
        }
        Err(err) => unreachable_agent(namespace, name, socket, &err, notes).map(|()| printed),
    }
}

/// The agent cannot be reached (not installed yet, restarting, crashed). As istio-cni does,
/// a pod that belongs in the mesh must not start without its capture, and every other pod
/// must start as if the mesh were not there:
///
/// - the namespace is listed in the agent's mesh-namespaces file → error 11 ("try again
///   later"): the runtime fails the sandbox and the kubelet retries until the agent is back;
/// - the file lists namespaces, not this one → the pod starts;
/// - there is no file: no agent has ever run with this socket, so the plugin is installed
///   ahead of the agent (the agent installs it on a real node; the test bed always runs it).
///   The pod starts; when the agent starts it finds the pod by its UID in the kubelet's
///   cgroups and captures it then;
/// - the file cannot be read → error 11: which pods are in the mesh is unknown, and a
///   mesh pod must not start uncaptured.
///
/// istio-cni asks the Kubernetes API whether the pod is ambient; this plugin has no API
/// credentials on the node (smaller, and nothing to steal), so the agent leaves its last
/// answer behind for it instead. The file knows namespaces, not pod labels: a pod that opts
/// out (`istio.io/dataplane-mode=none`) in a mesh namespace also waits for the agent.
fn unreachable_agent(
    namespace: &str,
    name: &str,
    socket: &Path,
    err: &CallError,
    notes: &mut Vec<String>,
) -> Result<(), CniError> {
    let path = protocol::mesh_namespaces_path(socket);
    match protocol::read_mesh_namespaces(&path) {
        Ok(Some(mesh)) if mesh.namespaces.contains(namespace) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "pod {namespace}/{name} is in the mesh and weft-agent is not reachable: it must not start \
                 uncaptured; retry when the agent is back"
            ),
        )
        .with_details(err)),
        Ok(Some(_)) => {
            notes.push(format!("{err}; namespace {namespace} is not in the mesh: pod {name} starts"));
            Ok(())
        }
        Ok(None) => {
            notes.push(format!(
                "{err}; no agent has run here yet ({} is absent): pod {namespace}/{name} starts, and the agent \
                 finds it by its cgroup when it starts",
                path.display()
            ));
            Ok(())
        }
        Err(hint) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "weft-agent is not reachable and which namespaces are in the mesh cannot be read: pod \
                 {namespace}/{name} is held back"
            ),
        )
        .with_details(format!("{err}; {hint}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MESH_NAMESPACES_FILE, Response};
    use std::{
        collections::HashMap,
        io::Write,
        os::unix::net::UnixListener,
        path::PathBuf,
        sync::{Arc, Mutex},
        thread::JoinHandle,
    };

    const UID: &str = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";
    const PREV: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.5/32","interface":0}],"interfaces":[{"name":"eth0"}]}"#;

    struct Case {
        dir: tempfile::TempDir,
        vars: HashMap<String, String>,
    }

    impl Case {
        fn new(command: &str, namespace: &str) -> Case {
            let dir = tempfile::tempdir().unwrap();
            let vars = HashMap::from(
                [
                    ("CNI_COMMAND", command.to_owned()),
                    ("CNI_CONTAINERID", "sandbox-1".to_owned()),
                    ("CNI_NETNS", "/var/run/netns/cni-1".to_owned()),
                    ("CNI_IFNAME", "eth0".to_owned()),
                    (
                        "CNI_ARGS",
                        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=cart-0;K8S_POD_UID={UID}"),
                    ),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            Case { dir, vars }
        }

        fn socket(&self) -> PathBuf {
            self.dir.path().join("cni.sock")
        }

        fn stdin(&self, version: &str) -> String {
            format!(
                r#"{{"cniVersion":"{version}","name":"pods","type":"weft-cni","agent_socket":"{}","prevResult":{PREV}}}"#,
                self.socket().display()
            )
        }

        fn run(&self, version: &str) -> Outcome {
            run(|k| self.vars.get(k).cloned(), self.stdin(version).as_bytes(), Duration::from_secs(2))
        }

        fn mesh_namespaces(&self, namespaces: &[&str]) {
            let text = serde_json::json!({ "v": 1, "namespaces": namespaces }).to_string();
            std::fs::write(self.dir.path().join(MESH_NAMESPACES_FILE), text).unwrap();
        }

        /// A fake agent answering `answer` to each of `n` requests, recording them.
        fn agent(&self, n: usize, answer: Response) -> (JoinHandle<()>, Arc<Mutex<Vec<Request>>>) {
            let listener = UnixListener::bind(self.socket()).unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let handle = std::thread::spawn(move || {
                for _ in 0..n {
                    let (mut stream, _) = listener.accept().unwrap();
                    let request: Request = protocol::read_message(&stream).unwrap();
                    record.lock().unwrap().push(request);
                    stream.write_all(&protocol::encode(&answer)).unwrap();
                }
            });
            (handle, seen)
        }
    }

    fn error_of(out: &Outcome) -> serde_json::Value {
        assert_eq!(out.exit_code, 1, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    #[test]
    fn add_hands_the_pod_over_and_prints_the_previous_result() {
        let case = Case::new("ADD", "shop");
        let (agent, seen) = case.agent(1, Response::ok());
        let out = case.run("1.0.0");
        agent.join().unwrap();
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, PREV), "{out:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            Request {
                v: 1,
                op: Op::Add,
                container_id: "sandbox-1".into(),
                namespace: "shop".into(),
                name: "cart-0".into(),
                uid: UID.into(),
                netns: "/var/run/netns/cni-1".into(),
                ips: vec!["10.1.2.5".parse().unwrap()],
            }
        );
    }

    #[test]
    fn del_and_check_reach_the_agent_and_print_nothing() {
        let case = Case::new("DEL", "shop");
        let (agent, seen) = case.agent(2, Response::ok());
        let out = case.run("1.0.0");
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, ""), "{out:?}");
        let mut check = Case::new("CHECK", "shop");
        check.dir = case.dir;
        let out = check.run("0.4.0");
        agent.join().unwrap();
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, ""), "{out:?}");
        let ops: Vec<Op> = seen.lock().unwrap().iter().map(|r| r.op).collect();
        assert_eq!(ops, [Op::Del, Op::Check]);
        assert_eq!(
            error_of(&check.run("0.3.1"))["code"],
            code::INCOMPATIBLE_VERSION,
            "no CHECK before 0.4.0"
        );
    }

    #[test]
    fn a_refusal_fails_add_with_the_agents_reason() {
        let case = Case::new("ADD", "shop");
        let (agent, _) =
            case.agent(1, Response::refused("cannot open network namespace /var/run/netns/cni-1"));
        let err = error_of(&case.run("0.4.0"));
        agent.join().unwrap();
        assert_eq!(err["code"], code::AGENT_REFUSED);
        assert_eq!(err["cniVersion"], "0.4.0", "errors speak the configuration's version");
        assert!(
            err["msg"].as_str().unwrap().contains("shop/cart-0")
                && err["msg"].as_str().unwrap().contains("cni-1")
        );
    }

    #[test]
    fn without_an_agent_mesh_pods_wait_and_other_pods_start() {
        // No agent has ever run: the file is absent, everything starts.
        let case = Case::new("ADD", "shop");
        let out = case.run("1.0.0");
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, PREV), "{out:?}");
        assert!(out.notes[0].contains("no agent has run here yet"), "{:?}", out.notes);

        // The agent ran and said which namespaces are in the mesh.
        case.mesh_namespaces(&["shop"]);
        let err = error_of(&case.run("1.0.0"));
        assert_eq!(err["code"], code::TRY_AGAIN_LATER);
        assert!(err["msg"].as_str().unwrap().contains("must not start uncaptured"), "{err}");
        assert!(err["details"].as_str().unwrap().contains("cni.sock"), "{err}");

        let legacy = Case { dir: case.dir, vars: Case::new("ADD", "legacy").vars };
        let out = legacy.run("1.0.0");
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, PREV), "{out:?}");

        // An unreadable file holds mesh pods and others alike back.
        std::fs::write(legacy.dir.path().join(MESH_NAMESPACES_FILE), "{").unwrap();
        assert_eq!(error_of(&legacy.run("1.0.0"))["code"], code::TRY_AGAIN_LATER);

        // DEL never fails for want of an agent.
        let del = Case { dir: legacy.dir, vars: Case::new("DEL", "shop").vars };
        assert_eq!(del.run("1.0.0").exit_code, 0);
    }

    #[test]
    fn excluded_and_non_kubernetes_sandboxes_are_not_handed_over() {
        // No agent listens and the namespace is in the mesh file: an attempt would fail.
        let case = Case::new("ADD", "kube-system");
        case.mesh_namespaces(&["kube-system", "shop"]);
        let out = case.run("1.0.0");
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, PREV), "{out:?}");

        let mut plain = Case { dir: case.dir, vars: Case::new("ADD", "shop").vars };
        plain.vars.remove("CNI_ARGS");
        let out = plain.run("1.0.0");
        assert_eq!((out.exit_code, out.stdout.as_str()), (0, PREV), "{out:?}");
    }

    #[test]
    fn missing_inputs_get_named() {
        let mut case = Case::new("ADD", "shop");
        case.vars.insert("CNI_ARGS".into(), "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0".into());
        let err = error_of(&case.run("1.0.0"));
        assert_eq!(err["code"], code::INVALID_ENVIRONMENT);
        assert!(err["msg"].as_str().unwrap().contains("K8S_POD_UID"), "{err}");

        let mut case = Case::new("ADD", "shop");
        case.vars.remove("CNI_NETNS");
        assert!(error_of(&case.run("1.0.0"))["msg"].as_str().unwrap().contains("CNI_NETNS"));

        let case = Case::new("ADD", "shop");
        let out = run(|k| case.vars.get(k).cloned(), br#"{"cniVersion":"1.0.0"}"#, Duration::from_secs(1));
        assert_eq!(error_of(&out)["code"], code::INVALID_CONFIG);
        let out = run(
            |k| case.vars.get(k).cloned(),
            br#"{"cniVersion":"1.0.0","agent_socket":"run/x.sock"}"#,
            Duration::from_secs(1),
        );
        assert!(error_of(&out)["msg"].as_str().unwrap().contains("absolute"));

        let version = Case::new("VERSION", "shop");
        let out = run(|k| version.vars.get(k).cloned(), br#"{"cniVersion":"1.0.0"}"#, Duration::from_secs(1));
        assert_eq!(out.exit_code, 0);
        assert!(out.stdout.contains("supportedVersions"));
    }
}
