//! `weft-cni install` / `weft-cni uninstall`: put the plugin on a node, as istio-cni's
//! installer does (`cni/pkg/install`), run by the agent DaemonSet's init container with the
//! host's CNI directories mounted.
//!
//! Install copies the plugin binary into the host's CNI bin directory and chains the plugin
//! after the cluster's own CNI: it finds the primary network configuration (the first
//! `.conflist` or `.conf` file of the configuration directory by name, which is the one the
//! container runtime uses), appends a `weft-cni` entry to its `plugins` (replacing an older
//! one), and writes the file back. A single-plugin `.conf` becomes a `.conflist` of the same
//! name, as istio-cni does, because only a list can chain. Both writes go to a temporary
//! file renamed into place, so the runtime never reads half a file or half a binary.
//! Running it again changes nothing that is already right.
//!
//! Uninstall removes the `weft-cni` entry (the binary stays: a pod sandbox being torn down
//! may still run it for DEL).

use serde_json::{Map, Value, json};
use std::{
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The plugin's `type`, which is also its binary's name in the CNI bin directory.
pub const PLUGIN_TYPE: &str = "weft-cni";

/// What `weft-cni install` does; the flags are parsed in `main.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The plugin binary to copy (default: this executable).
    pub binary: PathBuf,
    /// The host's CNI bin directory, as mounted (e.g. /host/opt/cni/bin).
    pub bin_dir: PathBuf,
    /// The host's CNI configuration directory, as mounted (e.g. /host/etc/cni/net.d).
    pub conf_dir: PathBuf,
    /// The configuration file to chain into; default: the primary one (first by name).
    pub conf_file: Option<String>,
    /// The agent's CNI socket as the host sees it (the plugin runs on the host).
    pub agent_socket: PathBuf,
    /// Namespaces whose pods are never handed over.
    pub exclude_namespaces: Vec<String>,
}

/// Why the plugin could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The configuration directory holds no network configuration yet.
    #[error(
        "no CNI network configuration (*.conflist, *.conf) in {0}: weft-cni chains after the cluster's CNI; \
         is it installed and has it written its configuration?"
    )]
    NoPrimaryConfig(PathBuf),
    /// A file could not be read, written or renamed.
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    /// The primary configuration is not the JSON the CNI specification describes.
    #[error("{}: not a CNI network configuration: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { what, path, source }
}

/// Installs the binary and chains the plugin; returns the configuration file written.
pub fn install(options: &InstallOptions) -> Result<PathBuf, InstallError> {
    copy_binary(&options.binary, &options.bin_dir.join(PLUGIN_TYPE))?;
    let primary = primary_config(&options.conf_dir, options.conf_file.as_deref())?;
    let mut list = read_as_list(&primary)?;
    let plugins = plugins_of(&mut list, &primary)?;
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    plugins.push(json!({
        "type": PLUGIN_TYPE,
        "agent_socket": options.agent_socket,
        "exclude_namespaces": options.exclude_namespaces,
    }));
    // A `.conf` becomes a `.conflist` of the same name: only a list chains.
    let target = primary.with_extension("conflist");
    write_atomically(&target, &pretty(&list), 0o644)?;
    if target != primary {
        fs::remove_file(&primary).map_err(io_error("removing the replaced", &primary))?;
    }
    Ok(target)
}

/// Removes the `weft-cni` entry from the primary configuration; returns the file changed,
/// or `None` when there was nothing to remove.
pub fn uninstall(conf_dir: &Path, conf_file: Option<&str>) -> Result<Option<PathBuf>, InstallError> {
    let primary = match primary_config(conf_dir, conf_file) {
        Ok(path) => path,
        Err(InstallError::NoPrimaryConfig(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut list = read_as_list(&primary)?;
    let plugins = plugins_of(&mut list, &primary)?;
    let before = plugins.len();
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    if plugins.len() == before {
        return Ok(None);
    }
    write_atomically(&primary, &pretty(&list), 0o644)?;
    Ok(Some(primary))
}

/// The configuration the runtime uses: `conf_file` if given, else the first `.conflist`
/// or `.conf` file by name (libcni's order).
fn primary_config(conf_dir: &Path, conf_file: Option<&str>) -> Result<PathBuf, InstallError> {
    if let Some(name) = conf_file {
        let path = conf_dir.join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(InstallError::NoPrimaryConfig(conf_dir.to_owned()))
        };
    }
    let entries =
        fs::read_dir(conf_dir).map_err(io_error("reading the CNI configuration directory", conf_dir))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf"))
        })
        .collect();
    names.sort();
    names.into_iter().next().ok_or_else(|| InstallError::NoPrimaryConfig(conf_dir.to_owned()))
}

