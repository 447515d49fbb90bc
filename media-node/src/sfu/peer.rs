//! One participant of a room: its `Rtc`, the tracks it publishes and the ones it receives, and
//! the drain of its output (`poll_output`: transmits to the socket, events turned into what
//! the other peers must hear about).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use actix::Recipient;
use conclave_common::link::{FromMediaNode, MediaEvent};
use conclave_common::protocol::{MediaConnectionState, TrackKind, TrackSource};
use str0m::change::SdpPendingOffer;
use str0m::format::Codec;
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::consent::{PathGuard, Verdict};
use super::ice;
use super::rtc::guarded;
use super::simulcast::{saw_layer, LayerKey, LayerSeen, Munger, Selection, View, Vp8Info};
use super::speech::SpeechDetector;
use super::udp::{PeerKey, UdpSender};
use crate::metrics;

/// Due timeouts one `poll_output` feeds back to the `Rtc` itself before leaving the rest
/// to the room's timer.
const MAX_DUE_NOW_PER_POLL: u32 = 4;

/// A track a participant publishes (an m-line the browser sends on).
#[derive(Debug, Clone)]
pub struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// What it shows, as the publisher declared (`AddPeer::sources`) or by its kind.
    pub source: TrackSource,
    /// Video: the layers it comes in (one without simulcast), as seen so far.
    pub layers: Vec<LayerSeen>,
}

/// Negotiation state of a track we send to a subscriber (moved along by `negotiate.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackOutState {
    /// Waiting for the next server offer.
    ToOpen,
    /// In an offer the subscriber has not answered yet.
    Negotiating(Mid),
    /// Flowing.
    Open(Mid),
    /// Publisher gone: stop the m-line in the next offer.
    ToStop(Mid),
    /// Stop offered, answer pending.
    NegotiatingStop(Mid),
}

/// A track we send to a subscriber: another peer's `TrackIn`.
#[derive(Debug, Clone)]
pub struct TrackOut {
    pub source_peer: PeerKey,
    pub source_mid: Mid,
    pub kind: MediaKind,
    /// The publisher's `TrackIn::source`, announced with the track.
    pub source: TrackSource,
    pub state: TrackOutState,
    /// Publisher's payload type -> ours, for the last codec seen (mapped once, not per packet;
    /// see `forward::map_payload_type`).
    pub pt_map: Option<(Pt, Pt)>,
    /// Audio: subtracted from the publisher's extended sequence numbers (set by the first
    /// packet; see `forward::rebase_seq`).
    pub seq_base: Option<u64>,
    /// Video: how the subscriber shows it (`setTrackViews`), which layer it gets, and its
    /// stream kept continuous across layer changes (`simulcast.rs`).
    pub view: View,
    pub selection: Selection,
    pub munger: Munger,
}

impl TrackOut {
    /// A track to offer the subscriber in the next renegotiation.
    pub fn to_open(source_peer: PeerKey, track: &TrackIn) -> TrackOut {
        TrackOut {
            source_peer,
            source_mid: track.mid,
            kind: track.kind,
            source: track.source,
            state: TrackOutState::ToOpen,
            pt_map: None,
            seq_base: None,
            view: View::default(),
            selection: Selection::default(),
            munger: Munger::default(),
        }
    }
}

