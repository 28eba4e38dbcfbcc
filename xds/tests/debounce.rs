//! Bursts of publishes become few pushes, and the last state always arrives.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use support::*;
use weft_xds::server::{ServerConfig, Snapshot, XdsServer};
use weft_xds::type_url::CLUSTER;

fn snapshot(i: i64) -> Snapshot {
    Snapshot::new(format!("v{i}")).with(CLUSTER, cluster("a", i)).with(CLUSTER, cluster("b", 1))
}

#[tokio::test]
async fn fifty_publishes_make_few_pushes_over_the_wire() {
    let xds = XdsServer::new(ServerConfig { debounce: Duration::from_millis(100), ..Default::default() });
    xds.publish(snapshot(0)).unwrap();
    let server = Running::start(&xds).await;
    let mut client = SotwClient::connect(
        server.addr,
        DiscoveryRequest { node: Some(node("envoy", "n1")), type_url: CLUSTER.into(), ..Default::default() },
    )
    .await;
    let v0 = client.recv().await;
    assert_eq!(v0.version_info, "v0");
    client.ack(&v0).await;
    let generation_before = xds.generation();

    for i in 1..=50 {
        xds.publish(snapshot(i)).unwrap();
    }
    let mut pushes = 0;
    loop {
        let r = client.recv().await;
        pushes += 1;
        client.ack(&r).await;
        if r.version_info == "v50" {
            break;
        }
    }
    assert!(pushes <= 3, "{pushes} pushes for one burst");
    assert!(xds.generation() - generation_before <= 3);
    client.silence(Duration::from_millis(300)).await;
    server.stop(&xds).await;
}

/// Deterministic timing with the paused clock: the quiet period restarts with every publish,
/// but never beyond `debounce_max`.
#[tokio::test(start_paused = true)]
async fn quiet_period_and_maximum_delay() {
    let xds = XdsServer::new(ServerConfig {
        debounce: Duration::from_millis(100),
        debounce_max: Duration::from_secs(1),
        ..Default::default()
    });

    // 50 publishes 10 ms apart (490 ms): one snapshot, 100 ms after the last.
    for i in 1..=50 {
        xds.publish(snapshot(i)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(xds.generation(), 0, "nothing goes live during the burst");
    tokio::time::sleep(Duration::from_millis(100)).await;
    settle(&xds, 1).await;
    assert_eq!(xds.live_version().as_deref(), Some("v50"));

    // A publish every 50 ms for 3 s never leaves a quiet period: the maximum delay still
    // lets one through each second.
    for i in 100..160 {
        xds.publish(snapshot(i)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = xds.generation() - 1;
    assert!((2..=4).contains(&during), "{during} snapshots in 3 s of churn");
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle(&xds, during + 2).await;
    assert_eq!(xds.live_version().as_deref(), Some("v159"));
}

/// Lets the debouncer's blocking preparation finish.
async fn settle(xds: &XdsServer, generation: u64) {
    for _ in 0..1000 {
        if xds.generation() >= generation {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("generation {} never reached {generation}", xds.generation());
}
