//! `weft-hbone-probe`: an HBONE client or server with whatever certificate a test hands it,
//! to play a workload the mesh must refuse (a certificate of another CA, an expired one, a
//! server holding another service account's identity, a CONNECT to an address that is not
//! the pod's) and, with a good certificate, to show that the probe itself works.
//!
//! - `connect --to IP:15008 --authority IP:PORT --cert F --key F --roots F --expect ID
//!   [--send TEXT]`: one CONNECT on a fresh connection, then sends TEXT, half-closes and
//!   reads to the end. Prints `{"ok":true,"status":200,"reply":…}`, or
//!   `{"ok":false,"status":401|null,"error":…}` with the reason weft-hbone gives.
//! - `serve --listen ADDR --cert F --key F --roots F`: prints `{"event":"listening"}`,
//!   then `{"event":"connect","peer":…,"identity":…,"authority":…}` per CONNECT (answered
//!   200; the test app's hello `H` answered `weft-hbone-probe IDENTITY PEER`, other bytes
//!   echoed) and `{"event":"refused","peer":…,"error":…}` per connection whose
//!   TLS handshake failed.
//!
//! Exit codes: 0 ok, 2 the CONNECT was not answered 200 (or never sent), 64 bad arguments.

use crate::{Pod, Proc, bins, testapp::report::emit};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_hbone::{Identity, Pool, PoolKey, Settings, TrustBundle, WorkloadCertificate};

#[derive(Parser, Debug)]
#[command(
    name = "weft-hbone-probe",
    about = "An HBONE client or server with a certificate of the test's choosing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: ProbeCommand,
}

#[derive(Subcommand, Debug)]
pub enum ProbeCommand {
    /// One CONNECT through a new mTLS connection.
    Connect(ConnectArgs),
    /// Accept HBONE connections; answer each CONNECT 200 and echo its bytes.
    Serve(ServeArgs),
}

/// The certificate to present and the roots to check the peer against.
#[derive(Args, Debug, Clone)]
pub struct Credentials {
    /// PEM chain, leaf first.
    #[arg(long)]
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    #[arg(long)]
    pub key: PathBuf,
    /// PEM roots the peer's chain must lead to.
    #[arg(long)]
    pub roots: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Where to dial: the destination's HBONE address, `IP:15008`.
    #[arg(long)]
    pub to: SocketAddr,
    /// The CONNECT `:authority`: where the tunnel is asked to lead.
    #[arg(long)]
    pub authority: SocketAddr,
    /// The SPIFFE identity the server must present.
    #[arg(long)]
    pub expect: Identity,
    #[command(flatten)]
    pub credentials: Credentials,
    /// Bytes to send once the tunnel is open (e.g. `H`, the test app's hello).
    #[arg(long, default_value = "")]
    pub send: String,
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub credentials: Credentials,
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_REFUSED: i32 = 2;

/// Runs one subcommand; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            emit(&json!({"ok": false, "error": format!("no tokio runtime: {e}")}));
            return 64;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            ProbeCommand::Connect(args) => connect(args).await,
            ProbeCommand::Serve(args) => serve(args).await,
        }
    });
    result.unwrap_or_else(|e| {
        emit(&json!({"ok": false, "error": format!("{e:#}")}));
        64
    })
}

fn load(c: &Credentials) -> Result<(Arc<WorkloadCertificate>, TrustBundle)> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let cert = WorkloadCertificate::from_pem(&read(&c.cert)?, &read(&c.key)?)
        .with_context(|| format!("{} is not a workload certificate", c.cert.display()))?;
    let roots = TrustBundle::from_pem(&read(&c.roots)?).context("the roots")?;
    Ok((Arc::new(cert), roots))
}

