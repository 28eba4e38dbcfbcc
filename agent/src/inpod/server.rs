//! The handover server: where `weft-cni` reaches the agent (protocol in
//! `weft_cni::protocol`), and the two housekeeping tasks that go with it — dropping
//! sandboxes whose pod is gone, and keeping the mesh-namespaces file the plugin reads
//! while the agent is down.
//!
//! Only root may hand a namespace over: the socket's directory is 0700 and the socket 0600
//! (both root's, as the agent runs as root), and each connection's peer credentials are
//! checked too, so a socket path exposed by mistake still refuses others.

use super::{
    kubepods::Kubepods,
    registry::{Sandbox, Sandboxes},
};
use crate::netns::NetNs;
use std::{
    collections::BTreeSet,
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, info, warn};
use weft_cni::protocol::{self, MeshNamespaces, Op, PROTOCOL_VERSION, Request, Response};

/// How long one exchange may take before the agent hangs up.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often sandboxes are checked against the kubelet's cgroups.
pub const GC_INTERVAL: Duration = Duration::from_secs(15);

/// A sandbox younger than this is kept even without a pod cgroup: the kubelet makes the
/// pod's cgroup before the sandbox, but a handover racing a slow cgroup write must not be
/// dropped.
const GC_GRACE: Duration = Duration::from_secs(60);

/// Why the handover socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot create the CNI socket directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error(
        "the CNI socket directory {dir} is open to others (mode {mode:o}); give --cni-socket a \
         directory of its own, which the agent creates 0700"
    )]
    OpenDir { dir: PathBuf, mode: u32 },
    #[error("another weft-agent already serves {path}: is an agent for this node already running?")]
    InUse { path: PathBuf },
    #[error("cannot remove the stale CNI socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot listen on the CNI socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot restrict the CNI socket {path} to root: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// Creates the socket's directory (0700) if needed and listens on `path` (0600). A socket
/// left by an agent that died is replaced; one a live agent answers on is not.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, HandoverError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(meta) if meta.mode() & 0o077 != 0 => {
            return Err(HandoverError::OpenDir { dir: dir.to_owned(), mode: meta.mode() & 0o7777 });
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
                .map_err(|source| HandoverError::CreateDir { dir: dir.to_owned(), source })?;
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(HandoverError::InUse { path: path.to_owned() });
        }
        std::fs::remove_file(path)
            .map_err(|source| HandoverError::RemoveStale { path: path.to_owned(), source })?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|source| HandoverError::Bind { path: path.to_owned(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| listener.set_nonblocking(true))
        .map_err(|source| HandoverError::Chmod { path: path.to_owned(), source })?;
    Ok(listener)
}

/// What the server needs besides its socket.
pub struct Handovers {
    pub sandboxes: Arc<Sandboxes>,
    /// The agent's own namespace: never accepted as a pod's.
    pub home_inode: u64,
    /// Called after each recorded handover, so enrollment looks at once rather than at
    /// its next retry.
    pub on_handover: Box<dyn Fn() + Send + Sync>,
}

/// Accepts the plugin's connections until the task is dropped.
pub async fn serve(listener: std::os::unix::net::UnixListener, handovers: Handovers) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            warn!(%error, "cannot serve the CNI socket: handovers are off, pods are found by cgroup only");
            return;
        }
    };
    let handovers = Arc::new(handovers);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handovers = handovers.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &handovers)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => warn!(%error, "CNI handover connection failed"),
                        Err(_) => warn!(timeout = ?EXCHANGE_TIMEOUT, "CNI handover connection timed out"),
                    }
                });
            }
            Err(error) => {
                // Out of descriptors, most likely: wait rather than spin.
                warn!(%error, "cannot accept on the CNI socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn exchange(stream: UnixStream, handovers: &Handovers) -> io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let answer = if peer.uid() != 0 {
        warn!(uid = peer.uid(), pid = ?peer.pid(), "refusing a CNI handover connection from a non-root process");
        Response::refused("only root may hand pods over")
    } else {
        let mut line = Vec::with_capacity(512);
        BufReader::new(read.take(protocol::MAX_MESSAGE_BYTES as u64)).read_until(b'\n', &mut line).await?;
        match protocol::decode::<Request>(&line) {
            Ok(request) => handle(request, handovers),
            Err(error) => {
                warn!(%error, "unreadable CNI handover request");
                Response::refused(format!("unreadable request: {error}"))
            }
        }
    };
    write.write_all(&protocol::encode(&answer)).await?;
    write.shutdown().await
}

