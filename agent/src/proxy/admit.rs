//! What both inbound paths (HBONE and plaintext) check before the application is tried:
//! the destination is this pod's and not the agent's own (`plan::inbound`), and policy
//! allows the connection (decided fail closed, observations logged, a refusal counted
//! where Istio's dashboards look for it). Admitted, the connection gets its metrics series.

use super::{ProxyError, plan};
use crate::{
    metrics::{ByPtr, Reporter, ResponseFlags, SeriesKey, TcpCounters},
    policy::{ConnectionAttrs, Decision, DestinationWorkload, ObservationKind},
    state::{InPod, Shared},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
};
use tracing::{info, warn};
use weft_hbone::Identity;
use weft_model::Workload;

/// Admits a connection from `client_ip` to `dst` in `pod`; `identity` is what the client
/// proved over mTLS (None in plaintext). Refusals are [`ProxyError::Refused`] (not this
/// pod's address, or the agent's own port) and [`ProxyError::Denied`] (policy).
pub(super) fn admit(
    shared: &Shared,
    pod: &InPod,
    dst: SocketAddr,
    client_ip: IpAddr,
    identity: Option<&Arc<Identity>>,
) -> Result<Arc<TcpCounters>, ProxyError> {
    let state = shared.state.load();
    let this = state.workload_by_ip(pod.ip.into()).unwrap_or(&pod.workload);
    plan::inbound(dst, this)?;
    let key = SeriesKey {
        // The workload at the client's address is the source only if it runs as the
        // identity the client proved (or, in plaintext, there is nothing to prove).
        source: state
            .workload_by_ip(client_ip)
            .filter(|w| identity.is_none_or(|id| w.identity == **id))
            .cloned()
            .map(ByPtr),
        source_identity: identity.cloned(),
        destination: Some(ByPtr(this.clone())),
        service: state
            .services_of(this)
            .find(|s| s.ports.iter().any(|p| p.target_port == dst.port()))
            .cloned()
            .map(ByPtr),
        destination_ip: Some(dst.ip()),
        ..SeriesKey::new(Reporter::Destination, identity.is_some())
    };
    let conn = ConnectionAttrs {
        source_identity: identity.map(|id| &**id),
        source_ip: client_ip,
        destination_ip: dst.ip(),
        destination_port: dst.port(),
    };
    authorize(shared, &conn, this, &key)?;
    Ok(shared.metrics.series(key))
}

/// Whether `conn` may reach `destination`. A refusal is logged with the policy and the
/// reason and counted in `istio_tcp_connections_failed_total{response_flags="DENY"}`
/// under the connection's series `key`.
fn authorize(
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
