//! weftd's waypoint controller: the weftd binary in Kubernetes mode on the fake API server
//! (`weft_tests::kubeapi`), Gateways written with a real kube-rs client. A waypoint Gateway
//! gets its ServiceAccount, Deployment and Service (owned by it, shaped like istiod's) and
//! Accepted/Programmed conditions; bad Gateways get a condition naming what is wrong while
//! the good ones keep working; weftd's GatewayClasses are created, accepted and recreated;
//! a user's own Deployment is never taken over; deleting the Gateway removes what weftd
//! made (the fake server's garbage collector follows the ownerReferences). In-process
//! component tier: loopback only, no root.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use std::time::Duration;
use weft_controlplane::source::kube::KubeSource;
use weft_tests::kubeapi::FakeApiServer;
use weft_tests::poll::until;
use weft_tests::weftd::LoopbackWeftd;

/// Long enough for any step on a loaded machine; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(30);
const IMAGE: &str = "registry.example/weft-waypoint:test";

async fn start(server: &FakeApiServer) -> LoopbackWeftd {
    let args = [
        "--kubernetes-url".as_ref(),
        server.url().as_ref(),
        "--waypoint-image".as_ref(),
        IMAGE.as_ref(),
        "--waypoint-xds-address".as_ref(),
        "https://weftd.weft-system.svc:15012".as_ref(),
    ];
    let mut weftd = LoopbackWeftd::start(std::path::Path::new(env!("CARGO_BIN_EXE_weftd")), &args, "info");
    weftd.wait_ready(PATIENCE).await;
    weftd
}

fn client(server: &FakeApiServer) -> Client {
    KubeSource::from_url(server.url()).unwrap().client()
}

fn gateways() -> ApiResource {
    weft_controlplane::waypoints::controller::gateway_resource()
}

fn gateway(namespace: &str, name: &str, class: &str, port: u16, protocol: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": name, "namespace": namespace, "labels": { "istio.io/waypoint-for": "service" } },
        "spec": { "gatewayClassName": class, "listeners": [{ "name": "mesh", "port": port, "protocol": protocol }] },
    }))
    .unwrap()
}

async fn apply(client: &Client, gw: &DynamicObject) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), gw.metadata.namespace.as_deref().unwrap(), &gateways());
    api.patch(gw.metadata.name.as_deref().unwrap(), &PatchParams::apply("test"), &Patch::Apply(gw))
        .await
        .expect("apply the Gateway");
}

fn condition(gateway: &Value, type_: &str) -> Option<Value> {
    gateway["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

fn namespace(server: &FakeApiServer, name: &str) {
    server.apply(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name,
        "labels": { "istio.io/dataplane-mode": "ambient" } } }));
}

