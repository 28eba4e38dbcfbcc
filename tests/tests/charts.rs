//! Weft's Helm charts (charts/), rendered by Helm itself: `tests/helm/render_charts.py`
//! renders every chart under every profile with Helm v4's library (PyPI helm-python-sdk),
//! lints each chart, and validates every object against Kubernetes' schemas (PyPI
//! kubernetes-validate); this file asserts on its report. Then the umbrella chart's objects
//! go through the test bed's fake Kubernetes API server (created, listed and watched with
//! kube-rs), and weftd, started with the flags its rendered Deployment gives it, serves an
//! agent from them, and answers the chart's validating webhook, which the fake API server
//! calls as kube-apiserver does. No root, loopback only; needs `cargo xtask setup` (the two packages).

use futures::StreamExt;
use kube::{
    Client,
    api::{
        Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchEvent, WatchParams,
    },
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};
use tokio::time::{Instant, timeout};
use weft_tests::{
    bins,
    kubeapi::{FakeApiServer, TokenUser},
    weftd::LoopbackWeftd,
};
use weft_xds::{
    client::{AdsClient, Update},
    istio::workload::{Address, address::Type as AddressType},
    type_url,
};

/// The Kubernetes version every rendered object is validated against (the fake API server
/// reports the same).
const KUBERNETES: &str = "1.34.0";
const CHARTS: [&str; 5] = ["base", "weftd", "agent", "gateway", "weft"];
const PROFILES: [&str; 6] = ["default", "demo", "minimal", "remote", "empty", "ambient"];
const PATIENCE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

/// Values rendered for the assertions below, each `(chart, values)`; the report keeps them
/// in this order. Wrong values are among them: Helm must refuse those by name.
fn cases() -> Vec<(&'static str, Value)> {
    vec![
        ("agent", json!({ "terminationGracePeriodSeconds": 95 })),
        ("agent", json!({ "resourcse": { "requests": { "cpu": "1" } } })),
        ("agent", json!({ "terminationGracePeriodSeconds": "thirty" })),
        ("weftd", json!({ "replicaCount": "two" })),
        ("weft", json!({ "global": { "profile": "dmeo" } })),
        ("weft", json!({ "agent": { "tolerations": "all" } })),
        ("gateway", json!({ "type": "sideways" })),
        ("weft", json!({ "profile": "demo" })),
        (
            "weft",
            json!({ "agent": { "resourceName": "ztunnel" }, "weftd": { "trustedAgentName": "ztunnel" } }),
        ),
        ("agent", json!({ "resourceName": "Weft_Agent" })),
    ]
}

/// The report of one run of the render script (run once per test process).
fn report() -> &'static Value {
    static REPORT: OnceLock<Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let script = repo().join("tests/helm/render_charts.py");
        let mut command = Command::new("python3");
        command.arg(&script).arg("--charts").arg(repo().join("charts")).args(["--kube-version", KUBERNETES]);
        for (chart, values) in cases() {
            command.arg("--case").arg(format!("{chart}={values}"));
        }
        let out = command.output().unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
        // Helm's loader logs each symbolic link it follows (the charts share their profiles
        // that way); only the script's own words matter.
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("found symbolic link in path"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(out.status.success(), "{} failed ({}):\n{stderr}", script.display(), out.status);
        serde_json::from_slice(&out.stdout).expect("the script prints a JSON report")
    })
}

/// The objects of `chart` rendered under `profile`.
fn rendered(chart: &str, profile: &str) -> &'static [Value] {
    report()["renders"]
        .as_array()
        .expect("renders")
        .iter()
        .find(|r| r["chart"] == chart && r["profile"] == profile)
        .unwrap_or_else(|| panic!("no render of {chart} under {profile}"))["objects"]
        .as_array()
        .expect("objects")
}