/// One participant: its `Rtc` and what it sends and receives.
pub struct Peer {
    pub key: PeerKey,
    pub participant_id: String,
    pub rtc: Rtc,
    /// Where this peer's events go (the signaling node that asked for it). Only this link
    /// may answer, trickle or remove for the peer.
    pub link: Recipient<FromMediaNode>,
    /// Checks the key of an `adoptPeer` (another link taking the peer over).
    pub adopt_verifier: String,
    pub tracks_in: Vec<TrackIn>,
    pub tracks_out: Vec<TrackOut>,
    /// What the client declared its m-lines carry, by mid (`AddPeer::sources`).
    declared_sources: BTreeMap<String, TrackSource>,
    /// Incoming SSRC -> publisher m-line and layer.
    rx_mids: Vec<(Ssrc, Mid, LayerKey)>,
    /// Our offer awaiting the subscriber's answer (str0m allows one at a time).
    pub pending: Option<SdpPendingOffer>,
    /// That offer as sent, to send again if the peer is adopted by another link before
    /// the answer (the first copy may have died with the old link).
    pub pending_event: Option<MediaEvent>,
    /// Earliest time str0m wants a `Timeout` input.
    pub next_timeout: Instant,
    /// Has input or new output to drain.
    pub dirty: bool,
    /// DTLS is up and media can flow.
    pub connected: bool,
    /// ICE found a working pair at least once (tells a DTLS failure from an ICE one).
    pub ice_connected: bool,
    /// When the peer was added (see `room::CONNECT_DEADLINE`).
    pub added_at: Instant,
    pub disconnected_since: Option<Instant>,
    /// The `Rtc` panicked or failed: remove at the next opportunity.
    pub dead: bool,
    /// NACKs received per outgoing track so far (str0m's stats are cumulative).
    pub nacks_seen: Vec<(Mid, u64)>,
    /// Remote candidates trickled so far (capped: `ParticipantCaps::max_remote_candidates`).
    pub remote_candidates: u32,
    /// Most tracks this peer may publish (`ParticipantCaps::max_tracks`); the offer was
    /// checked, this holds whatever str0m reports.
    max_tracks: u32,
    /// Our ICE ufrag for this peer (the second half of our consent checks' USERNAME).
    local_ufrag: String,
    /// Which addresses this peer has proven its own: media goes only there.
    paths: PathGuard,
    /// Whether its microphone carries speech (from the audio levels of its packets).
    pub speech: SpeechDetector,
}

/// What one peer's output means for the others.
// `Rtp` is the common case and the big one: boxing it would allocate per packet.
#[allow(clippy::large_enum_variant)]
pub enum Propagated {
    TrackOpened {
        from: PeerKey,
        track: TrackIn,
    },
    Rtp {
        from: PeerKey,
        mid: Mid,
        layer: LayerKey,
        /// What the packet is, for VP8 video (read once here, not per subscriber).
        vp8: Option<Vp8Info>,
        params: PayloadParams,
        packet: RtpPacket,
    },
    /// A subscriber asks for a keyframe of the layer it gets.
    KeyframeRequest {
        source_peer: PeerKey,
        source_mid: Mid,
        layer: LayerKey,
        kind: KeyframeRequestKind,
    },
}

/// Who controls a new peer: the link that added it, and what adopting it must prove.
pub struct PeerControl {
    pub link: Recipient<FromMediaNode>,
    pub adopt_verifier: String,
    /// What the client declared its m-lines carry (`AddPeer::sources`).
    pub sources: BTreeMap<String, TrackSource>,
}

/// A new peer's connection: its `Rtc` and our ICE ufrag in it.
pub struct PeerRtc {
    pub rtc: Rtc,
    pub local_ufrag: String,
}

impl Peer {
    /// Packets per second this peer publishes, by the load model.
    pub fn publishes_fpps(&self) -> u64 {
        let audio = self
            .tracks_in
            .iter()
            .filter(|t| t.kind == MediaKind::Audio)
            .count() as u64;
        conclave_common::load::publisher_fpps(audio, self.tracks_in.len() as u64 - audio)
    }

    /// A peer whose offer was just answered; `tracks_out` are the tracks already published in
    /// the room, to offer it next.
    pub fn new(
        key: PeerKey,
        participant_id: String,
        rtc: PeerRtc,
        control: PeerControl,
        tracks_out: Vec<TrackOut>,
        now: Instant,
        max_tracks: u32,
    ) -> Peer {
        let PeerControl {
            link,
            adopt_verifier,
            sources,
        } = control;
        let PeerRtc { rtc, local_ufrag } = rtc;
        Peer {
            key,
            participant_id,
            rtc,
            link,
            adopt_verifier,
            tracks_in: Vec::new(),
            tracks_out,
            declared_sources: sources,
            rx_mids: Vec::new(),
            pending: None,
            pending_event: None,
            next_timeout: now,
            dirty: true,
            connected: false,
            ice_connected: false,
            added_at: now,
            disconnected_since: None,
            dead: false,
            nacks_seen: Vec::new(),
            remote_candidates: 0,
            max_tracks,
            local_ufrag,
            paths: PathGuard::new(now),
            speech: SpeechDetector::default(),
        }
    }

