use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::{ExtensionMap, MediaTime, RtpHeader, SeqNo};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

/// What a resend needs of a sent packet. The header is kept in its serialized
/// form (as sent) instead of a parsed [`RtpHeader`] (~350 bytes, mostly extension values).
#[derive(Debug)]
pub(crate) struct CachedPacket {
    seq_no: SeqNo,
    time: MediaTime,
    header: Box<[u8]>,
    payload: Arc<[u8]>,
    vp8_patch: Option<Vp8Patch>,
    timestamp: Instant,
}

impl CachedPacket {
    pub fn seq_no(&self) -> SeqNo {
        self.seq_no
    }

    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// Rebuild the sent packet into `out`. `None` if the header no longer parses.
    pub fn materialize(&self, exts: &ExtensionMap, out: &mut RtpPacket) -> Option<()> {
        out.header = RtpHeader::parse(&self.header, exts)?;
        // Media packets are sent unpadded; never let a padding bit cut the resent payload.
        out.header.has_padding = false;
        out.seq_no = self.seq_no;
        out.time = self.time;
        out.payload = self.payload.clone();
        out.vp8_patch = self.vp8_patch;
        out.timestamp = self.timestamp;
        out.last_sender_info = None;
        out.nackable = true;
        Some(())
    }
}

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<CachedPacket>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    seq_no_by_quantized_size: [SeqNo; RTX_CACHE_QUANTIZE_SLOTS],
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS],
        }
    }

    /// Cache a sent packet. `header` is the RTP header exactly as written on the wire.
    pub fn cache_sent_packet(&mut self, packet: RtpPacket, header: &[u8], now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        let cached = CachedPacket {
            seq_no,
            time: packet.time,
            header: header.into(),
            payload: packet.payload,
            vp8_patch: packet.vp8_patch,
            timestamp: packet.timestamp,
        };
        self.packet_by_seq_no.push(*seq_no, now, cached);
        self.seq_no_by_quantized_size[quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    pub fn get_cached_packet_by_seq_no(&self, seq_no: SeqNo) -> Option<&CachedPacket> {
        self.packet_by_seq_no.get(*seq_no)
    }

    pub fn get_cached_packet_smaller_than(&self, max_size: usize) -> Option<&CachedPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = self.seq_no_by_quantized_size[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(*seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS];
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    const HDR: [u8; 12] = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn key(p: Option<&CachedPacket>) -> Option<(u64, u64)> {
        p.map(|p| {
            (
                *p.seq_no,
                u64::from_be_bytes(p.payload[..8].try_into().unwrap()),
            )
        })
    }

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), &HDR, after(now, 10));
        assert_eq!(
            Some((1, 10)),
            key(rtx_cache.get_cached_packet_by_seq_no(1.into()))
        );
        assert_eq!(
            Some((1, 10)),
            key(rtx_cache.get_cached_packet_smaller_than(1000))
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), &HDR, after(now, 10));
        assert_eq!(None, key(rtx_cache.get_cached_packet_by_seq_no(1.into())));
        assert_eq!(None, key(rtx_cache.get_cached_packet_smaller_than(1000)));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), &HDR, after(now, 10));
        assert_eq!(
            Some((1, 10)),
            key(rtx_cache.get_cached_packet_by_seq_no(1.into()))
        );
        assert_eq!(
            Some((1, 10)),
            key(rtx_cache.get_cached_packet_smaller_than(1000))
        );
        assert_eq!(
            Some((1, 10)),
            key(rtx_cache.get_cached_packet_smaller_than(25))
        );
        assert_eq!(None, key(rtx_cache.get_cached_packet_smaller_than(24)));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), &HDR, after(now, 20));
        assert_eq!(
            Some((2, 20)),
            key(rtx_cache.get_cached_packet_by_seq_no(2.into()))
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, &HDR, now);
        }

        assert_eq!(
            Some((200, 2000)),
            key(rtx_cache.get_cached_packet_by_seq_no(200.into()))
        );
        assert_eq!(None, key(rtx_cache.get_cached_packet_by_seq_no(100.into())));
        assert_eq!(None, key(rtx_cache.get_cached_packet_by_seq_no(101.into())));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, &HDR, now);
        }

        assert_eq!(None, key(rtx_cache.get_cached_packet_by_seq_no(99.into())));

        assert_eq!(
            Some((100, 1000)),
            key(rtx_cache.get_cached_packet_by_seq_no(100.into()))
        );
        assert_eq!(
            Some((200, 2000)),
            key(rtx_cache.get_cached_packet_by_seq_no(200.into()))
        );
    }

    #[test]
    fn rtx_cache_materialize_round_trip() {
        let exts = ExtensionMap::standard();
        let now = Instant::now();
        let mut pkt = packet(now, 7, 10);
        pkt.header.payload_type = 96.into();
        pkt.header.marker = true;
        pkt.header.sequence_number = 7;
        pkt.header.timestamp = 1234;
        pkt.header.ssrc = 42.into();
        pkt.header.has_extension = true;
        pkt.header.ext_vals.audio_level = Some(-30);
        pkt.header.ext_vals.voice_activity = Some(true);
        pkt.header.ext_vals.mid = Some("m1".into());
        let mut buf = vec![0; 1500];
        let len = pkt.header.write_to(&mut buf, &exts);
        let sent = pkt.header.clone();

        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(pkt, &buf[..len], now);

        let mut out = RtpPacket::blank();
        let cached = rtx_cache.get_cached_packet_by_seq_no(7.into()).unwrap();
        cached.materialize(&exts, &mut out).unwrap();
        assert_eq!(*out.seq_no, 7);
        assert!(out.nackable);
        assert_eq!(out.payload.as_ref(), &10_u64.to_be_bytes());
        assert_eq!(out.header.payload_type, sent.payload_type);
        assert_eq!(out.header.marker, sent.marker);
        assert_eq!(out.header.sequence_number, 7);
        assert_eq!(out.header.timestamp, 1234);
        assert_eq!(out.header.ssrc, sent.ssrc);
        assert_eq!(out.header.header_len, len);
        assert_eq!(out.header.ext_vals.audio_level, Some(-30));
        assert_eq!(out.header.ext_vals.voice_activity, Some(true));
        assert_eq!(out.header.ext_vals.mid, sent.ext_vals.mid);
    }
}
