//! weft-testapp: a small versioned TCP app for Weft's end-to-end tests, benchmarks and demo.
//! See `weft_tests::testapp` for the subcommands and their output.

use clap::Parser;
use weft_tests::testapp::{self, Cli};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors; clap prints them and exits 0.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let _ = err.print();
            // 64 (EX_USAGE), not clap's 2, which is the app's "connect failed".
            std::process::exit(64);
        }
    };
    std::process::exit(testapp::run(cli));
}
