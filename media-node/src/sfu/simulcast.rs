//! Simulcast: a publisher sends its camera as up to three layers (RTP stream ids, "rids", each
//! its own SSRC, each a smaller copy of the picture), and each subscriber gets one of them in
//! its one outgoing stream for that track. Which one follows what the subscriber shows
//! (`View`, from the client's `setTrackViews`).
//!
//! The pure parts live here, tested below:
//! - [`Vp8Info`]: what the node needs to know of a VP8 packet (keyframe start, frame size,
//!   picture id and friends), read once per packet received;
//! - [`choose_layer`]: the layer a subscriber should get;
//! - [`Selection`]: when the layer it gets may change (only at a keyframe of the new one, so
//!   its decoder never sees a frame that refers to a picture it does not have);
//! - [`Munger`]: keeping the stream continuous across a change (sequence numbers without a
//!   gap or a jump back, timestamps moving on by the time that passed, VP8 picture id,
//!   TL0PICIDX and KEYIDX going on from the last ones sent), as LiveKit's VP8 munger does.
//!
//! A track sent without simulcast is one layer (key `None`) and goes through the same path.

use std::time::{Duration, Instant};

use conclave_common::protocol::TrackView;
use str0m::media::Rid;

/// A layer of a published track: its rid, or `None` for a track sent without simulcast.
pub type LayerKey = Option<Rid>;

/// At most this many layers per published track (browsers send three); more rids in an
/// offer are not forwarded.
pub const MAX_LAYERS: usize = 3;

/// A layer no packet came on for this long is not chosen (the publisher paused it: its
/// encoder dropped it for CPU or bandwidth, or the camera is off).
pub const LAYER_STALE_AFTER: Duration = Duration::from_millis(1_000);

/// The RTP clock of video, per millisecond.
const VIDEO_TICKS_PER_MS: u128 = 90;

/// A VP8 picture id: 7 or 15 bits on the wire (browsers use 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    pub bits: u8,
}

impl PictureId {
    fn modulus(self) -> u32 {
        1 << self.bits
    }
}

/// What the node reads of a VP8 packet (RFC 7741 payload descriptor, RFC 6386 frame header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Info {
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    pub temporal_id: Option<u8>,
    pub key_idx: Option<u8>,
    /// The first packet of a keyframe: a subscriber may start or change layer here.
    pub keyframe_start: bool,
    /// A keyframe's picture size (width, height), read from its first packet.
    pub size: Option<(u16, u16)>,
}

impl Vp8Info {
    /// `None` if the payload is too short for its own descriptor.
    pub fn parse(payload: &[u8]) -> Option<Vp8Info> {
        let first = *payload.first()?;
        let mut at = 1;
        let mut next = || {
            let byte = payload.get(at).copied();
            at += 1;
            byte
        };
        let mut info = Vp8Info::default();
        if first & 0x80 != 0 {
            let x = next()?;
            if x & 0x80 != 0 {
                let high = next()?;
                info.picture_id = Some(if high & 0x80 != 0 {
                    let low = next()?;
                    PictureId {
                        value: (u16::from(high & 0x7f) << 8) | u16::from(low),
                        bits: 15,
                    }
                } else {
                    PictureId {
                        value: u16::from(high),
                        bits: 7,
                    }
                });
            }
            if x & 0x40 != 0 {
                info.tl0_pic_idx = Some(next()?);
            }
            if x & 0x30 != 0 {
                let tk = next()?;
                info.temporal_id = (x & 0x20 != 0).then_some(tk >> 6);
                info.key_idx = (x & 0x10 != 0).then_some(tk & 0x1f);
            }
        }
        let header = payload.get(at..)?;
        // S set and partition index 0: the start of a frame; P clear in its frame tag: key.
        let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
        if starts_frame && header.first().is_some_and(|tag| tag & 0x01 == 0) {
            info.keyframe_start = true;
            // Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
            if header.len() >= 10 && header[3..6] == [0x9d, 0x01, 0x2a] {
                let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
                let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
                info.size = Some((width, height));
            }
        }
        Some(info)
    }
}

/// One layer of a published track as the node has seen it.
#[derive(Debug, Clone)]
pub struct LayerSeen {
    pub key: LayerKey,
    /// Its picture size, from its last keyframe (unknown until one came).
    pub size: Option<(u16, u16)>,
    pub last_packet: Instant,
    /// When the node last asked the publisher for a keyframe of this layer.
    pub last_keyframe_request: Option<Instant>,
    /// Payload bytes since `bytes_since`, and the bitrate they make (bits per second,
    /// averaged over the last seconds; see [`LayerSeen::measure`]).
    pub bytes: u64,
    pub bytes_since: Instant,
    pub bitrate: u64,
    /// Dynacast: the node told the publisher to stop sending it (nobody takes it); it still
    /// counts as available, and is asked for again when a subscriber wants it.
    pub paused: bool,
    /// Since when no subscriber has taken it (see [`dynacast`]).
    pub unwanted_since: Option<Instant>,
}

