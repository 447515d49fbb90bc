//! The room actor: owns membership and each member's audio/video state, relays negotiation
//! between sessions and the room's media node, and broadcasts room events.
//!
//! Members whose WebSocket drops stay in the room for the resume grace period, keeping their
//! media peer; `resume` on a new WebSocket takes them back without any event for the others.
//!
//! In cluster mode a room may have members on several signaling instances. Each instance
//! runs its own room actor for the members connected to it; Redis holds the members of the
//! room (the cap is enforced there) and carries room events between the instances (see
//! `room_bus`). Each instance writes only its own members' records, re-asserts them every few
//! seconds (so a Redis restart loses nothing) and reconciles its mirror of the others.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::cluster::now_ms;
use conclave_common::cluster::{ClusterError, ClusterStore, ROOM_TTL_MS};
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent};
use conclave_common::presence::{PresenceEvent, PresenceKind};
use conclave_common::protocol::{
    ErrorCode, LeaveReason, MediaConnectionState, ParticipantInfo, ServerMessage, PROTOCOL_VERSION,
};
use conclave_common::room_state::{Left, MemberRecord};
use tokio::sync::{mpsc, oneshot};

use crate::media_link::MediaLink;
use crate::messages::*;
use crate::metrics;
use crate::presence::{PresenceSink, Publish};
use crate::registry::Registry;
use crate::room_bus::{BusMessage, RegisterBusRoom, RoomBus, UnregisterBusRoom};
use crate::roster::{MediaPhase, RemoteChange, Roster};

/// Refusal message of a room that is closing (the session retries at the registry).
pub const ROOM_CLOSING: &str = "room is closing";
/// How often a cluster room re-asserts its records and reconciles its mirror of the others.
const ASSERT_INTERVAL: Duration = Duration::from_secs(3);
/// Longest wait for one Redis operation before the room treats Redis as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before trying again to move a room whose media node died.
const MOVE_RETRY: Duration = Duration::from_secs(1);

/// What every room needs, shared by all of them.
#[derive(Clone)]
pub struct RoomDeps {
    pub registry: Addr<Registry>,
    pub cap: usize,
    pub heartbeat_interval_ms: u64,
    /// How long a member whose WebSocket dropped may `resume`.
    pub resume_grace: Duration,
    /// This signaling instance (in presence events and, in cluster mode, member records).
    pub instance: String,
    pub presence: Option<Addr<PresenceSink>>,
    pub cluster: Option<RoomCluster>,
}

/// Cluster mode: the shared store and the event bus between signaling instances.
#[derive(Clone)]
pub struct RoomCluster {
    pub store: ClusterStore,
    pub bus: Addr<RoomBus>,
}

type RedisOp = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Redis operations of one room, run one after the other so that its records and events
/// keep the order in which the room made them.
struct RedisQueue(mpsc::UnboundedSender<RedisOp>);

impl RedisQueue {
    fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<RedisOp>();
        actix::spawn(async move {
            while let Some(op) = rx.recv().await {
                op.await;
            }
        });
        RedisQueue(tx)
    }

    /// Queue `op` whose result nobody waits for; a failure is logged (the next assertion
    /// repairs the records).
    fn push(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<(), ClusterError>> + Send + 'static,
    ) {
        let _ = self.0.send(Box::pin(async move {
            match tokio::time::timeout(REDIS_TIMEOUT, metrics::timed(what, op)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed"),
                Err(_) => tracing::warn!("{what} timed out"),
            }
        }));
    }

    /// Queue `op`; the receiver gets its result (or a timeout error).
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, ClusterError>> + Send + 'static,
    ) -> oneshot::Receiver<Result<T, ClusterError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send(Box::pin(async move {
            let result = tokio::time::timeout(REDIS_TIMEOUT, metrics::timed(what, op))
                .await
                .unwrap_or(Err(ClusterError::Timeout));
            let _ = tx.send(result);
        }));
        rx
    }
}

/// Outcome of a queued Redis operation (the queue only stops with the process).
async fn settled<T>(rx: oneshot::Receiver<Result<T, ClusterError>>) -> Result<T, ClusterError> {
    rx.await.unwrap_or(Err(ClusterError::Timeout))
}

/// A Redis failure as the client sees it.
fn unavailable(e: ClusterError) -> Refusal {
    match e {
        ClusterError::RoomFull => Refusal {
            code: ErrorCode::RoomFull,
            message: "the room is full".into(),
        },
        e => Refusal {
            code: ErrorCode::Unavailable,
            message: format!("cluster state unavailable: {e}; try again shortly"),
        },
    }
}

