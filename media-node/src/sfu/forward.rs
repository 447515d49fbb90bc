//! Forwarding, the middle of the data path: an RTP packet out of a publisher's `Rtc` is written
//! into each connected subscriber's `Rtc` (which then encrypts and sends it, see
//! `Peer::poll_output` and `udp.rs`). Also the keyframe requests going the other way.
//!
//! str0m's RTP mode: each packet is passed through as it came — payload shared, header fields
//! copied, never depacketized into frames and packetized again per subscriber. Per subscriber
//! only a few things change, all pure and tested: the payload type is mapped to the
//! subscriber's number for the same codec ([`map_payload_type`]); audio sequence numbers are
//! rebased so that every outgoing stream starts in SRTP rollover 0 ([`rebase_seq`]); video
//! goes through the subscriber's simulcast selection and munger (`simulcast.rs`: one layer of
//! the publisher's, numbered on from what the subscriber got before, VP8 picture ids patched
//! by str0m as it serializes).
//!
//! Per packet: no allocation (the payload is shared), no lock, no message between actors.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use super::peer::{Peer, TrackOut, TrackOutState};
use super::rtc::guarded;
use super::simulcast::{
    allocate, dynacast, layers_up_to_view, Admit, LayerKey, LayerSeen, PacketIn, VideoWant, View,
    Vp8Info,
};
use super::udp::PeerKey;
use crate::metrics;

/// At most one keyframe request per publisher track per this interval, however many
/// subscribers ask: a keyframe is large and one serves everybody.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Pass one publisher's RTP packet to every other connected subscriber of the room. Returns
/// how many subscribers it was written for.
pub fn fan_out(peers: &mut [Peer], from: PeerKey, incoming: &mut Incoming) -> u64 {
    // Once per received packet, not per subscriber.
    strip_stream_identity(&mut incoming.packet.header.ext_vals);
    let mut forwarded = 0;
    // Only to connected subscribers: before DTLS, str0m would queue the packets unsent
    // (without bound if it never connects) and burst them out stale.
    for sub in peers
        .iter_mut()
        .filter(|o| o.key != from && o.connected && !o.dead)
    {
        if forward(sub, from, incoming) {
            forwarded += 1;
        }
    }
    forwarded
}

/// A publisher's packet on its way to the subscribers.
pub struct Incoming {
    pub mid: Mid,
    pub layer: LayerKey,
    pub vp8: Option<Vp8Info>,
    pub params: PayloadParams,
    pub packet: RtpPacket,
    /// str0m's parse of the VP8 descriptor, made for the first subscriber whose copy needs
    /// its picture ids rewritten (`None` inside: not VP8 enough to patch).
    pub descriptor: Option<Option<Vp8Descriptor>>,
}

