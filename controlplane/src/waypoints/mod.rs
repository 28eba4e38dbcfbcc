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

pub mod classes;
pub mod controller;
pub mod objects;
pub mod status;

pub use controller::{FIELD_MANAGER, WaypointController};
pub use objects::WaypointSettings;
