//! The decision for one connection: DENY first, then ALLOW when any applies.

use std::{fmt, net::IpAddr, sync::Arc};
use weft_hbone::Identity;

use super::{
    matcher::{Action, Origin, Policy},
    store::PolicyStore,
};

/// What the agent knows about a connection when it decides.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAttrs<'a> {
    /// The client's identity from its verified certificate; `None` when it came in
    /// plaintext (not over mTLS).
    pub source_identity: Option<&'a Identity>,
    pub source_ip: IpAddr,
    /// The original destination: the workload's address and the port the client asked for.
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

/// The workload a connection is for, as its record from the control plane describes it.
#[derive(Debug, Clone, Copy)]
pub struct DestinationWorkload<'a, S = String> {
    pub namespace: &'a str,
    /// `Workload.authorization_policies`: the xDS names ("namespace/name") of the
    /// selector-scoped policies (and converted PeerAuthentications) that apply to it.
    pub policies: &'a [S],
}

/// Allowed, or denied and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A refusal, naming the policy for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `namespace/name` of the policy that denied; for [`DenyReason::NoAllowMatched`], the
    /// first of the ALLOW policies that applied.
    pub policy: Arc<str>,
    pub reason: DenyReason,
}

/// Which rule of the decision refused the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// An enforced DENY AuthorizationPolicy matched.
    DenyPolicyMatched,
    /// The workload lists a policy the agent does not hold yet (or any more). The agent
    /// refuses rather than decide without it (ztunnel skips it: it fails open).
    PolicyUnknown,
    /// The destination requires mTLS (PeerAuthentication STRICT, here or on this port) and
    /// the client came in plaintext.
    MtlsRequired,
    /// ALLOW policies apply to the destination and none matched.
    NoAllowMatched {
        /// How many applied.
        allow_policies: usize,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::DenyPolicyMatched => f.write_str("a DENY policy matched"),
            DenyReason::PolicyUnknown => f.write_str(
                "the workload lists this policy but the agent does not hold it (yet); refused until it does",
            ),
            DenyReason::MtlsRequired => f.write_str(
                "mTLS is required (PeerAuthentication STRICT) and the client connected in plaintext",
            ),
            DenyReason::NoAllowMatched { allow_policies: 1 } => f.write_str("the ALLOW policy did not match"),
            DenyReason::NoAllowMatched { allow_policies } => {
                write!(f, "none of the {allow_policies} ALLOW policies matched")
            }
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denied by {}: {}", self.policy, self.reason)
    }
}

/// A policy that did not decide but is to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `namespace/name`; for [`ObservationKind::UnknownPolicy`], the name the workload gave.
    pub policy: Arc<str>,
    pub kind: ObservationKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservationKind {
    /// An AUDIT policy matched.
    Audit,
    /// A dry-run DENY policy matched: enforced, it would have denied.
    DryRunDenyMatched,
    /// A dry-run ALLOW policy matched.
    DryRunAllowMatched,
    /// Dry-run ALLOW policies apply, no enforced one does, and none matched: enforced, they
    /// would have denied. `policy` names the first.
    DryRunNoAllowMatched,
    /// The workload names a policy this store does not hold (the control plane has not
    /// sent it yet, or just removed it). The evaluator skips it, as ztunnel does; the
    /// agent's connection path ([`Evaluation::fail_closed`]) refuses instead.
    UnknownPolicy,
}

/// A decision and what to log besides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    /// Empty (and unallocated) unless an AUDIT or dry-run policy matched or a policy name
    /// was unknown.
    pub observations: Vec<Observation>,
}

impl Evaluation {
    /// The decision, where a policy the workload lists is unknown counting as a refusal:
    /// the agent never lets a connection through on a policy set it only partly holds.
    pub fn fail_closed(&self) -> Decision {
        if let Decision::Allow = self.decision
            && let Some(unknown) = self.observations.iter().find(|o| o.kind == ObservationKind::UnknownPolicy)
        {
            return Decision::Deny(Denial {
                policy: unknown.policy.clone(),
                reason: DenyReason::PolicyUnknown,
            });
        }
        self.decision.clone()
    }
}

