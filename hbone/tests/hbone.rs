//! HBONE end to end in one process: the pool against the server over loopback TCP, with
//! certificates from the test CA. No root needed.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinSet,
};
use weft_hbone::{
    ConnectError, H2Stream, HboneRequest, Identity, Pool, PoolKey, ServeError, Settings, TlsError,
    TrustBundle, WorkloadCertificate, serve_connection, testing::TestCa, tls,
};

type Handler = Arc<dyn Fn(HboneRequest) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(HboneRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// Accepts, then echoes every byte back and half-closes when the client does.
fn echo() -> Handler {
    handler(|req: HboneRequest| async move {
        let Ok(stream) = req.accept() else { return };
        let (mut r, mut w) = stream.into_split();
        if tokio::io::copy_buf(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    })
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "shop", sa).unwrap()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// An HBONE server on loopback that counts the TCP connections it accepts and reports how
/// each one ended.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: mpsc::UnboundedReceiver<Result<(), ServeError>>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    async fn start(
        cert: &WorkloadCertificate,
        roots: &TrustBundle,
        settings: Settings,
        handler: Handler,
    ) -> Server {
        init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = tls::server_config(cert, roots).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (config, settings, handler, ended_tx) =
                    (config.clone(), settings.clone(), handler.clone(), ended_tx.clone());
                let mut shutdown = shutdown_rx.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = shutdown.wait_for(|stop| *stop).await;
                    };
                    let result =
                        serve_connection(tcp, config, &settings, stop, move |req| handler(req)).await;
                    let _ = ended_tx.send(result);
                });
            }
        });
        Server { addr, accepted, ended, shutdown }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The two workloads, their certificates from one CA, and a pool for the client.
struct Mesh {
    ca: TestCa,
    roots: TrustBundle,
    client_cert: Arc<WorkloadCertificate>,
    server_cert: WorkloadCertificate,
}

impl Mesh {
    fn new() -> Mesh {
        let ca = TestCa::with_intermediate();
        let roots = ca.trust_bundle();
        let client_cert = Arc::new(ca.issue(&id("cart"), Duration::from_secs(3600)));
        let server_cert = ca.issue(&id("pay"), Duration::from_secs(3600));
        Mesh { ca, roots, client_cert, server_cert }
    }

    async fn server(&self, settings: Settings, handler: Handler) -> Server {
        Server::start(&self.server_cert, &self.roots, settings, handler).await
    }

    fn key(&self, server: &Server) -> PoolKey {
        PoolKey { src: id("cart"), dst: id("pay"), dst_addr: server.addr, extra: 7 }
    }

    async fn connect(&self, pool: &Pool, server: &Server, authority: &str) -> Result<H2Stream, ConnectError> {
        let addr = server.addr;
        pool.connect(
            &self.key(server),
            &self.client_cert,
            &self.roots,
            authority.parse().unwrap(),
            move || TcpStream::connect(addr),
        )
        .await
    }
}

/// Deterministic, non-repeating-looking bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_mib_echo_back_intact_and_the_server_sees_who_and_where() {
    let mesh = Mesh::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = mesh
        .server(
            Settings::default(),
            handler(move |req: HboneRequest| {
                record.lock().unwrap().push((req.peer_identity().clone(), req.authority()));
                let echo = echo();
                async move { echo(req).await }
            }),
        )
        .await;
    let pool = Pool::new(Settings::default());
    let stream = mesh.connect(&pool, &server, "10.1.2.3:9080").await.unwrap();

    let data = pattern(12 * 1024 * 1024 + 7);
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        // Odd-sized writes, so chunks and frames never line up.
        for chunk in sent.chunks(100_003) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut received = Vec::with_capacity(data.len());
    r.read_to_end(&mut received).await.unwrap();
    writer.await.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "the bytes came back changed");
    assert_eq!(*seen.lock().unwrap(), vec![(id("cart"), "10.1.2.3:9080".parse().unwrap())]);
}

