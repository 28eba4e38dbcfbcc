//! Talking to a running weftd: the `--weftd` flag shared by the subcommands that read its
//! debug endpoint, and one blocking HTTP/1.1 GET over a plain `TcpStream`.
//!
//! weftd's debug endpoint is plain HTTP on loopback (or behind `kubectl port-forward`) and
//! answers small JSON documents, so a request is: connect, write the request with
//! `Connection: close`, read to the end, split off the headers. No HTTP client crate, no
//! async runtime.

use crate::exit;
use clap::ValueEnum;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Where weftd's debug endpoint listens unless told otherwise (weftd's `--debug-addr`).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:15014";
const DEFAULT_PORT: u16 = 15014;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// The flags that say where weftd is.
#[derive(Debug, Clone, clap::Args)]
pub struct WeftdArgs {
    /// weftd's debug endpoint (its --debug-addr), e.g. http://127.0.0.1:15014; in a
    /// cluster, reach it with `kubectl port-forward` first, or use --cluster.
    #[arg(long = "weftd", env = "WEFTD_DEBUG_ADDR", value_name = "URL", default_value = DEFAULT_ADDR)]
    pub url: String,
    #[command(flatten)]
    pub in_cluster: crate::find_weftd::InCluster,
}

impl WeftdArgs {
    /// The debug endpoint's URL: --weftd, or with --cluster the one found in the cluster;
    /// on failure, the message is printed for `command` and its exit code returned.
    pub fn resolve(&self, command: &str) -> Result<String, ExitCode> {
        if !self.in_cluster.cluster {
            return Ok(self.url.clone());
        }
        crate::cluster::block_on(self.in_cluster.debug_url()).and_then(|found| found).map_err(|e| {
            eprintln!("weftctl {command}: {e:#}");
            ExitCode::from(exit::USAGE)
        })
    }
}

/// How a subcommand prints what weftd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// weftd's JSON, for scripts.
    Json,
}

/// Why weftd's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `--weftd` is not an address weftctl can use.
    #[error("--weftd {given:?}: {reason} (expected e.g. {DEFAULT_ADDR})")]
    BadAddress { given: String, reason: String },
    /// Nothing answered at the address.
    #[error(
        "cannot reach weftd at {url} ({source}): is it running? pass --weftd URL or set WEFTD_DEBUG_ADDR"
    )]
    Unreachable {
        url: String,
        #[source]
        source: io::Error,
    },
    /// Something answered, but not with a usable HTTP response.
    #[error("weftd at {url} gave no usable answer to GET {path}: {reason}")]
    BadResponse { url: String, path: String, reason: String },
}

/// An HTTP response: status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A parsed `--weftd` value.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    /// Prefix for request paths, without a trailing slash ("" usually).
    base_path: String,
}

impl Endpoint {
    fn parse(given: &str) -> Result<Endpoint, FetchError> {
        let bad =
            |reason: &str| FetchError::BadAddress { given: given.to_owned(), reason: reason.to_owned() };
        let rest = match given.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(bad("weftd's debug endpoint speaks plain http")),
            Some(_) => return Err(bad("only http:// URLs are supported")),
            None => given,
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        // A port is what follows the last ':' outside IPv6 brackets.
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
        let authority = if has_port { authority.to_owned() } else { format!("{authority}:{DEFAULT_PORT}") };
        Ok(Endpoint { authority, base_path: format!("/{path}").trim_end_matches('/').to_owned() })
    }
}

/// `GET path` (with query) on weftd's debug endpoint `url`.
pub fn get(url: &str, path: &str) -> Result<Response, FetchError> {
    let endpoint = Endpoint::parse(url)?;
    let unreachable = |source| FetchError::Unreachable { url: url.to_owned(), source };
    let bad = |reason: String| FetchError::BadResponse { url: url.to_owned(), path: path.to_owned(), reason };

    let addrs: Vec<SocketAddr> = endpoint.authority.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;

    let exchange = |stream: &mut TcpStream| -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        write!(
            stream,
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: weftctl\r\nConnection: close\r\n\r\n",
            endpoint.base_path, endpoint.authority
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    };
    let raw = exchange(&mut stream).map_err(|e| bad(e.to_string()))?;
    parse_response(&raw).map_err(bad)
}

/// Splits a whole HTTP/1.1 response (read until the server closed) into status and body,
/// undoing chunked transfer encoding.
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => {
            code.parse::<u16>().map_err(|_| format!("bad status line {status_line:?}"))?
        }
        _ => return Err(format!("not an HTTP/1 response: {status_line:?}")),
    };
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| format!("bad content-length {value:?}"))?;
            body = body.get(..n).ok_or("body shorter than its content-length")?;
        }
    }
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    let body = String::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// Percent-encodes a query parameter value: everything but RFC 3986's unreserved
/// characters. (Proxy ids like `waypoint~10.1.1.2~w.bookinfo~bookinfo.svc.cluster.local`
/// are mostly unreserved; `&`, `=`, `+`, `#` and spaces would not survive unencoded.)
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints a subcommand's answer on stdout: exit 0, or 2 when stdout is gone (a closed
/// pipe, as with `| head`, is not worth a message).
pub fn print_answer(text: &str, command: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    let newline: &[u8] = if text.ends_with('\n') { b"" } else { b"\n" };
    let written =
        out.write_all(text.as_bytes()).and_then(|()| out.write_all(newline)).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("weftctl {command}: cannot write output: {e}");
            }
            ExitCode::from(exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(s: &str) -> (String, String) {
        let e = Endpoint::parse(s).unwrap();
        (e.authority, e.base_path)
    }

    #[test]
    fn addresses() {
        assert_eq!(endpoint("http://127.0.0.1:15014"), ("127.0.0.1:15014".into(), "".into()));
        assert_eq!(endpoint("http://127.0.0.1:15014/"), ("127.0.0.1:15014".into(), "".into()));
        assert_eq!(endpoint("localhost:9"), ("localhost:9".into(), "".into()));
        assert_eq!(endpoint("http://weftd"), ("weftd:15014".into(), "".into()));
        assert_eq!(endpoint("http://[::1]:8080/weft/"), ("[::1]:8080".into(), "/weft".into()));
        assert_eq!(endpoint("[::1]"), ("[::1]:15014".into(), "".into()));
        for bad in ["https://127.0.0.1:15014", "ftp://x", "http://", "http:///x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain).unwrap(), Response { status: 200, body: "[]".into() });
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno \r\n5;x=y\r\nproxy\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), Response { status: 404, body: "no proxy".into() });
        let until_close = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(parse_response(until_close).unwrap().body, "all of it");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn query_values() {
        assert_eq!(encode_query_value("agent-n1"), "agent-n1");
        assert_eq!(
            encode_query_value("sidecar~10.0.0.1~a.b~b.svc.cluster.local"),
            "sidecar~10.0.0.1~a.b~b.svc.cluster.local"
        );
        assert_eq!(encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
