//! Wires weftd: a source → the config store → translation → the xDS server, plus the
//! debug endpoints.

use crate::{
    config::{ConfigStore, SourceId, diagnostic::Diagnostic},
    debug::{self, DebugView},
    options::Options,
    source::{SourceEvent, file::FileSource, kube::KubeSource},
    translate,
};
use anyhow::Context;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};
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
    let source_id = match &options.config_dir {
        Some(dir) => {
            let source = FileSource::new(dir).with_context(|| format!("reading {}", dir.display()))?;
            tokio::spawn(source.run(tx));
            SourceId::File
        }
        None => {
            let source = match &options.kubernetes_url {
                Some(url) => {
                    KubeSource::from_url(url).with_context(|| format!("watching Kubernetes at {url}"))?
                }
                None => KubeSource::try_default().await.context("connecting to Kubernetes")?,
            };
            tokio::spawn(source.run(tx));
            SourceId::Kubernetes
        }
    };

    let diagnostics: Arc<Mutex<Vec<Diagnostic>>> = Arc::default();
    let view =
        Arc::new(DebugView { xds: xds.clone(), diagnostics: diagnostics.clone(), options: options.clone() });
    let debug_listener = tokio::net::TcpListener::bind(options.debug_addr)
        .await
        .with_context(|| format!("binding debug address {}", options.debug_addr))?;
    tokio::spawn(debug::serve(debug_listener, view));

    let xds_addr = options.xds_addr;
    let service = xds.service();
    let grpc = tokio::spawn(async move {
        tonic::transport::Server::builder().add_service(service).serve(xds_addr).await
    });
    info!(%xds_addr, "serving ADS");

    // One task owns the store: apply what the source sends (in batches, so a relist is
    // one translation), translate on change, publish.
    let mut store = ConfigStore::new();
    // What was logged, so a pod event on a large mesh does not log every warning again.
    let mut reported: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut events = Vec::with_capacity(BATCH);
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
        let changed = store.apply_all(source_id, events.drain(..));
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
    grpc.abort();
    Ok(())
}
