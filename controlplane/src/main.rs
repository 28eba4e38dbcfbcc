use clap::Parser;
use std::process::ExitCode;
use weft_controlplane::options::Options;

// jemalloc: weftd holds millions of small strings (every object of a large mesh); against
// glibc's allocator it has less per-allocation overhead and fragmentation, ~15% less peak
// RSS on the 10k-service bench (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// For configuration weftd cannot use.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let options = match Options::parse().validate() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("weftd: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: logs in files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if options.log_json {
        builder.json().init()
    } else {
        builder.init()
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weftd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_controlplane::app::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
