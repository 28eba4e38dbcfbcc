//! `weft-agent`: the per-node agent of the Weft mesh.
//!
//! It loads eBPF programs that steer enrolled pods' TCP traffic into sockets it opens
//! inside each pod's network namespace, and carries that traffic: outbound to the
//! destination (a service VIP resolved to an endpoint), inbound to the application.
//! See ARCHITECTURE.md for the picture; `app.rs` wires the pieces.

pub mod admin;
pub mod app;
pub mod config;
pub mod datapath;
pub mod drain;
pub mod enrollment;
pub mod identity;
pub mod inpod;
pub mod localconfig;
pub mod metrics;
pub mod netns;
pub mod podnet;
pub mod policy;
pub mod proxy;
pub mod readiness;
pub mod state;
pub mod xds;
