//! Forwarding, the middle of the data path: an RTP packet out of a publisher's `Rtc` is written
//! into each connected subscriber's `Rtc` (which then encrypts and sends it, see
//! `Peer::poll_output` and `udp.rs`). Also the keyframe requests going the other way.
//!
//! str0m's RTP mode: each packet is passed through as it came — payload shared, header fields
//! copied, never depacketized into frames and packetized again per subscriber. Per subscriber
//! only two things change, both pure and tested below: the payload type is mapped to the
//! subscriber's number for the same codec ([`map_payload_type`]), and the sequence numbers are
//! rebased so that every outgoing stream starts in SRTP rollover 0 ([`rebase_seq`]).
//!
//! Per packet: no allocation (the payload is shared), no lock, no message between actors.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequest, MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};

use super::peer::{Peer, TrackOutState};
use super::rtc::guarded;
use super::udp::PeerKey;
use crate::metrics;

/// At most one keyframe request per publisher track per this interval, however many
/// subscribers ask: a keyframe is large and one serves everybody.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Pass one publisher's RTP packet to every other connected subscriber of the room. Returns
/// how many subscribers it was written for.
pub fn fan_out(
    peers: &mut [Peer],
    from: PeerKey,
    mid: Mid,
    params: PayloadParams,
    packet: &mut RtpPacket,
) -> u64 {
    // Once per received packet, not per subscriber.
    strip_stream_identity(&mut packet.header.ext_vals);
    let mut forwarded = 0;
    // Only to connected subscribers: before DTLS, str0m would queue the packets unsent
    // (without bound if it never connects) and burst them out stale.
    for sub in peers
        .iter_mut()
        .filter(|o| o.key != from && o.connected && !o.dead)
    {
        if forward(sub, from, mid, params, packet) {
            forwarded += 1;
        }
    }
    forwarded
}

/// Pass one publisher's RTP packet to a subscriber's matching outgoing track. True if it was
/// written for sending.
fn forward(
    sub: &mut Peer,
    from: PeerKey,
    mid_in: Mid,
    params: PayloadParams,
    pkt: &RtpPacket,
) -> bool {
    let Some(track) = sub.tracks_out.iter_mut().find(|t| {
        t.source_peer == from && t.source_mid == mid_in && matches!(t.state, TrackOutState::Open(_))
    }) else {
        return false;
    };
    let TrackOutState::Open(mid) = track.state else {
        return false;
    };
    let codecs = &sub.rtc;
    let Some(pt) = map_payload_type(&mut track.pt_map, params.pt(), || {
        codecs.codec_config().match_params(params).map(|p| p.pt())
    }) else {
        return false;
    };
    let Some(seq) = rebase_seq(&mut track.seq_base, *pkt.seq_no) else {
        return false;
    };
    let write = RtpWrite::new(
        pt,
        seq,
        pkt.header.timestamp,
        pkt.timestamp,
        pkt.payload.clone(),
    )
    .marker(pkt.header.marker)
    // Media extensions (audio level, orientation...) pass through; str0m rewrites the
    // per-hop ones (abs-send-time, transport-cc) as it sends; mid and rid were stripped.
    .ext_vals(pkt.header.ext_vals.clone())
    .nackable(track.kind == MediaKind::Video);
    let rtc = &mut sub.rtc;
    let written = guarded(|| match rtc.direct_api().stream_tx_by_mid(mid, None) {
        Some(tx) => {
            tx.write_rtp(write);
            true
        }
        None => false,
    });
    sub.dirty = true;
    match written {
        None => {
            sub.dead = true;
            false
        }
        Some(false) => {
            tracing::debug!(peer = sub.key, %mid, "no send stream for track");
            metrics::DROPPED.with_label_values(&["no_route"]).inc();
            false
        }
        // Counted by the room, once per message (`RoomSfu::drive`).
        Some(true) => true,
    }
}

/// The subscriber's payload type for a publisher's `pt_in`: the subscriber negotiated its own
/// numbers for the same codec. `cache` holds the last mapping, so `lookup` (a search of the
/// subscriber's codecs) runs only when the publisher's payload type changes. `None` if the
/// subscriber has no matching codec (the cache is then left as it was).
pub fn map_payload_type(
    cache: &mut Option<(Pt, Pt)>,
    pt_in: Pt,
    lookup: impl FnOnce() -> Option<Pt>,
) -> Option<Pt> {
    match *cache {
        Some((from, to)) if from == pt_in => Some(to),
        _ => {
            let to = lookup()?;
            *cache = Some((pt_in, to));
            Some(to)
        }
    }
}

