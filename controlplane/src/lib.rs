//! weftd, Weft's control plane.
//!
//! ```text
//!  source/ (file dir, kubernetes) ─SourceEvent─▶ config/ (parse, validate, last good)
//!      ─▶ translate/ (Envoy listeners/routes/clusters; Istio workload addresses)
//!      ─▶ weft-xds server (ADS, state of the world and delta) ─▶ agents, waypoints, Envoy
//!  ca/ (root, CSR service, serving certificate) ◀─ auth/ (who calls, what they may ask)
//!  waypoints/ (Kubernetes mode: waypoint Gateways ─▶ their Deployment, Service, status)
//!  webhook/ (Istio's validating webhook on :15017, the same validation as config/; its
//!           ValidatingWebhookConfiguration's caBundle and failurePolicy)
//! ```

pub mod app;
pub mod auth;
pub mod ca;
pub mod config;
pub mod debug;
pub mod metrics;
pub mod options;
pub mod source;
pub mod translate;
pub mod waypoints;
pub mod webhook;
