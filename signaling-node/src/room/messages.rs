//! The room actor's messages: what sessions, the registry and the query API ask of a room,
//! and what a room sends up to them. A room knows its session and its registry only as
//! `Recipient`s of the messages defined here (`Outbound`, `Evicted`, `MoveRoom`, and
//! `RoomClosed` beside the actor), never as their actor types.

use actix::prelude::*;
use std::collections::BTreeMap;

use conclave_common::protocol::{
    LeaveReason, ParticipantInfo, ServerMessage, TrackSource, TrackView,
};

use crate::error::Refusal;
use crate::media_link::MediaLink;

/// A room's identity: the community it belongs to and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    pub community: String,
    pub room: String,
}

impl RoomKey {
    /// The key used on the media node and in logs: `community/room`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.community, self.room)
    }
}

/// Session -> room: add this participant. The room sends `joined` itself, through
/// `session`, so that it precedes every later event about the room.
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct JoinRoom {
    pub participant: ParticipantInfo,
    pub session: Recipient<Outbound>,
    pub evict: Recipient<Evicted>,
}

/// Session -> room: take over a participant whose WebSocket dropped (`resume`).
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct ResumeRoom {
    pub participant_id: String,
    /// The user its token names: only that user may resume the member.
    pub user_id: String,
    pub secret: String,
    pub session: Recipient<Outbound>,
    pub evict: Recipient<Evicted>,
}

/// Session -> room: a request of a joined participant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromParticipant {
    pub participant_id: String,
    pub request: ParticipantRequest,
}

/// What a joined participant asks of its room (negotiation, mute and deafen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantRequest {
    Offer(String),
    Answer(String),
    Candidate(String),
    SetAudio(bool),
    SetVideo(bool),
    SetDeafened(bool),
    /// Sources the member declared for its own m-lines, by mid (`setSources`).
    SetSources(BTreeMap<String, TrackSource>),
    /// How the member shows the videos it receives, by its own mids (`setTrackViews`).
    SetTrackViews(BTreeMap<String, TrackView>),
}

/// Session -> room: the participant is gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaveRoom {
    pub participant_id: String,
    pub reason: LeaveReason,
    /// The session leaving (ignored unless it is the member's current one).
    pub session: Recipient<Outbound>,
}

/// Session -> room: the WebSocket closed without `leave`; the member waits for a `resume`
/// until the grace period ends. `session` tells a stale session (already replaced) apart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionLost {
    pub participant_id: String,
    pub session: Recipient<Outbound>,
}

/// Room -> session: a message for the browser at the other end of the session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Outbound(pub ServerMessage);

/// Room -> session: close the WebSocket, and why.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Evicted {
    /// This node drains: the browser should reconnect (and resume) elsewhere.
    Draining,
    /// Another connection resumed this participant.
    ResumedElsewhere,
    /// The same user joined the room again: this seat is gone.
    Replaced,
}

/// Room -> registry (cluster mode): the room's media node is gone; place the room again.
/// The answer is the new node and the link to it.
#[derive(Message)]
#[rtype(result = "Result<(String, Addr<MediaLink>), Refusal>")]
pub struct MoveRoom {
    pub key: RoomKey,
    pub dead_node: Option<String>,
}

/// Registry -> room: re-assert the room's records now (every room of the instance gets it at
/// once, every `ASSERT_INTERVAL`, so their assertions go in one pipeline).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AssertNow;

/// Registry -> room: this node drains; ask every member's browser to reconnect (it resumes
/// elsewhere).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Query API -> room: the members and their states.
#[derive(Message)]
#[rtype(result = "Vec<ParticipantInfo>")]
pub struct Snapshot;

/// Tests and health -> room: members of the room (mirrored ones included).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct MemberCount;
