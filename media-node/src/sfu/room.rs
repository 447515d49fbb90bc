//! `RoomSfu`: the actor of one room, owning the `Rtc` of every participant in it — its
//! lifecycle, its message handlers, the drive loop and the one timer.
//!
//! Because every `Rtc` of a room lives in this one actor, forwarding is a plain function call
//! (`forward.rs`): no per-packet message between actors. Each `Rtc` is sans-IO: after every
//! input we drain `poll_output` until it returns a timeout (`drive`), and one actor timer fires
//! at the earliest timeout of all peers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use conclave_common::caps::{CapExceeded, ParticipantCaps};
use conclave_common::link::{FromMediaNode, MediaEvent};
use conclave_common::link_auth;
use conclave_common::load;
use conclave_common::protocol::{ErrorCode, MediaConnectionState};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::forward;
use super::ice;
use super::messages::{
    AddPeer, AdoptPeer, PeerAnswer, PeerCandidate, PeerCount, RemovePeer, RoomEmpty, SetTrackViews,
    StopRoom,
};
use super::negotiate;
use super::peer::{Peer, PeerControl, PeerRtc, Propagated, TrackOutState};
use super::rtc::{answer_offer, guarded};
use super::simulcast;
use super::speech::Speakers;
use super::udp::{
    DatagramBatch, DatagramIn, PeerKey, Route, RouterHandle, RouterUpdate, UdpSender,
};
use crate::load::ThreadLoad;
use crate::metrics::{self, ThreadMetrics};

/// A peer whose ICE stays disconnected this long is dropped (the browser has gone).
const DISCONNECT_GRACE: Duration = Duration::from_secs(15);
/// A peer whose media has not connected this long after it was added is dropped: with no
/// usable candidate ICE never reports a failure, and the peer would hold its room's media.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Room timers fire on a shared grid of this period: the timers of all rooms of a thread that
/// fall in one tick fire in one wakeup of the thread, instead of one each (str0m's timeouts
/// are for RTCP, NACK and ICE keep-alives: a few milliseconds later changes nothing).
const TIMER_TICK: Duration = Duration::from_millis(5);
/// How often each subscriber's simulcast layer is chosen again (layers come and go, views
/// change; a new subscriber waits up to this long for its first layer to be picked), and who
/// speaks is looked at (the signaling nodes hear of changes at most this often).
const REVIEW_INTERVAL: Duration = Duration::from_millis(250);

/// The first tick of the grid at or after `at`.
fn timer_tick_after(at: Instant) -> Instant {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    let epoch = *EPOCH;
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = TIMER_TICK.as_nanos();
    let ticks = since.div_ceil(tick);
    // Nanoseconds since process start fit in u64 for 584 years.
    epoch + Duration::from_nanos((ticks * tick) as u64)
}

/// What the rooms of one room thread share: the thread's socket, router, advertised address
/// and load.
#[derive(Clone)]
pub struct SfuShared {
    /// The thread's media socket, send half.
    pub socket: UdpSender,
    pub router: RouterHandle,
    /// The address browsers send to (our only ICE candidate: the thread's socket); also the
    /// `destination` of every `Receive`, since str0m drops STUN not addressed to a local
    /// candidate.
    pub advertised: SocketAddr,
    /// Peers on this node, over all rooms: the true count its cluster heartbeat reports.
    pub participants: Arc<std::sync::atomic::AtomicU64>,
    /// Caps on what one participant creates (the signaling node checks them first; the
    /// link is a second way in).
    pub caps: ParticipantCaps,
    /// The thread's load: rooms count what they forward and reserve new participants' cost.
    pub load: Arc<ThreadLoad>,
    /// The thread's own metrics (forwarded packets).
    pub counters: ThreadMetrics,
    /// Estimate each subscriber's bandwidth and fit its layers to it (`--bwe`).
    pub bwe: bool,
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
    /// Who speaks, as last told to the signaling nodes.
    speakers: Speakers<PeerKey>,
    /// Packets forwarded so far (a running total; `drive` hands the new ones to the thread's
    /// counters, once per message rather than per packet).
    forwarded: u64,
    /// How much of `forwarded` the thread's counters have.
    forwarded_counted: u64,
}

