//! The way in of an ingress or egress gateway: a plain TCP socket per `gateway_<port>`
//! listener (bound and closed as LDS adds and removes them, by [`Sockets`]), HTTP/1.1 or
//! HTTP/2 with prior knowledge on each connection, then the HTTP chain of the listener —
//! the request path of `proxy.rs`, as for a CONNECT that reached a waypoint's HTTP chain.
//!
//! ```text
//!  client ─TCP─▶ gateway_<port> socket ─▶ chain (snapshot.gateways[local address])
//!      ─▶ proxy.rs: route, fault, forward ─HBONE (the gateway's identity)─▶ endpoint pod
//! ```
//!
//! The client has no mesh identity: routing sees no principal, and the metrics report as
//! Istio's gateways do (`reporter="source"`, the gateway as the source; `metrics.rs`).

use crate::{
    inbound::{accept, stopped},
    metrics::Reporter,
    proxy::{self, Downstream, Source},
    state::Shared,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{Instrument, debug, info, info_span};

/// The sockets of the gateway listeners held, by local address.
pub struct Sockets {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    bound: HashMap<SocketAddr, Bound>,
}

/// One bound socket and its accept loop, which stops (closing the socket) when this is
/// dropped. Connections already accepted go on.
struct Bound {
    /// The listener it was bound for.
    owner: String,
    accept: JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Sockets {
    pub fn new(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Sockets {
        Sockets { shared, shutdown, bound: HashMap::new() }
    }

    /// Makes sure `address` is bound for listener `name`: a socket already open there
    /// stays (its connections and accept queue are not disturbed by a changed listener);
    /// otherwise it is bound now. Fails, with the reason, when the address is another
    /// held listener's or cannot be bound; `leaving` are listeners going away in the
    /// same update, whose addresses may be taken over. Must run inside the runtime.
    pub fn bind(&mut self, name: &str, address: SocketAddr, leaving: &[String]) -> Result<(), String> {
        if let Some(bound) = self.bound.get_mut(&address) {
            if bound.owner != name && !leaving.contains(&bound.owner) {
                return Err(format!("{address} is already served by listener {}", bound.owner));
            }
            bound.owner = name.to_owned();
            return Ok(());
        }
        let socket = std::net::TcpListener::bind(address)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(TcpListener::from_std)
            .map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        " (a port below 1024 needs CAP_NET_BIND_SERVICE or the sysctl \
                         net.ipv4.ip_unprivileged_port_start; the gateway chart's Service maps 80 \
                         and 443 to 8080 and 8443 for this)"
                    }
                    std::io::ErrorKind::AddrInUse => " (another listener or process holds it)",
                    _ => "",
                };
                format!("cannot bind {address}: {e}{hint}")
            })?;
        info!(listener = name, %address, "gateway listener bound");
        let accept = tokio::spawn(serve(socket, address, self.shared.clone(), self.shutdown.clone()));
        self.bound.insert(address, Bound { owner: name.to_owned(), accept });
        Ok(())
    }

    /// Closes every socket whose address is not in `keep` (address → listener).
    pub fn retain(&mut self, keep: &BTreeMap<SocketAddr, String>) {
        self.bound.retain(|address, bound| {
            let stays = keep.contains_key(address);
            if !stays {
                info!(listener = %bound.owner, %address, "gateway listener closed");
            }
            stays
        });
    }
}

/// Accepts connections on a gateway listener's socket until shutdown (or until its
/// [`Bound`] is dropped).
async fn serve(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let mut next_id = 0u64;
    while let Some((tcp, peer)) = accept(&listener, &shutdown, "gateway").await {
        next_id += 1;
        let span = info_span!("gateway", conn = next_id, %local, %peer);
        tokio::spawn(connection(tcp, peer, local, shared.clone(), shutdown.clone()).instrument(span));
    }
}

/// One downstream connection: the chain of its listener as it is now, then HTTP until the
/// client or shutdown ends it (in-flight requests finish: graceful shutdown).
pub(crate) async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(chain) = shared.snapshot.load().gateways.get(&local).cloned() else {
        debug!("the listener is gone; closing");
        return;
    };
    let _ = tcp.set_nodelay(true);
    let source = Source { identity: None, principal: None, addr: peer, authority: local };
    let ctx = Arc::new(Downstream { shared, chain: chain.clone(), source, reporter: Reporter::Gateway });
    let service = hyper::service::service_fn(move |req| proxy::serve(ctx.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = stopped(&mut shutdown) => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        debug!(%error, chain = chain.name(), "downstream HTTP connection ended");
    }
}