async fn connect(args: ConnectArgs) -> Result<i32> {
    let (cert, roots) = load(&args.credentials)?;
    let pool = Pool::new(Settings::default());
    let key = PoolKey { src: cert.identity().clone(), dst: args.expect.clone(), dst_addr: args.to, extra: 0 };
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let to = args.to;
    let opened = tokio::time::timeout(
        timeout,
        pool.connect(&key, &cert, &roots, args.authority, || tokio::net::TcpStream::connect(to)),
    )
    .await;
    let mut stream = match opened {
        Err(_) => {
            emit(&json!({"ok": false, "status": null, "error": format!("no answer within {timeout:?}")}));
            return Ok(EXIT_REFUSED);
        }
        Ok(Err(e)) => {
            emit(&json!({"ok": false, "status": e.status().map(|s| s.as_u16()), "error": e.to_string()}));
            return Ok(EXIT_REFUSED);
        }
        Ok(Ok(stream)) => stream,
    };
    let exchange = async {
        stream.write_all(args.send.as_bytes()).await?;
        stream.shutdown().await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => {
            emit(&json!({"ok": true, "status": 200, "reply": String::from_utf8_lossy(&reply)}));
            Ok(EXIT_OK)
        }
        Ok(Err(e)) => {
            emit(&json!({"ok": false, "status": 200, "error": format!("after the CONNECT: {e}")}));
            Ok(EXIT_REFUSED)
        }
        Err(_) => {
            emit(&json!({"ok": false, "status": 200, "error": "the tunnel stalled"}));
            Ok(EXIT_REFUSED)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<i32> {
    let (cert, roots) = load(&args.credentials)?;
    let config = weft_hbone::tls::server_config(&cert, &roots).context("server TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    emit(
        &json!({"event": "listening", "addr": args.listen.to_string(), "identity": cert.identity().to_string()}),
    );
    let settings = Settings::default();
    let own: Arc<str> = cert.identity().to_string().into();
    loop {
        let (tcp, peer) = listener.accept().await.context("accept")?;
        let (config, settings, own) = (config.clone(), settings.clone(), own.clone());
        tokio::spawn(async move {
            let served =
                weft_hbone::serve_connection(tcp, config, &settings, std::future::pending(), |request| {
                    emit(&json!({
                        "event": "connect",
                        "peer": request.peer_addr().to_string(),
                        "identity": request.peer_identity().to_string(),
                        "authority": request.authority().to_string(),
                    }));
                    let hello = format!("weft-hbone-probe {own} {}\n", request.peer_addr());
                    async move {
                        if let Ok(mut stream) = request.accept() {
                            let mut buf = vec![0u8; 16 * 1024];
                            let mut first = true;
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                // The test app's hello (`H`) gets an answer and the end of the
                                // stream, as its server gives; anything else is echoed.
                                if std::mem::take(&mut first) && buf[0] == b'H' {
                                    let _ = stream.write_all(hello.as_bytes()).await;
                                    break;
                                }
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = stream.shutdown().await;
                        }
                    }
                })
                .await;
            if let Err(e) = served {
                emit(&json!({"event": "refused", "peer": peer.to_string(), "error": e.to_string()}));
            }
        });
    }
}

// ---- for the tests: the probe run in a bed pod ---------------------------------------------

/// What `connect` printed, and how it exited.
#[derive(Debug)]
pub struct ProbeResult {
    pub code: i32,
    pub json: serde_json::Value,
}

impl ProbeResult {
    pub fn ok(&self) -> bool {
        self.code == EXIT_OK && self.json["ok"] == true
    }

    /// The HTTP status the CONNECT was answered with, if it was answered.
    pub fn status(&self) -> Option<u64> {
        self.json["status"].as_u64()
    }

    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }

    pub fn reply(&self) -> &str {
        self.json["reply"].as_str().unwrap_or_default()
    }
}

/// Runs `weft-hbone-probe connect` in `pod`'s network namespace.
pub fn connect_from(
    pod: &Pod,
    to: SocketAddr,
    authority: SocketAddr,
    expect: &Identity,
    credentials: &Credentials,
    send: &str,
) -> Result<ProbeResult> {
    let mut cmd = Command::new(bins::path("weft-hbone-probe"));
    cmd.arg("connect").args(["--to", &to.to_string(), "--authority", &authority.to_string()]).args([
        "--expect",
        &expect.to_string(),
        "--send",
        send,
    ]);
    credentials.append_to(&mut cmd);
    let mut proc = pod.spawn(cmd)?;
    let Some(status) = proc.wait_timeout(Duration::from_secs(30))? else {
        bail!("weft-hbone-probe connect in {} still running after 30 s", pod.name());
    };
    let line = proc.stdout_lines().pop().unwrap_or_default();
    let json = serde_json::from_str(&line)
        .with_context(|| format!("probe printed {line:?}; stderr: {}", proc.stderr_text()))?;
    Ok(ProbeResult { code: status.code().unwrap_or(-1), json })
}

/// Starts `weft-hbone-probe serve` in `pod` and waits until it listens.
pub fn serve_in(pod: &Pod, listen: SocketAddr, credentials: &Credentials) -> Result<Proc> {
    let mut cmd = Command::new(bins::path("weft-hbone-probe"));
    cmd.args(["serve", "--listen", &listen.to_string()]);
    credentials.append_to(&mut cmd);
    let proc = pod.spawn(cmd)?;
    proc.wait_for_line(|l| l.contains("\"listening\""), Duration::from_secs(10))
        .with_context(|| format!("probe server in {} did not start: {}", pod.name(), proc.stderr_text()))?;
    Ok(proc)
}

impl Credentials {
    fn append_to(&self, cmd: &mut Command) {
        cmd.arg("--cert").arg(&self.cert).arg("--key").arg(&self.key).arg("--roots").arg(&self.roots);
    }
}

/// The probe server's events of one kind (`connect` or `refused`).
pub fn events(server: &Proc, kind: &str) -> Vec<serde_json::Value> {
    server
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}
