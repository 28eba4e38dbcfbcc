//! Subscriptions by name on the delta client (RDS and EDS as Envoy subscribes to them):
//! only the names asked for arrive, a changed set (un)subscribes on the open stream, and a
//! reconnect asks for the same set again.

mod support;

use std::collections::BTreeSet;
use support::*;
use tokio::sync::mpsc;
use weft_xds::client::{AdsClient, ClientConfig, Subscriptions, Update};
use weft_xds::server::{ServerConfig, Snapshot, XdsServer};
use weft_xds::type_url;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn next_clusters(updates: &mut mpsc::UnboundedReceiver<Update>) -> Update {
    loop {
        let u =
            tokio::time::timeout(WAIT, updates.recv()).await.expect("an update in time").expect("running");
        if u.type_url == type_url::CLUSTER && !u.is_empty() {
            return u;
        }
    }
}

#[tokio::test]
async fn only_the_names_subscribed_arrive_and_a_new_set_follows_on_the_stream() {
    let xds = XdsServer::new(ServerConfig::default());
    let mut snapshot = Snapshot::new("1");
    for name in ["c1", "c2", "c3"] {
        snapshot.add(type_url::CLUSTER, cluster(name, 1));
    }
    xds.publish(snapshot).unwrap();
    let server = Running::start(&xds).await;

    let subscriptions = Subscriptions::default();
    subscriptions.set(type_url::CLUSTER, set(&["c1"]));
    let mut config = ClientConfig::new(server.url(), "waypoint~1", vec![type_url::LISTENER.to_owned()]);
    config.subscriptions = Some(subscriptions.clone());
    let (tx, mut updates) = mpsc::unbounded_channel();
    let client = AdsClient::start(config, move |u: Update| {
        let _ = tx.send(u);
        Ok(())
    })
    .unwrap();

    assert_eq!(upsert_names(&next_clusters(&mut updates).await), ["c1"], "not a wildcard");
    subscriptions.set(type_url::CLUSTER, set(&["c2", "c3"]));
    assert_eq!(upsert_names(&next_clusters(&mut updates).await), ["c2", "c3"]);
    eventually("the server to hold the new set for the proxy", || {
        status_of(&xds, "waypoint~1")
            .is_some_and(|s| s.types.iter().any(|t| t.type_url == type_url::CLUSTER && t.resources == 2))
    })
    .await;

    // weftd restarts on the same port: the client asks for the same names again.
    let addr = server.addr;
    server.stop(&xds).await;
    let xds = XdsServer::new(ServerConfig::default());
    let mut snapshot = Snapshot::new("2");
    for name in ["c1", "c2", "c3"] {
        snapshot.add(type_url::CLUSTER, cluster(name, 2));
    }
    xds.publish(snapshot).unwrap();
    let _server = Running::start_on(&xds, addr).await;
    assert_eq!(
        upsert_names(&next_clusters(&mut updates).await),
        ["c2", "c3"],
        "the set, changed resources only"
    );
    client.stop().await;
}
