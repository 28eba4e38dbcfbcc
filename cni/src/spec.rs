//! The CNI contract as a container runtime speaks it to a chained plugin: the `CNI_*`
//! environment, Kubernetes' `CNI_ARGS`, the network configuration on stdin (with the
//! previous plugin's result), and the error format.
//!
//! Versions: the plugin accepts configurations of CNI 0.3.0, 0.3.1, 0.4.0 and 1.0.0. It
//! never builds a result of its own: it prints the previous result back unchanged, so the
//! only difference between the result formats that matters here is in reading the pod's
//! addresses (0.3.x/0.4.0 tag each IP with `"version": "4"|"6"`, 1.0.0 does not).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::{fmt, net::IpAddr, path::PathBuf};

/// The configuration versions this plugin accepts, oldest first (VERSION prints them).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The version this plugin implements, used when it has to answer before it knows which
/// version the runtime speaks.
pub const IMPLEMENTED_VERSION: &str = "1.0.0";

/// Namespaces whose pods are never handed to the agent when the configuration does not
/// list its own: the cluster's system pods must start even while the agent is down.
pub const DEFAULT_EXCLUDED_NAMESPACES: &[&str] = &["kube-system"];

/// Error codes the CNI specification reserves (1–99), and this plugin's own (100+).
pub mod code {
    /// The configuration's `cniVersion` is not one the plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A required `CNI_*` variable is missing or malformed.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// Reading or writing failed (stdin, stdout).
    pub const IO: u32 = 5;
    /// stdin is not the JSON the specification describes.
    pub const DECODE: u32 = 6;
    /// The configuration is well-formed JSON but unusable (e.g. no `agent_socket`).
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition: the runtime should retry the operation later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The node agent answered and refused the pod.
    pub const AGENT_REFUSED: u32 = 100;
}

/// An error in the CNI format: printed on stdout as JSON, with a non-zero exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl fmt::Display) -> CniError {
        self.details = details.to_string();
        self
    }

    /// The JSON object the specification prescribes, tagged with `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn parse(value: &str) -> Result<Command, CniError> {
        match value {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            other => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND={other:?} is not ADD, DEL, CHECK or VERSION"),
            )),
        }
    }
}

/// The `CNI_*` variables of one invocation. Which are required depends on the command;
/// [`Env::require`] says so with the variable's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    /// Reads the variables through `var` (the process environment in the binary, a map in
    /// tests). Empty values count as absent, as runtimes send `CNI_NETNS=` on some DELs.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "CNI_COMMAND is not set"))?;
        Ok(Env {
            command: Command::parse(&command)?,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
        })
    }

    /// The value of a variable the command cannot do without.
    pub fn require<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, format!("{name} is not set")))
    }
}

/// What a Kubernetes runtime (containerd, CRI-O) puts in `CNI_ARGS` about the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub infra_container_id: Option<String>,
}

impl K8sArgs {
    /// Parses `K=V;K=V…`. Keys other than `K8S_POD_*` (`IgnoreUnknown`, a runtime's own)
    /// are skipped; a pair without `=` is an error, as in the reference implementation.
    pub fn parse(args: &str) -> Result<K8sArgs, CniError> {
        let mut out = K8sArgs::default();
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_ARGS: {pair:?} is not KEY=VALUE"))
            })?;
            let slot = match key {
                "K8S_POD_NAMESPACE" => &mut out.namespace,
                "K8S_POD_NAME" => &mut out.name,
                "K8S_POD_UID" => &mut out.uid,
                "K8S_POD_INFRA_CONTAINER_ID" => &mut out.infra_container_id,
                _ => continue,
            };
            *slot = Some(value.to_owned()).filter(|v| !v.is_empty());
        }
        Ok(out)
    }
}

/// The network configuration on stdin. Fields of the runtime's or other plugins'
/// (`runtimeConfig`, `capabilities`, …) are ignored.
#[derive(Debug, Deserialize)]
pub struct NetConf<'a> {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub plugin_type: Option<String>,
    /// The node agent's handover socket (`weft-agent --cni-socket`).
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// Pods of these namespaces are never handed over, and never held back.
    #[serde(default = "default_excluded")]
    pub exclude_namespaces: Vec<String>,
    /// The previous plugin's result, kept as the exact bytes it arrived as.
    #[serde(default, rename = "prevResult", borrow)]
    pub prev_result: Option<&'a RawValue>,
}

fn default_excluded() -> Vec<String> {
    DEFAULT_EXCLUDED_NAMESPACES.iter().map(|s| (*s).to_owned()).collect()
}

