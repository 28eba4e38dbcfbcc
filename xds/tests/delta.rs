//! Delta ADS between the Weft client and the server over a real socket: incremental
//! updates, removals, NACKs, per-proxy scoping and resync after a server restart.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use support::*;
use weft_xds::istio::workload::{Address, address};
use weft_xds::server::{Scope, ServerConfig, Snapshot, SnapshotUpdate, SyncState, XdsServer};
use weft_xds::type_url::{ADDRESS, AUTHORIZATION};

fn config() -> ServerConfig {
    ServerConfig { debounce: Duration::from_millis(10), ..Default::default() }
}

fn workloads(version: &str, items: &[(&str, Scope, u8)]) -> Snapshot {
    let mut s = Snapshot::new(version);
    for (uid, scope, generation) in items {
        s.add(ADDRESS, workload(uid, scope.clone(), *generation));
    }
    s
}

#[tokio::test]
async fn initial_then_only_changes_then_removals_and_nack() {
    let xds = XdsServer::new(config());
    xds.publish(workloads("v1", &[("w1", Scope::All, 1), ("w2", Scope::All, 1), ("w3", Scope::All, 1)]))
        .unwrap();
    let server = Running::start(&xds).await;
    let mut agent = Agent::start(&server.url(), "agent-n1", "n1", &[ADDRESS]);

    let first = agent.next().await;
    assert_eq!(first.type_url, ADDRESS);
    assert_eq!(first.system_version, "v1");
    assert_eq!(upsert_names(&first), ["w1", "w2", "w3"]);
    let decoded: Address = weft_xds::istio::unpack(&first.upserts[0].2).unwrap();
    assert!(matches!(decoded.r#type, Some(address::Type::Workload(_))));

    xds.publish(workloads("v2", &[("w1", Scope::All, 1), ("w2", Scope::All, 2), ("w3", Scope::All, 1)]))
        .unwrap();
    let second = agent.next().await;
    assert_eq!((second.system_version.as_str(), upsert_names(&second)), ("v2", vec!["w2".to_string()]));
    assert!(second.removals.is_empty());

    xds.publish(workloads("v3", &[("w1", Scope::All, 1), ("w2", Scope::All, 2)])).unwrap();
    let third = agent.next().await;
    assert!(third.upserts.is_empty());
    assert_eq!(third.removals, ["w3"]);
    eventually("v3 acked", || {
        status_of(&xds, "agent-n1").is_some_and(|s| s.types[0].acked_version.as_deref() == Some("v3"))
    })
    .await;

    // The handler refuses v4: NACK recorded, acked stays v3, nothing is resent.
    agent.reject.store(true, Ordering::SeqCst);
    xds.publish(workloads("v4", &[("w1", Scope::All, 4), ("w2", Scope::All, 2)])).unwrap();
    assert_eq!(upsert_names(&agent.next().await), ["w1"]);
    eventually("the NACK is recorded", || {
        status_of(&xds, "agent-n1").is_some_and(|s| s.types[0].last_nack.is_some())
    })
    .await;
    let t = status_of(&xds, "agent-n1").unwrap().types.remove(0);
    assert_eq!(t.acked_version.as_deref(), Some("v3"));
    assert_eq!(t.sent_version.as_deref(), Some("v4"));
    assert_eq!(t.state, SyncState::Stale);
    assert_eq!(t.last_nack.unwrap().message, "workload w1: address in use");
    agent.silence(Duration::from_millis(300)).await;

    // The next change carries the rejected resource again with it.
    agent.reject.store(false, Ordering::SeqCst);
    xds.publish(workloads("v5", &[("w1", Scope::All, 4), ("w2", Scope::All, 5)])).unwrap();
    assert_eq!(upsert_names(&agent.next().await), ["w1", "w2"]);
    eventually("v5 synced", || {
        status_of(&xds, "agent-n1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;

    agent.client.stop().await;
    server.stop(&xds).await;
}

#[tokio::test]
async fn each_proxy_sees_its_scope() {
    let xds = XdsServer::new(config());
    let mut snapshot = workloads(
        "v1",
        &[
            ("everyone", Scope::All, 1),
            ("on-n1", Scope::Node("n1".into()), 1),
            ("on-n2", Scope::Node("n2".into()), 1),
            ("for-agent-n2", Scope::Proxy("agent-n2".into()), 1),
            ("in-weft-system", Scope::Namespace("weft-system".into()), 1),
            ("in-other", Scope::Namespace("other".into()), 1),
            ("n1-or-n3", Scope::AnyOf(vec![Scope::Node("n3".into()), Scope::Node("n1".into())]), 1),
        ],
    );
    // A second type on the same stream.
    let policy = weft_xds::istio::security::Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        ..Default::default()
    };
    snapshot.add(
        AUTHORIZATION,
        weft_xds::server::ScopedResource::from_message("ns/p", Scope::Node("n2".into()), &policy),
    );
    xds.publish(snapshot).unwrap();
    let server = Running::start(&xds).await;

    let mut n1 = Agent::start(&server.url(), "agent-n1", "n1", &[ADDRESS, AUTHORIZATION]);
    let mut n2 = Agent::start(&server.url(), "agent-n2", "n2", &[ADDRESS, AUTHORIZATION]);

    let mut seen_n1 = Vec::new();
    let mut seen_n2 = Vec::new();
    for _ in 0..2 {
        let u = n1.next().await;
        seen_n1.extend(upsert_names(&u).into_iter().map(|n| (u.type_url.clone(), n)));
        let u = n2.next().await;
        seen_n2.extend(upsert_names(&u).into_iter().map(|n| (u.type_url.clone(), n)));
    }
    seen_n1.sort();
    seen_n2.sort();
    let a = |n: &str| (ADDRESS.to_string(), n.to_string());
    assert_eq!(seen_n1, [a("everyone"), a("in-weft-system"), a("n1-or-n3"), a("on-n1")]);
    assert_eq!(
        seen_n2,
        [
            (AUTHORIZATION.to_string(), "ns/p".to_string()),
            a("everyone"),
            a("for-agent-n2"),
            a("in-weft-system"),
            a("on-n2")
        ]
    );

    // A change to n2's resource reaches only n2.
    let mut v2 = workloads(
        "v2",
        &[
            ("everyone", Scope::All, 1),
            ("on-n1", Scope::Node("n1".into()), 1),
            ("on-n2", Scope::Node("n2".into()), 2),
            ("for-agent-n2", Scope::Proxy("agent-n2".into()), 1),
            ("in-weft-system", Scope::Namespace("weft-system".into()), 1),
            ("in-other", Scope::Namespace("other".into()), 1),
            ("n1-or-n3", Scope::AnyOf(vec![Scope::Node("n3".into()), Scope::Node("n1".into())]), 1),
        ],
    );
    v2.add(
        AUTHORIZATION,
        weft_xds::server::ScopedResource::from_message("ns/p", Scope::Node("n2".into()), &policy),
    );
    xds.publish(v2).unwrap();
    assert_eq!(upsert_names(&n2.next_change().await), ["on-n2"]);
    n1.silence(Duration::from_millis(300)).await;

    n1.client.stop().await;
    n2.client.stop().await;
    server.stop(&xds).await;
}

#[tokio::test]
async fn reconnect_resyncs_without_resending_what_the_client_holds() {
    let snapshot = || workloads("v1", &[("w1", Scope::All, 1), ("w2", Scope::All, 1)]);
    let first_server = XdsServer::new(config());
    first_server.publish(snapshot()).unwrap();
    let running = Running::start(&first_server).await;
    let addr = running.addr;
    let mut agent = Agent::start(&running.url(), "agent-n1", "n1", &[ADDRESS]);
    assert_eq!(upsert_names(&agent.next().await), ["w1", "w2"]);
    let mut state = agent.client.state();
    eventually("v1 acked", || {
        status_of(&first_server, "agent-n1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;

    running.stop(&first_server).await;
    drop(first_server);
    state.wait_for(|s| !s.connected).await.unwrap();

    // A new server process with the same content on the same port.
    let second_server = XdsServer::new(config());
    second_server.publish(snapshot()).unwrap();
    let running = Running::start_on(&second_server, addr).await;
    tokio::time::timeout(WAIT, state.wait_for(|s| s.connected && s.sessions == 2)).await.unwrap().unwrap();

    // The server answers the resubscription, with nothing in it.
    let resync = agent.next().await;
    assert!(resync.is_empty(), "resent what the client already had: {resync:?}");
    eventually("resync acked", || {
        status_of(&second_server, "agent-n1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;
    let dump = second_server.config_dump("agent-n1").unwrap();
    let held: Vec<_> =
        dump.types[0].resources.iter().map(|r| (r.name.as_str(), r.resource.is_some())).collect();
    // Known to be held by the client's report, and matched to the served content.
    assert_eq!(held, [("w1", true), ("w2", true)]);

    // Later changes are incremental as usual.
    second_server.publish(workloads("v2", &[("w1", Scope::All, 1), ("w2", Scope::All, 2)])).unwrap();
    assert_eq!(upsert_names(&agent.next().await), ["w2"]);

    agent.client.stop().await;
    running.stop(&second_server).await;
}

#[tokio::test]
async fn client_connected_before_the_first_publish_gets_it() {
    let xds = XdsServer::new(config());
    let server = Running::start(&xds).await;
    let mut agent = Agent::start(&server.url(), "agent-n1", "n1", &[ADDRESS]);
    eventually("subscribed", || {
        status_of(&xds, "agent-n1")
            .is_some_and(|s| s.types.first().is_some_and(|t| t.state == SyncState::NotSent))
    })
    .await;
    agent.silence(Duration::from_millis(100)).await;

    xds.publish(workloads("v1", &[("w1", Scope::All, 1), ("w2", Scope::Node("n2".into()), 1)])).unwrap();
    let first = agent.next().await;
    assert_eq!((first.system_version.as_str(), upsert_names(&first)), ("v1", vec!["w1".to_string()]));
    eventually("synced", || {
        status_of(&xds, "agent-n1").is_some_and(|s| s.types[0].state == SyncState::Synced)
    })
    .await;

    agent.client.stop().await;
    server.stop(&xds).await;
}

#[tokio::test]
async fn updates_send_only_the_names_they_change() {
    let xds = XdsServer::new(config());
    xds.publish(workloads("v1", &[("w1", Scope::All, 1), ("w2", Scope::All, 1), ("w3", Scope::All, 1)]))
        .unwrap();
    let server = Running::start(&xds).await;
    let mut agent = Agent::start(&server.url(), "agent-n1", "n1", &[ADDRESS]);
    assert_eq!(upsert_names(&agent.next().await), ["w1", "w2", "w3"]);

    let mut update = SnapshotUpdate::new("v2");
    update.set(ADDRESS, "w2", vec![workload("w2", Scope::All, 2)]);
    update.remove(ADDRESS, "w3");
    // Another node's workload: not this agent's business.
    update.set(ADDRESS, "w4", vec![workload("w4", Scope::Node("n2".into()), 1)]);
    xds.update(update).unwrap();
    let second = agent.next().await;
    assert_eq!(second.system_version, "v2");
    assert_eq!(upsert_names(&second), ["w2"]);
    assert_eq!(second.removals, ["w3"]);

    // An update that changes nothing for this agent sends nothing.
    let mut update = SnapshotUpdate::new("v3");
    update.set(ADDRESS, "w4", vec![workload("w4", Scope::Node("n2".into()), 2)]);
    xds.update(update).unwrap();
    agent.silence(Duration::from_millis(200)).await;
    eventually("synced at v3", || {
        status_of(&xds, "agent-n1")
            .is_some_and(|s| s.types[0].state == SyncState::Synced && s.types[0].resources == 2)
    })
    .await;

    // A full snapshot after updates is diffed against them.
    xds.publish(workloads("v4", &[("w1", Scope::All, 1), ("w2", Scope::All, 2), ("w5", Scope::All, 1)]))
        .unwrap();
    assert_eq!(upsert_names(&agent.next().await), ["w5"]);

    agent.client.stop().await;
    server.stop(&xds).await;
}

/// A proxy that sits on a response while more generations go by than the server keeps
/// change sets for still gets exactly the difference once it acknowledges.
#[tokio::test]
async fn a_stream_behind_the_change_history_gets_the_whole_difference() {
    let xds = XdsServer::new(config());
    xds.publish(workloads("v0", &[("w0", Scope::All, 1)])).unwrap();
    let server = Running::start(&xds).await;
    let mut raw = DeltaClient::connect(
        server.addr,
        DeltaDiscoveryRequest {
            node: Some(node("agent-n1", "n1")),
            type_url: ADDRESS.into(),
            ..Default::default()
        },
    )
    .await;
    let initial = raw.recv().await;
    assert_eq!(initial.resources.len(), 1);

    // Not acknowledged yet: every later change waits for the ACK.
    for g in 1..=80u8 {
        let mut update = SnapshotUpdate::new(format!("v{g}"));
        let name = format!("r{g:03}");
        update.set(ADDRESS, &name, vec![workload(&name, Scope::All, g)]);
        if g == 80 {
            update.remove(ADDRESS, "w0");
        }
        let before = xds.generation();
        xds.update(update).unwrap();
        eventually("the update is live", || xds.generation() > before).await;
    }
    raw.ack(&initial).await;
    let caught_up = raw.recv().await;
    assert_eq!(caught_up.system_version_info, "v80");
    let mut names: Vec<&str> = caught_up.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, (1..=80).map(|g| format!("r{g:03}")).collect::<Vec<_>>());
    assert_eq!(caught_up.removed_resources, ["w0"]);
    raw.ack(&caught_up).await;
    raw.silence(Duration::from_millis(200)).await;
    server.stop(&xds).await;
}

/// Full states go out a few at a time: a second new proxy waits until the first one has
/// acknowledged its large response.
#[tokio::test]
async fn large_pushes_wait_for_the_acks_of_earlier_ones() {
    let xds = XdsServer::new(ServerConfig { large_pushes: 1, ..config() });
    let mut snapshot = Snapshot::new("v1");
    for i in 0..1100 {
        snapshot.add(ADDRESS, workload(&format!("w{i:04}"), Scope::All, 1));
    }
    xds.publish(snapshot).unwrap();
    let server = Running::start(&xds).await;
    let subscribe = |id: &str| DeltaDiscoveryRequest {
        node: Some(node(id, "n1")),
        type_url: ADDRESS.into(),
        ..Default::default()
    };
    let mut first = DeltaClient::connect(server.addr, subscribe("agent-1")).await;
    let full = first.recv().await;
    assert_eq!(full.resources.len(), 1100);
    let mut second = DeltaClient::connect(server.addr, subscribe("agent-2")).await;
    second.silence(Duration::from_millis(300)).await;
    first.ack(&full).await;
    assert_eq!(second.recv().await.resources.len(), 1100);
    server.stop(&xds).await;
}

/// The defect this guards against: four proxies that take a large push and never answer
/// held all four permits for ever, and every later proxy waited for its first
/// configuration. Past the ACK timeout they are closed (DEADLINE_EXCEEDED) and the others
/// served.
#[tokio::test]
async fn proxies_that_never_ack_a_large_push_are_closed_and_stall_nobody() {
    let ack_timeout = Duration::from_secs(3);
    let xds =
        XdsServer::new(ServerConfig { large_pushes: 4, large_push_ack_timeout: ack_timeout, ..config() });
    let mut snapshot = Snapshot::new("v1");
    for i in 0..1100 {
        snapshot.add(ADDRESS, workload(&format!("w{i:04}"), Scope::All, 1));
    }
    xds.publish(snapshot).unwrap();
    let server = Running::start(&xds).await;
    let subscribe = |id: &str| DeltaDiscoveryRequest {
        node: Some(node(id, "n1")),
        type_url: ADDRESS.into(),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let mut stuck = Vec::new();
    for i in 0..4 {
        let mut client = DeltaClient::connect(server.addr, subscribe(&format!("stuck-{i}"))).await;
        assert_eq!(client.recv().await.resources.len(), 1100);
        stuck.push(client);
    }
    let mut late = DeltaClient::connect(server.addr, subscribe("late")).await;
    // The throttle still holds while the four may yet answer…
    late.silence(Duration::from_millis(500)).await;
    // …and gives way once they have had their time.
    let full = late.recv().await;
    assert_eq!(full.resources.len(), 1100);
    assert!(started.elapsed() >= ack_timeout, "served before the stuck proxies timed out");
    for mut client in stuck {
        let status =
            tokio::time::timeout(WAIT, client.rx.message()).await.expect("closed in time").unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
    late.ack(&full).await;
    server.stop(&xds).await;
}
