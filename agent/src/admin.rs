//! Admin HTTP on the node's loopback: `/ready`, `/metrics`, `/config_dump`.

use crate::{config::Config, enrollment::EnrollmentStatus, localconfig::ConfigStatus, state::Shared};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tracing::debug;

/// Everything the admin endpoints read. Locks here are off the data path.
pub struct AdminView {
    pub config: Config,
    pub shared: Arc<Shared>,
    pub enrollment: Arc<Mutex<EnrollmentStatus>>,
    pub model_source: Arc<Mutex<ConfigStatus>>,
}

pub async fn serve(listener: TcpListener, view: Arc<AdminView>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let view = view.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&req, &view)) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%error, "admin connection failed");
            }
        });
    }
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
        "/metrics" => {
            let mut text = view.shared.metrics.render();
            text.push_str(&format!(
                "# HELP weft_hbone_pool_connections Pooled HBONE connections to other pods.\n\
                 # TYPE weft_hbone_pool_connections gauge\nweft_hbone_pool_connections {}\n",
                view.shared.pool.connections()
            ));
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(view)),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /ready, /metrics or /config_dump\n".into()),
    }
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
