//! L4 authorization: whether a connection may reach a workload on this node.
//!
//! Pure code, no I/O, as ztunnel's `rbac.rs` and `state::assert_rbac`: the control plane's
//! `istio.security.Authorization` resources become typed, validated [`Policy`]s
//! ([`Policy::from_proto`]); a [`PolicyStore`] indexes them once per update (mesh-wide, per
//! namespace, by name); [`PolicyStore::evaluate`] decides one connection from its
//! [`ConnectionAttrs`] and its [`DestinationWorkload`].
//!
//! PeerAuthentication arrives in the same form (istiod's conversion, which weftd follows): a
//! STRICT destination lists the DENY policy `istio-system/istio_converted_static_strict`,
//! which matches any connection without a client identity, and port-level exceptions come as
//! `converted_peer_authentication_<name>` DENY policies. The evaluator needs nothing special
//! for them; it only names the reason ([`DenyReason::MtlsRequired`]).
//!
//! The decision, as Istio documents it and ztunnel implements it:
//! 1. an enforced DENY policy that matches denies;
//! 2. otherwise, with no enforced ALLOW policy applying, the connection is allowed;
//! 3. otherwise it is allowed only if an enforced ALLOW policy matches.
//!
//! AUDIT policies (a Weft extension at L4) and dry-run policies never change the decision;
//! their matches come back as [`Observation`]s for the caller to log.

mod evaluate;
mod matcher;
mod proto;
mod store;

#[cfg(test)]
mod tests;

pub use evaluate::{
    ConnectionAttrs, Decision, Denial, DenyReason, DestinationWorkload, Evaluation, Observation,
    ObservationKind,
};
pub use matcher::{Action, Origin, Policy, Scope};
pub use proto::PolicyError;
pub use store::PolicyStore;

/// Name of the DENY policy istiod (and weftd) sends for PeerAuthentication STRICT, in the
/// root namespace; `_` keeps it from colliding with a Kubernetes object's name.
pub const STATIC_STRICT_POLICY: &str = "istio_converted_static_strict";

/// Prefix of the policies converted from a workload PeerAuthentication with port-level modes.
pub const CONVERTED_PEER_AUTHENTICATION_PREFIX: &str = "converted_peer_authentication_";
