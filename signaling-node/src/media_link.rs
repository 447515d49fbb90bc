//! The signaling node's end of the internal link to a media node: in-process (embedded
//! default) or over the media node's internal WebSocket. Rooms send `ToMedia`; events come
//! back and are routed to the room they name.
//!
//! The link sits below the rooms: it defines the messages rooms send it and reaches each
//! room through the `Recipient`s a room registers (`RegisterRoom`), never its actor type.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use awc::ws;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent, ToMediaNode};
use conclave_common::link_auth::{self, LinkSecret};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::error::RequestError;

/// Whether a new link's first frame is the hello of the node we meant to reach: with a
/// secret, its proof answers our upgrade's `nonce`. Returns the node id.
fn check_hello(
    remote: &RemoteMedia,
    nonce: Option<&str>,
    hello: Option<MediaEvent>,
) -> Result<String, &'static str> {
    let Some(MediaEvent::Hello { node_id, proof, .. }) = hello else {
        return Err("no hello from the media node");
    };
    if remote
        .node_id
        .as_ref()
        .is_some_and(|expected| *expected != node_id)
    {
        return Err("the hello names another node than the one placed in Redis");
    }
    if let (Some(secret), Some(nonce)) = (&remote.secret, nonce) {
        let proven = proof.is_some_and(|p| secret.verify_hello(nonce, &node_id, &p));
        if !proven {
            return Err("the media node does not prove it holds the link secret");
        }
    }
    Ok(node_id)
}

/// Wait between reconnection attempts to a remote media node.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Largest link frame (a server offer for a full room is tens of KiB).
const MAX_LINK_FRAME: usize = 1024 * 1024;

/// Wait for a new link's `hello` (the media node sends it at once).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the media node is.
#[derive(Clone)]
pub enum MediaTarget {
    /// A media node in this process.
    Local(Recipient<ToMediaNode>),
    /// A media node's internal link.
    Remote(RemoteMedia),
}

/// A media node in another process.
#[derive(Clone, Debug)]
pub struct RemoteMedia {
    /// Its internal link URL (`ws://host:port/internal/link`).
    pub url: String,
    /// Signs the upgrade and checks the node's hello; `None` only in `--dev` (the node must
    /// then accept unauthenticated links).
    pub secret: Option<LinkSecret>,
    /// The node id its hello must carry (cluster mode: the node placement chose).
    pub node_id: Option<String>,
}

struct RoomRoute {
    events: Recipient<FromMediaNode>,
    lost: Recipient<MediaLinkLost>,
}

pub struct MediaLink {
    target: MediaTarget,
    rooms: HashMap<String, RoomRoute>,
    /// Frames for the remote link's writer task; `None` while disconnected.
    outbox: Option<mpsc::UnboundedSender<String>>,
    /// Commands that came while (re)connecting, sent once the link is up (refused if the
    /// attempt fails): a room placed on a node usually sends its first offer before the new
    /// link is up.
    waiting: Vec<MediaCommand>,
    /// Stop once down with no rooms (cluster links, opened per node on demand).
    on_demand: bool,
    /// The rooms were told the node is unreachable since the link was last up (told once:
    /// a node alive in Redis but unreachable from here must not be marked down every second).
    unreachable_told: bool,
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
pub struct MediaLinkLost(pub Addr<MediaLink>);

/// Most commands kept while connecting.
const MAX_WAITING: usize = 10_000;

/// The remote link connected; frames go to `outbox`.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkUp(mpsc::UnboundedSender<String>);

/// The remote link dropped.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkDown;

impl MediaLink {
    pub fn new(target: MediaTarget) -> Self {
        MediaLink {
            target,
            rooms: HashMap::new(),
            outbox: None,
            waiting: Vec::new(),
            on_demand: false,
            unreachable_told: false,
        }
    }

    /// A link that stops when its node is down and no room uses it any more.
    pub fn on_demand(target: MediaTarget) -> Self {
        MediaLink {
            on_demand: true,
            ..MediaLink::new(target)
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let MediaTarget::Remote(remote) = self.target.clone() else {
            return;
        };
        let me = ctx.address();
        actix::spawn(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish();
            let mut request = client.ws(&remote.url).max_frame_size(MAX_LINK_FRAME);
            let mut nonce = None;
            if let Some(secret) = &remote.secret {
                let (authorization, ours) = secret.sign_upgrade(link_auth::unix_now());
                request = request.set_header(awc::http::header::AUTHORIZATION, authorization);
                nonce = Some(ours);
            }
            let url = &remote.url;
            match request.connect().await {
                Ok((_, mut framed)) => {
                    // Nothing goes out before the node proved it holds the link secret: a
                    // rewritten link URL must not receive any participant's SDP.
                    let hello = tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await;
                    let hello = match hello {
                        Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                            serde_json::from_slice::<MediaEvent>(&bytes).ok()
                        }
                        _ => None,
                    };
                    match check_hello(&remote, nonce.as_deref(), hello) {
                        Ok(node_id) => tracing::info!(%url, %node_id, "media link up"),
                        Err(why) => {
                            tracing::error!(%url, "media link refused: {why}");
                            me.do_send(LinkDown);
                            return;
                        }
                    }
                    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                    me.do_send(LinkUp(tx));
                    let (mut sink, mut stream) = framed.split();
                    loop {
                        tokio::select! {
                            out = rx.recv() => match out {
                                Some(text) => {
                                    if sink.send(ws::Message::Text(text.into())).await.is_err() {
                                        break;
                                    }
                                }
                                None => break,
                            },
                            frame = stream.next() => match frame {
                                Some(Ok(ws::Frame::Text(bytes))) => {
                                    match serde_json::from_slice::<MediaEvent>(&bytes) {
                                        Ok(event) => me.do_send(FromMediaNode(event)),
                                        Err(e) => tracing::warn!(error = %e, "malformed link event"),
                                    }
                                }
                                Some(Ok(ws::Frame::Ping(p))) => {
                                    if sink.send(ws::Message::Pong(p)).await.is_err() {
                                        break;
                                    }
                                }
                                Some(Ok(ws::Frame::Close(_))) | Some(Err(_)) | None => break,
                                Some(Ok(_)) => {}
                            },
                        }
                    }
                }
                Err(awc::error::WsClientError::InvalidResponseStatus(status))
                    if status == awc::http::StatusCode::UNAUTHORIZED =>
                {
                    tracing::error!(%url, "media node refused our link upgrade: is --link-secret the same on both?");
                }
                Err(e) => tracing::warn!(%url, error = %e, "media node unreachable"),
            }
            me.do_send(LinkDown);
        });
    }