fn case(index: usize) -> &'static Value {
    &report()["cases"][index]
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(|o| o["kind"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_chart_renders_under_every_profile_lints_clean_and_validates() {
    let report = report();
    assert!(report["helm"].as_str().unwrap().starts_with("v4."), "Helm v4's library: {}", report["helm"]);
    let mut objects = 0;
    for chart in CHARTS {
        for profile in PROFILES {
            objects += rendered(chart, profile).len();
        }
        // The script fails on any finding above "info"; what is left is informational.
        for message in report["lint"][chart].as_array().unwrap() {
            assert_eq!(message["severity"], 1, "{chart}: {message}");
        }
    }
    let validated = report["validated"].as_u64().unwrap() as usize;
    assert!(objects > 100 && validated >= objects, "{validated} objects validated of {objects} rendered");
    // Every object is one Kubernetes knows (the charts make no custom resources).
    for render in report["renders"].as_array().unwrap() {
        for object in render["objects"].as_array().unwrap() {
            let api = object["apiVersion"].as_str().unwrap();
            assert!(!api.contains("istio.io/") && !api.starts_with("gateway."), "{object}");
        }
    }
}

#[test]
fn profiles_mean_what_istios_do() {
    // default: the control plane and the agent; the gateway chart makes an ingress gateway.
    let default = rendered("weft", "default");
    assert!(
        find(default, "Deployment", "weftd").is_some() && find(default, "DaemonSet", "weft-agent").is_some()
    );
    assert!(find(default, "Deployment", "weft-egressgateway").is_none(), "no egress gateway by default");
    let ingress = rendered("gateway", "default");
    let service = find(ingress, "Service", "weft-ingressgateway").expect("an ingress gateway");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        find(ingress, "Deployment", "weft-ingressgateway").unwrap()["metadata"]["labels"]["istio"],
        "ingressgateway"
    );

    // demo: access logs, every request traced, small requests, an egress gateway.
    let demo = rendered("weft", "demo");
    let mesh = find(demo, "ConfigMap", "weft").expect("the mesh ConfigMap")["data"]["mesh"].as_str().unwrap();
    assert!(mesh.contains("accessLogFile: /dev/stdout") && mesh.contains("sampling: 100"), "{mesh}");
    let agent = find(demo, "DaemonSet", "weft-agent").unwrap();
    assert_eq!(agent["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "10m");
    let egress = find(demo, "Deployment", "weft-egressgateway").expect("demo installs an egress gateway");
    assert!(
        egress["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--access-log"))
    );
    assert_eq!(find(demo, "Service", "weft-egressgateway").unwrap()["spec"]["type"], "ClusterIP");
    assert!(find(demo, "HorizontalPodAutoscaler", "weft-egressgateway").is_none(), "demo does not autoscale");

    // minimal: the control plane alone.
    let minimal = rendered("weft", "minimal");
    assert!(find(minimal, "Deployment", "weftd").is_some());
    assert!(!kinds(minimal).contains("DaemonSet"));
    assert!(rendered("gateway", "minimal").is_empty());

    // remote: no local weftd, the reader account a remote one uses.
    let remote = rendered("weft", "remote");
    assert!(find(remote, "Deployment", "weftd").is_none());
    assert!(find(remote, "ServiceAccount", "weft-reader-service-account").is_some());
    assert!(find(remote, "DaemonSet", "weft-agent").is_some());
    let with_address = report()["renders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chart"] == "weftd" && r["values"]["global"]["remotePilotAddress"].is_string())
        .unwrap();
    let slice = find(with_address["objects"].as_array().unwrap(), "EndpointSlice", "weftd-remote").unwrap();
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["198.51.100.7"]));

    // empty: nothing at all; ambient: as default, without the ingress gateway.
    for chart in CHARTS {
        assert!(rendered(chart, "empty").is_empty(), "{chart} under empty");
    }
    assert!(rendered("gateway", "ambient").is_empty());
    assert_eq!(kinds(rendered("weft", "ambient")), kinds(default));
}

