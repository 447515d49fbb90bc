//! The data path: one `RoomSfu` actor per room owns the str0m `Rtc` of every participant in it.
//!
//! `udp::receive_loop -> DatagramIn -> Rtc::handle_input -> Event::RtpPacket -> for each other
//! peer: StreamTx::write_rtp -> Rtc::poll_output -> Transmit -> UdpSocket::try_send_to`.
//!
//! Forwarding is in str0m's RTP mode: each RTP packet is passed through as it came (payload
//! shared, header fields copied), never depacketized into frames and packetized again per
//! subscriber. Only the payload type is mapped to the subscriber's, and the sequence numbers
//! are rebased per subscriber so every outgoing stream starts in SRTP rollover 0.
//!
//! Because every `Rtc` of a room lives in this one actor, forwarding is a plain function call:
//! no per-packet message between actors. Each `Rtc` is sans-IO: after every input we drain
//! `poll_output` until it returns a timeout, and one actor timer fires at the earliest timeout.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use conclave_common::link::{FromMediaNode, MediaEvent};
use conclave_common::protocol::{
    ErrorCode, MediaConnectionState, TrackInfo, TrackKind, TrackSource,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequest, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

use crate::metrics;
use crate::udp::{PeerKey, Route, RouterHandle, RouterUpdate};

/// A peer whose ICE stays disconnected this long is dropped (the browser has gone).
const DISCONNECT_GRACE: Duration = Duration::from_secs(15);
/// A peer whose media has not connected this long after it was added is dropped: with no
/// usable candidate ICE never reports a failure, and the peer would hold its room's media.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// At most one keyframe request per publisher track per this interval, however many
/// subscribers ask: a keyframe is large and one serves everybody.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// At most this many packets kept per outgoing video stream for retransmission. str0m's
/// default (1000) costs ≈ 1.2 MB per subscribed stream, times every subscription; 64 packets
/// is ≈ 1 s of 500 kbps video, ≈ 230 ms of 2.5 Mbps. See also `RTX_MAX_AGE`.
const SEND_BUFFER_VIDEO: usize = 64;
/// Audio is not retransmitted (browsers do not NACK Opus); the buffer only stages packets.
const SEND_BUFFER_AUDIO: usize = 8;
/// Packets older than this are not kept for retransmission (str0m's default: 3 s), so a
/// low-bitrate stream's cache stays small (see `configure_send_stream`). A NACK comes about
/// one round trip after the loss and is repeated every round trip: 500 ms answers NACKs over
/// round trips up to ≈ 400 ms (Janus keeps round trip + 100 ms, within 200 ms..1 s).
const RTX_MAX_AGE: Duration = Duration::from_millis(500);
/// str0m's default: stop resending when resends exceed this share of the bytes sent.
const RTX_RATIO_CAP: f32 = 0.15;

/// What every room's `Rtc`s share: the socket, the router and the address we advertise.
#[derive(Clone)]
pub struct SfuShared {
    /// Non-blocking; a full send buffer drops the packet (NACK or the next keyframe repairs).
    pub socket: Arc<std::net::UdpSocket>,
    pub router: RouterHandle,
    /// The address browsers send to (our only ICE candidate); also the `destination` of
    /// every `Receive`, since str0m drops STUN not addressed to a local candidate.
    pub advertised: SocketAddr,
    pub node_id: String,
    /// Peers on this node, over all rooms: the true count its cluster heartbeat reports.
    pub participants: Arc<std::sync::atomic::AtomicU64>,
}

/// Datagrams for peers of this room that arrived together.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DatagramBatch(pub Vec<DatagramIn>);

/// One received datagram for a peer of this room (an owned copy: it crosses actors).
pub struct DatagramIn {
    pub peer: PeerKey,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

/// Create a participant's peer from its SDP offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddPeer {
    pub participant_id: String,
    pub offer: String,
    pub link: Recipient<FromMediaNode>,
}

/// The participant's answer to our last offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerAnswer {
    pub participant_id: String,
    pub sdp: String,
    pub link: Recipient<FromMediaNode>,
}

/// A remote ICE candidate.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerCandidate {
    pub participant_id: String,
    pub candidate: String,
}

/// Drop a participant's peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemovePeer {
    pub participant_id: String,
    /// Only if its events still go to this link (an orphan whose signaling node never came
    /// back); `None` removes it whoever owns it.
    pub only_if_link: Option<Recipient<FromMediaNode>>,
}

/// Send a peer's events to a new link (its participant resumed on another signaling node).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptPeer {
    pub participant_id: String,
    pub link: Recipient<FromMediaNode>,
}