impl Actor for RoomSfu {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.datagrams = Some(ctx.address().recipient());
        ctx.run_interval(REVIEW_INTERVAL, |sfu, ctx| {
            let now = Instant::now();
            let changed = forward::review_layers(&mut sfu.peers, sfu.speakers.dominant, now);
            sfu.tell_publishers(changed);
            sfu.review_speakers(now);
            sfu.drive(ctx);
        });
        tracing::info!(room = %self.room, "room sfu started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.shared
            .participants
            .fetch_sub(self.peers.len() as u64, Relaxed);
        metrics::PARTICIPANTS.sub(self.peers.len() as i64);
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
            speakers: Speakers::default(),
            forwarded: 0,
            forwarded_counted: 0,
        }
    }

    fn peer_index(&self, participant_id: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.participant_id == participant_id)
    }

    /// The participant's peer, if `link` owns it. A command about another link's peer is
    /// refused as if the peer did not exist (a link cannot steer or probe others' peers).
    fn owned_peer_index(
        &self,
        participant_id: &str,
        link: &Recipient<FromMediaNode>,
    ) -> Option<usize> {
        let i = self.peer_index(participant_id)?;
        if self.peers[i].link != *link {
            tracing::warn!(room = %self.room, participant = %participant_id, "command from a link that does not own the peer refused");
            metrics::LINK_COMMANDS_REFUSED.inc();
            return None;
        }
        Some(i)
    }

    fn peer_error(&self, link: &Recipient<FromMediaNode>, pid: &str, code: ErrorCode, msg: String) {
        link.do_send(FromMediaNode(MediaEvent::PeerError {
            room: self.room.clone(),
            participant_id: pid.to_string(),
            code,
            message: msg,
        }));
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
        // Before parsing: an over-long text or thousands of m-lines cost nothing more.
        if let Err(e) = self.shared.caps.check_offer(&msg.offer) {
            return self.refuse_cap(&msg.link, &msg.participant_id, e);
        }
        let offer = match SdpOffer::from_sdp_string(&msg.offer) {
            Ok(o) => o,
            Err(e) => {
                // The parser's own text names internals (heap offsets): logged, not sent.
                tracing::info!(participant = %msg.participant_id, error = %e, "offer is not valid SDP");
                let text = "offer is not valid SDP".to_string();
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
                return;
            }
        };
        // The m-lines the client sends on are the tracks it publishes.
        let publishing: Vec<_> = offer
            .media_lines
            .iter()
            .filter(|m| !m.disabled)
            .filter(|m| matches!(m.direction(), Direction::SendOnly | Direction::SendRecv))
            .map(|m| m.typ == MediaKind::Audio.into())
            .collect();
        if let Err(e) = self.shared.caps.check_tracks(publishing.len()) {
            return self.refuse_cap(&msg.link, &msg.participant_id, e);
        }
        // Until its media shows in the thread's measured rate, the newcomer costs what the
        // load model says (conclave_common::load).
        let audio = publishing.iter().filter(|is_audio| **is_audio).count();
        let newcomer = load::publisher_fpps(audio as u64, (publishing.len() - audio) as u64);
        let others: Vec<u64> = self.peers.iter().map(Peer::publishes_fpps).collect();
        self.shared.load.reserve(load::join_cost(newcomer, &others));
        let creds = ice::secure_ice_creds();
        let (ufrag, password) = (creds.ufrag.clone(), creds.pass.clone());
        let now = Instant::now();
        let (rtc, answer) =
            match answer_offer(offer, creds, self.shared.advertised, self.shared.bwe, now) {
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
        let tracks_out = negotiate::tracks_for_newcomer(&self.peers);

        let _ = self.shared.router.send(RouterUpdate::Add {
            ufrag: ufrag.clone(),
            password,
            route: Route {
                peer: key,
                room_id: self.room_id,
                // Invariant: `started` ran before any message is handled.
                room: self.datagrams.clone().expect("set in started"),
            },
        });
        msg.link.do_send(FromMediaNode(MediaEvent::Answer {
            room: self.room.clone(),
            participant_id: msg.participant_id.clone(),
            sdp: answer.to_sdp_string(),
        }));
        tracing::info!(room = %self.room, participant = %msg.participant_id, peer = key, "peer added");
        // Its signaling node may have had no peer here, so no word of who speaks: it has now.
        if self.speakers != Speakers::default() {
            msg.link.do_send(FromMediaNode(self.speakers_event()));
        }
        self.shared.participants.fetch_add(1, Relaxed);
        metrics::PARTICIPANTS.inc();
        self.peers.push(Peer::new(
            key,
            msg.participant_id,
            PeerRtc {
                rtc,
                local_ufrag: ufrag,
            },
            PeerControl {
                link: msg.link,
                adopt_verifier: msg.adopt_verifier,
                sources: msg.sources,
            },
            tracks_out,
            now,
            self.shared.caps.max_tracks,
        ));
    }

    /// Refuse a command that goes over a cap (the peer, if any, is left as it was).
    fn refuse_cap(&self, link: &Recipient<FromMediaNode>, pid: &str, e: CapExceeded) {
        tracing::info!(room = %self.room, participant = %pid, error = %e, "refused: over a cap");
        self.peer_error(link, pid, e.code(), e.to_string());
    }

    fn peer_answer(&mut self, msg: PeerAnswer) {
        let Some(i) = self.owned_peer_index(&msg.participant_id, &msg.link) else {
            let text = "no media peer for this participant".to_string();
            self.peer_error(
                &msg.link,
                &msg.participant_id,
                ErrorCode::InvalidState,
                text,
            );
            return;
        };
        if let Err(e) = self.shared.caps.check_answer(&msg.sdp) {
            // Like an answer that does not parse: the offer stays pending.
            return self.refuse_cap(&msg.link, &msg.participant_id, e);
        }
        let answer = match SdpAnswer::from_sdp_string(&msg.sdp) {
            Ok(a) => a,
            Err(e) => {
                // Keep the pending offer: the client may still send a valid answer.
                tracing::info!(participant = %msg.participant_id, error = %e, "answer is not valid SDP");
                let text = "answer is not valid SDP".to_string();
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
        match negotiate::accept_answer(peer, pending, answer) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                // str0m consumed the pending offer: this peer cannot be renegotiated any more.
                peer.dead = true;
                let text = format!("answer refused: {e}");
                self.peer_error(&msg.link, &msg.participant_id, ErrorCode::InvalidSdp, text);
            }
            None => peer.dead = true,
        }
    }

    /// Remove a peer; its tracks get stopped at every subscriber in their next offer.
    fn remove_peer(&mut self, i: usize, state: Option<MediaConnectionState>) {
        let mut peer = self.peers.swap_remove(i);
        self.shared.participants.fetch_sub(1, Relaxed);
        metrics::PARTICIPANTS.dec();
        metrics::TRACKS.sub(peer.tracks_in.len() as i64);
        let _ = self
            .shared
            .router
            .send(RouterUpdate::Remove { peer: peer.key });
        let _ = guarded(|| peer.rtc.disconnect());
        if let Some(state) = state {
            peer.send_state(&self.room, state);
        }
        negotiate::publisher_left(&mut self.peers, peer.key);
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
            let failure = match peer.disconnected_since {
                Some(since) if now.duration_since(since) > DISCONNECT_GRACE => {
                    Some("ICE lost the peer: no STUN from it for 15 s")
                }
                None if !peer.connected && now.duration_since(peer.added_at) > CONNECT_DEADLINE => {
                    Some(peer.connect_failure())
                }
                _ => None,
            };
            if let Some(reason) = failure.filter(|_| !peer.dead) {
                tracing::info!(room = %self.room, participant = %peer.participant_id, reason, "media failed, peer dropped");
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
        // Answers to our consent checks stop here; nominations start them.
        if ice::looks_like_stun(&msg.data)
            && peer.on_stun(msg.source, &msg.data, &self.shared.socket)
        {
            return;
        }
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
            peer.poll_output(&self.shared.socket, &self.room, &mut propagate);
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
                negotiate::offer_changes(&self.room, &mut self.peers);
            }
            let mut propagate = std::mem::take(&mut self.propagate);
            for peer in self.peers.iter_mut().filter(|p| p.dirty && !p.dead) {
                peer.dirty = false;
                peer.poll_output(&self.shared.socket, &self.room, &mut propagate);
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
        if self.forwarded > self.forwarded_counted {
            let new = self.forwarded - self.forwarded_counted;
            self.forwarded_counted = self.forwarded;
            self.shared.load.forwarded.fetch_add(new, Relaxed);
            self.shared.counters.forwarded.inc_by(new);
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
        let at = timer_tick_after(at);
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

    /// Dynacast: tell each publisher which simulcast layers of a track to send now.
    fn tell_publishers(&self, changed: Vec<(PeerKey, Mid)>) {
        for (key, mid) in changed {
            let Some(publisher) = self.peers.iter().find(|p| p.key == key) else {
                continue;
            };
            let Some(track) = publisher.tracks_in.iter().find(|t| t.mid == mid) else {
                continue;
            };
            let active = track
                .layers
                .iter()
                .filter(|l| !l.paused)
                .filter_map(|l| l.key.map(|rid| rid.to_string()))
                .collect();
            metrics::DYNACAST_UPDATES.inc();
            publisher
                .link
                .do_send(FromMediaNode(MediaEvent::PublishLayers {
                    room: self.room.clone(),
                    participant_id: publisher.participant_id.clone(),
                    mid: mid.to_string(),
                    active,
                }));
        }
    }

    /// Who speaks now; on a change, tell every signaling node with a peer in the room.
    fn review_speakers(&mut self, now: Instant) {
        let publishers: Vec<(PeerKey, bool, f32)> = self
            .peers
            .iter_mut()
            .filter(|p| p.tracks_in.iter().any(|t| t.kind == MediaKind::Audio))
            .map(|p| (p.key, p.speech.settle(now), p.speech.loudness()))
            .collect();
        let next = self.speakers.next(&publishers);
        if next == self.speakers {
            return;
        }
        self.speakers = next;
        let event = self.speakers_event();
        let mut told: Vec<&Recipient<FromMediaNode>> = Vec::new();
        for peer in &self.peers {
            if !told.contains(&&peer.link) {
                told.push(&peer.link);
                peer.link.do_send(FromMediaNode(event.clone()));
            }
        }
    }

    /// Who speaks, as the signaling nodes hear it.
    fn speakers_event(&self) -> MediaEvent {
        let pid = |key: PeerKey| {
            self.peers
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.participant_id.clone())
        };
        MediaEvent::Speaking {
            room: self.room.clone(),
            participants: self
                .speakers
                .speaking
                .iter()
                .filter_map(|k| pid(*k))
                .collect(),
            dominant: self.speakers.dominant.and_then(pid),
        }
    }

    /// Act on one peer's output for the others.
    fn apply(&mut self, p: Propagated) {
        match p {
            Propagated::TrackOpened { from, track } => {
                negotiate::track_opened(&mut self.peers, from, &track);
                self.renegotiate = true;
            }
            Propagated::Rtp {
                from,
                mid,
                layer,
                vp8,
                params,
                packet,
            } => {
                let mut incoming = forward::Incoming {
                    mid,
                    layer,
                    vp8,
                    params,
                    packet,
                    descriptor: None,
                };
                self.forwarded += forward::fan_out(&mut self.peers, from, &mut incoming);
            }
            Propagated::KeyframeRequest {
                source_peer,
                source_mid,
                layer,
                kind,
            } => forward::request_keyframe(
                &mut self.peers,
                source_peer,
                source_mid,
                layer,
                kind,
                Instant::now(),
            ),
        }
    }
}

impl Handler<DatagramBatch> for RoomSfu {
    type Result = ();
    /// Datagrams for our peers: the start of the data path.
    fn handle(&mut self, msg: DatagramBatch, ctx: &mut Context<Self>) {
        metrics::QUEUE_DEPTH.dec();
        let started = Instant::now();
        let forwarded_before = self.forwarded;
        for datagram in msg.0 {
            self.on_datagram(datagram);
        }
        self.drive(ctx);
        let forwarded = self.forwarded - forwarded_before;
        if forwarded > 0 {
            let per_packet = started.elapsed().as_secs_f64() / forwarded as f64;
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
        if let Some(i) = self.owned_peer_index(&msg.participant_id, &msg.link) {
            let peer = &mut self.peers[i];
            match self.shared.caps.check_candidate(peer.remote_candidates) {
                Ok(()) => {
                    peer.remote_candidates += 1;
                    peer.add_remote_candidate(&msg.candidate);
                }
                Err(e) => self.refuse_cap(&self.peers[i].link, &msg.participant_id, e),
            }
        }
        self.drive(ctx);
    }
}

impl Handler<SetTrackViews> for RoomSfu {
    type Result = ();
    /// The subscriber's layout changed: each named video gets the layer that fits it.
    fn handle(&mut self, msg: SetTrackViews, ctx: &mut Context<Self>) {
        let Some(i) = self.owned_peer_index(&msg.participant_id, &msg.link) else {
            return;
        };
        let peer = &mut self.peers[i];
        for (mid, view) in &msg.views {
            let shown = peer.tracks_out.iter_mut().find(|t| match t.state {
                TrackOutState::Open(m) | TrackOutState::Negotiating(m) => &*m == mid.as_str(),
                _ => false,
            });
            if let Some(track) = shown {
                track.view = simulcast::View::from(*view);
            }
        }
        let changed =
            forward::review_layers(&mut self.peers, self.speakers.dominant, Instant::now());
        self.tell_publishers(changed);
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
        // A wrong key gets the same answer as a missing peer: a prober learns nothing.
        let adoptable = self.peer_index(&msg.participant_id).filter(|&i| {
            let proven = link_auth::adopt_key_matches(&msg.adopt_key, &self.peers[i].adopt_verifier);
            if !proven {
                tracing::warn!(room = %self.room, participant = %msg.participant_id, "adoptPeer with a wrong key refused");
                metrics::LINK_COMMANDS_REFUSED.inc();
            }
            proven
        });
        let Some(i) = adoptable else {
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
        peer.adopt_verifier = msg.next_adopt_verifier;
        if peer.connected {
            peer.send_state(&self.room, MediaConnectionState::Connected);
        }
        if let Some(offer) = &peer.pending_event {
            peer.send_event(offer.clone());
        }
        tracing::info!(room = %self.room, participant = %msg.participant_id, "peer adopted by another link");
    }
}

impl Handler<StopRoom> for RoomSfu {
    type Result = ();
    /// The node saw the room empty: stop (`stopped` releases what is left).
    fn handle(&mut self, _: StopRoom, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<PeerCount> for RoomSfu {
    type Result = usize;
    /// How many peers the room holds.
    fn handle(&mut self, _: PeerCount, _: &mut Context<Self>) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_land_on_the_shared_grid_never_early() {
        let now = Instant::now();
        let mut ticks = Vec::new();
        for offset_us in [0u64, 1, 1_000, 4_999, 5_000, 5_001, 12_345] {
            let at = now + Duration::from_micros(offset_us);
            let tick = timer_tick_after(at);
            assert!(tick >= at, "never before the timeout");
            assert!(tick - at < TIMER_TICK, "at most one tick late");
            ticks.push(tick);
        }
        // Timeouts within one tick share a wakeup.
        let a = timer_tick_after(now + Duration::from_micros(100));
        let b = timer_tick_after(now + Duration::from_micros(200));
        let on_grid = timer_tick_after(a);
        assert_eq!(on_grid, a, "a tick maps to itself");
        assert!(a == b || b - a == TIMER_TICK);
        assert!(ticks.windows(2).all(|w| w[0] <= w[1]));
    }
}
