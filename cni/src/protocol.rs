//! The handover protocol between `weft-cni` and `weft-agent`, and the file the agent leaves
//! for the plugin to read while it is down.
//!
//! # Wire format (version 1)
//!
//! A Unix stream socket (`weft-agent --cni-socket`; its directory 0700 and the socket 0600,
//! both root's, and the agent checks that the peer is root). One exchange per connection:
//! the plugin writes one JSON object and a newline, the agent answers with one JSON object
//! and a newline, and closes. A message is at most [`MAX_MESSAGE_BYTES`].
//!
//! ```text
//! → {"v":1,"op":"add","container_id":"9f…","namespace":"shop","name":"cart-0",
//!    "uid":"3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10","netns":"/var/run/netns/cni-5c…",
//!    "ips":["10.1.2.5"]}
//! ← {"v":1,"ok":true}
//! ← {"v":1,"ok":false,"error":"cannot open network namespace …: No such file or directory"}
//! ```
//!
//! - `add` (CNI ADD): the agent opens `netns` at once and keeps the descriptor (the path
//!   may vanish later), keyed by `uid`; a later `add` for the same UID replaces it (the
//!   runtime made a new sandbox).
//! - `del` (CNI DEL): the agent forgets the sandbox `container_id` of `uid`; an unknown
//!   one is not an error (DEL must be idempotent).
//! - `check` (CNI CHECK): `ok` when the agent holds sandbox `container_id` of `uid`.
//!
//! `v` is the protocol version. It changes when a field changes meaning or a new field
//! becomes required; an agent answers a version it does not speak with `ok: false` and the
//! versions it speaks, so a plugin/agent mismatch during an upgrade fails loudly. Unknown
//! fields are ignored, so adding an optional field does not need a new version.
//!
//! # The mesh-namespaces file
//!
//! Beside the socket, the agent keeps [`MESH_NAMESPACES_FILE`]: the namespaces whose pods
//! it captures, rewritten whenever that set changes. The plugin reads it only when it
//! cannot reach the agent, to hold back pods that must not start uncaptured while letting
//! every other pod start (see the crate documentation).

use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    io::{self, BufRead, BufReader, Read, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side accepts, newline included. A request is a few hundred
/// bytes; the bound keeps a broken peer from making the agent buffer without end.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The file, beside the agent's socket, listing the namespaces whose pods are captured.
pub const MESH_NAMESPACES_FILE: &str = "mesh-namespaces.json";

/// What the plugin asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Del,
    Check,
}

/// One request. `netns` and `ips` matter for `add` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub op: Op,
    /// `CNI_CONTAINERID`: the sandbox, so that the DEL of an old sandbox of a pod does not
    /// remove a newer one.
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    /// Kubernetes' `metadata.uid` of the pod (`K8S_POD_UID`).
    pub uid: String,
    /// `CNI_NETNS`: the path of the sandbox's network namespace.
    #[serde(default)]
    pub netns: String,
    /// The pod's addresses from the previous plugin's result (for the agent's log; the
    /// agent checks the namespace against the control plane's address, not these).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok() -> Response {
        Response { v: PROTOCOL_VERSION, ok: true, error: None }
    }

    pub fn refused(error: impl Into<String>) -> Response {
        Response { v: PROTOCOL_VERSION, ok: false, error: Some(error.into()) }
    }
}

/// One message as it goes on the wire: compact JSON and a newline.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).expect("protocol messages always serialise");
    bytes.push(b'\n');
    bytes
}

/// Reads one newline-terminated message of at most [`MAX_MESSAGE_BYTES`] from a blocking
/// reader (the plugin's side; the agent frames its side with tokio).
pub fn read_message<T: for<'de> Deserialize<'de>>(reader: impl Read) -> Result<T, FrameError> {
    let mut line = Vec::new();
    BufReader::new(reader.take(MAX_MESSAGE_BYTES as u64)).read_until(b'\n', &mut line)?;
    decode(&line)
}

/// Parses one received message (with or without its newline).
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, FrameError> {
    match line.strip_suffix(b"\n") {
        Some(body) => serde_json::from_slice(body).map_err(FrameError::Json),
        None if line.len() >= MAX_MESSAGE_BYTES => Err(FrameError::TooLong),
        None => Err(FrameError::Truncated),
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the message ended before its newline (the peer closed early)")]
    Truncated,
    #[error("the message is longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLong,
    #[error("the message is not the expected JSON: {0}")]
    Json(serde_json::Error),
}

/// Why the plugin got no answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing accepts on the socket: the agent is not installed or not running.
    #[error("cannot connect to weft-agent at {socket}: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    /// The agent accepted but did not answer in time, or the answer was not readable.
    #[error("weft-agent at {socket} did not answer: {source}")]
    Exchange { socket: PathBuf, source: FrameError },
}

