//! A room's media side: relaying negotiation between members and the room's media node
//! (offer, answer, candidates in; answers, server offers, peer states and errors out), and
//! failover when that node dies (cluster mode: the registry places the room on a live node
//! and every member starts a new peer there; one node: members wait for the link to return).

use std::time::Duration;

use actix::prelude::*;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent};
use conclave_common::link_auth;
use conclave_common::protocol::{MediaConnectionState, ParticipantMedia, ServerMessage};

use super::messages::{FromParticipant, MoveRoom, ParticipantRequest};
use super::roster::MediaPhase;
use super::Room;
use crate::error::RequestError;
use crate::media_link::{MediaLinkLost, RegisterRoom, ToMedia, UnregisterRoom};
use crate::metrics;

/// Wait before trying again to move a room whose media node died.
const MOVE_RETRY: Duration = Duration::from_secs(1);

impl Room {
    /// Send a command to the room's media node.
    pub(super) fn media(&self, cmd: MediaCommand) {
        self.link.do_send(ToMedia(cmd));
    }

    /// Tell a member why its request was refused.
    fn refuse_request(&self, pid: &str, error: RequestError) {
        self.send_to(pid, ServerMessage::error(error.code(), error.to_string()));
    }

    /// Have the link deliver the media node's events about this room here.
    pub(super) fn register_link(&self, ctx: &mut Context<Self>) {
        self.link.do_send(RegisterRoom {
            key: self.media_id.clone(),
            room: ctx.address().recipient(),
            lost: ctx.address().recipient(),
        });
    }

    fn on_request(&mut self, pid: String, request: ParticipantRequest) {
        let Some(member) = self.roster.get(&pid) else {
            return; // Left already; the session will learn.
        };
        let has_peer = member.media != MediaPhase::NoPeer;
        match request {
            ParticipantRequest::Offer(sdp) => match self.roster.begin_offer(&pid) {
                Ok(()) => {
                    self.reserve_peer_load(&pid);
                    // Offering again after a failure: the others see it trying.
                    self.set_media_state(&pid, ParticipantMedia::Connecting);
                    let sources = self.roster.get(&pid).map(|m| m.sources.clone());
                    self.media(MediaCommand::AddPeer {
                        room: self.media_id.clone(),
                        adopt_verifier: link_auth::adopt_verifier(&self.adopt_key(&pid)),
                        participant_id: pid,
                        offer: sdp,
                        sources: sources.unwrap_or_default(),
                    })
                }
                Err(e) => self.refuse_request(&pid, e),
            },
            ParticipantRequest::Answer(sdp) if has_peer => self.media(MediaCommand::Answer {
                room: self.media_id.clone(),
                participant_id: pid,
                sdp,
            }),
            ParticipantRequest::Answer(_) => {
                self.refuse_request(&pid, RequestError::AnswerWithoutOffer)
            }
            ParticipantRequest::Candidate(candidate) if has_peer => {
                match self.roster.take_candidate(&pid, &self.deps.caps) {
                    Ok(()) => self.media(MediaCommand::Candidate {
                        room: self.media_id.clone(),
                        participant_id: pid,
                        candidate,
                    }),
                    Err(e) => self.refuse_request(&pid, e),
                }
            }
            // Before the offer a candidate has no peer to go to; ICE does not need it.
            ParticipantRequest::Candidate(_) => {}
            ParticipantRequest::SetAudio(on) => self.set_state(&pid, Some(on), None, None),
            ParticipantRequest::SetVideo(on) => self.set_state(&pid, None, Some(on), None),
            ParticipantRequest::SetDeafened(on) => self.set_state(&pid, None, None, Some(on)),
            ParticipantRequest::SetSources(sources) => self.roster.set_sources(&pid, sources),
            ParticipantRequest::SetTrackViews(views) if has_peer => {
                self.media(MediaCommand::SetTrackViews {
                    room: self.media_id.clone(),
                    participant_id: pid,
                    views,
                })
            }
            // No peer, no videos to show: the client sends its views again for the next one.
            ParticipantRequest::SetTrackViews(_) => {}
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
                self.set_media_state(&participant_id, state.into());
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
                    self.send_to(
                        &participant_id,
                        ServerMessage::MediaState {
                            state: MediaConnectionState::Failed,
                        },
                    );
                    return self.set_media_state(&participant_id, ParticipantMedia::Failed);
                }
                if self.roster.get(&participant_id).map(|m| m.media) == Some(MediaPhase::Offered) {
                    // The offer was refused: no peer, until the client offers again.
                    self.roster.set_media(&participant_id, MediaPhase::NoPeer);
                    self.set_media_state(&participant_id, ParticipantMedia::Failed);
                }
                self.send_to(&participant_id, ServerMessage::Error { code, message });
            }
            MediaEvent::Speaking {
                participants,
                dominant,
                ..
            } => {
                let msg = ServerMessage::Speaking {
                    participants,
                    dominant,
                };
                self.speaking = Some(msg.clone());
                self.broadcast(msg);
            }
            MediaEvent::PublishLayers {
                participant_id,
                mid,
                active,
                ..
            } => self.send_to(
                &participant_id,
                ServerMessage::PublishLayers { mid, active },
            ),
            MediaEvent::Hello { .. } => {}
        }
    }

    /// Cluster mode: the media node is gone; place the room again and have every member
    /// start a new peer there.
    pub(super) fn move_media(&mut self, dead_node: Option<String>, ctx: &mut Context<Self>) {
        self.moving = true;
        self.roster.reset_media();
        let moved = self.owner.relocate.send(MoveRoom {
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
                    room.moved_to(node);
                    room.moving = false;
                    metrics::FAILOVERS.inc();
                    room.media_failed_for_all();
                }
                Ok(Err(r)) => {
                    tracing::warn!(room = %room.media_id, error = %r, "room move failed; retrying");
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
        let ours: Vec<String> = self.local.keys().cloned().collect();
        for pid in ours {
            self.set_media_state(&pid, ParticipantMedia::Failed);
        }
    }
}

impl Handler<FromParticipant> for Room {
    type Result = ();
    /// Negotiation and mute requests of a member.
    fn handle(&mut self, msg: FromParticipant, _: &mut Context<Self>) {
        if self.moving && matches!(msg.request, ParticipantRequest::Offer(_)) {
            return self.refuse_request(&msg.participant_id, RequestError::RoomMoving);
        }
        self.on_request(msg.participant_id, msg.request);
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
        if let Some(cluster) = &self.cluster {
            if !self.moving {
                self.move_media(cluster.node.clone(), ctx);
            }
            return;
        }
        self.roster.reset_media();
        self.media_failed_for_all();
    }
}
