//! The room actor: owns membership and each member's audio/video state, relays negotiation
//! between sessions and the room's media node, and broadcasts room events.

use std::collections::HashMap;

use actix::prelude::*;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent};
use conclave_common::protocol::{
    ErrorCode, LeaveReason, MediaConnectionState, ServerMessage, PROTOCOL_VERSION,
};

use crate::media_link::MediaLink;
use crate::messages::*;
use crate::registry::Registry;
use crate::roster::{MediaPhase, Roster};

/// Refusal message of a room that is closing (the session retries at the registry).
pub const ROOM_CLOSING: &str = "room is closing";

pub struct Room {
    key: RoomKey,
    /// `community/room`, the room's id on the media node.
    media_id: String,
    roster: Roster,
    /// Where each member's messages go.
    sessions: HashMap<String, Recipient<Outbound>>,
    link: Addr<MediaLink>,
    registry: Addr<Registry>,
    heartbeat_interval_ms: u64,
}

impl Room {
    pub fn new(
        key: RoomKey,
        cap: usize,
        link: Addr<MediaLink>,
        registry: Addr<Registry>,
        heartbeat_interval_ms: u64,
    ) -> Self {
        Room {
            media_id: key.id(),
            key,
            roster: Roster::new(cap),
            sessions: HashMap::new(),
            link,
            registry,
            heartbeat_interval_ms,
        }
    }

    fn send_to(&self, participant_id: &str, msg: ServerMessage) {
        if let Some(session) = self.sessions.get(participant_id) {
            session.do_send(Outbound(msg));
        }
    }

    fn broadcast(&self, except: Option<&str>, msg: ServerMessage) {
        for (pid, session) in &self.sessions {
            if Some(pid.as_str()) != except {
                session.do_send(Outbound(msg.clone()));
            }
        }
    }

    fn media(&self, cmd: MediaCommand) {
        self.link.do_send(ToMedia(cmd));
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
        if let Some(info) = self.roster.set_state(pid, audio, video) {
            self.broadcast(
                None,
                ServerMessage::ParticipantState {
                    participant_id: info.participant_id,
                    audio: info.audio,
                    video: info.video,
                },
            );
        }
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
            } => self.send_to(&participant_id, ServerMessage::ServerOffer { sdp, tracks }),
            MediaEvent::PeerState {
                participant_id,
                state,
                ..
            } => {
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
                if self.roster.get(&participant_id).map(|m| m.media) == Some(MediaPhase::Offered) {
                    self.roster.set_media(&participant_id, MediaPhase::NoPeer);
                }
                self.send_to(&participant_id, ServerMessage::Error { code, message });
            }
            MediaEvent::Hello { .. } => {}
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.link.do_send(RegisterRoom {
            key: self.media_id.clone(),
            room: ctx.address().recipient(),
            lost: ctx.address().recipient(),
        });
        tracing::info!(room = %self.media_id, "room opened");
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.link.do_send(UnregisterRoom {
            key: self.media_id.clone(),
        });
        self.registry.do_send(RoomClosed {
            key: self.key.clone(),
            addr: ctx.address(),
        });
        tracing::info!(room = %self.media_id, "room closed");
    }
}

impl Handler<JoinRoom> for Room {
    type Result = Result<(), Refusal>;
    /// Add a member, send it `joined` with the roster, tell the others.
    fn handle(&mut self, msg: JoinRoom, ctx: &mut Context<Self>) -> Self::Result {
        if ctx.state() != ActorState::Running {
            // Emptied and closing: the session asks the registry again.
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                message: ROOM_CLOSING.into(),
            });
        }
        let info = msg.participant;
        let others = self.roster.join(&self.key.room, info.clone())?;
        let pid = info.participant_id.clone();
        msg.session.do_send(Outbound(ServerMessage::Joined {
            protocol_version: PROTOCOL_VERSION,
            participant_id: pid.clone(),
            room: self.key.room.clone(),
            community: self.key.community.clone(),
            participants: others,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
        }));
        self.broadcast(
            None,
            ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        self.sessions.insert(pid.clone(), msg.session);
        tracing::info!(room = %self.media_id, participant = %pid, user = %info.user_id, members = self.roster.len(), "joined");
        Ok(())
    }
}

impl Handler<FromParticipant> for Room {
    type Result = ();
    /// Negotiation and mute requests of a member.
    fn handle(&mut self, msg: FromParticipant, _: &mut Context<Self>) {
        self.on_request(msg.participant_id, msg.request);
    }
}

impl Handler<LeaveRoom> for Room {
    type Result = ();
    /// A member left: drop its peer, tell the others, close the room when empty.
    fn handle(&mut self, msg: LeaveRoom, ctx: &mut Context<Self>) {
        let Some(member) = self.roster.leave(&msg.participant_id) else {
            return;
        };
        self.sessions.remove(&msg.participant_id);
        if member.media != MediaPhase::NoPeer {
            self.media(MediaCommand::RemovePeer {
                room: self.media_id.clone(),
                participant_id: msg.participant_id.clone(),
            });
        }
        self.broadcast(
            None,
            ServerMessage::ParticipantLeft {
                participant_id: msg.participant_id.clone(),
                reason: msg.reason,
            },
        );
        tracing::info!(room = %self.media_id, participant = %msg.participant_id, reason = ?msg.reason, members = self.roster.len(), "left");
        if self.roster.is_empty() {
            ctx.stop();
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
    /// The media node went away: every peer is gone.
    fn handle(&mut self, _: MediaLinkLost, _: &mut Context<Self>) {
        self.roster.reset_media();
        let ids: Vec<String> = self.roster.ids().map(str::to_string).collect();
        for pid in ids {
            self.send_to(
                &pid,
                ServerMessage::MediaState {
                    state: MediaConnectionState::Failed,
                },
            );
        }
    }
}

/// Used by tests and health: members of the room.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct MemberCount;

impl Handler<MemberCount> for Room {
    type Result = usize;
    fn handle(&mut self, _: MemberCount, _: &mut Context<Self>) -> usize {
        self.roster.len()
    }
}

/// Reason recorded when a session closes without `leave`.
pub fn disconnect_reason(timed_out: bool) -> LeaveReason {
    if timed_out {
        LeaveReason::Timeout
    } else {
        LeaveReason::Disconnected
    }
}
