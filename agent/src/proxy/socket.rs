//! Sockets the agent opens inside a pod's network namespace.
//!
//! A socket belongs to the netns it was created in for its whole life, so the agent
//! creates it there (on the calling thread, briefly entered into the pod) and then uses
//! it from any task.

use super::ProxyError;
use crate::{
    netns::NetNs,
    state::{InPod, Shared},
};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `dst` from inside `netns`, so the connection leaves with the pod's own
/// address and routes, carrying `mark`.
pub async fn connect_in(
    netns: &NetNs,
    home: &NetNs,
    dst: SocketAddr,
    mark: u32,
) -> Result<TcpStream, ProxyError> {
    let connect_error = |source| ProxyError::Connect { dst, source };
    let sock = netns
        .run(home, || Socket::new(Domain::for_address(dst), Type::STREAM.nonblocking(), Some(Protocol::TCP)))?
        .map_err(connect_error)?;
    sock.set_mark(mark).map_err(connect_error)?;
    sock.set_tcp_nodelay(true).map_err(connect_error)?;
    TcpSocket::from_std_stream(sock.into()).connect(dst).await.map_err(connect_error)
}

/// Connects to the application at `app` inside the pod, from `client`'s address
/// (IP_TRANSPARENT), so the application sees the real client as it would without the
/// mesh. The socket carries the inbound mark, with which the pod routes the replies back
/// to this socket (see `podnet`), and is named in the bypass map so sk_lookup does not
/// steer it back to the agent.
pub async fn connect_app(
    pod: &InPod,
    shared: &Shared,
    client: SocketAddr,
    app: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let connect_error = |source| ProxyError::Connect { dst: app, source };
    let (SocketAddr::V4(client4), SocketAddr::V4(app4)) = (client, app) else {
        return Err(connect_error(std::io::Error::other("only IPv4 is carried inbound")));
    };
    let sock = pod
        .netns
        .run(&shared.host_netns, || {
            Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), Some(Protocol::TCP))
        })?
        .map_err(connect_error)?;
    sock.set_mark(shared.inbound_mark).map_err(connect_error)?;
    sock.set_ip_transparent_v4(true).map_err(connect_error)?;
    sock.set_tcp_nodelay(true).map_err(connect_error)?;
    sock.bind(&SocketAddr::from((*client4.ip(), 0)).into()).map_err(connect_error)?;
    let local = sock
        .local_addr()
        .map_err(connect_error)?
        .as_socket_ipv4()
        .ok_or_else(|| connect_error(std::io::Error::other("bound socket has no IPv4 address")))?;
    // Held until the connection is made: sk_lookup runs for the SYN only.
    let _bypass = shared.bypass.allow(local, app4).map_err(connect_error)?;
    TcpSocket::from_std_stream(sock.into()).connect(app).await.map_err(connect_error)
}
