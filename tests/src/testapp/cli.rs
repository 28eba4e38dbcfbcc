//! The command line of `weft-testapp`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A small versioned TCP app: a server with echo, sink, ping-pong, hello and HTTP modes,
/// and the clients that drive it. Every result is one JSON line on stdout.
#[derive(Parser, Debug)]
#[command(name = "weft-testapp")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Listen on each --port; the first byte a client sends picks the mode
    /// (E echo, S sink, P ping-pong, H hello, G an HTTP GET).
    Serve(ServeArgs),
    /// Send --bytes of a fixed pseudo-random pattern in echo mode and check every byte
    /// that comes back.
    Echo(EchoArgs),
    /// Ask the server for `NAME VERSION PEER`.
    Hello(HelloArgs),
    /// Sink mode for --secs; report the rate the server counted.
    Throughput(ThroughputArgs),
    /// Ping-pong one byte --count times; report p50/p99/mean round-trip times.
    Latency(LatencyArgs),
    /// Open, exchange one byte, close, as fast as possible for --secs.
    Connrate(ConnrateArgs),
    /// Open --count connections and keep them until stdin closes or the process is killed.
    Hold(HoldArgs),
    /// HTTP/1.1 GETs (one connection each) through a proxy; count answering versions.
    Http(HttpArgs),
    /// One connection for --secs: a --chunk of the echo pattern every --interval-ms, each
    /// echo checked before the next is sent.
    Steady(SteadyArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Reported in hello and HTTP replies and in accept events.
    #[arg(long)]
    pub name: String,
    /// Reported in hello and HTTP replies.
    #[arg(long)]
    pub version: String,
    /// A port to listen on (0.0.0.0); repeat for several.
    #[arg(long = "port", required = true)]
    pub ports: Vec<u16>,
    /// `HOST=ADDR`: on each HTTP GET, first call this upstream (`GET` the same path with
    /// `Host: HOST` at ADDR, relaying the caller's `end-user` and `x-end-user` headers), as
    /// Bookinfo's productpage calls details and reviews; repeat for several, called in
    /// order. The reply embeds theirs; a failed call is answered with its status.
    #[arg(long = "call", value_parser = parse_call)]
    pub calls: Vec<Call>,
}

/// An upstream a chaining server calls (`--call HOST=ADDR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The Host header, i.e. the service the mesh routes on (`reviews.bookinfo.svc.cluster.local`).
    pub host: String,
    /// Where to connect: the service's address (a VIP), `IP:PORT`.
    pub addr: String,
}

fn parse_call(s: &str) -> Result<Call, String> {
    match s.split_once('=') {
        Some((host, addr)) if !host.is_empty() && addr.contains(':') => {
            Ok(Call { host: host.to_owned(), addr: addr.to_owned() })
        }
        _ => Err(format!(
            "{s:?} is not HOST=IP:PORT, e.g. reviews.bookinfo.svc.cluster.local=198.19.0.12:9080"
        )),
    }
}

/// Where a client connects, and how long any one step may take.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Server address, `IP:PORT` (a host name is resolved; the first address that
    /// answers is used).
    #[arg(long)]
    pub to: String,
    /// Limit for connecting and for each read or write.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// SO_MARK to put on the socket (needs NET_ADMIN): a pod that forges the agent's mark
    /// must still be captured.
    #[arg(long, value_parser = parse_mark)]
    pub mark: Option<u32>,
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a mark: {e}"))
}

impl Target {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    pub target: Target,
    /// How many bytes to send (after the mode byte).
    #[arg(long)]
    pub bytes: u64,
}

#[derive(Args, Debug)]
pub struct HelloArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
}

#[derive(Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Measured round trips.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Round trips before measuring, to warm caches and the path.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
}

#[derive(Args, Debug)]
pub struct ConnrateArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Client threads, each with one connection at a time.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub count: usize,
}

#[derive(Args, Debug)]
pub struct HttpArgs {
    #[command(flatten)]
    pub target: Target,
    /// The Host header, e.g. reviews.bookinfo.svc.cluster.local.
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// An extra request header, `name: value`; repeat for several.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// How many requests (ignored with --secs).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Keep sending for this many seconds instead of --count requests.
    #[arg(long)]
    pub secs: Option<f64>,
    /// Pause between requests.
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Print one line per request before the summary.
    #[arg(long)]
    pub trace: bool,
    /// Requests in flight at once, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Count the version of this service down a chain of calls (`serve --call`; the first
    /// label of the Host it was called as) instead of the version of the app that answered.
    #[arg(long)]
    pub version_of: Option<String>,
}

#[derive(Args, Debug)]
pub struct SteadyArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Pause between the starts of two chunks.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 4096, value_parser = parse_chunk)]
    pub chunk: usize,
}

fn parse_chunk(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a chunk size: 1 to 1048576 bytes")),
    }
}
