//! HTTP/2 PING keepalive, as ztunnel's `do_ping_pong`: a peer that stops answering (a node
//! gone without a FIN or RST) is noticed within interval + timeout, not at the next write.

use std::{fmt, time::Duration};

/// Why the keepalive gave up on the peer.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout(Duration),
    Ping(h2::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(t) => write!(f, "no PING answer within {t:?}"),
            Failure::Ping(e) => write!(f, "PING failed: {e}"),
        }
    }
}

/// Pings every `interval` and returns when an answer takes longer than `timeout`; never
/// returns if the connection gave no PingPong handle.
pub(crate) async fn run(ping: Option<h2::PingPong>, interval: Duration, timeout: Duration) -> Failure {
    let Some(mut ping) = ping else { return std::future::pending().await };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return Failure::Ping(e),
            Err(_) => return Failure::Timeout(timeout),
        }
    }
}
