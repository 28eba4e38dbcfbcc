//! `serve`: one accept thread per port, one small thread per connection. The first byte a
//! client sends picks the mode:
//!
//! | byte | mode      | the server …                                                  |
//! |------|-----------|---------------------------------------------------------------|
//! | `E`  | echo      | echoes every byte until EOF, then shuts down its write side   |
//! | `S`  | sink      | counts bytes until EOF, replies the count as 8 bytes LE       |
//! | `P`  | ping-pong | writes back each chunk it reads, until EOF (latency, connrate)|
//! | `H`  | hello     | replies `NAME VERSION PEER\n` and closes                      |
//! | `G`  | HTTP GET  | reads the request head, replies 200 with a JSON body, closes  |
//!
//! The JSON body of an HTTP reply is `{"name","version","peer"}`, plus `"end_user"` when the
//! request carried that header. A server given `--call HOST=ADDR` chains, as Bookinfo's
//! services do: before answering it GETs the same path from each upstream in order,
//! relaying [`RELAYED_HEADERS`], and embeds their replies as
//! `"calls":[{"host","status","reply"}]`. If a call fails, the server answers at once with
//! that call's status (502 when it could not connect or read), so a fault injected deep in
//! the chain shows at the client as what it was, not as a page that degraded quietly (real
//! Bookinfo renders "unavailable" with a 200).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{Backlog, listen};
use serde_json::json;

use super::cli::{Call, ServeArgs};
use super::report::{self, EXIT_CONNECT};
use super::{dial, http as client};

/// Stack of a connection thread: they hold no big buffers on the stack (those are on the
/// heap), and a small stack lets one server hold thousands of connections.
const CONN_STACK: usize = 64 * 1024;

/// Listen backlog: std's default (128) overflows when the connrate benchmark or `hold`
/// opens connections faster than one accept thread takes them.
const BACKLOG: i32 = 4096;

/// The largest HTTP request head the `G` mode reads.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// Request headers a chaining server passes on to its upstreams: who the user is, so a
/// route matching on it applies at every hop (Bookinfo forwards `end-user`).
pub const RELAYED_HEADERS: [&str; 2] = ["end-user", "x-end-user"];

/// How long a chaining server waits for an upstream (connect, and each read): longer than
/// any delay a test injects (Istio's fault-injection task delays ratings by 7 s).
const UPSTREAM_TIMEOUT_SECS: u64 = 30;

/// Who this server says it is, and whom it calls.
struct Identity {
    name: String,
    version: String,
    calls: Vec<Call>,
}

/// Binds every port, prints the `listening` event, then serves until killed. Returns an exit
/// code only if a port cannot be bound.
pub fn serve(args: ServeArgs) -> i32 {
    let identity = Arc::new(Identity { name: args.name, version: args.version, calls: args.calls });
    let mut listeners = Vec::new();
    for &port in &args.ports {
        match bind(port) {
            Ok(listener) => listeners.push((port, listener)),
            Err(err) => {
                report::emit(&json!({
                    "event": "error",
                    "error": "bind",
                    "port": port,
                    "kind": report::kind_name(&err),
                    "message": err.to_string(),
                }));
                return EXIT_CONNECT;
            }
        }
    }
    report::emit(&json!({ "event": "listening", "ports": args.ports }));

    let accept_threads: Vec<_> = listeners
        .into_iter()
        .map(|(port, listener)| {
            let identity = Arc::clone(&identity);
            std::thread::Builder::new()
                .name(format!("accept-{port}"))
                .spawn(move || accept_loop(port, listener, identity))
                .expect("cannot start an accept thread")
        })
        .collect();
    for thread in accept_threads {
        let _ = thread.join();
    }
    report::EXIT_OK
}

fn bind(port: u16) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    // Calling listen(2) again on a listening socket only changes its backlog.
    listen(&listener, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(listener)
}

/// Serves `listener` until the process ends (`serve` runs one per port; tests bind their own).
fn accept_loop(port: u16, listener: TcpListener, identity: Arc<Identity>) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE or ENOBUFS under load: back off instead of spinning.
                eprintln!("weft-testapp: accept on port {port}: {err}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        report::emit(&json!({
            "event": "accept",
            "name": identity.name,
            "port": port,
            "peer": peer.to_string(),
            "local": local,
        }));
        let identity = Arc::clone(&identity);
        let spawned = std::thread::Builder::new().stack_size(CONN_STACK).spawn(move || {
            if let Err(err) = handle(stream, peer, &identity) {
                eprintln!("weft-testapp: connection from {peer}: {err}");
            }
        });
        if let Err(err) = spawned {
            eprintln!("weft-testapp: no thread for the connection from {peer}: {err}");
        }
    }
}

fn handle(mut stream: TcpStream, peer: SocketAddr, identity: &Identity) -> io::Result<()> {
    let mut mode = [0u8; 1];
    if stream.read(&mut mode)? == 0 {
        return Ok(());
    }
    match mode[0] {
        b'E' => echo(stream),
        b'S' => sink(stream),
        b'P' => ping_pong(stream),
        b'H' => {
            let reply = format!("{} {} {peer}\n", identity.name, identity.version);
            stream.write_all(reply.as_bytes())
        }
        b'G' => http(stream, peer, identity),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown mode byte {other:#04x} (expected E, S, P, H or G)"),
        )),
    }
}

