//! The access log: one JSON line per request on stdout, with the fields of Istio's default
//! JSON format (`EnvoyJSONLogFormatIstio`, pilot/pkg/model/telemetry_logging.go). Off
//! unless `--access-log` (`WEFT_ACCESS_LOG`) is given; when off, nothing is taken from
//! the request for it.
//!
//! Fields the waypoint does not know at the point it logs are `null`, as Envoy's JSON
//! formatter writes an unset value: `route_name` and `upstream_cluster` (decided inside
//! the request path, not handed out), `upstream_local_address`, `requested_server_name`,
//! `upstream_transport_failure_reason`, `response_code_details`,
//! `connection_termination_details`.

use crate::proxy::Downstream;
use http::{HeaderValue, Method, Request, Uri, Version, header};
use serde::Serialize;
use std::{
    io::Write,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, SystemTime},
};

/// Where lines go.
pub struct AccessLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    pub fn stdout() -> AccessLog {
        AccessLog::to(Box::new(std::io::stdout()))
    }

    pub fn to(out: Box<dyn Write + Send>) -> AccessLog {
        AccessLog { out: Mutex::new(out) }
    }

    /// Writes one line. The line is made before the lock is taken, so writers wait only
    /// for each other's `write_all`.
    pub fn write(&self, entry: &Entry) {
        let mut line = entry.to_json();
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = out.write_all(&line).and_then(|()| out.flush()) {
            tracing::debug!(%error, "access log write failed");
        }
    }
}

/// What the log line needs from the request (taken before the proxy consumes it; header
/// values and the URI are reference-counted, not copied) and from its end.
#[derive(Debug)]
pub struct Entry {
    start_time: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    original_path: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    x_forwarded_for: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    bytes_received: u64,
    downstream_remote: SocketAddr,
    downstream_local: SocketAddr,
    pub(crate) upstream_service_time: Option<Duration>,
    end: Option<Finish>,
}

/// What is known when the response ends.
#[derive(Debug, Clone, Copy)]
pub struct Finish {
    pub code: u16,
    pub flag: Option<&'static str>,
    /// Response body bytes.
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
}

impl Entry {
    pub fn of<B: http_body::Body>(ctx: &Downstream, request: &Request<B>) -> Entry {
        let h = request.headers();
        let get = |name: &str| h.get(name).cloned();
        let authority = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| h.get(header::HOST).cloned());
        Entry {
            start_time: SystemTime::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            original_path: get("x-envoy-original-path"),
            authority,
            user_agent: h.get(header::USER_AGENT).cloned(),
            x_forwarded_for: get("x-forwarded-for"),
            request_id: get("x-request-id"),
            bytes_received: request.body().size_hint().lower(),
            downstream_remote: ctx.source.addr,
            downstream_local: ctx.source.authority,
            upstream_service_time: None,
            end: None,
        }
    }

    pub fn finish(&mut self, end: Finish) {
        self.end = Some(end);
    }

    /// The JSON line (without its newline).
    pub fn to_json(&self) -> Vec<u8> {
        fn value(v: &Option<HeaderValue>) -> Option<&str> {
            v.as_ref().and_then(|v| v.to_str().ok())
        }
        let path = value(&self.original_path)
            .or_else(|| self.uri.path_and_query().map(|p| p.as_str()))
            .unwrap_or("/");
        let end = self.end;
        let line = Line {
            start_time: rfc3339_millis(self.start_time),
            route_name: None,
            method: self.method.as_str(),
            path,
            protocol: protocol(self.version),
            response_code: end.map_or(0, |e| e.code),
            response_flags: end.and_then(|e| e.flag).unwrap_or("-"),
            response_code_details: None,
            connection_termination_details: None,
            bytes_received: self.bytes_received,
            bytes_sent: end.map_or(0, |e| e.bytes_sent),
            duration: end.map_or(0, |e| e.duration.as_millis() as u64),
            upstream_service_time: self.upstream_service_time.map(|d| d.as_millis().to_string()),
            x_forwarded_for: value(&self.x_forwarded_for),
            user_agent: value(&self.user_agent),
            request_id: value(&self.request_id),
            authority: value(&self.authority),
            upstream_host: end.and_then(|e| e.upstream).map(|a| a.to_string()),
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: self.downstream_local.to_string(),
            downstream_remote_address: self.downstream_remote.to_string(),
            requested_server_name: None,
            upstream_transport_failure_reason: None,
        };
        serde_json::to_vec(&line).expect("an access log line serialises")
    }
}

/// Istio's default JSON access log fields.
#[derive(Serialize)]
struct Line<'a> {
    start_time: String,
    route_name: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    response_code: u16,
    response_flags: &'static str,
    response_code_details: Option<&'a str>,
    connection_termination_details: Option<&'a str>,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    upstream_service_time: Option<String>,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<String>,
    upstream_cluster: Option<&'a str>,
    upstream_local_address: Option<&'a str>,
    downstream_local_address: String,
    downstream_remote_address: String,
    requested_server_name: Option<&'a str>,
    upstream_transport_failure_reason: Option<&'a str>,
}

/// Envoy's `%PROTOCOL%`.
fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// Envoy's default `%START_TIME%`: `2024-05-01T12:34:56.789Z` (UTC, milliseconds).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_566_896_789);
        assert_eq!(rfc3339_millis(t), "2024-05-01T12:34:56.789Z");
        assert_eq!(rfc3339_millis(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
