//! What a waypoint Gateway becomes: the Gateway read into a [`Waypoint`] (or the reason it
//! cannot be one), and the ServiceAccount, Deployment and Service weftd applies for it,
//! shaped like istiod's `waypoint` template (manifests/charts/istio-control/istio-discovery/
//! files/waypoint.yaml), each owned by the Gateway so that deleting it deletes them.
//!
//! Where Weft's waypoint differs from Istio's: the container runs `weft-waypoint` (not
//! `pilot-agent proxy waypoint`), configured by its flags' environment variables; its
//! metrics listener (`/stats/prometheus` and the readiness `/healthz/ready`, as
//! pilot-agent's 15020) is on 15020, the port Istio's pods are scraped on, and the
//! Service's `status-port` 15021 leads to it. The admin endpoints stay on loopback.

use super::classes::WaypointClass;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
            SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort,
            ServiceSpec, Volume, VolumeMount, VolumeProjection,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::api::DynamicObject;
use std::collections::BTreeMap;

/// The label naming the Gateway on everything made for it (and the pod selector).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The label naming the Gateway's class on everything made for it.
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// Marks an object as made by a gateway controller: weftd updates only objects that carry
/// it, never one a user made under the same name (istiod's `canManage`).
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// The namespace (or pod) label that enrolls pods in the mesh; a waypoint's own pods are
/// `none`, so that their traffic is not captured again.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// What a waypoint handles: service, workload, all or none (`istio.io/waypoint-for`).
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// HBONE's port: the waypoint's one listener.
pub const HBONE_PORT: i32 = 15008;
/// The waypoint's admin port: readiness and Prometheus metrics.
pub const ADMIN_PORT: i32 = 15020;
/// The status port Istio's waypoint Service exposes (readiness); it leads to [`ADMIN_PORT`].
pub const STATUS_PORT: i32 = 15021;
/// The listener a waypoint Gateway must have, and nothing else.
pub const MESH_LISTENER: &str = "mesh";
/// Where the pod finds the mesh root and its token.
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// Annotations of the Gateway that are not passed on (istiod's list).
const NOT_PASSED_ON: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "gateway.istio.io/name-override",
    "gateway.istio.io/service-account",
    "gateway.istio.io/controller-version",
];

/// How weftd's waypoints are deployed (from weftd's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointSettings {
    /// The weft-waypoint container image.
    pub image: String,
    /// weftd's secure port as the waypoints reach it, e.g. `https://weftd.istio-system.svc:15012`.
    pub xds_address: String,
    /// The trust domain of the mesh's identities.
    pub trust_domain: String,
    /// The ConfigMap holding the mesh root (`root-cert.pem`), made in each waypoint's
    /// namespace.
    pub root_config_map: String,
    /// The token audience weftd checks (its first `--token-audiences`).
    pub token_audience: String,
}

/// A Gateway that is a well-formed waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub class: &'static WaypointClass,
    /// The Gateway's labels and annotations, passed on to what is made for it (Gateway
    /// API's `spec.infrastructure` wins where it is set).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why a Gateway of a waypoint class is not a waypoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The listeners are not exactly one HBONE listener on 15008.
    #[error(
        "Expected a single listener on port 15008 with protocol \"HBONE\" (found {found}): a waypoint \
         is `listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]`"
    )]
    Listeners { found: String },
    /// The name is not usable for the objects made for it.
    #[error(
        "the Gateway's name {0:?} cannot name a Deployment and Service (a DNS label of at most 63 characters)"
    )]
    Name(String),
}

impl Waypoint {
    /// Reads a Gateway of `class`: a waypoint, or why it is not one.
    pub fn from_gateway(gateway: &DynamicObject, class: &'static WaypointClass) -> Result<Waypoint, Invalid> {
        let name = gateway.metadata.name.clone().unwrap_or_default();
        if name.is_empty() || name.len() > 63 || !is_dns_label(&name) {
            return Err(Invalid::Name(name));
        }
        check_listeners(&gateway.data["spec"]["listeners"])?;
        let infrastructure = &gateway.data["spec"]["infrastructure"];
        let pick = |given: Option<&BTreeMap<String, String>>, infra: &serde_json::Value| {
            let from: BTreeMap<String, String> = match infra.as_object() {
                Some(map) => {
                    map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
                }
                None => given.cloned().unwrap_or_default(),
            };
            from.into_iter().filter(|(k, _)| !k.starts_with("gateway.networking.k8s.io/")).collect()
        };
        let labels = pick(gateway.metadata.labels.as_ref(), &infrastructure["labels"]);
        let mut annotations: BTreeMap<String, String> =
            pick(gateway.metadata.annotations.as_ref(), &infrastructure["annotations"]);
        annotations.retain(|k, _| !NOT_PASSED_ON.contains(&k.as_str()));
        Ok(Waypoint {
            namespace: gateway.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
            uid: gateway.metadata.uid.clone().unwrap_or_default(),
            class,
            labels,
            annotations,
        })
    }

