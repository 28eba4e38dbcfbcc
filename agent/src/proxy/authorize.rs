//! The policy step both inbound paths take: decide (fail closed), log what the policies
//! observed, and count a refusal where Istio's dashboards look for it.

use super::ProxyError;
use crate::{
    metrics::{ResponseFlags, SeriesKey},
    policy::{ConnectionAttrs, Decision, DestinationWorkload, ObservationKind},
    state::Shared,
};
use std::sync::atomic::Ordering::Relaxed;
use tracing::{info, warn};
use weft_model::Workload;

/// Whether `conn` may reach `destination`. A refusal is logged with the policy and the
/// reason and counted in `istio_tcp_connections_failed_total{response_flags="DENY"}`
/// under the connection's series `key`.
pub(super) fn authorize(
    shared: &Shared,
    conn: &ConnectionAttrs<'_>,
    destination: &Workload,
    key: &SeriesKey,
) -> Result<(), ProxyError> {
    let policies = shared.policies.load();
    let dest = DestinationWorkload {
        namespace: &destination.namespace,
        policies: &destination.authorization_policies,
    };
    let evaluation = policies.evaluate(conn, &dest);
    for o in &evaluation.observations {
        let what = match o.kind {
            ObservationKind::Audit => "audit policy matched",
            ObservationKind::DryRunDenyMatched => "dry-run DENY policy matched (would deny)",
            ObservationKind::DryRunAllowMatched => "dry-run ALLOW policy matched",
            ObservationKind::DryRunNoAllowMatched => "dry-run ALLOW policies did not match (would deny)",
            ObservationKind::UnknownPolicy => "workload lists a policy the agent does not hold",
        };
        info!(
            target: "access",
            policy = %o.policy,
            src.addr = %conn.source_ip,
            src.identity = conn.source_identity.map(tracing::field::display),
            dst.addr = %std::net::SocketAddr::new(conn.destination_ip, conn.destination_port),
            dst.workload = %destination.name,
            "{what}"
        );
    }
    match evaluation.fail_closed() {
        Decision::Allow => Ok(()),
        Decision::Deny(denial) => {
            let key = SeriesKey { response_flags: ResponseFlags::Deny, ..key.clone() };
            shared.metrics.series(key).failed.fetch_add(1, Relaxed);
            warn!(
                target: "access",
                policy = %denial.policy,
                reason = %denial.reason,
                src.addr = %conn.source_ip,
                src.identity = conn.source_identity.map(tracing::field::display),
                dst.addr = %std::net::SocketAddr::new(conn.destination_ip, conn.destination_port),
                dst.workload = %destination.name,
                dst.namespace = %destination.namespace,
                "connection denied by policy"
            );
            Err(ProxyError::Denied(denial))
        }
    }
}
