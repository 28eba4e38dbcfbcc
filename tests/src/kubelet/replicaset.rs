//! What the controllers make of a Deployment before a kubelet sees it, on the fake API
//! server: the Deployment controller's ReplicaSet for the current pod template (named and
//! labelled with the template's hash, owned by the Deployment), the ReplicaSet
//! controller's Pod (owned by the ReplicaSet, so that deleting the Deployment deletes it),
//! and the scheduler's choice of node. One replica: the bed runs what a test asks for.

use crate::kubeapi::FakeApiServer;
use anyhow::{Context, Result};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use serde_json::{Value, json};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The label the Deployment controller puts on a ReplicaSet and its pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A Pod created for a Deployment and bound to a node, as the API server holds it.
#[derive(Debug, Clone)]
pub struct ScheduledPod {
    pub object: Pod,
    /// Its ReplicaSet's name (`<deployment>-<template hash>`).
    pub replica_set: String,
}

impl ScheduledPod {
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.object.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// Creates (or keeps) the ReplicaSet of `deployment`'s current template and one Pod of it
/// on `node`, Pending until a kubelet reports it.
pub fn schedule(api: &FakeApiServer, deployment: &Deployment, node: &str) -> Result<ScheduledPod> {
    let meta = &deployment.metadata;
    let name = meta.name.as_deref().context("the Deployment has no name")?;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let uid = meta.uid.as_deref().context("the Deployment has no uid: read it back from the API server")?;
    let template = serde_json::to_value(&deployment.spec.template)?;
    let hash = template_hash(&template);
    let replica_set = format!("{name}-{hash}");
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[POD_TEMPLATE_HASH] = json!(hash);
    let owner = |api_version: &str, kind: &str, name: &str, uid: &str| {
        json!([{ "apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
                 "controller": true, "blockOwnerDeletion": true }])
    };
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"] = labels.clone();
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": replica_set, "namespace": namespace, "labels": labels,
                      "ownerReferences": owner("apps/v1", "Deployment", name, uid) },
        "spec": { "replicas": 1, "selector": { "matchLabels": labels }, "template": rs_template },
    }));
    let rs = api.object("ReplicaSet", Some(namespace), &replica_set).context("the ReplicaSet just made")?;
    let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or_default();
    let suffix: String = crate::weftd::random_token().chars().take(5).collect();
    let pod_name = format!("{replica_set}-{suffix}");
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!(node);
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": pod_name, "namespace": namespace, "labels": labels,
                      "annotations": template["metadata"]["annotations"].clone(),
                      "ownerReferences": owner("apps/v1", "ReplicaSet", &replica_set, rs_uid) },
        "spec": spec,
        "status": { "phase": "Pending" },
    }));
    let stored = api.object("Pod", Some(namespace), &pod_name).context("the Pod just made")?;
    Ok(ScheduledPod {
        object: serde_json::from_value(stored).context("the Pod as k8s-openapi reads it")?,
        replica_set,
    })
}

/// Reports `pod` as a kubelet does once its sandbox runs: Running on `pod_ip`, Ready as
/// its probes say.
pub fn report_status(api: &FakeApiServer, pod: &Pod, pod_ip: &str, host_ip: &str, ready: bool) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().context("the Pod has no name")?;
    let mut live: Value = api
        .object("Pod", Some(namespace), name)
        .with_context(|| format!("Pod {namespace}/{name} is gone"))?;
    let ready = if ready { "True" } else { "False" };
    live["status"] = json!({
        "phase": "Running", "podIP": pod_ip, "podIPs": [{ "ip": pod_ip }],
        "hostIP": host_ip, "hostIPs": [{ "ip": host_ip }],
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Initialized", "status": "True" },
            { "type": "ContainersReady", "status": ready },
            { "type": "Ready", "status": ready },
        ],
    });
    api.apply(live);
    Ok(())
}

/// A short stable name for a template, as the Deployment controller's hash names its
/// ReplicaSets (a different hash function; only stability and change matter).
fn template_hash(template: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:x}", hasher.finish())[..10].to_owned()
}
