//! Pod enrollment: turns "these pods of my node are in the mesh" into kernel state.
//!
//! For each enrolled pod: find its netns (`inpod`: the CNI handover or the kubelet cgroup
//! for its UID, checked against its IP), open the agent's sockets inside it
//! (127.0.0.1:15001 outbound, 127.0.0.1:15006 inbound), put the inbound socket in the
//! SOCKMAP, steer the pod's ports to it, attach sk_lookup to the netns, and finally mark
//! the netns enrolled so connect4/6 start redirecting. Unenrolling undoes it in reverse.
//!
//! The loop runs on its own thread: every step is a blocking syscall (setns, bpf), and
//! none of it is on a connection's path.

use crate::{
    datapath::{Datapath, DatapathError, inbound_key},
    inpod::{Binder, PodRef},
    netns::{NetNs, NetNsError},
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
use weft_ebpf_common::{INBOUND_CAPTURE_PORT, MAX_PODS_PER_NODE, OUTBOUND_CAPTURE_PORT};
use weft_model::Pod;

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
    pub ports: Vec<u16>,
}

struct Enrolled {
    pod: Arc<InPod>,
    slot: u32,
    ports: Vec<u16>,
    accept_loops: [JoinHandle<()>; 2],
    /// Duplicates of the two listening sockets, to stop them from this thread (see
    /// [`Enrolled::stop_accepting`]).
    listeners: [OwnedFd; 2],
}