    /// What the publisher's m-line `mid` shows: its declared source if that fits the kind,
    /// else the kind's default (a microphone, a camera).
    fn declared_source(&self, mid: Mid, kind: MediaKind) -> TrackSource {
        let kind = match kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        self.declared_sources
            .get(&*mid)
            .copied()
            .filter(|s| s.fits(kind))
            .unwrap_or(match kind {
                TrackKind::Audio => TrackSource::Microphone,
                TrackKind::Video => TrackSource::Camera,
            })
    }

    /// Send a consent check towards `addr` if one is due (see `consent.rs`): the peer
    /// answers it from there only if the address is its own.
    pub fn prove_path(&mut self, addr: SocketAddr, socket: &UdpSender) {
        let Some(transaction_id) = self.paths.check_due(addr, Instant::now()) else {
            return;
        };
        let rtc = &mut self.rtc;
        let Some(Some(remote)) = guarded(|| rtc.direct_api().remote_ice_credentials()) else {
            return;
        };
        let request = self.paths.request(
            transaction_id,
            &self.local_ufrag,
            &remote.ufrag,
            &remote.pass,
        );
        metrics::PATH_CHECKS.with_label_values(&["sent"]).inc();
        if let Err(e) = socket.send(&request, addr) {
            tracing::debug!(peer = self.key, error = %e, "consent check not sent");
        }
    }