/// Sent to the node when the room has no peers left. `adds_seen` lets the node tell whether an
/// `AddPeer` is still on its way here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomEmpty {
    pub room: String,
    pub adds_seen: u64,
}

/// A track a participant publishes (an m-line the browser sends on).
#[derive(Debug, Clone)]
struct TrackIn {
    mid: Mid,
    kind: MediaKind,
    last_keyframe_request: Option<Instant>,
}

/// Negotiation state of a track we send to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackOutState {
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
struct TrackOut {
    source_peer: PeerKey,
    source_mid: Mid,
    kind: MediaKind,
    state: TrackOutState,
    /// Publisher's payload type -> ours, for the last codec seen (mapped once, not per packet).
    pt_map: Option<(Pt, Pt)>,
    /// Subtracted from the publisher's extended sequence numbers (set by the first packet).
    seq_base: Option<u64>,
}

/// One participant: its `Rtc` and what it sends and receives.
struct Peer {
    key: PeerKey,
    participant_id: String,
    rtc: Rtc,
    /// Where this peer's events go (the signaling node that asked for it).
    link: Recipient<FromMediaNode>,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    /// Incoming SSRC -> publisher m-line.
    rx_mids: Vec<(Ssrc, Mid)>,
    /// Our offer awaiting the subscriber's answer (str0m allows one at a time).
    pending: Option<SdpPendingOffer>,
    /// That offer as sent, to send again if the peer is adopted by another link before
    /// the answer (the first copy may have died with the old link).
    pending_event: Option<MediaEvent>,
    /// Earliest time str0m wants a `Timeout` input.
    next_timeout: Instant,
    /// Has input or new output to drain.
    dirty: bool,
    /// DTLS is up and media can flow.
    connected: bool,
    /// When the peer was added (see `CONNECT_DEADLINE`).
    added_at: Instant,
    disconnected_since: Option<Instant>,
    /// The `Rtc` panicked or failed: remove at the next opportunity.
    dead: bool,
    /// NACKs received per outgoing track so far (str0m's stats are cumulative).
    nacks_seen: Vec<(Mid, u64)>,
}

/// What one peer's output means for the others.
// `Media` is the common case and the big one: boxing it would allocate per packet.
#[allow(clippy::large_enum_variant)]
enum Propagated {
    TrackOpened {
        from: PeerKey,
        mid: Mid,
        kind: MediaKind,
    },
    Rtp {
        from: PeerKey,
        mid: Mid,
        params: PayloadParams,
        packet: RtpPacket,
    },
    KeyframeRequest {
        source_peer: PeerKey,
        source_mid: Mid,
        req: KeyframeRequest,
    },
}

/// The SFU of one room.
pub struct RoomSfu {
    room: String,
    shared: SfuShared,
    node: Recipient<RoomEmpty>,
    peers: Vec<Peer>,
    next_key: PeerKey,
    /// This room's id in the router (its first peer key).
    room_id: u64,
    adds_seen: u64,
    /// The armed timer and when it fires.
    timer: Option<(Instant, SpawnHandle)>,
    /// Reused between drains to avoid an allocation per packet.
    propagate: Vec<Propagated>,
    /// Our own address as the router's target (set in `started`).
    datagrams: Option<Recipient<DatagramBatch>>,
    /// Track sets changed: some peer may need a server offer.
    renegotiate: bool,
    /// Packets forwarded while handling the current message (for the time-per-packet metric).
    forwarded: u64,
}

impl Actor for RoomSfu {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.datagrams = Some(ctx.address().recipient());
        tracing::info!(room = %self.room, "room sfu started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.shared
            .participants
            .fetch_sub(self.peers.len() as u64, Relaxed);
        for peer in &self.peers {
            metrics::TRACKS.sub(peer.tracks_in.len() as i64);
            let _ = self
                .shared
                .router
                .send(RouterUpdate::Remove { peer: peer.key });
        }
        tracing::info!(room = %self.room, "room sfu stopped");
    }
}

impl RoomSfu {
    pub fn new(
        room: String,
        shared: SfuShared,
        node: Recipient<RoomEmpty>,
        first_key: u64,
    ) -> Self {
        RoomSfu {
            room,
            shared,
            node,
            peers: Vec::new(),
            next_key: first_key,
            room_id: first_key,
            adds_seen: 0,
            timer: None,
            propagate: Vec::new(),
            datagrams: None,
            renegotiate: false,
            forwarded: 0,
        }
    }

