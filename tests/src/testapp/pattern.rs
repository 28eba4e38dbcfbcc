//! The byte pattern the echo client sends and checks.
//!
//! Each 8-byte word is splitmix64 of its index under a fixed seed: pseudo-random enough that
//! a reordered, duplicated or dropped chunk never matches by accident, and counter-based, so
//! any chunk at any offset can be generated or checked on its own.

/// Fixed so that every run (and every version of the app) sends the same bytes.
const SEED: u64 = 0x5745_4654_5445_5354;

fn word(index: u64) -> [u8; 8] {
    let mut z = SEED.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Fills `buf` with the pattern bytes at `offset..offset + buf.len()`.
pub fn fill(offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut done = 0;
    while done < buf.len() {
        let bytes = word(pos / 8);
        let start = (pos % 8) as usize;
        let take = (8 - start).min(buf.len() - done);
        buf[done..done + take].copy_from_slice(&bytes[start..start + take]);
        done += take;
        pos += take as u64;
    }
}

/// The offset of the first byte of `data` (found at `offset` in the stream) that differs
/// from the pattern. `scratch` is reused to avoid an allocation per chunk.
pub fn first_mismatch(offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> Option<u64> {
    scratch.resize(data.len(), 0);
    fill(offset, scratch);
    data.iter().zip(scratch.iter()).position(|(a, b)| a != b).map(|i| offset + i as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_at_any_offset_agree_with_the_whole() {
        let mut whole = vec![0u8; 1000];
        fill(0, &mut whole);
        for (start, len) in [(0, 1), (3, 17), (8, 8), (13, 500), (999, 1)] {
            let mut part = vec![0u8; len];
            fill(start as u64, &mut part);
            assert_eq!(part, whole[start..start + len]);
        }
    }

    #[test]
    fn a_changed_byte_is_found_at_its_offset() {
        let mut data = vec![0u8; 64];
        fill(100, &mut data);
        let mut scratch = Vec::new();
        assert_eq!(first_mismatch(100, &data, &mut scratch), None);
        data[37] ^= 1;
        assert_eq!(first_mismatch(100, &data, &mut scratch), Some(137));
    }
}
