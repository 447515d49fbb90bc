//! Membership of a room: join, resume, leave and the resume grace, as one node does them.
//! In cluster mode each of join, resume and leave has a Redis half first; each is one call
//! into `cluster.rs` (`join_in_cluster`, `resume_in_cluster`, `depart_in_cluster`).

use std::time::SystemTime;

use actix::prelude::*;
use conclave_common::link::MediaCommand;
use conclave_common::link_auth;
use conclave_common::presence::PresenceKind;
use conclave_common::protocol::{
    LeaveReason, MediaConnectionState, ParticipantInfo, ParticipantMedia, ServerMessage,
    PROTOCOL_VERSION,
};

use super::messages::{Evicted, JoinRoom, LeaveRoom, Outbound, ResumeRoom, SessionLost};
use super::roster::MediaPhase;
use super::{leave_reason_str, state_message, LocalMember, Room};
use crate::error::Refusal;
use crate::metrics;

/// A refusal answered at once.
pub(super) fn refuse(refusal: Refusal) -> AtomicResponse<Room, Result<(), Refusal>> {
    AtomicResponse::new(Box::pin(fut::ready(Err(refusal))))
}

/// A resume secret: 128 bits from the operating system's CSPRNG.
pub(super) fn new_secret() -> String {
    link_auth::random_hex(16)
}

/// Whether a presented resume secret is the member's, in time independent of where they
/// differ.
fn same_secret(held: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    held.as_bytes().ct_eq(presented.as_bytes()).into()
}

impl Handler<JoinRoom> for Room {
    type Result = AtomicResponse<Self, Result<(), Refusal>>;
    /// Add a member, send it `joined` with the roster, tell the others. In cluster mode the
    /// member is recorded in Redis first (which enforces the cap across instances).
    fn handle(&mut self, msg: JoinRoom, ctx: &mut Context<Self>) -> Self::Result {
        if ctx.state() != ActorState::Running {
            // Emptied and closing: the session asks the registry again.
            return refuse(Refusal::RoomClosing);
        }
        let secret = new_secret();
        if self.cluster.is_some() {
            // Redis finds the user's earlier seats, on any instance.
            return self.join_in_cluster(msg, secret);
        }
        // One seat per user: an earlier seat of this user gives way to the new join.
        for pid in self.roster.seats_of(&msg.participant.user_id) {
            self.displace(&pid, ctx);
        }
        let result = self
            .roster
            .join(&self.key.room, msg.participant.clone())
            .map(|_| self.admit(msg.participant, secret, msg.session, msg.evict));
        if result.is_err() {
            self.stop_if_unused(ctx);
        }
        AtomicResponse::new(Box::pin(fut::ready(result)))
    }
}