    fn peer_index(&self, participant_id: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.participant_id == participant_id)
    }

    fn send_event(link: &Recipient<FromMediaNode>, event: MediaEvent) {
        link.do_send(FromMediaNode(event));
    }

    fn peer_error(&self, link: &Recipient<FromMediaNode>, pid: &str, code: ErrorCode, msg: String) {
        Self::send_event(
            link,
            MediaEvent::PeerError {
                room: self.room.clone(),
                participant_id: pid.to_string(),
                code,
                message: msg,
            },
        );
    }

    fn add_peer(&mut self, msg: AddPeer) {
        self.adds_seen += 1;
        if self.peer_index(&msg.participant_id).is_some() {
            let text = "participant already has a peer".to_string();
            self.peer_error(
                &msg.link,
                &msg.participant_id,
                ErrorCode::InvalidState,
                text,
            );
            return;
        }
        let offer = match SdpOffer::from_sdp_string(&msg.offer) {
            Ok(o) => o,
            Err(e) => {
                let text = format!("offer is not valid SDP: {e}");
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
                return;
            }
        };
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let now = Instant::now();
        let built = guarded(|| {
            let mut rtc = rtc_config().set_local_ice_credentials(creds).build(now);
            let candidate = Candidate::host(self.shared.advertised, "udp")
                .map_err(|e| format!("bad advertised address: {e}"))?;
            rtc.add_local_candidate(candidate);
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| format!("offer refused: {e}"))?;
            Ok::<_, String>((rtc, answer))
        });
        let (rtc, answer) = match built {
            Some(Ok(pair)) => pair,
            Some(Err(text)) => {
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
                return;
            }
            None => {
                let text = "offer could not be processed".to_string();
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
                return;
            }
        };
        let key = self.next_key;
        self.next_key += 1;

        // Everything the others already publish goes to the newcomer.
        let tracks_out = self
            .peers
            .iter()
            .flat_map(|p| {
                p.tracks_in.iter().map(|t| TrackOut {
                    source_peer: p.key,
                    source_mid: t.mid,
                    kind: t.kind,
                    state: TrackOutState::ToOpen,
                    pt_map: None,
                    seq_base: None,
                })
            })
            .collect();

        let _ = self.shared.router.send(RouterUpdate::Add {
            ufrag,
            route: Route {
                peer: key,
                room_id: self.room_id,
                // Invariant: `started` ran before any message is handled.
                room: self.datagrams.clone().expect("set in started"),
            },
        });
        Self::send_event(
            &msg.link,
            MediaEvent::Answer {
                room: self.room.clone(),
                participant_id: msg.participant_id.clone(),
                sdp: answer.to_sdp_string(),
            },
        );
        tracing::info!(room = %self.room, participant = %msg.participant_id, peer = key, "peer added");
        self.shared.participants.fetch_add(1, Relaxed);
        self.peers.push(Peer {
            key,
            participant_id: msg.participant_id,
            rtc,
            link: msg.link,
            tracks_in: Vec::new(),
            tracks_out,
            rx_mids: Vec::new(),
            pending: None,
            pending_event: None,
            next_timeout: now,
            dirty: true,
            connected: false,
            added_at: now,
            disconnected_since: None,
            dead: false,
            nacks_seen: Vec::new(),
        });
    }
}

