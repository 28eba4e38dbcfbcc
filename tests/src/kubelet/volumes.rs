//! A pod's volumes as files in the pod's directory, which the container's root filesystem
//! then mounts at each mountPath (`rootfs.rs`).

use super::{env::data_of, rootfs};
use crate::kubeapi::{API_SERVER_AUDIENCE, FakeApiServer, TokenUser};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, ServiceAccountTokenProjection};
use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Volume name → where its files are.
pub struct Volumes(BTreeMap<String, PathBuf>);

/// The mode the kubelet gives a volume's files when the manifest names none (`defaultMode`).
const DEFAULT_MODE: u32 = 0o644;
/// A projected token's mode: readable by its owner only.
const TOKEN_MODE: u32 = 0o600;

/// Writes every volume of `pod` under `dir`.
pub fn materialize(
    api: &FakeApiServer,
    pod: &Pod,
    dir: &Path,
    host_paths: &BTreeMap<String, PathBuf>,
) -> Result<Volumes> {
    let spec = pod.spec.as_ref().context("the Pod has no spec")?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    // The kubelet gives the token to the pod's user when its containers share one.
    let owner = spec.containers.first().map(|c| rootfs::User::of(pod, c));
    let mut volumes = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let path = dir.join(&volume.name);
        let what = || format!("volume {}", volume.name);
        if let Some(host) = &volume.host_path {
            let on_node = host_paths.get(&host.path).with_context(|| {
                format!(
                    "{}: hostPath {} has no place on the bed node; map it with Kubelet::with_host_path",
                    what(),
                    host.path
                )
            })?;
            volumes.insert(volume.name.clone(), on_node.clone());
            continue;
        }
        make_dir(&path)?;
        if let Some(config_map) = &volume.config_map {
            let keys = Keys {
                items: config_map.items.as_deref(),
                mode: config_map.default_mode,
                optional: config_map.optional,
            };
            write_keys(api, &path, ("ConfigMap", namespace, &config_map.name), keys).with_context(what)?;
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().context("a secret volume without secretName")?;
            let keys =
                Keys { items: secret.items.as_deref(), mode: secret.default_mode, optional: secret.optional };
            write_keys(api, &path, ("Secret", namespace, name), keys).with_context(what)?;
        } else if volume.empty_dir.is_some() {
            // Writable by the container's user, as the kubelet makes it (0777).
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        } else if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    write_token(api, pod, &path, token, owner).with_context(what)?;
                } else if let Some(config_map) = &source.config_map {
                    let keys = Keys {
                        items: config_map.items.as_deref(),
                        mode: projected.default_mode,
                        optional: config_map.optional,
                    };
                    write_keys(api, &path, ("ConfigMap", namespace, &config_map.name), keys)
                        .with_context(what)?;
                } else {
                    bail!(
                        "{}: the bed's kubelet projects serviceAccountToken and configMap sources only",
                        what()
                    );
                }
            }
        } else {
            bail!(
                "{}: the bed's kubelet makes configMap, secret, emptyDir, projected and hostPath volumes only",
                what()
            );
        }
        volumes.insert(volume.name.clone(), path);
    }
    Ok(Volumes(volumes))
}

/// The container's volumeMounts against the volumes made.
pub fn mounts_of(container: &Container, volumes: &Volumes) -> Result<Vec<rootfs::Mount>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let mut source = volumes
                .0
                .get(&m.name)
                .with_context(|| format!("volumeMount {}: the pod has no such volume", m.name))?
                .clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if sub.split('/').any(|part| part == "..") || sub.starts_with('/') {
                    bail!(
                        "volumeMount {}: subPath {sub:?} must be a relative path within the volume",
                        m.name
                    );
                }
                source = source.join(sub);
            }
            Ok(rootfs::Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect()
}

/// Which keys of a ConfigMap or Secret a volume holds, and how.
struct Keys<'a> {
    /// All of them when `None`.
    items: Option<&'a [KeyToPath]>,
    /// `defaultMode`.
    mode: Option<i32>,
    optional: Option<bool>,
}

/// A ConfigMap's or Secret's keys as files (`object`: kind, namespace, name).
fn write_keys(api: &FakeApiServer, dir: &Path, object: (&str, &str, &str), keys: Keys<'_>) -> Result<()> {
    let (kind, namespace, name) = object;
    let Some(data) = data_of(api, kind, namespace, name)? else {
        if keys.optional.unwrap_or(false) {
            return Ok(());
        }
        bail!("{kind} {namespace}/{name} does not exist (the kubelet would keep the pod waiting for it)");
    };
    let mode = keys.mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
    match keys.items {
        None => {
            for (key, value) in &data {
                write_file(&dir.join(key), value, mode, None)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .iter()
                    .find(|(k, _)| *k == item.key)
                    .map(|(_, v)| v)
                    .with_context(|| format!("{kind} {namespace}/{name} has no key {:?}", item.key))?;
                let mode = item.mode.map(|m| m as u32).unwrap_or(mode);
                write_file(&dir.join(&item.path), value, mode, None)?;
            }
        }
    }
    Ok(())
}

/// A projected service-account token: what the kubelet's TokenRequest would get, a token
/// of the pod's service account bound to the pod, for the projection's audience (the API
/// server's own when none is named), which the fake API server's TokenReview now accepts.
fn write_token(
    api: &FakeApiServer,
    pod: &Pod,
    dir: &Path,
    projection: &ServiceAccountTokenProjection,
    owner: Option<rootfs::User>,
) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().context("the Pod has no uid: create it on the API server first")?;
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    let audience = projection.audience.as_deref().unwrap_or(API_SERVER_AUDIENCE);
    let token = format!("kubelet-{namespace}-{name}-{}", crate::weftd::random_token());
    api.add_token(
        &token,
        TokenUser::service_account(namespace, account).bound_to_pod(name, uid).for_audiences(&[audience]),
    );
    write_file(&dir.join(&projection.path), &token, TOKEN_MODE, owner)
}

fn make_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

fn write_file(path: &Path, text: &str, mode: u32, owner: Option<rootfs::User>) -> Result<()> {
    if let Some(parent) = path.parent() {
        make_dir(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some(user) = owner {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}
