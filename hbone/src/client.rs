//! The HBONE client: a pool of HTTP/2-over-mTLS connections, each multiplexing CONNECT
//! streams.
//!
//! Connections are keyed by [`PoolKey`]: (source identity, destination identity,
//! destination address, and a caller's `u64` — the agent passes the source pod's netns
//! cookie, because the connection's socket lives in that pod's network namespace).
//! [`Pool::connect`] reuses a connection of the key with room for another stream; if there
//! is none it dials one (the caller's `dial` makes the TCP socket), runs TLS and the
//! HTTP/2 handshake, then sends `CONNECT <authority>` and waits for `200`.
//!
//! - Concurrent callers for the same key do not each dial: one dials, the others wait for
//!   it and then share the connection (or get the dial's error).
//! - A connection holds at most `max_streams_per_connection` streams, or fewer if the
//!   server's SETTINGS say so; beyond that the pool opens another connection.
//! - A connection that dies (GOAWAY, reset, keepalive PING unanswered) leaves the pool; a
//!   connection without streams for `idle_timeout` is closed.
//!
//! As in ztunnel (`proxy/pool.rs`, `proxy/h2/client.rs`): one task per connection drives
//! h2, and a per-key lock makes the first callers wait for one dial.

use crate::{
    certs::{TrustBundle, WorkloadCertificate},
    identity::Identity,
    settings::Settings,
    stream::H2Stream,
    tls::{self, TlsError},
};
use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode, Uri, Version};
use rustls::ClientConfig;
use std::{
    collections::HashMap,
    fmt,
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Notify, watch},
    time::Instant,
};
use tracing::{Instrument, debug, warn};

/// What a pooled connection is for: connections are shared only between requests with
/// equal keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The identity we present (the source workload's).
    pub src: Identity,
    /// The identity the server must present.
    pub dst: Identity,
    /// Where the connection goes (the destination's HBONE address, port 15008).
    pub dst_addr: SocketAddr,
    /// Anything else that makes a connection unshareable; the agent passes the source
    /// pod's netns cookie.
    pub extra: u64,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} at {} [{:#x}]", self.src, self.dst, self.dst_addr, self.extra)
    }
}

/// Why [`Pool::connect`] did not return a stream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The certificate passed is not the key's source identity (a caller bug).
    #[error("the certificate given is for {cert}, but the pool key's source is {key}")]
    WrongCertificate { cert: Identity, key: Identity },
    /// The caller's dial failed.
    #[error("cannot dial {addr}: {source}")]
    Dial {
        addr: SocketAddr,
        #[source]
        source: Arc<io::Error>,
    },
    /// Dial, TLS and HTTP/2 handshakes took longer than the handshake timeout.
    #[error("no HBONE connection to {addr} within {timeout:?} (dial, TLS and HTTP/2 handshakes)")]
    Timeout { addr: SocketAddr, timeout: Duration },
    /// TLS failed: the reason says whose certificate and why.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: TlsError,
    },
    /// HTTP/2 failed (handshake, connection or stream).
    #[error("HTTP/2 with {addr} failed: {source}")]
    Http2 {
        addr: SocketAddr,
        #[source]
        source: Arc<h2::Error>,
    },
    /// The server answered the CONNECT with something other than 200.
    #[error("{addr} answered CONNECT {authority} with {status}")]
    Status { addr: SocketAddr, authority: SocketAddr, status: StatusCode },
}

impl ConnectError {
    /// The HTTP status of a refused CONNECT.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ConnectError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A pool of HBONE connections. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    settings: Settings,
    keys: Mutex<HashMap<PoolKey, KeyState>>,
    /// Origin of the idle timestamps kept in atomics.
    epoch: Instant,
    next_id: AtomicU64,
}

#[derive(Default)]
struct KeyState {
    conns: Vec<PooledConn>,
    /// Set while one caller dials for this key; the others wait on it.
    dialing: Option<watch::Receiver<DialState>>,
    /// The client config of the last dial, reused while the certificate and roots are the
    /// same (they change on rotation).
    tls: Option<CachedTls>,
}

struct CachedTls {
    cert: Arc<WorkloadCertificate>,
    roots: TrustBundle,
    config: Arc<ClientConfig>,
}

#[derive(Clone)]
enum DialState {
    Dialing,
    Done(Result<(), ConnectError>),
}

