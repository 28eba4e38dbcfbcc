//! Responses as they leave the server: the message head plus the shared resources, encoded
//! straight into a gRPC frame of exactly their size.
//!
//! Building a prost `DeltaDiscoveryResponse` would copy every resource's name, version and
//! bytes into a new message, and tonic would then encode that copy again: for a new agent
//! on a 110k-address mesh, ~200k allocations and two copies of ~30 MB per stream. Encoding
//! from the `Arc`s the snapshot already holds leaves one copy, into the frame. The bytes
//! on the wire are exactly prost's (fields of a message may come in any order, and the
//! head's fields are written first).

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::Message;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::snapshot::ScopedResource;

/// `DeltaDiscoveryResponse.resources` and `DiscoveryResponse.resources`.
const RESOURCES: u32 = 2;

/// A delta response: `head` carries every field but `resources`.
#[derive(Debug, Default)]
pub(crate) struct DeltaOut {
    pub head: DeltaDiscoveryResponse,
    pub resources: Vec<Arc<ScopedResource>>,
}

/// A state-of-the-world response: `head` carries every field but `resources`.
#[derive(Debug, Default)]
pub(crate) struct SotwOut {
    pub head: DiscoveryResponse,
    pub resources: Vec<Arc<ScopedResource>>,
}

/// A response the server writes itself: a prost head plus shared resources, each encoded
/// as one entry of the repeated `resources` field.
pub(crate) trait Outgoing: Send + Unpin + 'static {
    fn head(&self) -> &impl Message;
    /// The response's `type_url`.
    fn type_url(&self) -> &str;
    fn resources(&self) -> &[Arc<ScopedResource>];
    /// The body of one `resources` entry, without its key and length.
    fn resource_len(r: &ScopedResource) -> usize;
    fn encode_resource(r: &ScopedResource, buf: &mut impl BufMut);

    /// Resources carried (a large response is a proxy's full state).
    fn len(&self) -> usize {
        self.resources().len()
    }

    /// The `resources` entry of `r`, key and length included.
    fn entry_len(r: &ScopedResource) -> usize {
        field_len(RESOURCES, Self::resource_len(r))
    }

    fn put_entry(r: &ScopedResource, buf: &mut impl BufMut) {
        encode_key(RESOURCES, WireType::LengthDelimited, buf);
        encode_varint(Self::resource_len(r) as u64, buf);
        Self::encode_resource(r, buf);
    }

    /// The exact length of the encoded message.
    fn encoded_len(&self) -> usize {
        self.head().encoded_len() + self.resources().iter().map(|r| Self::entry_len(r)).sum::<usize>()
    }

    /// The whole message at once (tests compare it with prost's encoding).
    #[cfg(test)]
    fn encode_to(&self, buf: &mut impl BufMut) {
        self.head().encode_raw(buf);
        for r in self.resources() {
            Self::put_entry(r, buf);
        }
    }

    /// The next piece of this response's gRPC frame, about `target` bytes (at least one
    /// resource), in a buffer of exactly its size; `at` is the next resource to write, or
    /// `None` before the frame header and head. Sending a full state in pieces keeps only a
    /// piece per stream in memory while the proxy reads, not the whole frame.
    fn next_piece(&self, at: &mut Option<usize>, target: usize) -> Bytes {
        let resources = self.resources();
        let start = at.unwrap_or(0);
        let mut len = if at.is_none() { crate::frame::HEADER_SIZE + self.head().encoded_len() } else { 0 };
        let mut end = start;
        while end < resources.len() && (end == start || len < target) {
            len += Self::entry_len(&resources[end]);
            end += 1;
        }
        let mut buf = BytesMut::with_capacity(len);
        if at.is_none() {
            buf.put_u8(0);
            buf.put_u32(u32::try_from(self.encoded_len()).expect("gRPC messages are smaller than 4 GiB"));
            self.head().encode_raw(&mut buf);
        }
        for r in &resources[start..end] {
            Self::put_entry(r, &mut buf);
        }
        debug_assert_eq!(buf.len(), len);
        *at = Some(end);
        buf.freeze()
    }

    /// Whether [`next_piece`](Self::next_piece) has written everything.
    fn finished(&self, at: Option<usize>) -> bool {
        at.is_some_and(|at| at == self.resources().len())
    }
}

impl Outgoing for DeltaOut {
    fn head(&self) -> &impl Message {
        &self.head
    }

    fn type_url(&self) -> &str {
        &self.head.type_url
    }

    fn resources(&self) -> &[Arc<ScopedResource>] {
        &self.resources
    }

    /// `envoy.service.discovery.v3.Resource { version = 1; resource = 2; name = 3 }`.
    fn resource_len(r: &ScopedResource) -> usize {
        string_len(1, &r.version) + field_len(2, any_len(r)) + string_len(3, &r.name)
    }