impl LayerSeen {
    pub fn new(key: LayerKey, now: Instant) -> LayerSeen {
        LayerSeen {
            key,
            size: None,
            last_packet: now,
            last_keyframe_request: None,
            bytes: 0,
            bytes_since: now,
            bitrate: 0,
            paused: false,
            unwanted_since: None,
        }
    }

    /// What forwarding it costs, bits per second: its measured bitrate, or until that is
    /// known, a guess from its size (about what browsers send: 1.2 Mbit/s at 960x540).
    /// Whether it can be sent to a subscriber: packets came lately, or the node paused it
    /// (and will ask for it again).
    pub fn available(&self, now: Instant) -> bool {
        self.paused || now.saturating_duration_since(self.last_packet) < LAYER_STALE_AFTER
    }

    pub fn cost(&self) -> u64 {
        if self.bitrate > 0 {
            return self.bitrate;
        }
        let (w, h) = self.size.unwrap_or((320, 180));
        (u64::from(w) * u64::from(h)).max(1) * 5 / 2
    }

    /// Fold the bytes counted since the last call into `bitrate` (called a few times a
    /// second).
    pub fn measure(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.bytes_since)
            .as_secs_f64();
        if elapsed < 0.1 {
            return;
        }
        let rate = (self.bytes * 8) as f64 / elapsed;
        // About two seconds of memory at four calls a second: a keyframe is a burst.
        self.bitrate = if self.bitrate == 0 {
            rate as u64
        } else {
            (self.bitrate as f64 * 0.875 + rate * 0.125) as u64
        };
        self.bytes = 0;
        self.bytes_since = now;
    }
}

/// Note a packet of layer `key` with `bytes` of payload (at most [`MAX_LAYERS`] are kept;
/// `false` for one over).
pub fn saw_layer(
    layers: &mut Vec<LayerSeen>,
    key: &LayerKey,
    vp8: Option<&Vp8Info>,
    bytes: usize,
    now: Instant,
) -> bool {
    let i = match layers.iter().position(|l| &l.key == key) {
        Some(i) => i,
        None if layers.len() < MAX_LAYERS => {
            layers.push(LayerSeen::new(*key, now));
            layers.len() - 1
        }
        None => return false,
    };
    let layer = &mut layers[i];
    layer.last_packet = now;
    layer.bytes += bytes as u64;
    if let Some(size) = vp8.and_then(|v| v.size) {
        layer.size = Some(size);
    }
    true
}

/// How a subscriber shows a remote video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Not on screen: send nothing.
    Hidden,
    /// Shown at most this big (device pixels).
    Fit { width: u16, height: u16 },
}

impl From<TrackView> for View {
    fn from(view: TrackView) -> View {
        if view.hidden {
            return View::Hidden;
        }
        View::Fit {
            width: view.width.unwrap_or(u16::MAX),
            height: view.height.unwrap_or(u16::MAX),
        }
    }
}

impl Default for View {
    /// Until the client says otherwise: the best there is.
    fn default() -> View {
        View::Fit {
            width: u16::MAX,
            height: u16::MAX,
        }
    }
}

/// The layer a subscriber showing the track as `view` should get: the smallest one that
/// covers the view, else the biggest; only layers heard from lately. `None`: send nothing
/// (hidden, or no layer is live).
pub fn choose_layer(layers: &[LayerSeen], view: View, now: Instant) -> Option<LayerKey> {
    let View::Fit { width, height } = view else {
        return None;
    };
    let live = || layers.iter().filter(move |l| l.available(now));
    let mut sized: Vec<(u16, u16, &LayerKey)> = live()
        .filter_map(|l| l.size.map(|(w, h)| (w, h, &l.key)))
        .collect();
    if sized.is_empty() {
        // No keyframe seen yet: any live layer will show its size at its first keyframe.
        return live().next().map(|l| l.key);
    }
    sized.sort_by_key(|(w, h, _)| u32::from(*w) * u32::from(*h));
    let covers = sized.iter().find(|(w, h, _)| *w >= width && *h >= height);
    let (_, _, key) = covers.or(sized.last())?;
    Some(**key)
}

