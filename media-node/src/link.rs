//! The media node's end of the internal link: one WebSocket session actor per connected
//! signaling node, turning JSON frames into `MediaCommand`s and `MediaEvent`s back into frames.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use conclave_common::frame_limit::Tripped;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent, ToMediaNode};
use conclave_common::protocol::MediaConnectionState;

use crate::node::{LinkClosed, MediaNode};

/// How often we ping the signaling node.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// A link silent this long is dead (its peers become orphans, see `LinkClosed`).
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LinkSession {
    node: Addr<MediaNode>,
    hello: MediaEvent,
    last_heard: Instant,
    /// Peers created or adopted over this link (participant -> room): orphans when it dies.
    peers: HashMap<String, String>,
    /// Set when the link declared a frame over the limit (checked from its header).
    frame_limit: Tripped,
}

impl LinkSession {
    pub fn new(node: Addr<MediaNode>, hello: MediaEvent) -> Self {
        LinkSession {
            node,
            hello,
            last_heard: Instant::now(),
            peers: HashMap::new(),
            frame_limit: Tripped::default(),
        }
    }

    /// The flag of the [`FrameLimit`](conclave_common::frame_limit::FrameLimit) in front of
    /// this link's socket: a frame it refuses closes the link with 1009.
    pub fn with_frame_limit(mut self, tripped: Tripped) -> Self {
        self.frame_limit = tripped;
        self
    }

    fn send_event(ctx: &mut ws::WebsocketContext<Self>, event: &MediaEvent) {
        match serde_json::to_string(event) {
            Ok(json) => ctx.text(json),
            Err(e) => tracing::error!(error = %e, "cannot encode link event"),
        }
    }
}

impl Actor for LinkSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!("signaling link connected");
        let hello = self.hello.clone();
        Self::send_event(ctx, &hello);
        ctx.run_interval(PING_INTERVAL, |link, ctx| {
            if link.last_heard.elapsed() > LINK_TIMEOUT {
                tracing::warn!("signaling link timed out");
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            peers = self.peers.len(),
            "signaling link closed: its peers keep forwarding until adopted or expired"
        );
        self.node.do_send(LinkClosed {
            peers: self.peers.drain().collect(),
            link: ctx.address().recipient(),
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LinkSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let text = match msg {
            Ok(ws::Message::Text(text)) => text,
            Ok(ws::Message::Ping(p)) => return ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                return ctx.stop();
            }
            Ok(_) => return,
            Err(e) if self.frame_limit.is_set() || matches!(e, ws::ProtocolError::Overflow) => {
                tracing::warn!("signaling link frame over the limit: closing");
                ctx.close(Some(ws::CloseCode::Size.into()));
                return ctx.stop();
            }
            Err(e) => {
                tracing::warn!(error = %e, "signaling link protocol error");
                return ctx.stop();
            }
        };
        let cmd: MediaCommand = match serde_json::from_str(&text) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(error = %e, "malformed link command ignored");
                return;
            }
        };
        match &cmd {
            MediaCommand::AddPeer {
                room,
                participant_id,
                ..
            }
            | MediaCommand::AdoptPeer {
                room,
                participant_id,
                ..
            } => {
                self.peers.insert(participant_id.clone(), room.clone());
            }
            MediaCommand::RemovePeer { participant_id, .. } => {
                self.peers.remove(participant_id);
            }
            _ => {}
        }
        self.node.do_send(ToMediaNode {
            cmd,
            reply_to: ctx.address().recipient(),
        });
    }
}

impl Handler<FromMediaNode> for LinkSession {
    type Result = ();
    /// An event for the signaling node at the other end.
    fn handle(&mut self, msg: FromMediaNode, ctx: &mut Self::Context) {
        if let MediaEvent::PeerState {
            participant_id,
            state: MediaConnectionState::Failed,
            ..
        } = &msg.0
        {
            // The room dropped the peer itself: no `removePeer` will come for it.
            self.peers.remove(participant_id);
        }
        Self::send_event(ctx, &msg.0);
    }
}