/// A connection as the pool holds it. Dropping the last `SendRequest` (when the pool
/// forgets the connection) lets h2 close it once its streams are done.
#[derive(Clone)]
struct PooledConn {
    shared: Arc<ConnShared>,
    sender: SendRequest<Bytes>,
}

/// What the pool, the connection's driver task and its streams share.
struct ConnShared {
    id: u64,
    /// Streams open or being opened.
    active: AtomicU32,
    /// min(our limit, the server's SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams: AtomicU32,
    closed: AtomicBool,
    /// When `active` last dropped to 0, in ms since the pool's epoch.
    idle_since_ms: AtomicU64,
    /// Woken when `active` drops to 0.
    idle: Notify,
    /// The TLS failure seen under HTTP/2, if any (h2 keeps only the text of I/O errors).
    tls_failure: Arc<OnceLock<TlsError>>,
}

impl ConnShared {
    fn try_reserve(&self) -> bool {
        // Called under the pool lock, the only place `active` grows, so the check and the
        // increment cannot race with another reservation.
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let active = self.active.load(Ordering::Acquire);
        if active >= self.max_streams.load(Ordering::Acquire) {
            return false;
        }
        self.active.store(active + 1, Ordering::Release);
        true
    }
}

/// Held by a stream of a pooled connection (both halves); releases its slot on drop.
pub(crate) struct StreamGuard {
    conn: Arc<ConnShared>,
    epoch: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle_since_ms.store(millis_since(self.epoch), Ordering::Release);
            self.conn.idle.notify_one();
        }
    }
}

impl Pool {
    pub fn new(settings: Settings) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                settings,
                keys: Mutex::new(HashMap::new()),
                epoch: Instant::now(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens an HBONE stream to `authority` (the original destination, `ip:port`) over a
    /// connection for `key`: an existing one with room, else a new one made with `dial`
    /// (which must return a TCP stream connected to `key.dst_addr`), TLS presenting `cert`
    /// and expecting `key.dst` from a chain to `roots`.
    pub async fn connect<D, F>(
        &self,
        key: &PoolKey,
        cert: &Arc<WorkloadCertificate>,
        roots: &TrustBundle,
        authority: SocketAddr,
        dial: D,
    ) -> Result<H2Stream, ConnectError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        self.connect_with_data(key, cert, roots, authority, Bytes::new(), dial).await
    }

