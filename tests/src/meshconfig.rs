//! A bed's mesh, written two ways: the agents' `--local-config` file, and the same
//! namespaces, pods and services as Kubernetes objects in a directory weftd reads.

use crate::Pod;
use anyhow::{Context, Result};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};
use weft_model::{
    AMBIENT_LABEL, DATAPLANE_MODE_AMBIENT, Mesh,
    mesh::{Namespace, Service, ServicePort},
};

/// The model every agent of a bed reads, and the file it lives in.
pub struct MeshConfig {
    pub mesh: Mesh,
    path: PathBuf,
    /// weftd's config directory, when the bed has a control plane.
    kubernetes_dir: Option<PathBuf>,
}

impl MeshConfig {
    pub fn new(path: impl Into<PathBuf>) -> MeshConfig {
        MeshConfig { mesh: Mesh::default(), path: path.into(), kubernetes_dir: None }
    }

    /// Also writes the model as Kubernetes objects into `dir` (weftd's `--config-dir`),
    /// from the next [`write`](Self::write) on.
    pub fn with_kubernetes_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.kubernetes_dir = Some(dir.into());
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds (or relabels) a namespace; `ambient` sets istio.io/dataplane-mode=ambient.
    pub fn namespace(&mut self, name: &str, ambient: bool) -> &mut Self {
        self.mesh.namespaces.retain(|n| n.name != name);
        let mut labels = BTreeMap::new();
        if ambient {
            labels.insert(AMBIENT_LABEL.to_owned(), DATAPLANE_MODE_AMBIENT.to_owned());
        }
        self.mesh.namespaces.push(Namespace { name: name.to_owned(), labels });
        self
    }

    /// Adds a bed pod (with its UID, which the agent binds it by) with labels and container
    /// ports. `namespace` must be the one the bed made the pod in: the runtime told the
    /// agent that one, and the agent refuses a pod whose names disagree.
    pub fn pod(&mut self, pod: &Pod, namespace: &str, labels: &[(&str, &str)], ports: &[u16]) -> &mut Self {
        assert_eq!(
            namespace,
            pod.namespace(),
            "pod {} was made in namespace {} by the bed (TestBed::pod) but is declared in {namespace}",
            pod.name(),
            pod.namespace()
        );
        self.mesh.pods.push(weft_model::mesh::Pod {
            name: pod.name().to_owned(),
            namespace: namespace.to_owned(),
            uid: Some(pod.uid().to_owned()),
            ip: IpAddr::V4(pod.ip()),
            node: pod.node_name().to_owned(),
            service_account: pod.name().to_owned(),
            workload: None,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ports: ports.to_vec(),
            services: Vec::new(),
        });
        self
    }

    /// Adds a service with one port mapping and a selector.
    pub fn service(
        &mut self,
        name: &str,
        namespace: &str,
        vip: IpAddr,
        port: u16,
        target_port: u16,
        selector: &[(&str, &str)],
    ) -> &mut Self {
        self.mesh.services.push(Service {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            vip,
            ports: vec![ServicePort { port, target_port: Some(target_port) }],
            selector: selector.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        });
        self
    }

    /// Writes the file atomically (write + rename), as a config-map update would, and the
    /// Kubernetes objects when the bed has a control plane.
    pub fn write(&self) -> Result<()> {
        let text = serde_yaml::to_string(&self.mesh).context("serialising the mesh")?;
        self.write_raw(&text)?;
        if let Some(dir) = &self.kubernetes_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = dir.join(".mesh.yaml.tmp");
            std::fs::write(&tmp, kubernetes_yaml(&self.mesh))
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, dir.join("mesh.yaml"))
                .context("renaming the Kubernetes objects into place")?;
        }
        Ok(())
    }

    /// Writes any text, valid or not, atomically.
    pub fn write_raw(&self, text: &str) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("renaming to {}", self.path.display()))
    }
}

/// The model as Kubernetes objects (YAML documents): see [`kubernetes_objects`].
pub fn kubernetes_yaml(mesh: &Mesh) -> String {
    kubernetes_objects(mesh)
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("JSON values serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The model as Kubernetes objects: Namespaces with their labels, running Pods on their
/// nodes with their IPs, service accounts and ports, Services with cluster IPs.
pub fn kubernetes_objects(mesh: &Mesh) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut docs: Vec<serde_json::Value> = Vec::new();
    for ns in &mesh.namespaces {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": ns.labels}}));
    }
    for pod in &mesh.pods {
        let mut metadata = json!({"name": pod.name, "namespace": pod.namespace, "labels": pod.labels});
        if let Some(uid) = &pod.uid {
            metadata["uid"] = json!(uid);
        }
        let ports: Vec<_> = pod.ports.iter().map(|p| json!({"containerPort": p})).collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"nodeName": pod.node, "serviceAccountName": pod.service_account,
                     "containers": [{"name": "app", "ports": ports}]},
            "status": {"phase": "Running", "podIP": pod.ip.to_string()},
        }));
    }
    for svc in &mesh.services {
        let ports: Vec<_> =
            svc.ports.iter().map(|p| json!({"port": p.port, "targetPort": p.target()})).collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"clusterIP": svc.vip.to_string(), "ports": ports, "selector": svc.selector},
        }));
    }
    docs
}