/// A member connected to this instance (or waiting to resume here).
struct LocalMember {
    resume_secret: String,
    /// `None` while its WebSocket is gone (waiting for `resume`).
    session: Option<Recipient<Outbound>>,
    /// Closes that session when another one resumes the member.
    evict: Option<Recipient<Evicted>>,
    /// Bumped at each drop, so an old grace timer knows it is stale.
    drops: u64,
    /// Leaving (its record is being removed from Redis): not resumable, not re-asserted.
    departing: bool,
}

pub struct Room {
    key: RoomKey,
    /// `community/room`, the room's id on the media node and in Redis.
    media_id: String,
    deps: RoomDeps,
    roster: Roster,
    local: HashMap<String, LocalMember>,
    /// Members whose peer we asked the media node to hand to us (`adoptPeer`).
    adopting: HashSet<String>,
    link: Addr<MediaLink>,
    /// Cluster mode: the media node the room is on.
    media_node: Option<String>,
    redis: Option<RedisQueue>,
    /// A move to another media node is in progress (offers wait for it).
    moving: bool,
}

impl Room {
    pub fn new(
        key: RoomKey,
        link: Addr<MediaLink>,
        media_node: Option<String>,
        deps: RoomDeps,
    ) -> Self {
        // In cluster mode the cap is enforced on the room's members in Redis.
        let cap = if deps.cluster.is_some() {
            usize::MAX
        } else {
            deps.cap
        };
        Room {
            media_id: key.id(),
            key,
            roster: Roster::new(cap),
            local: HashMap::new(),
            adopting: HashSet::new(),
            link,
            media_node,
            redis: None,
            moving: false,
            deps,
        }
    }

    fn send_to(&self, participant_id: &str, msg: ServerMessage) {
        if let Some(session) = self
            .local
            .get(participant_id)
            .and_then(|m| m.session.as_ref())
        {
            session.do_send(Outbound(msg));
        }
    }

    /// Send to every connected member of this instance.
    fn broadcast(&self, msg: ServerMessage) {
        self.broadcast_except("", msg);
    }

    fn broadcast_except(&self, except: &str, msg: ServerMessage) {
        for (pid, local) in &self.local {
            if let (Some(session), true) = (&local.session, pid != except) {
                session.do_send(Outbound(msg.clone()));
            }
        }
    }

    /// Broadcast here (not to `except`), and to the other instances in cluster mode.
    fn announce(&self, except: &str, msg: ServerMessage) {
        self.broadcast_except(except, msg.clone());
        if let (Some(cluster), Some(redis)) = (&self.deps.cluster, &self.redis) {
            let payload = BusMessage {
                from: self.deps.instance.clone(),
                message: msg,
            }
            .encode();
            let (store, room) = (cluster.store.clone(), self.media_id.clone());
            redis.push("publish", async move {
                store.publish_room_event(&room, &payload).await
            });
        }
    }

    fn presence(&self, kind: PresenceKind, info: &ParticipantInfo, reason: Option<LeaveReason>) {
        let Some(sink) = &self.deps.presence else {
            return;
        };
        sink.do_send(Publish(PresenceEvent {
            kind,
            community: self.key.community.clone(),
            room: self.key.room.clone(),
            participant_id: info.participant_id.clone(),
            user_id: info.user_id.clone(),
            name: info.name.clone(),
            audio: info.audio,
            video: info.video,
            reason: reason.map(leave_reason_str),
            at_ms: now_ms(),
            node: self.deps.instance.clone(),
        }));
    }

    fn media(&self, cmd: MediaCommand) {
        self.link.do_send(ToMedia(cmd));
    }

    fn record(&self, participant_id: &str) -> Option<MemberRecord> {
        let member = self.roster.get(participant_id)?;
        let local = self.local.get(participant_id).filter(|l| !l.departing)?;
        Some(MemberRecord {
            participant: member.info.clone(),
            signaling: self.deps.instance.clone(),
            resume_secret: local.resume_secret.clone(),
        })
    }

