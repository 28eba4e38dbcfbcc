//! Upstream sockets, created inside a pod's network namespace.

use super::ProxyError;
use crate::netns::NetNs;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `dst` from inside `netns`, so the connection leaves with the pod's own
/// address and routes. The socket carries the agent's mark, which the connect hooks
/// skip: the agent must never capture itself.
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
    let sock = TcpSocket::from_std_stream(sock.into());
    sock.connect(dst).await.map_err(connect_error)
}
