//! Weft's end-to-end test support.
//!
//! - [`bed`]: a test bed of nodes and pods as network namespaces on this machine, with
//!   processes spawned into them ([`TestBed`], [`Node`], [`Pod`], [`Proc`]).
//! - [`testapp`]: the `weft-testapp` binary's logic, a small versioned TCP app (echo, sink,
//!   ping-pong, hello, HTTP) and its clients, used by the end-to-end tests, the benchmarks and
//!   the demo.
//!
//! - [`agent`]: a `weft-agent` process on a bed node and its admin endpoint.
//! - [`logs`]: what an agent or weftd logged: JSON lines by field, text lines by fragment.
//! - [`meshconfig`]: the agents' `--local-config` file, written from the bed's pods.
//! - [`kubelet`]: a pod spec's containers run in a bed pod as a kubelet runs them (env,
//!   volumes, a root filesystem of their own, probes), and the Pod a Deployment makes.
//! - [`poll`]: waiting for what another process does, by polling a check.
//! - [`scenario`]: a bed with its config, the test app as server and client.
//! - [`wire`]: a tcpdump capture on a bed interface and what crossed it (TCP flows, TLS).
//! - [`certs`] and [`probe`]: certificates a test mints (weftd's CA or another) and
//!   `weft-hbone-probe`, an HBONE client or server presenting them.
//! - [`envoy`] and [`waypoint`]: a real Envoy, and a waypoint of either kind (Envoy or
//!   `weft-waypoint`) fed by weftd.
//! - [`route_conformance`]: weftd's waypoint translation of some YAML run by a real Envoy
//!   (static config) and by weft-waypoint (in process, over ADS and HBONE) against local
//!   test backends (no network namespaces).
//! - [`benchmark`]: `cargo xtask bench`'s data-path measurements; [`wpbench`]: its waypoint
//!   benchmark (Envoy against weft-waypoint); [`demo`]: `cargo xtask demo`.
//!
//! The tiers of Weft's tests and how to run them are in `tests/README.md`.

pub mod agent;
pub mod bed;
pub mod benchmark;
pub mod benchmarks_md;
pub mod bins;
pub mod certs;
pub mod cpbench;
pub mod demo;
pub mod envoy;
pub mod kubeapi;
pub mod kubelet;
pub mod logs;
pub mod meshconfig;
pub mod metricsbench;
pub mod poll;
pub mod probe;
pub mod prometheus;
pub mod route_conformance;
pub mod scenario;
pub mod testapp;
pub mod waypoint;
pub mod weftd;
pub mod wire;
pub mod wpbench;

pub use bed::{Node, Pod, Proc, Signal, TestBed};
