use clap::Parser;
use std::process::ExitCode;
use weft_agent::config::{Cli, Command, LogFormat};

/// sysexits' EX_CONFIG-adjacent "usage" code, for configuration the agent cannot use.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Command::Uninstall { bpffs_dir } => {
            return match weft_agent::datapath::uninstall(&bpffs_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft-agent: cannot remove {}: {e}", bpffs_dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run(config) => *config,
    };
    let config = match config.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-agent: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_tracing(config.log_format);
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_agent::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("weft-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: in a file or a pipe, escape codes split
    // `key=value` fields and defeat grep (and cost: the access log writes a line per
    // connection). weftd does the same.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
