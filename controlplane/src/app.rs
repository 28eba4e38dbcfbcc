//! Wires weftd: a source → the config store → translation → the xDS server; the CA; the
//! secure port (ADS and the CA over TLS, callers authenticated); the debug endpoints.
//!
//! ```text
//!  :15012 TLS ─ tonic ─┬─ IstioCertificateService ─┐
//!                      └─ ADS (authenticated)  ────┴─ auth::Authenticator ◀─ config view (pods)
//!  :15010 plaintext ADS, unauthenticated, only with --plaintext-xds-addr
//!  :15014 debug HTTP (loopback)
//!  :15015 Prometheus metrics (istiod's names; --metrics-addr)
//!  :15017 TLS ─ POST /validate, Istio's validating webhook (webhook/; --webhook-addr)
//! ```

use crate::{
    auth::{Authenticator, Method, XdsAuth, tokenreview::TokenReviewer, tokens::TokenFile},
    ca::{self, CertificateAuthority, RootSource, Validity, service::CaService, serving},
    config::{ConfigStore, SourceId, diagnostic::Diagnostic},
    debug::{self, DebugView},
    metrics::ControlPlaneMetrics,
    options::Options,
    source::{SourceEvent, file::FileSource, kube::KubeSource},
    translate,
    waypoints::{WaypointController, WaypointSettings},
    webhook::{self, WebhookController, WebhookSettings},
};
use anyhow::Context;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use weft_xds::server::{ServerConfig, XdsServer};

/// How many source events are applied as one batch before translating.
const BATCH: usize = 4096;