/// Pass one publisher's RTP packet to a subscriber's matching outgoing track. True if it was
/// written for sending.
fn forward(sub: &mut Peer, from: PeerKey, incoming: &mut Incoming) -> bool {
    let (mid_in, params, pkt) = (incoming.mid, incoming.params, &incoming.packet);
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
    let (seq, timestamp, patch) = match track.kind {
        MediaKind::Audio => match rebase_seq(&mut track.seq_base, *pkt.seq_no) {
            Some(seq) => (seq, pkt.header.timestamp, None),
            None => return false,
        },
        MediaKind::Video => match number_video(track, incoming) {
            Some(numbered) => numbered,
            None => return false,
        },
    };
    let pkt = &incoming.packet;
    let mut write = RtpWrite::new(pt, seq, timestamp, pkt.timestamp, pkt.payload.clone())
        .marker(pkt.header.marker)
        // Media extensions (audio level, orientation...) pass through; str0m rewrites the
        // per-hop ones (abs-send-time, transport-cc) as it sends; mid and rid were stripped.
        .ext_vals(pkt.header.ext_vals.clone())
        .nackable(track.kind == MediaKind::Video);
    if let Some(patch) = patch {
        write = write.vp8_patch(patch);
    }
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

/// A video packet's place in the subscriber's stream, if the subscriber gets its layer:
/// sequence number, timestamp, and the VP8 descriptor patch once a layer change moved the
/// picture ids.
fn number_video(
    track: &mut TrackOut,
    incoming: &mut Incoming,
) -> Option<(SeqNo, u32, Option<Vp8Patch>)> {
    let keyframe_start = incoming.vp8.is_some_and(|v| v.keyframe_start);
    let p = PacketIn {
        seq: *incoming.packet.seq_no,
        timestamp: incoming.packet.header.timestamp,
        arrival: incoming.packet.timestamp,
        vp8: incoming.vp8.as_ref(),
    };
    match track.selection.admit(&incoming.layer, keyframe_start) {
        Admit::Drop => return None,
        Admit::Switch => {
            track.munger.switch(&p);
            metrics::LAYER_SWITCHES.inc();
        }
        Admit::Forward => {}
    }
    let munged = track.munger.munge(&p)?;
    let patch = match munged.vp8 {
        None => None,
        Some(rewrite) => {
            let payload = &incoming.packet.payload;
            let descriptor = incoming
                .descriptor
                .get_or_insert_with(|| Vp8Descriptor::parse(payload).ok());
            let mut builder = (*descriptor)?.patch();
            if let Some(id) = rewrite.picture_id {
                builder = builder.picture_id(id);
            }
            if let Some(idx) = rewrite.tl0_pic_idx {
                builder = builder.tl0_pic_idx(idx);
            }
            if let Some(idx) = rewrite.key_idx {
                builder = builder.key_idx(idx);
            }
            // Our own parse agreed on the fields, so this holds; if not, the packet is not
            // sent rather than sent with picture ids the decoder would trip on.
            Some(builder.build().ok()?)
        }
    };
    Some((SeqNo::from(munged.seq), munged.timestamp, patch))
}

/// Every subscriber's video: the layer it should get now, and a keyframe asked of the
/// publisher for each layer a subscriber waits for. Run a few times a second and when views
/// change.
///
/// A video may get at most the layer its view asks for (`choose_layer`); with a bandwidth
/// estimate for the subscriber (`--bwe`), the allocator spends it across the subscriber's
/// videos (audio first, the dominant speaker's video first, then the bigger tiles): a step
/// down is taken at once, a step up only once the estimate allowed it for `STEP_UP_AFTER`.
/// The estimator is told to probe up to what the views ask for, or it would never find the
/// room to climb back.
///
/// Then dynacast: a simulcast layer no subscriber takes is paused at its publisher after
/// `PAUSE_UNWANTED_AFTER`, and resumed once one wants it. Returns the publishers' tracks whose
/// layers to send changed (the room tells each publisher).
pub fn review_layers(
    peers: &mut [Peer],
    dominant: Option<PeerKey>,
    now: Instant,
) -> Vec<(PeerKey, Mid)> {
    for publisher in peers.iter_mut() {
        for track in publisher.tracks_in.iter_mut() {
            for layer in track.layers.iter_mut() {
                layer.measure(now);
            }
        }
    }
    let mut wanted: Vec<(PeerKey, Mid, LayerKey)> = Vec::new();
    for i in 0..peers.len() {
        let (before, rest) = peers.split_at_mut(i);
        let Some((sub, after)) = rest.split_first_mut() else {
            break;
        };
        let publishers = || before.iter().chain(after.iter());
        let mut videos: Vec<(usize, VideoWant)> = Vec::new();
        let mut audio_tracks = 0u64;
        for (n, t) in sub.tracks_out.iter().enumerate() {
            if !matches!(t.state, TrackOutState::Open(_)) {
                continue;
            }
            if t.kind == MediaKind::Audio {
                audio_tracks += 1;
                continue;
            }
            let Some(track) = publishers()
                .find(|p| p.key == t.source_peer)
                .and_then(|p| p.tracks_in.iter().find(|x| x.mid == t.source_mid))
            else {
                continue;
            };
            let layers = layers_up_to_view(&track.layers, t.view, now);
            let area = match t.view {
                View::Fit { width, height } => u64::from(width) * u64::from(height),
                View::Hidden => 0,
            };
            let speaking = Some(t.source_peer) == dominant;
            let priority = area + if speaking { 1 << 40 } else { 0 };
            videos.push((n, VideoWant { layers, priority }));
        }
        let allocation = match sub.estimate {
            Some(estimate) => {
                let budget = estimate.saturating_sub(audio_tracks * AUDIO_BPS);
                let wants: Vec<VideoWant> = videos.iter().map(|(_, w)| w.clone()).collect();
                allocate(budget, &wants)
            }
            None => videos
                .iter()
                .map(|(_, w)| w.layers.last().map(|l| l.0))
                .collect(),
        };
        for ((n, want), layer) in videos.iter().zip(allocation) {
            let t = &mut sub.tracks_out[*n];
            t.selection.target = step(t, want, layer, now);
            if let Some(layer) = t.selection.awaiting_keyframe() {
                wanted.push((t.source_peer, t.source_mid, *layer));
            }
        }
        if sub.estimate.is_some() {
            // Probe up to what the views ask for (and what audio needs).
            let desired: u64 = audio_tracks * AUDIO_BPS
                + videos
                    .iter()
                    .filter_map(|(_, w)| w.layers.last().map(|l| l.1))
                    .sum::<u64>();
            sub.want_bitrate(desired);
        }
    }
    let changed = dynacast_all(peers, now);
    for (publisher, mid, layer) in wanted {
        request_keyframe(peers, publisher, mid, layer, KeyframeRequestKind::Pli, now);
    }
    changed
}

/// Dynacast over the room: for each published simulcast track, the layers its subscribers
/// take (or are switching to) keep coming; the others pause. The tracks whose set changed.
fn dynacast_all(peers: &mut [Peer], now: Instant) -> Vec<(PeerKey, Mid)> {
    let mut taken: Vec<(PeerKey, Mid, LayerKey)> = Vec::new();
    for sub in peers.iter() {
        for t in sub.tracks_out.iter().filter(|t| t.kind == MediaKind::Video) {
            for layer in [t.selection.target, t.selection.forwarding]
                .into_iter()
                .flatten()
            {
                taken.push((t.source_peer, t.source_mid, layer));
            }
        }
    }
    let mut changed = Vec::new();
    for publisher in peers.iter_mut() {
        for track in publisher
            .tracks_in
            .iter_mut()
            .filter(|t| t.layers.len() > 1)
        {
            let wanted: Vec<LayerKey> = taken
                .iter()
                .filter(|(p, m, _)| *p == publisher.key && *m == track.mid)
                .map(|(_, _, l)| *l)
                .collect();
            if dynacast(&mut track.layers, &wanted, now) {
                changed.push((publisher.key, track.mid));
            }
        }
    }
    changed
}

/// What a subscriber's audio track costs, for the allocator (Opus in a browser: 32-40 kbit/s
/// with headers; less while silent with DTX).
const AUDIO_BPS: u64 = 50_000;
/// A step up to a bigger layer is taken only after the allocation allowed it this long (a
/// step down at once): a bandwidth estimate climbs in bursts, and a layer switch costs a
/// keyframe.
const STEP_UP_AFTER: Duration = Duration::from_secs(3);

/// The layer a video gets now, given the allocation: down (or hidden) at once, up only after
/// `STEP_UP_AFTER` of the allocation asking for it.
fn step(
    t: &mut TrackOut,
    want: &VideoWant,
    allocated: Option<LayerKey>,
    now: Instant,
) -> Option<LayerKey> {
    let rank = |layer: &Option<LayerKey>| {
        layer
            .as_ref()
            .and_then(|l| want.layers.iter().position(|(k, _)| k == l))
    };
    let (current, next) = (rank(&t.selection.target), rank(&allocated));
    match (current, next) {
        (Some(c), Some(n)) if n > c => {
            let since = *t.step_up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= STEP_UP_AFTER {
                t.step_up_since = None;
                allocated
            } else {
                t.selection.target
            }
        }
        _ => {
            t.step_up_since = None;
            allocated
        }
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

/// Ask a publisher for a keyframe of one layer of a track (a subscriber asked, or waits for
/// it to change layer), unless someone did less than `KEYFRAME_REQUEST_INTERVAL` ago.
pub fn request_keyframe(
    peers: &mut [Peer],
    source_peer: PeerKey,
    source_mid: Mid,
    layer: LayerKey,
    kind: KeyframeRequestKind,
    now: Instant,
) {
    let Some(publisher) = peers.iter_mut().find(|p| p.key == source_peer) else {
        return;
    };
    let Some(track) = publisher.tracks_in.iter_mut().find(|t| t.mid == source_mid) else {
        return;
    };
    let Some(seen) = track
        .layers
        .iter_mut()
        .find(|l: &&mut LayerSeen| l.key == layer)
    else {
        return;
    };
    if !keyframe_request_due(&mut seen.last_keyframe_request, now) {
        return;
    }
    let rtc = &mut publisher.rtc;
    let requested = guarded(|| {
        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(source_mid, layer) {
            rx.request_keyframe(kind);
            metrics::KEYFRAME_REQUESTS_SENT.inc();
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