/// The subscriber's sequence number for a publisher's extended one (`seq_in`, 16-bit sequence
/// plus rollover count). Keeps the low 16 bits (what the browser sees) and starts in rollover 0,
/// whatever the publisher's rollover count is by now: `base` is set by the first packet to its
/// rollover, and subtracted from every packet after. `None` for a packet from before the first
/// one forwarded that is reordered across a 16-bit wrap: it cannot be numbered in this stream.
pub fn rebase_seq(base: &mut Option<u64>, seq_in: u64) -> Option<SeqNo> {
    let base = *base.get_or_insert(seq_in & !0xFFFF);
    seq_in.checked_sub(base).map(SeqNo::from)
}

/// A subscriber asked for a keyframe of a track: ask its publisher, unless someone did less than
/// `KEYFRAME_REQUEST_INTERVAL` ago.
pub fn relay_keyframe_request(
    peers: &mut [Peer],
    source_peer: PeerKey,
    source_mid: Mid,
    req: KeyframeRequest,
) {
    let Some(publisher) = peers.iter_mut().find(|p| p.key == source_peer) else {
        return;
    };
    let Some(track) = publisher.tracks_in.iter_mut().find(|t| t.mid == source_mid) else {
        return;
    };
    if !keyframe_request_due(&mut track.last_keyframe_request, Instant::now()) {
        return;
    }
    let rtc = &mut publisher.rtc;
    let requested = guarded(|| {
        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(source_mid, req.rid) {
            rx.request_keyframe(req.kind);
        }
    });
    if requested.is_none() {
        publisher.dead = true;
    }
    publisher.dirty = true;
}

