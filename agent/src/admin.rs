//! Admin HTTP on the node's loopback: `/ready`, `/metrics`, `/config_dump`.

use crate::{config::Config, enrollment::EnrollmentStatus, localconfig::ConfigStatus, state::Shared};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Everything the admin endpoints read. Locks here are off the data path.
pub struct AdminView {
    pub config: Config,
    pub shared: Arc<Shared>,
    pub enrollment: Arc<Mutex<EnrollmentStatus>>,
    pub model_source: Arc<Mutex<ConfigStatus>>,
}

pub async fn serve(listener: TcpListener, view: Arc<AdminView>) {
    let handler = move |req: &Request<hyper::body::Incoming>| route(req, &view);
    weft_telemetry::listener::serve_http(listener, Arc::new(handler)).await
}

fn route(req: &Request<hyper::body::Incoming>, view: &AdminView) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/ready" | crate::readiness::PATH => {
            let (status, text) = crate::readiness::answer(&view.enrollment);
            reply(status, "text/plain", text.into())
        }
        "/metrics" | "/stats/prometheus" => {
            reply(StatusCode::OK, weft_telemetry::text::CONTENT_TYPE, exposition(&view.shared))
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(view)),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /ready, /metrics, /stats/prometheus or /config_dump\n".into(),
        ),
    }
}

/// Everything Prometheus reads from the agent: ztunnel's metrics (the agent stands in for
/// ztunnel, so `istio_build{component="ztunnel"}`), the process, the agent's own.
pub fn exposition(shared: &Shared) -> String {
    use weft_telemetry::{Kind, text};
    let mut out = shared.metrics.render();
    let name = "istio_tcp_sockets_open";
    text::family(&mut out, name, Kind::Gauge, "The current number of open TCP sockets.");
    // The connections the proxy carries now, each one accepted socket.
    text::sample(&mut out, name, "", shared.drain.active());
    let name = "weft_hbone_pool_connections";
    text::family(&mut out, name, Kind::Gauge, "Pooled HBONE connections to other pods.");
    text::sample(&mut out, name, "", shared.pool.connections());
    weft_telemetry::render_process(&mut out, "ztunnel", env!("CARGO_PKG_VERSION"));
    out
}

fn config_dump(view: &AdminView) -> String {
    let state = view.shared.state.load();
    let workloads: Vec<&weft_model::Workload> = state.workloads().iter().map(|w| &**w).collect();
    let services: Vec<&weft_model::Service> = state.services().iter().map(|s| &**s).collect();
    // The names of the policies held: a workload that lists one not held yet is refused
    // (fail closed), so tests and operators wait for what they changed to show here.
    let policies = view.shared.policies.load();
    let mut policy_names: Vec<&str> = policies.iter().map(|(name, _)| &**name).collect();
    policy_names.sort_unstable();
    let dump = serde_json::json!({
        "config": view.config,
        "node_id": view.config.node_id(),
        "model_source": &*view.model_source.lock().expect("config status lock"),
        "enrollment": &*view.enrollment.lock().expect("status lock"),
        "connections_active": view.shared.drain.active(),
        "certificates": view.shared.secrets.view(),
        "policies": policy_names,
        "workloads": workloads,
        "services": services,
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
