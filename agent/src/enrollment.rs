//! Pod enrollment: turns "these pods of my node are in the mesh" into kernel state.
//!
//! For each workload of this node that is in the mesh (HBONE): find its netns (`inpod`:
//! the CNI handover or the kubelet cgroup for its UID, checked against its IP — never a
//! search by address), open the agent's sockets inside it (127.0.0.1:15001 outbound,
//! 127.0.0.1:15006 inbound, pod IP:15008 HBONE), set up the pod's reply routing
//! (`podnet`), put the inbound socket in the SOCKMAP, steer every port of the pod to it,
//! attach sk_lookup to the netns, and finally mark the netns enrolled so connect4/6 start
//! redirecting. Unenrolling undoes it in reverse.
//!
//! The loop runs on its own thread: every step is a blocking syscall (setns, bpf), and
//! none of it is on a connection's path.

use crate::{
    datapath::{Datapath, DatapathError},
    inpod::{Binder, PodRef},
    netns::{NetNs, NetNsError},
    podnet::{PodNet, PodNetError},
    proxy::{self, Direction},
    state::{InPod, Shared},
};
use serde::Serialize;
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Mutex, atomic::Ordering, mpsc},
    time::Duration,
};
use tokio::{runtime::Handle, task::JoinHandle};
use tracing::{error, info, warn};
use weft_ebpf_common::{HBONE_PORT, INBOUND_CAPTURE_PORT, MAX_PODS_PER_NODE, OUTBOUND_CAPTURE_PORT};
use weft_model::{TunnelProtocol, Workload};

/// How often pods whose netns was not found yet are looked for again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("cannot open the agent's {which} socket in the pod: {source}")]
    Listen { which: &'static str, source: io::Error },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    PodNet(#[from] PodNetError),
    #[error("no free SOCKMAP slot: more than {MAX_PODS_PER_NODE} enrolled pods on this node")]
    NoSlot,
}

/// Messages to the enrollment loop.
pub enum Command {
    /// The model changed: reconcile now.
    Reconcile,
    /// Stop accepting on every pod (drain); kernel state stays pinned.
    StopAccepting,
}

/// What the admin endpoint shows.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EnrollmentStatus {
    pub reconciled: bool,
    pub enrolled: Vec<EnrolledView>,
    /// Pods that should be enrolled but whose netns has not been found (yet).
    pub pending: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrolledView {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub netns_cookie: u64,
    pub slot: u32,
    pub identity: String,
}

struct Enrolled {
    pod: Arc<InPod>,
    slot: u32,
    accept_loops: [JoinHandle<()>; 3],
    /// Duplicates of the listening sockets, to stop them from this thread (see
    /// [`Enrolled::stop_accepting`]).
    listeners: [OwnedFd; 3],
}

pub struct Enrollment {
    datapath: Datapath,
    shared: Arc<Shared>,
    /// The agent's own netns, where this thread returns after working in a pod's.
    home: NetNs,
    podnet: PodNet,
    binder: Arc<Binder>,
    node: String,
    runtime: Handle,
    pods: HashMap<Ipv4Addr, Enrolled>,
    slots: Vec<bool>,
    status: Arc<Mutex<EnrollmentStatus>>,
}

