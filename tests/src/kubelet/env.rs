//! A container's environment as the kubelet builds it: `envFrom` first, then `env` in
//! order (later names win), each value `$(VAR)`-expanded against the ones before it.

use super::image::expand;
use crate::kubeapi::FakeApiServer;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, EnvVarSource, Pod};
use serde_json::Value;
use std::net::IpAddr;

/// What the downward API reads besides the Pod object: what the sandbox got.
pub struct PodContext<'a> {
    pub object: &'a Pod,
    pub pod_ip: IpAddr,
    pub host_ip: IpAddr,
}

pub fn resolve(
    api: &FakeApiServer,
    pod: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>> {
    let namespace = pod.object.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(c), _) => ("ConfigMap", c.name.as_str(), c.optional.unwrap_or(false)),
            (None, Some(s)) => ("Secret", s.name.as_str(), s.optional.unwrap_or(false)),
            (None, None) => bail!("envFrom without configMapRef or secretRef"),
        };
        match data_of(api, kind, namespace, name)? {
            Some(data) => env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
            None if optional => {}
            None => bail!("envFrom: {kind} {namespace}/{name} does not exist"),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(expand(v, &env)),
            (None, Some(source)) => from_source(api, pod, container, namespace, source)
                .with_context(|| format!("env {}", var.name))?,
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.retain(|(k, _)| *k != var.name);
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

/// A `valueFrom`; `None` for an optional key that is missing (the variable is left out).
fn from_source(
    api: &FakeApiServer,
    pod: &PodContext<'_>,
    container: &Container,
    namespace: &str,
    source: &EnvVarSource,
) -> Result<Option<String>> {
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path).map(Some);
    }
    if let Some(resource) = &source.resource_field_ref {
        let of = match &resource.container_name {
            Some(name) if *name != container.name => {
                pod.object.spec.iter().flat_map(|s| &s.containers).find(|c| c.name == *name).with_context(
                    || format!("resourceFieldRef names container {name}, which the pod lacks"),
                )?
            }
            _ => container,
        };
        let divisor = resource.divisor.as_ref().map(|q| q.0.as_str());
        return resource_value(of, &resource.resource, divisor).map(Some);
    }
    let (kind, name, key, optional) = match (&source.config_map_key_ref, &source.secret_key_ref) {
        (Some(c), _) => ("ConfigMap", c.name.as_str(), c.key.as_str(), c.optional.unwrap_or(false)),
        (None, Some(s)) => ("Secret", s.name.as_str(), s.key.as_str(), s.optional.unwrap_or(false)),
        (None, None) => bail!("valueFrom names no source the bed's kubelet knows"),
    };
    let value = data_of(api, kind, namespace, name)?
        .and_then(|data| data.into_iter().find(|(k, _)| k == key).map(|(_, v)| v));
    match value {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => bail!("{kind} {namespace}/{name} has no key {key:?}"),
    }
}

/// The downward API's `fieldRef` paths.
fn field_value(pod: &PodContext<'_>, path: &str) -> Result<String> {
    let meta = &pod.object.metadata;
    let spec = pod.object.spec.as_ref();
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => {
            Some(spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into()))
        }
        "status.podIP" | "status.podIPs" => Some(pod.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(pod.host_ip.to_string()),
        _ => {
            if let Some(key) = keyed("metadata.labels") {
                Some(meta.labels.as_ref().and_then(|l| l.get(key).cloned()).unwrap_or_default())
            } else if let Some(key) = keyed("metadata.annotations") {
                Some(meta.annotations.as_ref().and_then(|a| a.get(key).cloned()).unwrap_or_default())
            } else {
                bail!("fieldRef {path}: not a field the downward API offers")
            }
        }
    };
    value.with_context(|| format!("fieldRef {path}: the Pod has no such value"))
}

/// `resourceFieldRef`: the container's limit (or request), else what the node offers
/// (the kubelet's answer for a limit that is not set: the node's allocatable), divided by
/// `divisor` and rounded up, as the kubelet does.
fn resource_value(container: &Container, resource: &str, divisor: Option<&str>) -> Result<String> {
    let resources = container.resources.as_ref();
    let (field, name) = resource.split_once('.').with_context(|| format!("resource {resource:?}"))?;
    let set = match field {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => bail!("resourceFieldRef {resource}: limits.* or requests.* only"),
    }
    .and_then(|m| m.get(name))
    .map(|q| q.0.clone());
    let amount = match set {
        Some(q) => quantity(&q)?,
        None => match name {
            "cpu" => std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
            "memory" => node_memory()?,
            "ephemeral-storage" => 0.0,
            _ => bail!("resourceFieldRef {resource}: no such resource"),
        },
    };
    let divisor = match divisor {
        Some(d) => quantity(d)?,
        None => 1.0,
    };
    Ok(((amount / divisor).ceil() as u64).to_string())
}

fn node_memory() -> Result<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemTotal in /proc/meminfo")?;
    Ok(kib * 1024.0)
}

/// A Kubernetes quantity (`500m`, `2`, `128Mi`, `1G`, `1e3`) as a number.
fn quantity(text: &str) -> Result<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(s, scale)| text.strip_suffix(s).map(|n| (n, *scale)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().with_context(|| format!("{text:?} is not a quantity"))?;
    Ok(value * scale)
}

/// A ConfigMap's `data` (and `binaryData` is not text: left out) or a Secret's decoded
/// `data` and `stringData`; `None` when there is no such object.
pub fn data_of(
    api: &FakeApiServer,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<(String, String)>>> {
    let Some(object) = api.object(kind, Some(namespace), name) else { return Ok(None) };
    let mut out = Vec::new();
    let strings = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default()
    };
    if kind == "Secret" {
        use base64::Engine;
        for (k, v) in strings(&object["data"]) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .with_context(|| format!("Secret {namespace}/{name} key {k} is not base64"))?;
            let text = String::from_utf8(bytes).with_context(|| format!("Secret key {k} is not text"))?;
            out.push((k, text));
        }
        out.extend(strings(&object["stringData"]));
    } else {
        out.extend(strings(&object["data"]));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::quantity;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m").unwrap(), 0.5);
        assert_eq!(quantity("2").unwrap(), 2.0);
        assert_eq!(quantity("128Mi").unwrap(), 134_217_728.0);
        assert_eq!(quantity("1G").unwrap(), 1e9);
        assert!(quantity("lots").is_err());
    }
}
