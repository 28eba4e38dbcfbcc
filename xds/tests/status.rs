//! Operator status: SYNCED / STALE / NOT SENT as proxies progress.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use support::*;
use weft_xds::server::{Protocol, Scope, ServerConfig, Snapshot, SyncState, XdsServer};
use weft_xds::type_url::{ADDRESS, CLUSTER};

fn state(xds: &XdsServer, proxy: &str) -> Option<SyncState> {
    status_of(xds, proxy).and_then(|s| s.types.first().map(|t| t.state))
}

#[tokio::test]
async fn sotw_not_sent_then_stale_then_synced() {
    let xds = XdsServer::new(ServerConfig { debounce: Duration::from_millis(10), ..Default::default() });
    let server = Running::start(&xds).await;
    let mut client = SotwClient::connect(
        server.addr,
        DiscoveryRequest { node: Some(node("envoy", "n1")), type_url: CLUSTER.into(), ..Default::default() },
    )
    .await;
    eventually("subscription visible", || state(&xds, "envoy") == Some(SyncState::NotSent)).await;
    let status = status_of(&xds, "envoy").unwrap();
    assert_eq!((status.protocol, status.node_name.as_deref()), (Protocol::StateOfTheWorld, Some("n1")));

    xds.publish(Snapshot::new("v1").with(CLUSTER, cluster("a", 1))).unwrap();
    let v1 = client.recv().await;
    assert_eq!(state(&xds, "envoy"), Some(SyncState::Stale), "sent, not acked");
    client.ack(&v1).await;
    eventually("acked", || state(&xds, "envoy") == Some(SyncState::Synced)).await;

    let json = serde_json::to_value(xds.status()).unwrap();
    assert_eq!(json[0]["types"][0]["state"], "SYNCED");
    assert_eq!(json[0]["types"][0]["acked_version"], "v1");

    xds.publish(Snapshot::new("v2").with(CLUSTER, cluster("a", 2))).unwrap();
    let v2 = client.recv().await;
    assert_eq!(state(&xds, "envoy"), Some(SyncState::Stale));
    client.ack(&v2).await;
    eventually("acked", || state(&xds, "envoy") == Some(SyncState::Synced)).await;

    drop(client);
    eventually("disconnect removes the proxy", || status_of(&xds, "envoy").is_none()).await;
    server.stop(&xds).await;
}

#[tokio::test]
async fn delta_holds_back_pushes_until_the_ack_and_reports_stale() {
    let xds = XdsServer::new(ServerConfig { debounce: Duration::from_millis(10), ..Default::default() });
    xds.publish(Snapshot::new("v1").with(ADDRESS, workload("w1", Scope::All, 1))).unwrap();
    let server = Running::start(&xds).await;
    let mut client = DeltaClient::connect(
        server.addr,
        DeltaDiscoveryRequest {
            node: Some(node("agent", "n1")),
            type_url: ADDRESS.into(),
            ..Default::default()
        },
    )
    .await;
    let v1 = client.recv().await;
    assert_eq!(v1.system_version_info, "v1");
    assert_eq!(state(&xds, "agent"), Some(SyncState::Stale));

    // Not acked yet: v2 waits, and status says the proxy is behind.
    xds.publish(Snapshot::new("v2").with(ADDRESS, workload("w1", Scope::All, 2))).unwrap();
    client.silence(Duration::from_millis(300)).await;
    let t = status_of(&xds, "agent").unwrap().types.remove(0);
    assert_eq!((t.sent_version.as_deref(), t.current_version.as_deref()), (Some("v1"), Some("v2")));
    assert_eq!(t.state, SyncState::Stale);

    client.ack(&v1).await;
    let v2 = client.recv().await;
    assert_eq!(v2.system_version_info, "v2");
    assert_eq!(v2.resources.len(), 1);
    client.ack(&v2).await;
    eventually("synced", || state(&xds, "agent") == Some(SyncState::Synced)).await;

    // A snapshot that does not touch this proxy's view leaves it SYNCED.
    xds.publish(
        Snapshot::new("v3")
            .with(ADDRESS, workload("w1", Scope::All, 2))
            .with(ADDRESS, workload("elsewhere", Scope::Node("n9".into()), 1)),
    )
    .unwrap();
    client.silence(Duration::from_millis(300)).await;
    assert_eq!(state(&xds, "agent"), Some(SyncState::Synced));

    // Unsubscribing a wildcard and subscribing by name: only that name.
    client
        .tx
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS.into(),
            resource_names_unsubscribe: vec!["*".into()],
            resource_names_subscribe: vec!["w1".into(), "missing".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    client.silence(Duration::from_millis(300)).await;
    assert_eq!(xds.config_dump("agent").unwrap().types[0].resources.len(), 1);
    server.stop(&xds).await;
}