pub async fn run(options: Options) -> anyhow::Result<()> {
    info!(options = %serde_json::to_string(&options)?, "starting weftd");
    let xds = XdsServer::new(ServerConfig { debounce: options.debounce, ..Default::default() });
    let mut translator = translate::Translator::new(translate::Options {
        trust_domain: options.trust_domain.clone(),
        root_namespace: options.root_namespace.clone(),
        ..Default::default()
    });

    let (tx, mut rx) = mpsc::channel::<SourceEvent>(BATCH);
    let (source_id, kube) = match &options.config_dir {
        Some(dir) => {
            let source = FileSource::new(dir).with_context(|| format!("reading {}", dir.display()))?;
            tokio::spawn(source.run(tx));
            (SourceId::File, None)
        }
        None => {
            let source = match &options.kubernetes_url {
                Some(url) => {
                    KubeSource::from_url(url).with_context(|| format!("watching Kubernetes at {url}"))?
                }
                None => KubeSource::try_default().await.context("connecting to Kubernetes")?,
            };
            let client = source.client();
            tokio::spawn(source.run(tx));
            (SourceId::Kubernetes, Some(client))
        }
    };

    // The CA, and the root where agents read it.
    let root_source = match (&options.cacerts_dir, &options.ca_dir, &kube) {
        (Some(dir), _, _) => RootSource::PlugIn(dir.clone()),
        (None, Some(dir), _) => RootSource::Directory(dir.clone()),
        (None, None, Some(client)) => {
            RootSource::Secret { client: client.clone(), namespace: options.namespace.clone() }
        }
        (None, None, None) => anyhow::bail!("no place for the CA's root (options were not validated)"),
    };
    let validity = Validity { default: options.workload_cert_ttl, max: options.max_workload_cert_ttl };
    let authority = Arc::new(
        CertificateAuthority::load(&root_source, validity, &options.trust_domain)
            .await
            .context("starting the CA")?,
    );
    if let Some(client) = &kube
        && let Err(e) =
            ca::secret::publish_root(client, &options.namespace, authority.material().roots_pem()).await
    {
        // Agents that already have the root keep working; new ones wait for it.
        error!(error = %e, "cannot publish the root certificate for agents");
    }

    // Kubernetes mode: waypoint Gateways become their Deployment and Service.
    if let Some(client) = &kube {
        let settings = WaypointSettings {
            image: options.waypoint_image.clone(),
            xds_address: options.waypoint_xds_address.clone().unwrap_or_default(),
            trust_domain: options.trust_domain.clone(),
            root_config_map: ca::secret::ROOT_CONFIG_MAP.to_owned(),
            token_audience: options.token_audiences.first().cloned().unwrap_or_else(|| "istio-ca".into()),
        };
        let roots = authority.material().roots_pem().to_owned();
        tokio::spawn(WaypointController::new(client.clone(), settings, roots).run());
    }

    // Who may call: the token file, or TokenReview; decisions read the pods in force.
    let (config_tx, config_rx) = watch::channel(None);
    let method = match (&options.token_file, &kube) {
        (Some(path), _) => Method::TokenFile(TokenFile::open(path).context("reading the token file")?),
        (None, Some(client)) => {
            Method::TokenReview(TokenReviewer::new(client.clone(), options.token_audiences.clone()))
        }
        (None, None) => anyhow::bail!("no way to authenticate callers (options were not validated)"),
    };
    let auth = Arc::new(Authenticator::new(
        method,
        config_rx,
        options.agent_service_accounts.clone(),
        options.trust_domain.clone(),
    ));

    let diagnostics: Arc<Mutex<Vec<Diagnostic>>> = Arc::default();
    let view =
        Arc::new(DebugView { xds: xds.clone(), diagnostics: diagnostics.clone(), options: options.clone() });
    let debug_listener = tokio::net::TcpListener::bind(options.debug_addr)
        .await
        .with_context(|| format!("binding debug address {}", options.debug_addr))?;
    tokio::spawn(debug::serve(debug_listener, view));
    // In file mode no webhook sees the objects: reading them is their admission.
    let metrics = Arc::new(ControlPlaneMetrics::new(kube.is_none()));
    let metrics_listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", options.metrics_addr))?;
    let (for_render, xds_for_render) = (metrics.clone(), xds.clone());
    tokio::spawn(weft_telemetry::listener::serve(
        metrics_listener,
        Arc::new(move || for_render.render(&xds_for_render)),
        None,
    ));

    // The secure port: weftd's own certificate, ADS and the CA behind one authenticator.
    let names = serving::ServingNames {
        dns_names: options.serving_dns_names.clone(),
        ips: options.serving_ips.clone(),
    };
    let serving = serving::ServingCertificate::issue(&authority, names, validity.default)
        .context("weftd's certificate for the secure port")?;
    let tls = serving.tls_config(&[b"h2"]).context("TLS for the secure port")?;
    tokio::spawn(Arc::clone(&serving).renew(Arc::clone(&authority)));
    let secure_addr = options.secure_grpc_addr;
    let secure_listener = tokio::net::TcpListener::bind(secure_addr)
        .await
        .with_context(|| format!("binding the secure port {secure_addr}"))?;
    let secure = tonic::transport::Server::builder()
        .add_service(CaService::new(Arc::clone(&authority), Arc::clone(&auth), Arc::clone(&metrics)).server())
        .add_service(xds.authenticated_service(Arc::new(XdsAuth(Arc::clone(&auth)))));
    let secure = tokio::spawn(secure.serve_with_incoming(serving::incoming(secure_listener, tls)));
    info!(%secure_addr, "serving ADS and the CA over TLS");

    // Istio's validating webhook, with the same certificate (its names are the Service's).
    let webhook_addr = options.webhook_addr;
    let webhook_listener = tokio::net::TcpListener::bind(webhook_addr)
        .await
        .with_context(|| format!("binding the webhook address {webhook_addr}"))?;
    let webhook_tls = serving.tls_config(&[b"http/1.1"]).context("TLS for the webhook")?;
    let webhook = tokio::spawn(webhook::server::serve(webhook_listener, webhook_tls, Arc::clone(&metrics)));
    info!(%webhook_addr, "serving the validating webhook (POST /validate) over TLS");
    if let Some(client) = &kube {
        let settings = WebhookSettings {
            config_name: options.webhook_config_name.clone().unwrap_or_default(),
            namespace: options.namespace.clone(),
            ca_bundle: authority.material().roots_pem().to_owned(),
        };
        tokio::spawn(WebhookController::new(client.clone(), settings).run());
    }

    let plaintext = match options.plaintext_xds_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the plaintext xDS port {addr}"))?;
            let service = xds.service();
            warn!(%addr, "serving ADS in plaintext WITHOUT authentication: for local debugging only");
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            ))
        }
        None => None,
    };

    // One task owns the store: apply what the source sends (in batches, so a relist is
    // one translation), translate on change, publish.
    let mut store = ConfigStore::new();
    // What was logged, so a pod event on a large mesh does not log every warning again.
    let mut reported: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut events = Vec::with_capacity(BATCH);
    // Nothing is served until the source has sent its whole state (a file source's first
    // Reset, a Kubernetes source's Synced): no proxy ever sees half a cluster. What was
    // applied before that is served all at once then.
    let mut synced = false;
    loop {
        tokio::select! {
            n = rx.recv_many(&mut events, BATCH) => {
                if n == 0 {
                    warn!("config source stopped");
                    break;
                }
            }
            res = &mut Box::pin(tokio::signal::ctrl_c()) => {
                res?;
                info!("shutting down");
                break;
            }
        }
        let now_synced =
            !synced && events.iter().any(|e| matches!(e, SourceEvent::Reset(_) | SourceEvent::Synced));
        let changed = store.apply_all(source_id, events.drain(..));
        metrics.observe_store(store.counts(), &store.snapshot());
        if !synced && !now_synced {
            continue;
        }
        synced = true;
        let changed = changed || now_synced;
        // The authorizer's view of the pods: once the source's state is whole, and after
        // every change.
        if changed || config_tx.borrow().is_none() {
            config_tx.send_replace(Some(store.snapshot()));
        }
        let found = store.diagnostics();
        let now: std::collections::HashSet<String> = found.iter().map(ToString::to_string).collect();
        // In file and line order; each finding once, until it is fixed and comes back.
        for d in found.iter().map(ToString::to_string).filter(|d| !reported.contains(d)) {
            warn!(target: "weftd::config", "{d}");
        }
        reported = now;
        *diagnostics.lock().expect("diagnostics lock") = found;
        if changed {
            let published = match translator.translate(store.snapshot()) {
                translate::Output::Full(snapshot) => xds.publish(snapshot),
                translate::Output::Update(update) => xds.update(update).or_else(|error| {
                    // The server did not take the update, so the translator's idea of what
                    // it serves is wrong: start over with a full snapshot.
                    warn!(%error, "the xDS server refused an update; publishing a full snapshot");
                    translator.reset();
                    match translator.translate(store.snapshot()) {
                        translate::Output::Full(snapshot) => xds.publish(snapshot),
                        translate::Output::Update(_) => unreachable!("a reset translator translates fully"),
                    }
                }),
            };
            match published {
                Ok(()) => info!(generation = store.generation(), "configuration published"),
                Err(error) => {
                    warn!(%error, "translation produced a snapshot the xDS server refused; keeping the last one")
                }
            }
        }
    }
    xds.shutdown();
    secure.abort();
    webhook.abort();
    if let Some(plaintext) = plaintext {
        plaintext.abort();
    }
    Ok(())
}
