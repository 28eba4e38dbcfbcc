//! What both ends of the mesh's mTLS need, and nothing that depends on a binary: SPIFFE
//! identities, workload certificates, the rustls configurations and HBONE itself
//! (HTTP/2 CONNECT over mutual TLS 1.3 to port 15008). The node agent originates and
//! terminates HBONE; the waypoint does both too.
//!
//! Modules, in the order a connection uses them:
//!
//! | module | holds |
//! |---|---|
//! | [`identity`] | [`Identity`]: `spiffe://<td>/ns/<ns>/sa/<sa>` and its other spellings |
//! | [`certs`] | [`WorkloadCertificate`] (chain + key, checked), [`TrustBundle`] (roots), [`new_csr`] (key made here, CSR out) |
//! | [`tls`] | [`tls::server_config`] / [`tls::client_config`] (TLS 1.3, ring, ALPN h2, SPIFFE checks), [`tls::accept`] / [`tls::connect`], typed [`TlsError`] |
//! | [`settings`] | [`Settings`]: HTTP/2 windows, frame size, streams per connection, keepalive, idle timeout (ztunnel's defaults) |
//! | [`client`] | [`Pool`]: pooled, multiplexed HBONE connections keyed by [`PoolKey`]; `connect` gives an [`H2Stream`] |
//! | [`server`] | [`serve_connection`]: TLS + HTTP/2 on one accepted socket, each CONNECT to a handler as an [`HboneRequest`] |
//! | [`stream`] | [`H2Stream`]: a CONNECT stream as `AsyncRead + AsyncBufRead + AsyncWrite` (half-close = END_STREAM) |
//! | `testing` | `TestCa` (feature `testing`): a test CA for this crate's tests and its users' |
//!
//! The path of one outbound connection: the agent calls [`Pool::connect`] with the
//! source's certificate, the destination's expected identity and a `dial` that opens the
//! TCP socket in the source pod's netns; the pool reuses or makes a connection (TLS with
//! [`tls::client_config`], then HTTP/2), sends `CONNECT ip:port` and hands back the
//! stream. On the other side the agent's 15008 listener passes each accepted socket to
//! [`serve_connection`], whose handler checks the authority and policy, connects to the
//! application, and accepts (200) or refuses (403/503).

pub mod certs;
pub mod client;
pub mod identity;
mod keepalive;
pub mod server;
pub mod settings;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use certs::{CertError, PrivateKey, TrustBundle, WorkloadCertificate, new_csr};
pub use client::{ConnectError, Pool, PoolKey};
pub use identity::{Identity, IdentityError};
pub use server::{HboneRequest, ServeError, serve_connection};
pub use settings::Settings;
pub use stream::{H2RecvHalf, H2SendHalf, H2Stream};
pub use tls::TlsError;

/// The port HBONE listens on, on each pod's address.
pub const HBONE_PORT: u16 = 15008;
