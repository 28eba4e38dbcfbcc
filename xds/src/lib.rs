//! Weft's xDS: Istio's workload discovery API and Envoy's ADS, server and client.
//!
//! - [`istio`]: Rust types for `istio.workload.Address` and `istio.security.Authorization`,
//!   generated from our own `.proto` text that keeps Istio's package names and field numbers.
//! - [`type_url`]: the resource type URLs Weft serves.
//! - [`server`]: a generic ADS server (state of the world and delta) that serves whole
//!   snapshots handed to it by the control plane, scoped per proxy.
//! - [`client`]: a delta ADS client for agents and `weftctl`, with ACK/NACK and reconnects.
//! - [`ca`]: Istio's certificate service (CSR in, chain out) and a client for it.
//! - [`connect`]: what both clients share: TLS to the control plane and a bearer token.
#![forbid(unsafe_code)]

pub mod ca;
pub mod client;
pub mod connect;
pub mod frame;
pub mod istio;
pub mod server;
pub mod type_url;

/// Envoy's `google.protobuf.Any`, the envelope every xDS resource travels in.
pub use envoy_types::pb::google::protobuf::Any;
