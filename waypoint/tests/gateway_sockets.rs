//! Gateway listeners in process: weft-waypoint fed by an in-process ADS server binds a
//! plain-HTTP socket per `gateway_<port>` listener, serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) on it through the same route table and HBONE upstreams as a waypoint chain,
//! refuses (NACK, naming the field) a listener whose port it cannot bind while the rest
//! keeps working, and closes and reopens sockets as LDS removes and adds listeners.
//! Loopback only, no root.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::{
        core::v3::{Address, SocketAddress, address, socket_address::PortSpecifier},
        listener::v3::{Filter, FilterChain, Listener, filter},
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds,
        http_connection_manager::{RouteSpecifier, StripPortMode},
    },
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{net::SocketAddr, time::Duration};
use support::{Mesh, NS, REVIEWS, resources};
use weft_xds::{
    server::{Scope, ScopedResource, Snapshot},
    type_url,
};

/// weftd's gateway listener shape (`translate/envoy/listener.rs` `http`) on `address`,
/// routed by the test mesh's reviews table; `stat_prefix` makes each version a change
/// (a control plane resends only what changed, so a refused listener is retried then).
fn gateway_listener(address: SocketAddr, stat_prefix: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: REVIEWS.into(),
        })),
        http_filters: vec![
            HttpFilter { name: "envoy.filters.http.fault".into(), ..Default::default() },
            HttpFilter { name: "envoy.filters.http.router".into(), ..Default::default() },
        ],
        strip_port_mode: Some(StripPortMode::StripAnyHostPort(true)),
        ..Default::default()
    };
    Listener {
        name: format!("gateway_{}", address.port()),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.ip().to_string(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(address.port()))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(resources::any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The test mesh's resources, plus these gateway listeners.
fn with_gateways(mesh: &Mesh, version: &str, gateways: &[SocketAddr]) -> Snapshot {
    let mut s = support::snapshot(version, mesh.hbone_port, support::main_internal(), &mesh.backend_refs());
    for address in gateways {
        let l = gateway_listener(*address, version);
        s.add(
            type_url::LISTENER,
            ScopedResource::from_message(l.name.clone(), Scope::Namespace(NS.into()), &l),
        );
    }
    s
}

/// A loopback port nothing listens on now.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// One plain request to a gateway listener: (status, x-backend, body).
async fn get(to: SocketAddr, host: &str, path: &str, http2: bool) -> (StatusCode, String, String) {
    let tcp = tokio::net::TcpStream::connect(to).await.expect("the gateway listener accepts");
    let io = TokioIo::new(tcp);
    let request =
        |uri: String| Request::builder().uri(uri).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let mut req = request(format!("http://{host}{path}"));
        req.headers_mut().remove("host");
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request(path.to_owned())).await.unwrap()
    };
    let status = response.status();
    let backend =
        response.headers().get("x-backend").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, backend, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn gateway_listeners_are_bound_served_refused_and_closed_as_lds_says() {
    let mesh = Mesh::start().await;
    let open = free_port();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_at = taken.local_addr().unwrap();
    mesh.ads.server.publish(with_gateways(&mesh, "g1", &[open, taken_at])).unwrap();
    mesh.wait_for("the open gateway listener", |m| {
        m.waypoint.shared.snapshot.load().gateways.contains_key(&open)
    })
    .await;
    mesh.wait_for("the NACK of the taken port", |m| {
        m.waypoint.shared.xds_status.lock().unwrap().last_nack.contains_key(type_url::LISTENER)
    })
    .await;
    let nack = mesh.waypoint.shared.xds_status.lock().unwrap().last_nack[type_url::LISTENER].clone();
    assert!(
        nack.starts_with(&format!(
            "listener gateway_{}: address.socket_address: cannot bind {taken_at}: ",
            taken_at.port()
        )),
        "{nack}"
    );
    assert!(nack.contains("another listener or process holds it"), "{nack}");

    // The bound one serves plain HTTP/1.1 and h2c through the reviews table, the Host's
    // port stripped for routing and upstream.
    let (status, backend, _) = get(open, "reviews.bookinfo.svc.cluster.local:8080", "/", false).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "reviews-v1"));
    let seen = mesh.backend("reviews-v1").seen.lock().unwrap().last().unwrap().host.clone();
    assert_eq!(
        seen.as_deref(),
        Some("reviews.bookinfo.svc.cluster.local"),
        "the stripped Host goes upstream"
    );
    let (status, backend, _) = get(open, "reviews.bookinfo.svc.cluster.local", "/v2", true).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "reviews-v2"), "HTTP/2 prior knowledge");
    // The rest keeps working: the waypoint's HBONE path.
    assert_eq!(mesh.client.h1("GET", "/", "").await.status, StatusCode::OK);
    // The gateway's requests are counted as Istio's gateways count them.
    let text = mesh.waypoint.shared.metrics.render();
    assert!(text.contains("reporter=\"source\""), "{text}");

    // The port is freed: the next update of the listener binds it.
    drop(taken);
    mesh.ads.server.publish(with_gateways(&mesh, "g2", &[open, taken_at])).unwrap();
    mesh.wait_for("the freed port bound", |m| {
        m.waypoint.shared.snapshot.load().gateways.contains_key(&taken_at)
    })
    .await;
    let (status, backend, _) = get(taken_at, "reviews.bookinfo.svc.cluster.local", "/", false).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "reviews-v1"));

    // Removed from LDS: its socket closes; added again: open again.
    mesh.ads.server.publish(with_gateways(&mesh, "g3", &[taken_at])).unwrap();
    mesh.wait_for("the listener removed", |m| {
        !m.waypoint.shared.snapshot.load().gateways.contains_key(&open)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(open).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{open} still accepts after its listener went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mesh.ads.server.publish(with_gateways(&mesh, "g4", &[open, taken_at])).unwrap();
    mesh.wait_for("the listener back", |m| m.waypoint.shared.snapshot.load().gateways.contains_key(&open))
        .await;
    let (status, _, _) = get(open, "reviews.bookinfo.svc.cluster.local", "/", false).await;
    assert_eq!(status, StatusCode::OK);
}
