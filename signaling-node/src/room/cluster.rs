//! What a room does in cluster mode, through its `ClusterMirror` (`mirror.rs`): the Redis
//! halves of join, resume and leave; the load a member's new peer adds to the media node;
//! re-asserting its records every few seconds and reconciling its mirror of the other
//! instances' members; events from those instances (the room bus); and noticing that another
//! instance moved the room to a new media node.
//!
//! Every method here is a no-op on a single node (`self.cluster` is `None`), except the three
//! halves, which `members.rs` calls only in cluster mode.

use std::collections::HashSet;

use actix::prelude::*;
use conclave_common::cluster::{Claimed, Left, MemberRecord};
use conclave_common::protocol::{LeaveReason, ParticipantInfo, ServerMessage};

use super::members::refuse;
use super::messages::{AssertNow, JoinRoom, ResumeRoom};
use super::mirror::settled;
use super::roster::{MediaPhase, RemoteChange};
use super::{state_message, LocalMember, Room};
use crate::error::Refusal;
use crate::metrics;
use crate::room_bus::{BusRoute, RegisterBusRoom, RemoteRoomEvent, Resync, UnregisterBusRoom};

impl Room {
    /// Start: listen to the room's bus channel (the registry's tick, `AssertNow`, re-asserts
    /// every few seconds).
    pub(super) fn cluster_started(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        cluster.bus.do_send(RegisterBusRoom {
            room: self.media_id.clone(),
            route: BusRoute {
                events: ctx.address().recipient(),
                resync: ctx.address().recipient(),
            },
        });
    }

    /// Stop: leave the bus.
    pub(super) fn cluster_stopped(&mut self, ctx: &mut Context<Self>) {
        if let Some(cluster) = &self.cluster {
            cluster.bus.do_send(UnregisterBusRoom {
                room: self.media_id.clone(),
                events: ctx.address().recipient(),
            });
        }
    }

    /// The room now lives on `node` (it moved).
    pub(super) fn moved_to(&mut self, node: String) {
        if let Some(cluster) = &mut self.cluster {
            cluster.node = Some(node);
        }
    }

    /// Our record of a member of this instance (none for a departing one).
    fn record(&self, participant_id: &str) -> Option<MemberRecord> {
        let cluster = self.cluster.as_ref()?;
        let member = self.roster.get(participant_id)?;
        let local = self.local.get(participant_id).filter(|l| !l.departing)?;
        Some(cluster.record(member.info.clone(), &local.resume_secret))
    }

    /// Write a member's new audio/video state to its record.
    pub(super) fn mirror_state(&self, participant_id: &str) {
        if let (Some(cluster), Some(record)) = (&self.cluster, self.record(participant_id)) {
            cluster.update(record);
        }
    }

