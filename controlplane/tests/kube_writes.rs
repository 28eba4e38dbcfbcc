//! The fake API server's writes as a real kube-rs client sees them (what weftd's waypoint
//! controller and weftctl rely on): server-side apply creates and merges and records its
//! manager, a write that changes nothing keeps the resourceVersion, the status subresource
//! and the object do not write each other's part, a merge patch needs an object, other
//! patch types are refused by name, and DELETE cascades to owned objects unless orphaning.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use weft_controlplane::source::kube::KubeSource;
use weft_tests::kubeapi::FakeApiServer;

#[tokio::test]
async fn apply_merge_status_and_cascading_delete() {
    let (server, url) = FakeApiServer::start().await.unwrap();
    let client = KubeSource::from_url(&url).unwrap().client();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");

    // Apply creates, then merges; managedFields names the manager.
    let apply = |data: serde_json::Value| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "owner" }, "data": data });
    let created = maps
        .patch("owner", &PatchParams::apply("mgr"), &Patch::Apply(apply(json!({ "a": "1" }))))
        .await
        .unwrap();
    let merged = maps
        .patch("owner", &PatchParams::apply("mgr"), &Patch::Apply(apply(json!({ "b": "2" }))))
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(merged.metadata.managed_fields.unwrap()[0].manager.as_deref(), Some("mgr"));
    let again = maps
        .patch("owner", &PatchParams::apply("mgr"), &Patch::Apply(apply(json!({ "b": "2" }))))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, merged.metadata.resource_version,
        "a no-op write bumped the version"
    );
    assert_ne!(created.metadata.resource_version, merged.metadata.resource_version);

    // An apply without a field manager, a merge patch of nothing, a strategic merge patch.
    let e = maps.patch("owner", &PatchParams::default(), &Patch::Apply(apply(json!({})))).await.unwrap_err();
    assert!(e.to_string().contains("fieldManager"), "{e}");
    let e = maps
        .patch("absent", &PatchParams::default(), &Patch::Merge(json!({ "data": {} })))
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 404), "{e}");
    let e = maps.patch("owner", &PatchParams::default(), &Patch::Strategic(json!({}))).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 415 && s.message.contains("strategic-merge-patch")),
        "{e}"
    );

    // Status and the rest are written separately.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    server.apply(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "ns" } }));
    namespaces
        .patch_status(
            "ns",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Active" }, "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    namespaces
        .patch(
            "ns",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "status": { "phase": "Terminating" }, "metadata": { "labels": { "a": "b" } } }),
            ),
        )
        .await
        .unwrap();
    let ns = server.object("Namespace", None, "ns").unwrap();
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"], json!({ "a": "b" }));

    // Cascading delete through ownerReferences, two levels; orphaning keeps dependents.
    let uid = created.metadata.uid.unwrap();
    let owned = |name: &str, owner: &str| {
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": "ns", "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": owner }] } })
    };
    server.apply(owned("child", &uid));
    let child_uid = server.object("ConfigMap", Some("ns"), "child").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    server.apply(owned("grandchild", &child_uid));
    server.apply(owned("unrelated", "other"));
    maps.delete("owner", &DeleteParams::default()).await.unwrap();
    for name in ["owner", "child", "grandchild"] {
        assert!(server.object("ConfigMap", Some("ns"), name).is_none(), "{name} survived");
    }
    assert!(server.object("ConfigMap", Some("ns"), "unrelated").is_some());
    let unrelated_uid = server.object("ConfigMap", Some("ns"), "unrelated").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    server.apply(owned("orphan", &unrelated_uid));
    maps.delete("unrelated", &DeleteParams::orphan()).await.unwrap();
    assert!(server.object("ConfigMap", Some("ns"), "orphan").is_some());
    let e = maps.delete("unrelated", &DeleteParams::default()).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 404), "{e}");
}