    /// `NAME.NAMESPACE.svc.cluster.local`, the Service's hostname.
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }

    /// The metadata of every object made for the waypoint: the Gateway's labels, the
    /// Gateway's name and class, the managed-by label, the owner.
    fn metadata(&self, managed: bool) -> ObjectMeta {
        let mut labels = self.labels.clone();
        labels.insert(GATEWAY_NAME_LABEL.into(), self.name.clone());
        labels.insert(GATEWAY_CLASS_LABEL.into(), self.class.name.into());
        if managed {
            labels.insert(MANAGED_LABEL.into(), self.class.managed_label());
        }
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(self.annotations.clone()),
            owner_references: Some(vec![self.owner()]),
            ..Default::default()
        }
    }

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.metadata(true), ..Default::default() }
    }

    pub fn service(&self) -> Service {
        let mut metadata = self.metadata(true);
        metadata
            .annotations
            .get_or_insert_default()
            .insert("networking.istio.io/traffic-distribution".into(), "PreferClose".into());
        let port = |name: &str, port: i32, target: i32, app: &str| ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(IntOrString::Int(target)),
            protocol: Some("TCP".into()),
            app_protocol: Some(app.into()),
            ..Default::default()
        };
        Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                ip_family_policy: Some("PreferDualStack".into()),
                selector: Some(BTreeMap::from([(GATEWAY_NAME_LABEL.into(), self.name.clone())])),
                ports: Some(vec![
                    port("status-port", STATUS_PORT, ADMIN_PORT, "tcp"),
                    port(MESH_LISTENER, HBONE_PORT, HBONE_PORT, "all"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The ConfigMap with the mesh root in the waypoint's namespace (what istiod's
    /// namespace controller keeps in every namespace as `istio-ca-root-cert`). Not owned
    /// by the Gateway: other pods of the namespace may mount it too.
    pub fn root_config_map(&self, name: &str, roots_pem: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("root-cert.pem".into(), roots_pem.into())])),
            ..Default::default()
        }
    }

    pub fn deployment(&self, settings: &WaypointSettings) -> Deployment {
        let mut pod_labels = BTreeMap::from([
            ("sidecar.istio.io/inject".to_owned(), "false".to_owned()),
            ("service.istio.io/canonical-name".into(), self.name.clone()),
            ("service.istio.io/canonical-revision".into(), "latest".into()),
        ]);
        pod_labels.extend(self.labels.clone());
        pod_labels.insert(DATAPLANE_MODE_LABEL.into(), "none".into());
        pod_labels.insert(GATEWAY_NAME_LABEL.into(), self.name.clone());
        pod_labels.insert(GATEWAY_CLASS_LABEL.into(), self.class.name.into());
        pod_labels.insert(MANAGED_LABEL.into(), self.class.managed_label());
        let mut pod_annotations = self.annotations.clone();
        pod_annotations.extend([
            ("prometheus.io/path".to_owned(), "/stats/prometheus".to_owned()),
            ("prometheus.io/port".into(), ADMIN_PORT.to_string()),
            ("prometheus.io/scrape".into(), "true".into()),
        ]);
        let probe = |period, failures, initial| Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(ADMIN_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            initial_delay_seconds: Some(initial),
            success_threshold: Some(1),
            timeout_seconds: Some(1),
            ..Default::default()
        };
        let container = Container {
            name: "weft-waypoint".into(),
            image: Some(settings.image.clone()),
            env: Some(self.environment(settings)),
            ports: Some(vec![container_port("mesh", HBONE_PORT), container_port("metrics", ADMIN_PORT)]),
            startup_probe: Some(probe(1, 30, 1)),
            readiness_probe: Some(probe(15, 4, 0)),
            security_context: Some(SecurityContext {
                privileged: Some(false),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                run_as_user: Some(1337),
                run_as_group: Some(1337),
                capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                ..Default::default()
            }),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "weft-ca-root".into(),
                    mount_path: ROOT_CERT_DIR.into(),
                    ..Default::default()
                },
                VolumeMount { name: "weft-token".into(), mount_path: TOKEN_DIR.into(), ..Default::default() },
            ]),
            ..Default::default()
        };
        let volumes = vec![
            Volume {
                name: "weft-ca-root".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: settings.root_config_map.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "weft-token".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(settings.token_audience.clone()),
                            expiration_seconds: Some(43200),
                            path: "istio-token".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        Deployment {
            metadata: self.metadata(true),
            spec: DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(GATEWAY_NAME_LABEL.into(), self.name.clone())])),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name.clone()),
                        containers: vec![container],
                        volumes: Some(volumes),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// weft-waypoint's flags, as the environment variables each reads.
    fn environment(&self, settings: &WaypointSettings) -> Vec<EnvVar> {
        let value = |name: &str, value: String| EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        };
        let field = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        vec![
            value("WEFT_XDS_ADDRESS", settings.xds_address.clone()),
            value("WEFT_CA_ROOT_CERT", format!("{ROOT_CERT_DIR}/root-cert.pem")),
            value("WEFT_TOKEN_FILE", format!("{TOKEN_DIR}/istio-token")),
            value("WEFT_TRUST_DOMAIN", settings.trust_domain.clone()),
            value("WEFT_HBONE_ADDRESS", format!("0.0.0.0:{HBONE_PORT}")),
            value("WEFT_METRICS_ADDR", format!("0.0.0.0:{ADMIN_PORT}")),
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            field("INSTANCE_IP", "status.podIP"),
            field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ]
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Exactly one listener, HBONE on 15008 (its name is free, as in istiod's check).
fn check_listeners(listeners: &serde_json::Value) -> Result<(), Invalid> {
    let list = listeners.as_array().map(Vec::as_slice).unwrap_or_default();
    let describe = |l: &serde_json::Value| {
        format!(
            "{} on {} ({})",
            l["protocol"].as_str().unwrap_or("no protocol"),
            l["port"],
            l["name"].as_str().unwrap_or("unnamed")
        )
    };
    match list {
        [l] if l["port"].as_i64() == Some(HBONE_PORT.into()) && l["protocol"].as_str() == Some("HBONE") => {
            Ok(())
        }
        [] => Err(Invalid::Listeners { found: "no listeners".into() }),
        _ => Err(Invalid::Listeners { found: list.iter().map(describe).collect::<Vec<_>>().join(", ") }),
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waypoints::classes::CLASSES;
    use serde_json::json;

    fn gateway(listeners: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {
                "name": "waypoint", "namespace": "bookinfo", "uid": "u-1",
                "labels": { "istio.io/waypoint-for": "service", "gateway.networking.k8s.io/x": "dropped" },
                "annotations": { "team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            },
            "spec": { "gatewayClassName": "weft-waypoint", "listeners": listeners },
        }))
        .unwrap()
    }

    fn settings() -> WaypointSettings {
        WaypointSettings {
            image: "weft/weft-waypoint:test".into(),
            xds_address: "https://weftd.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            root_config_map: "weft-ca-root-cert".into(),
            token_audience: "istio-ca".into(),
        }
    }

    fn mesh() -> serde_json::Value {
        json!([{ "name": "mesh", "port": 15008, "protocol": "HBONE" }])
    }

    #[test]
    fn listeners_must_be_one_hbone_on_15008() {
        let class = &CLASSES[0];
        assert!(Waypoint::from_gateway(&gateway(mesh()), class).is_ok());
        let e = Waypoint::from_gateway(
            &gateway(json!([{ "name": "mesh", "port": 1234, "protocol": "HTTP" }])),
            class,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "Expected a single listener on port 15008 with protocol \"HBONE\" (found HTTP on 1234 (mesh))"
            ),
            "{e}"
        );
        let two = json!([{ "name": "mesh", "port": 15008, "protocol": "HBONE" }, { "name": "h", "port": 80, "protocol": "HTTP" }]);
        assert!(Waypoint::from_gateway(&gateway(two), class).is_err());
        assert!(
            Waypoint::from_gateway(&gateway(json!([])), class)
                .unwrap_err()
                .to_string()
                .contains("no listeners")
        );
    }

    #[test]
    fn objects_are_shaped_like_istiods() {
        let wp = Waypoint::from_gateway(&gateway(mesh()), &CLASSES[0]).unwrap();
        let deployment = serde_json::to_value(wp.deployment(&settings())).unwrap();
        assert_eq!(deployment["apiVersion"], "apps/v1");
        assert_eq!(deployment["kind"], "Deployment");
        let meta = &deployment["metadata"];
        assert_eq!(meta["name"], "waypoint");
        assert_eq!(meta["namespace"], "bookinfo");
        assert_eq!(
            meta["ownerReferences"],
            json!([{ "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": "waypoint", "uid": "u-1" }])
        );
        assert_eq!(meta["labels"][GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(meta["labels"][GATEWAY_CLASS_LABEL], "weft-waypoint");
        assert_eq!(meta["labels"][MANAGED_LABEL], "weft.io-mesh-controller");
        assert_eq!(meta["labels"]["istio.io/waypoint-for"], "service");
        assert!(meta["labels"].get("gateway.networking.k8s.io/x").is_none());
        assert_eq!(meta["annotations"], json!({ "team": "a" }));
        let spec = &deployment["spec"];
        assert_eq!(spec["selector"]["matchLabels"], json!({ GATEWAY_NAME_LABEL: "waypoint" }));
        let pod = &spec["template"];
        assert_eq!(pod["metadata"]["labels"][DATAPLANE_MODE_LABEL], "none");
        assert_eq!(pod["metadata"]["labels"]["sidecar.istio.io/inject"], "false");
        assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "15020");
        assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], "weft/weft-waypoint:test");
        let ports: Vec<i64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [15008, 15020]);
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
        let env: BTreeMap<&str, &serde_json::Value> =
            container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
        assert_eq!(env["WEFT_XDS_ADDRESS"]["value"], "https://weftd.istio-system.svc:15012");
        assert_eq!(env["WEFT_TOKEN_FILE"]["value"], "/var/run/secrets/tokens/istio-token");
        assert_eq!(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
        assert_eq!(
            pod["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "istio-ca"
        );

        let service = serde_json::to_value(wp.service()).unwrap();
        assert_eq!(service["kind"], "Service");
        assert_eq!(service["spec"]["selector"], json!({ GATEWAY_NAME_LABEL: "waypoint" }));
        assert_eq!(
            service["spec"]["ports"],
            json!([
                { "name": "status-port", "port": 15021, "targetPort": 15020, "protocol": "TCP", "appProtocol": "tcp" },
                { "name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP", "appProtocol": "all" },
            ])
        );
        assert_eq!(
            service["metadata"]["annotations"]["networking.istio.io/traffic-distribution"],
            "PreferClose"
        );
        let account = serde_json::to_value(wp.service_account()).unwrap();
        assert_eq!(account["kind"], "ServiceAccount");
        assert_eq!(account["metadata"]["ownerReferences"][0]["name"], "waypoint");
        assert_eq!(wp.hostname(), "waypoint.bookinfo.svc.cluster.local");
    }

    #[test]
    fn infrastructure_overrides_the_gateways_own_metadata() {
        let mut gw = gateway(mesh());
        gw.data["spec"]["infrastructure"] = json!({ "labels": { "x": "1" }, "annotations": { "y": "2" } });
        let wp = Waypoint::from_gateway(&gw, &CLASSES[1]).unwrap();
        assert_eq!(wp.labels, BTreeMap::from([("x".into(), "1".into())]));
        assert_eq!(wp.annotations, BTreeMap::from([("y".into(), "2".into())]));
        assert_eq!(wp.class.name, "istio-waypoint");
    }

    #[test]
    fn names_must_be_dns_labels() {
        let mut gw = gateway(mesh());
        gw.metadata.name = Some("Bad_Name".into());
        assert!(matches!(Waypoint::from_gateway(&gw, &CLASSES[0]), Err(Invalid::Name(_))));
    }
}