impl PolicyStore {
    /// Decides one connection to `dest`. Allocates nothing unless there is something to
    /// observe (an AUDIT or dry-run match, an unknown policy name).
    pub fn evaluate<S: AsRef<str>>(
        &self,
        conn: &ConnectionAttrs<'_>,
        dest: &DestinationWorkload<'_, S>,
    ) -> Evaluation {
        // Rules compare IPv4 blocks with IPv4 addresses: a dual-stack socket reports an IPv4
        // peer as ::ffff:a.b.c.d.
        let conn = ConnectionAttrs {
            source_ip: conn.source_ip.to_canonical(),
            destination_ip: conn.destination_ip.to_canonical(),
            ..*conn
        };
        let mut observations = Vec::new();
        let observe = |observations: &mut Vec<Observation>, policy: &Policy, kind| {
            observations.push(Observation { policy: Arc::clone(policy.key()), kind })
        };

        // DENY and AUDIT first; count the ALLOW policies on the way.
        let mut denial: Option<&Policy> = None;
        let mut first_allow: Option<&Policy> = None;
        let mut allow_policies = 0;
        let mut first_dry_run_allow: Option<&Policy> = None;
        self.visit(dest, |applicable| {
            let policy = match applicable {
                Ok(policy) => policy,
                Err(name) => {
                    let kind = ObservationKind::UnknownPolicy;
                    observations.push(Observation { policy: Arc::from(name), kind });
                    return;
                }
            };
            match (policy.action, policy.dry_run) {
                (Action::Audit, _) if policy.matches(&conn) => {
                    observe(&mut observations, policy, ObservationKind::Audit);
                }
                (Action::Deny, true) if policy.matches(&conn) => {
                    observe(&mut observations, policy, ObservationKind::DryRunDenyMatched);
                }
                (Action::Deny, false) if denial.is_none() && policy.matches(&conn) => denial = Some(policy),
                (Action::Allow, false) => {
                    allow_policies += 1;
                    first_allow = first_allow.or(Some(policy));
                }
                (Action::Allow, true) => first_dry_run_allow = first_dry_run_allow.or(Some(policy)),
                // AUDIT and DENY policies that do not match, and DENYs after the first match.
                _ => {}
            }
        });
        if let Some(policy) = denial {
            let reason = match policy.origin {
                Origin::PeerAuthentication => DenyReason::MtlsRequired,
                Origin::AuthorizationPolicy => DenyReason::DenyPolicyMatched,
            };
            let decision = Decision::Deny(Denial { policy: Arc::clone(policy.key()), reason });
            return Evaluation { decision, observations };
        }
        if first_allow.is_none() && first_dry_run_allow.is_none() {
            return Evaluation { decision: Decision::Allow, observations };
        }

        let mut allowed = false;
        let mut dry_run_allow_matched = false;
        self.visit(dest, |applicable| {
            let Ok(policy) = applicable else { return };
            match (policy.action, policy.dry_run) {
                (Action::Allow, false) if !allowed => allowed = policy.matches(&conn),
                (Action::Allow, true) if policy.matches(&conn) => {
                    dry_run_allow_matched = true;
                    observe(&mut observations, policy, ObservationKind::DryRunAllowMatched);
                }
                _ => {}
            }
        });
        if let (Some(dry), None, false) = (first_dry_run_allow, first_allow, dry_run_allow_matched) {
            // Dry-run ALLOWs only change the outcome where no enforced ALLOW applies.
            observe(&mut observations, dry, ObservationKind::DryRunNoAllowMatched);
        }
        let decision = match first_allow {
            Some(policy) if !allowed => Decision::Deny(Denial {
                policy: Arc::clone(policy.key()),
                reason: DenyReason::NoAllowMatched { allow_policies },
            }),
            _ => Decision::Allow,
        };
        Evaluation { decision, observations }
    }

    /// Calls `f` with each policy that applies to `dest`: mesh-wide ones, those of its
    /// namespace, then those its record names (`Err(name)` for a name the store lacks).
    fn visit<'s, S: AsRef<str>>(
        &'s self,
        dest: &DestinationWorkload<'_, S>,
        mut f: impl FnMut(Result<&'s Policy, &str>),
    ) {
        for policy in self.global().iter().chain(self.in_namespace(dest.namespace)) {
            f(Ok(policy));
        }
        for name in dest.policies {
            let name = name.as_ref();
            f(self.get(name).map(Arc::as_ref).ok_or(name));
        }
    }
}
