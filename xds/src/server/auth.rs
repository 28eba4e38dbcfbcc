//! Who may open an ADS stream, and which proxy it may then claim to be.
//!
//! The server stays generic: the control plane implements [`StreamAuthenticator`] (tokens,
//! TokenReview, whatever it trusts) and hands it to [`XdsServer::authenticated_service`].
//! Two checks, at the two moments the server learns something:
//!
//! ```text
//!  HTTP/2 request (metadata, peer address) ──authenticate──▶ StreamCaller   (or a status:
//!                                                                           UNAUTHENTICATED, …)
//!  first DiscoveryRequest (its Node)  ──caller.authorize(ProxyIdentity)──▶ stream runs
//!                                                                           (or PERMISSION_DENIED)
//! ```
//!
//! The second check exists because resource scopes are matched against what the proxy
//! says in its `Node` (`NODE_NAME`, `NAMESPACE`, …): an authenticated agent of node n1 must
//! not receive node n2's configuration by writing `NODE_NAME: n2`.
//!
//! [`XdsServer::authenticated_service`]: super::XdsServer::authenticated_service

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::identity::ProxyIdentity;

/// What the server knows of a call before it reads any message.
#[derive(Debug)]
pub struct StreamCall {
    /// The client's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The call's gRPC metadata (HTTP/2 headers), `authorization` among them.
    pub metadata: MetadataMap,
}

/// Decides whether a stream may open. Implemented by the control plane.
pub trait StreamAuthenticator: Send + Sync + 'static {
    /// Authenticates a call before its stream starts. An `Err` is sent to the client as the
    /// stream's status (UNAUTHENTICATED for missing or unknown credentials); the
    /// implementation logs why, naming the peer.
    fn authenticate(&self, call: StreamCall) -> BoxFuture<'static, Result<Arc<dyn StreamCaller>, Status>>;
}

/// An authenticated caller: what it may claim in its first request. `Display` names it in
/// the server's logs (e.g. "node n1", "service account bookinfo/waypoint").
pub trait StreamCaller: Send + Sync + fmt::Debug + fmt::Display {
    /// Checks the identity a proxy claims in its first request's `Node`. An `Err` ends the
    /// stream with that status (PERMISSION_DENIED for a claim the caller may not make)
    /// before anything is sent; the implementation logs why.
    fn authorize(&self, proxy: &ProxyIdentity) -> Result<(), Status>;
}

/// The client's address of a request tonic serves, over plain TCP or TLS (the transport
/// puts its connect info in the request's extensions).
pub fn peer_address(extensions: &tonic::codegen::http::Extensions) -> Option<SocketAddr> {
    if let Some(tcp) = extensions.get::<TcpConnectInfo>() {
        return tcp.remote_addr();
    }
    extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|tls| tls.get_ref().remote_addr())
}