    fn on_request(&mut self, pid: String, request: ParticipantRequest) {
        let Some(member) = self.roster.get(&pid) else {
            return; // Left already; the session will learn.
        };
        let has_peer = member.media != MediaPhase::NoPeer;
        match request {
            ParticipantRequest::Offer(sdp) => match self.roster.begin_offer(&pid) {
                Ok(()) => self.media(MediaCommand::AddPeer {
                    room: self.media_id.clone(),
                    participant_id: pid,
                    offer: sdp,
                }),
                Err(r) => self.send_to(&pid, ServerMessage::error(r.code, r.message)),
            },
            ParticipantRequest::Answer(sdp) if has_peer => self.media(MediaCommand::Answer {
                room: self.media_id.clone(),
                participant_id: pid,
                sdp,
            }),
            ParticipantRequest::Answer(_) => self.send_to(
                &pid,
                ServerMessage::error(ErrorCode::InvalidState, "answer without a server offer"),
            ),
            ParticipantRequest::Candidate(candidate) if has_peer => {
                self.media(MediaCommand::Candidate {
                    room: self.media_id.clone(),
                    participant_id: pid,
                    candidate,
                })
            }
            // Before the offer a candidate has no peer to go to; ICE does not need it.
            ParticipantRequest::Candidate(_) => {}
            ParticipantRequest::SetAudio(on) => self.set_state(&pid, Some(on), None),
            ParticipantRequest::SetVideo(on) => self.set_state(&pid, None, Some(on)),
        }
    }

