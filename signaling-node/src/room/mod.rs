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
//! seconds (so a Redis restart loses nothing) and reconciles its mirror of the others. All of
//! that sits behind one optional component, `Option<ClusterMirror>`: with `None` (one node)
//! the room is this file, `members.rs` and `media.rs`.
//!
//! # Layout
//! - this file: the actor, its state, fan-out to members, start and stop, small queries.
//! - [`messages`]: what sessions, the registry and the query API send a room, and what it
//!   sends up to them (as `Recipient`s: a room never names its session or registry types).
//! - `members.rs`: join, resume, leave, the resume grace (single-node logic; each cluster
//!   half is one call into `cluster.rs`).
//! - `media.rs`: negotiation relay to the media node, and failover when the node dies.
//! - `cluster.rs`: what a room does in cluster mode: the Redis halves of join, resume and
//!   leave, re-assertion, reconciling the mirror, events from other instances.
//! - `mirror.rs`: the cluster component itself ([`RoomCluster`] handles, the Redis queue).
//! - [`roster`]: membership logic free of actors and I/O, unit-tested.

mod assert_batch;
mod cluster;
mod media;
mod members;
pub mod messages;
mod mirror;
pub mod roster;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::caps::ParticipantCaps;
use conclave_common::cluster::now_ms;
use conclave_common::link_auth;
use conclave_common::presence::{PresenceEvent, PresenceKind};
use conclave_common::protocol::{LeaveReason, ParticipantInfo, ServerMessage};

pub use self::assert_batch::{AssertBatch, ASSERT_INTERVAL};
use self::messages::{Drain, Evicted, MemberCount, MoveRoom, Outbound, RoomKey, Snapshot};
use self::mirror::ClusterMirror;
pub use self::mirror::RoomCluster;
use self::roster::Roster;
use crate::media_link::{MediaLink, UnregisterRoom};
use crate::metrics;
use crate::presence::{PresenceSink, Publish};
use crate::turn::TurnServers;

/// What every room needs, shared by all of them.
#[derive(Clone)]
pub struct RoomDeps {
    pub cap: usize,
    pub heartbeat_interval_ms: u64,
    /// How long a member whose WebSocket dropped may `resume`.
    pub resume_grace: Duration,
    /// This signaling instance (in presence events and, in cluster mode, member records).
    pub instance: String,
    pub presence: Option<Addr<PresenceSink>>,
    /// Cluster mode: the store and the bus; `None` on a single node.
    pub cluster: Option<RoomCluster>,
    /// Caps on what one participant creates (the room counts trickled candidates).
    pub caps: ParticipantCaps,
    /// TURN/STUN servers each `joined` carries, with credentials minted for its participant.
    pub turn: Option<Arc<TurnServers>>,
}

/// Whoever opened the room (the registry), as the room sees it: where it reports that it
/// closed, and whom it asks for a new media node.
#[derive(Clone)]
pub struct RoomOwner {
    pub closed: Recipient<RoomClosed>,
    pub relocate: Recipient<MoveRoom>,
}

/// Room -> registry: the room emptied and stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomClosed {
    pub key: RoomKey,
    pub addr: Addr<Room>,
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

impl LocalMember {
    fn connected(session: Recipient<Outbound>, evict: Recipient<Evicted>, secret: String) -> Self {
        LocalMember {
            resume_secret: secret,
            session: Some(session),
            evict: Some(evict),
            drops: 0,
            departing: false,
        }
    }

    /// A member taken over from another instance: no session until it reattaches.
    fn taken_over(secret: String) -> Self {
        LocalMember {
            resume_secret: secret,
            session: None,
            evict: None,
            drops: 0,
            departing: false,
        }
    }
}