#[tokio::test]
async fn a_waypoint_gateway_is_deployed_programmed_and_removed_with_its_gateway() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "bookinfo");
    let _weftd = start(&server).await;
    let client = client(&server);

    // weftd's classes, created and accepted.
    for (class, controller) in
        [("weft-waypoint", "weft.io/mesh-controller"), ("istio-waypoint", "istio.io/mesh-controller")]
    {
        let gc = until(PATIENCE, class, || {
            server.object("GatewayClass", None, class).filter(|gc| condition(gc, "Accepted").is_some())
        })
        .await;
        assert_eq!(gc["spec"]["controllerName"], controller);
        let accepted = condition(&gc, "Accepted").unwrap();
        assert_eq!(
            (accepted["status"].as_str(), accepted["reason"].as_str()),
            (Some("True"), Some("Accepted"))
        );
    }

    apply(&client, &gateway("bookinfo", "waypoint", "weft-waypoint", 15008, "HBONE")).await;
    let gw = until(PATIENCE, "Programmed", || {
        server
            .object("Gateway.gateway.networking.k8s.io", Some("bookinfo"), "waypoint")
            .filter(|g| condition(g, "Programmed").is_some_and(|c| c["status"] == "True"))
    })
    .await;
    let programmed = condition(&gw, "Programmed").unwrap();
    assert_eq!(programmed["reason"], "Programmed");
    assert_eq!(
        programmed["message"],
        "Resource programmed, assigned to service(s) waypoint.bookinfo.svc.cluster.local:15008"
    );
    assert_eq!(condition(&gw, "Accepted").unwrap()["message"], "Resource accepted");
    assert_eq!(gw["status"]["addresses"][0]["value"], "waypoint.bookinfo.svc.cluster.local");
    let uid = gw["metadata"]["uid"].clone();

    let deployment = server.object("Deployment", Some("bookinfo"), "waypoint").expect("the Deployment");
    let service = server.object("Service", Some("bookinfo"), "waypoint").expect("the Service");
    let account = server.object("ServiceAccount", Some("bookinfo"), "waypoint").expect("the ServiceAccount");
    for object in [&deployment, &service, &account] {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Gateway"), Some("waypoint")));
        assert_eq!(owner["uid"], uid);
        assert_eq!(object["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"], "waypoint");
        assert_eq!(object["metadata"]["labels"]["gateway.istio.io/managed"], "weft.io-mesh-controller");
        assert_eq!(object["metadata"]["managedFields"][0]["manager"], "weft.io/gateway-controller");
    }
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert_eq!(pod["metadata"]["labels"]["istio.io/waypoint-for"], "service");
    assert_eq!(pod["spec"]["containers"][0]["image"], IMAGE);
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({ "name": "WEFT_XDS_ADDRESS", "value": "https://weftd.weft-system.svc:15012" }))
    );
    let ports: Vec<&Value> =
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| &p["port"]).collect();
    assert_eq!(ports, [&json!(15021), &json!(15008)]);
    let root = server
        .object("ConfigMap", Some("bookinfo"), "weft-ca-root-cert")
        .expect("the root in the waypoint's namespace");
    assert!(root["data"]["root-cert.pem"].as_str().unwrap().contains("BEGIN CERTIFICATE"));

    // Someone edits the Deployment: weftd puts it back.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "bookinfo");
    let edit = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "weft-waypoint", "image": "evil" }] } } } });
    deployments.patch("waypoint", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    until(PATIENCE, "the image restored", || {
        server
            .object("Deployment", Some("bookinfo"), "waypoint")
            .filter(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE)
    })
    .await;

    // Deleting the Gateway deletes what weftd made for it (ownerReferences).
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bookinfo", &gateways());
    api.delete("waypoint", &DeleteParams::default()).await.unwrap();
    until(PATIENCE, "the waypoint's objects gone", || {
        let gone = ["Deployment", "Service", "ServiceAccount"]
            .iter()
            .all(|kind| server.object(kind, Some("bookinfo"), "waypoint").is_none());
        gone.then_some(())
    })
    .await;
    assert!(server.object("Namespace", None, "bookinfo").is_some());
}