/// The live layers of a track that fit a view, smallest first, each with its bitrate: those
/// no bigger than [`choose_layer`]'s choice, which is the last. Empty: nothing to send
/// (hidden, or no live layer).
pub fn layers_up_to_view(layers: &[LayerSeen], view: View, now: Instant) -> Vec<(LayerKey, u64)> {
    let Some(best) = choose_layer(layers, view, now) else {
        return Vec::new();
    };
    let area = |l: &LayerSeen| l.size.map_or(0, |(w, h)| u32::from(w) * u32::from(h));
    let Some(cap) = layers.iter().find(|l| l.key == best).map(area) else {
        return Vec::new();
    };
    let mut fit: Vec<&LayerSeen> = layers
        .iter()
        .filter(|l| l.available(now))
        .filter(|l| l.key == best || (l.size.is_some() && area(l) <= cap))
        .collect();
    fit.sort_by_key(|l| area(l));
    fit.iter().map(|l| (l.key, l.cost())).collect()
}

/// One video a subscriber receives, for the allocator: the layers it may get (smallest
/// first, with their bitrates; see [`layers_up_to_view`]) and how much it matters (higher
/// first: the dominant speaker, then the bigger tiles).
#[derive(Debug, Clone)]
pub struct VideoWant {
    pub layers: Vec<(LayerKey, u64)>,
    pub priority: u64,
}

/// Spend a subscriber's video budget (bits per second: its bandwidth estimate less its audio)
/// across its videos: first the smallest layer of each (every video keeps moving, even over
/// budget: a small picture beats a frozen one), then, most important first, each as far up as
/// what is left allows. The layer of each video, in the order given (`None`: nothing to send).
pub fn allocate(budget: u64, wants: &[VideoWant]) -> Vec<Option<LayerKey>> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(wants[*i].priority));
    let mut chosen: Vec<Option<usize>> = vec![None; wants.len()];
    let mut spent: u64 = 0;
    for &i in &order {
        if let Some((_, rate)) = wants[i].layers.first() {
            chosen[i] = Some(0);
            spent += rate;
        }
    }
    for &i in &order {
        let Some(smallest) = chosen[i] else { continue };
        let layers = &wants[i].layers;
        let free = budget.saturating_sub(spent) + layers[smallest].1;
        let best = (smallest..layers.len())
            .rev()
            .find(|&l| layers[l].1 <= free)
            .unwrap_or(smallest);
        spent = spent - layers[smallest].1 + layers[best].1;
        chosen[i] = Some(best);
    }
    chosen
        .iter()
        .zip(wants)
        .map(|(c, w)| c.map(|l| w.layers[l].0))
        .collect()
}

/// A layer no subscriber took for this long is paused at its publisher (dynacast); one that
/// is wanted again is resumed at once.
pub const PAUSE_UNWANTED_AFTER: Duration = Duration::from_secs(3);

/// Dynacast for one simulcast track: given the layers its subscribers take now (`wanted`),
/// mark layers paused once unwanted for [`PAUSE_UNWANTED_AFTER`] and resumed as soon as one
/// is wanted. `true` if what the publisher should send changed (tell it).
pub fn dynacast(layers: &mut [LayerSeen], wanted: &[LayerKey], now: Instant) -> bool {
    let mut changed = false;
    for layer in layers.iter_mut().filter(|l| l.key.is_some()) {
        if wanted.contains(&layer.key) {
            layer.unwanted_since = None;
            if layer.paused {
                layer.paused = false;
                // Its packets stopped while paused: count it live from now.
                layer.last_packet = now;
                changed = true;
            }
            continue;
        }
        let since = *layer.unwanted_since.get_or_insert(now);
        if !layer.paused && now.saturating_duration_since(since) >= PAUSE_UNWANTED_AFTER {
            layer.paused = true;
            changed = true;
        }
    }
    changed
}

/// Which layer one subscriber gets now and which it should get.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Being forwarded (`None`: nothing yet, or paused).
    pub forwarding: Option<LayerKey>,
    /// Wanted (`None`: nothing, the view is hidden).
    pub target: Option<LayerKey>,
}

/// What to do with one packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Drop,
    Forward,
    /// Forward, and it starts the newly forwarded layer.
    Switch,
}

impl Selection {
    pub fn admit(&mut self, layer: &LayerKey, keyframe_start: bool) -> Admit {
        let Some(target) = &self.target else {
            self.forwarding = None;
            return Admit::Drop;
        };
        if target == layer && keyframe_start && self.forwarding.as_ref() != Some(layer) {
            self.forwarding = Some(*layer);
            return Admit::Switch;
        }
        // The old layer goes on until the new one's keyframe comes.
        if self.forwarding.as_ref() == Some(layer) {
            Admit::Forward
        } else {
            Admit::Drop
        }
    }

    /// The layer whose keyframe is awaited (to ask the publisher for one).
    pub fn awaiting_keyframe(&self) -> Option<&LayerKey> {
        self.target
            .as_ref()
            .filter(|t| self.forwarding.as_ref() != Some(*t))
    }
}