    fn set_state(&mut self, pid: &str, audio: Option<bool>, video: Option<bool>) {
        let Some(info) = self.roster.set_state(pid, audio, video) else {
            return;
        };
        self.presence(PresenceKind::State, &info, None);
        if let (Some(cluster), Some(redis), Some(record)) =
            (&self.deps.cluster, &self.redis, self.record(pid))
        {
            let (store, room) = (cluster.store.clone(), self.media_id.clone());
            redis.push("update", async move {
                store.update_member(&room, &record).await.map(|_| ())
            });
        }
        self.announce(
            "",
            ServerMessage::ParticipantState {
                participant_id: info.participant_id,
                audio: info.audio,
                video: info.video,
            },
        );
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Answer {
                participant_id,
                sdp,
                ..
            } => {
                self.roster.set_media(&participant_id, MediaPhase::Active);
                self.send_to(&participant_id, ServerMessage::Answer { sdp });
            }
            MediaEvent::Offer {
                participant_id,
                sdp,
                tracks,
                ..
            } => {
                self.adopting.remove(&participant_id);
                self.send_to(&participant_id, ServerMessage::ServerOffer { sdp, tracks })
            }
            MediaEvent::PeerState {
                participant_id,
                state,
                ..
            } => {
                self.adopting.remove(&participant_id);
                if state == MediaConnectionState::Failed {
                    // The peer is gone on the media node: the client may offer again.
                    self.roster.set_media(&participant_id, MediaPhase::NoPeer);
                }
                self.send_to(&participant_id, ServerMessage::MediaState { state });
            }
            MediaEvent::PeerError {
                participant_id,
                code,
                message,
                ..
            } => {
                if self.adopting.remove(&participant_id) {
                    // The resumed member's peer expired: it starts a new one.
                    self.roster.set_media(&participant_id, MediaPhase::NoPeer);
                    return self.send_to(
                        &participant_id,
                        ServerMessage::MediaState {
                            state: MediaConnectionState::Failed,
                        },
                    );
                }
                if self.roster.get(&participant_id).map(|m| m.media) == Some(MediaPhase::Offered) {
                    self.roster.set_media(&participant_id, MediaPhase::NoPeer);
                }
                self.send_to(&participant_id, ServerMessage::Error { code, message });
            }
            MediaEvent::Hello { .. } => {}
        }
    }

    /// Add a member of this instance and tell everyone.
    fn admit(
        &mut self,
        info: ParticipantInfo,
        secret: String,
        session: Recipient<Outbound>,
        evict: Recipient<Evicted>,
    ) {
        let pid = info.participant_id.clone();
        session.do_send(Outbound(self.joined(&pid, secret.clone(), false)));
        metrics::PARTICIPANTS.inc();
        self.local.insert(
            pid.clone(),
            LocalMember {
                resume_secret: secret,
                session: Some(session),
                evict: Some(evict),
                drops: 0,
                departing: false,
            },
        );
        self.presence(PresenceKind::Joined, &info, None);
        // The joiner learns the roster from `joined`, not from an event about itself.
        self.announce(
            &pid,
            ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        tracing::info!(room = %self.media_id, participant = %pid, user = %info.user_id, members = self.roster.len(), "joined");
    }

    /// The member's WebSocket is gone: keep it (and its media) for the resume grace period.
    fn connection_lost(&mut self, pid: &str, ctx: &mut Context<Self>) {
        let Some(local) = self.local.get_mut(pid) else {
            return;
        };
        local.session = None;
        local.drops += 1;
        let drops = local.drops;
        let pid = pid.to_string();
        tracing::info!(room = %self.media_id, participant = %pid, "connection lost; waiting for resume");
        ctx.run_later(self.deps.resume_grace, move |room, ctx| {
            let expired = room
                .local
                .get(&pid)
                .is_some_and(|m| m.session.is_none() && m.drops == drops);
            if expired {
                room.depart(&pid, LeaveReason::Disconnected, ctx);
            }
        });
    }

    fn joined(&self, pid: &str, resume_token_secret: String, resumed: bool) -> ServerMessage {
        ServerMessage::Joined {
            protocol_version: PROTOCOL_VERSION,
            participant_id: pid.to_string(),
            room: self.key.room.clone(),
            community: self.key.community.clone(),
            participants: self.roster.others(pid),
            heartbeat_interval_ms: self.deps.heartbeat_interval_ms,
            resume_token: format!("{pid}.{resume_token_secret}"),
            resume_grace_ms: self.deps.resume_grace.as_millis() as u64,
            resumed,
        }
    }

    /// Hand a (re)connected session the member it resumes; the media node repeats what the
    /// browser may have missed while it was away.
    fn reattach(&mut self, pid: &str, session: Recipient<Outbound>, evict: Recipient<Evicted>) {
        let Some(local) = self.local.get_mut(pid) else {
            return;
        };
        if let (Some(_), Some(old)) = (local.session.replace(session), local.evict.replace(evict)) {
            old.do_send(Evicted { reconnect: false });
        }
        local.drops += 1; // Cancels a pending grace timer.
        let secret = local.resume_secret.clone();
        let joined = self.joined(pid, secret, true);
        self.send_to(pid, joined);
        match self.roster.get(pid).map(|m| m.media) {
            Some(MediaPhase::NoPeer) => self.send_to(
                pid,
                ServerMessage::MediaState {
                    state: MediaConnectionState::Failed,
                },
            ),
            Some(_) => {
                self.adopting.insert(pid.to_string());
                self.media(MediaCommand::AdoptPeer {
                    room: self.media_id.clone(),
                    participant_id: pid.to_string(),
                });
            }
            None => {}
        }
        tracing::info!(room = %self.media_id, participant = %pid, "resumed");
    }

    /// A member of this instance is gone for good: drop it everywhere and tell everyone.
    fn depart(&mut self, pid: &str, reason: LeaveReason, ctx: &mut Context<Self>) {
        let (Some(cluster), Some(redis)) = (&self.deps.cluster, &self.redis) else {
            return self.forget(pid, reason, true, ctx);
        };
        match self.local.get_mut(pid) {
            Some(local) if !local.departing => local.departing = true,
            _ => return, // Not ours, or leaving already.
        }
        let (store, room, community, me, id) = (
            cluster.store.clone(),
            self.media_id.clone(),
            self.key.community.clone(),
            self.deps.instance.clone(),
            pid.to_string(),
        );
        let leave = move || {
            let (store, room, community, me, id) = (
                store.clone(),
                room.clone(),
                community.clone(),
                me.clone(),
                id.clone(),
            );
            async move { store.leave_member(&room, &community, &id, Some(&me)).await }
        };
        let removed = redis.run("leave", leave());
        let pid = pid.to_string();
        ctx.spawn(settled(removed).into_actor(self).map(move |removed, room, ctx| {
            match removed {
                // Resumed on another instance meanwhile: it is theirs now, not gone.
                Ok(Left::OwnedBy(_)) => room.hand_over(&pid, ctx),
                // Absent: Redis lost it (restart); still ours to remove everywhere.
                Ok(Left::Removed(_) | Left::Absent) => room.forget(&pid, reason, true, ctx),
                Err(e) => {
                    tracing::warn!(room = %room.media_id, participant = %pid, error = %e, "member record not removed; retrying in the background");
                    // The room may close now (no assertion would then drop the record), so
                    // the removal is retried on its own, a bounded number of times.
                    let participant = pid.clone();
                    actix::spawn(async move {
                        for wait_secs in [1, 2, 4, 8, 16, 32] {
                            tokio::time::sleep(Duration::from_secs(wait_secs)).await;
                            if leave().await.is_ok() {
                                return;
                            }
                        }
                        tracing::warn!(%participant, "member record left in Redis");
                    });
                    room.forget(&pid, reason, true, ctx)
                }
            }
        }));
    }

    /// Remove a member here; `ours` when this instance owned it (then the peer goes and the
    /// leave is announced and published as presence).
    fn forget(&mut self, pid: &str, reason: LeaveReason, ours: bool, ctx: &mut Context<Self>) {
        if self.local.remove(pid).is_some() {
            metrics::PARTICIPANTS.dec();
        }
        self.adopting.remove(pid);
        let Some(member) = self.roster.leave(pid) else {
            return self.stop_if_unused(ctx);
        };
        if ours {
            if member.media != MediaPhase::NoPeer {
                self.media(MediaCommand::RemovePeer {
                    room: self.media_id.clone(),
                    participant_id: pid.to_string(),
                });
            }
            let kind = match reason {
                LeaveReason::Left => PresenceKind::Left,
                _ => PresenceKind::Disconnected,
            };
            metrics::LEAVES
                .with_label_values(&[&leave_reason_str(reason)])
                .inc();
            self.presence(kind, &member.info, Some(reason));
            self.announce(
                "",
                ServerMessage::ParticipantLeft {
                    participant_id: pid.to_string(),
                    reason,
                },
            );
        } else {
            self.broadcast(ServerMessage::ParticipantLeft {
                participant_id: pid.to_string(),
                reason,
            });
        }
        tracing::info!(room = %self.media_id, participant = %pid, ?reason, members = self.roster.len(), "left");
        self.stop_if_unused(ctx);
    }

    /// A mirrored member is gone (its instance said so, or Redis no longer has it).
    fn drop_mirror(&mut self, pid: &str, reason: LeaveReason) {
        if self.roster.get(pid).is_some_and(|m| m.remote) && self.roster.leave(pid).is_some() {
            self.broadcast(ServerMessage::ParticipantLeft {
                participant_id: pid.to_string(),
                reason,
            });
        }
    }

    /// The member resumed on another instance: mirror it from now on.
    fn hand_over(&mut self, pid: &str, ctx: &mut Context<Self>) {
        if self.local.remove(pid).is_some() {
            metrics::PARTICIPANTS.dec();
        }
        self.adopting.remove(pid);
        self.roster.set_remote(pid, true);
        self.roster.set_media(pid, MediaPhase::NoPeer);
        tracing::info!(room = %self.media_id, participant = %pid, "member resumed elsewhere");
        self.stop_if_unused(ctx);
    }

    /// With no member of its own the actor has nothing to do (others mirror the room).
    fn stop_if_unused(&mut self, ctx: &mut Context<Self>) {
        if self.local.is_empty() {
            ctx.stop();
        }
    }

    /// Bring the mirror of the other instances' members in line with Redis.
    fn reconcile(&mut self, all: Vec<MemberRecord>) {
        let mut present = HashSet::new();
        for record in all {
            present.insert(record.participant.participant_id.clone());
            if self.local.contains_key(&record.participant.participant_id) {
                continue;
            }
            let info = record.participant;
            match self.roster.upsert_remote(info.clone()) {
                RemoteChange::Added => {
                    self.broadcast(ServerMessage::ParticipantJoined { participant: info })
                }
                RemoteChange::StateChanged => self.broadcast(ServerMessage::ParticipantState {
                    participant_id: info.participant_id,
                    audio: info.audio,
                    video: info.video,
                }),
                RemoteChange::Unchanged => {}
            }
        }
        for pid in self.roster.remote_ids() {
            if !present.contains(&pid) {
                self.drop_mirror(&pid, LeaveReason::Disconnected);
            }
        }
    }

    /// Cluster mode: re-assert our records and reconcile the rest.
    fn assert_state(&mut self, ctx: &mut Context<Self>) {
        let (Some(cluster), Some(redis), Some(node)) =
            (&self.deps.cluster, &self.redis, self.media_node.clone())
        else {
            return;
        };
        let mine: Vec<MemberRecord> = self.local.keys().filter_map(|p| self.record(p)).collect();
        if mine.is_empty() {
            // Nothing of ours to keep alive (asserting would recreate the room's keys).
            return;
        }
        let (store, room, community, me) = (
            cluster.store.clone(),
            self.media_id.clone(),
            self.key.community.clone(),
            self.deps.instance.clone(),
        );
        let asserted = redis.run("assert", async move {
            store
                .assert_room(&room, &community, &node, &me, &mine, ROOM_TTL_MS)
                .await
        });
        ctx.spawn(settled(asserted).into_actor(self).map(|asserted, room, ctx| {
            match asserted {
                Ok((node, all)) => {
                    room.reconcile(all);
                    if room.media_node.as_deref() != Some(node.as_str()) && !room.moving {
                        // Another instance moved the room (its link saw our node die).
                        tracing::info!(room = %room.media_id, %node, "room moved by another instance");
                        room.move_media(None, ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %room.media_id, error = %e, "room state not asserted")
                }
            }
        }));
    }

    /// Cluster mode: the media node is gone; place the room again and have every member
    /// start a new peer there.
    fn move_media(&mut self, dead_node: Option<String>, ctx: &mut Context<Self>) {
        self.moving = true;
        self.roster.reset_media();
        let moved = self.deps.registry.send(MoveRoom {
            key: self.key.clone(),
            dead_node,
        });
        ctx.wait(moved.into_actor(self).map(|moved, room, ctx| {
            match moved {
                Ok(Ok((node, link))) => {
                    room.link.do_send(UnregisterRoom {
                        key: room.media_id.clone(),
                    });
                    room.link = link;
                    room.register_link(ctx);
                    tracing::info!(room = %room.media_id, %node, "room moved to a new media node");
                    room.media_node = Some(node);
                    room.moving = false;
                    metrics::FAILOVERS.inc();
                    room.media_failed_for_all();
                }
                Ok(Err(r)) => {
                    tracing::warn!(room = %room.media_id, error = %r.message, "room move failed; retrying");
                    ctx.run_later(MOVE_RETRY, |room, ctx| room.move_media(None, ctx));
                }
                Err(_) => {} // The registry is gone: the node is stopping.
            }
        }));
    }

    /// Every member must start a new peer connection.
    fn media_failed_for_all(&mut self) {
        self.adopting.clear();
        self.broadcast(ServerMessage::MediaState {
            state: MediaConnectionState::Failed,
        });
    }

    fn register_link(&self, ctx: &mut Context<Self>) {
        self.link.do_send(RegisterRoom {
            key: self.media_id.clone(),
            room: ctx.address().recipient(),
            lost: ctx.address().recipient(),
        });
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::ROOMS.inc();
        self.register_link(ctx);
        if let Some(cluster) = &self.deps.cluster {
            self.redis = Some(RedisQueue::start());
            cluster.bus.do_send(RegisterBusRoom {
                room: self.media_id.clone(),
                addr: ctx.address(),
            });
            ctx.run_interval(ASSERT_INTERVAL, |room, ctx| room.assert_state(ctx));
        }
        tracing::info!(room = %self.media_id, node = ?self.media_node, "room opened");
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        metrics::ROOMS.dec();
        metrics::PARTICIPANTS.sub(self.local.len() as i64);
        self.link.do_send(UnregisterRoom {
            key: self.media_id.clone(),
        });
        if let Some(cluster) = &self.deps.cluster {
            cluster.bus.do_send(UnregisterBusRoom {
                room: self.media_id.clone(),
                addr: ctx.address(),
            });
        }
        self.deps.registry.do_send(RoomClosed {
            key: self.key.clone(),
            addr: ctx.address(),
        });
        tracing::info!(room = %self.media_id, "room closed");
    }
}

fn closing() -> Refusal {
    Refusal {
        code: ErrorCode::Unavailable,
        message: ROOM_CLOSING.into(),
    }
}

fn new_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Handler<JoinRoom> for Room {
    type Result = AtomicResponse<Self, Result<(), Refusal>>;
    /// Add a member, send it `joined` with the roster, tell the others. In cluster mode the
    /// member is recorded in Redis first (which enforces the cap across instances).
    fn handle(&mut self, msg: JoinRoom, ctx: &mut Context<Self>) -> Self::Result {
        if ctx.state() != ActorState::Running {
            // Emptied and closing: the session asks the registry again.
            return AtomicResponse::new(Box::pin(fut::ready(Err(closing()))));
        }
        let secret = new_secret();
        let (Some(cluster), Some(redis)) = (&self.deps.cluster, &self.redis) else {
            let result = self
                .roster
                .join(&self.key.room, msg.participant.clone())
                .map(|_| self.admit(msg.participant, secret, msg.session, msg.evict));
            if result.is_err() {
                self.stop_if_unused(ctx);
            }
            return AtomicResponse::new(Box::pin(fut::ready(result)));
        };
        let record = MemberRecord {
            participant: msg.participant.clone(),
            signaling: self.deps.instance.clone(),
            resume_secret: secret.clone(),
        };
        let (store, room, community, cap) = (
            cluster.store.clone(),
            self.media_id.clone(),
            self.key.community.clone(),
            self.deps.cap,
        );
        let recorded = redis.run("join", async move {
            store
                .join_member(&room, &community, &record, cap, ROOM_TTL_MS)
                .await
        });
        let JoinRoom {
            participant,
            session,
            evict,
        } = msg;
        AtomicResponse::new(Box::pin(settled(recorded).into_actor(self).map(
            move |recorded, room, ctx| {
                let all = match recorded {
                    Ok(all) => all,
                    Err(e) => {
                        // Refused: a room opened for this join closes again.
                        room.stop_if_unused(ctx);
                        return Err(unavailable(e));
                    }
                };
                let others = all
                    .into_iter()
                    .filter(|r| r.participant.participant_id != participant.participant_id)
                    .collect::<Vec<_>>();
                // Mirror the others first so that `joined` lists them (members connected
                // here hear of any they had missed).
                let mut present = others.clone();
                present.push(MemberRecord {
                    participant: participant.clone(),
                    signaling: room.deps.instance.clone(),
                    resume_secret: secret.clone(),
                });
                room.roster.join(&room.key.room, participant.clone())?;
                room.reconcile(present);
                room.admit(participant, secret, session, evict);
                Ok(())
            },
        )))
    }
}

impl Handler<ResumeRoom> for Room {
    type Result = AtomicResponse<Self, Result<(), Refusal>>;
    /// Take a member back on a new WebSocket: from this instance's own members, or in
    /// cluster mode from another instance's (claimed in Redis).
    fn handle(&mut self, msg: ResumeRoom, ctx: &mut Context<Self>) -> Self::Result {
        let failed = || Refusal {
            code: ErrorCode::ResumeFailed,
            message: "nothing to resume (unknown or expired); join again".into(),
        };
        if ctx.state() != ActorState::Running {
            return AtomicResponse::new(Box::pin(fut::ready(Err(closing()))));
        }
        if let Some(local) = self.local.get(&msg.participant_id) {
            if local.departing || local.resume_secret != msg.secret {
                return AtomicResponse::new(Box::pin(fut::ready(Err(failed()))));
            }
            if self.deps.cluster.is_none() {
                self.reattach(&msg.participant_id, msg.session, msg.evict);
                return AtomicResponse::new(Box::pin(fut::ready(Ok(()))));
            }
            // Cluster mode: claimed in Redis as well, since it may have resumed on another
            // instance in between (and come back here).
        }
        let (Some(cluster), Some(redis)) = (&self.deps.cluster, &self.redis) else {
            self.stop_if_unused(ctx);
            return AtomicResponse::new(Box::pin(fut::ready(Err(failed()))));
        };
        let (store, room, me) = (
            cluster.store.clone(),
            self.media_id.clone(),
            self.deps.instance.clone(),
        );
        let (pid, secret) = (msg.participant_id.clone(), msg.secret.clone());
        let claimed = redis.run("claim", async move {
            store.claim_member(&room, &pid, &secret, &me).await
        });
        AtomicResponse::new(Box::pin(settled(claimed).into_actor(self).map(
            move |claimed, room, ctx| match claimed {
                Ok(Some((mine, all))) => {
                    let pid = msg.participant_id;
                    if !room.local.contains_key(&pid) {
                        // Taken over from another instance.
                        room.roster.upsert_remote(mine.participant.clone());
                        room.roster.set_remote(&pid, false);
                        // Its peer lives on; the media node confirms when it hands it over.
                        room.roster.set_media(&pid, MediaPhase::Active);
                        metrics::PARTICIPANTS.inc();
                        room.local.insert(
                            pid.clone(),
                            LocalMember {
                                resume_secret: mine.resume_secret,
                                session: None,
                                evict: None,
                                drops: 0,
                                departing: false,
                            },
                        );
                    }
                    room.reconcile(all);
                    room.reattach(&pid, msg.session, msg.evict);
                    Ok(())
                }
                // Held here (secret checked above) but Redis cannot confirm it: Redis is down
                // or lost its data. The member is still ours; the next assertion rewrites it.
                Ok(None) | Err(_) if room.local.contains_key(&msg.participant_id) => {
                    room.reattach(&msg.participant_id, msg.session, msg.evict);
                    Ok(())
                }
                Ok(None) => {
                    room.stop_if_unused(ctx);
                    Err(failed())
                }
                Err(e) => {
                    room.stop_if_unused(ctx);
                    Err(unavailable(e))
                }
            },
        )))
    }
}

impl Handler<FromParticipant> for Room {
    type Result = ();
    /// Negotiation and mute requests of a member.
    fn handle(&mut self, msg: FromParticipant, _: &mut Context<Self>) {
        if self.moving && matches!(msg.request, ParticipantRequest::Offer(_)) {
            let refusal = "the room is moving to another media node; offer again shortly";
            return self.send_to(
                &msg.participant_id,
                ServerMessage::error(ErrorCode::Unavailable, refusal),
            );
        }
        self.on_request(msg.participant_id, msg.request);
    }
}

impl Handler<LeaveRoom> for Room {
    type Result = ();
    /// A member left (`leave`, or silent past the heartbeat timeout).
    fn handle(&mut self, msg: LeaveRoom, ctx: &mut Context<Self>) {
        let Some(local) = self.local.get_mut(&msg.participant_id) else {
            return;
        };
        if local.session.as_ref() != Some(&msg.session) {
            return; // An old session, already replaced by a resume.
        }
        // No more messages to a session that is leaving.
        local.session = None;
        self.depart(&msg.participant_id, msg.reason, ctx);
    }
}

impl Handler<SessionLost> for Room {
    type Result = ();
    /// The member's WebSocket dropped: keep it (and its media) for the resume grace period.
    fn handle(&mut self, msg: SessionLost, ctx: &mut Context<Self>) {
        let Some(local) = self.local.get_mut(&msg.participant_id) else {
            return;
        };
        if local.session.as_ref() != Some(&msg.session) {
            return; // An old session, already replaced by a resume.
        }
        self.connection_lost(&msg.participant_id, ctx);
    }
}

impl Handler<RemoteRoomEvent> for Room {
    type Result = ();
    /// An event of another signaling instance about this room.
    fn handle(&mut self, msg: RemoteRoomEvent, ctx: &mut Context<Self>) {
        match msg.message {
            ServerMessage::ParticipantJoined { participant } => {
                if self.roster.upsert_remote(participant.clone()) == RemoteChange::Added {
                    self.broadcast(ServerMessage::ParticipantJoined { participant });
                }
            }
            ServerMessage::ParticipantState {
                participant_id,
                audio,
                video,
            } => {
                let Some(member) = self.roster.get(&participant_id) else {
                    return;
                };
                let info = ParticipantInfo {
                    audio,
                    video,
                    ..member.info.clone()
                };
                if self.roster.upsert_remote(info) == RemoteChange::StateChanged {
                    self.broadcast(ServerMessage::ParticipantState {
                        participant_id,
                        audio,
                        video,
                    });
                }
            }
            ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            } => {
                let connected_here = self
                    .local
                    .get(&participant_id)
                    .is_some_and(|m| m.session.is_some());
                if !connected_here {
                    // A mirrored member, or one of ours that resumed elsewhere and left there
                    // (or that a survivor cleaned up): it is gone.
                    self.forget(&participant_id, reason, false, ctx);
                }
            }
            other => {
                tracing::debug!(room = %self.media_id, from = %msg.from, ?other, "bus message ignored")
            }
        }
    }
}