    /// As [`Pool::connect`], sending `early` (the client's first bytes, when it sent some
    /// before the stream was opened) right behind the CONNECT instead of after its 200:
    /// HTTP/2 allows DATA on a stream before its response, and this spares every new
    /// connection a round trip to the server before its first bytes leave. If the server
    /// refuses the CONNECT, it drops them with the stream.
    pub async fn connect_with_data<D, F>(
        &self,
        key: &PoolKey,
        cert: &Arc<WorkloadCertificate>,
        roots: &TrustBundle,
        authority: SocketAddr,
        early: Bytes,
        dial: D,
    ) -> Result<H2Stream, ConnectError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        if cert.identity() != &key.src {
            return Err(ConnectError::WrongCertificate {
                cert: cert.identity().clone(),
                key: key.src.clone(),
            });
        }
        let mut dial = Some(dial);
        // One retry, only when a reused connection turned out to be closing before our
        // CONNECT reached the server (so the request is safe to send again).
        let mut retried = false;
        loop {
            let (conn, reused) = self.checkout(key, cert, roots, &mut dial).await?;
            let guard = Arc::new(StreamGuard { conn: conn.shared.clone(), epoch: self.inner.epoch });
            match send_connect(&conn, key.dst_addr, authority, &early, guard).await {
                Err(Attempt::NotSent(e)) if reused && !retried => {
                    debug!(conn = conn.shared.id, error = %e, "pooled HBONE connection was closing; retrying");
                    conn.shared.closed.store(true, Ordering::Release);
                    retried = true;
                }
                Err(Attempt::NotSent(e) | Attempt::Failed(e)) => return Err(e),
                Ok(stream) => return Ok(stream),
            }
        }
    }

    /// Connections in the pool (for metrics and tests).
    pub fn connections(&self) -> usize {
        let keys = self.inner.lock();
        keys.values()
            .map(|k| k.conns.iter().filter(|c| !c.shared.closed.load(Ordering::Acquire)).count())
            .sum()
    }

    /// A connection of `key` with one stream reserved on it, and whether it was reused.
    async fn checkout<D, F>(
        &self,
        key: &PoolKey,
        cert: &Arc<WorkloadCertificate>,
        roots: &TrustBundle,
        dial: &mut Option<D>,
    ) -> Result<(PooledConn, bool), ConnectError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        loop {
            let step = {
                let mut keys = self.inner.lock();
                let state = match keys.get_mut(key) {
                    Some(state) => state,
                    None => keys.entry(key.clone()).or_default(),
                };
                state.conns.retain(|c| !c.shared.closed.load(Ordering::Acquire));
                if let Some(conn) = state.conns.iter().find(|c| c.shared.try_reserve()) {
                    Step::Use(conn.clone())
                } else if let Some(dialing) = &state.dialing {
                    Step::Wait(dialing.clone())
                } else {
                    let config = match &state.tls {
                        Some(c) if Arc::ptr_eq(&c.cert, cert) && c.roots.same_as(roots) => c.config.clone(),
                        _ => {
                            let config = match tls::client_config(cert, roots, std::slice::from_ref(&key.dst))
                            {
                                Ok(config) => config,
                                Err(source) => {
                                    if state.conns.is_empty() {
                                        keys.remove(key);
                                    }
                                    return Err(ConnectError::Tls { addr: key.dst_addr, source });
                                }
                            };
                            state.tls = Some(CachedTls {
                                cert: cert.clone(),
                                roots: roots.clone(),
                                config: config.clone(),
                            });
                            config
                        }
                    };
                    let (tx, rx) = watch::channel(DialState::Dialing);
                    state.dialing = Some(rx);
                    Step::Dial(tx, config)
                }
            };
            match step {
                Step::Use(conn) => return Ok((conn, true)),
                Step::Wait(mut rx) => {
                    // Err: the dialer was cancelled; loop and dial ourselves.
                    if let Ok(state) = rx.wait_for(|s| matches!(s, DialState::Done(_))).await
                        && let DialState::Done(Err(e)) = &*state
                    {
                        return Err(e.clone());
                    }
                }
                Step::Dial(tx, config) => {
                    let Some(dial) = dial.take() else {
                        // Unreachable: `connect` retries only after a reused connection,
                        // so the caller's one dial is still unused. Fail rather than panic.
                        self.inner.finish_dial(key, None);
                        return Err(ConnectError::Dial {
                            addr: key.dst_addr,
                            source: Arc::new(io::Error::other(
                                "the pooled connection closed and the dial was used",
                            )),
                        });
                    };
                    let mut pending = PendingDial { pool: &self.inner, key, tx: Some(tx) };
                    let result = self.inner.establish(key, config, dial).await;
                    return match result {
                        Ok(conn) => {
                            pending.finish(Some(conn.clone()), Ok(()));
                            Ok((conn, false))
                        }
                        Err(e) => {
                            pending.finish(None, Err(e.clone()));
                            Err(e)
                        }
                    };
                }
            }
        }
    }
}

enum Step {
    Use(PooledConn),
    Wait(watch::Receiver<DialState>),
    Dial(watch::Sender<DialState>, Arc<ClientConfig>),
}

/// Clears the key's dialing mark when the dialer finishes or is cancelled, and wakes the
/// waiters.
struct PendingDial<'a> {
    pool: &'a PoolInner,
    key: &'a PoolKey,
    tx: Option<watch::Sender<DialState>>,
}

impl PendingDial<'_> {
    fn finish(&mut self, conn: Option<PooledConn>, result: Result<(), ConnectError>) {
        self.pool.finish_dial(self.key, conn);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(DialState::Done(result));
        }
    }
}

impl Drop for PendingDial<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // Cancelled mid-dial: waiters see the sender go and try themselves.
            self.pool.finish_dial(self.key, None);
        }
    }
}

