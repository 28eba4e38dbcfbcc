//! A `weftd` process, on a bed node ([`Weftd`]) or on loopback ([`LoopbackWeftd`]), with
//! what its callers need: the secure port's address, the root certificate that signs its
//! serving certificate, and bearer tokens ([`Credentials`]) for agents (per node) and for
//! waypoints and gateways (per service account).

use crate::{Node, Proc, bins};
use anyhow::{Context, Result, bail};
use std::{
    collections::BTreeMap,
    ffi::OsStr,
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};
use weft_xds::client::ClientTls;

/// weftd's secure port (xDS and CA over TLS), on all addresses of its node.
pub const SECURE_PORT: u16 = 15012;
const DEBUG_ADDR: &str = "127.0.0.1:15014";
/// weftd's `--metrics-addr` port (its default, on every interface of its node).
pub const METRICS_PORT: u16 = 15015;
/// The DNS name weftd's serving certificate carries by default (`weftd.<ns>.svc`).
pub const SERVER_NAME: &str = "weftd.istio-system.svc";

/// Bearer tokens for weftd's callers: weftd's `--token-file` (Kubernetes' static token
/// file format) and one token file per caller, all in one directory. weftd re-reads its
/// file when it changes, so callers can be added while it runs.
#[derive(Debug)]
pub struct Credentials {
    dir: PathBuf,
    /// Kubernetes user name → token.
    tokens: BTreeMap<String, String>,
}

impl Credentials {
    /// Writes an empty token file for weftd in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Credentials> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let credentials = Credentials { dir: dir.to_owned(), tokens: BTreeMap::new() };
        credentials.write_weftd_file()?;
        Ok(credentials)
    }

    /// weftd's `--token-file`.
    pub fn weftd_file(&self) -> PathBuf {
        self.dir.join("weftd-tokens.csv")
    }

    /// The token file of the agent of `node` (made on first use): its `--token-file`.
    pub fn node(&mut self, node: &str) -> Result<PathBuf> {
        self.user(&format!("system:node:{node}"))
    }

    /// The token file of service account `namespace/name` (made on first use).
    pub fn service_account(&mut self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.user(&format!("system:serviceaccount:{namespace}:{name}"))
    }

    /// A token file holding a token weftd does not know.
    pub fn unknown(&self) -> Result<PathBuf> {
        let path = self.dir.join("token-unknown");
        write_private(&path, &format!("{}\n", random_token()))?;
        Ok(path)
    }

    fn user(&mut self, user: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("token-{}", user.replace(':', "_")));
        if !self.tokens.contains_key(user) {
            let token = random_token();
            write_private(&path, &format!("{token}\n"))?;
            self.tokens.insert(user.to_owned(), token);
            self.write_weftd_file()?;
        }
        Ok(path)
    }

    /// The token of a user made earlier.
    pub fn token(&self, user: &str) -> Option<&str> {
        self.tokens.get(user).map(String::as_str)
    }

    fn write_weftd_file(&self) -> Result<()> {
        let mut text = String::from("# token,user — written by weft-tests\n");
        for (user, token) in &self.tokens {
            text.push_str(&format!("{token},{user}\n"));
        }
        // Replaced by rename, so weftd never reads half a file.
        let tmp = self.dir.join(".weftd-tokens.tmp");
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, self.weftd_file()).context("renaming the token file into place")
    }
}

