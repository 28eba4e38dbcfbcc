//! The admission endpoint: `POST /validate` over TLS (istiod's 15017, behind its Service's
//! 443), HTTP/1.1, JSON AdmissionReviews in and out. The TLS connections come from the same
//! listener loop and serving certificate as the secure port (`ca::serving`).

use super::admission::{self, Outcome};
use crate::ca::serving;
use crate::metrics::ControlPlaneMetrics;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tracing::{debug, info};

/// The largest AdmissionReview read: the API server's own request limit is 3 MiB, and a
/// review holds the object twice on UPDATE.
const MAX_BODY: usize = 8 << 20;

/// The path istiod serves validation on (and any path below it).
pub const PATH: &str = "/validate";

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, metrics: Arc<ControlPlaneMetrics>) {
    let mut connections = serving::incoming(listener, tls);
    while let Some(Ok(stream)) = connections.next().await {
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, std::convert::Infallible>(handle(request, &metrics).await) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%error, "webhook: connection failed");
            }
        });
    }
}

/// Answers one HTTP request.
pub async fn handle(request: Request<Incoming>, metrics: &ControlPlaneMetrics) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path != PATH && !path.starts_with("/validate/") {
        return text(StatusCode::NOT_FOUND, format!("weftd's webhook serves POST {PATH} only, not {path}"));
    }
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, format!("POST an AdmissionReview to {PATH}"));
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type.and_then(|c| c.split(';').next()).map(str::trim) != Some("application/json") {
        metrics.webhook_http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16());
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid Content-Type, want `application/json`".into(),
        );
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            metrics.webhook_http_error(StatusCode::BAD_REQUEST.as_u16());
            return text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"));
        }
    };
    if body.is_empty() {
        metrics.webhook_http_error(StatusCode::BAD_REQUEST.as_u16());
        return text(StatusCode::BAD_REQUEST, "no body found: POST an AdmissionReview".into());
    }
    let decision = match admission::review(&body) {
        Ok(decision) => decision,
        Err(e) => {
            metrics.webhook_http_error(StatusCode::BAD_REQUEST.as_u16());
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let (group, version, resource) = &decision.resource;
    match decision.outcome {
        Outcome::Passed => metrics.webhook_passed(group, version, resource),
        Outcome::Failed { reason, counted: true } => metrics.webhook_failed(group, version, resource, reason),
        Outcome::Failed { counted: false, .. } => {}
    }
    if !decision.allowed {
        let message =
            decision.review.response.as_ref().map(|r| r.result.message.as_str()).unwrap_or_default();
        info!(target: "weftd::webhook", %message, "denied");
    }
    match serde_json::to_vec(&decision.review) {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .expect("static response parts are valid"),
        Err(e) => {
            metrics.webhook_http_error(StatusCode::INTERNAL_SERVER_ERROR.as_u16());
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the AdmissionReview: {e}"))
        }
    }
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(message + "\n")))
        .expect("static response parts are valid")
}