pub struct Enrollment {
    datapath: Datapath,
    shared: Arc<Shared>,
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
        binder: Arc<Binder>,
        node: String,
        runtime: Handle,
    ) -> Enrollment {
        Enrollment {
            datapath,
            shared,
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
        let mesh = self.shared.mesh.load_full();
        let desired: HashMap<Ipv4Addr, &Pod> = mesh
            .mesh
            .pods
            .iter()
            .filter(|p| p.node == self.node && mesh.mesh.is_enrolled(p))
            .filter_map(|p| match p.ip {
                IpAddr::V4(ip) => Some((ip, p)),
                IpAddr::V6(_) => {
                    warn!(pod = %p.name, "IPv6-only pods are not enrolled yet");
                    None
                }
            })
            .collect();

        let gone: Vec<Ipv4Addr> = self
            .pods
            .iter()
            .filter(|(ip, e)| {
                desired.get(ip).is_none_or(|p| p.name != e.pod.name || p.namespace != e.pod.namespace)
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            self.unenroll(ip);
        }

        for (ip, pod) in &desired {
            if let Some(e) = self.pods.get(ip) {
                let ports = mesh.mesh.inbound_ports(pod);
                if ports != e.ports {
                    self.update_ports(*ip, ports);
                }
            }
        }

        let missing: Vec<Ipv4Addr> =
            desired.keys().filter(|ip| !self.pods.contains_key(ip)).copied().collect();
        let mut pending = Vec::new();
        for ip in missing {
            let pod = desired[&ip];
            let pod_ref = PodRef {
                namespace: &pod.namespace,
                name: &pod.name,
                uid: pod.uid.as_deref(),
                ip: IpAddr::V4(ip),
            };
            // Refusals are logged by the binder, once each; not found yet is normal.
            let bound = self.binder.netns_for(&pod_ref, &self.shared.host_netns);
            let enrolled = match bound {
                Ok(bound) => match self.enroll(pod, ip, bound.netns, mesh.mesh.inbound_ports(pod)) {
                    Ok(()) => true,
                    Err(error) => {
                        error!(pod = %pod.name, namespace = %pod.namespace, %error, "cannot enroll pod");
                        false
                    }
                },
                Err(_) => false,
            };
            if !enrolled {
                pending.push(format!("{}/{}", pod.namespace, pod.name));
            }
        }
        if pending.is_empty() {
            self.collect_garbage(&desired);
        }

        self.shared.metrics.enrolled_pods.store(self.pods.len() as u64, Ordering::Relaxed);
        let mut status = self.status.lock().expect("status lock");
        status.reconciled = true;
        status.pending = pending;
        status.enrolled = self.pods.values().map(Enrolled::view).collect();
        status.enrolled.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }

    fn enroll(&mut self, pod: &Pod, ip: Ipv4Addr, ns: NetNs, ports: Vec<u16>) -> Result<(), EnrollError> {
        let host = &self.shared.host_netns;
        let cookie = ns.cookie(host)?;
        let (outbound_l, inbound_l) = ns.run(host, || -> Result<_, EnrollError> {
            Ok((
                listen(OUTBOUND_CAPTURE_PORT)
                    .map_err(|source| EnrollError::Listen { which: "outbound (15001)", source })?,
                listen(INBOUND_CAPTURE_PORT)
                    .map_err(|source| EnrollError::Listen { which: "inbound (15006)", source })?,
            ))
        })??;
        let slot = self.slots.iter().position(|used| !used).ok_or(EnrollError::NoSlot)? as u32;
        let dup = |s: &socket2::Socket, which| {
            s.as_fd().try_clone_to_owned().map_err(|source| EnrollError::Listen { which, source })
        };
        let listeners = [dup(&outbound_l, "outbound (15001)")?, dup(&inbound_l, "inbound (15006)")?];

        // Order matters for failing closed: the socket is in the SOCKMAP before any port
        // is steered to it, and steering is in place before connect4/6 start redirecting.
        let result = (|| -> Result<(), EnrollError> {
            self.datapath.set_listener(slot, &inbound_l)?;
            for &port in &ports {
                self.datapath.set_inbound_port(ip, port, slot)?;
            }
            self.datapath.attach_sk_lookup(&ns, cookie)?;
            self.datapath.enroll(cookie, ip)?;
            Ok(())
        })();
        if let Err(e) = result {
            self.datapath.unenroll(cookie);
            self.datapath.detach_sk_lookup(cookie);
            for &port in &ports {
                self.datapath.remove_inbound_port(&inbound_key(ip, port));
            }
            self.datapath.clear_listener(slot);
            return Err(e);
        }
        self.slots[slot as usize] = true;

        let in_pod = Arc::new(InPod {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            ip,
            netns: ns,
            netns_cookie: cookie,
        });
        let _rt = self.runtime.enter();
        let outbound_l = tokio::net::TcpListener::from_std(outbound_l.into())
            .map_err(|source| EnrollError::Listen { which: "outbound (15001)", source })?;
        let inbound_l = tokio::net::TcpListener::from_std(inbound_l.into())
            .map_err(|source| EnrollError::Listen { which: "inbound (15006)", source })?;
        let accept_loops = [
            self.runtime.spawn(proxy::serve(
                outbound_l,
                in_pod.clone(),
                self.shared.clone(),
                Direction::Outbound,
            )),
            self.runtime.spawn(proxy::serve(
                inbound_l,
                in_pod.clone(),
                self.shared.clone(),
                Direction::Inbound,
            )),
        ];
        info!(pod = %pod.name, namespace = %pod.namespace, %ip, netns = %in_pod.netns.path().display(), cookie, slot, ?ports, "pod enrolled");
        self.pods.insert(ip, Enrolled { pod: in_pod, slot, ports, accept_loops, listeners });
        Ok(())
    }

    fn unenroll(&mut self, ip: Ipv4Addr) {
        let Some(e) = self.pods.remove(&ip) else { return };
        // Reverse order: stop redirecting first, then stop steering, then close sockets.
        self.datapath.unenroll(e.pod.netns_cookie);
        self.datapath.detach_sk_lookup(e.pod.netns_cookie);
        for &port in &e.ports {
            self.datapath.remove_inbound_port(&inbound_key(ip, port));
        }
        e.stop_accepting();
        self.datapath.clear_listener(e.slot);
        self.slots[e.slot as usize] = false;
        info!(pod = %e.pod.name, namespace = %e.pod.namespace, %ip, "pod unenrolled");
    }

    fn update_ports(&mut self, ip: Ipv4Addr, ports: Vec<u16>) {
        let Some(e) = self.pods.get_mut(&ip) else { return };
        for &port in e.ports.iter().filter(|p| !ports.contains(p)) {
            self.datapath.remove_inbound_port(&inbound_key(ip, port));
        }
        for &port in ports.iter().filter(|p| !e.ports.contains(p)) {
            if let Err(error) = self.datapath.set_inbound_port(ip, port, e.slot) {
                error!(pod = %e.pod.name, port, %error, "cannot steer port");
            }
        }
        e.ports = ports;
    }

    /// Removes kernel state nobody owns: entries an earlier agent left for pods that are
    /// no longer enrolled. Only called when every desired pod is enrolled, so an entry
    /// of a pod we simply have not found yet is never dropped (that would be a bypass).
    fn collect_garbage(&mut self, desired: &HashMap<Ipv4Addr, &Pod>) {
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
        for key in self.datapath.inbound_keys() {
            let ip = Ipv4Addr::from(key.ipv4.to_ne_bytes());
            let wanted =
                desired.contains_key(&ip) && self.pods.get(&ip).is_some_and(|e| e.ports.contains(&key.port));
            if !wanted {
                self.datapath.remove_inbound_port(&key);
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
            name: self.pod.name.clone(),
            namespace: self.pod.namespace.clone(),
            ip: self.pod.ip,
            netns: self.pod.netns.path().display().to_string(),
            netns_cookie: self.pod.netns_cookie,
            slot: self.slot,
            ports: self.ports.clone(),
        }
    }
}

/// A listening socket on 127.0.0.1:`port` in the calling thread's netns. Loopback only:
/// nothing outside the pod can reach it directly; sk_lookup hands it connections.
fn listen(port: u16) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    sock.listen(4096)?;
    Ok(sock)
}