impl RoomSfu {
    fn peer_answer(&mut self, msg: PeerAnswer) {
        let Some(i) = self.peer_index(&msg.participant_id) else {
            let text = "no media peer for this participant".to_string();
            self.peer_error(
                &msg.link,
                &msg.participant_id,
                ErrorCode::InvalidState,
                text,
            );
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(&msg.sdp) {
            Ok(a) => a,
            Err(e) => {
                // Keep the pending offer: the client may still send a valid answer.
                let text = format!("answer is not valid SDP: {e}");
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
                return;
            }
        };
        let peer = &mut self.peers[i];
        peer.pending_event = None;
        let Some(pending) = peer.pending.take() else {
            let text = "answer without a pending server offer".to_string();
            self.peer_error(
                &msg.link,
                &msg.participant_id,
                ErrorCode::InvalidState,
                text,
            );
            return;
        };
        match guarded(|| peer.rtc.sdp_api().accept_answer(pending, answer)) {
            Some(Ok(())) => {
                for t in &mut peer.tracks_out {
                    if let TrackOutState::Negotiating(m) = t.state {
                        t.state = TrackOutState::Open(m);
                        configure_send_stream(&mut peer.rtc, m, t.kind);
                    }
                }
                // str0m keeps a stopped m-line's send stream (its cache, its sender
                // reports) until the m-line is reused; drop it now that both sides agree.
                for t in &peer.tracks_out {
                    if let TrackOutState::NegotiatingStop(m) = t.state {
                        remove_send_stream(&mut peer.rtc, m);
                        peer.nacks_seen.retain(|(mid, _)| *mid != m);
                    }
                }
                peer.tracks_out
                    .retain(|t| !matches!(t.state, TrackOutState::NegotiatingStop(_)));
                peer.dirty = true;
            }
            Some(Err(e)) => {
                // str0m consumed the pending offer: this peer cannot be renegotiated any more.
                peer.dead = true;
                let text = format!("answer refused: {e}");
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
            }
            None => peer.dead = true,
        }
    }

    fn peer_candidate(&mut self, msg: PeerCandidate) {
        let Some(i) = self.peer_index(&msg.participant_id) else {
            return;
        };
        let line = msg.candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        match Candidate::from_sdp_string(line) {
            // mDNS names cannot be resolved here; peer-reflexive candidates cover them.
            Ok(c) if c.addr().ip().is_unspecified() => {}
            Ok(c) => {
                let peer = &mut self.peers[i];
                if guarded(|| peer.rtc.add_remote_candidate(c)).is_none() {
                    peer.dead = true;
                }
                peer.dirty = true;
            }
            Err(e) => {
                tracing::debug!(participant = %msg.participant_id, error = %e, "ignored remote candidate");
            }
        }
    }

    /// Remove a peer; its tracks get stopped at every subscriber in their next offer.
    fn remove_peer(&mut self, i: usize, state: Option<MediaConnectionState>) {
        let mut peer = self.peers.swap_remove(i);
        self.shared.participants.fetch_sub(1, Relaxed);
        metrics::TRACKS.sub(peer.tracks_in.len() as i64);
        let _ = self
            .shared
            .router
            .send(RouterUpdate::Remove { peer: peer.key });
        let _ = guarded(|| peer.rtc.disconnect());
        if let Some(state) = state {
            Self::send_event(
                &peer.link,
                MediaEvent::PeerState {
                    room: self.room.clone(),
                    participant_id: peer.participant_id.clone(),
                    state,
                },
            );
        }
        for other in &mut self.peers {
            other.tracks_out.retain_mut(|t| {
                if t.source_peer != peer.key {
                    return true;
                }
                match t.state {
                    TrackOutState::ToOpen => false,
                    TrackOutState::Open(m) => {
                        t.state = TrackOutState::ToStop(m);
                        true
                    }
                    // The pending answer settles these; `negotiate` stops them after.
                    _ => true,
                }
            });
            other.dirty = true;
        }
        tracing::info!(room = %self.room, participant = %peer.participant_id, "peer removed");
    }

    /// Feed time to every peer whose timeout has passed.
    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let now = Instant::now();
        for peer in &mut self.peers {
            if peer.next_timeout <= now {
                if guarded(|| peer.rtc.handle_input(Input::Timeout(now))).is_none() {
                    peer.dead = true;
                }
                peer.dirty = true;
            }
            let gone = match peer.disconnected_since {
                Some(since) => now.duration_since(since) > DISCONNECT_GRACE,
                None => !peer.connected && now.duration_since(peer.added_at) > CONNECT_DEADLINE,
            };
            if gone && !peer.dead {
                metrics::ICE_FAILURES.inc();
                peer.dead = true;
            }
        }
        self.drive(ctx);
    }

