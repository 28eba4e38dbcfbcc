//! The agent as an xDS client of weftd (or any control plane speaking Istio's workload
//! API): delta ADS subscriptions to `istio.workload.Address` and
//! `istio.security.Authorization`, turned into the agent's typed model.
//!
//! A resource that cannot be used is refused by name (NACK with the reasons) and whatever
//! was held under that name stays; the others in the same response are applied. While the
//! control plane is away the agent keeps serving with what it has; the client reconnects
//! and resyncs (sending the versions it holds, so only the difference comes back).
//!
//! weftd is reached on its secure port: TLS checked against `--ca-root-cert` (and
//! `--xds-server-name`), the `--token-file` token on every stream. The CA client
//! ([`ca_client`]) reaches weftd's certificate service the same way.

use crate::policy::{Policy, PolicyStore};
use crate::{config::Config, enrollment, localconfig::ConfigStatus, state::Shared};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering, mpsc},
};
use tokio::sync::watch;
use tracing::{info, warn};
use weft_model::AddressTable;
use weft_xds::{
    ca::{CaClient, CaClientConfig, CaClientError},
    client::{AdsClient, ClientConfig, ClientError, ClientState, ClientTls, Update},
    istio::{self, security::Authorization, workload::Address},
    type_url,
};

/// What the agent holds from the control plane, by resource name.
struct Held {
    addresses: AddressTable,
    /// Validated policies by resource name; a refused one leaves what was held.
    policies: HashMap<Arc<str>, Arc<Policy>>,
}

/// TLS settings for an endpoint: https trusts `--ca-root-cert`; http (weftd's plaintext
/// debugging port) has none.
fn tls(endpoint: &str, root: Option<&std::path::Path>, server_name: Option<&String>) -> Option<ClientTls> {
    let root = root.filter(|_| endpoint.starts_with("https://"))?;
    Some(ClientTls { root_cert: root.to_owned(), server_name: server_name.cloned() })
}

/// The client of the control plane's CA, as configured (`--ca-address`, `--ca-root-cert`,
/// `--ca-server-name`, `--token-file`); `None` without a control plane (`--local-config`).
pub fn ca_client(config: &Config) -> Result<Option<CaClient>, CaClientError> {
    let Some(endpoint) = config.ca_address.as_deref().or(config.xds_address.as_deref()) else {
        return Ok(None);
    };
    let tls = tls(endpoint, config.ca_root_cert.as_deref(), config.ca_server_name.as_ref());
    CaClient::new(CaClientConfig::new(endpoint, tls, config.token_file.clone())).map(Some)
}

/// Starts the client of `config.xds_address`. `first_model` flips to true once the first
/// set of addresses has been accepted, so the agent can hold readiness until it knows its
/// pods.
pub fn start(
    agent: &Config,
    shared: Arc<Shared>,
    enrollment: mpsc::Sender<enrollment::Command>,
    status: Arc<Mutex<ConfigStatus>>,
) -> Result<(AdsClient, watch::Receiver<bool>), ClientError> {
    let endpoint = agent.xds_address.as_deref().unwrap_or_default();
    let node = &agent.node;
    let mut config = ClientConfig::new(
        endpoint,
        agent.node_id(),
        vec![type_url::ADDRESS.to_owned(), type_url::AUTHORIZATION.to_owned()],
    );
    config.tls = tls(endpoint, agent.ca_root_cert.as_deref(), agent.xds_server_name.as_ref());
    config.token_file = agent.token_file.clone();
    config.node_name = Some(node.to_owned());
    let (first_tx, first_rx) = watch::channel(false);
    let mut held = Held { addresses: AddressTable::new(&agent.trust_domain), policies: HashMap::new() };
    let handler = move |update: Update| -> Result<(), String> {
        shared.metrics.xds_message(&update.type_url);
        let applied = apply(&mut held, &update, &shared);
        let mut st = status.lock().expect("config status lock");
        if applied.changed {
            st.generation += 1;
            shared.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
            info!(type_url = %update.type_url, upserts = update.upserts.len(), removals = update.removals.len(), "xDS update applied");
            let _ = enrollment.send(enrollment::Command::Reconcile);
            first_tx.send_replace(true);
        }
        if applied.refused.is_empty() {
            st.last_error = None;
            return Ok(());
        }
        let message = applied.refused.join("; ");
        shared.metrics.config_rejected.fetch_add(1, Ordering::Relaxed);
        warn!(type_url = %update.type_url, error = %message, "xDS resources refused (NACK); what was held under those names stays");
        st.last_error = Some(message.clone());
        Err(message)
    };
    Ok((AdsClient::start(config, handler)?, first_rx))
}

/// Counts ADS streams as they end (ztunnel's `istio_xds_connection_terminations_total`):
/// with an error, or not.
pub async fn count_terminations(mut state: watch::Receiver<ClientState>, shared: Arc<Shared>) {
    let mut was_connected = false;
    loop {
        let (connected, failed) = {
            let s = state.borrow_and_update();
            (s.connected, s.last_error.is_some())
        };
        if was_connected && !connected {
            let counter = if failed { &shared.metrics.xds_errors } else { &shared.metrics.xds_completed };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        was_connected = connected;
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// What one update did.
struct Applied {
    /// The model (or the policies) changed: reconcile.
    changed: bool,
    /// Resources refused, each with its name and reason (the NACK's message).
    refused: Vec<String>,
}

/// Applies one update: every resource that can be used is, the others are refused.
fn apply(held: &mut Held, update: &Update, shared: &Shared) -> Applied {
    match update.type_url.as_str() {
        type_url::ADDRESS => {
            let mut decoded = Vec::with_capacity(update.upserts.len());
            let mut refused: Vec<String> = Vec::new();
            for (name, _, any) in &update.upserts {
                match istio::unpack::<Address>(any) {
                    Ok(a) => decoded.push((name.as_str(), a)),
                    Err(e) => refused.push(format!("address {name}: {e}")),
                }
            }
            let upserts = decoded.iter().map(|(n, a)| (*n, a));
            let removals = update.removals.iter().map(String::as_str);
            refused.extend(held.addresses.apply(upserts, removals).iter().map(ToString::to_string));
            shared.state.store(Arc::new(held.addresses.state()));
            Applied { changed: true, refused }
        }
        type_url::AUTHORIZATION => {
            let mut refused = Vec::new();
            for (name, _, any) in &update.upserts {
                let policy = istio::unpack::<Authorization>(any)
                    .map_err(|e| format!("authorization {name}: {e}"))
                    .and_then(|a| Policy::from_proto(name, &a).map_err(|e| e.to_string()));
                match policy {
                    Ok(p) => {
                        held.policies.insert(Arc::from(name.as_str()), Arc::new(p));
                    }
                    Err(e) => refused.push(e),
                }
            }
            for name in &update.removals {
                held.policies.remove(name.as_str());
            }
            let store = PolicyStore::new(held.policies.iter().map(|(n, p)| (n.clone(), p.clone())));
            shared.policies.store(Arc::new(store));
            // Policies change no enrollment: nothing to reconcile.
            Applied { changed: false, refused }
        }
        other => Applied { changed: false, refused: vec![format!("unexpected type {other}")] },
    }
}