/// Reads a `.conflist`, or a single-plugin `.conf` turned into a list of one.
fn read_as_list(path: &Path) -> Result<Value, InstallError> {
    let text = fs::read_to_string(path).map_err(io_error("reading", path))?;
    let bad = |reason: String| InstallError::BadConfig { path: path.to_owned(), reason };
    let config: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut fields) = config else { return Err(bad("not a JSON object".into())) };
    if fields.contains_key("plugins") {
        return Ok(Value::Object(fields));
    }
    if !fields.contains_key("type") {
        return Err(bad("neither `plugins` (a list) nor `type` (a single plugin)".into()));
    }
    let mut list = Map::new();
    for key in ["cniVersion", "name"] {
        if let Some(value) = fields.remove(key) {
            list.insert(key.into(), value);
        }
    }
    list.insert("plugins".into(), json!([fields]));
    Ok(Value::Object(list))
}

fn plugins_of<'a>(list: &'a mut Value, path: &Path) -> Result<&'a mut Vec<Value>, InstallError> {
    list["plugins"].as_array_mut().ok_or_else(|| InstallError::BadConfig {
        path: path.to_owned(),
        reason: "`plugins` is not a list".into(),
    })
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).expect("JSON serialises");
    text.push(b'\n');
    text
}

/// Copies the binary unless an identical one is there already.
fn copy_binary(source: &Path, target: &Path) -> Result<(), InstallError> {
    let bytes = fs::read(source).map_err(io_error("reading the plugin binary", source))?;
    if fs::read(target).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    write_atomically(target, &bytes, 0o755)
}

