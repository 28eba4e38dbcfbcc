//! `weftctl analyze DIR`: reads the directory once through weftd's own file source and
//! config store, so it reports exactly what weftd would — schema and validation errors,
//! unreadable documents, and the cross-object warnings of `istioctl analyze` — sorted by
//! file and line. Exits 1 when there is any error, 0 otherwise, 2 when the directory
//! cannot be read.
//!
//! `weftctl analyze --cluster` does the same with the objects of a cluster: weftd's own
//! Kubernetes source lists every kind weftd reads (a kind whose CRD is missing is skipped,
//! as in weftd) and its first complete set goes through the same store.

use crate::cluster::{self, ClusterArgs};
use crate::exit;
use anyhow::Context;
use clap::ValueEnum;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use weft_controlplane::config::{ConfigStore, Diagnostic, SourceId};
use weft_controlplane::source::file::FileSource;
use weft_controlplane::source::{SourceEvent, kube::KubeSource};

/// How long the cluster's objects may take to list.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of YAML files (searched recursively for *.yaml and *.yml).
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub dir: Option<PathBuf>,
    /// Analyze the objects in the cluster (the kubeconfig's, or --kube-url) instead of a
    /// directory.
    #[arg(long)]
    pub cluster: bool,
    #[command(flatten)]
    pub kube: ClusterArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One line per finding: `error: Kind/namespace/name (file:line): field: reason`.
    Text,
    /// A JSON document with counts and the findings.
    Json,
}

/// What one analysis found.
pub struct Analysis {
    pub diagnostics: Vec<Diagnostic>,
    /// Objects that would be served.
    pub served: usize,
}

impl Analysis {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// Reads `dir` once and validates everything in it.
pub fn analyze(dir: &std::path::Path) -> Result<Analysis, weft_controlplane::source::file::FileSourceError> {
    let mut source = FileSource::new(dir)?;
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, source.poll());
    Ok(analysis(&store))
}

/// Lists the cluster's objects once and validates them.
pub async fn analyze_cluster(args: &ClusterArgs) -> anyhow::Result<Analysis> {
    let client = args.client().await?;
    // An unreachable server would keep the source retrying: fail fast instead.
    client
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API server: {}", cluster::describe(&e)))?;
    let (events, mut received) = tokio::sync::mpsc::channel(1024);
    let watching = tokio::spawn(KubeSource::new(client).run(events));
    // The listed objects stream in; Synced says every kind has been listed.
    let mut store = ConfigStore::new();
    let listed = tokio::time::timeout(LIST_TIMEOUT, async {
        let mut batch = Vec::new();
        while received.recv_many(&mut batch, 1024).await > 0 {
            let synced = batch.iter().any(|e| matches!(e, SourceEvent::Synced));
            store.apply_all(SourceId::Kubernetes, batch.drain(..));
            if synced {
                return Ok(());
            }
        }
        anyhow::bail!("the Kubernetes source stopped before listing")
    })
    .await;
    watching.abort();
    listed.context("timed out listing the cluster's objects")??;
    Ok(analysis(&store))
}

fn analysis(store: &ConfigStore) -> Analysis {
    let snapshot = store.snapshot();
    let served = [
        snapshot.namespaces.len(),
        snapshot.pods.len(),
        snapshot.services.len(),
        snapshot.endpoint_slices.len(),
        snapshot.virtual_services.len(),
        snapshot.destination_rules.len(),
        snapshot.gateways.len(),
        snapshot.service_entries.len(),
        snapshot.sidecars.len(),
        snapshot.workload_entries.len(),
        snapshot.authorization_policies.len(),
        snapshot.peer_authentications.len(),
        snapshot.kubernetes_gateways.len(),
        snapshot.http_routes.len(),
        snapshot.reference_grants.len(),
    ]
    .iter()
    .sum();
    Analysis { diagnostics: store.diagnostics(), served }
}

pub fn run(args: Args) -> ExitCode {
    let (analysis, target) = match &args.dir {
        Some(dir) => match analyze(dir) {
            Ok(a) => (a, dir.display().to_string()),
            Err(e) => {
                eprintln!("weftctl analyze: {e}");
                return ExitCode::from(exit::USAGE);
            }
        },
        None => match cluster::block_on(analyze_cluster(&args.kube)).and_then(|a| a) {
            Ok(a) => (a, "the cluster".to_owned()),
            Err(e) => {
                eprintln!("weftctl analyze: {e:#}");
                return ExitCode::from(exit::USAGE);
            }
        },
    };
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Text => write_text(&mut out, &analysis),
        Output::Json => write_json(&mut out, &target, &analysis),
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is not worth a message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("weftctl analyze: cannot write output: {e}");
        }
        return ExitCode::from(exit::USAGE);
    }
    if args.output == Output::Text {
        if analysis.diagnostics.is_empty() {
            eprintln!("✔ No validation issues found when analyzing {} ({} objects)", target, analysis.served);
        } else {
            eprintln!(
                "{} error(s), {} warning(s) in {} ({} objects served)",
                analysis.errors(),
                analysis.warnings(),
                target,
                analysis.served
            );
        }
    }
    if analysis.errors() > 0 { ExitCode::from(exit::FINDINGS) } else { ExitCode::from(exit::OK) }
}

fn write_text(out: &mut impl Write, analysis: &Analysis) -> std::io::Result<()> {
    for d in &analysis.diagnostics {
        writeln!(out, "{d}")?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, target: &str, analysis: &Analysis) -> std::io::Result<()> {
    let doc = serde_json::json!({
        "directory": target,
        "errors": analysis.errors(),
        "warnings": analysis.warnings(),
        "served": analysis.served,
        "diagnostics": analysis.diagnostics.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}