/// A received packet as the munger sees it.
#[derive(Debug, Clone, Copy)]
pub struct PacketIn<'a> {
    /// Extended sequence number (with the publisher's rollover count).
    pub seq: u64,
    pub timestamp: u32,
    pub arrival: Instant,
    pub vp8: Option<&'a Vp8Info>,
}

/// What a packet becomes in the subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Munged {
    /// Extended: the rollover count is SRTP's for the outgoing stream (starts at 0).
    pub seq: u64,
    pub timestamp: u32,
    /// VP8 descriptor fields to write, when they differ from the packet's (after a switch).
    pub vp8: Option<Vp8Rewrite>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Rewrite {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
}

/// The newest packet sent on the outgoing stream.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    timestamp: u32,
    at: Instant,
    picture_id: Option<u16>,
    tl0_pic_idx: Option<u8>,
    key_idx: Option<u8>,
}

/// Keeps one subscriber's outgoing stream continuous while the layer feeding it changes.
/// Out = in − offset for each field, in its own modular arithmetic; the offsets are set at
/// each switch so that the new layer's first packet follows the last one sent.
#[derive(Debug, Clone, Default)]
pub struct Munger {
    last: Option<Sent>,
    /// First sequence number of the current layer: anything older came before the switch.
    first_seq_in: u64,
    seq_offset: u64,
    timestamp_offset: u32,
    picture_id_offset: u32,
    tl0_offset: u8,
    key_idx_offset: u8,
}

impl Munger {
    /// `p` starts a newly forwarded layer.
    pub fn switch(&mut self, p: &PacketIn) {
        self.first_seq_in = p.seq;
        let Some(last) = self.last else {
            // The stream's first packet: its 16-bit sequence number as it is, rollover 0
            // (the receiver's SRTP starts there), everything else as it came.
            self.seq_offset = p.seq & !0xFFFF;
            return;
        };
        self.seq_offset = p.seq.wrapping_sub(last.seq + 1);
        // The new layer's clock has its own origin: go on from the last timestamp sent by
        // the time that passed (at least one tick, so the frame is new).
        let elapsed = p.arrival.saturating_duration_since(last.at).as_millis();
        let step = (elapsed * VIDEO_TICKS_PER_MS).clamp(1, u128::from(u32::MAX >> 1)) as u32;
        self.timestamp_offset = p.timestamp.wrapping_sub(last.timestamp.wrapping_add(step));
        let vp8 = p.vp8.copied().unwrap_or_default();
        if let (Some(pic), Some(last_pic)) = (vp8.picture_id, last.picture_id) {
            let m = pic.modulus();
            let next = (u32::from(last_pic) + 1) % m;
            self.picture_id_offset = (u32::from(pic.value) + m - next) % m;
        }
        if let (Some(tl0), Some(last_tl0)) = (vp8.tl0_pic_idx, last.tl0_pic_idx) {
            self.tl0_offset = tl0.wrapping_sub(last_tl0.wrapping_add(1));
        }
        if let (Some(key), Some(last_key)) = (vp8.key_idx, last.key_idx) {
            self.key_idx_offset = key.wrapping_sub(last_key.wrapping_add(1)) & 0x1f;
        }
    }

