//! weftd's secure port, end to end on loopback: a real weftd process (local mode: a YAML
//! directory, a CA directory, a token file), real TLS, weft-xds's CA and ADS clients.
//! In-process component tier: no root, no bed.
//!
//! - CSRs: signed for a pod on the caller's node; refused for another node's pod, an unknown
//!   service account, a bad SAN, no token, a bad token; validity honoured up to the maximum.
//! - xDS: refused without a token and when claiming another node; served for the right claim.
//! - The root: persisted across a restart (same root, 0600 key file).
//! - A plug-in CA: its intermediate signs, and the chain carries it; a broken one is
//!   refused naming the file.
//! - The plaintext port: not opened unless asked for.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::{ffi::OsStr, path::Path, time::Duration};
use tokio::sync::mpsc;
use weft_tests::weftd::LoopbackWeftd;
use weft_xds::{
    ca::CaClientError,
    client::{AdsClient, Update},
    type_url,
};
use x509_parser::prelude::{FromDer, X509Certificate};

const PATIENCE: Duration = Duration::from_secs(30);

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: bookinfo, labels: { app: reviews } }
spec: { nodeName: n1, serviceAccountName: reviews, containers: [{ name: reviews, image: reviews }] }
status: { podIP: 198.18.1.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: ratings-v1, namespace: bookinfo, labels: { app: ratings } }
spec: { nodeName: n2, serviceAccountName: ratings, containers: [{ name: ratings, image: ratings }] }
status: { podIP: 198.18.2.2 }
"#;

fn weftd_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weftd"))
}

/// A config directory holding `MESH`, kept alive by the returned guard.
fn mesh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("write the mesh");
    dir
}

async fn local_weftd(config: &Path, extra: &[&OsStr]) -> LoopbackWeftd {
    let mut weftd = LoopbackWeftd::local(weftd_binary(), config, extra, "info,weft_controlplane=debug");
    weftd.wait_ready(PATIENCE).await;
    weftd
}

/// A CSR for `sans` with a fresh P-256 key, as an agent makes it.
fn csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().expect("IA5"))
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("one PEM certificate").as_ref().to_vec()
}

/// The URI SANs of a certificate.
fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().expect("SAN parses").expect("a SAN");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// Checks that each certificate of `chain` is signed by the next, the last by one of the
/// root file's certificates; returns the leaf's validity in seconds.
fn check_chain(chain: &[String], root_file: &Path, identity: &str) -> u64 {
    let roots = std::fs::read_to_string(root_file).expect("root file");
    assert_eq!(der(chain.last().expect("a chain")), der(&roots), "the root comes last");
    let ders: Vec<Vec<u8>> = chain.iter().map(|p| der(p)).collect();
    let certs: Vec<X509Certificate<'_>> =
        ders.iter().map(|d| X509Certificate::from_der(d).expect("X.509").1).collect();
    assert_eq!(uris(&certs[0]), [identity]);
    assert!(certs[0].subject().iter().next().is_none(), "empty subject, as istiod's");
    for pair in certs.windows(2) {
        pair[0].verify_signature(Some(pair[1].public_key())).expect("signed by the next certificate");
    }
    let validity = certs[0].validity();
    (validity.not_after.timestamp() - validity.not_before.timestamp()) as u64
}

