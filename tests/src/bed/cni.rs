//! Running `weft-cni` as a container runtime does: `CNI_*` in the environment, the network
//! configuration on stdin with the previous plugin's result holding the pod's address.
//!
//! The bed plays the cluster's own CNI plugin itself (it wires each pod's veth and address),
//! then runs `weft-cni` chained after it, pointed at the node's agent socket, whether or not
//! an agent runs there yet. Tests also call [`invoke`] directly, to hand over what a
//! runtime would not (a wrong UID, a namespace without the pod's address).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::bins;

/// The `cniVersion` the bed speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// One invocation of the plugin.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    /// `ADD`, `DEL`, `CHECK` or `VERSION`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`: the sandbox.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID` in `CNI_ARGS`.
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// The address the previous plugin gave the pod (a /32), and its gateway.
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The agent's socket (`agent_socket` in the configuration).
    pub agent_socket: &'a Path,
}

/// What the plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The result the plugin was given, which ADD must print back unchanged.
    pub prev_result: String,
}

impl CniOutcome {
    /// The CNI error code, when the plugin failed with a well-formed error.
    pub fn error_code(&self) -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(&self.stdout).ok()?["code"].as_u64()
    }
}

/// The previous plugin's result for a pod wired as the bed wires it.
pub fn prev_result(netns: &Path, ip: Ipv4Addr, gateway: Ipv4Addr) -> String {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [{ "name": "eth0", "sandbox": netns }],
        "ips": [{ "address": format!("{ip}/32"), "gateway": gateway.to_string(), "interface": 0 }],
        "routes": [{ "dst": "0.0.0.0/0", "gw": gateway.to_string() }],
        "dns": {}
    })
    .to_string()
}

/// Runs `weft-cni` once.
pub fn invoke(call: &CniCall<'_>) -> Result<CniOutcome> {
    let plugin = bins::path("weft-cni");
    let prev = prev_result(call.netns, call.ip, call.gateway);
    let config = serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": "weft-testbed",
        "type": "weft-cni",
        "agent_socket": call.agent_socket,
        "prevResult": serde_json::from_str::<serde_json::Value>(&prev)?,
    })
    .to_string();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        call.namespace, call.name, call.container_id, call.uid
    );
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", plugin.display()))?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(config.as_bytes())
        .context("writing the CNI config")?;
    let out = child.wait_with_output().context("waiting for weft-cni")?;
    // The previous result is re-serialised above; what the plugin must print is that text.
    let prev_result = serde_json::from_str::<serde_json::Value>(&config)?["prevResult"].to_string();
    Ok(CniOutcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        prev_result,
    })
}

/// A pod UID as Kubernetes makes them: a random (version 4) UUID.
pub fn new_pod_uid() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// Where the agent of node `node` listens for the plugin, in the bed's directory `bed_dir`
/// (one per bed, removed with it).
pub fn agent_socket(bed_dir: &Path, node: &str) -> PathBuf {
    bed_dir.join(node).join("cni.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uids_look_like_kubernetes_ones() {
        let a = new_pod_uid().unwrap();
        let b = new_pod_uid().unwrap();
        assert_ne!(a, b);
        assert!(weft_model::is_pod_uid(&a), "{a}");
        assert_eq!(&a[14..15], "4", "version 4");
    }

    #[test]
    fn the_previous_result_carries_the_pod_address() {
        let text = prev_result(
            Path::new("/var/run/netns/wb1p1"),
            Ipv4Addr::new(198, 18, 1, 2),
            Ipv4Addr::new(198, 18, 1, 1),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ips"][0]["address"], "198.18.1.2/32");
        assert_eq!(v["interfaces"][0]["sandbox"], "/var/run/netns/wb1p1");
    }
}