impl Enrollment {
    pub fn new(
        datapath: Datapath,
        shared: Arc<Shared>,
        home: NetNs,
        podnet: PodNet,
        binder: Arc<Binder>,
        node: String,
        runtime: Handle,
    ) -> Enrollment {
        Enrollment {
            datapath,
            shared,
            home,
            podnet,
            binder,
            node,
            runtime,
            pods: HashMap::new(),
            slots: vec![false; MAX_PODS_PER_NODE as usize],
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<Mutex<EnrollmentStatus>> {
        self.status.clone()
    }

    /// Runs until `StopAccepting` arrives or the sender is dropped.
    pub fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            self.reconcile();
            match commands.recv_timeout(RETRY_INTERVAL) {
                Ok(Command::Reconcile) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(Command::StopAccepting) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.pods.values().for_each(Enrolled::stop_accepting);
                    info!(pods = self.pods.len(), "stopped accepting; eBPF state stays pinned");
                    return;
                }
            }
        }
    }

    fn reconcile(&mut self) {
        let state = self.shared.state.load_full();
        let node = self.node.clone();
        let desired: HashMap<Ipv4Addr, &Arc<Workload>> = state
            .workloads_on(&node)
            .filter(|w| w.protocol == TunnelProtocol::Hbone && !w.host_network)
            .filter_map(|w| {
                match w.ips.iter().find_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }) {
                    Some(ip) => Some((ip, w)),
                    None => {
                        warn!(pod = %w.name, namespace = %w.namespace, "IPv6-only pods are not enrolled yet");
                        None
                    }
                }
            })
            .collect();

        let gone: Vec<Ipv4Addr> = self
            .pods
            .iter()
            .filter(|(ip, e)| desired.get(ip).is_none_or(|w| w.uid != e.pod.workload.uid))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            self.unenroll(ip);
        }

        let missing: Vec<Ipv4Addr> =
            desired.keys().filter(|ip| !self.pods.contains_key(ip)).copied().collect();
        let mut pending = Vec::new();
        for ip in missing {
            let workload = desired[&ip];
            let pod_ref = PodRef {
                namespace: &workload.namespace,
                name: &workload.name,
                uid: workload.pod_uid.as_deref(),
                ip: IpAddr::V4(ip),
            };
            // Refusals are logged by the binder, once each; not found yet is normal.
            let enrolled = match self.binder.netns_for(&pod_ref, &self.home) {
                Ok(bound) => match self.enroll(workload, ip, bound.netns) {
                    Ok(()) => true,
                    Err(error) => {
                        error!(pod = %workload.name, namespace = %workload.namespace, %error, "cannot enroll pod");
                        false
                    }
                },
                Err(_) => false,
            };
            if !enrolled {
                pending.push(format!("{}/{}", workload.namespace, workload.name));
            }
        }
        if pending.is_empty() {
            self.collect_garbage();
        }

        self.shared.metrics.enrolled_pods.store(self.pods.len() as u64, Ordering::Relaxed);
        let mut status = self.status.lock().expect("status lock");
        status.reconciled = true;
        status.pending = pending;
        status.enrolled = self.pods.values().map(Enrolled::view).collect();
        status.enrolled.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }

    fn enroll(&mut self, workload: &Arc<Workload>, ip: Ipv4Addr, ns: NetNs) -> Result<(), EnrollError> {
        let host = &self.home;
        let cookie = ns.cookie(host)?;
        let (outbound_l, inbound_l, hbone_l) = ns.run(host, || -> Result<_, EnrollError> {
            Ok((
                listen(Ipv4Addr::LOCALHOST, OUTBOUND_CAPTURE_PORT)
                    .map_err(|source| EnrollError::Listen { which: "outbound (15001)", source })?,
                listen(Ipv4Addr::LOCALHOST, INBOUND_CAPTURE_PORT)
                    .map_err(|source| EnrollError::Listen { which: "inbound (15006)", source })?,
                listen(ip, HBONE_PORT)
                    .map_err(|source| EnrollError::Listen { which: "HBONE (15008)", source })?,
            ))
        })??;
        self.podnet.prepare(&ns, host)?;
        let slot = self.slots.iter().position(|used| !used).ok_or(EnrollError::NoSlot)? as u32;
        let dup = |s: &socket2::Socket, which| {
            s.as_fd().try_clone_to_owned().map_err(|source| EnrollError::Listen { which, source })
        };
        let listeners = [
            dup(&outbound_l, "outbound (15001)")?,
            dup(&inbound_l, "inbound (15006)")?,
            dup(&hbone_l, "HBONE (15008)")?,
        ];

        // Order matters for failing closed: the socket is in the SOCKMAP before the pod is
        // steered to it, and steering is in place before connect4/6 start redirecting.
        let result = (|| -> Result<(), EnrollError> {
            self.datapath.set_listener(slot, &inbound_l)?;
            self.datapath.set_inbound_pod(ip, slot)?;
            self.datapath.attach_sk_lookup(&ns, cookie)?;
            self.datapath.enroll(cookie, ip)?;
            Ok(())
        })();
        if let Err(e) = result {
            self.datapath.unenroll(cookie);
            self.datapath.detach_sk_lookup(cookie);
            self.datapath.remove_inbound_pod(ip);
            self.datapath.clear_listener(slot);
            return Err(e);
        }
        self.slots[slot as usize] = true;

        // Only pods bound to their netns by a source a pod cannot forge get here, so only
        // they get a certificate. Without a CA the pod is still captured: its HBONE
        // connections then fail closed.
        let cert = match self.shared.secrets.track(&workload.identity) {
            Ok(slot) => Some(slot),
            Err(error) => {
                warn!(pod = %workload.name, namespace = %workload.namespace, %error, "no workload certificate");
                None
            }
        };
        let in_pod =
            Arc::new(InPod { workload: workload.clone(), ip, netns: ns, netns_cookie: cookie, cert });
        let _rt = self.runtime.enter();
        let tokio_listener = |sock: socket2::Socket, which| {
            tokio::net::TcpListener::from_std(sock.into())
                .map_err(|source| EnrollError::Listen { which, source })
        };
        let (outbound_l, inbound_l, hbone_l) = (
            tokio_listener(outbound_l, "outbound (15001)")?,
            tokio_listener(inbound_l, "inbound (15006)")?,
            tokio_listener(hbone_l, "HBONE (15008)")?,
        );
        let serve = |listener, direction| {
            self.runtime.spawn(proxy::serve(listener, in_pod.clone(), self.shared.clone(), direction))
        };
        let accept_loops = [
            serve(outbound_l, Direction::Outbound),
            serve(inbound_l, Direction::InboundPlain),
            serve(hbone_l, Direction::Hbone),
        ];
        info!(pod = %workload.name, namespace = %workload.namespace, %ip, netns = %in_pod.netns.path().display(), cookie, slot, "pod enrolled");
        self.pods.insert(ip, Enrolled { pod: in_pod, slot, accept_loops, listeners });
        Ok(())
    }

    fn unenroll(&mut self, ip: Ipv4Addr) {
        let Some(e) = self.pods.remove(&ip) else { return };
        // Reverse order: stop redirecting first, then stop steering, then close sockets.
        self.datapath.unenroll(e.pod.netns_cookie);
        self.datapath.detach_sk_lookup(e.pod.netns_cookie);
        self.datapath.remove_inbound_pod(ip);
        e.stop_accepting();
        self.datapath.clear_listener(e.slot);
        self.slots[e.slot as usize] = false;
        if e.pod.cert.is_some() {
            self.shared.secrets.untrack(&e.pod.workload.identity);
        }
        info!(pod = %e.pod.workload.name, namespace = %e.pod.workload.namespace, %ip, "pod unenrolled");
    }

    /// Removes kernel state nobody owns: entries an earlier agent left for pods that are
    /// no longer enrolled. Only called when every desired pod is enrolled, so an entry
    /// of a pod we simply have not found yet is never dropped (that would be a bypass).
    fn collect_garbage(&mut self) {
        let ours: HashSet<u64> = self.pods.values().map(|e| e.pod.netns_cookie).collect();
        for cookie in self.datapath.enrolled_cookies() {
            if !ours.contains(&cookie) {
                self.datapath.unenroll(cookie);
            }
        }
        for cookie in self.datapath.sk_lookup_links() {
            if !ours.contains(&cookie) {
                self.datapath.detach_sk_lookup(cookie);
            }
        }
        for ip in self.datapath.inbound_pods() {
            if !self.pods.contains_key(&ip) {
                self.datapath.remove_inbound_pod(ip);
            }
        }
    }
}