    /// The packet's place in the outgoing stream; `None` for one from before the switch.
    pub fn munge(&mut self, p: &PacketIn) -> Option<Munged> {
        if p.seq < self.first_seq_in {
            return None;
        }
        let seq = p.seq.wrapping_sub(self.seq_offset);
        let timestamp = p.timestamp.wrapping_sub(self.timestamp_offset);
        let vp8 = p.vp8.copied().unwrap_or_default();
        let picture_id = vp8.picture_id.map(|pic| {
            let m = pic.modulus();
            ((u32::from(pic.value) + m - self.picture_id_offset % m) % m) as u16
        });
        let tl0_pic_idx = vp8.tl0_pic_idx.map(|t| t.wrapping_sub(self.tl0_offset));
        let key_idx = vp8
            .key_idx
            .map(|k| k.wrapping_sub(self.key_idx_offset) & 0x1f);
        if self.last.is_none_or(|l| seq > l.seq) {
            self.last = Some(Sent {
                seq,
                timestamp,
                at: p.arrival,
                picture_id: picture_id.or(self.last.and_then(|l| l.picture_id)),
                tl0_pic_idx: tl0_pic_idx.or(self.last.and_then(|l| l.tl0_pic_idx)),
                key_idx: key_idx.or(self.last.and_then(|l| l.key_idx)),
            });
        }
        let rewritten = (picture_id, tl0_pic_idx, key_idx)
            != (
                vp8.picture_id.map(|p| p.value),
                vp8.tl0_pic_idx,
                vp8.key_idx,
            );
        Some(Munged {
            seq,
            timestamp,
            vp8: rewritten.then_some(Vp8Rewrite {
                picture_id,
                tl0_pic_idx,
                key_idx,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload: descriptor with a 15-bit picture id, TL0PICIDX, TID and KEYIDX, then
    /// a frame header (a keyframe's with its size when `key`).
    fn vp8(
        start: bool,
        key: bool,
        pic: u16,
        tl0: u8,
        tid: u8,
        keyidx: u8,
        size: (u16, u16),
    ) -> Vec<u8> {
        let mut p = vec![0x80 | if start { 0x10 } else { 0 }, 0xf0];
        p.push(0x80 | (pic >> 8) as u8);
        p.push(pic as u8);
        p.push(tl0);
        p.push((tid << 6) | keyidx);
        if key {
            p.extend([0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
            p.extend(size.0.to_le_bytes());
            p.extend(size.1.to_le_bytes());
        } else {
            p.extend([0x01, 0x00, 0x00]);
        }
        p.extend([0u8; 20]);
        p
    }

    #[test]
    fn a_vp8_descriptor_and_keyframe_header_are_read() {
        let info = Vp8Info::parse(&vp8(true, true, 0x1234, 7, 2, 5, (960, 540))).unwrap();
        assert_eq!(
            info.picture_id,
            Some(PictureId {
                value: 0x1234,
                bits: 15
            })
        );
        assert_eq!(info.tl0_pic_idx, Some(7));
        assert_eq!(info.temporal_id, Some(2));
        assert_eq!(info.key_idx, Some(5));
        assert!(info.keyframe_start);
        assert_eq!(info.size, Some((960, 540)));
        // The same frame's later packets, and delta frames, start nothing.
        let later = Vp8Info::parse(&vp8(false, true, 0x1234, 7, 2, 5, (960, 540))).unwrap();
        assert!(!later.keyframe_start);
        let delta = Vp8Info::parse(&vp8(true, false, 0x1235, 7, 2, 5, (0, 0))).unwrap();
        assert!(!delta.keyframe_start);
        assert_eq!(delta.size, None);
        // No extension: a 7-bit-less, bare descriptor.
        let bare =
            Vp8Info::parse(&[0x10, 0x00, 0, 0, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]).unwrap();
        assert_eq!(bare.picture_id, None);
        assert_eq!(bare.size, Some((320, 240)));
    }

    #[test]
    fn truncated_vp8_payloads_are_refused_without_panicking() {
        let full = vp8(true, true, 300, 1, 0, 0, (640, 360));
        for n in 0..full.len() {
            // Any prefix either parses or is refused; a short keyframe has no size.
            if let Some(info) = Vp8Info::parse(&full[..n]) {
                assert!(info.size.is_none() || n >= 16);
            }
        }
        assert_eq!(Vp8Info::parse(&[]), None);
        assert_eq!(Vp8Info::parse(&[0x80]), None);
        assert_eq!(Vp8Info::parse(&[0x80, 0x80, 0x80]), None);
    }

    fn layer(rid: &str, size: Option<(u16, u16)>, age_ms: u64, now: Instant) -> LayerSeen {
        LayerSeen {
            size,
            last_packet: now - Duration::from_millis(age_ms),
            ..LayerSeen::new(Some(rid.into()), now)
        }
    }

    #[test]
    fn the_smallest_layer_that_covers_the_view_is_chosen() {
        let now = Instant::now() + Duration::from_secs(10);
        let layers = [
            layer("f", Some((960, 540)), 0, now),
            layer("q", Some((240, 135)), 0, now),
            layer("h", Some((480, 270)), 0, now),
        ];
        let fit = |width, height| View::Fit { width, height };
        let rid = |r: &str| Some(Some(Rid::from(r)));
        assert_eq!(choose_layer(&layers, View::default(), now), rid("f"));
        assert_eq!(choose_layer(&layers, fit(960, 540), now), rid("f"));
        assert_eq!(choose_layer(&layers, fit(481, 200), now), rid("f"));
        assert_eq!(choose_layer(&layers, fit(480, 270), now), rid("h"));
        assert_eq!(choose_layer(&layers, fit(320, 180), now), rid("h"));
        assert_eq!(choose_layer(&layers, fit(160, 90), now), rid("q"));
        assert_eq!(choose_layer(&layers, View::Hidden, now), None);
        // The top layer stopped coming (the publisher's encoder dropped it): the best live one.
        let mut paused = layers.clone();
        paused[0].last_packet = now - LAYER_STALE_AFTER;
        assert_eq!(choose_layer(&paused, View::default(), now), rid("h"));
        // Nothing live: nothing.
        let all_old: Vec<_> = layers
            .iter()
            .map(|l| LayerSeen {
                last_packet: now - Duration::from_secs(5),
                ..l.clone()
            })
            .collect();
        assert_eq!(choose_layer(&all_old, View::default(), now), None);
        // No size known yet, or no simulcast at all: the live layer there is.
        let plain = [LayerSeen::new(None, now)];
        assert_eq!(choose_layer(&plain, View::default(), now), Some(None));
    }

    /// Three videos' layers (q, h, f) at 150, 450 and 1,200 kbit/s.
    fn want(priority: u64) -> VideoWant {
        VideoWant {
            layers: vec![
                (Some("q".into()), 150_000),
                (Some("h".into()), 450_000),
                (Some("f".into()), 1_200_000),
            ],
            priority,
        }
    }

    #[test]
    fn the_allocator_spends_the_estimate_most_important_video_first() {
        let rid = |r: &str| Some(Some(Rid::from(r)));
        let three = [want(1), want(5), want(2)];
        // Plenty: everyone at the top.
        assert_eq!(allocate(10_000_000, &three), [rid("f"), rid("f"), rid("f")]);
        // 1 Mbit/s: all three move at q (450k), then the most important (index 1) goes up
        // as far as the rest allows (h: 750k spent), and nobody else fits higher.
        assert_eq!(allocate(1_000_000, &three), [rid("q"), rid("h"), rid("q")]);
        // 2 Mbit/s: the first at f (1.5M spent), the next at h (1.8M), the last stays at q.
        assert_eq!(allocate(2_000_000, &three), [rid("q"), rid("f"), rid("h")]);
        // Less than the smallest layers cost: each keeps its smallest rather than freezing.
        assert_eq!(allocate(100_000, &three), [rid("q"), rid("q"), rid("q")]);
        // A hidden video (no layers) gets nothing and costs nothing.
        let hidden = VideoWant {
            layers: vec![],
            priority: 9,
        };
        assert_eq!(allocate(1_500_000, &[hidden, want(1)]), [None, rid("f")]);
    }

    #[test]
    fn a_view_caps_the_layers_the_allocator_may_pick() {
        let now = Instant::now() + Duration::from_secs(10);
        let mut layers = vec![
            layer("f", Some((960, 540)), 0, now),
            layer("q", Some((240, 135)), 0, now),
            layer("h", Some((480, 270)), 0, now),
        ];
        for (l, rate) in layers.iter_mut().zip([1_200_000, 150_000, 450_000]) {
            l.bitrate = rate;
        }
        let fit = |width, height| View::Fit { width, height };
        let keys = |v: Vec<(LayerKey, u64)>| {
            v.into_iter()
                .map(|(k, _)| k.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(layers_up_to_view(&layers, View::default(), now)),
            ["q", "h", "f"]
        );
        assert_eq!(
            keys(layers_up_to_view(&layers, fit(320, 180), now)),
            ["q", "h"]
        );
        assert_eq!(keys(layers_up_to_view(&layers, fit(100, 50), now)), ["q"]);
        assert!(layers_up_to_view(&layers, View::Hidden, now).is_empty());
        assert_eq!(layers_up_to_view(&layers, fit(320, 180), now)[1].1, 450_000);
    }

    #[test]
    fn a_layers_bitrate_is_measured_from_its_bytes() {
        let t0 = Instant::now();
        let mut l = LayerSeen::new(None, t0);
        // 500 kbit/s for 2 s, measured every 250 ms.
        for i in 1..=8u32 {
            l.bytes += 500_000 / 8 / 4;
            l.measure(t0 + Duration::from_millis(250) * i);
        }
        assert!((l.bitrate as i64 - 500_000).abs() < 5_000, "{}", l.bitrate);
    }

    #[test]
    fn dynacast_pauses_layers_nobody_takes_and_resumes_them_when_wanted() {
        let t0 = Instant::now();
        let mut layers = vec![
            layer("f", Some((960, 540)), 0, t0),
            layer("h", Some((480, 270)), 0, t0),
            layer("q", Some((240, 135)), 0, t0),
        ];
        let q: LayerKey = Some("q".into());
        let paused = |l: &[LayerSeen]| {
            l.iter()
                .filter(|x| x.paused)
                .map(|x| x.key.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // Only q taken: nothing changes before the grace, then f and h pause.
        assert!(!dynacast(&mut layers, &[q], t0));
        assert!(!dynacast(&mut layers, &[q], t0 + Duration::from_secs(2)));
        assert!(dynacast(&mut layers, &[q], t0 + PAUSE_UNWANTED_AFTER));
        assert_eq!(paused(&layers), ["f", "h"]);
        // Paused layers still count as available: a subscriber may choose f, far later.
        let late = t0 + Duration::from_secs(60);
        assert_eq!(
            choose_layer(&layers[..2], View::default(), late),
            Some(Some("f".into()))
        );
        // f wanted again: resumed at once.
        assert!(dynacast(&mut layers, &[q, Some("f".into())], late));
        assert_eq!(paused(&layers), ["h"]);
        assert!(!dynacast(&mut layers, &[q, Some("f".into())], late));
        // A track without simulcast is never paused.
        let mut plain = vec![LayerSeen::new(None, t0)];
        assert!(!dynacast(&mut plain, &[], t0 + Duration::from_secs(60)));
        assert!(!plain[0].paused);
    }

    #[test]
    fn layers_past_the_cap_are_not_kept() {
        let now = Instant::now();
        let mut layers = Vec::new();
        for rid in ["a", "b", "c"] {
            assert!(saw_layer(&mut layers, &Some(rid.into()), None, 100, now));
        }
        assert!(!saw_layer(&mut layers, &Some("d".into()), None, 100, now));
        let key = Vp8Info {
            keyframe_start: true,
            size: Some((640, 360)),
            ..Default::default()
        };
        assert!(saw_layer(
            &mut layers,
            &Some("b".into()),
            Some(&key),
            100,
            now
        ));
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[1].size, Some((640, 360)));
    }

    #[test]
    fn the_layer_changes_only_at_a_keyframe_of_the_target() {
        let (q, h): (LayerKey, LayerKey) = (Some("q".into()), Some("h".into()));
        let mut s = Selection {
            forwarding: None,
            target: Some(q),
        };
        // Nothing until the target's keyframe.
        assert_eq!(s.admit(&q, false), Admit::Drop);
        assert_eq!(s.awaiting_keyframe(), Some(&q));
        assert_eq!(s.admit(&h, true), Admit::Drop);
        assert_eq!(s.admit(&q, true), Admit::Switch);
        assert_eq!(s.admit(&q, false), Admit::Forward);
        assert_eq!(s.awaiting_keyframe(), None);
        // Up to h: q goes on until h's keyframe, then q stops.
        s.target = Some(h);
        assert_eq!(s.admit(&h, false), Admit::Drop);
        assert_eq!(s.admit(&q, false), Admit::Forward);
        assert_eq!(s.admit(&q, true), Admit::Forward);
        assert_eq!(s.admit(&h, true), Admit::Switch);
        assert_eq!(s.admit(&q, false), Admit::Drop);
        assert_eq!(s.admit(&h, true), Admit::Forward);
        // Hidden: nothing, and showing it again waits for a keyframe.
        s.target = None;
        assert_eq!(s.admit(&h, false), Admit::Drop);
        assert_eq!(s.forwarding, None);
        s.target = Some(h);
        assert_eq!(s.admit(&h, false), Admit::Drop);
        assert_eq!(s.admit(&h, true), Admit::Switch);
    }

    /// A layer's packets as a publisher sends them: per frame, `per_frame` packets at 30 fps.
    struct LayerStream {
        seq: u64,
        timestamp: u32,
        pic: u16,
        tl0: u8,
        keyidx: u8,
    }

    impl LayerStream {
        /// One frame's packets: (sequence number, timestamp, descriptor).
        fn frame(&mut self, key: bool, per_frame: usize) -> Vec<(u64, u32, Vp8Info)> {
            let mut out = Vec::new();
            for i in 0..per_frame {
                let info = Vp8Info {
                    picture_id: Some(PictureId {
                        value: self.pic,
                        bits: 15,
                    }),
                    tl0_pic_idx: Some(self.tl0),
                    temporal_id: Some(0),
                    key_idx: Some(self.keyidx),
                    keyframe_start: key && i == 0,
                    size: None,
                };
                out.push((self.seq, self.timestamp, info));
                self.seq += 1;
            }
            self.timestamp = self.timestamp.wrapping_add(3000);
            self.pic = (self.pic + 1) % (1 << 15);
            self.tl0 = self.tl0.wrapping_add(1);
            out
        }
    }

    #[test]
    fn switches_keep_sequence_timestamp_and_picture_id_continuous_across_wraps() {
        let t0 = Instant::now();
        // Counters that wrap during the run: sequence (in rollover 3), timestamp, picture
        // id, TL0PICIDX, KEYIDX.
        let mut a = LayerStream {
            seq: 3 * 65_536 + 65_530,
            timestamp: u32::MAX - 7_000,
            pic: 32_760,
            tl0: 250,
            keyidx: 30,
        };
        let mut b = LayerStream {
            seq: 1_000,
            timestamp: 123_456,
            pic: 5,
            tl0: 17,
            keyidx: 2,
        };
        let (ka, kb): (LayerKey, LayerKey) = (Some("a".into()), Some("b".into()));
        let mut sel = Selection {
            forwarding: None,
            target: Some(ka),
        };
        let mut munger = Munger::default();
        let mut sent: Vec<(Munged, Vp8Info)> = Vec::new();
        for frame in 0..45u64 {
            // Up to b at frame 12 (its keyframe comes at 20), back to a at 33 (at 40).
            if frame == 12 {
                sel.target = Some(kb);
            }
            if frame == 33 {
                sel.target = Some(ka);
            }
            let arrival = t0 + Duration::from_millis(33 * frame);
            let key = frame % 10 == 0;
            let packets = [(&ka, a.frame(key, 3)), (&kb, b.frame(key, 2))];
            for (layer, frame_packets) in packets {
                for (seq, timestamp, info) in frame_packets {
                    let p = PacketIn {
                        seq,
                        timestamp,
                        arrival,
                        vp8: Some(&info),
                    };
                    match sel.admit(layer, info.keyframe_start) {
                        Admit::Drop => continue,
                        Admit::Switch => munger.switch(&p),
                        Admit::Forward => {}
                    }
                    sent.push((munger.munge(&p).unwrap(), info));
                }
            }
        }
        assert!(sent.len() > 80, "{} packets", sent.len());
        // The first packet keeps its 16-bit sequence number, in rollover 0.
        assert_eq!(sent[0].0.seq, 65_530);
        let pic = |m: &Munged, i: &Vp8Info| {
            m.vp8
                .map_or(i.picture_id.map(|p| p.value), |v| v.picture_id)
                .unwrap()
        };
        let tl0 = |m: &Munged, i: &Vp8Info| m.vp8.map_or(i.tl0_pic_idx, |v| v.tl0_pic_idx).unwrap();
        let key_idx = |m: &Munged, i: &Vp8Info| m.vp8.map_or(i.key_idx, |v| v.key_idx).unwrap();
        for pair in sent.windows(2) {
            let ((m0, i0), (m1, i1)) = (&pair[0], &pair[1]);
            // No gap, no jump back: one more each packet.
            assert_eq!(m1.seq, m0.seq + 1);
            // Timestamps move forward (modulo 2^32) by at most a frame or so.
            let step = m1.timestamp.wrapping_sub(m0.timestamp);
            assert!(step <= 3_000, "timestamp step {step}");
            // Picture ids and TL0PICIDX go up by 0 (same frame) or 1 (next frame), wrapping.
            let (p0, p1) = (u32::from(pic(m0, i0)), u32::from(pic(m1, i1)));
            assert!((p1 + (1 << 15) - p0) % (1 << 15) <= 1, "{p0} -> {p1}");
            assert!(tl0(m1, i1).wrapping_sub(tl0(m0, i0)) <= 1);
            // A new picture comes with a new timestamp, and the reverse.
            assert_eq!(p0 == p1, m0.timestamp == m1.timestamp);
            // KEYIDX (the layers' differ) moves by one at most, at a switch's keyframe.
            let key_step = key_idx(m1, i1).wrapping_sub(key_idx(m0, i0)) & 0x1f;
            assert!(key_step == 0 || (key_step == 1 && i1.keyframe_start));
        }
        // Both switches happened: a's keyframes at 0, 10 and 20 (a goes on until b's comes,
        // in the same frame), b's at 20 and 30, a's at 40.
        let keyframes = sent.iter().filter(|(_, i)| i.keyframe_start).count();
        assert_eq!(keyframes, 6);
        // The outgoing sequence went from rollover 0 into rollover 1.
        assert!(sent.last().unwrap().0.seq > 65_536);
    }

    #[test]
    fn packets_from_before_a_switch_are_not_forwarded_in_the_new_layer() {
        let t0 = Instant::now();
        let mut m = Munger::default();
        let info = Vp8Info::default();
        let p = |seq: u64| PacketIn {
            seq,
            timestamp: 90_000,
            arrival: t0,
            vp8: Some(&info),
        };
        m.switch(&p(500));
        assert_eq!(m.munge(&p(500)).map(|o| o.seq), Some(500));
        assert_eq!(m.munge(&p(501)).map(|o| o.seq), Some(501));
        // A reordered packet of this layer from before its first one.
        assert_eq!(m.munge(&p(499)), None);
        // Reordered within the layer: numbered in place (the receiver reorders).
        assert_eq!(m.munge(&p(503)).map(|o| o.seq), Some(503));
        assert_eq!(m.munge(&p(502)).map(|o| o.seq), Some(502));
        // Untouched descriptor: nothing to rewrite until a switch moves the counters.
        assert_eq!(m.munge(&p(504)).unwrap().vp8, None);
    }
}