#[test]
fn the_agent_daemonset_asks_for_what_the_agent_needs() {
    let agent = find(rendered("agent", "default"), "DaemonSet", "weft-agent").expect("the DaemonSet");
    let spec = &agent["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["capabilities"]["add"], json!(["BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]));
    assert_eq!(security["privileged"], false);
    let readme = std::fs::read_to_string(repo().join("charts/agent/README.md")).unwrap();
    for capability in security["capabilities"]["add"].as_array().unwrap() {
        assert!(
            readme.contains(&format!("| `{}` |", capability.as_str().unwrap())),
            "{capability} explained"
        );
    }

    // Host paths: bpffs, the CNI socket directory, what the netns and cgroup lookups need,
    // the host's /proc/sys for the pods' sysctl;
    // the CNI directories for the installer alone.
    let host_paths: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    let expected = [
        ("bpffs", "/sys/fs/bpf"),
        ("cgroup", "/sys/fs/cgroup"),
        ("cni-socket-dir", "/var/run/weft"),
        ("netns-dir", "/var/run/netns"),
        ("proc-sys", "/proc/sys"),
        ("cni-bin-dir", "/opt/cni/bin"),
        ("cni-conf-dir", "/etc/cni/net.d"),
    ];
    assert_eq!(host_paths, BTreeMap::from(expected));
    let mounted: BTreeSet<&str> =
        container["volumeMounts"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(
        !mounted.contains("cni-bin-dir") && !mounted.contains("cni-conf-dir"),
        "the agent itself: {mounted:?}"
    );
    assert_eq!(pod["hostPID"], true);

    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]), "every taint");
    assert_eq!(
        spec["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } })
    );
    assert_eq!(container["readinessProbe"]["httpGet"], json!({ "path": "/healthz/ready", "port": 15021 }));
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
    assert_eq!(spec["template"]["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    let args = container["args"].as_array().unwrap();
    assert!(
        args.contains(&json!("--readiness-addr=0.0.0.0:15021"))
            && args.contains(&json!("--metrics-addr=0.0.0.0:15020"))
    );

    // terminationGracePeriodSeconds is the user's, and the drain fits in it.
    let longer = case(0);
    assert_eq!(longer["error"], Value::Null, "{longer}");
    let pod = &find(longer["objects"].as_array().unwrap(), "DaemonSet", "weft-agent").unwrap()["spec"]["template"]
        ["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 95);
    assert!(pod["containers"][0]["args"].as_array().unwrap().contains(&json!("--drain-timeout=93s")));
}

#[test]
fn a_wrong_value_is_refused_with_a_message_that_names_it() {
    let refused = [
        (1, "additional properties 'resourcse' not allowed"),
        (2, "at '/terminationGracePeriodSeconds': got string, want integer"),
        (3, "at '/replicaCount': got string, want integer"),
        (
            4,
            "at '/global/profile': value must be one of '', 'default', 'demo', 'minimal', 'remote', 'empty', 'ambient'",
        ),
        (5, "at '/tolerations': got string, want array"),
        (6, "at '/type': value must be one of 'ingress', 'egress'"),
        (7, "use --set global.profile=demo"),
        (9, "at '/resourceName': 'Weft_Agent' does not match pattern"),
    ];
    for (index, message) in refused {
        let case = case(index);
        let error = case["error"].as_str().unwrap_or_else(|| panic!("Helm accepted {case}"));
        assert!(error.contains(message), "{}: {error}", case["values"]);
    }
    // The umbrella names the chart whose values are wrong.
    assert!(case(5)["error"].as_str().unwrap().contains("agent:"), "{}", case(5)["error"]);
}

/// Istio's names for the agent (the agent chart's `resourceName=ztunnel`, the weftd
/// chart's `trustedAgentName`): the DaemonSet, its pods' prefix, ServiceAccount and `app`
/// label that Istio's stock ztunnel dashboard selects, and weftd trusting that account;
/// by default `weft-agent`, trusted by default.
#[test]
fn the_agent_takes_ztunnels_names_when_asked_and_weftd_trusts_that_account() {
    let trusted = |objects: &[Value]| -> Vec<String> {
        let weftd = find(objects, "Deployment", "weftd").expect("weftd's Deployment");
        let args = weftd["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
        args.iter()
            .filter_map(|a| a.as_str()?.strip_prefix("--agent-service-accounts="))
            .map(str::to_owned)
            .collect()
    };
    let default = rendered("weft", "default");
    assert!(find(default, "DaemonSet", "weft-agent").is_some());
    assert_eq!(trusted(default), ["istio-system/weft-agent"]);

    let named = case(8);
    assert_eq!(named["error"], Value::Null, "{named}");
    let objects = named["objects"].as_array().unwrap();
    let ds = find(objects, "DaemonSet", "ztunnel").expect("the DaemonSet named ztunnel");
    assert!(find(objects, "DaemonSet", "weft-agent").is_none());
    assert_eq!(ds["spec"]["selector"]["matchLabels"]["app"], "ztunnel");
    assert_eq!(ds["spec"]["template"]["metadata"]["labels"]["app"], "ztunnel", "Istio's app=\"ztunnel\"");
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], "ztunnel");
    assert!(find(objects, "ServiceAccount", "ztunnel").is_some());
    assert_eq!(trusted(objects), ["istio-system/ztunnel"]);
}

#[test]
fn the_charts_share_one_definition_of_global_values() {
    let schema = |chart: &str| -> Value {
        let text =
            std::fs::read_to_string(repo().join(format!("charts/{chart}/values.schema.json"))).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{chart}/values.schema.json: {e}"))
    };
    let umbrella = schema("weft");
    for chart in CHARTS {
        let s = schema(chart);
        assert_eq!(
            s["$defs"]["global"], umbrella["$defs"]["global"],
            "{chart}: global differs from the umbrella's"
        );
        assert_eq!(
            s["$defs"]["profile"]["enum"],
            json!(["", "default", "demo", "minimal", "remote", "empty", "ambient"])
        );
    }
}

/// `binary ARGS… --help` succeeds only when clap knows every flag and takes every value in
/// ARGS (it parses them in order before it meets --help), so the templates' flags are checked
/// against the real binaries' options.
fn assert_flags_known(binary: &str, leading: &[&str], args: &[Value]) {
    let path = bins::path(binary);
    let args: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
    let out = Command::new(&path).args(leading).args(&args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{binary} refuses the chart's flags {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_flag_in_a_template_is_one_the_binary_has() {
    let weft = rendered("weft", "demo");
    let container = |kind: &str, name: &str| -> &Value {
        &find(weft, kind, name).unwrap_or_else(|| panic!("{kind} {name}"))["spec"]["template"]["spec"]
    };
    let weftd = &container("Deployment", "weftd")["containers"][0];
    assert_flags_known("weftd", &[], weftd["args"].as_array().unwrap());
    let agent = container("DaemonSet", "weft-agent");
    let args = agent["containers"][0]["args"].as_array().unwrap();
    assert_eq!(args[0], "run");
    assert_flags_known("weft-agent", &["run"], &args[1..]);
    let install = agent["initContainers"][0]["args"].as_array().unwrap();
    assert_eq!(install[0], "install");
    assert_flags_known("weft-cni", &["install"], &install[1..]);
    let gateway = &container("Deployment", "weft-egressgateway")["containers"][0];
    assert_flags_known("weft-waypoint", &[], gateway["args"].as_array().unwrap());
}

/// The gateway chart runs weft-waypoint as a gateway (`--proxy-type=router`) that tells
/// weftd its pod's labels (an Istio Gateway's selector picks it by them) from the
/// downward-API file the Deployment mounts, and listens on the Service's target ports.
#[test]
fn the_gateway_runs_weft_waypoint_as_a_router_with_its_pod_labels() {
    let objects = rendered("gateway", "default");
    let deployment = find(objects, "Deployment", "weft-ingressgateway").expect("the ingress gateway");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--proxy-type=router"), "{args:?}");
    let file = args.iter().find_map(|a| a.strip_prefix("--pod-labels-file=")).expect("--pod-labels-file");
    let (dir, name) = file.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == dir);
    let volume_name = mount.unwrap_or_else(|| panic!("nothing mounted at {dir}"))["name"].clone();
    let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume_name).unwrap();
    let item = volume["downwardAPI"]["items"].as_array().unwrap().iter().find(|i| i["path"] == name);
    assert_eq!(item.expect("the labels item")["fieldRef"]["fieldPath"], "metadata.labels");
    let service = find(objects, "Service", "weft-ingressgateway").expect("its Service");
    let target = |port: u64| {
        service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == port).unwrap()["targetPort"]
            .clone()
    };
    assert_eq!((target(80), target(443)), (8080.into(), 8443.into()), "80/443 → 8080/8443");
    let container_ports: Vec<&Value> =
        container["ports"].as_array().unwrap().iter().map(|p| &p["containerPort"]).collect();
    assert!(container_ports.contains(&&Value::from(8080)) && container_ports.contains(&&Value::from(8443)));
}

