//! The synthetic media payload: who sent it, its sequence number and when, so receivers
//! measure loss, reordering and one-way latency exactly (sender and receiver share a clock:
//! they run on one machine).

/// Bytes of header at the start of every payload.
pub const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 3] = b"CNC";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publishing participant in the run.
    pub publisher: u32,
    /// 0 audio, 1 video.
    pub kind: u8,
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

/// Write a payload of `len` bytes (at least `HEADER_LEN`). Byte 0 is VP8's frame tag: bit 0
/// clear marks a keyframe, so a forwarding SFU sees keyframes where we say so.
pub fn encode(stamp: Stamp, keyframe: bool, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.push(if keyframe { 0x00 } else { 0x01 });
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&stamp.publisher.to_le_bytes());
    out.push(stamp.kind);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.extend_from_slice(&stamp.sent_ns.to_le_bytes());
    out.resize(len.max(HEADER_LEN), 0xA5);
}

/// Read the stamp back; `None` for anything that is not ours.
pub fn decode(data: &[u8]) -> Option<Stamp> {
    if data.len() < HEADER_LEN || &data[1..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
    Some(Stamp {
        publisher: u32_at(4),
        kind: data[8],
        seq: u64_at(16),
        sent_ns: u64_at(24),
    })
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Stamp {
            publisher: 7,
            kind: 1,
            seq: 123_456,
            sent_ns: 42,
        };
        let mut buf = Vec::new();
        encode(s, true, 100, &mut buf);
        assert_eq!(buf.len(), 100);
        assert_eq!(buf[0] & 1, 0);
        assert_eq!(decode(&buf), Some(s));
        encode(s, false, 10, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(buf[0] & 1, 1);
        assert_eq!(decode(&buf[..20]), None);
        assert_eq!(decode(&[0u8; 64]), None);
    }
}
