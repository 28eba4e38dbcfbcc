//! The reviews pods' servers: HBONE on the pod's :15008 (what the pod's agent would
//! terminate) and, inside each CONNECT, the fastest HTTP answer hyper gives (a 2-byte
//! body), in whichever HTTP version the waypoint speaks. They run in this process, not
//! behind an agent: see the module above for why.
//!
//! Each pod's listener is bound inside its network namespace; all of them are then served
//! by one thread, so the backends together take at most one core from the waypoint.

use crate::Pod;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};
use tokio::{net::TcpListener, sync::oneshot};
use weft_hbone::{Settings, WorkloadCertificate, tls};

/// HBONE's port on every pod.
pub const HBONE_PORT: u16 = 15008;

/// The running backends; stopped on drop.
pub struct Backends {
    /// Requests answered, per pod, in the order given to [`Backends::start`].
    pub hits: Vec<Arc<AtomicU64>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Backends {
    /// Serves HBONE on :15008 of each pod, presenting that pod's certificate; a CONNECT's
    /// tunnel is served as HTTP. Trusts any client: the waypoint is under test, not them.
    pub fn start(pods: &[(&Pod, WorkloadCertificate)], roots: &weft_hbone::TrustBundle) -> Result<Backends> {
        let mut listeners = Vec::new();
        let mut hits = Vec::new();
        for (pod, cert) in pods {
            let tls = tls::server_config(cert, roots).context("a backend's TLS config")?;
            let listener = pod
                .run(|| std::net::TcpListener::bind(("0.0.0.0", HBONE_PORT)))
                .with_context(|| format!("binding :{HBONE_PORT} in pod {}", pod.name()))?;
            listener.set_nonblocking(true)?;
            let counter = Arc::new(AtomicU64::new(0));
            hits.push(counter.clone());
            listeners.push((listener, tls, counter));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new().name("wpbench-backends".into()).spawn(move || {
            runtime.block_on(async move {
                for (listener, tls, counter) in listeners {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(accept_loop(listener, tls, counter));
                        }
                        Err(e) => eprintln!("wpbench: a backend listener: {e}"),
                    }
                }
                let _ = stopped.await;
            });
        })?;
        Ok(Backends { hits, stop: Some(stop), thread: Some(thread) })
    }

    /// Requests answered so far, per pod.
    pub fn counts(&self) -> Vec<u64> {
        self.hits.iter().map(|h| h.load(Ordering::Relaxed)).collect()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: Arc<rustls::ServerConfig>, hits: Arc<AtomicU64>) {
    let settings = Settings::default();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let (tls, hits, settings) = (tls.clone(), hits.clone(), settings.clone());
        // One HBONE connection from the waypoint: each CONNECT's tunnel served as HTTP.
        tokio::spawn(async move {
            let _ = weft_hbone::serve_connection(tcp, tls, &settings, std::future::pending(), |req| {
                let hits = hits.clone();
                async move {
                    if let Ok(tunnel) = req.accept() {
                        serve_http(tunnel, hits).await;
                    }
                }
            })
            .await;
        });
    }
}

/// One tunnel as an HTTP/1.1 or HTTP/2 connection: every request gets 200 "ok".
async fn serve_http(tunnel: weft_hbone::H2Stream, hits: Arc<AtomicU64>) {
    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
        hits.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tunnel), service)
        .await;
}