/// 128 random bits as hex: unguessable enough for a test's tokens.
pub fn random_token() -> String {
    let half = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", half(), half())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Where a proxy reaches weftd and how it proves who it is.
#[derive(Debug, Clone)]
pub struct AdsCredentials {
    /// weftd's secure port.
    pub addr: SocketAddr,
    /// `https://<addr>`.
    pub url: String,
    /// The root that signs weftd's serving certificate.
    pub root_cert: PathBuf,
    /// A name weftd's certificate carries.
    pub server_name: String,
    /// The caller's token file.
    pub token_file: PathBuf,
}

impl AdsCredentials {
    /// The token itself (for Envoy, whose bootstrap carries it inline).
    pub fn token(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading {}", self.token_file.display()))?;
        Ok(text.trim().to_owned())
    }

    /// TLS settings for weft-xds clients.
    pub fn tls(&self) -> ClientTls {
        ClientTls { root_cert: self.root_cert.clone(), server_name: Some(self.server_name.clone()) }
    }
}

/// weftd on a bed node, reading a config directory (its own token file) or watching a
/// Kubernetes API server (TokenReview), with its own CA directory; its serving
/// certificate also names the node's address.
pub struct Weftd {
    node: Node,
    proc: Proc,
    args: Vec<String>,
    ca_dir: PathBuf,
    /// Local mode's tokens; `None` in Kubernetes mode, where the API server knows them.
    credentials: Option<Mutex<Credentials>>,
    _dir: tempfile::TempDir,
}

impl Weftd {
    /// Starts weftd on `node` watching `config_dir`; waits until it has published.
    pub fn start(node: &Node, config_dir: &Path) -> Result<Weftd> {
        Self::start_with(node, config_dir, &[])
    }

    /// The same, with more flags.
    pub fn start_with(node: &Node, config_dir: &Path, extra: &[&str]) -> Result<Weftd> {
        let dir = tempfile::tempdir().context("weftd's directory")?;
        let credentials = Credentials::new(&dir.path().join("tokens"))?;
        let source = [
            "--config-dir".to_owned(),
            config_dir.display().to_string(),
            "--token-file".to_owned(),
            credentials.weftd_file().display().to_string(),
        ];
        Self::launch(node, dir, &source, extra, Some(credentials))
    }

    /// Starts weftd on `node` in Kubernetes mode on the API server at `url` (reachable from
    /// the node): callers' tokens are checked by TokenReview there. Waits until ready.
    pub fn start_kubernetes(node: &Node, url: &str, extra: &[&str]) -> Result<Weftd> {
        let dir = tempfile::tempdir().context("weftd's directory")?;
        Self::launch(node, dir, &["--kubernetes-url".to_owned(), url.to_owned()], extra, None)
    }

    fn launch(
        node: &Node,
        dir: tempfile::TempDir,
        source: &[String],
        extra: &[&str],
        credentials: Option<Credentials>,
    ) -> Result<Weftd> {
        let ca_dir = dir.path().join("ca");
        let mut args = source.to_vec();
        args.extend([
            "--ca-dir".to_owned(),
            ca_dir.display().to_string(),
            "--secure-grpc-addr".to_owned(),
            format!("0.0.0.0:{SECURE_PORT}"),
            "--serving-ips".to_owned(),
            node.ip().to_string(),
            "--debug-addr".to_owned(),
            DEBUG_ADDR.to_owned(),
            "--debounce".to_owned(),
            "50ms".to_owned(),
        ]);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let proc = Self::spawn(node, &args)?;
        let weftd = Weftd {
            node: node.clone(),
            proc,
            args,
            ca_dir,
            credentials: credentials.map(Mutex::new),
            _dir: dir,
        };
        weftd.wait_ready(Duration::from_secs(20))?;
        Ok(weftd)
    }

    fn spawn(node: &Node, args: &[String]) -> Result<Proc> {
        let mut cmd = Command::new(bins::path("weftd"));
        cmd.args(args).env("RUST_LOG", std::env::var("WEFTD_LOG").unwrap_or_else(|_| "info".into()));
        node.spawn(cmd)
    }

    /// Starts weftd again after it was killed: the same flags, CA directory (so the same
    /// root) and tokens. Waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.proc = Self::spawn(&self.node, &self.args)?;
        self.wait_ready(Duration::from_secs(20))
    }

    /// Where proxies on the bed reach weftd's secure port: its node's underlay address.
    pub fn ads_addr(&self) -> SocketAddr {
        SocketAddr::from((self.node.ip(), SECURE_PORT))
    }

    pub fn ads_url(&self) -> String {
        format!("https://{}", self.ads_addr())
    }

    /// The root agents and proxies trust (weftd's --ca-dir/root-cert.pem).
    pub fn root_cert(&self) -> PathBuf {
        self.ca_dir.join("root-cert.pem")
    }

    /// weftd's CA directory (`--ca-dir`: ca-cert.pem, ca-key.pem, root-cert.pem), for a
    /// test that plays a compromised node holding the mesh's signing key.
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }

    /// What the agent of `node` needs: the address, the root and its bootstrap token.
    pub fn agent_credentials(&self, node: &str) -> Result<AdsCredentials> {
        let token_file = self.local_credentials()?.lock().expect("credentials lock").node(node)?;
        Ok(self.credentials_with_token(token_file))
    }

    /// What a waypoint or gateway of service account `namespace/name` needs.
    pub fn service_account_credentials(&self, namespace: &str, name: &str) -> Result<AdsCredentials> {
        let token_file =
            self.local_credentials()?.lock().expect("credentials lock").service_account(namespace, name)?;
        Ok(self.credentials_with_token(token_file))
    }

    fn local_credentials(&self) -> Result<&Mutex<Credentials>> {
        self.credentials.as_ref().context(
            "weftd runs in Kubernetes mode: it checks tokens by TokenReview; register one with \
             FakeApiServer::add_token and use Weftd::credentials_with_token",
        )
    }

    /// Where weftd is and the root it serves with, for a caller holding `token_file`.
    pub fn credentials_with_token(&self, token_file: PathBuf) -> AdsCredentials {
        AdsCredentials {
            addr: self.ads_addr(),
            url: self.ads_url(),
            root_cert: self.root_cert(),
            server_name: SERVER_NAME.to_owned(),
            token_file,
        }
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

/// weftd as a plain process on 127.0.0.1 (no bed, no root), for the in-process component
/// tests: free ports, a log file, killed when dropped, its log printed if the test failed.
pub struct LoopbackWeftd {
    child: std::process::Child,
    /// The secure port (TLS: xDS and the CA).
    pub secure: SocketAddr,
    /// The plaintext xDS port, when the test asked for one.
    pub plaintext: Option<SocketAddr>,
    pub debug: SocketAddr,
    /// Its `--metrics-addr` (Prometheus).
    pub metrics: SocketAddr,
    /// Its `--webhook-addr` (the validating webhook, TLS).
    pub webhook: SocketAddr,
    log: PathBuf,
    binary: PathBuf,
    args: Vec<std::ffi::OsString>,
    rust_log: String,
    /// The root file clients trust: the CA directory's in local mode; written by the
    /// test in Kubernetes mode ([`LoopbackWeftd::set_root_cert`]).
    root_cert: PathBuf,
    /// Local mode's tokens.
    pub credentials: Option<Credentials>,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

impl LoopbackWeftd {
    /// Starts `binary` in local mode on `config_dir`, with a CA directory (unless `extra`
    /// names a `--cacerts-dir`) and a token file of its own (add callers through
    /// [`LoopbackWeftd::node_token`] and [`LoopbackWeftd::service_account_token`]).
    pub fn local(binary: &Path, config_dir: &Path, extra: &[&OsStr], rust_log: &str) -> LoopbackWeftd {
        let dir = tempfile::tempdir().expect("tempdir");
        let credentials = Credentials::new(&dir.path().join("tokens")).expect("token file");
        let plugin = extra.iter().position(|a| *a == "--cacerts-dir").and_then(|i| extra.get(i + 1));
        let ca_dir = match plugin {
            Some(dir) => PathBuf::from(dir),
            None => dir.path().join("ca"),
        };
        let mut args: Vec<&OsStr> = vec![OsStr::new("--config-dir"), config_dir.as_os_str()];
        if plugin.is_none() {
            args.extend([OsStr::new("--ca-dir"), ca_dir.as_os_str()]);
        }
        let token_file = credentials.weftd_file();
        args.extend([OsStr::new("--token-file"), token_file.as_os_str()]);
        args.extend_from_slice(extra);
        let mut weftd = Self::start_in(dir, binary, &args, rust_log);
        weftd.root_cert = ca_dir.join("root-cert.pem");
        weftd.credentials = Some(credentials);
        weftd
    }

    /// Starts `binary` with `args` (a source and whatever else the test needs), on free
    /// loopback ports.
    pub fn start(binary: &Path, args: &[&OsStr], rust_log: &str) -> LoopbackWeftd {
        Self::start_in(tempfile::tempdir().expect("tempdir"), binary, args, rust_log)
    }

    fn start_in(dir: tempfile::TempDir, binary: &Path, args: &[&OsStr], rust_log: &str) -> LoopbackWeftd {
        let log = dir.path().join("weftd.log");
        let secure = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let debug = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let webhook = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let plaintext = args
            .iter()
            .position(|a| *a == "--plaintext-xds-addr")
            .and_then(|i| args.get(i + 1)?.to_str()?.parse().ok());
        // A test's quick debounce, unless the caller sets its own (the benchmark does).
        let debounce: &[&str] =
            if args.iter().any(|a| *a == "--debounce") { &[] } else { &["--debounce", "20ms"] };
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| a.to_os_string())
            .chain(
                [
                    "--secure-grpc-addr",
                    &secure.to_string(),
                    "--debug-addr",
                    &debug.to_string(),
                    "--metrics-addr",
                    &metrics.to_string(),
                    "--webhook-addr",
                    &webhook.to_string(),
                ]
                .map(Into::into),
            )
            .chain(debounce.iter().map(|a| std::ffi::OsString::from(*a)))
            .collect();
        let root_cert = dir.path().join("root-cert.pem");
        let mut weftd = LoopbackWeftd {
            child: spawn_loopback(binary, &args, rust_log, &log),
            secure,
            plaintext,
            debug,
            metrics,
            webhook,
            log,
            binary: binary.to_owned(),
            args,
            rust_log: rust_log.to_owned(),
            root_cert,
            credentials: None,
            dir,
        };
        weftd.exited();
        weftd
    }

    /// Kills weftd and starts it again with the same flags and ports (the same CA
    /// directory, token file, Kubernetes URL).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_loopback(&self.binary, &self.args, &self.rust_log, &self.log);
    }

    /// `https://127.0.0.1:<secure port>`.
    pub fn ads_url(&self) -> String {
        format!("https://{}", self.secure)
    }

    pub fn debug_url(&self) -> String {
        format!("http://{}", self.debug)
    }

    /// The root certificate file clients trust.
    pub fn root_cert(&self) -> &Path {
        &self.root_cert
    }

    /// Kubernetes mode: writes the root (from weftd's ConfigMap) where clients read it.
    pub fn set_root_cert(&self, pem: &str) {
        std::fs::write(&self.root_cert, pem).expect("write the root certificate");
    }

    /// TLS settings for clients: the root, and the name weftd's certificate carries.
    pub fn tls(&self) -> ClientTls {
        ClientTls { root_cert: self.root_cert.clone(), server_name: Some(SERVER_NAME.into()) }
    }

    /// A directory that lives as long as this weftd (for a test's own files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Local mode: the token file of the agent of `node`.
    pub fn node_token(&mut self, node: &str) -> PathBuf {
        self.credentials.as_mut().expect("local mode").node(node).expect("a node token")
    }

    /// Local mode: the token file of service account `namespace/name`.
    pub fn service_account_token(&mut self, namespace: &str, name: &str) -> PathBuf {
        self.credentials.as_mut().expect("local mode").service_account(namespace, name).expect("a token")
    }

    /// An ADS client configuration for weftd's secure port with `token_file`.
    pub fn client_config(
        &self,
        node_id: &str,
        type_urls: &[&str],
        token_file: &Path,
    ) -> weft_xds::client::ClientConfig {
        let mut config = weft_xds::client::ClientConfig::new(
            self.ads_url(),
            node_id,
            type_urls.iter().map(|t| (*t).to_owned()).collect(),
        );
        config.tls = Some(self.tls());
        config.token_file = Some(token_file.to_owned());
        config
    }

    /// A CA client for weftd's secure port with `token_file`.
    pub fn ca_client(&self, token_file: &Path) -> weft_xds::ca::CaClient {
        let config =
            weft_xds::ca::CaClientConfig::new(self.ads_url(), Some(self.tls()), Some(token_file.to_owned()));
        weft_xds::ca::CaClient::new(config).expect("CA client settings")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// weftd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Waits until weftd's log holds `text`; panics with the log after `patience`.
    pub async fn wait_log(&self, text: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "weftd never logged {text:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// GET on the debug endpoint: (status, body).
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get_at(self.debug, path).await
    }

    /// The Prometheus text of its metrics endpoint.
    pub async fn scrape(&self) -> std::io::Result<String> {
        Ok(get_at(self.metrics, "/metrics").await?.1)
    }
}

/// GET over HTTP/1.0 on `address`: (status, body).
async fn get_at(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: weftd\r\n\r\n").as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    }
}

fn spawn_loopback(
    binary: &Path,
    args: &[std::ffi::OsString],
    rust_log: &str,
    log: &Path,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(binary)
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start weftd")
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