fn code(e: &CaClientError) -> tonic::Code {
    e.code().unwrap_or_else(|| panic!("a refusal, not {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrs_are_signed_for_pods_on_the_callers_node_only() {
    let config = mesh_dir();
    let mut weftd = local_weftd(config.path(), &[]).await;
    let n1 = weftd.node_token("n1");
    let agent = weftd.ca_client(&n1);

    let reviews = spiffe("bookinfo", "reviews");
    let chain = agent.sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO).await.expect("signed");
    assert_eq!(chain.len(), 2, "leaf and root: weftd's own root signs directly");
    let validity = check_chain(&chain, weftd.root_cert(), &reviews);
    // 24 h by default, plus istiod's two minutes of clock skew before now.
    assert_eq!(validity, 24 * 3600 + 120);
    let chain = agent.sign(&reviews, &csr(vec![uri(&reviews)]), Duration::from_secs(3600)).await.unwrap();
    assert_eq!(check_chain(&chain, weftd.root_cert(), &reviews), 3600 + 120, "the validity asked for");

    // A pod of another node; an account with no pod at all.
    let ratings = spiffe("bookinfo", "ratings");
    let e = agent.sign(&ratings, &csr(vec![uri(&ratings)]), Duration::ZERO).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("no pod of service account bookinfo/ratings runs on node n1"), "{e}");
    let nobody = spiffe("bookinfo", "nobody");
    let e = agent.sign(&nobody, &csr(vec![uri(&nobody)]), Duration::ZERO).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::PermissionDenied, "{e}");
    weftd.wait_log("refused a certificate", PATIENCE).await;
    assert!(weftd.log().contains("peer=127.0.0.1:"), "the refusal names the peer:\n{}", weftd.log());

    // CSRs that ask for the wrong thing.
    for (sans, why) in [
        (vec![SanType::DnsName("reviews.bookinfo".try_into().unwrap())], "is not a URI"),
        (vec![uri(&reviews), uri(&ratings)], "exactly one"),
        (vec![], "names no identity"),
    ] {
        let e = agent.sign(&reviews, &csr(sans), Duration::ZERO).await.unwrap_err();
        assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // ImpersonatedIdentity must name the CSR's identity.
    let e = agent.sign(&ratings, &csr(vec![uri(&reviews)]), Duration::ZERO).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    // More than the maximum (90 days by default): refused, as istiod does.
    let e = agent
        .sign(&reviews, &csr(vec![uri(&reviews)]), Duration::from_secs(91 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("longer than the maximum"), "{e}");

    // No token, a token weftd does not know.
    let no_token = weftd_xds_ca_client_without_token(&weftd);
    let e = no_token.sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unauthenticated, "{e}");
    let unknown = weftd.credentials.as_ref().unwrap().unknown().unwrap();
    let e = weftd
        .ca_client(&unknown)
        .sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unauthenticated, "{e}");
    weftd.wait_log("refused a call to the secure port", PATIENCE).await;

    // A service account (a waypoint) gets its own identity and nothing else.
    let waypoint_token = weftd.service_account_token("bookinfo", "waypoint");
    let waypoint = weftd.ca_client(&waypoint_token);
    let own = spiffe("bookinfo", "waypoint");
    let chain = waypoint.sign(&own, &csr(vec![uri(&own)]), Duration::ZERO).await.expect("its own identity");
    check_chain(&chain, weftd.root_cert(), &own);
    let e = waypoint.sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::PermissionDenied, "{e}");
}

fn weftd_xds_ca_client_without_token(weftd: &LoopbackWeftd) -> weft_xds::ca::CaClient {
    let config = weft_xds::ca::CaClientConfig::new(weftd.ads_url(), Some(weftd.tls()), None);
    weft_xds::ca::CaClient::new(config).expect("settings")
}

/// An ADS client subscribed to addresses, forwarding what it gets.
fn agent(config: weft_xds::client::ClientConfig) -> (AdsClient, mpsc::UnboundedReceiver<Update>) {
    let mut config = config;
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    let (tx, rx) = mpsc::unbounded_channel();
    let client = AdsClient::start(config, move |u: Update| tx.send(u).map_err(|_| "test over".to_owned()))
        .expect("client settings");
    (client, rx)
}

