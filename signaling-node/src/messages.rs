//! Messages between the signaling node's actors: session <-> room <-> registry, and rooms
//! <-> the media link.

use actix::prelude::*;
use conclave_common::link::{FromMediaNode, MediaCommand};
use conclave_common::protocol::{ErrorCode, LeaveReason, ParticipantInfo, ServerMessage};

use crate::media_link::MediaLink;
use crate::room::Room;

/// A message for the browser at the other end of a session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Outbound(pub ServerMessage);

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
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

/// Session -> room: a request of a joined participant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromParticipant {
    pub participant_id: String,
    pub request: ParticipantRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantRequest {
    Offer(String),
    Answer(String),
    Candidate(String),
    SetAudio(bool),
    SetVideo(bool),
}

/// Session -> room: take over a participant whose WebSocket dropped (`resume`).
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct ResumeRoom {
    pub participant_id: String,
    pub secret: String,
    pub session: Recipient<Outbound>,
    pub evict: Recipient<Evicted>,
}

/// Session -> room: the WebSocket closed without `leave`; the member waits for a `resume`
/// until the grace period ends. `session` tells a stale session (already replaced) apart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionLost {
    pub participant_id: String,
    pub session: Recipient<Outbound>,
}

/// Room -> session: close the WebSocket without leaving the room. `reconnect`: this node
/// drains, the browser should reconnect (and resume) elsewhere; otherwise another connection
/// resumed this participant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Evicted {
    pub reconnect: bool,
}

/// Room bus -> room: an event another signaling instance published for this room.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoteRoomEvent {
    pub from: String,
    pub message: ServerMessage,
}

/// Room -> registry (cluster mode): the room's media node is gone; place the room again.
#[derive(Message)]
#[rtype(result = "Result<(String, Addr<MediaLink>), Refusal>")]
pub struct MoveRoom {
    pub key: RoomKey,
    pub dead_node: Option<String>,
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

/// Session -> registry: the room actor for `key`, created (and placed) if needed.
#[derive(Message)]
#[rtype(result = "Result<Addr<Room>, Refusal>")]
pub struct GetRoom {
    pub key: RoomKey,
}

/// Room -> registry: the room emptied and stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomClosed {
    pub key: RoomKey,
    pub addr: Addr<Room>,
}

/// Room -> media link: a command for the media node.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ToMedia(pub MediaCommand);

/// Room -> media link: deliver media events of `key` to `room`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterRoom {
    pub key: String,
    pub room: Recipient<FromMediaNode>,
    pub lost: Recipient<MediaLinkLost>,
}

/// Room -> media link: the room stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterRoom {
    pub key: String,
}

/// Media link -> rooms: the link to the media node dropped (or could not connect); its peers
/// are gone. Names the link, so a room that moved meanwhile ignores a stale report.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct MediaLinkLost(pub Addr<crate::media_link::MediaLink>);

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