impl Enrolled {
    /// Stops both listeners now, from this thread. Aborting the accept loops alone would
    /// close them only when the runtime next polls those tasks, which under load can be
    /// long enough for a new connection to be accepted after the agent said it stopped.
    /// `shutdown(SHUT_RD)` on a listening socket takes it out of LISTEN at once: new
    /// connections are refused (and the inbound one leaves the SOCKMAP).
    fn stop_accepting(&self) {
        for fd in &self.listeners {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        }
        self.accept_loops.iter().for_each(JoinHandle::abort);
    }

    fn view(&self) -> EnrolledView {
        EnrolledView {
            name: self.pod.workload.name.clone(),
            namespace: self.pod.workload.namespace.clone(),
            ip: self.pod.ip,
            netns: self.pod.netns.path().display().to_string(),
            netns_cookie: self.pod.netns_cookie,
            slot: self.slot,
            identity: self.pod.workload.identity.to_string(),
        }
    }
}

/// A listening socket on `ip:port` in the calling thread's netns. The capture sockets
/// are on loopback (nothing outside the pod reaches them but through sk_lookup); the
/// HBONE one is on the pod's address.
fn listen(ip: Ipv4Addr, port: u16) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&SocketAddr::from((ip, port)).into())?;
    sock.listen(4096)?;
    Ok(sock)
}
