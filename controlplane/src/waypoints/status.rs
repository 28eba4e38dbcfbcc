//! The conditions weftd reports on waypoint Gateways and their classes, with the types,
//! reasons and messages istiod uses (pilot/pkg/config/kube/gateway, gatewaycommon).
//!
//! - Accepted: True/`Accepted` "Resource accepted"; False/`ListenersNotValid` for a
//!   listener that is not HBONE on 15008 (istiod accepts the Gateway but refuses the
//!   listener, and deploys it anyway; weftd deploys nothing for it and says so on both);
//!   False/`InvalidParameters` for a name that cannot name its objects; False/`Invalid`
//!   for a waypoint-shaped Gateway whose class no controller handles.
//! - Programmed: True/`Programmed` "Resource programmed, assigned to service(s) HOST:15008"
//!   once the Deployment and Service exist; False/`Pending` while they do not, False/
//!   `Invalid` for a Gateway that was not accepted.
//!
//! A condition keeps its lastTransitionTime while its status stays the same, and nothing is
//! written when nothing changed, so weftd's own status writes do not wake it in a loop.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde::{Deserialize, Serialize};

/// A `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub last_transition_time: String,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: &str, generation: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now(),
        }
    }

    /// Everything but the transition time.
    fn same(&self, other: &Condition) -> bool {
        (&self.type_, &self.status, &self.reason, &self.message, self.observed_generation)
            == (&other.type_, &other.status, &other.reason, &other.message, other.observed_generation)
    }
}

/// Now, as Kubernetes writes times (RFC 3339, whole seconds).
fn now() -> String {
    serde_json::to_value(Time(Timestamp::now()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The conditions in an object's `status.conditions` (unreadable ones left out).
pub fn parse(conditions: &serde_json::Value) -> Vec<Condition> {
    conditions
        .as_array()
        .map(|list| list.iter().filter_map(|c| serde_json::from_value(c.clone()).ok()).collect())
        .unwrap_or_default()
}

/// The conditions to write, or `None` when `existing` already says what `wanted` says. A
/// condition whose status did not change keeps its lastTransitionTime.
pub fn merge(existing: &[Condition], wanted: &[Condition]) -> Option<Vec<Condition>> {
    let unchanged = wanted.iter().all(|w| existing.iter().any(|e| e.same(w)));
    if unchanged {
        return None;
    }
    Some(
        wanted
            .iter()
            .map(|w| match existing.iter().find(|e| e.type_ == w.type_ && e.status == w.status) {
                Some(e) => Condition { last_transition_time: e.last_transition_time.clone(), ..w.clone() },
                None => w.clone(),
            })
            .collect(),
    )
}

/// What weftd knows about a Gateway of a waypoint class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayState {
    /// Well formed and its objects applied, unless `blocked` says why not (an object of
    /// the same name that weftd did not make). `hostname` is the Service's.
    Deployed { hostname: String, blocked: Option<String> },
    /// Not a waypoint: the listeners are wrong.
    BadListeners(String),
    /// Not a waypoint: its name cannot name its objects.
    BadName(String),
    /// Shaped like a waypoint, but its class is none weftd or anyone else handles.
    UnknownClass(String),
}

/// The Gateway's conditions (Accepted, Programmed) for `state`.
pub fn gateway_conditions(state: &GatewayState, generation: i64) -> Vec<Condition> {
    let c = |t, ok, reason, message: &str| Condition::new(t, ok, reason, message, generation);
    let not_programmed =
        || c("Programmed", false, "Invalid", "The Gateway was not accepted; nothing is deployed for it");
    match state {
        GatewayState::Deployed { hostname, blocked } => vec![
            c("Accepted", true, "Accepted", "Resource accepted"),
            match blocked {
                None => c(
                    "Programmed",
                    true,
                    "Programmed",
                    &format!("Resource programmed, assigned to service(s) {hostname}:15008"),
                ),
                Some(why) => c("Programmed", false, "Pending", why),
            },
        ],
        GatewayState::BadListeners(message) => {
            vec![c("Accepted", false, "ListenersNotValid", message), not_programmed()]
        }
        GatewayState::BadName(message) => {
            vec![c("Accepted", false, "InvalidParameters", message), not_programmed()]
        }
        GatewayState::UnknownClass(message) => {
            vec![c("Accepted", false, "Invalid", message), not_programmed()]
        }
    }
}

/// The status of each listener, as istiod reports it for a waypoint's `mesh` listener.
pub fn listener_status(
    listeners: &serde_json::Value,
    state: &GatewayState,
    generation: i64,
) -> serde_json::Value {
    let listeners = listeners.as_array().map(Vec::as_slice).unwrap_or_default();
    let accepted = match state {
        GatewayState::BadListeners(message) => {
            Condition::new("Accepted", false, "UnsupportedProtocol", message, generation)
        }
        _ => Condition::new("Accepted", true, "Accepted", "No errors found", generation),
    };
    let programmed = match state {
        GatewayState::BadListeners(_) => {
            Condition::new("Programmed", false, "Invalid", "The listener was not accepted", generation)
        }
        _ => Condition::new("Programmed", true, "Programmed", "No errors found", generation),
    };
    let resolved = Condition::new("ResolvedRefs", true, "ResolvedRefs", "No errors found", generation);
    let conflicted = Condition::new("Conflicted", false, "NoConflicts", "No errors found", generation);
    serde_json::Value::Array(
        listeners
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l["name"],
                    "attachedRoutes": 0,
                    "supportedKinds": [],
                    "conditions": [&accepted, &conflicted, &programmed, &resolved],
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let state = GatewayState::Deployed { hostname: "w.ns.svc.cluster.local".into(), blocked: None };
        let first = merge(&[], &gateway_conditions(&state, 1)).unwrap();
        assert_eq!(
            first[1].message,
            "Resource programmed, assigned to service(s) w.ns.svc.cluster.local:15008"
        );
        assert!(first[0].last_transition_time.ends_with('Z'), "{}", first[0].last_transition_time);
        assert_eq!(merge(&first, &gateway_conditions(&state, 1)), None);
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut old = gateway_conditions(
            &GatewayState::Deployed { hostname: "h".into(), blocked: Some("x".into()) },
            1,
        );
        for c in &mut old {
            c.last_transition_time = "2020-01-01T00:00:00Z".into();
        }
        let new = merge(
            &old,
            &gateway_conditions(&GatewayState::Deployed { hostname: "h".into(), blocked: None }, 1),
        )
        .unwrap();
        assert_eq!(new[0].last_transition_time, "2020-01-01T00:00:00Z", "Accepted stayed True");
        assert_ne!(new[1].last_transition_time, "2020-01-01T00:00:00Z", "Programmed became True");
        assert_eq!((new[1].status.as_str(), new[1].reason.as_str()), ("True", "Programmed"));
    }

    #[test]
    fn bad_gateways_say_why() {
        let c = gateway_conditions(&GatewayState::BadListeners("Expected a single listener".into()), 2);
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str(), c[0].observed_generation),
            ("False", "ListenersNotValid", 2)
        );
        assert_eq!((c[1].status.as_str(), c[1].reason.as_str()), ("False", "Invalid"));
        let listeners = serde_json::json!([{ "name": "mesh", "port": 80, "protocol": "HTTP" }]);
        let status = listener_status(&listeners, &GatewayState::BadListeners("m".into()), 2);
        assert_eq!(status[0]["conditions"][0]["reason"], "UnsupportedProtocol");
        assert_eq!(status[0]["name"], "mesh");
    }
}
