//! Istio's validating admission webhook, served by weftd as by istiod.
//!
//! ```text
//!  API server ─POST /validate (TLS, :15017 behind Service weftd:443)─▶ server.rs
//!      └─▶ admission.rs: AdmissionReview ─▶ config::parse::check (what weftd applies when
//!          it reads the object) ─▶ allowed, or denied naming the object, field and reason
//!  controller.rs (Kubernetes mode): ValidatingWebhookConfiguration weft-validator-<ns>
//!      ◀─ caBundle = weftd's root; failurePolicy Ignore ─▶ Fail once the webhook answers
//! ```

pub mod admission;
pub mod controller;
pub mod server;

pub use controller::{WebhookController, WebhookSettings};

#[cfg(test)]
mod tests;