/// One request, answered. Everything here is quick (an `open` of the namespace at most),
/// so it runs inline.
fn handle(request: Request, handovers: &Handovers) -> Response {
    if request.v != PROTOCOL_VERSION {
        return Response::refused(format!(
            "protocol version {} is not spoken here; this agent speaks version {PROTOCOL_VERSION}",
            request.v
        ));
    }
    if !weft_model::is_pod_uid(&request.uid) {
        return Response::refused(format!("{:?} is not a Kubernetes pod UID", request.uid));
    }
    if request.container_id.is_empty() || request.namespace.is_empty() || request.name.is_empty() {
        return Response::refused("container_id, namespace and name must not be empty");
    }
    let pod = format!("{}/{}", request.namespace, request.name);
    match request.op {
        Op::Add => match add(request, handovers) {
            Ok(()) => {
                (handovers.on_handover)();
                Response::ok()
            }
            Err(why) => {
                warn!(%pod, reason = %why, "CNI handover refused");
                Response::refused(why)
            }
        },
        Op::Del => {
            let removed = handovers.sandboxes.remove(&request.uid, &request.container_id);
            info!(%pod, uid = %request.uid, sandbox = %request.container_id, removed, "CNI DEL");
            Response::ok()
        }
        Op::Check if handovers.sandboxes.holds(&request.uid, &request.container_id) => Response::ok(),
        Op::Check => Response::refused(format!(
            "the agent holds no sandbox {} for pod {pod} (uid {})",
            request.container_id, request.uid
        )),
    }
}

fn add(request: Request, handovers: &Handovers) -> Result<(), String> {
    if !request.netns.starts_with('/') {
        return Err(format!("netns {:?} is not an absolute path", request.netns));
    }
    let netns = NetNs::open(&request.netns).map_err(|e| e.to_string())?;
    if !netns.is_network_namespace() {
        return Err(format!("{} is not a network namespace", request.netns));
    }
    if netns.inode() == handovers.home_inode {
        return Err(format!("{} is the node's own network namespace", request.netns));
    }
    info!(
        pod = %format!("{}/{}", request.namespace, request.name), uid = %request.uid,
        sandbox = %request.container_id, netns = %request.netns, ips = ?request.ips,
        "CNI handover"
    );
    let replaced = handovers
        .sandboxes
        .insert(Sandbox {
            uid: request.uid,
            namespace: request.namespace,
            name: request.name,
            container_id: request.container_id,
            netns: Arc::new(netns),
            reported_ips: request.ips,
            received: Instant::now(),
        })
        .map_err(|e| e.to_string())?;
    if let Some(old) = replaced {
        info!(uid = %old.uid, sandbox = %old.container_id, "an older sandbox of the pod was replaced");
    }
    Ok(())
}

/// Drops, every [`GC_INTERVAL`], the sandboxes whose pod cgroup is gone: the pod left the
/// node and its DEL never reached the agent.
pub async fn collect_garbage(sandboxes: Arc<Sandboxes>, kubepods: Kubepods) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    loop {
        tick.tick().await;
        for gone in
            sandboxes.retain(|s| s.received.elapsed() < GC_GRACE || kubepods.pod_cgroup(&s.uid).is_some())
        {
            info!(
                pod = %format!("{}/{}", gone.namespace, gone.name), uid = %gone.uid, sandbox = %gone.container_id,
                "dropping a sandbox whose pod cgroup is gone (its CNI DEL was missed)"
            );
        }
    }
}

/// Keeps the mesh-namespaces file beside the socket equal to `current()`, checked every
/// `interval`; written only when the set changes, atomically, 0600.
pub async fn publish_mesh_namespaces(
    socket: PathBuf,
    interval: Duration,
    current: impl Fn() -> BTreeSet<String>,
) {
    let path = protocol::mesh_namespaces_path(&socket);
    let mut written: Option<BTreeSet<String>> = None;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let now = current();
        if written.as_ref() == Some(&now) {
            continue;
        }
        match write_mesh_namespaces(&path, &now) {
            Ok(()) => {
                debug!(path = %path.display(), namespaces = ?now, "mesh namespaces published for the CNI plugin");
                written = Some(now);
            }
            Err(error) => warn!(path = %path.display(), %error, "cannot write the mesh-namespaces file"),
        }
    }
}

