//! weftd's debug HTTP: `/ready`, `/debug/syncz` (every proxy's sync state, what
//! `weftctl proxy-status` shows), `/debug/config_dump?proxy=ID`, `/debug/diagnostics`.

use crate::{config::diagnostic::Diagnostic, options::Options};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use weft_xds::server::XdsServer;

pub struct DebugView {
    pub xds: XdsServer,
    pub diagnostics: Arc<Mutex<Vec<Diagnostic>>>,
    pub options: Options,
}

pub async fn serve(listener: TcpListener, view: Arc<DebugView>) {
    let handler = move |req: &Request<hyper::body::Incoming>| route(req, &view);
    weft_telemetry::listener::serve_http(listener, Arc::new(handler)).await
}

fn query_param<'a>(req: &'a Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn route(req: &Request<hyper::body::Incoming>, view: &DebugView) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => match view.xds.live_version() {
            Some(v) => reply(StatusCode::OK, format!("ready: serving version {v}\n")),
            None => {
                reply(StatusCode::SERVICE_UNAVAILABLE, "not ready: no configuration published yet\n".into())
            }
        },
        "/debug/syncz" => json(&view.xds.status()),
        "/debug/config_dump" => match query_param(req, "proxy") {
            Some(id) => match view.xds.config_dump(&percent_decode(id)) {
                Ok(dump) => json(&dump),
                Err(e) => reply(StatusCode::NOT_FOUND, format!("{e}\n")),
            },
            None => reply(StatusCode::BAD_REQUEST, "give ?proxy=ID (see /debug/syncz)\n".into()),
        },
        "/debug/diagnostics" => {
            let lines: Vec<String> =
                view.diagnostics.lock().expect("diagnostics lock").iter().map(|d| d.to_string()).collect();
            json(&lines)
        }
        "/debug/options" => json(&view.options),
        _ => reply(
            StatusCode::NOT_FOUND,
            "try /ready, /debug/syncz, /debug/config_dump?proxy=ID, /debug/diagnostics\n".into(),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(body) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body + "\n")))
            .expect("static parts"),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("static parts")
}
