//! Admin HTTP on loopback: `/ready` (200 once a first configuration from the control plane
//! and a certificate are held), `/config_dump` (JSON: the resources held by name and
//! version, the dispatch table, the gateway listeners, the certificate, the last NACK),
//! `/stats/prometheus`.

use crate::{config::Config, state::Shared};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything the admin endpoints read. Locks here are off the data path.
pub struct AdminView {
    pub config: Config,
    pub shared: Arc<Shared>,
}

pub async fn serve(listener: TcpListener, view: Arc<AdminView>) {
    let handler = move |req: &Request<hyper::body::Incoming>| route(req, &view);
    weft_telemetry::listener::serve_http(listener, Arc::new(handler)).await
}

/// Whether the waypoint can serve, or why not: what `/ready` here and `/healthz/ready` on
/// the metrics listener answer.
pub fn readiness(shared: &Shared) -> Result<(), String> {
    if shared.ready() {
        Ok(())
    } else if shared.identity.current().is_none() {
        Err("no certificate yet".into())
    } else {
        Err(match shared.proxy_type {
            crate::config::ProxyType::Waypoint => {
                "no configuration from the control plane yet (connect_terminate and main_internal)".into()
            }
            crate::config::ProxyType::Router => "no listeners from the control plane yet".into(),
        })
    }
}

fn route(req: &Request<hyper::body::Incoming>, view: &AdminView) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/ready" | "/healthz/ready" => weft_telemetry::listener::readiness(readiness(&view.shared).err()),
        "/stats/prometheus" | "/metrics" => {
            reply(StatusCode::OK, weft_telemetry::text::CONTENT_TYPE, exposition(&view.shared))
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(view)),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /ready, /config_dump or /stats/prometheus\n".into(),
        ),
    }
}

/// Everything Prometheus reads from the waypoint: Istio's request metrics, `istio_build`
/// as Istio's Envoy-based waypoints and gateways report it (component "proxy", from
/// istio/proxy's stats filter), the ADS connection as Envoy's
/// `xds-grpc` cluster gauge (the control-plane dashboard counts connected proxies by it),
/// the process, and the waypoint's own counters.
pub fn exposition(shared: &Shared) -> String {
    use weft_telemetry::{Kind, text};
    let mut out = shared.metrics.render();
    let name = "envoy_cluster_upstream_cx_active";
    text::family(&mut out, name, Kind::Gauge, "Active connections to the cluster's upstreams.");
    let xds = u8::from(shared.xds_connected.load(std::sync::atomic::Ordering::Relaxed));
    text::sample(&mut out, name, "cluster_name=\"xds-grpc\"", xds);
    let name = "weft_hbone_pool_connections";
    text::family(&mut out, name, Kind::Gauge, "Pooled HBONE connections to endpoints.");
    text::sample(&mut out, name, "", shared.hbone.pool.connections());
    weft_telemetry::render_process(&mut out, "proxy", env!("CARGO_PKG_VERSION"));
    out
}

pub fn config_dump(view: &AdminView) -> String {
    let snapshot = view.shared.snapshot.load();
    let mut dispatch: Vec<(String, &str)> =
        snapshot.dispatch.iter().map(|(a, c)| (a.to_string(), c.name())).collect();
    dispatch.sort_unstable();
    let mut gateways: Vec<(String, &str)> =
        snapshot.gateways.iter().map(|(a, c)| (a.to_string(), c.name())).collect();
    gateways.sort_unstable();
    let mut clusters: Vec<serde_json::Value> = snapshot
        .clusters
        .values()
        .map(|c| {
            serde_json::json!({
                "name": &*c.name,
                "settings": &c.settings,
                "endpoints": c.endpoints.iter().map(|e| serde_json::json!({
                    "address": e.address.to_string(),
                    "identity": e.identity.as_ref().map(ToString::to_string),
                    "active_requests": e.active.load(std::sync::atomic::Ordering::Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    clusters.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let dump = serde_json::json!({
        "config": view.config,
        "node_id": view.config.node_id(),
        "ready": view.shared.ready(),
        "certificate": view.shared.identity.view(),
        "xds": &*view.shared.xds_status.lock().expect("xds status"),
        "terminate": snapshot.terminate,
        "dispatch": dispatch,
        "gateways": gateways,
        "clusters": clusters,
    });
    serde_json::to_string_pretty(&dump).expect("config dump serialises") + "\n"
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
