//! `cargo xtask demo`: Bookinfo on a three-node Weft mesh on this machine, walked through
//! Istio's traffic-management tasks, Prometheus scraping it and a live page of its numbers;
//! the mesh stays up until Ctrl-C.

use anyhow::Result;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser)]
#[command(about = "Runs Bookinfo on a three-node Weft mesh through Istio's traffic-management tasks, \
             printing what each step changed; keeps the mesh up until Ctrl-C")]
struct Args {
    /// Tear down right after the tasks instead of waiting for Ctrl-C.
    #[arg(long)]
    once: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Block SIGINT/SIGTERM before any thread exists, so every thread inherits the mask
    // and the signal is taken here by sigwait; teardown then runs as normal drops.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let demo = weft_tests::demo::run()?;
    if !args.once {
        // A day of ten requests a second: the live page keeps moving while the mesh is up.
        let _load = demo.background_load(86_400)?;
        println!(
            "\nThe mesh is up. Live page: {} (Bookinfo's request rate, error rate and p99 per service,\n\
             from Prometheus). Step into a pod with the nsenter lines above; Ctrl-C tears it all down.",
            demo.page.url()
        );
        let _ = signals.wait()?;
        println!("\ntearing down…");
    }
    drop(demo);
    Ok(())
}
