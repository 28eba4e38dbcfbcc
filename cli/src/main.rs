//! weftctl: Weft's command line. `main` only parses the command line and dispatches; each
//! subcommand lives in its own module (`analyze.rs`, …) with its own `Args` and `run`.

mod analyze;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Weft's command line: analyze Istio configuration offline, inspect a running mesh.
#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a directory of Kubernetes, Istio and Gateway API YAML the way weftd would,
    /// and print every error and warning with its file and line.
    Analyze(analyze::Args),
}

/// Exit codes shared by the subcommands.
pub mod exit {
    /// Everything is fine (warnings may have been printed).
    pub const OK: u8 = 0;
    /// The input has errors.
    pub const FINDINGS: u8 = 1;
    /// Bad usage, or the input could not be read at all (clap also exits 2 on usage errors).
    pub const USAGE: u8 = 2;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
    }
}
