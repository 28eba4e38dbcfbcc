//! State-of-the-world ADS against a raw envoy-types client over a real socket.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc;
use support::*;
use weft_xds::server::{ServerConfig, Snapshot, SyncState, XdsServer};
use weft_xds::type_url::{CLUSTER, ENDPOINT};

fn config() -> ServerConfig {
    ServerConfig { debounce: Duration::from_millis(10), ..Default::default() }
}

fn clusters(version: &str, items: &[(&str, i64)]) -> Snapshot {
    let mut s = Snapshot::new(version);
    for (name, timeout) in items {
        s.add(CLUSTER, cluster(name, *timeout));
    }
    s
}

#[tokio::test]
async fn ack_nack_and_recovery() {
    let xds = XdsServer::new(config());
    xds.publish(clusters("v1", &[("a", 1), ("b", 1)])).unwrap();
    let server = Running::start(&xds).await;

    let mut client = SotwClient::connect(
        server.addr,
        DiscoveryRequest {
            node: Some(node("envoy-1", "n1")),
            type_url: CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    let v1 = client.recv().await;
    assert_eq!(v1.version_info, "v1");
    assert!(!v1.nonce.is_empty());
    assert_eq!(names(&v1), ["a", "b"]);
    client.ack(&v1).await;
    eventually("v1 acked", || {
        status_of(&xds, "envoy-1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;

    // v2 arrives with a fresh nonce; NACK it.
    xds.publish(clusters("v2", &[("a", 1), ("b", 2)])).unwrap();
    let v2 = client.recv().await;
    assert_eq!(v2.version_info, "v2");
    assert_ne!(v2.nonce, v1.nonce);
    client
        .send(DiscoveryRequest {
            type_url: CLUSTER.into(),
            version_info: "v1".into(),
            response_nonce: v2.nonce.clone(),
            error_detail: Some(rpc::Status {
                code: 3,
                message: "cluster b: bad timeout".into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    eventually("the NACK is recorded", || {
        status_of(&xds, "envoy-1").is_some_and(|s| s.types[0].last_nack.is_some())
    })
    .await;
    let status = status_of(&xds, "envoy-1").unwrap();
    let t = &status.types[0];
    assert_eq!(t.type_url, CLUSTER);
    assert_eq!(t.acked_version.as_deref(), Some("v1"));
    assert_eq!(t.sent_version.as_deref(), Some("v2"));
    assert_eq!(t.state, SyncState::Stale);
    let nack = t.last_nack.as_ref().unwrap();
    assert_eq!((nack.version.as_str(), nack.message.as_str()), ("v2", "cluster b: bad timeout"));

    // No resend loop; a stale nonce (v1's) is ignored.
    client.ack(&v1).await;
    client.silence(Duration::from_millis(300)).await;
    assert_eq!(status_of(&xds, "envoy-1").unwrap().types[0].acked_version.as_deref(), Some("v1"));

    // A snapshot that does not change clusters is not sent either.
    xds.publish(clusters("v2b", &[("a", 1), ("b", 2)])).unwrap();
    client.silence(Duration::from_millis(300)).await;

    // A newer snapshot is.
    xds.publish(clusters("v3", &[("a", 1), ("b", 3)])).unwrap();
    let v3 = client.recv().await;
    assert_eq!(v3.version_info, "v3");
    assert_eq!(names(&v3), ["a", "b"]);
    client.ack(&v3).await;
    eventually("v3 acked", || {
        status_of(&xds, "envoy-1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;

    let dump = xds.config_dump("envoy-1").unwrap();
    assert_eq!(dump.types[0].sent_version.as_deref(), Some("v3"));
    let dumped: Vec<_> = dump.types[0].resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(dumped, ["a", "b"]);
    assert!(dump.types[0].resources.iter().all(|r| r.value_base64.is_some()));
    assert!(xds.config_dump("nobody").unwrap_err().to_string().contains("envoy-1"));

    server.stop(&xds).await;
}

#[tokio::test]
async fn several_types_and_named_subscriptions_on_one_stream() {
    let xds = XdsServer::new(config());
    let mut snapshot = clusters("v1", &[("a", 1), ("b", 1)]);
    // Endpoint resources are only checked for type and name here; clusters' bytes will do
    // as long as the Any says ClusterLoadAssignment.
    for name in ["a", "b"] {
        let mut r = cluster(name, 1);
        r.resource.type_url = ENDPOINT.into();
        snapshot.add(ENDPOINT, r);
    }
    xds.publish(snapshot).unwrap();
    let server = Running::start(&xds).await;

    let mut client = SotwClient::connect(
        server.addr,
        DiscoveryRequest {
            node: Some(node("envoy-2", "n1")),
            type_url: CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    let cds = client.recv().await;
    assert_eq!(names(&cds), ["a", "b"]);
    client.ack(&cds).await;

    client
        .send(DiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names: vec!["b".into()],
            ..Default::default()
        })
        .await;
    let eds = client.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(names(&eds), ["b"]);
    client.ack_names(&eds, &["b"]).await;

    // Widen the subscription in the ACK-style request: the new name is sent.
    client
        .send(DiscoveryRequest {
            type_url: ENDPOINT.into(),
            version_info: eds.version_info.clone(),
            response_nonce: eds.nonce.clone(),
            resource_names: vec!["a".into(), "b".into()],
            ..Default::default()
        })
        .await;
    let eds2 = client.recv().await;
    assert_eq!(names(&eds2), ["a", "b"]);
    client.ack_names(&eds2, &["a", "b"]).await;

    // A snapshot that changes clusters only: endpoints are not sent again.
    let mut snapshot = clusters("v2", &[("a", 1), ("b", 2)]);
    for name in ["a", "b"] {
        let mut r = cluster(name, 1);
        r.resource.type_url = ENDPOINT.into();
        snapshot.add(ENDPOINT, r);
    }
    xds.publish(snapshot).unwrap();
    let next = client.recv().await;
    assert_eq!((next.type_url.as_str(), next.version_info.as_str()), (CLUSTER, "v2"));
    client.silence(Duration::from_millis(300)).await;

    let status = status_of(&xds, "envoy-2").unwrap();
    let types: Vec<_> = status.types.iter().map(|t| t.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, ENDPOINT]);
    server.stop(&xds).await;
}