/// Waits until the client's last session ended with an error containing `text`.
async fn refused(client: &AdsClient, text: &str) -> String {
    let mut state = client.state();
    let s = tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains(text))),
    )
    .await
    .unwrap_or_else(|_| panic!("no refusal with {text:?}: {:?}", *client.state().borrow()))
    .expect("client alive")
    .clone();
    s.last_error.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_streams_need_a_token_and_the_right_claim() {
    let config = mesh_dir();
    let mut weftd = local_weftd(config.path(), &[]).await;
    let n1 = weftd.node_token("n1");

    // No token: UNAUTHENTICATED.
    let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &n1);
    c.token_file = None;
    c.node_name = Some("n1".into());
    let (client, _) = agent(c);
    let e = refused(&client, "Unauthenticated").await;
    assert!(e.contains("no credentials"), "{e}");
    client.stop().await;

    // The token of n1 claiming n2: PERMISSION_DENIED, logged with the claim.
    let mut c = weftd.client_config("agent-n2", &[type_url::ADDRESS], &n1);
    c.node_name = Some("n2".into());
    let (client, _) = agent(c);
    let e = refused(&client, "PermissionDenied").await;
    assert!(e.contains("may not claim node n2 (NODE_NAME)"), "{e}");
    client.stop().await;
    weftd.wait_log("refused an xDS stream", PATIENCE).await;

    // The right claim is served: both pods' addresses.
    let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &n1);
    c.node_name = Some("n1".into());
    let (client, mut updates) = agent(c);
    let update = tokio::time::timeout(PATIENCE, updates.recv()).await.expect("served").expect("update");
    let mut names: Vec<&str> = update.upserts.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Kubernetes//Pod/bookinfo/ratings-v1", "Kubernetes//Pod/bookinfo/reviews-v1"]);
    client.stop().await;

    // A client that does not trust weftd's root never gets as far as a token.
    let other_root = weftd.dir().join("other-root.pem");
    let other = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(&other_root, params.self_signed(&other).unwrap().pem()).unwrap();
    let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &n1);
    c.tls.as_mut().unwrap().root_cert = other_root;
    let (client, _) = agent(c);
    let e = refused(&client, "cannot connect").await;
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let config = mesh_dir();
    let mut weftd = local_weftd(config.path(), &[]).await;
    let ca_dir = weftd.root_cert().parent().unwrap().to_owned();
    let root = std::fs::read_to_string(weftd.root_cert()).unwrap();
    let key_mode = std::fs::metadata(ca_dir.join("ca-key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "the CA key is private");
    let root_der = der(&root);
    let root_cert = X509Certificate::from_der(&root_der).unwrap().1;
    assert!(root_cert.is_ca());
    assert_eq!(
        root_cert.subject().to_string(),
        "O=cluster.local",
        "istiod's self-signed root names the trust domain"
    );
    let years = (root_cert.validity().not_after.timestamp() - root_cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert_eq!(years, 10);

    weftd.restart();
    weftd.wait_ready(PATIENCE).await;
    assert_eq!(std::fs::read_to_string(weftd.root_cert()).unwrap(), root, "the same root after a restart");
    // Certificates from the restarted weftd chain to it; its serving certificate too (the
    // client trusts only the root file).
    let n1 = weftd.node_token("n1");
    let reviews = spiffe("bookinfo", "reviews");
    let chain = weftd.ca_client(&n1).sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO).await.unwrap();
    check_chain(&chain, weftd.root_cert(), &reviews);
    assert!(weftd.log().contains("new=false"), "{}", weftd.log());
}

/// Istio's plug-in CA: a root and an intermediate made here, in the cacerts layout.
struct PluginCa {
    dir: tempfile::TempDir,
    root_pem: String,
    intermediate_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "example");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn plugin_ca() -> PluginCa {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Root CA");
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let key = KeyPair::generate().unwrap();
    let intermediate = ca_params("Intermediate CA").signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca-cert.pem", &intermediate.pem());
    write("ca-key.pem", &key.serialize_pem());
    write("root-cert.pem", &root.pem());
    // As Istio's instructions make it: the intermediate, then the root.
    write("cert-chain.pem", &format!("{}{}", intermediate.pem(), root.pem()));
    PluginCa { dir, root_pem: root.pem(), intermediate_pem: intermediate.pem() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_ca_signs_with_its_intermediate() {
    let plugin = plugin_ca();
    let config = mesh_dir();
    let cacerts = plugin.dir.path().as_os_str();
    let mut weftd =
        LoopbackWeftd::local(weftd_binary(), config.path(), &[OsStr::new("--cacerts-dir"), cacerts], "info");
    weftd.wait_ready(PATIENCE).await;
    // Clients trust the plug-in's root file.
    assert_eq!(weftd.root_cert(), plugin.dir.path().join("root-cert.pem"));
    let n1 = weftd.node_token("n1");
    let reviews = spiffe("bookinfo", "reviews");
    let chain =
        weftd.ca_client(&n1).sign(&reviews, &csr(vec![uri(&reviews)]), Duration::ZERO).await.expect("signed");
    assert_eq!(chain.len(), 3, "leaf, intermediate, root: {chain:#?}");
    assert_eq!(der(&chain[1]), der(&plugin.intermediate_pem), "the intermediate follows the leaf");
    assert_eq!(der(&chain[2]), der(&plugin.root_pem), "the plug-in root, last");
    check_chain(&chain, weftd.root_cert(), &reviews);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_ca_is_refused_naming_the_file() {
    let config = mesh_dir();
    /// What the log must say, and how to break the directory.
    type Case = (&'static str, fn(&Path));
    let cases: [Case; 3] = [
        ("ca-key.pem in {dir}: does not belong to ca-cert.pem", |dir| {
            std::fs::write(dir.join("ca-key.pem"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        }),
        ("root-cert.pem in {dir}: no root here signed", |dir| {
            let other = KeyPair::generate().unwrap();
            std::fs::write(dir.join("root-cert.pem"), ca_params("Other").self_signed(&other).unwrap().pem())
                .unwrap();
        }),
        ("ca-cert.pem in {dir}: is not a CA certificate", |dir| {
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec!["x.example".into()]).unwrap().self_signed(&key).unwrap();
            std::fs::write(dir.join("ca-cert.pem"), leaf.pem()).unwrap();
            std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
        }),
    ];
    for (expected, break_it) in cases {
        let plugin = plugin_ca();
        break_it(plugin.dir.path());
        let mut weftd = LoopbackWeftd::local(
            weftd_binary(),
            config.path(),
            &[OsStr::new("--cacerts-dir"), plugin.dir.path().as_os_str()],
            "info",
        );
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = weftd.exited() {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "weftd kept running:\n{}", weftd.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success());
        let expected = expected.replace("{dir}", &plugin.dir.path().display().to_string());
        assert!(weftd.log().contains(&expected), "{expected:?} not in:\n{}", weftd.log());
    }
}

/// The TCP ports a process listens on, from its socket inodes and /proc/net/tcp.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap();
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plaintext_port_is_off_unless_asked_for() {
    let config = mesh_dir();
    let weftd = local_weftd(config.path(), &[]).await;
    let mut want = vec![weftd.secure.port(), weftd.debug.port(), weftd.metrics.port(), weftd.webhook.port()];
    want.sort_unstable();
    assert_eq!(listening_ports(weftd.pid()), want, "only the secure, debug, metrics and webhook ports");
    drop(weftd);

    // Asked for: served, without authentication, for debugging.
    let port = weft_tests::weftd::free_port();
    let addr = format!("127.0.0.1:{port}");
    let weftd = local_weftd(config.path(), &[OsStr::new("--plaintext-xds-addr"), OsStr::new(&addr)]).await;
    assert!(listening_ports(weftd.pid()).contains(&port));
    let mut c = weft_xds::client::ClientConfig::new(
        format!("http://{addr}"),
        "debug",
        vec![type_url::ADDRESS.into()],
    );
    c.node_name = Some("n1".into());
    let (client, mut updates) = agent(c);
    let update = tokio::time::timeout(PATIENCE, updates.recv()).await.expect("served").expect("update");
    assert_eq!(update.upserts.len(), 2);
    client.stop().await;
    assert!(weftd.log().contains("WITHOUT authentication"), "a loud warning:\n{}", weftd.log());
}
