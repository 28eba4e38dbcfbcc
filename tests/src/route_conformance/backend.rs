//! The test backends, one per pod, the same for both proxy kinds: each answers with its
//! pod's name and an echo of what it received, and can be told to fail or delay the next
//! requests; it counts what it served. The Envoy arm reaches them over plain TCP, the
//! weft-waypoint arm over HBONE: the HTTP inside is served here either way, in whichever
//! version the proxy speaks.

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a backend does with the next requests; shared with its server task.
#[derive(Default)]
pub struct Backend {
    pub(super) name: String,
    hits: AtomicU64,
    connections: AtomicU64,
    fail_next: AtomicU32,
    fail_status: AtomicU32,
    delay_ms: AtomicU64,
    last_host: std::sync::Mutex<String>,
}

impl Backend {
    pub(super) fn new(name: &str) -> Backend {
        Backend { name: name.to_owned(), ..Default::default() }
    }

    /// The Host of the last request it received.
    pub fn last_host(&self) -> String {
        self.last_host.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The pod this backend stands for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests it received, failed ones included.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections it accepted: TCP connections from Envoy, HBONE streams from
    /// weft-waypoint (each carries one upstream HTTP connection).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Answer the next `n` requests with `status` (and no body).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.fail_status.store(u32::from(status), Ordering::SeqCst);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Wait this long before answering each request.
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.fail_next.store(0, Ordering::SeqCst);
        self.delay_ms.store(0, Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 connections accepted on `listener`, one task each.
pub(super) async fn serve(listener: tokio::net::TcpListener, b: Arc<Backend>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        tokio::spawn(serve_io(stream, b.clone()));
    }
}

/// Serves one connection (a TCP stream, or an HBONE tunnel), HTTP/1.1 or HTTP/2.
pub(super) async fn serve_io<IO>(io: IO, b: Arc<Backend>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    b.connections.fetch_add(1, Ordering::SeqCst);
    let service = service_fn(move |req| answer(b.clone(), req));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn answer(
    b: Arc<Backend>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    b.hits.fetch_add(1, Ordering::SeqCst);
    // HTTP/2 carries the Host as :authority, which hyper keeps in the URI.
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_owned();
    if let Ok(mut last) = b.last_host.lock() {
        last.clone_from(&host);
    }
    let delay = b.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = b.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if failing {
        let status = b.fail_status.load(Ordering::SeqCst) as u16;
        return Ok(Response::builder()
            .status(status)
            .header("x-pod", b.name.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a response"));
    }
    // Repeated headers joined with commas, as HTTP allows.
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), serde_json::Value::String(v));
            }
        }
    }
    let echo = serde_json::json!({
        "pod": b.name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": host,
        "headers": headers,
    });
    Ok(Response::builder()
        .header("x-pod", b.name.as_str())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(echo.to_string())))
        .expect("a response"))
}
