//! HTTP/2 and pool settings, with ztunnel's defaults (istio/ztunnel `src/config.rs` and
//! `src/proxy/h2/{client,server}.rs`), so that Weft and ztunnel behave alike on the wire.

use std::time::Duration;

/// Settings shared by the HBONE client pool and server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Per-stream receive window. Large, so one stream can fill a fast link without
    /// waiting for WINDOW_UPDATEs (ztunnel: 4 MiB).
    pub stream_window: u32,
    /// Per-connection receive window. Larger than the stream window so that one stream a
    /// peer does not read cannot starve the connection's others (ztunnel: 16 MiB).
    pub connection_window: u32,
    /// Largest frame we accept, so the largest DATA frame a peer sends us. ztunnel uses
    /// 1 MiB; we use 64 KiB because it measured better: with 1 MiB frames h2's read
    /// buffer takes a fresh large allocation per frame (page faults were ~10% of the
    /// loopback profile) and CPU per byte was ~20% higher (`examples/loopback.rs`,
    /// `--frame`). Both ends choose their own, so this does not affect interop.
    pub max_frame_size: u32,
    /// Client: data h2 buffers per stream before writes wait (ztunnel: the stream window,
    /// so a window's worth can be flushed at once). This bounds memory per stream.
    pub client_send_buffer: u32,
    /// Server: data h2 buffers per stream before writes wait (ztunnel: 400 KiB, hyper's).
    pub server_send_buffer: u32,
    /// Client: streams the pool opens on one connection before it opens another
    /// (ztunnel: 100, Go's default). The server's own limit, if lower, wins.
    pub max_streams_per_connection: u32,
    /// Server: SETTINGS_MAX_CONCURRENT_STREAMS advertised (ztunnel: 200, hyper's).
    pub server_max_concurrent_streams: u32,
    /// Largest header list accepted (ztunnel: 16 KiB client, 64 KiB server; one value
    /// here, HBONE requests carry a handful of headers).
    pub max_header_list_size: u32,
    /// A pooled connection with no stream for this long is closed (ztunnel: 5 min).
    pub idle_timeout: Duration,
    /// An HTTP/2 PING is sent after this long; both sides (ztunnel: 10 s).
    pub keepalive_interval: Duration,
    /// A PING not answered within this is a dead peer: the connection is dropped
    /// (ztunnel: 20 s).
    pub keepalive_timeout: Duration,
    /// Dial, TLS and HTTP/2 handshakes of a new connection must finish within this;
    /// the server applies it to the TLS handshake of an accepted connection.
    pub handshake_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            client_send_buffer: 4 * 1024 * 1024,
            server_send_buffer: 400 * 1024,
            max_streams_per_connection: 100,
            server_max_concurrent_streams: 200,
            max_header_list_size: 64 * 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.client_send_buffer as usize)
            .initial_max_send_streams(self.max_streams_per_connection as usize)
            .max_header_list_size(self.max_header_list_size)
            .enable_push(false);
        builder
    }

    pub(crate) fn server_builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.server_send_buffer as usize)
            .max_concurrent_streams(self.server_max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size);
        builder
    }
}