/// Sends `request` to the agent at `socket` and waits up to `timeout` for each of the
/// write and the answer. Blocking: the plugin has nothing else to do meanwhile.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let connect_err = |source| CallError::Connect { socket: socket.to_owned(), source };
    let exchange_err = |source| CallError::Exchange { socket: socket.to_owned(), source };
    let mut stream = UnixStream::connect(socket).map_err(connect_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| exchange_err(e.into()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| exchange_err(e.into()))?;
    stream.write_all(&encode(request)).map_err(|e| exchange_err(e.into()))?;
    read_message(&stream).map_err(exchange_err)
}

/// The contents of [`MESH_NAMESPACES_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshNamespaces {
    pub v: u32,
    pub namespaces: BTreeSet<String>,
}

/// Where the mesh-namespaces file of the agent listening on `socket` is.
pub fn mesh_namespaces_path(socket: &Path) -> PathBuf {
    socket.with_file_name(MESH_NAMESPACES_FILE)
}

/// Why the mesh-namespaces file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MeshNamespacesError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a version-{PROTOCOL_VERSION} mesh-namespaces file: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Reads the file at `path`; `None` when it does not exist (the agent never ran here).
pub fn read_mesh_namespaces(path: &Path) -> Result<Option<MeshNamespaces>, MeshNamespacesError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(MeshNamespacesError::Read { path: path.to_owned(), source }),
    };
    let parsed: MeshNamespaces = serde_json::from_slice(&text)
        .map_err(|e| MeshNamespacesError::Parse { path: path.to_owned(), reason: e.to_string() })?;
    if parsed.v != PROTOCOL_VERSION {
        return Err(MeshNamespacesError::Parse {
            path: path.to_owned(),
            reason: format!("version {}", parsed.v),
        });
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add() -> Request {
        Request {
            v: PROTOCOL_VERSION,
            op: Op::Add,
            container_id: "9f00".into(),
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10".into(),
            netns: "/var/run/netns/cni-1".into(),
            ips: vec!["10.1.2.5".parse().unwrap()],
        }
    }

    #[test]
    fn the_wire_form_is_the_documented_one() {
        let bytes = encode(&add());
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            concat!(
                r#"{"v":1,"op":"add","container_id":"9f00","namespace":"shop","name":"cart-0","#,
                r#""uid":"3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10","netns":"/var/run/netns/cni-1","ips":["10.1.2.5"]}"#,
                "\n"
            )
        );
        assert_eq!(decode::<Request>(&bytes).unwrap(), add());
        assert_eq!(encode(&Response::ok()), b"{\"v\":1,\"ok\":true}\n");
        let del: Request = decode(
            br#"{"v":1,"op":"del","container_id":"9f00","namespace":"shop","name":"cart-0","uid":"u","future":true}
"#,
        )
        .unwrap();
        assert_eq!(
            (del.op, del.netns.as_str(), del.ips.len()),
            (Op::Del, "", 0),
            "optional fields, unknown ignored"
        );
    }

    #[test]
    fn framing_rejects_truncated_and_oversized_messages() {
        assert!(matches!(decode::<Response>(b"{\"v\":1,\"ok\":true}"), Err(FrameError::Truncated)));
        let long = vec![b' '; MAX_MESSAGE_BYTES + 10];
        assert!(matches!(read_message::<Response>(long.as_slice()), Err(FrameError::TooLong)));
        assert!(matches!(read_message::<Response>(&b"[1]\n"[..]), Err(FrameError::Json(_))));
    }

    #[test]
    fn call_reports_an_absent_agent_as_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = call(&dir.path().join("cni.sock"), &add(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, CallError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("cni.sock"), "{err}");
    }

    #[test]
    fn mesh_namespaces_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = mesh_namespaces_path(&dir.path().join("cni.sock"));
        assert_eq!(path, dir.path().join(MESH_NAMESPACES_FILE));
        assert_eq!(read_mesh_namespaces(&path).unwrap(), None);
        std::fs::write(&path, br#"{"v":1,"namespaces":["shop"]}"#).unwrap();
        let read = read_mesh_namespaces(&path).unwrap().unwrap();
        assert!(read.namespaces.contains("shop"));
        std::fs::write(&path, br#"{"v":2,"namespaces":[]}"#).unwrap();
        assert!(read_mesh_namespaces(&path).unwrap_err().to_string().contains("version 2"));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(read_mesh_namespaces(&path), Err(MeshNamespacesError::Parse { .. })));
    }
}