/// Echoes until the client's EOF, then half-closes: the client may shut its write side
/// early and still read everything back.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
    }
    stream.shutdown(Shutdown::Write)
}

fn sink(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut count: u64 = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        count += n as u64;
    }
    stream.write_all(&count.to_le_bytes())
}

fn ping_pong(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// A minimal HTTP/1.1 reply for curl and L7 tests. The `G` already read is the start of
/// `GET`; the rest of the head is read for the path and the relayed headers.
fn http(mut stream: TcpStream, peer: SocketAddr, identity: &Identity) -> io::Result<()> {
    let mut head = b"G".to_vec();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HTTP_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "HTTP request head too large"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in HTTP request head"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let path = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").to_owned();
    let relayed: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| RELAYED_HEADERS.iter().any(|r| k.trim().eq_ignore_ascii_case(r)))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = json!({
        "name": identity.name,
        "version": identity.version,
        "peer": peer.to_string(),
    });
    if let Some((_, user)) = relayed.iter().find(|(k, _)| k == "end-user") {
        body["end_user"] = json!(user);
    }
    let mut status = 200;
    let mut calls = Vec::new();
    for call in &identity.calls {
        let (call_status, reply) = call_upstream(call, &path, &relayed);
        calls.push(json!({ "host": call.host, "status": call_status, "reply": reply }));
        if call_status != 200 {
            status = call_status;
            break;
        }
    }
    if !identity.calls.is_empty() {
        body["calls"] = json!(calls);
    }
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(response.as_bytes())
}

/// One upstream call: its status and its reply (JSON when it is, else the text, e.g. a
/// proxy's local reply such as "fault filter abort"); 502 and the error when it failed.
fn call_upstream(call: &Call, path: &str, headers: &[(String, String)]) -> (u16, serde_json::Value) {
    let target =
        super::cli::Target { to: call.addr.clone(), timeout_secs: UPSTREAM_TIMEOUT_SECS, mark: None };
    match dial::connect(&target).and_then(|s| client::get(s, &call.host, path, headers)) {
        Ok(r) => {
            let reply = serde_json::from_slice(&r.body)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.body).into_owned()));
            (r.status, reply)
        }
        Err(err) => (502, json!(format!("{}: {err}", report::kind_name(&err)))),
    }
}

/// The reason phrase of the statuses a chain relays.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A server of `name` with `calls` on a loopback port of its own; returns its address.
    fn start(name: &str, calls: Vec<Call>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let identity = Arc::new(Identity { name: name.into(), version: "v2".into(), calls });
        std::thread::spawn(move || accept_loop(addr.port(), listener, identity));
        addr.to_string()
    }

    fn call(host: &str, addr: &str) -> Call {
        Call { host: host.into(), addr: addr.into() }
    }

    fn get(addr: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let r = client::get(TcpStream::connect(addr).expect("connect"), "productpage", "/p", &headers)
            .expect("GET");
        (r.status, serde_json::from_slice(&r.body).expect("JSON body"))
    }

    #[test]
    fn a_chain_relays_the_user_and_embeds_each_reply() {
        let ratings = start("ratings-v1", vec![]);
        let reviews = start("reviews-v2", vec![call("ratings.bookinfo", &ratings)]);
        let page = start("productpage-v1", vec![call("reviews.bookinfo.svc.cluster.local", &reviews)]);
        let (status, body) = get(&page, &[("End-User", "jason"), ("x-other", "dropped")]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["end_user"], "jason");
        let reviews_reply = &body["calls"][0]["reply"];
        assert_eq!(body["calls"][0]["host"], "reviews.bookinfo.svc.cluster.local");
        assert_eq!(reviews_reply["name"], "reviews-v2");
        assert_eq!(reviews_reply["end_user"], "jason", "relayed to reviews: {body}");
        assert_eq!(reviews_reply["calls"][0]["reply"]["end_user"], "jason", "and on to ratings: {body}");
        assert_eq!(client::version_of(&body, Some("ratings")).as_deref(), Some("v2"));
        // Without the header, none is invented.
        let (_, body) = get(&page, &[]);
        assert!(body["calls"][0]["reply"]["end_user"].is_null(), "{body}");
    }

    #[test]
    fn a_failed_call_answers_with_its_status() {
        // An upstream that answers 500, as a proxy's injected abort does.
        let aborting = TcpListener::bind("127.0.0.1:0").expect("bind");
        let aborting_addr = aborting.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for mut s in aborting.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 18\r\n\r\nfault filter abort",
                );
            }
        });
        let reviews = start("reviews-v2", vec![call("ratings", &aborting_addr)]);
        let page = start("productpage-v1", vec![call("reviews", &reviews)]);
        let (status, body) = get(&page, &[]);
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["calls"][0]["reply"]["calls"][0]["reply"], "fault filter abort");

        // Nothing listening: 502, and later upstreams are not called.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
        let page = start("productpage-v1", vec![call("details", &closed), call("reviews", &reviews)]);
        let (status, body) = get(&page, &[]);
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["calls"].as_array().map(Vec::len), Some(1), "{body}");
    }
}