impl<'a> NetConf<'a> {
    /// Parses stdin and checks the version.
    pub fn parse(stdin: &'a [u8]) -> Result<NetConf<'a>, CniError> {
        let conf: NetConf<'a> = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode the network configuration on stdin").with_details(e)
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported; this plugin speaks {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    /// Whether CHECK exists in this configuration's version (it came with 0.4.0).
    pub fn has_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }

    /// The pod's addresses in the previous result (`ips[].address`, CIDR notation), in
    /// the order given. Both the 0.3.x/0.4.0 form (with a `version` tag) and 1.0.0's.
    pub fn prev_result_ips(&self) -> Result<Vec<IpAddr>, CniError> {
        #[derive(Deserialize)]
        struct Result {
            #[serde(default)]
            ips: Vec<IpConfig>,
        }
        #[derive(Deserialize)]
        struct IpConfig {
            address: String,
        }
        let Some(raw) = self.prev_result else { return Ok(Vec::new()) };
        let result: Result = serde_json::from_str(raw.get())
            .map_err(|e| CniError::new(code::DECODE, "cannot decode prevResult").with_details(e))?;
        result.ips.iter().map(|ip| parse_cidr_address(&ip.address)).collect()
    }

    /// What ADD prints: the previous result exactly as received, or an empty result of
    /// this configuration's version when the plugin is (wrongly) first in the chain.
    pub fn result_text(&self) -> String {
        match self.prev_result {
            Some(raw) => raw.get().to_owned(),
            None => serde_json::json!({ "cniVersion": self.cni_version }).to_string(),
        }
    }
}

/// The address of `10.1.2.3/24` (the prefix is checked, then dropped: the agent wants the
/// pod's own address, not its subnet).
fn parse_cidr_address(cidr: &str) -> Result<IpAddr, CniError> {
    let bad =
        || CniError::new(code::DECODE, format!("prevResult: {cidr:?} is not an address in CIDR notation"));
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(ip)
}

/// VERSION's answer.
pub fn version_text() -> String {
    serde_json::json!({ "cniVersion": IMPLEMENTED_VERSION, "supportedVersions": SUPPORTED_VERSIONS })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const PREV_1_0: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"10.1.2.5/24","gateway":"10.1.2.1","interface":0},{"address":"fd00::5/64","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
    const PREV_0_4: &str = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","address":"10.1.2.5/32","interface":0}]}"#;

    fn conf(version: &str, prev: Option<&str>) -> String {
        let prev = prev.map(|p| format!(r#","prevResult":{p}"#)).unwrap_or_default();
        format!(
            r#"{{"cniVersion":"{version}","name":"k8s-pod-network","type":"weft-cni","agent_socket":"/run/weft/cni.sock"{prev}}}"#
        )
    }

    #[test]
    fn reads_ips_from_1_0_and_0_4_results() {
        let text = conf("1.0.0", Some(PREV_1_0));
        let c = NetConf::parse(text.as_bytes()).unwrap();
        assert_eq!(
            c.prev_result_ips().unwrap(),
            ["10.1.2.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
        );
        assert_eq!(c.agent_socket.as_deref(), Some(std::path::Path::new("/run/weft/cni.sock")));
        assert_eq!(c.exclude_namespaces, ["kube-system"], "default exclusions");
        assert!(c.has_check());

        let text = conf("0.4.0", Some(PREV_0_4));
        let c = NetConf::parse(text.as_bytes()).unwrap();
        assert_eq!(c.prev_result_ips().unwrap(), ["10.1.2.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn the_previous_result_is_printed_byte_for_byte() {
        // Unusual spacing and key order must survive: the next plugin reads exactly this.
        let prev =
            r#"{ "ips": [ {"address":"10.1.2.5/24"} ],  "cniVersion" : "1.0.0", "x-vendor": {"b":1,"a":2} }"#;
        let text = conf("1.0.0", Some(prev));
        assert_eq!(NetConf::parse(text.as_bytes()).unwrap().result_text(), prev);
        let text = conf("0.4.0", None);
        assert_eq!(NetConf::parse(text.as_bytes()).unwrap().result_text(), r#"{"cniVersion":"0.4.0"}"#);
    }

    #[test]
    fn versions_and_bad_input_get_the_specified_codes() {
        let err = NetConf::parse(conf("1.1.0", None).as_bytes()).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert!(err.msg.contains("1.1.0") && err.msg.contains("0.4.0"), "{err}");
        assert!(!NetConf::parse(conf("0.3.1", None).as_bytes()).unwrap().has_check());
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE);
        assert_eq!(
            NetConf::parse(br#"{"name":"x"}"#).unwrap_err().code,
            code::DECODE,
            "cniVersion is required"
        );

        let text = conf("1.0.0", Some(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.5"}]}"#));
        let err = NetConf::parse(text.as_bytes()).unwrap().prev_result_ips().unwrap_err();
        assert_eq!(err.code, code::DECODE);
        assert!(err.msg.contains("10.1.2.5"), "{err}");
        let text = conf("1.0.0", Some(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.5/33"}]}"#));
        assert!(NetConf::parse(text.as_bytes()).unwrap().prev_result_ips().is_err());
    }

    #[test]
    fn error_json_has_the_specified_fields() {
        let err = CniError::new(code::TRY_AGAIN_LATER, "agent down").with_details("socket refused");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"0.4.0","code":11,"msg":"agent down","details":"socket refused"})
        );
        let v: serde_json::Value = serde_json::from_str(&version_text()).unwrap();
        assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]));
    }

    #[test]
    fn environment_and_kubernetes_args() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10",
            ),
        ]);
        let env = Env::from_vars(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(Env::require(&env.netns, "CNI_NETNS").unwrap(), "/var/run/netns/cni-1");
        let args = K8sArgs::parse(env.args.as_deref().unwrap()).unwrap();
        assert_eq!(
            args,
            K8sArgs {
                namespace: Some("shop".into()),
                name: Some("cart-0".into()),
                uid: Some("3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10".into()),
                infra_container_id: Some("abc123".into()),
            }
        );

        let err = Env::from_vars(|k| (k == "CNI_COMMAND").then(|| "GC".to_owned())).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENVIRONMENT);
        assert_eq!(Env::from_vars(|_| None).unwrap_err().code, code::INVALID_ENVIRONMENT);
        let env = Env::from_vars(|k| match k {
            "CNI_COMMAND" => Some("DEL".into()),
            "CNI_NETNS" => Some(String::new()),
            _ => None,
        })
        .unwrap();
        assert_eq!(env.netns, None, "an empty CNI_NETNS is absent");
        assert!(Env::require(&env.netns, "CNI_NETNS").unwrap_err().msg.contains("CNI_NETNS"));
        assert_eq!(K8sArgs::parse("K8S_POD_NAME").unwrap_err().code, code::INVALID_ENVIRONMENT);
        assert_eq!(K8sArgs::parse("").unwrap(), K8sArgs::default());
    }
}
