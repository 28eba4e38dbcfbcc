//! `weftctl analyze DIR`: reads the directory once through weftd's own file source and
//! config store, so it reports exactly what weftd would — schema and validation errors,
//! unreadable documents, and the cross-object warnings of `istioctl analyze` — sorted by
//! file and line. Exits 1 when there is any error, 0 otherwise, 2 when the directory
//! cannot be read.

use crate::exit;
use clap::ValueEnum;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use weft_controlplane::config::{ConfigStore, Diagnostic, SourceId};
use weft_controlplane::source::file::FileSource;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of YAML files (searched recursively for *.yaml and *.yml).
    pub dir: PathBuf,
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
    ]
    .iter()
    .sum();
    Ok(Analysis { diagnostics: store.diagnostics(), served })
}

pub fn run(args: Args) -> ExitCode {
    let analysis = match analyze(&args.dir) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weftctl analyze: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Text => write_text(&mut out, &analysis),
        Output::Json => write_json(&mut out, &args, &analysis),
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
            eprintln!(
                "✔ No validation issues found when analyzing {} ({} objects)",
                args.dir.display(),
                analysis.served
            );
        } else {
            eprintln!(
                "{} error(s), {} warning(s) in {} ({} objects served)",
                analysis.errors(),
                analysis.warnings(),
                args.dir.display(),
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

fn write_json(out: &mut impl Write, args: &Args, analysis: &Analysis) -> std::io::Result<()> {
    let doc = serde_json::json!({
        "directory": args.dir.display().to_string(),
        "errors": analysis.errors(),
        "warnings": analysis.warnings(),
        "served": analysis.served,
        "diagnostics": analysis.diagnostics.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}