/// Writes `bytes` to a temporary file beside `target` and renames it over `target`.
fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or(PLUGIN_TYPE);
    let temporary = target.with_file_name(format!(".{name}.weft-tmp"));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()
    };
    write().map_err(io_error("writing", &temporary))?;
    fs::rename(&temporary, target).map_err(io_error("renaming into place", target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "calico", "ipam": { "type": "calico-ipam" } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["bin", "net.d"] {
                fs::create_dir(dir.path().join(sub)).unwrap();
            }
            fs::write(dir.path().join("weft-cni-build"), b"\x7fELF plugin v1").unwrap();
            Node { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn options(&self) -> InstallOptions {
            InstallOptions {
                binary: self.path("weft-cni-build"),
                bin_dir: self.path("bin"),
                conf_dir: self.path("net.d"),
                conf_file: None,
                agent_socket: "/var/run/weft/cni.sock".into(),
                exclude_namespaces: vec!["kube-system".into(), "istio-system".into()],
            }
        }

        fn json(&self, rel: &str) -> Value {
            serde_json::from_str(&fs::read_to_string(self.path(rel)).unwrap()).unwrap()
        }
    }

    #[test]
    fn chains_after_the_primary_conflist_and_copies_the_binary() {
        let node = Node::new();
        fs::write(node.path("net.d/10-calico.conflist"), CALICO).unwrap();
        fs::write(node.path("net.d/99-other.conflist"), CALICO).unwrap();
        fs::write(node.path("net.d/calico-kubeconfig"), "not a config").unwrap();
        let written = install(&node.options()).unwrap();
        assert_eq!(written, node.path("net.d/10-calico.conflist"));
        let list = node.json("net.d/10-calico.conflist");
        let types: Vec<&str> =
            list["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["calico", "portmap", "weft-cni"]);
        assert_eq!(list["plugins"][2]["agent_socket"], "/var/run/weft/cni.sock");
        assert_eq!(list["plugins"][2]["exclude_namespaces"], json!(["kube-system", "istio-system"]));
        assert_eq!(list["name"], "k8s-pod-network", "the rest is kept");
        assert_eq!(node.json("net.d/99-other.conflist"), serde_json::from_str::<Value>(CALICO).unwrap());
        let binary = node.path("bin/weft-cni");
        assert_eq!(fs::read(&binary).unwrap(), b"\x7fELF plugin v1");
        assert_eq!(fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755);
        let leftovers: Vec<_> = fs::read_dir(node.path("net.d"))
            .unwrap()
            .chain(fs::read_dir(node.path("bin")).unwrap())
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".weft-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn installing_again_keeps_one_entry_and_takes_new_settings() {
        let node = Node::new();
        fs::write(node.path("net.d/10-calico.conflist"), CALICO).unwrap();
        install(&node.options()).unwrap();
        let first = fs::read(node.path("net.d/10-calico.conflist")).unwrap();
        install(&node.options()).unwrap();
        assert_eq!(fs::read(node.path("net.d/10-calico.conflist")).unwrap(), first, "idempotent");
        let mut options = node.options();
        options.agent_socket = "/run/weft/other.sock".into();
        fs::write(node.path("weft-cni-build"), b"\x7fELF plugin v2").unwrap();
        install(&options).unwrap();
        let list = node.json("net.d/10-calico.conflist");
        let ours: Vec<&Value> =
            list["plugins"].as_array().unwrap().iter().filter(|p| p["type"] == PLUGIN_TYPE).collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0]["agent_socket"], "/run/weft/other.sock");
        assert_eq!(
            fs::read(node.path("bin/weft-cni")).unwrap(),
            b"\x7fELF plugin v2",
            "an upgrade replaces it"
        );
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_conflist() {
        let node = Node::new();
        let conf = r#"{ "cniVersion": "1.0.0", "name": "flannel", "type": "flannel", "delegate": { "isDefaultGateway": true } }"#;
        fs::write(node.path("net.d/10-flannel.conf"), conf).unwrap();
        let written = install(&node.options()).unwrap();
        assert_eq!(written, node.path("net.d/10-flannel.conflist"));
        assert!(!node.path("net.d/10-flannel.conf").exists(), "the .conf would still come first for libcni");
        let list = node.json("net.d/10-flannel.conflist");
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["name"], "flannel");
        assert_eq!(
            list["plugins"][0],
            json!({ "type": "flannel", "delegate": { "isDefaultGateway": true } })
        );
        assert_eq!(list["plugins"][1]["type"], PLUGIN_TYPE);
    }

    #[test]
    fn uninstall_removes_only_our_entry() {
        let node = Node::new();
        fs::write(node.path("net.d/10-calico.conflist"), CALICO).unwrap();
        install(&node.options()).unwrap();
        let changed = uninstall(&node.path("net.d"), None).unwrap();
        assert_eq!(changed, Some(node.path("net.d/10-calico.conflist")));
        assert_eq!(node.json("net.d/10-calico.conflist"), serde_json::from_str::<Value>(CALICO).unwrap());
        assert_eq!(uninstall(&node.path("net.d"), None).unwrap(), None, "nothing left to remove");
    }

    #[test]
    fn refusals_name_the_directory_or_file() {
        let node = Node::new();
        let e = install(&node.options()).unwrap_err().to_string();
        assert!(e.contains("no CNI network configuration") && e.contains("net.d"), "{e}");
        fs::write(node.path("net.d/10-broken.conflist"), "{ not json").unwrap();
        let e = install(&node.options()).unwrap_err().to_string();
        assert!(e.contains("10-broken.conflist: not a CNI network configuration"), "{e}");
        fs::write(node.path("net.d/05-odd.conf"), r#"{ "name": "x" }"#).unwrap();
        let e = install(&node.options()).unwrap_err().to_string();
        assert!(e.contains("05-odd.conf") && e.contains("neither `plugins`"), "{e}");
        let mut options = node.options();
        options.conf_file = Some("missing.conflist".into());
        assert!(matches!(install(&options), Err(InstallError::NoPrimaryConfig(_))));
    }
}