fn write_mesh_namespaces(path: &Path, namespaces: &BTreeSet<String>) -> io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec(&MeshNamespaces { v: PROTOCOL_VERSION, namespaces: namespaces.clone() })?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const UID: &str = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";

    fn request(op: Op, netns: &str) -> Request {
        Request {
            v: PROTOCOL_VERSION,
            op,
            container_id: "sandbox-1".into(),
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: UID.into(),
            netns: netns.into(),
            ips: vec!["10.1.2.5".parse().unwrap()],
        }
    }

    /// A namespace file that is not the agent's own: the test's process namespace, with
    /// the "home" inode set to something else.
    fn handovers(calls: Arc<AtomicUsize>) -> Handovers {
        Handovers {
            sandboxes: Arc::default(),
            home_inode: 1,
            on_handover: Box::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
            }),
        }
    }

    #[tokio::test]
    async fn add_check_del_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent/cni.sock");
        let listener = bind(&socket).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!((mode(socket.parent().unwrap()), mode(&socket)), (0o700, 0o600));
        let calls = Arc::new(AtomicUsize::new(0));
        let h = handovers(calls.clone());
        let sandboxes = h.sandboxes.clone();
        let server = tokio::spawn(serve(listener, h));

        let call = |r: Request| {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || protocol::call(&socket, &r, Duration::from_secs(2)).unwrap())
        };
        let own = "/proc/self/ns/net";
        assert!(call(request(Op::Add, own)).await.unwrap().ok);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "enrollment was told");
        assert_eq!(
            sandboxes.get(UID).unwrap().reported_ips,
            ["10.1.2.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(call(request(Op::Check, own)).await.unwrap().ok);
        assert!(call(request(Op::Del, "")).await.unwrap().ok);
        let answer = call(request(Op::Check, own)).await.unwrap();
        assert!(!answer.ok && answer.error.unwrap().contains("holds no sandbox"));
        assert!(call(request(Op::Del, "")).await.unwrap().ok, "DEL is idempotent");

        // Refusals name the reason.
        let answer = call(request(Op::Add, "/nonexistent/netns")).await.unwrap();
        assert!(!answer.ok && answer.error.unwrap().contains("/nonexistent/netns"));
        let answer = call(request(Op::Add, "/proc/self/ns/uts")).await.unwrap();
        assert!(answer.error.unwrap().contains("not a network namespace"));
        let answer = call(request(Op::Add, "/proc/self/status")).await.unwrap();
        assert!(answer.error.unwrap().contains("not a network namespace"));
        let mut bad = request(Op::Add, own);
        bad.uid = "../../etc".into();
        assert!(call(bad).await.unwrap().error.unwrap().contains("not a Kubernetes pod UID"));
        let mut future = request(Op::Add, own);
        future.v = 2;
        assert!(call(future).await.unwrap().error.unwrap().contains("speaks version 1"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        // A second agent on the same socket is refused while this one serves.
        assert!(matches!(bind(&socket), Err(HandoverError::InUse { .. })));
        server.abort();
        let _ = server.await;
        assert!(bind(&socket).is_ok(), "a dead agent's socket is replaced");
    }

    #[test]
    fn the_agents_own_namespace_is_refused() {
        let mut h = handovers(Arc::default());
        h.home_inode = NetNs::current().unwrap().inode();
        let answer = handle(request(Op::Add, "/proc/self/ns/net"), &h);
        assert!(!answer.ok && answer.error.unwrap().contains("node's own"));
        assert!(h.sandboxes.is_empty());
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind(&dir.path().join("cni.sock")).unwrap_err();
        assert!(matches!(err, HandoverError::OpenDir { mode: 0o755, .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn mesh_namespaces_are_published_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cni.sock");
        let set = Arc::new(std::sync::Mutex::new(BTreeSet::from(["shop".to_owned()])));
        let source = set.clone();
        let task = tokio::spawn(publish_mesh_namespaces(socket.clone(), Duration::from_secs(1), move || {
            source.lock().unwrap().clone()
        }));
        let path = protocol::mesh_namespaces_path(&socket);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let read = || protocol::read_mesh_namespaces(&path).unwrap().unwrap().namespaces;
        assert_eq!(read(), BTreeSet::from(["shop".to_owned()]));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        set.lock().unwrap().insert("bookinfo".into());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(read().len(), 2);
        task.abort();
    }
}