    /// Feed one datagram to its peer and drain that peer at once (str0m wants output drained
    /// after input); subscribers it wrote to are drained later, once per batch, by `drive`.
    fn on_datagram(&mut self, msg: DatagramIn) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.key == msg.peer) else {
            return;
        };
        let Ok(receive) =
            Receive::new(Protocol::Udp, msg.source, self.shared.advertised, &msg.data)
        else {
            return; // Not STUN/DTLS/RTP/RTCP: ignore.
        };
        match guarded(|| {
            peer.rtc
                .handle_input(Input::Receive(Instant::now(), receive))
        }) {
            Some(Ok(())) => {}
            // A bad packet from the network is that packet's problem, not the peer's.
            Some(Err(e)) => {
                tracing::debug!(peer = peer.key, error = %e, "input refused");
                metrics::DROPPED.with_label_values(&["rejected"]).inc();
            }
            None => peer.dead = true,
        }
        let mut propagate = std::mem::take(&mut self.propagate);
        if !peer.dead {
            poll_peer(peer, &self.shared, &self.room, &mut propagate);
        }
        for p in propagate.drain(..) {
            self.apply(p);
        }
        self.propagate = propagate;
    }

    /// Drain every dirty peer, propagate what came out, repeat until quiet; then re-arm the
    /// timer for the earliest timeout.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.renegotiate {
                self.renegotiate = false;
                self.negotiate_all();
            }
            let mut propagate = std::mem::take(&mut self.propagate);
            for peer in self.peers.iter_mut().filter(|p| p.dirty && !p.dead) {
                peer.dirty = false;
                poll_peer(peer, &self.shared, &self.room, &mut propagate);
            }
            let quiet = propagate.is_empty();
            for p in propagate.drain(..) {
                self.apply(p);
            }
            self.propagate = propagate;
            if let Some(i) = self.peers.iter().position(|p| p.dead) {
                self.remove_peer(i, Some(MediaConnectionState::Failed));
                self.renegotiate = true;
                continue;
            }
            if quiet && !self.renegotiate && !self.peers.iter().any(|p| p.dirty) {
                break;
            }
        }
        if self.peers.is_empty() {
            self.node.do_send(RoomEmpty {
                room: self.room.clone(),
                adds_seen: self.adds_seen,
            });
        }
        self.arm_timer(ctx);
    }

    /// Arm the actor timer for the earliest peer timeout, unless an earlier one is armed.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.peers.iter().map(|p| p.next_timeout).min() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |sfu, ctx| sfu.on_timer(ctx));
        self.timer = Some((at, handle));
    }

    /// Act on one peer's output for the others.
    fn apply(&mut self, p: Propagated) {
        match p {
            Propagated::TrackOpened { from, mid, kind } => {
                for other in self.peers.iter_mut().filter(|o| o.key != from) {
                    other.tracks_out.push(TrackOut {
                        source_peer: from,
                        source_mid: mid,
                        kind,
                        state: TrackOutState::ToOpen,
                        pt_map: None,
                        seq_base: None,
                    });
                }
                self.renegotiate = true;
            }
            Propagated::Rtp {
                from,
                mid,
                params,
                packet,
            } => {
                // Only to connected subscribers: before DTLS, str0m would queue the packets
                // unsent (without bound if it never connects) and burst them out stale.
                for sub in self
                    .peers
                    .iter_mut()
                    .filter(|o| o.key != from && o.connected && !o.dead)
                {
                    if forward(sub, from, mid, params, &packet) {
                        self.forwarded += 1;
                    }
                }
            }
            Propagated::KeyframeRequest {
                source_peer,
                source_mid,
                req,
            } => {
                let Some(publisher) = self.peers.iter_mut().find(|p| p.key == source_peer) else {
                    return;
                };
                let Some(track) = publisher.tracks_in.iter_mut().find(|t| t.mid == source_mid)
                else {
                    return;
                };
                let now = Instant::now();
                if track
                    .last_keyframe_request
                    .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
                {
                    return;
                }
                track.last_keyframe_request = Some(now);
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
        }
    }

    /// Send a server offer to every peer with track changes and no offer in flight.
    fn negotiate_all(&mut self) {
        let owners: Vec<(PeerKey, String)> = self
            .peers
            .iter()
            .map(|p| (p.key, p.participant_id.clone()))
            .collect();
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| !p.dead && p.pending.is_none())
        {
            let live = |k: PeerKey| owners.iter().any(|(o, _)| *o == k);
            // Tracks whose publisher left while their offer was in flight.
            for t in &mut peer.tracks_out {
                if let TrackOutState::Open(m) = t.state {
                    if !live(t.source_peer) {
                        t.state = TrackOutState::ToStop(m);
                    }
                }
            }
            let wanted = peer
                .tracks_out
                .iter()
                .any(|t| matches!(t.state, TrackOutState::ToOpen | TrackOutState::ToStop(_)));
            if !wanted {
                continue;
            }
            let tracks_out = &mut peer.tracks_out;
            let rtc = &mut peer.rtc;
            let applied = guarded(|| {
                let mut change = rtc.sdp_api();
                for t in tracks_out.iter_mut() {
                    match t.state {
                        TrackOutState::ToOpen => {
                            let stream_id = owners
                                .iter()
                                .find(|(k, _)| *k == t.source_peer)
                                .map(|(_, pid)| pid.clone());
                            let mid = change.add_media(
                                t.kind,
                                Direction::SendOnly,
                                stream_id,
                                None,
                                None,
                            );
                            t.state = TrackOutState::Negotiating(mid);
                        }
                        TrackOutState::ToStop(m) => {
                            change.stop_media(m);
                            t.state = TrackOutState::NegotiatingStop(m);
                        }
                        _ => {}
                    }
                }
                change.apply()
            });
            let Some(Some((offer, pending))) = applied else {
                if applied.is_none() {
                    peer.dead = true;
                }
                continue;
            };
            peer.pending = Some(pending);
            let tracks = peer
                .tracks_out
                .iter()
                .filter_map(|t| {
                    let mid = match t.state {
                        TrackOutState::Negotiating(m) | TrackOutState::Open(m) => m,
                        _ => return None,
                    };
                    let (_, owner) = owners.iter().find(|(k, _)| *k == t.source_peer)?;
                    Some(track_info(mid, owner, t.kind))
                })
                .collect();
            let event = MediaEvent::Offer {
                room: self.room.clone(),
                participant_id: peer.participant_id.clone(),
                sdp: offer.to_sdp_string(),
                tracks,
            };
            Self::send_event(&peer.link, event.clone());
            peer.pending_event = Some(event);
            peer.dirty = true;
        }
    }
}

