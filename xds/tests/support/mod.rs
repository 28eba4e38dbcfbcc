//! Test support for the ADS tests: a tonic server on a real 127.0.0.1 socket, a raw SotW
//! client built from envoy-types alone, resources, and polling helpers.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;
use weft_xds::istio::workload::{Address, Workload, address};
use weft_xds::server::{ProxyStatus, Scope, ScopedResource, XdsServer};

pub const WAIT: Duration = Duration::from_secs(10);

/// A tonic server serving one `XdsServer` on 127.0.0.1.
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn start(xds: &XdsServer) -> Self {
        Self::start_on(xds, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(xds: &XdsServer, addr: SocketAddr) -> Self {
        Self::serve(xds.service(), addr).await
    }

    /// Serves `service` (e.g. an authenticated one) on 127.0.0.1.
    pub async fn start_service(service: weft_xds::server::AdsService) -> Self {
        Self::serve(service, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn serve(service: weft_xds::server::AdsService, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Self { addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ends every stream and waits until the listener is closed.
    pub async fn stop(self, xds: &XdsServer) {
        xds.shutdown();
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("server stops").unwrap();
    }
}

pub fn node(id: &str, node_name: &str) -> Node {
    let mut fields = std::collections::HashMap::new();
    fields.insert("NODE_NAME".to_string(), Value { kind: Some(Kind::StringValue(node_name.into())) });
    Node { id: id.into(), metadata: Some(Struct { fields }), ..Default::default() }
}

/// A state-of-the-world ADS client speaking raw envoy-types messages.
pub struct SotwClient {
    pub tx: mpsc::Sender<DiscoveryRequest>,
    pub rx: Streaming<DiscoveryResponse>,
}

impl SotwClient {
    pub async fn connect(addr: SocketAddr, first: DiscoveryRequest) -> Self {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx =
            client.stream_aggregated_resources(ReceiverStream::new(rx)).await.expect("stream").into_inner();
        Self { tx, rx }
    }

    pub async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("send");
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Asserts nothing arrives for `d`.
    pub async fn silence(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }

    pub async fn ack(&self, response: &DiscoveryResponse) {
        self.send(DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

impl SotwClient {
    /// An ACK for a named subscription: SotW requests repeat the names they want (an empty
    /// list after named subscriptions would mean "none").
    pub async fn ack_names(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }
}

/// A delta ADS client speaking raw envoy-types messages.
pub struct DeltaClient {
    pub tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    pub async fn connect(addr: SocketAddr, first: DeltaDiscoveryRequest) -> Self {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx =
            client.delta_aggregated_resources(ReceiverStream::new(rx)).await.expect("stream").into_inner();
        Self { tx, rx }
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    pub async fn silence(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }

    pub async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            })
            .await
            .expect("send");
    }
}

pub fn cluster(name: &str, connect_timeout_secs: i64) -> ScopedResource {
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: connect_timeout_secs,
            nanos: 0,
        }),
        ..Default::default()
    };
    ScopedResource::from_message(name, Scope::All, &c)
}

pub fn workload(uid: &str, scope: Scope, generation: u8) -> ScopedResource {
    let w = Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "default".into(),
        addresses: vec![vec![10, 0, 0, generation]],
        ..Default::default()
    };
    ScopedResource::from_message(uid, scope, &Address { r#type: Some(address::Type::Workload(w)) })
}

pub fn names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    response.resources.iter().map(|a| Cluster::decode(a.value.as_slice()).unwrap().name).collect()
}

/// Polls `check` until it returns true.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of the (single) stream of `proxy_id`.
pub fn status_of(xds: &XdsServer, proxy_id: &str) -> Option<ProxyStatus> {
    xds.status().into_iter().rev().find(|s| s.proxy_id == proxy_id)
}

/// A Weft delta client whose handler forwards every update to a channel and refuses
/// updates while `reject` is set.
pub struct Agent {
    pub client: weft_xds::client::AdsClient,
    pub updates: mpsc::UnboundedReceiver<weft_xds::client::Update>,
    pub reject: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Agent {
    pub fn start(url: &str, id: &str, node_name: &str, types: &[&str]) -> Self {
        use std::sync::atomic::Ordering;
        let mut config =
            weft_xds::client::ClientConfig::new(url, id, types.iter().map(|t| t.to_string()).collect());
        config.node_name = Some(node_name.into());
        config.namespace = Some("weft-system".into());
        config.initial_backoff = Duration::from_millis(20);
        config.max_backoff = Duration::from_millis(200);
        let (tx, updates) = mpsc::unbounded_channel();
        let reject = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = reject.clone();
        let client = weft_xds::client::AdsClient::start(config, move |u: weft_xds::client::Update| {
            let _ = tx.send(u);
            if refuse.load(Ordering::SeqCst) {
                Err("workload w1: address in use".to_string())
            } else {
                Ok(())
            }
        })
        .expect("client starts");
        Self { client, updates, reject }
    }

    pub async fn next(&mut self) -> weft_xds::client::Update {
        tokio::time::timeout(WAIT, self.updates.recv())
            .await
            .expect("an update in time")
            .expect("client running")
    }

    /// The next update that changes something (skips empty initial answers).
    pub async fn next_change(&mut self) -> weft_xds::client::Update {
        loop {
            let u = self.next().await;
            if !u.is_empty() {
                return u;
            }
        }
    }

    pub async fn silence(&mut self, d: Duration) {
        if let Ok(u) = tokio::time::timeout(d, self.updates.recv()).await {
            panic!("expected no update, got {u:?}");
        }
    }
}

pub fn upsert_names(update: &weft_xds::client::Update) -> Vec<String> {
    let mut v: Vec<String> = update.upserts.iter().map(|(n, _, _)| n.clone()).collect();
    v.sort();
    v
}
