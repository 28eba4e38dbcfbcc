//! What both ends of the mesh's mTLS need, and nothing that depends on a binary: SPIFFE
//! identities, workload certificates, the rustls configurations and HBONE itself
//! (HTTP/2 CONNECT over mutual TLS 1.3 to port 15008). The node agent originates and
//! terminates HBONE; the waypoint does both too.

pub mod identity;

pub use identity::{Identity, IdentityError};
