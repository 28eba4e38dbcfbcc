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
    async fn connect_app(&self, netns: &NetNs, client: IpAddr, app: SocketAddr) -> io::Result<TcpStream> {
        let (IpAddr::V4(client4), SocketAddr::V4(app4)) = (client, app) else {
            return Err(io::Error::other("only IPv4 is carried inbound"));
        };
        let sock = self.socket_in(netns, Domain::IPV4, self.inbound_mark)?;
        sock.set_ip_transparent_v4(true)?;
        sock.bind(&SocketAddr::from((client4, 0)).into())?;
        let local = sock
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| io::Error::other("bound to no IPv4 address"))?;
        // Held until connected: sk_lookup runs for the SYN only.
        let _bypass = self.bypass.allow(local, app4)?;
        TcpSocket::from_std_stream(sock.into()).connect(app).await
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
