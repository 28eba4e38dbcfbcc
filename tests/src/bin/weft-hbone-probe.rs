//! weft-hbone-probe: an HBONE client or server with a certificate of the test's choosing.
//! See `weft_tests::probe` for the subcommands and their output.

use clap::Parser;
use weft_tests::probe::{self, Cli};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let _ = err.print();
            // 64 (EX_USAGE), not clap's 2, which is the probe's "refused".
            std::process::exit(64);
        }
    };
    std::process::exit(probe::run(cli));
}