impl PoolInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, KeyState>> {
        // The map stays consistent even if a holder panicked: every update is one step.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish_dial(&self, key: &PoolKey, conn: Option<PooledConn>) {
        let mut keys = self.lock();
        if let Some(state) = keys.get_mut(key) {
            state.dialing = None;
            if let Some(conn) = conn {
                state.conns.push(conn);
            }
            if state.conns.is_empty() {
                keys.remove(key);
            }
        }
    }

    /// Dial, TLS, HTTP/2 handshake, and the task that drives the connection. The new
    /// connection comes with one stream reserved for the caller.
    async fn establish<D, F>(
        self: &Arc<Self>,
        key: &PoolKey,
        config: Arc<ClientConfig>,
        dial: D,
    ) -> Result<PooledConn, ConnectError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        let addr = key.dst_addr;
        let timeout = self.settings.handshake_timeout;
        let handshakes = async {
            let tcp = dial().await.map_err(|e| ConnectError::Dial { addr, source: Arc::new(e) })?;
            // Small HBONE frames (a 1-byte request) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let tls = tls::connect(config, tcp).await.map_err(|source| ConnectError::Tls { addr, source })?;
            let tls_failure = Arc::new(OnceLock::new());
            let io = RecordTlsErrors { inner: tls, failure: tls_failure.clone() };
            let (sender, connection) =
                self.settings.client_builder().handshake::<_, Bytes>(io).await.map_err(
                    |e| match tls_failure.get() {
                        Some(source) => ConnectError::Tls { addr, source: source.clone() },
                        None => ConnectError::Http2 { addr, source: Arc::new(e) },
                    },
                )?;
            Ok::<_, ConnectError>((sender, connection, tls_failure))
        };
        let (sender, connection, tls_failure) = match tokio::time::timeout(timeout, handshakes).await {
            Ok(result) => result?,
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        };
        let shared = Arc::new(ConnShared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            active: AtomicU32::new(1),
            max_streams: AtomicU32::new(self.settings.max_streams_per_connection),
            closed: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            idle: Notify::new(),
            tls_failure,
        });
        let span =
            tracing::debug_span!("hbone_conn", id = shared.id, src = %key.src, dst = %key.dst, addr = %addr);
        debug!(parent: &span, "HBONE connection established");
        let driver = Driver { pool: Arc::downgrade(self), key: key.clone(), shared: shared.clone() };
        tokio::spawn(driver.run(connection).instrument(span));
        Ok(PooledConn { shared, sender })
    }
}

/// The task that polls one client connection, keeps it alive with PINGs, publishes the
/// server's stream limit, and closes it when idle.
struct Driver {
    pool: Weak<PoolInner>,
    key: PoolKey,
    shared: Arc<ConnShared>,
}

type ClientConnection =
    h2::client::Connection<RecordTlsErrors<tokio_rustls::client::TlsStream<TcpStream>>, Bytes>;