fn track_info(mid: Mid, owner: &str, kind: MediaKind) -> TrackInfo {
    let (kind, source) = match kind {
        MediaKind::Audio => (TrackKind::Audio, TrackSource::Microphone),
        MediaKind::Video => (TrackKind::Video, TrackSource::Camera),
    };
    TrackInfo {
        mid: mid.to_string(),
        stream_id: owner.to_string(),
        participant_id: owner.to_string(),
        kind,
        source,
    }
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
    // The subscriber negotiated its own payload type numbers for the same codec.
    let pt = match track.pt_map {
        Some((pt_in, pt_out)) if pt_in == params.pt() => pt_out,
        _ => {
            let Some(pt_out) = sub.rtc.codec_config().match_params(params).map(|p| p.pt()) else {
                return false;
            };
            track.pt_map = Some((params.pt(), pt_out));
            pt_out
        }
    };
    // Keep the low 16 bits (what the browser sees) and start in rollover 0, whatever the
    // publisher's extended sequence number is by now.
    let seq_in = *pkt.seq_no;
    let base = *track.seq_base.get_or_insert(seq_in & !0xFFFF);
    // A packet from before the first one forwarded (reordered across a 16-bit wrap) cannot
    // be numbered in this stream.
    let Some(seq) = seq_in.checked_sub(base) else {
        return false;
    };
    let seq: SeqNo = seq.into();
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
        Some(true) => {
            metrics::FORWARDED.inc();
            true
        }
    }
}

/// Drain one peer's output until str0m asks for a timeout: send transmits, collect events.
fn poll_peer(peer: &mut Peer, shared: &SfuShared, room: &str, out: &mut Vec<Propagated>) {
    loop {
        let output = match guarded(|| peer.rtc.poll_output()) {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                tracing::info!(peer = peer.key, error = %e, "peer failed");
                metrics::DTLS_FAILURES.inc();
                peer.dead = true;
                return;
            }
            None => {
                peer.dead = true;
                return;
            }
        };
        match output {
            Output::Timeout(t) => {
                peer.next_timeout = t;
                return;
            }
            Output::Transmit(t) => match shared.socket.send_to(&t.contents, t.destination) {
                Ok(n) => {
                    metrics::UDP_TX_PACKETS.inc();
                    metrics::UDP_TX_BYTES.inc_by(n as u64);
                }
                Err(e) => {
                    tracing::debug!(peer = peer.key, error = %e, "udp send failed");
                    metrics::UDP_ERRORS.inc();
                    metrics::DROPPED.with_label_values(&["send_failed"]).inc();
                }
            },
            Output::Event(event) => on_event(peer, event, room, out),
        }
    }
}

