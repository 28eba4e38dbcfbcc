//! What the proxy needs from the machine, in one place: the original destination of a
//! captured connection, and connections opened on a pod's behalf.
//!
//! On a node ([`PodSockets`]) these are eBPF map lookups and sockets created inside the
//! pod's network namespace. The in-process tests ([`LoopbackSockets`], feature `testing`)
//! route the model's addresses to loopback ports instead, so the whole proxy — plan,
//! HBONE, TLS, policy, pump — runs without root, namespaces or eBPF.

use crate::{
    datapath::{BypassTable, OrigDstTable},
    netns::NetNs,
    state::InPod,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU32, Ordering::Relaxed},
};
use tokio::net::{TcpSocket, TcpStream};

/// Where the proxy's sockets come from.
pub enum Sockets {
    Pods(PodSockets),
    #[cfg(any(test, feature = "testing"))]
    Loopback(LoopbackSockets),
}

impl Sockets {
    /// The address an application dialled, for a connection captured in `pod` from `client`.
    pub fn original_destination(&self, pod: &InPod, client: SocketAddr) -> Option<SocketAddr> {
        match self {
            Sockets::Pods(s) => match client {
                SocketAddr::V4(c) => s.orig_dst.lookup(pod.netns_cookie, c).map(SocketAddr::V4),
                SocketAddr::V6(_) => None,
            },
            #[cfg(any(test, feature = "testing"))]
            Sockets::Loopback(s) => s.original_destination(client),
        }
    }

    /// A connection from inside `pod` to `dst`, as the pod (its address and routes), with
    /// the agent's mark.
    pub async fn connect(&self, pod: &InPod, dst: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Sockets::Pods(s) => s.connect_in(&pod.netns, dst).await,
            #[cfg(any(test, feature = "testing"))]
            Sockets::Loopback(s) => s.connect(dst).await,
        }
    }

    /// A connection to the application at `app` inside `pod`, from `client`'s address.
    pub async fn connect_app(&self, pod: &InPod, client: IpAddr, app: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Sockets::Pods(s) => s.connect_app(&pod.netns, client, app).await,
            #[cfg(any(test, feature = "testing"))]
            Sockets::Loopback(s) => s.connect(app).await,
        }
    }
}

/// The node's: eBPF tables and sockets in pods' network namespaces.
pub struct PodSockets {
    pub orig_dst: OrigDstTable,
    pub bypass: BypassTable,
    /// The agent's own netns, where threads return after creating a socket in a pod's.
    pub home: NetNs,
    /// SO_MARK of the agent's sockets towards other pods and nodes.
    pub mark: u32,
    /// SO_MARK of the agent's connections to applications; the pod routes the replies of
    /// marked connections back to the agent (see `podnet`).
    pub inbound_mark: u32,
    /// Where the next transparent bind takes its source port (see `connect_app`).
    pub app_ports: SourcePorts,
}

/// Source ports for the agent's connections to applications, handed out in turn.
///
/// Why the agent picks them rather than bind(port 0): those connections are made from the
/// client's address, and the agent is usually the side that closes first (it passes the
/// client's FIN on), so their TIME_WAITs pile up on the client's address in the pod's
/// netns — tens of thousands at a few thousand connections per second. bind(port 0) must
/// then search the port range for a port no socket holds (profiled: 78 % of the agent's
/// CPU at 1.2k HBONE connections/s, and the range runs out at ~470/s sustained per
/// client and application). A port bound explicitly lets connect() take over a TIME_WAIT
/// of the same four-tuple (the kernel allows it when timestamps were on: PAWS keeps old
/// segments out), so only a live connection on the same four-tuple is a conflict, and
/// that is tried again on the next port.
#[derive(Default)]
pub struct SourcePorts {
    next: AtomicU32,
}

impl SourcePorts {
    const FIRST: u32 = 1024;
    const COUNT: u32 = 65536 - Self::FIRST;
    /// Live conflicts need the same client, application and port: a few tries suffice.
    pub const ATTEMPTS: usize = 8;

    pub fn next(&self) -> u16 {
        // Wraps with the counter; lock-free, one atomic add per connection.
        let n = self.next.fetch_add(1, Relaxed) % Self::COUNT;
        u16::try_from(Self::FIRST + n).expect("below 65536 by construction")
    }
}