    /// A member's new peer goes to the room's media node: reserve what it adds to the node's
    /// load there (`Roster::peer_cost`) until the node's next heartbeat counts it.
    pub(super) fn reserve_peer_load(&self, participant_id: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.reserve_load(self.roster.peer_cost(participant_id));
        }
    }

    /// Join, cluster half: record the member in Redis (which enforces the cap), mirror the
    /// others, then admit it here.
    pub(super) fn join_in_cluster(
        &mut self,
        msg: JoinRoom,
        secret: String,
    ) -> AtomicResponse<Self, Result<(), Refusal>> {
        let Some(cluster) = &self.cluster else {
            return refuse(Refusal::NotClustered);
        };
        let record = cluster.record(msg.participant.clone(), &secret);
        let recorded = cluster.join(record.clone(), self.deps.cap);
        let JoinRoom {
            participant,
            session,
            evict,
        } = msg;
        AtomicResponse::new(Box::pin(settled(recorded).into_actor(self).map(
            move |recorded, room, ctx| {
                let joined = match recorded {
                    Ok(joined) => joined,
                    Err(e) => {
                        // Refused: a room opened for this join closes again.
                        room.stop_if_unused(ctx);
                        return Err(Refusal::members(e));
                    }
                };
                // The user's earlier seats (here or on other instances) give way.
                for seat in &joined.displaced {
                    room.displace(&seat.participant.participant_id, ctx);
                }
                let others = joined
                    .members
                    .into_iter()
                    .filter(|r| r.participant.participant_id != participant.participant_id)
                    .collect::<Vec<_>>();
                // Mirror the others first so that `joined` lists them (members connected
                // here hear of any they had missed).
                let mut present = others.clone();
                present.push(record);
                room.roster.join(&room.key.room, participant.clone())?;
                room.reconcile(present);
                room.admit(participant, secret, session, evict);
                Ok(())
            },
        )))
    }

    /// Resume, cluster half: claim the member in Redis (it may be another instance's), then
    /// reattach it here. `proven_here`: this instance holds the member and the client matched
    /// its secret and user, which lets the resume go on while Redis cannot answer.
    pub(super) fn resume_in_cluster(
        &mut self,
        msg: ResumeRoom,
        next_secret: String,
        proven_here: bool,
    ) -> AtomicResponse<Self, Result<(), Refusal>> {
        let Some(cluster) = &self.cluster else {
            return refuse(Refusal::NotClustered);
        };
        let claimed = cluster.claim(
            msg.participant_id.clone(),
            msg.user_id.clone(),
            msg.secret.clone(),
            next_secret.clone(),
        );
        AtomicResponse::new(Box::pin(settled(claimed).into_actor(self).map(
            move |claimed, room, ctx| match claimed {
                Ok(Claimed::Taken(mine, all)) => {
                    let pid = msg.participant_id;
                    if !room.local.contains_key(&pid) {
                        // Taken over from another instance.
                        room.roster.upsert_remote(mine.participant.clone());
                        room.roster.set_remote(&pid, false);
                        // Its peer lives on; the media node confirms when it hands it over.
                        room.roster.set_media(&pid, MediaPhase::Active);
                        metrics::PARTICIPANTS.inc();
                        room.local
                            .insert(pid.clone(), LocalMember::taken_over(next_secret.clone()));
                    }
                    room.reconcile(all);
                    room.reattach(&pid, msg.session, msg.evict, &msg.secret, next_secret);
                    Ok(())
                }
                // Held here (secret and user checked above) but Redis cannot confirm it: Redis
                // is down or lost its data. The member is still ours; the next assertion
                // rewrites its record (with the rotated secret). (`Refused` is not this case:
                // the member resumed elsewhere and what we hold is stale.)
                Ok(Claimed::Absent) | Err(_)
                    if proven_here && room.local.contains_key(&msg.participant_id) =>
                {
                    let pid = msg.participant_id;
                    room.reattach(&pid, msg.session, msg.evict, &msg.secret, next_secret);
                    Ok(())
                }
                Ok(Claimed::Absent | Claimed::Refused) => {
                    room.stop_if_unused(ctx);
                    Err(Refusal::NothingToResume)
                }
                Err(e) => {
                    room.stop_if_unused(ctx);
                    Err(Refusal::members(e))
                }
            },
        )))
    }

    /// Leave, cluster half: remove the member's record, then forget it here — unless it
    /// resumed on another instance meanwhile (then it is handed over, not gone).
    pub(super) fn depart_in_cluster(
        &mut self,
        pid: &str,
        reason: LeaveReason,
        ctx: &mut Context<Self>,
    ) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        match self.local.get_mut(pid) {
            Some(local) if !local.departing => local.departing = true,
            _ => return, // Not ours, or leaving already.
        }
        let removed = cluster.leave(pid);
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
                    if let Some(cluster) = &room.cluster {
                        cluster.leave_later(&pid);
                    }
                    room.forget(&pid, reason, true, ctx)
                }
            }
        }));
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

    /// A mirrored member is gone (its instance said so, or Redis no longer has it).
    fn drop_mirror(&mut self, pid: &str, reason: LeaveReason) {
        if self.roster.get(pid).is_some_and(|m| m.remote) && self.roster.leave(pid).is_some() {
            self.broadcast(ServerMessage::ParticipantLeft {
                participant_id: pid.to_string(),
                reason,
            });
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
                RemoteChange::StateChanged => self.broadcast(state_message(&info)),
                RemoteChange::Unchanged => {}
            }
        }
        for pid in self.roster.remote_ids() {
            if !present.contains(&pid) {
                self.drop_mirror(&pid, LeaveReason::Disconnected);
            }
        }
    }

    /// Re-assert our records and reconcile the rest.
    fn assert_state(&mut self, ctx: &mut Context<Self>) {
        let Some(node) = self.cluster.as_ref().and_then(|c| c.node.clone()) else {
            return;
        };
        let mine: Vec<MemberRecord> = self.local.keys().filter_map(|p| self.record(p)).collect();
        if mine.is_empty() {
            // Nothing of ours to keep alive (asserting would recreate the room's keys).
            return;
        }
        let Some(cluster) = &self.cluster else {
            return;
        };
        let asserted = cluster.assert(node, mine);
        ctx.spawn(settled(asserted).into_actor(self).map(|asserted, room, ctx| {
            match asserted {
                Ok((node, all)) => {
                    room.reconcile(all);
                    let current = room.cluster.as_ref().and_then(|c| c.node.as_deref());
                    if current != Some(node.as_str()) && !room.moving {
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
                deafened,
                media,
            } => {
                let Some(member) = self.roster.get(&participant_id) else {
                    return;
                };
                let info = ParticipantInfo {
                    audio,
                    video,
                    deafened,
                    // From an instance older than `media`: keep what we had.
                    media: media.or(member.info.media),
                    ..member.info.clone()
                };
                if self.roster.upsert_remote(info.clone()) == RemoteChange::StateChanged {
                    self.broadcast(state_message(&info));
                }
            }
            ServerMessage::ParticipantLeft {
                participant_id,
                reason: LeaveReason::Replaced,
            } if self.local.contains_key(&participant_id) => {
                // Its user joined again through another instance, which removed the record.
                self.displace(&participant_id, ctx);
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

impl Handler<AssertNow> for Room {
    type Result = ();
    /// The instance's re-assertion tick (all rooms at once: one pipeline).
    fn handle(&mut self, _: AssertNow, ctx: &mut Context<Self>) {
        self.assert_state(ctx);
    }
}

impl Handler<Resync> for Room {
    type Result = ();
    /// The room bus reconnected (events may have been missed): re-assert and reconcile now.
    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.assert_state(ctx);
    }
}