fn on_event(peer: &mut Peer, event: Event, room: &str, out: &mut Vec<Propagated>) {
    let state_event = |peer: &Peer, state| {
        RoomSfu::send_event(
            &peer.link,
            MediaEvent::PeerState {
                room: room.to_string(),
                participant_id: peer.participant_id.clone(),
                state,
            },
        )
    };
    match event {
        Event::Connected => {
            peer.connected = true;
            state_event(peer, MediaConnectionState::Connected);
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected)
            if peer.disconnected_since.is_none() =>
        {
            peer.disconnected_since = Some(Instant::now());
            state_event(peer, MediaConnectionState::Disconnected);
        }
        Event::IceConnectionStateChange(
            IceConnectionState::Connected | IceConnectionState::Completed,
        ) if peer.disconnected_since.is_some() => {
            peer.disconnected_since = None;
            if peer.connected {
                state_event(peer, MediaConnectionState::Connected);
            }
        }
        // Our own send-only m-lines show up here too; publishers' are the ones we receive.
        Event::MediaAdded(added)
            if matches!(added.direction, Direction::RecvOnly | Direction::SendRecv)
                && !peer.tracks_in.iter().any(|t| t.mid == added.mid) =>
        {
            peer.tracks_in.push(TrackIn {
                mid: added.mid,
                kind: added.kind,
                last_keyframe_request: None,
            });
            metrics::TRACKS.inc();
            out.push(Propagated::TrackOpened {
                from: peer.key,
                mid: added.mid,
                kind: added.kind,
            });
        }
        Event::RtpPacket(mut packet) => {
            // Padding (bandwidth probes) carries nothing to forward.
            if packet.payload.is_empty() {
                return;
            }
            strip_stream_identity(&mut packet.header.ext_vals);
            let Some(mid) = rx_mid(peer, packet.header.ssrc) else {
                return;
            };
            let pt = packet.header.payload_type;
            let Some(params) = peer.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
                return;
            };
            out.push(Propagated::Rtp {
                from: peer.key,
                mid,
                params,
                packet,
            });
        }
        Event::KeyframeRequest(req) => {
            match req.kind {
                KeyframeRequestKind::Pli => metrics::PLIS.inc(),
                KeyframeRequestKind::Fir => metrics::FIRS.inc(),
            }
            // A subscriber asks for a keyframe on one of our outgoing tracks: find its source.
            if let Some(t) = peer
                .tracks_out
                .iter()
                .find(|t| matches!(t.state, TrackOutState::Open(m) if m == req.mid))
            {
                out.push(Propagated::KeyframeRequest {
                    source_peer: t.source_peer,
                    source_mid: t.source_mid,
                    req,
                });
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
            let clock = match peer.tracks_in.iter().find(|t| t.mid == stats.mid) {
                Some(t) if t.kind == MediaKind::Audio => 48_000.0,
                Some(_) => 90_000.0,
                None => return,
            };
            metrics::JITTER.observe(stats.jitter as f64 / clock);
        }
        Event::MediaEgressStats(stats) => {
            // Cumulative per outgoing track: count what is new since the last report.
            match peer.nacks_seen.iter_mut().find(|(m, _)| *m == stats.mid) {
                Some((_, seen)) => {
                    metrics::NACKS.inc_by(stats.nacks.saturating_sub(*seen));
                    *seen = stats.nacks;
                }
                None => {
                    metrics::NACKS.inc_by(stats.nacks);
                    peer.nacks_seen.push((stats.mid, stats.nacks));
                }
            }
        }
        _ => {}
    }
}

/// The publisher's m-line an incoming SSRC belongs to (cached: asked once per stream).
fn rx_mid(peer: &mut Peer, ssrc: Ssrc) -> Option<Mid> {
    if let Some((_, mid)) = peer.rx_mids.iter().find(|(s, _)| *s == ssrc) {
        return Some(*mid);
    }
    let mid = peer.rtc.direct_api().stream_rx(&ssrc)?.mid();
    peer.rx_mids.push((ssrc, mid));
    Some(mid)
}

/// Size an outgoing stream's retransmission cache (called once, when its m-line opens).
///
/// str0m's cache (`EvictingBuffer`) starts at 10 slots and grows only while its entries are
/// younger than `max_age`, up to `max_packets`; a slot is ≈ 430 bytes whatever the payload. So
/// the age bounds it by time, which at a low bitrate is fewer slots: 500 kbps video keeps
/// ≈ 35 instead of all 64 (seed: RSS per participant 1.83 -> 1.52 MiB), a 2.5 Mbps one still
/// would fill the 64 (≈ 230 ms of it).
///
/// Audio is written non-NACKable, so it is never cached nor resent: without the resend ratio
/// cap str0m also keeps no per-packet byte history for it.
fn configure_send_stream(rtc: &mut Rtc, mid: Mid, kind: MediaKind) {
    let configured = guarded(|| match rtc.direct_api().stream_tx_by_mid(mid, None) {
        Some(tx) => {
            match kind {
                MediaKind::Audio => tx.set_rtx_cache(SEND_BUFFER_AUDIO, RTX_MAX_AGE, None),
                MediaKind::Video => {
                    tx.set_rtx_cache(SEND_BUFFER_VIDEO, RTX_MAX_AGE, Some(RTX_RATIO_CAP))
                }
            }
            true
        }
        None => false,
    });
    if configured != Some(true) {
        tracing::debug!(%mid, "no send stream to size its retransmission cache");
    }
}

/// Drop the send stream of a stopped m-line.
fn remove_send_stream(rtc: &mut Rtc, mid: Mid) {
    let mut api = rtc.direct_api();
    if let Some(ssrc) = api.stream_tx_by_mid(mid, None).map(|tx| tx.ssrc()) {
        api.remove_stream_tx(ssrc);
    }
}

