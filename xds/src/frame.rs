//! gRPC message framing (a flag byte, a big-endian u32 length, the message) with buffers of
//! exactly one message's size.
//!
//! tonic reuses one growable buffer per stream for the life of the stream, so a single
//! large message (a proxy's full state out, or its `initial_resource_versions` in, tens of
//! MB on a large mesh) stays allocated per stream long after it was handled. The ADS server
//! frames its own messages with this module; each buffer is freed once its message is.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The gRPC length prefix: compressed flag and length.
pub const HEADER_SIZE: usize = 5;

/// Why a byte stream is not a sequence of gRPC messages this side accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("compressed gRPC messages are not accepted (no grpc-encoding was negotiated)")]
    Compressed,
    #[error("gRPC message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("the stream ended inside a gRPC message")]
    Truncated,
}

/// Splits a stream of byte chunks into whole messages.
#[derive(Debug)]
pub struct Deframer {
    max: usize,
    header: [u8; HEADER_SIZE],
    header_len: usize,
    /// The message being collected, sized exactly from its header.
    message: Option<BytesMut>,
}

impl Deframer {
    /// Accepts messages of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, header: [0; HEADER_SIZE], header_len: 0, message: None }
    }

    /// Feeds one chunk; appends each message it completes to `out`.
    pub fn push(&mut self, mut chunk: impl Buf, out: &mut impl Extend<Bytes>) -> Result<(), FrameError> {
        while chunk.has_remaining() {
            let Some(message) = &mut self.message else {
                let take = (HEADER_SIZE - self.header_len).min(chunk.remaining());
                chunk.copy_to_slice(&mut self.header[self.header_len..self.header_len + take]);
                self.header_len += take;
                if self.header_len == HEADER_SIZE {
                    self.header_len = 0;
                    if self.header[0] != 0 {
                        return Err(FrameError::Compressed);
                    }
                    let len =
                        u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]])
                            as usize;
                    if len > self.max {
                        return Err(FrameError::TooLarge { len, max: self.max });
                    }
                    if len == 0 {
                        out.extend([Bytes::new()]);
                    } else {
                        self.message = Some(BytesMut::with_capacity(len));
                    }
                }
                continue;
            };
            let take = (message.capacity() - message.len()).min(chunk.remaining());
            message.put((&mut chunk).take(take));
            if message.len() == message.capacity() {
                out.extend([self.message.take().expect("collecting a message").freeze()]);
            }
        }
        Ok(())
    }

    /// Checks that the stream did not end inside a message.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.message.is_some() || self.header_len > 0 { Err(FrameError::Truncated) } else { Ok(()) }
    }
}

/// One uncompressed message, framed, in a buffer of exactly its size.
pub fn encode(message: &impl prost::Message) -> Bytes {
    encode_with(message.encoded_len(), |buf| message.encode_raw(buf))
}

/// Frames a message of `len` bytes that `write` puts into the buffer.
pub fn encode_with(len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_SIZE + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("gRPC messages are smaller than 4 GiB"));
    write(&mut buf);
    debug_assert_eq!(buf.len(), HEADER_SIZE + len, "the message is as long as announced");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let a = encode_with(3, |b| b.put_slice(b"abc"));
        let empty = encode_with(0, |_| {});
        let long = encode_with(70_000, |b| b.put_bytes(7, 70_000));
        let all: Vec<u8> = [a, empty, long].concat();
        for step in [1, 2, 5, 6, 4096, all.len()] {
            let mut d = Deframer::new(1 << 20);
            let mut out = Vec::new();
            for chunk in all.chunks(step) {
                d.push(chunk, &mut out).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out.len(), 3, "step {step}");
            assert_eq!(&out[0][..], b"abc");
            assert!(out[1].is_empty());
            assert_eq!(out[2].len(), 70_000);
        }
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        let mut out = Vec::new();
        let big = encode_with(10, |b| b.put_bytes(0, 10));
        assert_eq!(Deframer::new(9).push(&big[..], &mut out), Err(FrameError::TooLarge { len: 10, max: 9 }));
        assert_eq!(Deframer::new(9).push(&[1u8, 0, 0, 0, 1, 0][..], &mut out), Err(FrameError::Compressed));
        let mut d = Deframer::new(100);
        d.push(&big[..7], &mut out).unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