#[tokio::test]
async fn half_close_leaves_the_other_direction_open() {
    let mesh = Mesh::new();
    // Client → server closes first: the server reads to the end, then answers.
    let server = mesh
        .server(
            Settings::default(),
            handler(|req: HboneRequest| async move {
                let mut stream = req.accept().unwrap();
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                stream.write_all(format!("got {} bytes", got.len()).as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            }),
        )
        .await;
    let pool = Pool::new(Settings::default());
    let mut stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    stream.write_all(&[7; 300_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 300000 bytes");

    // Server → client closes first: the client reads to the end, then still sends.
    let (got_tx, mut got_rx) = mpsc::unbounded_channel();
    let server = mesh
        .server(
            Settings::default(),
            handler(move |req: HboneRequest| {
                let got_tx = got_tx.clone();
                async move {
                    let mut stream = req.accept().unwrap();
                    stream.write_all(b"hello, then silence").await.unwrap();
                    stream.shutdown().await.unwrap();
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await.unwrap();
                    got_tx.send(got).unwrap();
                }
            }),
        )
        .await;
    let mut stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let mut greeting = String::new();
    stream.read_to_string(&mut greeting).await.unwrap();
    assert_eq!(greeting, "hello, then silence");
    stream.write_all(b"still talking").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(got_rx.recv().await.unwrap(), b"still talking");
}

#[tokio::test]
async fn two_connects_share_one_tls_connection() {
    let mesh = Mesh::new();
    let server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings::default());
    let mut first = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let mut second = mesh.connect(&pool, &server, "10.1.2.3:81").await.unwrap();
    for (stream, word) in [(&mut first, b"one"), (&mut second, b"two")] {
        stream.write_all(word).await.unwrap();
        let mut back = [0; 3];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, word);
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(pool.connections(), 1);

    // Another key (here: another extra value, as another pod's netns) gets its own.
    let mut other = mesh.key(&server);
    other.extra = 8;
    let addr = server.addr;
    let _third = pool
        .connect(&other, &mesh.client_cert, &mesh.roots, "10.1.2.3:80".parse().unwrap(), move || {
            TcpStream::connect(addr)
        })
        .await
        .unwrap();
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.connections(), 2);
}

#[tokio::test]
async fn a_full_connection_makes_the_pool_open_another() {
    let mesh = Mesh::new();
    // Our limit.
    let server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings { max_streams_per_connection: 2, ..Settings::default() });
    let a = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let b = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    assert_eq!(server.accepted(), 1);
    let c = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.connections(), 2);
    // A slot freed on the first connection is used again before a new connection.
    drop(a);
    let _d = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    assert_eq!(server.accepted(), 2);
    drop((b, c));

    // The server's limit, when lower than ours.
    let server =
        mesh.server(Settings { server_max_concurrent_streams: 1, ..Settings::default() }, echo()).await;
    let pool = Pool::new(Settings::default());
    let _a = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    // Queued behind the first stream by h2 instead, it would wait forever.
    let _b = tokio::time::timeout(Duration::from_secs(5), mesh.connect(&pool, &server, "10.1.2.3:80"))
        .await
        .expect("the pool opens another connection rather than queueing the stream")
        .unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_dial_once() {
    let mesh = Arc::new(Mesh::new());
    let server = Arc::new(mesh.server(Settings::default(), echo()).await);
    let pool = Pool::new(Settings::default());
    let dials = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..16u16 {
        let (mesh, server, pool, dials) = (mesh.clone(), server.clone(), pool.clone(), dials.clone());
        tasks.spawn(async move {
            let addr = server.addr;
            let authority = SocketAddr::from(([10, 1, 2, 3], 8000 + i));
            let mut stream = pool
                .connect(&mesh.key(&server), &mesh.client_cert, &mesh.roots, authority, move || async move {
                    dials.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that every caller arrives while the dial is under way.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    TcpStream::connect(addr).await
                })
                .await
                .unwrap();
            stream.write_all(&i.to_be_bytes()).await.unwrap();
            let mut back = [0; 2];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(u16::from_be_bytes(back), i);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_fails_its_waiters_too() {
    let mesh = Arc::new(Mesh::new());
    let pool = Pool::new(Settings::default());
    let dials = Arc::new(AtomicUsize::new(0));
    let key = PoolKey { src: id("cart"), dst: id("pay"), dst_addr: "127.0.0.1:9".parse().unwrap(), extra: 0 };
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let (mesh, pool, dials, key) = (mesh.clone(), pool.clone(), dials.clone(), key.clone());
        tasks.spawn(async move {
            pool.connect(
                &key,
                &mesh.client_cert,
                &mesh.roots,
                "10.1.2.3:80".parse().unwrap(),
                move || async move {
                    dials.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err::<TcpStream, _>(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
                },
            )
            .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let err = done.unwrap().unwrap_err();
        assert!(
            matches!(&err, ConnectError::Dial { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused),
            "{err}"
        );
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    assert_eq!(pool.connections(), 0);
}

#[tokio::test]
async fn a_refused_connect_is_a_typed_error_with_its_status() {
    let mesh = Mesh::new();
    let server = mesh
        .server(
            Settings::default(),
            handler(|req: HboneRequest| async move {
                if req.authority().port() == 80 {
                    let _ = req.accept();
                } else {
                    req.refuse(http::StatusCode::FORBIDDEN);
                }
            }),
        )
        .await;
    let pool = Pool::new(Settings::default());
    let err = mesh.connect(&pool, &server, "10.1.2.3:443").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::FORBIDDEN));
    assert!(err.to_string().contains("answered CONNECT 10.1.2.3:443 with 403 Forbidden"), "{err}");
    // The refusal touched that stream only: the connection serves the next CONNECT.
    mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn bytes_sent_with_the_connect_arrive_first_and_a_refusal_drops_them() {
    let mesh = Mesh::new();
    let (got_tx, mut got_rx) = mpsc::unbounded_channel();
    let server = mesh
        .server(
            Settings::default(),
            handler(move |req: HboneRequest| {
                let got_tx = got_tx.clone();
                async move {
                    if req.authority().port() != 80 {
                        req.refuse(http::StatusCode::UNAUTHORIZED);
                        return;
                    }
                    let mut stream = req.accept().unwrap();
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await.unwrap();
                    got_tx.send(got).unwrap();
                    stream.shutdown().await.unwrap();
                }
            }),
        )
        .await;
    let pool = Pool::new(Settings::default());
    let key = mesh.key(&server);
    let connect = |authority: &str, early: &'static [u8]| {
        let addr = server.addr;
        pool.connect_with_data(
            &key,
            &mesh.client_cert,
            &mesh.roots,
            authority.parse().unwrap(),
            bytes::Bytes::from_static(early),
            move || TcpStream::connect(addr),
        )
    };
    // Refused: an error with the status, and the early bytes reach no handler.
    let err = connect("10.1.2.3:443", b"secret").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    // Accepted: the early bytes come first, then what is written on the stream.
    let mut stream = connect("10.1.2.3:80", b"GET / HTTP/1.1\r\n").await.unwrap();
    stream.write_all(b"\r\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(got_rx.recv().await.unwrap(), b"GET / HTTP/1.1\r\n\r\n");
    assert!(got_rx.try_recv().is_err(), "the refused stream's bytes reached a handler");
    assert_eq!(server.accepted(), 1, "both streams rode one connection");
}

#[tokio::test]
async fn a_handler_that_drops_the_request_answers_503() {
    let mesh = Mesh::new();
    let server =
        mesh.server(Settings::default(), handler(|req: HboneRequest| async move { drop(req) })).await;
    let pool = Pool::new(Settings::default());
    let err = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
}

/// A raw HTTP/2 client over the mesh's TLS, to send what the pool never sends.
async fn raw_request(mesh: &Mesh, server: &Server, request: http::Request<()>) -> http::StatusCode {
    let config = tls::client_config(&mesh.client_cert, &mesh.roots, &[id("pay")]).unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = tls::connect(config, tcp).await.unwrap();
    let (mut sender, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let (response, _send) = sender.send_request(request, false).unwrap();
    response.await.unwrap().status()
}

#[tokio::test]
async fn what_is_not_a_connect_to_ip_port_is_answered_by_the_server() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let server = mesh
        .server(
            Settings::default(),
            handler(move |req: HboneRequest| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { req.refuse(http::StatusCode::IM_A_TEAPOT) }
            }),
        )
        .await;
    let connect = |authority: &str| {
        http::Request::builder().method(http::Method::CONNECT).uri(authority).body(()).unwrap()
    };
    assert_eq!(raw_request(&mesh, &server, connect("pay.shop.svc:80")).await, http::StatusCode::BAD_REQUEST);
    assert_eq!(raw_request(&mesh, &server, connect("10.1.2.3")).await, http::StatusCode::BAD_REQUEST);
    let get = http::Request::builder().uri("https://10.1.2.3:80/").body(()).unwrap();
    assert_eq!(raw_request(&mesh, &server, get).await, http::StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never saw them");
    // IPv6 authorities are ip:port too.
    assert_eq!(raw_request(&mesh, &server, connect("[fd00::5]:80")).await, http::StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn tls_refusals_are_typed_on_both_sides() {
    let mesh = Mesh::new();
    let mut server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings::default());
    let addr = server.addr;
    let dial = move || TcpStream::connect(addr);

    // Our certificate from another CA: the server refuses it, we learn why from its alert.
    let stranger = Arc::new(TestCa::new().issue(&id("cart"), Duration::from_secs(600)));
    let err =
        pool.connect(&mesh.key(&server), &stranger, &mesh.roots, "10.1.2.3:80".parse().unwrap(), dial).await;
    let err = err.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Tls {
                source: TlsError::RefusedByPeer { alert: rustls::AlertDescription::UnknownCA },
                ..
            }
        ),
        "{err}"
    );
    let ended = server.ended.recv().await.unwrap().unwrap_err();
    assert!(
        matches!(ended, ServeError::Tls { source: TlsError::UnknownIssuer { peer: tls::Peer::Client }, .. }),
        "{ended}"
    );
    assert!(ended.to_string().contains("127.0.0.1"), "names the peer: {ended}");

    // Expired on our side.
    let expired = Arc::new(mesh.ca.issue_expired(&id("cart")));
    let err =
        pool.connect(&mesh.key(&server), &expired, &mesh.roots, "10.1.2.3:80".parse().unwrap(), dial).await;
    assert!(
        matches!(
            err,
            Err(ConnectError::Tls {
                source: TlsError::RefusedByPeer { alert: rustls::AlertDescription::CertificateExpired },
                ..
            })
        ),
        "{err:?}"
    );
    let ended = server.ended.recv().await.unwrap().unwrap_err();
    assert!(matches!(ended, ServeError::Tls { source: TlsError::Expired { .. }, .. }), "{ended}");

    // The server is not who the key says.
    let mut key = mesh.key(&server);
    key.dst = id("billing");
    let err = pool.connect(&key, &mesh.client_cert, &mesh.roots, "10.1.2.3:80".parse().unwrap(), dial).await;
    match err {
        Err(ConnectError::Tls { source: TlsError::IdentityMismatch { presented, expected }, .. }) => {
            assert_eq!((presented, expected), (id("pay"), vec![id("billing")]));
        }
        other => panic!("expected an identity mismatch, got {other:?}"),
    }
    assert_eq!(pool.connections(), 0);

    // A certificate that is not the key's source is a caller bug, caught before dialing.
    let err = pool
        .connect(
            &mesh.key(&server),
            &Arc::new(mesh.ca.issue(&id("other"), Duration::from_secs(60))),
            &mesh.roots,
            "10.1.2.3:80".parse().unwrap(),
            dial,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::WrongCertificate { .. }), "{err}");
}

#[tokio::test]
async fn a_reset_stream_is_an_io_error_and_spares_its_neighbours() {
    let mesh = Mesh::new();
    let server = mesh
        .server(
            Settings::default(),
            handler(|req: HboneRequest| async move {
                let reset = req.authority().port() == 666;
                let mut stream = req.accept().unwrap();
                if reset {
                    // Let the client read the first bytes, then fail the tunnel.
                    stream.write_all(b"partial").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    stream.abort();
                    return;
                }
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy_buf(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }),
        )
        .await;
    let pool = Pool::new(Settings::default());
    let mut good = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let mut bad = mesh.connect(&pool, &server, "10.1.2.3:666").await.unwrap();
    let mut partial = [0; 7];
    bad.read_exact(&mut partial).await.unwrap();
    assert_eq!(&partial, b"partial");
    let err = bad.read_u8().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    let reason = err.get_ref().and_then(|e| e.downcast_ref::<h2::Error>()).and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::CONNECT_ERROR));

    good.write_all(b"still here").await.unwrap();
    let mut back = [0; 10];
    good.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn writes_wait_for_flow_control() {
    let mesh = Mesh::new();
    let window = 64 * 1024;
    // A server that accepts and never reads.
    let (hold_tx, mut hold_rx) = mpsc::unbounded_channel();
    let server = mesh
        .server(
            Settings { stream_window: window, ..Settings::default() },
            handler(move |req: HboneRequest| {
                let hold_tx = hold_tx.clone();
                async move {
                    let _ = hold_tx.send(req.accept().unwrap());
                }
            }),
        )
        .await;
    let send_buffer = 32 * 1024;
    let pool = Pool::new(Settings { client_send_buffer: send_buffer, ..Settings::default() });
    let mut stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let mut written = 0usize;
    let chunk = [1u8; 4096];
    while let Ok(n) = tokio::time::timeout(Duration::from_millis(200), stream.write(&chunk)).await {
        written += n.unwrap();
        assert!(written <= 1024 * 1024, "writes never waited");
    }
    // The peer's window plus what h2 may queue locally, and not much more.
    assert!(written >= window as usize, "wrote only {written}");
    assert!(written <= window as usize + send_buffer as usize + chunk.len(), "wrote {written}");

    // Once the server reads, the writer moves again.
    let mut held = hold_rx.recv().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut total = 0;
        let mut buf = vec![0; 64 * 1024];
        loop {
            match held.read(&mut buf).await.unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });
    stream.write_all(&[2u8; 200_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), written + 200_000);
}

#[tokio::test]
async fn idle_connections_close_and_dead_ones_leave_the_pool() {
    let mesh = Mesh::new();
    let mut server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings { idle_timeout: Duration::from_millis(200), ..Settings::default() });
    let stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.connections(), 1, "a connection with a stream is not idle");
    drop(stream);
    // Closed by the pool: the server sees the connection end cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(5), server.ended.recv()).await.unwrap().unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(pool.connections(), 0);

    // A connection the server closes (here: drains on shutdown) leaves the pool, and the
    // next connect dials again.
    let mut stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    assert_eq!(server.accepted(), 2);
    server.shutdown.send(true).unwrap();
    // In-flight streams finish first.
    stream.write_all(b"drain").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"drain");
    drop(stream);
    let ended = tokio::time::timeout(Duration::from_secs(5), server.ended.recv()).await.unwrap().unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    for _ in 0..100 {
        if pool.connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.connections(), 0);
}

#[tokio::test]
async fn new_connections_present_the_certificate_passed_now() {
    let mesh = Mesh::new();
    let server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings { max_streams_per_connection: 1, ..Settings::default() });
    let addr = server.addr;
    let mut first = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    // A certificate the server cannot trust makes the change visible: if the pool reused
    // the cached config of the first certificate, this connect would succeed.
    let replaced = Arc::new(TestCa::new().issue(&id("cart"), Duration::from_secs(600)));
    let err = pool
        .connect(&mesh.key(&server), &replaced, &mesh.roots, "10.1.2.3:80".parse().unwrap(), move || {
            TcpStream::connect(addr)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { source: TlsError::RefusedByPeer { .. }, .. }), "{err}");
    // The connection made with the first certificate keeps working.
    first.write_all(b"ok").await.unwrap();
    let mut back = [0; 2];
    first.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ok");
}

#[tokio::test]
async fn buffered_reads_hand_out_chunks() {
    let mesh = Mesh::new();
    let server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings::default());
    let mut stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    stream.write_all(b"line one\nline two\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut lines = stream.lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("line one"));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("line two"));
    assert_eq!(lines.next_line().await.unwrap(), None);
}

#[tokio::test]
async fn bytes_are_sent_without_a_copy_through_write_bytes() {
    let mesh = Mesh::new();
    let server = mesh.server(Settings::default(), echo()).await;
    let pool = Pool::new(Settings::default());
    let stream = mesh.connect(&pool, &server, "10.1.2.3:80").await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let data = bytes::Bytes::from(pattern(3 * 1024 * 1024));
    let mut rest = data.clone();
    let writer = tokio::spawn(async move {
        while !rest.is_empty() {
            std::future::poll_fn(|cx| w.poll_write_bytes(cx, &mut rest)).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == data, "the bytes came back changed");
}

/// The agent keeps one of these per proxied connection: a regression in its size shows
/// here, not on a node with thousands of connections.
#[test]
fn a_stream_stays_small() {
    let size = std::mem::size_of::<H2Stream>();
    assert!(size <= 128, "H2Stream is {size} bytes");
}
