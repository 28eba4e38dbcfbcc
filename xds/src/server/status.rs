//! Who is connected and how far each proxy got: the registry every stream writes its
//! per-type bookkeeping into, and the operator views built from it (`weftctl proxy-status`,
//! `weftctl config-dump`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Serialize, Serializer};

use super::holding::Holding;
use super::identity::ProxyIdentity;
use crate::Any;

/// Which ADS flavour a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `StreamAggregatedResources`: every response carries the full set of a type.
    StateOfTheWorld,
    /// `DeltaAggregatedResources`: responses carry changes and removals.
    Delta,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::StateOfTheWorld => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// How a proxy stands with one resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SyncState {
    /// The proxy acknowledged the latest version of its view of this type.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Something was sent but not acknowledged (in flight or NACKed), or the proxy's view
    /// changed after what it acknowledged.
    #[serde(rename = "STALE")]
    Stale,
    /// The proxy subscribed but nothing has been sent yet (no snapshot published).
    #[serde(rename = "NOT SENT")]
    NotSent,
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT SENT",
        })
    }
}

/// A rejected push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The version the proxy rejected.
    pub version: String,
    /// The proxy's `error_detail.message`.
    pub message: String,
    /// When the NACK arrived.
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
}

/// One connected stream, as `weftctl proxy-status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    /// Server-assigned id of the stream; a proxy that reconnects gets a new one.
    pub connection_id: u64,
    /// `node.id`.
    pub proxy_id: String,
    /// `NODE_NAME` metadata.
    pub node_name: Option<String>,
    /// `NAMESPACE` metadata, or the namespace in an Istio-style id.
    pub namespace: Option<String>,
    pub protocol: Protocol,
    #[serde(serialize_with = "unix_seconds")]
    pub connected_since: SystemTime,
    /// One entry per subscribed type, sorted by type URL.
    pub types: Vec<TypeStatus>,
}

/// A proxy's standing with one resource type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    pub type_url: String,
    pub state: SyncState,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Version of the last response the proxy acknowledged.
    pub acked_version: Option<String>,
    /// Version of the proxy's view of this type in the current snapshot: the snapshot
    /// version at which it last changed for this proxy.
    pub current_version: Option<String>,
    /// The most recent rejection, kept after later ACKs so operators can see it happened.
    pub last_nack: Option<Nack>,
    /// Resources the proxy holds (delta) or was last sent (SotW).
    pub resources: usize,
}

/// What was last sent to one proxy (`weftctl config-dump`).
#[derive(Clone, Debug, Serialize)]
pub struct ConfigDump {
    pub connection_id: u64,
    pub proxy_id: String,
    pub protocol: Protocol,
    pub types: Vec<TypeDump>,
}

/// One type's resources in a [`ConfigDump`].
#[derive(Clone, Debug, Serialize)]
pub struct TypeDump {
    pub type_url: String,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    /// Sorted by name.
    pub resources: Vec<DumpedResource>,
}

/// One resource in a [`ConfigDump`].
#[derive(Clone, Debug, Serialize)]
pub struct DumpedResource {
    pub name: String,
    pub version: String,
    /// The resource as sent; `None` when the proxy reported holding this version when it
    /// connected (delta `initial_resource_versions`) and the server never had to send it.
    #[serde(skip)]
    pub resource: Option<Any>,
    /// `resource.value`, base64 (standard alphabet), for JSON output.
    pub value_base64: Option<String>,
}

/// Registry of live streams. Each stream owns its entry for its lifetime.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
}

/// One live stream's identity and per-type bookkeeping.
#[derive(Debug)]
pub(crate) struct Connection {
    pub id: u64,
    pub identity: ProxyIdentity,
    pub protocol: Protocol,
    pub connected_since: SystemTime,
    types: Mutex<BTreeMap<String, TypeRecord>>,
}

/// Per-type bookkeeping shared by the protocol code (which writes it) and the status views.
#[derive(Debug, Default)]
pub(crate) struct TypeRecord {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub current_version: Option<String>,
    pub last_nack: Option<Nack>,
    /// SotW: the set last sent. Delta: what the proxy holds, assuming in-flight responses
    /// get applied (reverted on NACK).
    pub held: Holding,
}

impl TypeRecord {
    /// Records a NACK of the last sent version; the acked version stays where it was.
    pub fn nack(&mut self, message: String) {
        let version = self.sent_version.clone().unwrap_or_default();
        self.last_nack = Some(Nack { version, message, at: SystemTime::now() });
    }

