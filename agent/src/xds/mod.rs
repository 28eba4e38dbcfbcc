//! The agent as an xDS client of weftd (or any control plane speaking Istio's workload
//! API): delta ADS subscriptions to `istio.workload.Address` and
//! `istio.security.Authorization`, turned into the agent's model.
//!
//! An update that cannot become a valid model is NACKed with the reason and the last good
//! model stays in force. While the control plane is away the agent keeps serving with
//! what it has; the client reconnects and resyncs (sending the versions it holds, so only
//! the difference comes back).
//!
//! weftd is reached on its secure port: TLS checked against `--ca-root-cert` (and
//! `--xds-server-name`), the `--token-file` token on every stream. The CA client
//! ([`ca_client`]) reaches weftd's certificate service the same way.

mod convert;

use crate::{config::Config, enrollment, localconfig::ConfigStatus, state::Shared};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering, mpsc},
};
use tokio::sync::watch;
use tracing::{info, warn};
use weft_model::MeshIndex;
use weft_xds::{
    ca::{CaClient, CaClientConfig, CaClientError},
    client::{AdsClient, ClientConfig, ClientError, ClientTls, Update},
    istio::{self, security::Authorization, workload::Address},
    type_url,
};

/// What the agent holds from the control plane, by resource name.
#[derive(Default)]
struct Held {
    addresses: HashMap<String, Address>,
    authorizations: HashMap<String, Authorization>,
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
        format!("weft-agent~{node}"),
        vec![type_url::ADDRESS.to_owned(), type_url::AUTHORIZATION.to_owned()],
    );
    config.tls = tls(endpoint, agent.ca_root_cert.as_deref(), agent.xds_server_name.as_ref());
    config.token_file = agent.token_file.clone();
    config.node_name = Some(node.to_owned());
    let (first_tx, first_rx) = watch::channel(false);
    let mut held = Held::default();
    let handler = move |update: Update| -> Result<(), String> {
        let result = apply(&mut held, &update, &shared);
        let mut st = status.lock().expect("config status lock");
        match &result {
            Ok(true) => {
                st.generation += 1;
                st.last_error = None;
                shared.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
                info!(type_url = %update.type_url, upserts = update.upserts.len(), removals = update.removals.len(), "xDS update applied");
                let _ = enrollment.send(enrollment::Command::Reconcile);
                first_tx.send_replace(true);
            }
            Ok(false) => {}
            Err(e) => {
                shared.metrics.config_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(type_url = %update.type_url, error = %e, "xDS update rejected (NACK); keeping the last good model");
                st.last_error = Some(e.clone());
            }
        }
        result.map(drop)
    };
    Ok((AdsClient::start(config, handler)?, first_rx))
}

/// Applies one update; `Ok(true)` when the model changed.
fn apply(held: &mut Held, update: &Update, shared: &Shared) -> Result<bool, String> {
    match update.type_url.as_str() {
        type_url::ADDRESS => {
            // Decode and check everything before touching what we hold: a bad update is
            // rejected whole.
            let mut next = held.addresses.clone();
            for (name, _, any) in &update.upserts {
                let a: Address = istio::unpack(any).map_err(|e| format!("address {name}: {e}"))?;
                next.insert(name.clone(), a);
            }
            for name in &update.removals {
                next.remove(name);
            }
            let mesh = convert::mesh_from_addresses(next.values()).map_err(|e| e.to_string())?;
            shared.mesh.store(Arc::new(MeshIndex::new(mesh)));
            held.addresses = next;
            Ok(true)
        }
        type_url::AUTHORIZATION => {
            for (name, _, any) in &update.upserts {
                let a: Authorization =
                    istio::unpack(any).map_err(|e| format!("authorization {name}: {e}"))?;
                held.authorizations.insert(name.clone(), a);
            }
            for name in &update.removals {
                held.authorizations.remove(name);
            }
            // Enforcement of L4 policy comes with mTLS; held so config_dump can show it.
            Ok(false)
        }
        other => Err(format!("unexpected type {other}")),
    }
}
