//! The session actor: one per browser WebSocket. Parses and validates client messages,
//! checks the token at join, keeps the connection alive with heartbeats, and forwards the
//! member's requests to its room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use conclave_common::caps::ParticipantCaps;
use conclave_common::cluster::now_ms;
use conclave_common::frame_limit::Tripped;
use conclave_common::protocol::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, ParticipantInfo, ParticipantMedia,
    ServerMessage,
};

use crate::auth::{Claims, TokenKeys, TokenUse};
use crate::client_ip::IpSlot;
use crate::error::{Refusal, RequestError};
use crate::limits::{rate_limit_reason, Budgets, MessageClass, SessionLimits};
use crate::metrics;
use crate::registry::{GetRoom, Registry};
use crate::room::messages::{
    Evicted, FromParticipant, JoinRoom, LeaveRoom, Outbound, ParticipantRequest, ResumeRoom,
    RoomKey, SessionLost,
};
use crate::room::Room;

/// Largest accepted frame. A server offer for a full room is tens of KiB; browsers send
/// less. Bigger frames close the connection with 1009 (message too big).
pub const MAX_FRAME: usize = 256 * 1024;
/// Longest display name kept (longer ones are cut).
const MAX_NAME_CHARS: usize = 64;
/// Longest mid a `setSources` or `setTrackViews` may name (RFC 8843 puts no bound; browsers
/// use small integers, str0m three letters and digits).
const MAX_MID_BYTES: usize = 32;
/// Most videos one `setTrackViews` may name (a client receives one per other participant
/// with video, and the largest room holds far fewer).
const MAX_TRACK_VIEWS: usize = 128;
/// At most `most` mids, each 1 to `MAX_MID_BYTES` bytes (`setSources`, `setTrackViews`).
fn mids_fit<'a>(mut mids: impl ExactSizeIterator<Item = &'a String>, most: usize) -> bool {
    mids.len() <= most && mids.all(|mid| !mid.is_empty() && mid.len() <= MAX_MID_BYTES)
}

/// How often a join retries when its room was closing at that moment.
const JOIN_ATTEMPTS: u32 = 5;
/// Wait before the first retry, doubled at each: a closing room leaves the registry once its
/// actor has stopped, a few polls later; asking again at once finds the same closing room
/// (5 attempts wait 5 + 10 + 20 + 40 ms at most).
const CLOSING_RETRY_WAIT: Duration = Duration::from_millis(5);

/// What every session needs, shared by all of them.
#[derive(Clone)]
pub struct SessionDeps {
    pub registry: Addr<Registry>,
    pub keys: Arc<TokenKeys>,
    /// Heartbeat period; the browser's idle connection must not look dead to a cloud LB.
    pub heartbeat_interval: Duration,
    /// Silence after which we close (the browser or network is gone).
    pub client_timeout: Duration,
    /// Caps on SDP size and offer m-lines, checked here before anything goes to the room.
    pub caps: ParticipantCaps,
    /// Message budgets, join deadline, outbound queue bound.
    pub limits: Arc<SessionLimits>,
}

struct Membership {
    room: Addr<Room>,
    participant_id: String,
}

pub struct Session {
    deps: SessionDeps,
    last_heard: Instant,
    joined: Option<Membership>,
    /// A join is in flight (the mailbox is paused by `ctx.wait` meanwhile).
    joining: bool,
    /// Set when the socket declared a frame over [`MAX_FRAME`] (checked from its header).
    frame_limit: Tripped,
    /// This session's message budgets, one per class.
    budgets: Budgets,
    /// Closed for a limit: later frames are ignored.
    closed: bool,
    /// Counts this WebSocket against its client address while it lives.
    _ip_slot: Option<IpSlot>,
    /// A text message arriving in fragments (browsers split messages larger than their send
    /// window, 64-128 KiB), reassembled up to [`MAX_FRAME`] in all.
    fragments: Option<Vec<u8>>,
}

impl Session {
    pub fn new(deps: SessionDeps) -> Self {
        let now = Instant::now();
        Session {
            budgets: Budgets::new(&deps.limits.rates, now),
            deps,
            last_heard: now,
            joined: None,
            joining: false,
            frame_limit: Tripped::default(),
            closed: false,
            _ip_slot: None,
            fragments: None,
        }
    }

    /// Count this session against its client address until it ends.
    pub fn with_ip_slot(mut self, slot: Option<IpSlot>) -> Self {
        self._ip_slot = slot;
        self
    }