/// The kube-rs resource for an object's apiVersion and kind, from the server's discovery.
async fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap_or(("", object["apiVersion"].as_str().unwrap()));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    let (resource, capabilities): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("the fake API server does not serve {gvk:?}: {e}"));
    match object["metadata"]["namespace"].as_str() {
        Some(ns) if capabilities.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    }
}

/// Creates `object` through the API, as `helm install` (or kubectl) does.
async fn create(client: &Client, object: &Value) {
    let api = api_for(client, object).await;
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    api.create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("creating {} {}: {e}", object["kind"], object["metadata"]["name"]));
}

/// A fake API server with `objects` created through the API as Helm installs them: CRDs
/// first, then the rest. Returns the server, its URL and a kube-rs client of it.
async fn install(objects: &[Value]) -> (FakeApiServer, String, Client) {
    let (server, url) = FakeApiServer::start().await.expect("fake API server");
    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let (crds, rest): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| o["kind"] == "CustomResourceDefinition");
    assert!(crds.len() >= 13, "Istio's and Gateway API's CRDs: {}", crds.len());
    for object in crds.iter().chain(&rest) {
        create(&client, object).await;
    }
    (server, url, client)
}

/// weftd with the flags of its rendered Deployment in `objects`; the test's loopback ports
/// replace the listen addresses, and --kubernetes-url points it at the fake server. Ready.
async fn start_weftd(objects: &[Value], url: &str) -> LoopbackWeftd {
    let deployment = find(objects, "Deployment", "weftd").unwrap();
    let rendered_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    let mut args: Vec<String> = rendered_args
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| {
            !["--secure-grpc-addr=", "--debug-addr=", "--metrics-addr=", "--webhook-addr="]
                .iter()
                .any(|f| a.starts_with(f))
        })
        .collect();
    assert!(args.contains(&"--kubernetes".to_owned()), "{args:?}");
    args.extend(["--kubernetes-url".to_owned(), url.to_owned()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut weftd = LoopbackWeftd::start(&bins::path("weftd"), &args, "info");
    weftd.wait_ready(PATIENCE).await;
    weftd
}

/// A Bookinfo namespace in the mesh: productpage and reviews v1/v2, their Services, and a
/// VirtualService; the agent's pod on n1 as the rendered DaemonSet makes it.
fn bookinfo(agent_template: &Value) -> Vec<Value> {
    let pod = |name: &str, app: &str, version: &str, ip: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "bookinfo", "labels": { "app": app, "version": version } },
            "spec": { "nodeName": "n1", "serviceAccountName": format!("bookinfo-{app}"),
                      "containers": [{ "name": app, "image": app, "ports": [{ "containerPort": 9080 }] }] },
            "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }] },
        })
    };
    let service = |name: &str, ip: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": "bookinfo" },
            "spec": { "clusterIP": ip, "clusterIPs": [ip], "selector": { "app": name },
                      "ports": [{ "name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP" }] },
        })
    };
    let mut agent_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "weft-agent-n1", "namespace": "istio-system", "labels": agent_template["metadata"]["labels"] },
        "spec": agent_template["spec"],
        "status": { "phase": "Running", "podIP": "198.18.0.1" },
    });
    agent_pod["spec"]["nodeName"] = "n1".into();
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": "bookinfo", "labels": { "istio.io/dataplane-mode": "ambient" } } }),
        agent_pod,
        pod("productpage-v1", "productpage", "v1", "198.18.1.2"),
        pod("reviews-v1", "reviews", "v1", "198.18.1.3"),
        pod("reviews-v2", "reviews", "v2", "198.18.1.4"),
        service("productpage", "198.19.0.9"),
        service("reviews", "198.19.0.10"),
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": "bookinfo" },
            "spec": { "hosts": ["reviews"], "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] },
        }),
        // Refused as Istio's webhook refuses it, by name and field: proof weftd read it.
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": { "name": "reviews-broken", "namespace": "bookinfo" },
            "spec": { "hosts": [], "gateways": ["mesh"],
                      "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] },
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_takes_the_weft_chart_and_weftd_serves_from_it() {
    let objects = rendered("weft", "default");
    let (server, url, client) = install(objects).await;

    // Each kind lists back what was created, and a watch from the start replays it.
    let mut by_kind: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for object in objects {
        let key =
            (object["apiVersion"].as_str().unwrap().to_owned(), object["kind"].as_str().unwrap().to_owned());
        by_kind.entry(key).or_default().push(object["metadata"]["name"].as_str().unwrap().to_owned());
    }
    for ((api_version, kind), mut names) in by_kind {
        let sample = json!({ "apiVersion": api_version, "kind": kind, "metadata": {} });
        let api = api_for(&client, &sample).await;
        let mut listed: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        names.sort();
        listed.sort();
        assert_eq!(listed, names, "{kind} listed");
        let mut events = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
        let mut watched = Vec::new();
        while watched.len() < names.len() {
            match timeout(PATIENCE, events.next()).await.expect("watch events").expect("an event").unwrap() {
                WatchEvent::Added(o) => watched.push(o.metadata.name.unwrap()),
                other => panic!("{kind}: unexpected {other:?}"),
            }
        }
        watched.sort();
        assert_eq!(watched, names, "{kind} watched");
    }
    // A kind only a CRD of the chart defines is served now.
    let class = json!({ "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                        "metadata": { "name": "weft-waypoint" }, "spec": { "controllerName": "weft.io/waypoint" } });
    create(&client, &class).await;

    let agent = find(objects, "DaemonSet", "weft-agent").unwrap();
    for object in bookinfo(&agent["spec"]["template"]) {
        create(&client, &object).await;
    }

    let weftd = start_weftd(objects, &url).await;
    let root =
        server.object("ConfigMap", Some("istio-system"), "weft-ca-root-cert").expect("the root ConfigMap");
    weftd.set_root_cert(root["data"]["root-cert.pem"].as_str().unwrap());

    // The agent of n1, with the token its DaemonSet's projected volume would hold.
    let token = "token-weft-agent-n1";
    server.add_token(
        token,
        TokenUser::service_account("istio-system", "weft-agent")
            .bound_to_pod("weft-agent-n1", "uid")
            .for_audiences(&["istio-ca"]),
    );
    let token_file = weftd.dir().join("istio-token");
    std::fs::write(&token_file, token).unwrap();
    let mut config = weftd.client_config("agent-n1", &[type_url::ADDRESS], &token_file);
    config.node_name = Some("n1".into());
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let ads =
        AdsClient::start(config, move |update: Update| tx.send(update).map_err(|_| "test ended".to_owned()))
            .unwrap();
    let want = [
        "Kubernetes//Pod/bookinfo/productpage-v1",
        "Kubernetes//Pod/bookinfo/reviews-v1",
        "Kubernetes//Pod/bookinfo/reviews-v2",
        "bookinfo/productpage.bookinfo.svc.cluster.local",
        "bookinfo/reviews.bookinfo.svc.cluster.local",
    ];
    let mut held: BTreeMap<String, Address> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while !want.iter().all(|name| held.contains_key(*name)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = match timeout(left, updates.recv()).await {
            Ok(Some(update)) => update,
            _ => panic!(
                "the agent holds {:?}, not {want:?}; weftd:\n{}",
                held.keys().collect::<Vec<_>>(),
                weftd.log()
            ),
        };
        for name in update.removals {
            held.remove(&name);
        }
        for (name, _version, any) in update.upserts {
            held.insert(name, prost::Message::decode(any.value.as_slice()).unwrap());
        }
    }
    let Some(AddressType::Workload(reviews)) = &held["Kubernetes//Pod/bookinfo/reviews-v1"].r#type else {
        panic!("a workload")
    };
    assert_eq!(reviews.trust_domain, "cluster.local", "from the chart's --trust-domain");
    assert_eq!(reviews.service_account, "bookinfo-reviews");
    let (_, syncz) = weftd.get("/debug/syncz").await.unwrap();
    assert!(syncz.contains("agent-n1"), "weftd lists the agent: {syncz}");
    ads.stop().await;

    // The VirtualServices were read from the API server: the broken one is refused by name
    // and field.
    let (status, diagnostics) = weftd.get("/debug/diagnostics").await.unwrap();
    assert_eq!(status, 200);
    assert!(diagnostics.contains("reviews-broken") && diagnostics.contains("spec.gateways"), "{diagnostics}");
}

/// A VirtualService as a user writes it; `weight` out of range makes it invalid.
fn virtual_service(name: &str, weight: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": { "name": name, "namespace": "bookinfo" },
        "spec": { "hosts": ["reviews"],
                  "http": [{ "route": [{ "destination": { "host": "reviews" }, "weight": weight }] }] },
    })
}