impl Handler<FromMediaNode> for Room {
    type Result = ();
    /// An event of the media node about one of our members.
    fn handle(&mut self, msg: FromMediaNode, _: &mut Context<Self>) {
        self.on_media_event(msg.0);
    }
}

impl Handler<MediaLinkLost> for Room {
    type Result = ();
    /// The media node went away: every peer is gone. In cluster mode the room moves to a
    /// live node at once; otherwise it waits for the link to come back.
    fn handle(&mut self, lost: MediaLinkLost, ctx: &mut Context<Self>) {
        if lost.0 != self.link {
            return; // From the link of a node the room has left.
        }
        if self.deps.cluster.is_some() {
            if !self.moving {
                self.move_media(self.media_node.clone(), ctx);
            }
            return;
        }
        self.roster.reset_media();
        self.media_failed_for_all();
    }
}

/// This node drains: ask every member's browser to reconnect (it resumes elsewhere).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Room {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        for local in self.local.values() {
            if let Some(evict) = &local.evict {
                evict.do_send(Evicted { reconnect: true });
            }
        }
    }
}

/// Resync (room bus reconnected: events may have been missed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

impl Handler<Resync> for Room {
    type Result = ();
    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.assert_state(ctx);
    }
}

/// The members and their states (the query API).
#[derive(Message)]
#[rtype(result = "Vec<ParticipantInfo>")]
pub struct Snapshot;

impl Handler<Snapshot> for Room {
    type Result = Vec<ParticipantInfo>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Vec<ParticipantInfo> {
        self.roster.others("")
    }
}

/// Used by tests and health: members of the room (mirrored ones included).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct MemberCount;

impl Handler<MemberCount> for Room {
    type Result = usize;
    fn handle(&mut self, _: MemberCount, _: &mut Context<Self>) -> usize {
        self.roster.len()
    }
}

fn leave_reason_str(reason: LeaveReason) -> String {
    match reason {
        LeaveReason::Left => "left",
        LeaveReason::Disconnected => "disconnected",
        LeaveReason::Timeout => "timeout",
        LeaveReason::MediaFailed => "mediaFailed",
    }
    .to_string()
}