    fn encode_resource(r: &ScopedResource, buf: &mut impl BufMut) {
        put_string(1, &r.version, buf);
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(any_len(r) as u64, buf);
        put_any(r, buf);
        put_string(3, &r.name, buf);
    }
}

impl Outgoing for SotwOut {
    fn head(&self) -> &impl Message {
        &self.head
    }

    fn type_url(&self) -> &str {
        &self.head.type_url
    }

    fn resources(&self) -> &[Arc<ScopedResource>] {
        &self.resources
    }

    /// A `google.protobuf.Any`.
    fn resource_len(r: &ScopedResource) -> usize {
        any_len(r)
    }

    fn encode_resource(r: &ScopedResource, buf: &mut impl BufMut) {
        put_any(r, buf);
    }
}

/// A length-delimited field of `len` bytes, with its key and length.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// `google.protobuf.Any { type_url = 1; value = 2 }`, without its own key and length.
fn any_len(r: &ScopedResource) -> usize {
    string_len(1, &r.resource.type_url) + bytes_len(2, &r.resource.value)
}

fn put_any(r: &ScopedResource, buf: &mut impl BufMut) {
    put_string(1, &r.resource.type_url, buf);
    put_bytes(2, &r.resource.value, buf);
}

/// proto3 leaves empty strings and bytes out.
fn string_len(tag: u32, s: &str) -> usize {
    bytes_len(tag, s.as_bytes())
}

fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(b.len() as u64) + b.len() }
}

fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    put_bytes(tag, s.as_bytes(), buf);
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(b.len() as u64, buf);
        buf.put_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Any;
    use crate::server::snapshot::Scope;
    use envoy_types::pb::envoy::service::discovery::v3::Resource;

    fn resources() -> Vec<Arc<ScopedResource>> {
        vec![
            Arc::new(
                ScopedResource::new("a", Scope::All, Any { type_url: "t/x".into(), value: vec![1, 2, 3] })
                    .with_version("v1"),
            ),
            // Empty bytes and a long value (multi-byte lengths).
            Arc::new(ScopedResource::new("b", Scope::All, Any { type_url: "t/x".into(), value: vec![] })),
            Arc::new(
                ScopedResource::new("c", Scope::All, Any { type_url: "t/x".into(), value: vec![7; 70_000] })
                    .with_version("v3"),
            ),
        ]
    }

    #[test]
    fn delta_bytes_decode_as_the_prost_message() {
        let head = DeltaDiscoveryResponse {
            system_version_info: "9".into(),
            type_url: "t/x".into(),
            nonce: "n".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let out = DeltaOut { head: head.clone(), resources: resources() };
        let mut buf = Vec::new();
        out.encode_to(&mut buf);
        let decoded = DeltaDiscoveryResponse::decode(buf.as_slice()).unwrap();
        let expected = DeltaDiscoveryResponse {
            resources: resources()
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
                .collect(),
            ..head
        };
        assert_eq!(decoded, expected);
        assert_eq!(buf.len(), expected.encoded_len());
        assert_eq!(buf.len(), out.encoded_len());
    }

    #[test]
    fn sotw_bytes_decode_as_the_prost_message() {
        let head = DiscoveryResponse {
            version_info: "9".into(),
            type_url: "t/x".into(),
            nonce: "n".into(),
            ..Default::default()
        };
        let out = SotwOut { head: head.clone(), resources: resources() };
        let mut buf = Vec::new();
        out.encode_to(&mut buf);
        let expected =
            DiscoveryResponse { resources: resources().iter().map(|r| r.resource.clone()).collect(), ..head };
        assert_eq!(DiscoveryResponse::decode(buf.as_slice()).unwrap(), expected);
        assert_eq!(buf.len(), out.encoded_len());
    }

    #[test]
    fn pieces_make_one_frame() {
        let out = DeltaOut {
            head: DeltaDiscoveryResponse { nonce: "n".into(), ..Default::default() },
            resources: resources(),
        };
        for target in [1, 100, 1 << 20] {
            let mut at = None;
            let mut framed = Vec::new();
            while !out.finished(at) {
                framed.extend_from_slice(&out.next_piece(&mut at, target));
            }
            let mut messages = Vec::new();
            let mut deframer = crate::frame::Deframer::new(1 << 20);
            deframer.push(framed.as_slice(), &mut messages).unwrap();
            deframer.finish().unwrap();
            let mut whole = Vec::new();
            out.encode_to(&mut whole);
            assert_eq!(messages, [whole], "target {target}");
        }
        // No resources: one piece with the head.
        let empty = SotwOut::default();
        let mut at = None;
        assert_eq!(empty.next_piece(&mut at, 10).len(), crate::frame::HEADER_SIZE);
        assert!(empty.finished(at));
    }
}
