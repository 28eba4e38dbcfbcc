//! The metrics listener: `/stats/prometheus` and `/metrics`, and `/healthz/ready` where the
//! process has a readiness to show (a waypoint's 15020 answers it, as pilot-agent's status
//! port does), and nothing else, so it can be bound on every interface (ztunnel's and a
//! waypoint's 15020, istiod's 15014) while the admin endpoints stay on loopback.

use crate::text::CONTENT_TYPE;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::debug;

/// Makes the exposition text when Prometheus scrapes.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Answers one request of a small HTTP/1.1 endpoint (metrics, admin, debug).
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Answers whether the process is ready to serve: `Ok(())`, or why not.
pub type Ready = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The path Kubernetes' readiness probes ask for.
pub const READY_PATH: &str = "/healthz/ready";

/// Serves `render` (and `ready` on [`READY_PATH`], when given) on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, render: Render, ready: Option<Ready>) {
    serve_http(
        listener,
        Arc::new(move |req: &Request<Incoming>| match (req.method(), req.uri().path(), &ready) {
            (&Method::GET, READY_PATH, Some(ready)) => readiness(ready().err()),
            _ => route(req, &*render),
        }),
    )
    .await
}

/// The readiness answer: 200 `ready`, or 503 with the reason.
pub fn readiness(not_ready: Option<String>) -> Response<Full<Bytes>> {
    let (status, body) = match not_ready {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Serves `handler` on `listener`, one task per connection, until the task is dropped:
/// the loop the agent's and the waypoint's admin and weftd's debug endpoints share.
pub async fn serve_http(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(&req)) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%error, "HTTP connection failed");
            }
        });
    }
}

/// The answer to one request: the two paths Prometheus is pointed at, GET only.
pub fn route<B>(req: &Request<B>, render: &(dyn Fn() -> String + Send + Sync)) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats/prometheus" | "/metrics") => (StatusCode::OK, CONTENT_TYPE, render()),
        (&Method::GET, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "only /stats/prometheus and /metrics here\n".to_owned())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".to_owned()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_two_metrics_paths_only() {
        let render = || "x 1\n".to_owned();
        for (path, want) in
            [("/stats/prometheus", 200), ("/metrics", 200), ("/config_dump", 404), ("/quitquitquit", 404)]
        {
            let req = Request::get(path).body(()).unwrap();
            assert_eq!(route(&req, &render).status().as_u16(), want, "{path}");
        }
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(route(&post, &render).status().as_u16(), 405);
    }
}