/// Whether a keyframe request may go to the publisher `now` (and if so, remember it).
pub fn keyframe_request_due(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

/// A publisher's stream identity (mid, rid) must not go to subscribers with its media:
/// str0m writes the subscriber's own mid only until the subscriber acknowledges the SSRC,
/// and a browser that then saw the publisher's mid would route the packets to whatever
/// m-line has that mid on its side. Other extensions (audio level...) pass through.
pub fn strip_stream_identity(ext: &mut ExtensionValues) {
    ext.mid = None;
    ext.rid = None;
    ext.rid_repair = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLOVER: u64 = 1 << 16;

    /// Rebase a publisher's stream of extended sequence numbers as one subscriber would.
    fn rebased(seqs: &[u64]) -> Vec<Option<u64>> {
        let mut base = None;
        seqs.iter()
            .map(|s| rebase_seq(&mut base, *s).map(|s| *s))
            .collect()
    }

    #[test]
    fn the_first_packet_sets_the_rollover_to_zero_and_keeps_the_16_bit_sequence() {
        // A publisher already 3 rollovers in when the subscriber joins.
        let first = 3 * ROLLOVER + 1234;
        assert_eq!(
            rebased(&[first, first + 1, first + 2]),
            [Some(1234), Some(1235), Some(1236)]
        );
        // A publisher in rollover 0 is passed through as it is.
        assert_eq!(rebased(&[7, 8]), [Some(7), Some(8)]);
    }

    #[test]
    fn the_rebased_stream_wraps_where_the_publishers_does_and_its_rollover_counts_from_zero() {
        let start = 5 * ROLLOVER + 65_533;
        let seqs: Vec<u64> = (start..start + 6).collect();
        let out: Vec<u64> = rebased(&seqs).into_iter().map(Option::unwrap).collect();
        assert_eq!(out, [65_533, 65_534, 65_535, 65_536, 65_537, 65_538]);
        // What the browser sees on the wire is exactly the publisher's 16-bit sequence...
        for (i, o) in seqs.iter().zip(&out) {
            assert_eq!(*i as u16, SeqNo::from(*o).as_u16());
        }
        // ...and the outgoing rollover counter went 0 -> 1 at the wrap (SRTP's ROC).
        assert_eq!(
            out.iter().map(|o| o >> 16).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1]
        );
    }

    #[test]
    fn many_wraps_keep_counting_from_the_first_packets_rollover() {
        let mut base = None;
        let first = 9 * ROLLOVER + 40_000;
        for seq in (first..first + 4 * ROLLOVER).step_by(997) {
            let out = *rebase_seq(&mut base, seq).unwrap();
            assert_eq!(out, seq - 9 * ROLLOVER);
            assert_eq!(out as u16, seq as u16);
        }
    }

    #[test]
    fn a_late_packet_is_forwarded_unless_it_is_from_before_the_first_ones_rollover() {
        let mut base = None;
        let first = 4 * ROLLOVER + 2;
        assert_eq!(rebase_seq(&mut base, first).map(|s| *s), Some(2));
        // Reordered, same rollover: still numbered (the browser's jitter buffer reorders it).
        assert_eq!(rebase_seq(&mut base, 4 * ROLLOVER).map(|s| *s), Some(0));
        // Reordered across the wrap before the first packet: no number in this stream.
        assert_eq!(rebase_seq(&mut base, 4 * ROLLOVER - 1), None);
        // The base did not move.
        assert_eq!(base, Some(4 * ROLLOVER));
        assert_eq!(rebase_seq(&mut base, first + 1).map(|s| *s), Some(3));
    }

    #[test]
    fn the_payload_type_is_looked_up_once_per_publisher_payload_type() {
        let (vp8_in, vp8_out) = (Pt::from(96), Pt::from(120));
        let mut cache = None;
        let mut lookups = 0;
        let mut map = |cache: &mut Option<(Pt, Pt)>, pt_in: Pt, found: Option<Pt>| {
            map_payload_type(cache, pt_in, || {
                lookups += 1;
                found
            })
        };
        assert_eq!(map(&mut cache, vp8_in, Some(vp8_out)), Some(vp8_out));
        // Cached: the lookup's answer no longer matters.
        assert_eq!(map(&mut cache, vp8_in, None), Some(vp8_out));
        assert_eq!(map(&mut cache, vp8_in, None), Some(vp8_out));
        assert_eq!(lookups, 1);
        assert_eq!(cache, Some((vp8_in, vp8_out)));
    }

    #[test]
    fn a_new_publisher_payload_type_is_mapped_anew_and_an_unknown_one_is_dropped() {
        let mut cache = Some((Pt::from(96), Pt::from(120)));
        // The publisher switched codec (another payload type): looked up and cached.
        assert_eq!(
            map_payload_type(&mut cache, Pt::from(98), || Some(Pt::from(100))),
            Some(Pt::from(100))
        );
        assert_eq!(cache, Some((Pt::from(98), Pt::from(100))));
        // A codec the subscriber did not negotiate: not forwarded, cache kept.
        assert_eq!(map_payload_type(&mut cache, Pt::from(111), || None), None);
        assert_eq!(cache, Some((Pt::from(98), Pt::from(100))));
        // Same number on both sides is still a mapping like any other.
        let mut fresh = None;
        assert_eq!(
            map_payload_type(&mut fresh, Pt::from(111), || Some(Pt::from(111))),
            Some(Pt::from(111))
        );
    }

    #[test]
    fn keyframe_requests_reach_the_publisher_at_most_every_interval() {
        let t0 = Instant::now();
        let mut last = None;
        assert!(keyframe_request_due(&mut last, t0));
        assert!(!keyframe_request_due(
            &mut last,
            t0 + Duration::from_millis(100)
        ));
        assert!(!keyframe_request_due(
            &mut last,
            t0 + KEYFRAME_REQUEST_INTERVAL - Duration::from_millis(1)
        ));
        // A refused request does not restart the interval.
        assert!(keyframe_request_due(
            &mut last,
            t0 + KEYFRAME_REQUEST_INTERVAL
        ));
        assert_eq!(last, Some(t0 + KEYFRAME_REQUEST_INTERVAL));
    }

    #[test]
    fn a_publishers_stream_identity_does_not_reach_subscribers_but_media_extensions_do() {
        let mut ext = ExtensionValues {
            mid: Some("0".into()),
            rid: Some("h".into()),
            rid_repair: Some("h".into()),
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        strip_stream_identity(&mut ext);
        assert_eq!((ext.mid, ext.rid, ext.rid_repair), (None, None, None));
        assert_eq!(ext.audio_level, Some(-30));
        assert_eq!(ext.voice_activity, Some(true));
    }
}
