//! The waypoint controller (Kubernetes mode only): for every Gateway API Gateway of class
//! `weft-waypoint` or `istio-waypoint` with the one listener `{name: mesh, port: 15008,
//! protocol: HBONE}`, weftd applies the waypoint's ServiceAccount, Deployment (running
//! weft-waypoint) and Service, owned by the Gateway, and reports the Gateway's Accepted
//! and Programmed conditions, as istiod's deployment controller does for Istio ambient.
//!
//! - `classes.rs`: the GatewayClasses weftd creates and accepts.
//! - `objects.rs`: a Gateway read as a [`objects::Waypoint`], and the objects made for it.
//! - `status.rs`: the Gateway's conditions, with istiod's reasons and messages.
//! - `controller.rs`: the kube-rs controller that ties them together.
//!
//! `controlplane/tests/waypoint_controller.rs` checks the objects on the fake API server;
//! `tests/tests/waypoint_deployment.rs` runs the Deployment made here on the test bed (the
//! bed's kubelet, `tests/src/kubelet/`) and sends a namespace's traffic through it.

pub mod classes;
pub mod controller;
pub mod objects;
pub mod status;

pub use controller::{FIELD_MANAGER, WaypointController};
pub use objects::WaypointSettings;
