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
