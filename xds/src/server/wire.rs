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
use prost::bytes::{BufMut, Bytes};
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

/// Writes a response into a buffer.
pub(crate) trait Outgoing: Send + 'static {
    fn encode_to(&self, buf: &mut impl BufMut);
    /// The exact length `encode_to` writes.
    fn encoded_len(&self) -> usize;
    /// Resources carried (a large response is a proxy's full state).
    fn len(&self) -> usize;

    /// The response as one gRPC message, in a buffer of exactly its size.
    fn frame(&self) -> Bytes {
        crate::frame::encode_with(self.encoded_len(), |buf| self.encode_to(buf))
    }
}

impl Outgoing for DeltaOut {
    fn encode_to(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for r in &self.resources {
            // envoy.service.discovery.v3.Resource { version = 1; resource = 2; name = 3 }
            let any_len = any_len(r);
            let len = string_len(1, &r.version)
                + key_len(2)
                + encoded_len_varint(any_len as u64)
                + any_len
                + string_len(3, &r.name);
            encode_key(RESOURCES, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            put_string(1, &r.version, buf);
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(any_len as u64, buf);
            put_any(r, buf);
            put_string(3, &r.name, buf);
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self.resources.iter().map(|r| field_len(RESOURCES, delta_resource_len(r))).sum::<usize>()
    }

    fn len(&self) -> usize {
        self.resources.len()
    }
}

impl Outgoing for SotwOut {
    fn encode_to(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for r in &self.resources {
            encode_key(RESOURCES, WireType::LengthDelimited, buf);
            encode_varint(any_len(r) as u64, buf);
            put_any(r, buf);
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self.resources.iter().map(|r| field_len(RESOURCES, any_len(r))).sum::<usize>()
    }

    fn len(&self) -> usize {
        self.resources.len()
    }
}

/// A length-delimited field of `len` bytes, with its key and length.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// `Resource { version = 1; resource = 2; name = 3 }`, without its own key and length.
fn delta_resource_len(r: &ScopedResource) -> usize {
    string_len(1, &r.version) + field_len(2, any_len(r)) + string_len(3, &r.name)
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
}
