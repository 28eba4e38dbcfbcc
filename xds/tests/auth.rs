//! The authentication hook of the ADS server, with a stand-in authenticator (token "n1" is
//! the agent of node n1): refusals before and after the first request, and the weft client
//! presenting its token file, read again at each reconnect.

mod support;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use futures::future::BoxFuture;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use weft_xds::server::{
    ProxyIdentity, Scope, ServerConfig, Snapshot, StreamAuthenticator, StreamCall, StreamCaller, XdsServer,
};
use weft_xds::type_url::ADDRESS;

/// Token `<node>` authenticates the agent of that node; nothing else is accepted.
struct NodeTokens;

impl StreamAuthenticator for NodeTokens {
    fn authenticate(&self, call: StreamCall) -> BoxFuture<'static, Result<Arc<dyn StreamCaller>, Status>> {
        let token = call.metadata.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let peer = call.peer;
        Box::pin(async move {
            assert!(peer.is_some_and(|p| p.ip().is_loopback()), "the hook sees the peer: {peer:?}");
            match token.as_deref().and_then(|t| t.strip_prefix("Bearer ")) {
                Some(node @ ("n1" | "n2")) => Ok(Arc::new(Agent(node.to_owned())) as Arc<dyn StreamCaller>),
                _ => Err(Status::unauthenticated("no valid token")),
            }
        })
    }
}

#[derive(Debug)]
struct Agent(String);

impl std::fmt::Display for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent of {}", self.0)
    }
}

impl StreamCaller for Agent {
    fn authorize(&self, proxy: &ProxyIdentity) -> Result<(), Status> {
        match proxy.node_name.as_deref() {
            Some(node) if node != self.0 => {
                Err(Status::permission_denied(format!("{self} may not claim {node}")))
            }
            _ => Ok(()),
        }
    }
}

fn server() -> XdsServer {
    let xds = XdsServer::new(ServerConfig { debounce: Duration::from_millis(1), ..Default::default() });
    let mut snapshot = Snapshot::new("v1");
    snapshot.add(ADDRESS, workload("w1", Scope::Node("n1".into()), 1));
    snapshot.add(ADDRESS, workload("w2", Scope::Node("n2".into()), 1));
    xds.publish(snapshot).unwrap();
    xds
}

/// Opens a delta stream with `token` as its bearer token, claiming `node`; returns the
/// first message or the status that ended the stream.
async fn first_answer(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    node: &str,
) -> Result<Vec<String>, Status> {
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(support::node("agent", node)),
        type_url: ADDRESS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut responses = client.delta_aggregated_resources(request).await?.into_inner();
    let response = tokio::time::timeout(WAIT, responses.message()).await.expect("an answer in time")?;
    let response = response.expect("a response before the end");
    Ok(response.resources.into_iter().map(|r| r.name).collect())
}

#[tokio::test]
async fn streams_are_authenticated_then_held_to_their_claim() {
    let xds = server();
    let running = Running::start_service(xds.authenticated_service(Arc::new(NodeTokens))).await;

    let e = first_answer(running.addr, None, "n1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = first_answer(running.addr, Some("stolen"), "n1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    let e = first_answer(running.addr, Some("n1"), "n2").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), "agent of n1 may not claim n2");
    assert!(xds.status().is_empty(), "refused streams are never registered: {:?}", xds.status());

    assert_eq!(first_answer(running.addr, Some("n1"), "n1").await.unwrap(), ["w1"]);
    assert_eq!(first_answer(running.addr, Some("n2"), "n2").await.unwrap(), ["w2"]);
    running.stop(&xds).await;
}

#[tokio::test]
async fn the_client_presents_its_token_file_and_rereads_it_on_reconnect() {
    let xds = server();
    let running = Running::start_service(xds.authenticated_service(Arc::new(NodeTokens))).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong\n").unwrap();

    let mut config = weft_xds::client::ClientConfig::new(running.url(), "agent-n1", vec![ADDRESS.into()]);
    config.node_name = Some("n1".into());
    config.token_file = Some(token.clone());
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(100);
    let (tx, mut updates) = mpsc::unbounded_channel();
    let client = weft_xds::client::AdsClient::start(config, move |u: weft_xds::client::Update| {
        let _ = tx.send(u);
        Ok(())
    })
    .unwrap();
    let mut state = client.state();
    let refused = tokio::time::timeout(WAIT, state.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let error = refused.last_error.unwrap();
    assert!(error.contains("Unauthenticated") || error.contains("no valid token"), "{error}");

    // The operator fixes the token: the next reconnect uses it.
    std::fs::write(&token, "n1\n").unwrap();
    let update = tokio::time::timeout(WAIT, updates.recv()).await.expect("served after the fix").unwrap();
    assert_eq!(update.upserts.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>(), ["w1"]);
    // The client names its version, as Istio's proxies do: istiod's pilot_xds{version}.
    let mut metrics = String::new();
    xds.render_metrics(&mut metrics);
    let connected = format!("pilot_xds{{version=\"{}\"}} 1", weft_xds::client::VERSION);
    assert!(metrics.lines().any(|l| l == connected), "{connected} missing:\n{metrics}");
    client.stop().await;
    running.stop(&xds).await;
}