    /// Why the peer's media never connected, for the log (the browser sees only "failed").
    pub fn connect_failure(&self) -> &'static str {
        if self.ice_connected {
            "ICE connected but the DTLS handshake did not complete"
        } else if self.paths.never_proven() {
            "its address never answered our consent check"
        } else {
            "no ICE candidate pair worked (UDP blocked, or no usable candidate)"
        }
    }

    /// A STUN datagram from `source`, before str0m sees it: `true` if it was the answer to
    /// one of our consent checks (consumed here). A nominating request from an address not
    /// proven yet starts its check at once, so the proof is usually back before media.
    pub fn on_stun(&mut self, source: SocketAddr, datagram: &[u8], socket: &UdpSender) -> bool {
        if let Some(request) = ice::binding_request(datagram) {
            // The router verified it: the peer sent it (from here, or spoofed to look so).
            self.paths.heard_from(source, Instant::now());
            if request.use_candidate() && !self.paths.is_proven(source) {
                self.prove_path(source, socket);
            }
            return false;
        }
        let (Some(response), Some(transaction_id)) = (
            ice::binding_success(datagram),
            ice::transaction_id(datagram),
        ) else {
            return false;
        };
        let rtc = &mut self.rtc;
        let Some(Some(remote)) = guarded(|| rtc.direct_api().remote_ice_credentials()) else {
            return false;
        };
        let proven = self.paths.on_success_response(
            source,
            transaction_id,
            &response,
            &remote.pass,
            Instant::now(),
        );
        if proven {
            metrics::PATH_CHECKS.with_label_values(&["proven"]).inc();
            tracing::debug!(peer = self.key, %source, "address proven");
        }
        proven
    }

    /// Send an event to this peer's signaling node.
    pub fn send_event(&self, event: MediaEvent) {
        self.link.do_send(FromMediaNode(event));
    }

    /// Tell this peer's signaling node its media connection state.
    pub fn send_state(&self, room: &str, state: MediaConnectionState) {
        self.send_event(MediaEvent::PeerState {
            room: room.to_string(),
            participant_id: self.participant_id.clone(),
            state,
        });
    }

    /// A trickled remote candidate (an SDP `candidate:` line, with or without `a=`).
    pub fn add_remote_candidate(&mut self, candidate: &str) {
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        match Candidate::from_sdp_string(line) {
            // mDNS names cannot be resolved here; peer-reflexive candidates cover them.
            Ok(c) if c.addr().ip().is_unspecified() => {}
            Ok(c) => {
                let rtc = &mut self.rtc;
                if guarded(|| rtc.add_remote_candidate(c)).is_none() {
                    self.dead = true;
                }
                self.dirty = true;
            }
            Err(e) => {
                tracing::debug!(participant = %self.participant_id, error = %e, "ignored remote candidate");
            }
        }
    }

    /// Drain this peer's output until str0m asks for a timeout: send transmits, collect what
    /// the other peers must act on.
    pub fn poll_output(&mut self, socket: &UdpSender, room: &str, out: &mut Vec<Propagated>) {
        // Timeouts already due, handled here rather than through the room's timer (bounded:
        // a misbehaving `Rtc` cannot keep us here).
        let mut due_now = 0;
        loop {
            let rtc = &mut self.rtc;
            let output = match guarded(|| rtc.poll_output()) {
                Some(Ok(o)) => o,
                Some(Err(e)) => {
                    tracing::info!(room, participant = %self.participant_id, error = %e, "media failed: DTLS/SRTP error, peer dropped");
                    metrics::DTLS_FAILURES.inc();
                    self.dead = true;
                    return;
                }
                None => {
                    self.dead = true;
                    return;
                }
            };
            match output {
                Output::Timeout(t) => {
                    // Media just written asks for a timeout at once (str0m's pacer takes a
                    // fresh snapshot of its queues): give it now. Through the room timer it
                    // would cost a wakeup per batch and hold the packets until the timer.
                    let now = Instant::now();
                    if t <= now && due_now < MAX_DUE_NOW_PER_POLL {
                        due_now += 1;
                        if guarded(|| rtc.handle_input(Input::Timeout(now))).is_none() {
                            self.dead = true;
                            return;
                        }
                        continue;
                    }
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    let now = Instant::now();
                    let verdict =
                        self.paths
                            .verdict(t.destination, &t.contents, self.connected, now);
                    let to = match verdict {
                        Verdict::Send(to) => to,
                        Verdict::SendAndProve => t.destination,
                        Verdict::Hold => {
                            metrics::DROPPED.with_label_values(&["unproven_path"]).inc();
                            self.prove_path(t.destination, socket);
                            continue;
                        }
                    };
                    // Media str0m aims at an address not proven yet (a new nomination) went
                    // to a proven one, or is DTLS of the handshake: prove the new one.
                    if !ice::looks_like_stun(&t.contents) && !self.paths.is_proven(t.destination) {
                        self.prove_path(t.destination, socket);
                    }
                    if let Err(e) = socket.send(&t.contents, to) {
                        tracing::debug!(peer = self.key, error = %e, "udp send failed");
                    }
                }
                Output::Event(event) => self.handle_event(event, room, out),
            }
        }
    }

    fn handle_event(&mut self, event: Event, room: &str, out: &mut Vec<Propagated>) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.send_state(room, MediaConnectionState::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                if self.disconnected_since.is_none() =>
            {
                self.disconnected_since = Some(Instant::now());
                self.send_state(room, MediaConnectionState::Disconnected);
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                self.ice_connected = true;
                if self.disconnected_since.take().is_some() && self.connected {
                    self.send_state(room, MediaConnectionState::Connected);
                }
            }
            // Our own send-only m-lines show up here too; publishers' are the ones we receive.
            Event::MediaAdded(added)
                if matches!(added.direction, Direction::RecvOnly | Direction::SendRecv)
                    && !self.tracks_in.iter().any(|t| t.mid == added.mid) =>
            {
                if self.tracks_in.len() >= self.max_tracks as usize {
                    // Not forwarded to anyone: no subscriber's offer grows for it.
                    tracing::info!(participant = %self.participant_id, mid = %added.mid, "track over the cap ignored");
                    return;
                }
                let track = TrackIn {
                    mid: added.mid,
                    kind: added.kind,
                    source: self.declared_source(added.mid, added.kind),
                    layers: Vec::new(),
                };
                self.tracks_in.push(track.clone());
                metrics::TRACKS.inc();
                out.push(Propagated::TrackOpened {
                    from: self.key,
                    track,
                });
            }
            Event::RtpPacket(packet) => {
                // Padding (bandwidth probes) carries nothing to forward.
                if packet.payload.is_empty() {
                    return;
                }
                let Some((mid, layer)) = self.rx_stream(packet.header.ssrc) else {
                    return;
                };
                let pt = packet.header.payload_type;
                let Some(params) = self.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
                    return;
                };
                let vp8 = (params.spec().codec == Codec::Vp8)
                    .then(|| Vp8Info::parse(&packet.payload))
                    .flatten();
                if let Some(track) = self.tracks_in.iter_mut().find(|t| t.mid == mid) {
                    let over_cap = match track.kind {
                        MediaKind::Audio => {
                            let level = packet.header.ext_vals.audio_level;
                            self.speech.packet(level, packet.timestamp);
                            false
                        }
                        MediaKind::Video => {
                            !saw_layer(&mut track.layers, &layer, vp8.as_ref(), packet.timestamp)
                        }
                    };
                    if over_cap {
                        return; // A layer over the cap: forwarded to no one.
                    }
                }
                out.push(Propagated::Rtp {
                    from: self.key,
                    mid,
                    layer,
                    vp8,
                    params,
                    packet,
                });
            }
            Event::KeyframeRequest(req) => {
                match req.kind {
                    KeyframeRequestKind::Pli => metrics::PLIS.inc(),
                    KeyframeRequestKind::Fir => metrics::FIRS.inc(),
                }
                // A subscriber asks for a keyframe on one of our outgoing tracks: find its
                // source and the layer it gets (none yet: one is asked for already).
                if let Some(t) = self
                    .tracks_out
                    .iter()
                    .find(|t| matches!(t.state, TrackOutState::Open(m) if m == req.mid))
                {
                    if let Some(layer) = &t.selection.forwarding {
                        out.push(Propagated::KeyframeRequest {
                            source_peer: t.source_peer,
                            source_mid: t.source_mid,
                            layer: *layer,
                            kind: req.kind,
                        });
                    }
                }
            }
            Event::PeerStats(stats) => {
                if let Some(rtt) = stats.rtt {
                    metrics::RTT.observe(rtt.as_secs_f64());
                }
                if let Some(loss) = stats.egress_loss_fraction {
                    metrics::LOSS.observe(loss as f64);
                }
            }
            Event::MediaIngressStats(stats) => {
                let clock = match self.tracks_in.iter().find(|t| t.mid == stats.mid) {
                    Some(t) if t.kind == MediaKind::Audio => 48_000.0,
                    Some(_) => 90_000.0,
                    None => return,
                };
                metrics::JITTER.observe(stats.jitter as f64 / clock);
            }
            Event::MediaEgressStats(stats) => {
                // Cumulative per outgoing track: count what is new since the last report.
                match self.nacks_seen.iter_mut().find(|(m, _)| *m == stats.mid) {
                    Some((_, seen)) => {
                        metrics::NACKS.inc_by(stats.nacks.saturating_sub(*seen));
                        *seen = stats.nacks;
                    }
                    None => {
                        metrics::NACKS.inc_by(stats.nacks);
                        self.nacks_seen.push((stats.mid, stats.nacks));
                    }
                }
            }
            _ => {}
        }
    }

    /// The publisher's m-line and layer an incoming SSRC belongs to (cached: asked once per
    /// stream).
    fn rx_stream(&mut self, ssrc: Ssrc) -> Option<(Mid, LayerKey)> {
        if let Some((_, mid, layer)) = self.rx_mids.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((*mid, *layer));
        }
        let mut api = self.rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        let (mid, layer) = (rx.mid(), rx.rid());
        self.rx_mids.push((ssrc, mid, layer));
        Some((mid, layer))
    }
}
