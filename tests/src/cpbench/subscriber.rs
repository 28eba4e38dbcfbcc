//! The bench's subscribers: delta ADS streams that behave like agents on the wire (their
//! own connection, node metadata, wildcard ADDRESS, an ACK per response) but keep no
//! state, so a thousand of them fit in the driver next to a 110k-address mesh.
//!
//! Responses are decoded into a lean mirror of `DeltaDiscoveryResponse` that leaves each
//! resource's `Any` as undecoded bytes; only the resource the probe waits for is decoded.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use weft_xds::istio::workload::{Address, address};
use weft_xds::server::NODE_NAME;
use weft_xds::type_url;

use super::{Probe, unix_ns};

const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

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
    resource: bytes::Bytes,
    #[prost(string, tag = "3")]
    name: String,
}

/// Starts subscriber `k` (node `node-k`, id `agent-k`) on its own connection.
pub(super) fn start(endpoint: String, k: usize, probe: Arc<Probe>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = run(&endpoint, k, &probe).await {
            probe.failed(k, format!("{error:#}"));
        }
    })
}

async fn run(endpoint: &str, k: usize, probe: &Probe) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect()
        .await
        .with_context(|| format!("subscriber {k}: connecting to {endpoint}"))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    grpc.ready().await.context("channel not ready")?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(k)),
        type_url: type_url::ADDRESS.to_owned(),
        resource_names_subscribe: vec!["*".to_owned()],
        ..Default::default()
    })
    .await?;
    let codec = tonic_prost::ProstCodec::<DeltaDiscoveryRequest, LeanResponse>::default();
    let mut responses = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), PathAndQuery::from_static(DELTA_PATH), codec)
        .await
        .context("opening the delta stream")?
        .into_inner();
    while let Some(response) = responses.message().await.context("reading the delta stream")? {
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
        let ack = DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn node(k: usize) -> Node {
    let fields = HashMap::from([(
        NODE_NAME.to_owned(),
        Value { kind: Some(Kind::StringValue(format!("node-{k}"))) },
    )]);
    Node { id: format!("agent-{k}"), metadata: Some(Struct { fields }), ..Default::default() }
}