/// A publisher's stream identity (mid, rid) must not go to subscribers with its media:
/// str0m writes the subscriber's own mid only until the subscriber acknowledges the SSRC,
/// and a browser that then saw the publisher's mid would route the packets to whatever
/// m-line has that mid on its side. Other extensions (audio level...) pass through.
fn strip_stream_identity(ext: &mut ExtensionValues) {
    ext.mid = None;
    ext.rid = None;
    ext.rid_repair = None;
}

/// How every participant's `Rtc` is configured (also used by the benchmarks, so they
/// measure what runs).
pub fn rtc_config() -> RtcConfig {
    RtcConfig::new()
        // The browser always has a route to us, we need not probe it: ICE-lite.
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtp_mode(true)
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
        .set_send_buffer_audio(SEND_BUFFER_AUDIO)
        .set_stats_interval(Some(Duration::from_secs(2)))
}

/// Run a call into str0m, turning a panic (a broken invariant inside one `Rtc`) into `None`
/// so that one bad peer is dropped instead of taking down the room.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

impl Handler<DatagramBatch> for RoomSfu {
    type Result = ();
    /// Datagrams for our peers: the start of the data path.
    fn handle(&mut self, msg: DatagramBatch, ctx: &mut Context<Self>) {
        metrics::QUEUE_DEPTH.dec();
        let started = Instant::now();
        self.forwarded = 0;
        for datagram in msg.0 {
            self.on_datagram(datagram);
        }
        self.drive(ctx);
        if self.forwarded > 0 {
            let per_packet = started.elapsed().as_secs_f64() / self.forwarded as f64;
            metrics::FORWARD_SECONDS.observe(per_packet);
        }
    }
}

impl Handler<AddPeer> for RoomSfu {
    type Result = ();
    /// A participant offers its media: answer it, and renegotiate everybody.
    fn handle(&mut self, msg: AddPeer, ctx: &mut Context<Self>) {
        self.add_peer(msg);
        self.renegotiate = true;
        self.drive(ctx);
    }
}

impl Handler<PeerAnswer> for RoomSfu {
    type Result = ();
    /// A subscriber answered our offer.
    fn handle(&mut self, msg: PeerAnswer, ctx: &mut Context<Self>) {
        self.peer_answer(msg);
        self.renegotiate = true;
        self.drive(ctx);
    }
}

impl Handler<PeerCandidate> for RoomSfu {
    type Result = ();
    /// A trickled remote candidate.
    fn handle(&mut self, msg: PeerCandidate, ctx: &mut Context<Self>) {
        self.peer_candidate(msg);
        self.drive(ctx);
    }
}

impl Handler<RemovePeer> for RoomSfu {
    type Result = ();
    /// The participant left: drop its peer and its tracks everywhere.
    fn handle(&mut self, msg: RemovePeer, ctx: &mut Context<Self>) {
        if let Some(i) = self.peer_index(&msg.participant_id) {
            if msg
                .only_if_link
                .is_none_or(|link| self.peers[i].link == link)
            {
                self.remove_peer(i, None);
                self.renegotiate = true;
            }
        }
        self.drive(ctx);
    }
}

impl Handler<AdoptPeer> for RoomSfu {
    type Result = ();
    /// Route a peer's events over a new link, and repeat what the old link may have lost.
    fn handle(&mut self, msg: AdoptPeer, _: &mut Context<Self>) {
        let Some(i) = self.peer_index(&msg.participant_id) else {
            let text = "no media peer for this participant (it expired)".to_string();
            self.peer_error(
                &msg.link,
                &msg.participant_id,
                ErrorCode::InvalidState,
                text,
            );
            return;
        };
        let peer = &mut self.peers[i];
        peer.link = msg.link;
        if peer.connected {
            Self::send_event(
                &peer.link,
                MediaEvent::PeerState {
                    room: self.room.clone(),
                    participant_id: peer.participant_id.clone(),
                    state: MediaConnectionState::Connected,
                },
            );
        }
        if let Some(offer) = &peer.pending_event {
            Self::send_event(&peer.link, offer.clone());
        }
        tracing::info!(room = %self.room, participant = %msg.participant_id, "peer adopted by another link");
    }
}

/// Stop the room (the node saw it empty).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRoom;

impl Handler<StopRoom> for RoomSfu {
    type Result = ();
    fn handle(&mut self, _: StopRoom, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Number of peers, for the node's load report.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PeerCount;

impl Handler<PeerCount> for RoomSfu {
    type Result = usize;
    fn handle(&mut self, _: PeerCount, _: &mut Context<Self>) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
