//! A `weftd` process on a bed node, reading a config directory, and what tests ask its
//! debug endpoint.

use crate::{Node, Proc, bins};
use anyhow::{Context, Result, bail};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// ADS port weftd serves on (all addresses of its node).
pub const XDS_PORT: u16 = 15010;
const DEBUG_ADDR: &str = "127.0.0.1:15014";

pub struct Weftd {
    node: Node,
    proc: Proc,
}

impl Weftd {
    /// Starts weftd on `node` watching `config_dir`; waits until it has published.
    pub fn start(node: &Node, config_dir: &Path) -> Result<Weftd> {
        let mut cmd = Command::new(bins::path("weftd"));
        cmd.arg("--config-dir")
            .arg(config_dir)
            .args([
                "--xds-addr",
                &format!("0.0.0.0:{XDS_PORT}"),
                "--debug-addr",
                DEBUG_ADDR,
                "--debounce",
                "50ms",
            ])
            .env("RUST_LOG", std::env::var("WEFTD_LOG").unwrap_or_else(|_| "info".into()));
        let weftd = Weftd { node: node.clone(), proc: node.spawn(cmd)? };
        weftd.wait_ready(Duration::from_secs(20))?;
        Ok(weftd)
    }

    /// Where proxies on the bed reach weftd: its node's underlay address.
    pub fn ads_addr(&self) -> SocketAddr {
        SocketAddr::from((self.node.ip(), XDS_PORT))
    }

    pub fn ads_url(&self) -> String {
        format!("http://{}", self.ads_addr())
    }

    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get("/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("weftd not ready after {timeout:?}:\n{}", self.proc.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on weftd's debug endpoint, from inside its node: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let path = path.to_owned();
        self.node.run(move || {
            let mut s = TcpStream::connect(DEBUG_ADDR).context("connecting to weftd's debug port")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let status =
                resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
            Ok((status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
        })
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_text()
    }
}

/// weftd as a plain process on 127.0.0.1 (no bed, no root), for the control plane's
/// in-process component tests: free ports, a log file, killed when dropped, its log
/// printed if the test failed.
pub struct LoopbackWeftd {
    child: std::process::Child,
    pub xds: SocketAddr,
    pub debug: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

impl LoopbackWeftd {
    /// Starts `binary` with `source_args` (e.g. `--config-dir DIR`), on free loopback ports.
    pub fn start(binary: &Path, source_args: &[&std::ffi::OsStr], rust_log: &str) -> LoopbackWeftd {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("weftd.log");
        let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let debug = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .args(source_args)
            .args(["--xds-addr", &xds.to_string(), "--debug-addr", &debug.to_string(), "--debounce", "20ms"])
            .env("RUST_LOG", rust_log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start weftd");
        LoopbackWeftd { child, xds, debug, log, _dir: dir }
    }

    pub fn ads_url(&self) -> String {
        format!("http://{}", self.xds)
    }

    pub fn debug_url(&self) -> String {
        format!("http://{}", self.debug)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether weftd has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `/ready` answers 200; panics with the log if weftd exits or `patience`
    /// runs out.
    pub async fn wait_ready(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            if let Ok((200, _)) = self.get("/ready").await {
                return;
            }
            if let Some(status) = self.exited() {
                panic!("weftd exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "weftd not ready after {patience:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET on the debug endpoint: (status, body).
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.debug).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: weftd\r\n\r\n").as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    }
}

impl Drop for LoopbackWeftd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- weftd's log ---\n{}", self.log());
        }
    }
}