#[tokio::test]
async fn bad_gateways_are_told_why_and_the_good_ones_keep_working() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "a");
    let _weftd = start(&server).await;
    let client = client(&server);

    apply(&client, &gateway("a", "wrong-listener", "weft-waypoint", 8080, "HTTP")).await;
    apply(&client, &gateway("a", "unknown-class", "no-such-class", 15008, "HBONE")).await;
    apply(&client, &gateway("a", "ingress", "someone-elses", 80, "HTTP")).await;
    // Istio's class, as `istioctl waypoint apply` writes it.
    apply(&client, &gateway("a", "istio", "istio-waypoint", 15008, "HBONE")).await;

    let accepted = |name: &str| {
        let server = &server;
        let name = name.to_owned();
        move || {
            server
                .object("Gateway.gateway.networking.k8s.io", Some("a"), &name)
                .and_then(|g| condition(&g, "Accepted"))
        }
    };
    let wrong = until(PATIENCE, "wrong-listener's condition", accepted("wrong-listener")).await;
    assert_eq!(
        (wrong["status"].as_str(), wrong["reason"].as_str()),
        (Some("False"), Some("ListenersNotValid"))
    );
    let message = wrong["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Expected a single listener on port 15008 with protocol \"HBONE\" (found HTTP on 8080 (mesh))"
        ),
        "{message}"
    );
    let gw = server.object("Gateway.gateway.networking.k8s.io", Some("a"), "wrong-listener").unwrap();
    assert_eq!(gw["status"]["listeners"][0]["conditions"][0]["reason"], "UnsupportedProtocol");
    assert_eq!(condition(&gw, "Programmed").unwrap()["status"], "False");

    let unknown = until(PATIENCE, "unknown-class's condition", accepted("unknown-class")).await;
    assert_eq!((unknown["status"].as_str(), unknown["reason"].as_str()), (Some("False"), Some("Invalid")));
    assert!(
        unknown["message"].as_str().unwrap().contains("GatewayClass \"no-such-class\" does not exist"),
        "{unknown}"
    );

    let istio = until(PATIENCE, "istio-waypoint programmed", || {
        server
            .object("Gateway.gateway.networking.k8s.io", Some("a"), "istio")
            .and_then(|g| condition(&g, "Programmed"))
            .filter(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(istio["reason"], "Programmed");
    let deployment = server.object("Deployment", Some("a"), "istio").unwrap();
    assert_eq!(deployment["metadata"]["labels"]["gateway.istio.io/managed"], "istio.io-mesh-controller");

    // Nothing deployed for the bad ones, and a Gateway of another controller left alone.
    for name in ["wrong-listener", "unknown-class", "ingress"] {
        assert!(server.object("Deployment", Some("a"), name).is_none(), "{name}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ingress = server.object("Gateway.gateway.networking.k8s.io", Some("a"), "ingress").unwrap();
    assert!(ingress.get("status").is_none(), "another controller's Gateway got a status: {ingress}");

    // Fixing the listener makes it a waypoint.
    apply(&client, &gateway("a", "wrong-listener", "weft-waypoint", 15008, "HBONE")).await;
    until(PATIENCE, "the fixed Gateway programmed", || {
        server
            .object("Gateway.gateway.networking.k8s.io", Some("a"), "wrong-listener")
            .and_then(|g| condition(&g, "Programmed"))
            .filter(|c| c["status"] == "True")
    })
    .await;
    assert!(server.object("Deployment", Some("a"), "wrong-listener").is_some());
}

#[tokio::test]
async fn a_users_own_deployment_is_not_taken_over_and_deleted_classes_come_back() {
    let (server, _) = FakeApiServer::start().await.unwrap();
    namespace(&server, "b");
    server.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "mine", "namespace": "b" },
        "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "users-app" }] } } },
    }));
    let _weftd = start(&server).await;
    let client = client(&server);
    apply(&client, &gateway("b", "mine", "weft-waypoint", 15008, "HBONE")).await;
    until(PATIENCE, "the Service", || server.object("Service", Some("b"), "mine")).await;
    until(PATIENCE, "Programmed=False", || {
        server
            .object("Gateway.gateway.networking.k8s.io", Some("b"), "mine")
            .and_then(|g| condition(&g, "Programmed"))
            .filter(|c| c["status"] == "False")
    })
    .await;
    let deployment = server.object("Deployment", Some("b"), "mine").unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "users-app");

    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &weft_controlplane::waypoints::classes::gateway_class_resource());
    until(PATIENCE, "weft-waypoint", || server.object("GatewayClass", None, "weft-waypoint")).await;
    let uid = server.object("GatewayClass", None, "weft-waypoint").unwrap()["metadata"]["uid"].clone();
    classes.delete("weft-waypoint", &DeleteParams::default()).await.unwrap();
    until(PATIENCE, "weft-waypoint recreated", || {
        server.object("GatewayClass", None, "weft-waypoint").filter(|gc| gc["metadata"]["uid"] != uid)
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get_opt("b").await.unwrap().is_some());
}