impl PodSockets {
    /// A socket created inside `netns` (on this thread, briefly entered into it): a socket
    /// belongs to the netns it was created in for its whole life.
    fn socket_in(&self, netns: &NetNs, domain: Domain, mark: u32) -> io::Result<Socket> {
        let sock = netns
            .run(&self.home, || Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP)))
            .map_err(io::Error::other)??;
        sock.set_mark(mark)?;
        sock.set_tcp_nodelay(true)?;
        Ok(sock)
    }

    async fn connect_in(&self, netns: &NetNs, dst: SocketAddr) -> io::Result<TcpStream> {
        let sock = self.socket_in(netns, Domain::for_address(dst), self.mark)?;
        TcpSocket::from_std_stream(sock.into()).connect(dst).await
    }

    /// From the client's own address (IP_TRANSPARENT), so the application sees the real
    /// client; named in the bypass map so sk_lookup does not steer it back to the agent.
    /// The source port is the agent's choice ([`SourcePorts`]).
    async fn connect_app(&self, netns: &NetNs, client: IpAddr, app: SocketAddr) -> io::Result<TcpStream> {
        let (IpAddr::V4(client4), SocketAddr::V4(app4)) = (client, app) else {
            return Err(io::Error::other("only IPv4 is carried inbound"));
        };
        let mut last = None;
        for _ in 0..SourcePorts::ATTEMPTS {
            let sock = self.socket_in(netns, Domain::IPV4, self.inbound_mark)?;
            sock.set_ip_transparent_v4(true)?;
            // Other sockets of the agent on this address and port (to other applications,
            // or in TIME_WAIT) do not stop the bind; connect() checks the four-tuple.
            sock.set_reuse_address(true)?;
            let local = std::net::SocketAddrV4::new(client4, self.app_ports.next());
            match sock.bind(&SocketAddr::V4(local).into()) {
                Ok(()) => {}
                // A listener of the pod's own on that port (the client is this pod).
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Held until connected: sk_lookup runs for the SYN only.
            let _bypass = self.bypass.allow(local, app4)?;
            match TcpSocket::from_std_stream(sock.into()).connect(app).await {
                // A live connection on the same four-tuple: the next port.
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => last = Some(e),
                result => return result,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable)))
    }
}

/// The in-process tests': model addresses routed to loopback listeners, and original
/// destinations registered by the test before its client connects.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct LoopbackSockets {
    routes: std::sync::Mutex<std::collections::HashMap<SocketAddr, SocketAddr>>,
    originals: std::sync::Mutex<std::collections::HashMap<SocketAddr, SocketAddr>>,
}

#[cfg(any(test, feature = "testing"))]
impl LoopbackSockets {
    /// Connections to `model` (a pod's address and port in the model) go to `actual`.
    pub fn route(&self, model: SocketAddr, actual: SocketAddr) {
        self.routes.lock().expect("routes").insert(model, actual);
    }

    /// The connection from `client` was captured on its way to `original`.
    pub fn captured(&self, client: SocketAddr, original: SocketAddr) {
        self.originals.lock().expect("originals").insert(client, original);
    }

    fn original_destination(&self, client: SocketAddr) -> Option<SocketAddr> {
        self.originals.lock().expect("originals").get(&client).copied()
    }

    async fn connect(&self, dst: SocketAddr) -> io::Result<TcpStream> {
        let actual = self.routes.lock().expect("routes").get(&dst).copied();
        let actual = actual
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, format!("no route to {dst}")))?;
        let stream = TcpStream::connect(actual).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::SourcePorts;

    #[test]
    fn source_ports_cycle_through_the_unprivileged_range() {
        let ports = SourcePorts::default();
        let first: Vec<u16> = (0..3).map(|_| ports.next()).collect();
        assert_eq!(first, [1024, 1025, 1026]);
        // Round the range: the last port, then the first again (never 0, never < 1024).
        for _ in 3..SourcePorts::COUNT - 1 {
            assert!(ports.next() >= 1024);
        }
        assert_eq!(ports.next(), 65535);
        assert_eq!(ports.next(), 1024);
    }
}
