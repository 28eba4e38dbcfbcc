//! Kubernetes' readiness probe on its own listener (`--readiness-addr`, 15021 in the
//! DaemonSet, as ztunnel's): `GET /healthz/ready` answers 200 once the agent has reconciled
//! its pods, 503 before. It is the admin port's readiness, without the admin port's other
//! endpoints: the kubelet must reach it on the pod IP, and `/config_dump` must not be.

use crate::enrollment::EnrollmentStatus;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The path the DaemonSet's probe asks for.
pub const PATH: &str = "/healthz/ready";

/// The readiness answer, shared with the admin port's `/ready`.
pub fn answer(status: &Mutex<EnrollmentStatus>) -> (StatusCode, &'static str) {
    if status.lock().expect("status lock").reconciled {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: pods not reconciled yet\n")
    }
}

/// Serves `GET /healthz/ready` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: Arc<Mutex<EnrollmentStatus>>) {
    let handler = move |req: &Request<Incoming>| {
        let (code, text) = match (req.method(), req.uri().path()) {
            (&Method::GET, PATH) => answer(&status),
            (&Method::GET, _) => (StatusCode::NOT_FOUND, "only /healthz/ready here\n"),
            _ => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
        };
        Response::builder()
            .status(code)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .expect("static response parts are valid")
    };
    weft_telemetry::listener::serve_http(listener, Arc::new(handler)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn ready_only_once_pods_are_reconciled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(Mutex::new(EnrollmentStatus::default()));
        let server = tokio::spawn(serve(listener, status.clone()));

        let reply = get(addr, "GET", PATH).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.ends_with("not ready: pods not reconciled yet\n"), "{reply}");

        status.lock().unwrap().reconciled = true;
        let reply = get(addr, "GET", PATH).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("ready\n"), "{reply}");

        assert!(
            get(addr, "GET", "/config_dump").await.starts_with("HTTP/1.1 404"),
            "admin endpoints stay off"
        );
        assert!(get(addr, "POST", PATH).await.starts_with("HTTP/1.1 405"));
        server.abort();
    }
}