/// The chart's ValidatingWebhookConfiguration as the API server holds it now.
fn webhook_config(server: &FakeApiServer) -> Value {
    server
        .object("ValidatingWebhookConfiguration", None, "weft-validator-istio-system")
        .expect("the chart's ValidatingWebhookConfiguration")
}

/// Waits until every webhook of the chart's configuration has weftd's `root` as caBundle
/// and failurePolicy Fail.
async fn wait_patched(server: &FakeApiServer, root: &str, weftd: &LoopbackWeftd) {
    use base64::Engine as _;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let config = webhook_config(server);
        let patched = config["webhooks"].as_array().unwrap().iter().all(|webhook| {
            let ca = webhook["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            let ca = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
            ca == root.as_bytes() && webhook["failurePolicy"] == "Fail"
        });
        if patched {
            return;
        }
        assert!(Instant::now() < deadline, "weftd never patched the webhook: {config}\n{}", weftd.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Istio's validating webhook end to end: the chart installs the configuration (Ignore, no
/// caBundle); weftd in Kubernetes mode patches in its root and, once its webhook refuses the
/// dry-run probe the API server sends it, failurePolicy Fail; then the API server refuses a
/// bad VirtualService with weftd's message, stores a good one, and weftd serves it. A
/// configuration written back as rendered is patched again. With weftd gone, Fail refuses
/// writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftds_webhook_refuses_a_bad_virtual_service_through_the_api_server() {
    use kube::api::PostParams;
    let objects = rendered("weft", "default");
    let installed = find(objects, "ValidatingWebhookConfiguration", "weft-validator-istio-system")
        .expect("the default profile renders the webhook");
    assert_eq!(installed["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(installed["webhooks"][0]["clientConfig"]["service"]["name"], "weftd");
    let service = find(objects, "Service", "weftd").unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 443 && p["targetPort"] == 15017),
        "{service}"
    );
    let (server, url, client) = install(objects).await;
    let vs = api_for(&client, &virtual_service("x", 1)).await;
    let create = |object: Value| {
        let vs = vs.clone();
        async move { vs.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await }
    };

    // No weftd answers yet: Ignore lets even a bad object through, as on a fresh install.
    create(virtual_service("before-weftd", -1)).await.expect("failurePolicy Ignore while nobody answers");

    let weftd = start_weftd(objects, &url).await;
    server.route_service("istio-system", "weftd", weftd.webhook);
    let root =
        server.object("ConfigMap", Some("istio-system"), "weft-ca-root-cert").expect("the root ConfigMap");
    let root = root["data"]["root-cert.pem"].as_str().unwrap().to_owned();
    wait_patched(&server, &root, &weftd).await;
    // A `helm upgrade` writes the configuration back as rendered: weftd patches it again.
    let rewritten = server.apply(installed.clone());
    wait_patched(&server, &root, &weftd).await;
    assert_ne!(webhook_config(&server)["metadata"]["resourceVersion"], rewritten.as_str(), "patched after");

    let refused =
        create(virtual_service("reviews-bad", -10)).await.expect_err("a bad VirtualService is refused");
    let kube::Error::Api(status) = refused else { panic!("{refused:?}") };
    assert_eq!(status.code, 400, "{status:?}");
    assert!(
        status.message.starts_with(
            "admission webhook \"validation.istio.io\" denied the request: configuration is invalid: \
             VirtualService bookinfo/reviews-bad: spec.http[0].route[0].weight"
        ),
        "{}",
        status.message
    );
    assert!(server.object("VirtualService", Some("bookinfo"), "reviews-bad").is_none(), "not stored");

    create(virtual_service("reviews", 100)).await.expect("a good VirtualService is stored");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = weftd.scrape().await.unwrap_or_default();
        // The good one and the one let through before weftd answered (refused as it is read).
        let served = metrics.contains("pilot_virt_services 1\n");
        let counted = metrics.contains("galley_validation_failed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"invalid_resource\"} 1\n")
            && metrics.contains("galley_validation_passed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\"} 1\n");
        if served && counted {
            break;
        }
        assert!(Instant::now() < deadline, "weftd does not serve the good VirtualService:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, diagnostics) = weftd.get("/debug/diagnostics").await.unwrap();
    assert!(
        diagnostics.contains("before-weftd") && !diagnostics.contains("VirtualService/bookinfo/reviews "),
        "{diagnostics}"
    );

    // weftd gone: Fail refuses what nobody can validate.
    drop(weftd);
    let refused = create(virtual_service("after-weftd", 100)).await.expect_err("Fail with no webhook");
    let kube::Error::Api(status) = refused else { panic!("{refused:?}") };
    assert_eq!(status.code, 500, "{status:?}");
    assert!(status.message.contains("failed calling webhook \"validation.istio.io\""), "{}", status.message);
}