impl Handler<ResumeRoom> for Room {
    type Result = AtomicResponse<Self, Result<(), Refusal>>;
    /// Take a member back on a new WebSocket: from this instance's own members, or in
    /// cluster mode from another instance's (claimed in Redis).
    fn handle(&mut self, msg: ResumeRoom, ctx: &mut Context<Self>) -> Self::Result {
        if ctx.state() != ActorState::Running {
            return refuse(Refusal::RoomClosing);
        }
        if self
            .local
            .get(&msg.participant_id)
            .is_some_and(|local| local.departing)
        {
            return refuse(Refusal::NothingToResume);
        }
        // This instance holds the member and the client proves it: its secret and its user.
        let proven_here = self.local.get(&msg.participant_id).is_some_and(|local| {
            let same_user = self
                .roster
                .get(&msg.participant_id)
                .is_some_and(|m| m.info.user_id == msg.user_id);
            same_secret(&local.resume_secret, &msg.secret) && same_user
        });
        // Each resume rotates the secret: one seen on the wire resumes once at most.
        let next_secret = new_secret();
        if self.cluster.is_some() {
            // Claimed in Redis even when held here: it may have resumed on another
            // instance in between (and come back here, with a newer secret than ours).
            return self.resume_in_cluster(msg, next_secret, proven_here);
        }
        if !proven_here {
            self.stop_if_unused(ctx);
            return refuse(Refusal::NothingToResume);
        }
        let ResumeRoom {
            participant_id,
            secret,
            session,
            evict,
            ..
        } = msg;
        self.reattach(&participant_id, session, evict, &secret, next_secret);
        AtomicResponse::new(Box::pin(fut::ready(Ok(()))))
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

impl Room {
    /// Add a member of this instance and tell everyone.
    pub(super) fn admit(
        &mut self,
        info: ParticipantInfo,
        secret: String,
        session: Recipient<Outbound>,
        evict: Recipient<Evicted>,
    ) {
        let pid = info.participant_id.clone();
        session.do_send(Outbound(self.joined(&pid, secret.clone(), false)));
        if let Some(speaking) = &self.speaking {
            session.do_send(Outbound(speaking.clone()));
        }
        metrics::PARTICIPANTS.inc();
        self.local
            .insert(pid.clone(), LocalMember::connected(session, evict, secret));
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

    /// A seat whose user joined again (one seat per user): its connection, if here, is
    /// closed (4002) and it leaves with reason `replaced`. Its record is already gone from
    /// Redis (the join removed it); a member of another instance is told through the bus.
    pub(super) fn displace(&mut self, pid: &str, ctx: &mut Context<Self>) {
        match self.local.get_mut(pid) {
            Some(local) => {
                local.session = None;
                if let Some(evict) = local.evict.take() {
                    evict.do_send(Evicted::Replaced);
                }
                tracing::info!(room = %self.media_id, participant = %pid, "replaced by a new join of its user");
                self.forget(pid, LeaveReason::Replaced, true, ctx);
            }
            None => {
                // Another instance's member: leave it here, and tell its instance.
                self.forget(pid, LeaveReason::Replaced, false, ctx);
                if let Some(cluster) = &self.cluster {
                    cluster.publish(ServerMessage::ParticipantLeft {
                        participant_id: pid.to_string(),
                        reason: LeaveReason::Replaced,
                    });
                }
            }
        }
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

    /// The `joined` a member gets at join (`resumed: false`) or resume.
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
            // Fresh credentials every time: a resumed or rejoined client builds its next peer
            // connection (or ICE restart) with them.
            ice_servers: self
                .deps
                .turn
                .as_ref()
                .map(|turn| turn.ice_servers(pid, SystemTime::now()))
                .unwrap_or_default(),
        }
    }

    /// Hand a (re)connected session the member it resumes; the media node repeats what the
    /// browser may have missed while it was away.
    /// `secret` is the resume secret the client proved; `next_secret` replaces it.
    pub(super) fn reattach(
        &mut self,
        pid: &str,
        session: Recipient<Outbound>,
        evict: Recipient<Evicted>,
        secret: &str,
        next_secret: String,
    ) {
        let Some(local) = self.local.get_mut(pid) else {
            return;
        };
        if let (Some(_), Some(old)) = (local.session.replace(session), local.evict.replace(evict)) {
            old.do_send(Evicted::ResumedElsewhere);
        }
        local.drops += 1; // Cancels a pending grace timer.
        local.resume_secret = next_secret.clone();
        let joined = self.joined(pid, next_secret, true);
        self.send_to(pid, joined);
        if let Some(speaking) = self.speaking.clone() {
            self.send_to(pid, speaking);
        }
        match self.roster.get(pid).map(|m| m.media) {
            Some(MediaPhase::NoPeer) => self.send_to(
                pid,
                ServerMessage::MediaState {
                    state: MediaConnectionState::Failed,
                },
            ),
            Some(_) => {
                self.adopting.insert(pid.to_string());
                // The peer's verifier is still the proven secret's; it moves to the new one.
                let adopt_key = link_auth::adopt_key(secret, &self.media_id, pid);
                self.media(MediaCommand::AdoptPeer {
                    room: self.media_id.clone(),
                    participant_id: pid.to_string(),
                    next_adopt_verifier: link_auth::adopt_verifier(&self.adopt_key(pid)),
                    adopt_key,
                });
            }
            None => {}
        }
        tracing::info!(room = %self.media_id, participant = %pid, "resumed");
    }

    /// Set a member's microphone, camera and/or deafened state and tell everyone if it
    /// changed.
    pub(super) fn set_state(
        &mut self,
        pid: &str,
        audio: Option<bool>,
        video: Option<bool>,
        deafened: Option<bool>,
    ) {
        let Some(info) = self.roster.set_state(pid, audio, video, deafened) else {
            return;
        };
        self.presence(PresenceKind::State, &info, None);
        self.mirror_state(pid);
        self.announce("", state_message(&info));
    }

    /// Set the media connection state the others see of a member of ours, and tell them if
    /// it changed. Not the member itself: it has `mediaState`. No presence event: presence
    /// is about who is in the room and their microphone and camera.
    pub(super) fn set_media_state(&mut self, pid: &str, media: ParticipantMedia) {
        let Some(info) = self.roster.set_media_state(pid, media) else {
            return;
        };
        tracing::debug!(room = %self.media_id, participant = %pid, ?media, "media state");
        self.mirror_state(pid);
        self.announce(pid, state_message(&info));
    }

    /// A member of this instance is gone for good: drop it everywhere and tell everyone.
    fn depart(&mut self, pid: &str, reason: LeaveReason, ctx: &mut Context<Self>) {
        if self.cluster.is_some() {
            return self.depart_in_cluster(pid, reason, ctx);
        }
        self.forget(pid, reason, true, ctx)
    }

    /// Remove a member here; `ours` when this instance owned it (then the peer goes and the
    /// leave is announced and published as presence).
    pub(super) fn forget(
        &mut self,
        pid: &str,
        reason: LeaveReason,
        ours: bool,
        ctx: &mut Context<Self>,
    ) {
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

    /// With no member of its own the actor has nothing to do (others mirror the room).
    /// Checked again after the message being handled has answered: a handler that refuses
    /// with an `AtomicResponse` and stops at once would drop its answer (actix does not run a
    /// stopping actor's pending response), and the session would only see the room vanish.
    pub(super) fn stop_if_unused(&mut self, ctx: &mut Context<Self>) {
        if self.local.is_empty() {
            ctx.notify(StopIfUnused);
        }
    }
}

/// Room -> itself: stop if it still has no member of its own.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StopIfUnused;

impl Handler<StopIfUnused> for Room {
    type Result = ();
    fn handle(&mut self, _: StopIfUnused, ctx: &mut Context<Self>) {
        if self.local.is_empty() {
            ctx.stop();
        }
    }
}
