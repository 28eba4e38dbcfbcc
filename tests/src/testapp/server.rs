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

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{Backlog, listen};
use serde_json::json;

use super::cli::ServeArgs;
use super::report::{self, EXIT_CONNECT};

/// Stack of a connection thread: they hold no big buffers on the stack (those are on the
/// heap), and a small stack lets one server hold thousands of connections.
const CONN_STACK: usize = 64 * 1024;

/// Listen backlog: std's default (128) overflows when the connrate benchmark or `hold`
/// opens connections faster than one accept thread takes them.
const BACKLOG: i32 = 4096;

/// The largest HTTP request head the `G` mode reads.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// Who this server says it is.
struct Identity {
    name: String,
    version: String,
}

/// Binds every port, prints the `listening` event, then serves until killed. Returns an exit
/// code only if a port cannot be bound.
pub fn serve(args: ServeArgs) -> i32 {
    let identity = Arc::new(Identity { name: args.name, version: args.version });
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
/// `GET`; the rest of the head is read and ignored.
fn http(mut stream: TcpStream, peer: SocketAddr, identity: &Identity) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
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
    let body = json!({
        "name": identity.name,
        "version": identity.version,
        "peer": peer.to_string(),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}