    /// The flag of the [`FrameLimit`](conclave_common::frame_limit::FrameLimit) in front of
    /// this session's socket: a frame it refuses closes the session with 1009.
    pub fn with_frame_limit(mut self, tripped: Tripped) -> Self {
        self.frame_limit = tripped;
        self
    }

    fn send(ctx: &mut ws::WebsocketContext<Self>, msg: &ServerMessage) {
        metrics::WS_SENT.with_label_values(&[msg.id()]).inc();
        if let ServerMessage::Error { code, .. } = msg {
            metrics::ERRORS.with_label_values(&[code.as_str()]).inc();
        }
        match serde_json::to_string(msg) {
            Ok(json) => ctx.text(json),
            Err(e) => tracing::error!(error = %e, "cannot encode server message"),
        }
    }

    fn error(ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, message: impl Into<String>) {
        Self::send(ctx, &ServerMessage::error(code, message));
    }

    fn refuse(ctx: &mut ws::WebsocketContext<Self>, refusal: Refusal) {
        Self::error(ctx, refusal.code(), refusal.to_string());
    }

    fn reject(ctx: &mut ws::WebsocketContext<Self>, error: RequestError) {
        Self::error(ctx, error.code(), error.to_string());
    }

    /// Charge one message of `class`; over the budget the session is closed (1008) and
    /// leaves its room.
    fn within_budget(&mut self, class: MessageClass, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if self.budgets.charge(class, Instant::now()) {
            return true;
        }
        metrics::RATE_LIMITED
            .with_label_values(&[class.as_str()])
            .inc();
        metrics::SESSIONS_CLOSED
            .with_label_values(&["rate_limited"])
            .inc();
        tracing::info!(class = class.as_str(), "over its message budget: closing");
        self.close_for_policy(rate_limit_reason(class), ctx);
        false
    }

    /// Close with 1008 (policy violation), ending the membership (no `resume`).
    fn close_for_policy(&mut self, reason: String, ctx: &mut ws::WebsocketContext<Self>) {
        self.closed = true;
        self.drop_membership(LeaveReason::Disconnected, ctx);
        ctx.close(Some(CloseReason {
            code: CloseCode::Policy,
            description: Some(reason),
        }));
        ctx.stop();
    }

