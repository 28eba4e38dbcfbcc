//! `weft-testapp`: a small versioned TCP app for the end-to-end tests, the benchmarks and
//! the demo. Plain threads and blocking sockets, so it is light and its behaviour is easy
//! to predict.
//!
//! Subcommands (every result is one JSON line on stdout; exit codes in [`report`]):
//! - `serve --name N --version V --port P [--port P2 …] [--call HOST=ADDR …]`: prints
//!   `{"event":"listening","ports":[…]}` once bound, then
//!   `{"event":"accept","name":…,"port":…,"peer":"ip:port","local":"ip:port"}` per
//!   connection; modes in [`server`]. With `--call`, an HTTP GET first calls each upstream
//!   in turn, relaying `end-user`/`x-end-user`, as Bookinfo's services chain.
//! - `echo --to ADDR --bytes N`: `{"ok":true,"sent":N,"received":N,"peer":…,"local":…,"ms":…}`
//! - `hello --to ADDR`: `{"ok":true,"reply":"NAME VERSION PEER"}`
//! - `throughput --to ADDR --secs S`: `{"bytes":…,"secs":…,"gbit_per_s":…}`
//! - `latency --to ADDR --count N [--warmup W]`: `{"count":N,"p50_us":…,"p99_us":…,"mean_us":…}`
//! - `connrate --to ADDR --secs S [--threads T]`:
//!   `{"conns":…,"secs":…,"per_sec":…,"errors":…,"first_error":…}`
//! - `hold --to ADDR --count N`: `{"event":"holding","count":N}`, then waits for stdin EOF.
//! - `http --to ADDR --host H [--count N | --secs S] [--concurrency C] [--version-of SVC]
//!   [--header 'k: v' …]`: `{"requests","ok","failed","versions":{…},"statuses":{…},
//!   "latency_ms":{"p50","p90","max"},"first_error"}`.
//! - `steady --to ADDR --secs S [--interval-ms I] [--chunk B]`: `{"event":"streaming"}` once
//!   the first chunk came back, then `{"ok":true,"chunks":…,"bytes":…,"max_rtt_ms":…,…}`.
//!
//! Failures: `{"ok":false,"error":"connect"|"io"|"mismatch","kind":"ConnectionRefused",…}`.

mod bench;
mod cli;
mod clients;
mod dial;
mod http;
mod pattern;
pub mod report;
pub mod server;
mod steady;

pub use cli::{Cli, Command};

/// Runs one subcommand; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    raise_fd_limit();
    match cli.command {
        Command::Serve(args) => server::serve(args),
        Command::Echo(args) => clients::echo(args),
        Command::Hello(args) => clients::hello(args),
        Command::Throughput(args) => bench::throughput(args),
        Command::Latency(args) => bench::latency(args),
        Command::Connrate(args) => bench::connrate(args),
        Command::Hold(args) => bench::hold(args),
        Command::Http(args) => http::http(args),
        Command::Steady(args) => steady::steady(args),
    }
}

/// Lifts the soft open-file limit to the hard one: `serve` and `hold` keep thousands of
/// sockets open, more than the usual soft limit of 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