    fn refuse(&self, cmd: &MediaCommand) {
        // Only an offer waits for an answer; the rest die with the link anyway.
        if let MediaCommand::AddPeer {
            room,
            participant_id,
            ..
        } = cmd
        {
            if let Some(route) = self.rooms.get(room) {
                let refused = RequestError::MediaNodeUnreachable;
                route.events.do_send(FromMediaNode(MediaEvent::PeerError {
                    room: room.clone(),
                    participant_id: participant_id.clone(),
                    code: refused.code(),
                    message: refused.to_string(),
                }));
            }
        }
    }
}

impl Actor for MediaLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl Handler<ToMedia> for MediaLink {
    type Result = ();
    /// A room's command for the media node.
    fn handle(&mut self, msg: ToMedia, ctx: &mut Context<Self>) {
        match &self.target {
            MediaTarget::Local(node) => node.do_send(ToMediaNode {
                cmd: msg.0,
                reply_to: ctx.address().recipient(),
            }),
            MediaTarget::Remote(_) => {
                let Some(outbox) = &self.outbox else {
                    if self.waiting.len() < MAX_WAITING {
                        self.waiting.push(msg.0);
                    } else {
                        self.refuse(&msg.0);
                    }
                    return;
                };
                let sent = match serde_json::to_string(&msg.0) {
                    Ok(json) => outbox.send(json).is_ok(),
                    Err(_) => false,
                };
                if !sent {
                    self.refuse(&msg.0);
                }
            }
        }
    }
}

impl Handler<FromMediaNode> for MediaLink {
    type Result = ();
    /// An event from the media node: deliver it to the room it names.
    fn handle(&mut self, msg: FromMediaNode, _: &mut Context<Self>) {
        let room = match &msg.0 {
            // Checked (and logged) when the link opened; a repeat means nothing.
            MediaEvent::Hello { .. } => return,
            MediaEvent::Answer { room, .. }
            | MediaEvent::Offer { room, .. }
            | MediaEvent::PeerState { room, .. }
            | MediaEvent::PeerError { room, .. }
            | MediaEvent::Speaking { room, .. }
            | MediaEvent::PublishLayers { room, .. } => room,
        };
        if let Some(route) = self.rooms.get(room) {
            route.events.do_send(msg);
        }
    }
}

impl Handler<RegisterRoom> for MediaLink {
    type Result = ();
    /// Route the media node's events about this room to it.
    fn handle(&mut self, msg: RegisterRoom, _: &mut Context<Self>) {
        self.rooms.insert(
            msg.key,
            RoomRoute {
                events: msg.room,
                lost: msg.lost,
            },
        );
    }
}

impl Handler<UnregisterRoom> for MediaLink {
    type Result = ();
    /// Forget a stopped room.
    fn handle(&mut self, msg: UnregisterRoom, _: &mut Context<Self>) {
        // The room's commands still waiting for the link will not be sent: refuse them now,
        // while the room can still be told.
        let (theirs, others) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|cmd| cmd.room() == msg.key);
        self.waiting = others;
        for cmd in &theirs {
            self.refuse(cmd);
        }
        self.rooms.remove(&msg.key);
    }
}

impl Handler<LinkUp> for MediaLink {
    type Result = ();
    /// The remote link is up: send what waited for it.
    fn handle(&mut self, msg: LinkUp, _: &mut Context<Self>) {
        for cmd in self.waiting.drain(..) {
            if let Ok(json) = serde_json::to_string(&cmd) {
                let _ = msg.0.send(json);
            }
        }
        self.outbox = Some(msg.0);
        self.unreachable_told = false;
    }
}

impl Handler<LinkDown> for MediaLink {
    type Result = ();
    /// The media node is gone (or never came): its peers are lost; retry shortly while
    /// rooms still use the link.
    fn handle(&mut self, _: LinkDown, ctx: &mut Context<Self>) {
        let was_up = self.outbox.take().is_some();
        // A cluster node we cannot reach is as dead to its rooms as one whose link dropped
        // (it may have died between placement and our first connect): they move now.
        // A fixed node has no replacement, so rooms wait for it to come back.
        let unreachable = self.on_demand && !self.rooms.is_empty() && !self.unreachable_told;
        if was_up || unreachable {
            tracing::warn!(up = was_up, "media link lost");
            self.unreachable_told = self.on_demand;
            for route in self.rooms.values() {
                route.lost.do_send(MediaLinkLost(ctx.address()));
            }
        }
        for cmd in std::mem::take(&mut self.waiting) {
            self.refuse(&cmd);
        }
        ctx.run_later(RECONNECT_DELAY, |link, ctx| {
            if link.on_demand && link.rooms.is_empty() {
                // Cluster mode: every room moved elsewhere (the registry opens a new link
                // if a room comes back to this node).
                return ctx.stop();
            }
            link.connect(ctx)
        });
    }
}
