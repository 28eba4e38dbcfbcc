//! The bench's subscribers: delta ADS streams that behave like agents on the wire (their
//! own connection, node metadata, wildcard ADDRESS, an ACK per response) but keep no
//! state, so a thousand of them fit in the driver next to a 110k-address mesh.
//!
//! They speak gRPC on raw HTTP/2 (h2) with weft-xds's framing: a response is read into a
//! buffer of exactly its size and dropped once handled, where a tonic client would keep a
//! decode buffer as large as the biggest response (the full state, ~30 MB) for the life of
//! each stream. Responses
//! are decoded into a lean mirror of `DeltaDiscoveryResponse` that leaves each resource's
//! `Any` as undecoded bytes; only the resource the probe waits for is decoded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use weft_xds::frame::{self, Deframer};
use weft_xds::istio::workload::{Address, address};
use weft_xds::server::NODE_NAME;
use weft_xds::type_url;

use super::{Probe, unix_ns};

const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Receive windows as tonic sets them by default.
const WINDOW: u32 = 1 << 20;

/// `DeltaDiscoveryResponse` with the fields a subscriber reads (same field numbers).
#[derive(Clone, PartialEq, Message)]
struct LeanResponse {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LeanResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// `Resource` with its `Any` (field 2, a message) kept as the raw bytes of that message.
#[derive(Clone, PartialEq, Message)]
struct LeanResource {
    #[prost(bytes = "bytes", tag = "2")]
    resource: Bytes,
    #[prost(string, tag = "3")]
    name: String,
}

/// Starts subscriber `k` (node `node-k`, id `agent-k`) on its own connection.
pub(super) fn start(addr: SocketAddr, k: usize, probe: Arc<Probe>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = run(addr, k, &probe).await {
            probe.failed(k, format!("{error:#}"));
        }
    })
}

async fn run(addr: SocketAddr, k: usize, probe: &Probe) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = http::Request::post(format!("http://{addr}{DELTA_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(
        frame::encode(&DeltaDiscoveryRequest {
            node: Some(node(k)),
            type_url: type_url::ADDRESS.to_owned(),
            resource_names_subscribe: vec!["*".to_owned()],
            ..Default::default()
        }),
        false,
    )?;
    let response = response.await.context("opening the delta stream")?;
    ensure!(response.status() == http::StatusCode::OK, "HTTP status {}", response.status());
    let mut body = response.into_body();
    let mut deframer = Deframer::new(usize::MAX);
    let mut messages = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("reading the delta stream")?;
        let _ = body.flow_control().release_capacity(chunk.len());
        deframer.push(chunk, &mut messages)?;
        for message in messages.drain(..) {
            let ack = handle(LeanResponse::decode(message)?, k, probe);
            send.send_data(frame::encode(&ack), false)?;
        }
    }
    if let Some(trailers) = body.trailers().await?
        && let Some(status) = trailers.get("grpc-status")
        && status != "0"
    {
        bail!("stream ended with grpc-status {status:?}: {:?}", trailers.get("grpc-message"));
    }
    Ok(())
}

/// Records what the probe waits for; returns the ACK.
fn handle(response: LeanResponse, k: usize, probe: &Probe) -> DeltaDiscoveryRequest {
    let now = unix_ns();
    probe.initial_state(k, response.resources.len());
    if let Some((name, ip, seq)) = probe.target() {
        let hit = response.resources.iter().any(|r| {
            r.name == name
                && weft_xds::Any::decode(r.resource.clone())
                    .ok()
                    .and_then(|any| Address::decode(any.value.as_slice()).ok())
                    .is_some_and(|a| match a.r#type {
                        Some(address::Type::Workload(w)) => w.addresses.iter().any(|a| a == &ip),
                        _ => false,
                    })
        });
        if hit {
            probe.saw(k, seq, now);
        }
    }
    DeltaDiscoveryRequest {
        type_url: response.type_url,
        response_nonce: response.nonce,
        ..Default::default()
    }
}

fn node(k: usize) -> Node {
    let fields =
        HashMap::from([(NODE_NAME.to_owned(), Value { kind: Some(Kind::StringValue(format!("node-{k}"))) })]);
    Node { id: format!("agent-{k}"), metadata: Some(Struct { fields }), ..Default::default() }
}