impl Driver {
    async fn run(self, mut connection: ClientConnection) {
        let Some(settings) = self.pool.upgrade().map(|p| p.settings.clone()) else { return };
        let ping = connection.ping_pong();
        let ours = settings.max_streams_per_connection;
        let shared = &self.shared;
        let drive = poll_fn(move |cx| {
            let result = Pin::new(&mut connection).poll(cx);
            // Cheap, and the only way to see the peer's SETTINGS as they arrive.
            let theirs = u32::try_from(connection.max_concurrent_send_streams()).unwrap_or(u32::MAX);
            shared.max_streams.store(ours.min(theirs), Ordering::Release);
            result
        });
        tokio::pin!(drive);
        let keepalive = crate::keepalive::run(ping, settings.keepalive_interval, settings.keepalive_timeout);
        tokio::pin!(keepalive);
        let mut deadline: Option<Instant> = None;
        let mut forgotten = false;
        loop {
            tokio::select! {
                // The connection's own end first: a PING fails too once it is closed.
                biased;
                result = &mut drive => {
                    match result {
                        Ok(()) => debug!("HBONE connection closed"),
                        Err(e) => match self.shared.tls_failure.get() {
                            Some(tls) => warn!(error = %tls, "HBONE connection failed"),
                            None => debug!(error = %e, "HBONE connection failed"),
                        },
                    }
                    break;
                }
                failure = &mut keepalive, if !forgotten => {
                    warn!(%failure, "HBONE peer unresponsive; dropping the connection");
                    break;
                }
                () = self.shared.idle.notified(), if !forgotten => {
                    deadline = Some(Instant::now() + settings.idle_timeout);
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    deadline = None;
                    if forgotten {
                        debug!("idle HBONE connection did not close in time; dropping it");
                        break;
                    }
                    match self.close_if_idle(settings.idle_timeout) {
                        IdleCheck::Closed => {
                            // The pool dropped its SendRequest: h2 sends GOAWAY and `drive`
                            // ends once the peer has seen it, or after a PING timeout.
                            debug!("closing idle HBONE connection");
                            forgotten = true;
                            deadline = Some(Instant::now() + settings.keepalive_timeout);
                        }
                        IdleCheck::Busy => {}
                        IdleCheck::IdleUntil(at) => deadline = Some(at),
                    }
                }
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        if let Some(pool) = self.pool.upgrade() {
            pool.forget(&mut pool.lock(), &self.key, &self.shared);
        }
    }

    fn close_if_idle(&self, timeout: Duration) -> IdleCheck {
        let Some(pool) = self.pool.upgrade() else { return IdleCheck::Closed };
        let mut keys = pool.lock();
        // Under the lock no stream can be reserved, so `active == 0` holds until the
        // connection is out of the pool.
        if self.shared.active.load(Ordering::Acquire) > 0 {
            return IdleCheck::Busy;
        }
        let idle_since =
            pool.epoch + Duration::from_millis(self.shared.idle_since_ms.load(Ordering::Acquire));
        let deadline = idle_since + timeout;
        if deadline > Instant::now() {
            return IdleCheck::IdleUntil(deadline);
        }
        self.shared.closed.store(true, Ordering::Release);
        pool.forget(&mut keys, &self.key, &self.shared);
        IdleCheck::Closed
    }
}

enum IdleCheck {
    Closed,
    Busy,
    IdleUntil(Instant),
}

impl PoolInner {
    /// Removes a connection from the pool (it died or went idle).
    fn forget(&self, keys: &mut HashMap<PoolKey, KeyState>, key: &PoolKey, conn: &Arc<ConnShared>) {
        if let Some(state) = keys.get_mut(key) {
            state.conns.retain(|c| !Arc::ptr_eq(&c.shared, conn));
            if state.conns.is_empty() && state.dialing.is_none() {
                keys.remove(key);
            }
        }
    }
}

enum Attempt {
    /// The CONNECT never reached the server: safe to retry on another connection.
    NotSent(ConnectError),
    Failed(ConnectError),
}

/// Sends `CONNECT authority` (and `early`, if any) on a connection with a stream reserved,
/// and waits for 200.
async fn send_connect(
    conn: &PooledConn,
    addr: SocketAddr,
    authority: SocketAddr,
    early: &Bytes,
    guard: Arc<StreamGuard>,
) -> Result<H2Stream, Attempt> {
    let h2_failure = |e: h2::Error| match conn.shared.tls_failure.get() {
        Some(source) => ConnectError::Tls { addr, source: source.clone() },
        None => ConnectError::Http2 { addr, source: Arc::new(e) },
    };
    let mut sender = conn.sender.clone();
    poll_fn(|cx| sender.poll_ready(cx)).await.map_err(|e| Attempt::NotSent(h2_failure(e)))?;
    let request = connect_request(authority);
    let (response, mut send) =
        sender.send_request(request, false).map_err(|e| Attempt::NotSent(h2_failure(e)))?;
    if !early.is_empty() {
        // Queued behind the HEADERS; sent as the stream's window allows (a new stream's
        // window is far larger than one read from a socket).
        send.send_data(early.clone(), false).map_err(|e| Attempt::Failed(h2_failure(e)))?;
    }
    let response = response.await.map_err(|e| {
        if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            Attempt::NotSent(h2_failure(e))
        } else {
            Attempt::Failed(h2_failure(e))
        }
    })?;
    if response.status() != StatusCode::OK {
        return Err(Attempt::Failed(ConnectError::Status { addr, authority, status: response.status() }));
    }
    Ok(H2Stream::new(send, response.into_body(), Some(guard)))
}

fn connect_request(authority: SocketAddr) -> Request<()> {
    // An `ip:port` always makes a valid authority-form URI (IPv6 comes bracketed).
    let uri = Uri::try_from(authority.to_string()).unwrap_or_else(|_| Uri::from_static("0.0.0.0:0"));
    let mut request = Request::new(());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    request
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Passes I/O through and keeps the first TLS error, which h2 would reduce to its text:
/// a server that refuses our certificate says so in an alert read after the handshake.
struct RecordTlsErrors<S> {
    inner: S,
    failure: Arc<OnceLock<TlsError>>,
}

impl<S> RecordTlsErrors<S> {
    fn record<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && let Some(rustls_err) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            let _ = self.failure.set(TlsError::from_rustls(rustls_err.clone(), tls::Peer::Server));
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordTlsErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        Poll::Ready(self.record(result))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordTlsErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        Poll::Ready(self.record(result))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        Poll::Ready(self.record(result))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(self.record(result))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        Poll::Ready(self.record(result))
    }
}
