//! The inbound bypass list: connections the agent itself opens to a pod's application.
//!
//! The agent connects to the application from the client's address (IP_TRANSPARENT), so the
//! application sees its real peer. To sk_lookup that connection looks like any other client
//! of the pod and would be steered straight back to the agent. Before connecting, the agent
//! names the connection here by both ends; sk_lookup lets exactly that one through; the
//! entry goes as soon as the connect finished (sk_lookup only runs for the SYN).
//!
//! Written from many connection tasks at once, so it calls `bpf(2)` on the map descriptor
//! directly: no lock, one syscall to add and one to remove per inbound connection.

use super::sys;
use aya::maps::{Map, MapData};
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd,
    sync::Arc,
};
use weft_ebpf_common::BypassKey;

const BPF_ANY: u64 = 0;

/// The pinned `WEFT_INBOUND_BYPASS` map. Cheap to clone.
#[derive(Clone)]
pub struct BypassTable {
    map: Arc<MapData>,
}

/// While held, the named connection passes sk_lookup; dropping it removes the entry.
#[must_use = "the entry is removed when the guard is dropped"]
pub struct BypassGuard {
    map: Arc<MapData>,
    key: BypassKey,
}

impl BypassTable {
    pub(super) fn new(map: Map) -> BypassTable {
        let data = match map {
            Map::LruHashMap(data) | Map::HashMap(data) => data,
            other => unreachable!("WEFT_INBOUND_BYPASS is an LRU hash in the object, got {other:?}"),
        };
        BypassTable { map: Arc::new(data) }
    }

    /// Lets the connection from `client` to `app` (in the pod) past inbound steering.
    pub fn allow(&self, client: SocketAddrV4, app: SocketAddrV4) -> io::Result<BypassGuard> {
        let key = key(client, app);
        sys::map_update(self.map.fd().as_fd(), bytes_of(&key), &[1u8], BPF_ANY)?;
        Ok(BypassGuard { map: self.map.clone(), key })
    }
}

impl Drop for BypassGuard {
    fn drop(&mut self) {
        let _ = sys::map_delete(self.map.fd().as_fd(), bytes_of(&self.key));
    }
}

fn key(client: SocketAddrV4, app: SocketAddrV4) -> BypassKey {
    let net = |ip: &Ipv4Addr| u32::from_ne_bytes(ip.octets());
    BypassKey {
        remote_ip: net(client.ip()),
        local_ip: net(app.ip()),
        remote_port: client.port(),
        local_port: app.port(),
    }
}

fn bytes_of(key: &BypassKey) -> &[u8] {
    // SAFETY: BypassKey is repr(C), 12 bytes of integers without padding (asserted in
    // weft-ebpf-common), so viewing it as bytes reads only initialised memory.
    unsafe {
        std::slice::from_raw_parts((key as *const BypassKey).cast::<u8>(), std::mem::size_of::<BypassKey>())
    }
}