    /// Close a session that is in no room `join_deadline` after it connected (or left).
    fn arm_join_deadline(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let deadline = self.deps.limits.join_deadline;
        ctx.run_later(deadline, move |session, ctx| {
            if session.joined.is_none() && !session.joining && !session.closed {
                metrics::SESSIONS_CLOSED
                    .with_label_values(&["join_deadline"])
                    .inc();
                tracing::debug!("no join before the deadline: closing");
                session.close_for_policy(
                    format!("join deadline: no join within {} s", deadline.as_secs()),
                    ctx,
                );
            }
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let parsed = parse_client_message(text);
        let class = parsed
            .as_ref()
            .map_or(MessageClass::Invalid, MessageClass::of);
        if !self.within_budget(class, ctx) {
            return;
        }
        let msg = match parsed {
            Ok(m) => m,
            Err((code, message)) => {
                metrics::WS_RECEIVED.with_label_values(&["invalid"]).inc();
                return Self::error(ctx, code, message);
            }
        };
        metrics::WS_RECEIVED.with_label_values(&[msg.id()]).inc();
        let request = match msg {
            ClientMessage::Join {
                token,
                name,
                audio,
                video,
            } => return self.join(token, name, audio, video, ctx),
            ClientMessage::Heartbeat => {
                return Self::send(
                    ctx,
                    &ServerMessage::Heartbeat {
                        server_time_ms: now_ms(),
                    },
                )
            }
            ClientMessage::Leave => return self.leave(ctx),
            ClientMessage::Resume {
                token,
                resume_token,
            } => return self.resume(token, resume_token, ctx),
            ClientMessage::Offer { sdp } => ParticipantRequest::Offer(sdp),
            ClientMessage::Answer { sdp } => ParticipantRequest::Answer(sdp),
            ClientMessage::IceCandidate { candidate, .. } => {
                ParticipantRequest::Candidate(candidate)
            }
            ClientMessage::SetAudio { enabled } => ParticipantRequest::SetAudio(enabled),
            ClientMessage::SetVideo { enabled } => ParticipantRequest::SetVideo(enabled),
            ClientMessage::SetDeafened { enabled } => ParticipantRequest::SetDeafened(enabled),
            ClientMessage::SetSources { sources } => ParticipantRequest::SetSources(sources),
            ClientMessage::SetTrackViews { views } => ParticipantRequest::SetTrackViews(views),
        };
        let Some(m) = &self.joined else {
            return Self::reject(ctx, RequestError::NotJoined);
        };
        // Cheap scans of the text, before the room, the link or a parser sees it.
        let capped = match &request {
            ParticipantRequest::Offer(sdp) => self.deps.caps.check_offer(sdp),
            ParticipantRequest::Answer(sdp) => self.deps.caps.check_answer(sdp),
            // No more m-lines than an offer may have, and mids of a sane length.
            ParticipantRequest::SetSources(sources) => {
                let most = self.deps.caps.max_offer_m_lines as usize;
                if !mids_fit(sources.keys(), most) {
                    return Self::error(
                        ctx,
                        ErrorCode::BadMessage,
                        format!("setSources: at most {most} m-lines, each mid 1 to {MAX_MID_BYTES} bytes"),
                    );
                }
                Ok(())
            }
            ParticipantRequest::SetTrackViews(views) => {
                if !mids_fit(views.keys(), MAX_TRACK_VIEWS) {
                    return Self::error(
                        ctx,
                        ErrorCode::BadMessage,
                        format!("setTrackViews: at most {MAX_TRACK_VIEWS} videos, each mid 1 to {MAX_MID_BYTES} bytes"),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = capped {
            return Self::reject(ctx, e.into());
        }
        m.room.do_send(FromParticipant {
            participant_id: m.participant_id.clone(),
            request,
        });
    }

    fn join(
        &mut self,
        token: String,
        name: Option<String>,
        audio: bool,
        video: bool,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(claims) = self.check_entry(&metrics::JOINS, &token, TokenUse::Join, ctx) else {
            return;
        };
        let name = display_name(name.or(claims.name.clone()), &claims.sub);
        let participant = ParticipantInfo {
            participant_id: format!("p-{}", uuid::Uuid::new_v4().simple()),
            user_id: claims.sub,
            name,
            audio,
            video,
            // A client deafened at join says so with `setDeafened` right after `joined`.
            deafened: false,
            // Until the media node reports its peer connected.
            media: Some(ParticipantMedia::Connecting),
        };
        let key = RoomKey {
            community: claims.community,
            room: claims.room,
        };
        let pid = participant.participant_id.clone();
        let (session, evict) = (ctx.address().recipient(), ctx.address().recipient());
        self.enter(&metrics::JOINS, key, pid, ctx, move || JoinRoom {
            participant: participant.clone(),
            session: session.clone(),
            evict: evict.clone(),
        });
    }

    /// Take back a participant whose WebSocket dropped: `resume_token` is `pid.secret`.
    fn resume(
        &mut self,
        token: String,
        resume_token: String,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        // An expired join token still names the room: the resume secret proves the client.
        let Some(claims) = self.check_entry(&metrics::RESUMES, &token, TokenUse::Resume, ctx)
        else {
            return;
        };
        let Some((pid, secret)) = resume_token.split_once('.') else {
            return Self::refuse(ctx, Refusal::MalformedResumeToken);
        };
        let key = RoomKey {
            community: claims.community,
            room: claims.room,
        };
        let (pid, secret) = (pid.to_string(), secret.to_string());
        let (session, evict) = (ctx.address().recipient(), ctx.address().recipient());
        let participant_id = pid.clone();
        let user_id = claims.sub;
        self.enter(&metrics::RESUMES, key, pid, ctx, move || ResumeRoom {
            participant_id: participant_id.clone(),
            user_id: user_id.clone(),
            secret: secret.clone(),
            session: session.clone(),
            evict: evict.clone(),
        });
    }

    /// The token's claims if this session may join (or resume) with it; otherwise the
    /// client gets the error and `outcomes` counts it.
    fn check_entry(
        &self,
        outcomes: &prometheus::IntCounterVec,
        token: &str,
        usage: TokenUse,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Option<Claims> {
        if self.joined.is_some() || self.joining {
            Self::refuse(ctx, Refusal::SessionJoined);
            return None;
        }
        match self.deps.keys.verify_for(token, usage) {
            Ok(claims) => Some(claims),
            Err(e) => {
                outcomes.with_label_values(&[e.code().as_str()]).inc();
                Self::error(ctx, e.code(), e.to_string());
                None
            }
        }
    }

    /// Find (or open) the room and send it `request` (a join or a resume), retrying when
    /// the room was closing at that moment. On success this session is the member `pid`.
    fn enter<M>(
        &mut self,
        outcomes: &'static prometheus::IntCounterVec,
        key: RoomKey,
        pid: String,
        ctx: &mut ws::WebsocketContext<Self>,
        request: impl Fn() -> M + 'static,
    ) where
        M: Message<Result = Result<(), Refusal>> + Send + 'static,
        Room: Handler<M>,
    {
        let registry = self.deps.registry.clone();
        self.joining = true;
        let started = Instant::now();
        let attempt = async move {
            for attempt in 0..JOIN_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(CLOSING_RETRY_WAIT * (1 << (attempt - 1))).await;
                }
                let room = registry
                    .send(GetRoom { key: key.clone() })
                    .await
                    .map_err(|_| Refusal::RegistryGone)??;
                match room.send(request()).await {
                    Ok(Ok(())) => return Ok(room),
                    Ok(Err(Refusal::RoomClosing)) => continue,
                    Ok(Err(r)) => return Err(r),
                    Err(_) => continue, // The room stopped between lookup and join.
                }
            }
            Err(Refusal::KeptClosing)
        };
        // `wait`: no other message of this session is handled until the join settles, so the
        // room's `joined` (queued in our mailbox) goes out before anything that follows.
        ctx.wait(attempt.into_actor(self).map(move |result, session, ctx| {
            session.joining = false;
            match result {
                Ok(room) => {
                    outcomes.with_label_values(&["ok"]).inc();
                    metrics::JOIN_SECONDS.observe(started.elapsed().as_secs_f64());
                    session.joined = Some(Membership {
                        room,
                        participant_id: pid,
                    })
                }
                Err(r) => {
                    outcomes.with_label_values(&[r.code().as_str()]).inc();
                    Self::refuse(ctx, r)
                }
            }
        }));
    }

    fn leave(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        match self.joined.take() {
            Some(m) => {
                m.room.do_send(LeaveRoom {
                    participant_id: m.participant_id,
                    reason: LeaveReason::Left,
                    session: ctx.address().recipient(),
                });
                Self::send(ctx, &ServerMessage::Left);
                self.arm_join_deadline(ctx);
            }
            None => Self::reject(ctx, RequestError::NotInRoom),
        }
    }

    /// Leave the room (if any) for a reason other than `leave`.
    fn drop_membership(&mut self, reason: LeaveReason, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(m) = self.joined.take() {
            m.room.do_send(LeaveRoom {
                participant_id: m.participant_id,
                reason,
                session: ctx.address().recipient(),
            });
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::SESSIONS.inc();
        self.arm_join_deadline(ctx);
        ctx.run_interval(self.deps.heartbeat_interval, |session, ctx| {
            if session.last_heard.elapsed() > session.deps.client_timeout {
                tracing::info!("session timed out");
                session.drop_membership(LeaveReason::Timeout, ctx);
                ctx.close(Some(CloseReason {
                    code: CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
                return;
            }
            ctx.ping(b"");
            Self::send(
                ctx,
                &ServerMessage::Heartbeat {
                    server_time_ms: now_ms(),
                },
            );
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        metrics::SESSIONS.dec();
        // The socket closed without `leave`: the member may come back with `resume`.
        if let Some(m) = self.joined.take() {
            m.room.do_send(SessionLost {
                participant_id: m.participant_id,
                session: ctx.address().recipient(),
            });
        }
    }
}

impl Session {
    /// One fragment of a message: text fragments are joined and handled as one message
    /// once the last arrives; binary ones are refused (once, at their first fragment).
    fn on_fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.fragments = Some(Vec::with_capacity(bytes.len() * 2));
                (bytes, false)
            }
            Item::FirstBinary(_) => {
                self.fragments = None;
                return Self::reject(ctx, RequestError::NotText);
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        // Fragments of a refused binary message (or of nothing) are dropped.
        let Some(buffer) = self.fragments.as_mut() else {
            return;
        };
        if buffer.len() + bytes.len() > MAX_FRAME {
            tracing::info!("fragmented message over {MAX_FRAME} bytes: closing");
            self.fragments = None;
            ctx.close(Some(CloseReason {
                code: CloseCode::Size,
                description: Some(format!("message too large (limit {MAX_FRAME} bytes)")),
            }));
            return ctx.stop();
        }
        buffer.extend_from_slice(&bytes);
        if last {
            let message = self.fragments.take().unwrap_or_default();
            match String::from_utf8(message) {
                Ok(text) => self.on_text(&text, ctx),
                Err(_) => Self::error(ctx, ErrorCode::BadMessage, "message is not UTF-8"),
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closed {
            return;
        }
        self.last_heard = Instant::now();
        // Text is charged once parsed (its class depends on its `id`).
        let class = match &msg {
            Ok(ws::Message::Ping(_)) | Ok(ws::Message::Pong(_)) => Some(MessageClass::Heartbeat),
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(Item::FirstBinary(_))) => {
                Some(MessageClass::Invalid)
            }
            _ => None,
        };
        if class.is_some_and(|class| !self.within_budget(class, ctx)) {
            return;
        }
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Binary(_)) => Self::reject(ctx, RequestError::NotText),
            Ok(ws::Message::Close(reason)) => {
                // A deliberate close (normal, going away, or no code) ends the membership
                // now; other codes (the web client's 4000 while it reconnects) and sockets
                // that just die keep it for a `resume` within the grace period.
                let deliberate = match &reason {
                    None => true,
                    Some(r) => matches!(r.code, CloseCode::Normal | CloseCode::Away),
                };
                if deliberate {
                    self.drop_membership(LeaveReason::Disconnected, ctx);
                }
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) if self.frame_limit.is_set() || matches!(e, ws::ProtocolError::Overflow) => {
                tracing::info!("frame over {MAX_FRAME} bytes: closing");
                ctx.close(Some(CloseReason {
                    code: CloseCode::Size,
                    description: Some(format!("message too large (limit {MAX_FRAME} bytes)")),
                }));
                ctx.stop();
            }
            Err(e) => {
                tracing::info!(error = %e, "websocket protocol error: closing");
                ctx.close(Some(CloseReason {
                    code: CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}

impl Handler<Evicted> for Session {
    type Result = ();
    /// Close without leaving: the participant resumed on another connection, or this node
    /// drains (1012: the browser reconnects and resumes elsewhere).
    fn handle(&mut self, msg: Evicted, ctx: &mut Self::Context) {
        let (code, text) = match msg {
            Evicted::Draining => (CloseCode::Restart, "server draining: reconnect"),
            Evicted::ResumedElsewhere => (
                CloseCode::Other(4001),
                "session resumed on another connection",
            ),
            Evicted::Replaced => (
                CloseCode::Other(4002),
                "you joined this room again from another connection",
            ),
        };
        if code != CloseCode::Restart {
            // The room is done with this connection: no SessionLost from it.
            self.joined = None;
        }
        let reason = CloseReason {
            code,
            description: Some(text.into()),
        };
        ctx.close(Some(reason));
        ctx.stop();
    }
}

impl Handler<Outbound> for Session {
    type Result = ();
    /// A message from the room for our browser.
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        Self::send(ctx, &msg.0);
    }
}

/// The name others see: the requested one (or the token's), else the user id; control and
/// bidirectional-formatting characters removed (they would reorder or hide text in every
/// other member's roster), trimmed, at most [`MAX_NAME_CHARS`].
fn display_name(requested: Option<String>, user_id: &str) -> String {
    let clean = |text: &str| -> String {
        let kept: String = text.chars().filter(|c| !hides_text(*c)).collect();
        kept.trim().chars().take(MAX_NAME_CHARS).collect()
    };
    match requested.map(|n| clean(&n)) {
        Some(name) if !name.is_empty() => name,
        _ => clean(user_id),
    }
}

/// Control characters and the Unicode bidirectional marks, embeddings, overrides and isolates.
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_lose_control_and_bidi_characters() {
        let name = |n: &str| display_name(Some(n.to_string()), "u1");
        assert_eq!(name("  Ada  "), "Ada");
        assert_eq!(name("Ada\u{202E}gpj.exe"), "Adagpj.exe");
        assert_eq!(name("Bob\u{2066}\u{200F}\u{061C}"), "Bob");
        assert_eq!(name("line\nbreak\u{7}\u{0}"), "linebreak");
        assert_eq!(name("Zoë 🎧 Ünïcode"), "Zoë 🎧 Ünïcode");
        assert_eq!(name(&"x".repeat(100)).chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn an_empty_or_invisible_name_falls_back_to_the_user_id() {
        assert_eq!(display_name(None, "u1"), "u1");
        assert_eq!(display_name(Some("  ".into()), "u1"), "u1");
        assert_eq!(display_name(Some("\u{202E}\u{200F}".into()), "u1"), "u1");
        assert_eq!(display_name(None, "u\u{202E}2"), "u2");
    }
}