    fn state(&self) -> SyncState {
        match &self.sent_version {
            None => SyncState::NotSent,
            Some(sent) => {
                let acked = self.acked_version.as_ref() == Some(sent);
                let current = self.current_version.as_ref().is_none_or(|c| c == sent);
                if acked && current { SyncState::Synced } else { SyncState::Stale }
            }
        }
    }
}

impl Connection {
    /// Locks the per-type records. Held only while handling one request or snapshot, never
    /// across an await. A panic elsewhere must not take status reporting down with it, hence
    /// the poison recovery.
    pub fn types(&self) -> MutexGuard<'_, BTreeMap<String, TypeRecord>> {
        self.types.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> ProxyStatus {
        let types = self
            .types()
            .iter()
            .map(|(type_url, r)| TypeStatus {
                type_url: type_url.clone(),
                state: r.state(),
                sent_version: r.sent_version.clone(),
                acked_version: r.acked_version.clone(),
                current_version: r.current_version.clone(),
                last_nack: r.last_nack.clone(),
                resources: r.held.len(),
            })
            .collect();
        ProxyStatus {
            connection_id: self.id,
            proxy_id: self.identity.id.clone(),
            node_name: self.identity.node_name.clone(),
            namespace: self.identity.namespace.clone(),
            protocol: self.protocol,
            connected_since: self.connected_since,
            types,
        }
    }

    fn config_dump(&self) -> ConfigDump {
        let b64 = base64::engine::general_purpose::STANDARD;
        let types = self
            .types()
            .iter()
            .map(|(type_url, r)| TypeDump {
                type_url: type_url.clone(),
                sent_version: r.sent_version.clone(),
                acked_version: r.acked_version.clone(),
                resources: r
                    .held
                    .list(type_url, &self.identity)
                    .into_iter()
                    .map(|(name, held)| {
                        let resource = held.resource().map(|r| r.resource.clone());
                        DumpedResource {
                            name: name.to_string(),
                            version: held.version().to_owned(),
                            value_base64: resource.as_ref().map(|a| b64.encode(&a.value)),
                            resource,
                        }
                    })
                    .collect(),
            })
            .collect();
        ConfigDump {
            connection_id: self.id,
            proxy_id: self.identity.id.clone(),
            protocol: self.protocol,
            types,
        }
    }
}

/// Keeps a stream registered while alive; deregisters it on drop, however the stream ends.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Registration {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.connection.id);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(self: &Arc<Self>, identity: ProxyIdentity, protocol: Protocol) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connection = Arc::new(Connection {
            id,
            identity,
            protocol,
            connected_since: SystemTime::now(),
            types: Mutex::default(),
        });
        self.lock().insert(id, Arc::clone(&connection));
        Registration { registry: Arc::clone(self), connection }
    }

    /// Snapshot of the connection list; the registry lock is not held while each
    /// connection's own lock is taken.
    fn connections(&self) -> Vec<Arc<Connection>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn status(&self) -> Vec<ProxyStatus> {
        self.connections().iter().map(|c| c.status()).collect()
    }

    /// The newest stream of the proxy with this `node.id`.
    pub fn config_dump(&self, proxy_id: &str) -> Option<ConfigDump> {
        self.connections().iter().rev().find(|c| c.identity.id == proxy_id).map(|c| c.config_dump())
    }

    /// Connected streams by the proxies' `ISTIO_VERSION` (`unknown` without one).
    pub fn by_version(&self) -> Vec<(String, u64)> {
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for c in self.connections() {
            *counts.entry(c.identity.version.clone().unwrap_or_else(|| "unknown".into())).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    pub fn proxy_ids(&self) -> Vec<String> {
        self.connections().iter().map(|c| c.identity.id.clone()).collect()
    }
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    s.serialize_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sent: Option<&str>, acked: Option<&str>, current: Option<&str>) -> TypeRecord {
        TypeRecord {
            sent_version: sent.map(Into::into),
            acked_version: acked.map(Into::into),
            current_version: current.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn sync_states() {
        assert_eq!(record(None, None, None).state(), SyncState::NotSent);
        assert_eq!(record(None, None, Some("v1")).state(), SyncState::NotSent);
        assert_eq!(record(Some("v1"), None, Some("v1")).state(), SyncState::Stale);
        assert_eq!(record(Some("v1"), Some("v1"), Some("v1")).state(), SyncState::Synced);
        // NACKed v2: acked stays v1.
        assert_eq!(record(Some("v2"), Some("v1"), Some("v2")).state(), SyncState::Stale);
        // Acked, but the view moved on while a push was held back.
        assert_eq!(record(Some("v1"), Some("v1"), Some("v2")).state(), SyncState::Stale);
        assert_eq!(SyncState::NotSent.to_string(), "NOT SENT");
    }
}