pub struct Room {
    key: RoomKey,
    /// `community/room`, the room's id on the media node and in Redis.
    media_id: String,
    deps: RoomDeps,
    owner: RoomOwner,
    roster: Roster,
    local: HashMap<String, LocalMember>,
    /// Members whose peer we asked the media node to hand to us (`adoptPeer`).
    adopting: HashSet<String>,
    /// The media node's last `speaking`, for members who join or resume after it.
    speaking: Option<ServerMessage>,
    link: Addr<MediaLink>,
    /// A move to another media node is in progress (offers wait for it).
    moving: bool,
    /// Cluster mode: the room's records in Redis and events on the bus; `None` on one node.
    cluster: Option<ClusterMirror>,
}

impl Room {
    /// A room on `link`; in cluster mode `media_node` names the node it was placed on.
    /// Call inside a running actix system (cluster mode starts the room's Redis queue).
    pub fn new(
        key: RoomKey,
        link: Addr<MediaLink>,
        media_node: Option<String>,
        deps: RoomDeps,
        owner: RoomOwner,
    ) -> Self {
        let cluster = deps.cluster.clone().map(|cluster| {
            ClusterMirror::new(
                cluster,
                key.id(),
                key.community.clone(),
                deps.instance.clone(),
                media_node,
            )
        });
        // In cluster mode the cap is enforced on the room's members in Redis.
        let cap = if cluster.is_some() {
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
            speaking: None,
            link,
            moving: false,
            cluster,
            deps,
            owner,
        }
    }

    /// The key that adopts this member's media peer (`link_auth::adopt_key`): bound to its
    /// resume secret, so only an instance that holds the member can take the peer over.
    fn adopt_key(&self, participant_id: &str) -> String {
        match self.local.get(participant_id) {
            Some(local) => {
                link_auth::adopt_key(&local.resume_secret, &self.media_id, participant_id)
            }
            // Not a member of ours: a key nobody holds.
            None => link_auth::random_hex(32),
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
        if let Some(cluster) = &self.cluster {
            cluster.publish(msg);
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
            deafened: info.deafened,
            reason: reason.map(leave_reason_str),
            at_ms: now_ms(),
            node: self.deps.instance.clone(),
        }));
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::ROOMS.inc();
        self.register_link(ctx);
        self.cluster_started(ctx);
        let node = self.cluster.as_ref().and_then(|c| c.node.clone());
        tracing::info!(room = %self.media_id, ?node, "room opened");
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        metrics::ROOMS.dec();
        metrics::PARTICIPANTS.sub(self.local.len() as i64);
        self.link.do_send(UnregisterRoom {
            key: self.media_id.clone(),
        });
        self.cluster_stopped(ctx);
        self.owner.closed.do_send(RoomClosed {
            key: self.key.clone(),
            addr: ctx.address(),
        });
        tracing::info!(room = %self.media_id, "room closed");
    }
}

impl Handler<Drain> for Room {
    type Result = ();
    /// This node drains: ask every member's browser to reconnect (it resumes elsewhere).
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        for local in self.local.values() {
            if let Some(evict) = &local.evict {
                evict.do_send(Evicted::Draining);
            }
        }
    }
}

impl Handler<Snapshot> for Room {
    type Result = Vec<ParticipantInfo>;
    /// The members and their states (the query API).
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Vec<ParticipantInfo> {
        self.roster.others("")
    }
}

impl Handler<MemberCount> for Room {
    type Result = usize;
    /// Members of the room, mirrored ones included (tests and health).
    fn handle(&mut self, _: MemberCount, _: &mut Context<Self>) -> usize {
        self.roster.len()
    }
}

/// The `participantState` that carries a member's visible state.
fn state_message(info: &ParticipantInfo) -> ServerMessage {
    ServerMessage::ParticipantState {
        participant_id: info.participant_id.clone(),
        audio: info.audio,
        video: info.video,
        deafened: info.deafened,
        media: info.media,
    }
}

/// A leave reason as presence events and metrics spell it.
fn leave_reason_str(reason: LeaveReason) -> String {
    match reason {
        LeaveReason::Left => "left",
        LeaveReason::Disconnected => "disconnected",
        LeaveReason::Timeout => "timeout",
        LeaveReason::MediaFailed => "mediaFailed",
        LeaveReason::Replaced => "replaced",
    }
    .to_string()
}
