//! The demo's live page: per Bookinfo service, the request rate, the error rate and the
//! p99 latency, asked of Prometheus at every load of the page (which reloads itself every
//! two seconds). Served by the demo process on the host's loopback; Prometheus is reached
//! in its node's network namespace.
//!
//! The numbers are the waypoint's (`reporter="waypoint"`): every call in the namespace
//! goes through it, so it sees each service's every request.

use crate::prometheus::{Api, value};
use anyhow::{Context, Result};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Rates over this window: long enough for a few scrapes, short enough to follow a step.
pub const WINDOW: &str = "30s";

/// The queries behind the page, by column; each sums by `destination_service_name`.
pub fn queries() -> [(&'static str, String); 3] {
    let sel = r#"reporter="waypoint",destination_service_namespace="bookinfo""#;
    [
        (
            "requests_per_second",
            format!("sum by (destination_service_name) (rate(istio_requests_total{{{sel}}}[{WINDOW}]))"),
        ),
        (
            "error_percent",
            format!(
                "100 * sum by (destination_service_name) (rate(istio_requests_total{{{sel},response_code=~\"5..\"}}[{WINDOW}])) \
                 / sum by (destination_service_name) (rate(istio_requests_total{{{sel}}}[{WINDOW}]))"
            ),
        ),
        (
            "p99_ms",
            format!(
                "histogram_quantile(0.99, sum by (le, destination_service_name) \
                 (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{WINDOW}])))"
            ),
        ),
    ]
}

/// One service's row.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ServiceStats {
    pub requests_per_second: Option<f64>,
    pub error_percent: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The numbers now, by service name.
pub fn stats(api: &Api) -> Result<BTreeMap<String, ServiceStats>> {
    let mut out: BTreeMap<String, ServiceStats> = BTreeMap::new();
    for (column, query) in queries() {
        for r in api.query(&query, None).with_context(|| format!("asking Prometheus {query}"))? {
            let Some(service) = r["metric"]["destination_service_name"].as_str() else { continue };
            let v = value(&r).filter(|v| v.is_finite());
            let row = out.entry(service.to_owned()).or_default();
            match column {
                "requests_per_second" => row.requests_per_second = v,
                "error_percent" => row.error_percent = v,
                _ => row.p99_ms = v,
            }
        }
    }
    // No 5xx series at all is no error, not an unknown rate.
    for row in out.values_mut() {
        if row.requests_per_second.is_some() && row.error_percent.is_none() {
            row.error_percent = Some(0.0);
        }
    }
    Ok(out)
}

/// The page's HTML.
pub fn html(stats: &Result<BTreeMap<String, ServiceStats>>) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>Weft demo: Bookinfo</title><style>body{font-family:sans-serif}td,th{padding:4px 12px;\
         text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>\
         <h1>Bookinfo through the waypoint</h1>",
    );
    let _ = write!(out, "<p>From Prometheus, over the last {WINDOW}; reloads every 2 s.</p>");
    match stats {
        Ok(stats) => {
            out.push_str(
                "<table><tr><th>service</th><th>requests/s</th><th>errors (5xx)</th><th>p99</th></tr>",
            );
            let cell = |v: Option<f64>, unit: &str, digits: usize| {
                v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}{unit}"))
            };
            for (service, s) in stats {
                let _ = write!(
                    out,
                    "<tr class=\"service\" data-service=\"{service}\"><td>{service}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    cell(s.requests_per_second, "", 2),
                    cell(s.error_percent, " %", 1),
                    cell(s.p99_ms, " ms", 0),
                );
            }
            out.push_str("</table>");
            if stats.is_empty() {
                out.push_str("<p>No requests in the window yet.</p>");
            }
        }
        Err(e) => {
            let _ = write!(out, "<p>Prometheus did not answer: {}</p>", escape(&format!("{e:#}")));
        }
    }
    out.push_str("<p>JSON: <a href=\"/api/services\">/api/services</a></p></body></html>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The page's server; stopped when dropped.
pub struct LivePage {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LivePage {
    /// Serves the page on an ephemeral port of 127.0.0.1 (of the host).
    pub fn start(api: Api) -> Result<LivePage> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the live page")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("demo-page".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    // A browser that goes away mid-answer is no concern of the page's.
                    Ok((stream, _)) => {
                        let _ = answer(stream, &api);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        Ok(LivePage { addr, stop, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LivePage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: the page, or its numbers as JSON.
fn answer(mut stream: TcpStream, api: &Api) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let stats = stats(api);
    let (status, content_type, body) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", html(&stats)),
        "/api/services" => match &stats {
            Ok(s) => ("200 OK", "application/json", serde_json::to_string_pretty(s)? + "\n"),
            Err(e) => ("502 Bad Gateway", "text/plain", format!("{e:#}\n")),
        },
        _ => ("404 Not Found", "text/plain", "try / or /api/services\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_each_service_row() {
        let mut stats = BTreeMap::new();
        stats.insert(
            "reviews".to_owned(),
            ServiceStats { requests_per_second: Some(12.5), error_percent: Some(0.0), p99_ms: Some(480.0) },
        );
        let page = html(&Ok(stats));
        assert!(page.contains("<td>reviews</td><td>12.50</td><td>0.0 %</td><td>480 ms</td>"), "{page}");
        assert!(html(&Err(anyhow::anyhow!("<down>"))).contains("&lt;down&gt;"));
    }
}
