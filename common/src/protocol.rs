//! Browser <-> signaling-node wire protocol.
//!
//! JSON text frames over one WebSocket, one message type per `id` (as the system we replace).
//! Every type here is documented in `docs/protocol.md` with an example; the two must agree
//! (`common/tests/protocol_doc.rs` parses every example of that page).
//!
//! Negotiation model: one peer connection per participant. The client sends exactly one
//! `offer` after `joined` (its microphone and camera, `sendonly`); from then on only the server
//! offers (`serverOffer`, adding or removing the other participants' tracks) and the client
//! answers (`answer`). Muting is `track.enabled`/`replaceTrack` plus `setAudio`/`setVideo`,
//! never renegotiation. Deafening (hearing nobody) is the client's own business plus
//! `setDeafened`, so the others see it.
//!
//! Compatibility: fields added after version 1 are optional with a default, and the server
//! leaves a `false` flag out (`deafened`), so a client written before them reads every
//! message as before.

use serde::{Deserialize, Serialize};

/// Version of this protocol, sent in `joined`. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Messages a browser sends to the signaling node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "id", rename_all = "camelCase")]
pub enum ClientMessage {
    /// Join the room named in the token.
    ///
    /// ```json
    /// {"id":"join","token":"eyJhbGciOi...","name":"Ada","audio":true,"video":true}
    /// ```
    #[serde(rename_all = "camelCase")]
    Join {
        /// Signed access token (JWT, HS256) naming user, room and community.
        token: String,
        /// Display name shown on the participant's tile.
        #[serde(default)]
        name: Option<String>,
        /// Whether the microphone starts enabled.
        #[serde(default = "default_true")]
        audio: bool,
        /// Whether the camera starts enabled.
        #[serde(default = "default_true")]
        video: bool,
    },
    /// The client's one SDP offer (its own microphone and camera), sent after `joined`.
    ///
    /// ```json
    /// {"id":"offer","sdp":"v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\n..."}
    /// ```
    Offer { sdp: String },
    /// The client's answer to a `serverOffer`.
    ///
    /// ```json
    /// {"id":"answer","sdp":"v=0\r\n..."}
    /// ```
    Answer { sdp: String },
    /// A trickled ICE candidate of the client. Optional: mDNS (`.local`) candidates are
    /// ignored and the server relies on peer-reflexive candidates.
    ///
    /// ```json
    /// {"id":"iceCandidate","candidate":"candidate:1 1 udp 2122260223 192.168.1.5 50000 typ host","sdpMid":"0","sdpMLineIndex":0}
    /// ```
    #[serde(rename_all = "camelCase")]
    IceCandidate {
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_m_line_index: Option<u32>,
    },
    /// Microphone on or off (the client also sets `track.enabled`).
    ///
    /// ```json
    /// {"id":"setAudio","enabled":false}
    /// ```
    SetAudio { enabled: bool },
    /// Camera on or off (the client also sets `track.enabled`).
    ///
    /// ```json
    /// {"id":"setVideo","enabled":false}
    /// ```
    SetVideo { enabled: bool },
    /// Deafened (the client plays no incoming audio) or not. Tells the room only: the media
    /// keeps flowing. Optional: a client that never sends it is never shown deafened.
    ///
    /// ```json
    /// {"id":"setDeafened","enabled":true}
    /// ```
    SetDeafened { enabled: bool },
    /// What each of the client's own m-lines carries, by `mid`: `microphone` or `screen` on an
    /// audio m-line, `camera` or `screen` on a video m-line. Sent before the `offer` it
    /// describes; it holds for later offers too, until the next `setSources`. Optional: an
    /// m-line not declared is `microphone` (audio) or `camera` (video), as before.
    ///
    /// ```json
    /// {"id":"setSources","sources":{"0":"microphone","1":"camera"}}
    /// ```
    SetSources {
        sources: std::collections::BTreeMap<String, TrackSource>,
    },
    /// How the client shows remote videos, by the `mid` of the track (from `serverOffer`):
    /// the size it is drawn at in device pixels, or hidden (off screen, minimised, a tab in
    /// the background). The server sends a video no bigger than needed, and nothing for a
    /// hidden one. A mid not named keeps its last view; until the first, every video comes at
    /// its best. Optional.
    ///
    /// ```json
    /// {"id":"setTrackViews","views":{"k3F":{"width":640,"height":360},"p0Q":{"hidden":true}}}
    /// ```
    SetTrackViews {
        views: std::collections::BTreeMap<String, TrackView>,
    },
    /// Leave the room. The server answers with `left` and keeps the socket open.
    ///
    /// ```json
    /// {"id":"leave"}
    /// ```
    Leave,
    /// Application-level keepalive; the server answers `heartbeat`.
    ///
    /// ```json
    /// {"id":"heartbeat"}
    /// ```
    Heartbeat,
    /// Take over a participant whose WebSocket dropped (the server or the network went away)
    /// instead of joining again: same participant, same media connection, no leave/join
    /// events for the others. Works on any signaling node of the cluster within the resume
    /// grace period. Answered by `joined` with `resumed: true`, or `error` `resume_failed`
    /// (then send `join`).
    ///
    /// ```json
    /// {"id":"resume","token":"eyJhbGciOi...","resumeToken":"p-1f2e.9c1d7e0b4f3a2c5d8e6f1a0b"}
    /// ```
    #[serde(rename_all = "camelCase")]
    Resume {
        /// The access token used to join (it names the room).
        token: String,
        /// `resumeToken` from `joined`.
        resume_token: String,
    },
}

fn default_true() -> bool {
    true
}

/// One participant of a room as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    /// Unique id of this participant (one per join), also the `streamId` of its tracks.
    pub participant_id: String,
    /// The user id from the token.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Microphone enabled.
    pub audio: bool,
    /// Camera enabled.
    pub video: bool,
    /// Hears nobody (`setDeafened`). Left out when false; absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deafened: bool,
    /// Where its media connection stands, so the others can show a tile that is still
    /// connecting or has failed. Absent from a server older than this field: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<ParticipantMedia>,
}

/// Where a participant's media connection stands, as everyone in the room sees it
/// (`media` in `ParticipantInfo` and `participantState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ParticipantMedia {
    /// No media connection yet: joined, offered, or offering again after a failure.
    Connecting,
    /// ICE and DTLS are up: its tracks flow.
    Connected,
    /// ICE lost it; the media node waits for it to come back.
    Disconnected,
    /// Its media connection failed and it has none now (it may try again).
    Failed,
}

impl From<MediaConnectionState> for ParticipantMedia {
    fn from(state: MediaConnectionState) -> Self {
        match state {
            MediaConnectionState::Connected => ParticipantMedia::Connected,
            MediaConnectionState::Disconnected => ParticipantMedia::Disconnected,
            MediaConnectionState::Failed => ParticipantMedia::Failed,
        }
    }
}

/// Kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrackKind {
    Audio,
    Video,
}

/// How a client shows one remote video (`setTrackViews`): `hidden`, or drawn `width` x
/// `height` device pixels (either absent: no bound that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrackView {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u16>,
}

/// What a track shows (or plays: a screen share's audio is `screen` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
}

/// A track the server sends to this client, so the client knows whose tile it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    /// The SDP `mid` of the m-line carrying this track in the client's peer connection.
    /// Opaque (str0m picks it: today three random letters and digits); never parsed.
    pub mid: String,
    /// The `msid` stream id (equal to the owner's participant id).
    pub stream_id: String,
    /// The participant that publishes this track.
    pub participant_id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
}

/// One entry of `iceServers` in `joined`, shaped as WebRTC's `RTCIceServer` so the client can
/// pass it to `RTCPeerConnection` unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `turn:host:3478?transport=udp`, `turns:host:443?transport=tcp`, `stun:host:3478`.
    pub urls: Vec<String>,
    /// TURN user name: `<expiry unix time>:<participant id>` (coturn's `use-auth-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password: base64(HMAC-SHA1(shared secret, username)); valid until the expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Messages the signaling node sends to a browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "id", rename_all = "camelCase")]
pub enum ServerMessage {
    /// The join (or resume) succeeded. `participants` is the roster of the others already in
    /// the room.
    ///
    /// ```json
    /// {"id":"joined","protocolVersion":1,"participantId":"p-1f2e","room":"general","community":"acme","participants":[{"participantId":"p-9a8b","userId":"u2","name":"Bob","audio":true,"video":false}],"heartbeatIntervalMs":10000,"resumeToken":"p-1f2e.9c1d7e0b4f3a2c5d8e6f1a0b","resumeGraceMs":15000,"resumed":false}
    /// ```
    #[serde(rename_all = "camelCase")]
    Joined {
        protocol_version: u32,
        participant_id: String,
        room: String,
        community: String,
        participants: Vec<ParticipantInfo>,
        /// How often the server sends `heartbeat`; the client may treat a silence of
        /// several intervals as a dead connection.
        heartbeat_interval_ms: u64,
        /// Secret for `resume` after the WebSocket drops; keep it for this participant only.
        resume_token: String,
        /// How long after a drop `resume` still works; after it the participant has left.
        resume_grace_ms: u64,
        /// True when this answers `resume`: the media connection is the same one.
        #[serde(default)]
        resumed: bool,
        /// TURN (and STUN) servers for the client's peer connection, with time-limited
        /// credentials minted for this participant, fresh in every `joined`. Absent when the
        /// server has none configured (then the client uses none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The media node's answer to the client's `offer`.
    ///
    /// ```json
    /// {"id":"answer","sdp":"v=0\r\n..."}
    /// ```
    Answer { sdp: String },
    /// A server-initiated offer (tracks of other participants added or removed, several at
    /// once if several changed). `tracks` lists every track the server sends after this offer
    /// is applied; a removed track's m-line stays in the SDP with port 0 and `a=inactive`.
    ///
    /// ```json
    /// {"id":"serverOffer","sdp":"v=0\r\n...","tracks":[{"mid":"k3F","streamId":"p-9a8b","participantId":"p-9a8b","kind":"video","source":"camera"}]}
    /// ```
    ServerOffer { sdp: String, tracks: Vec<TrackInfo> },
    /// Someone joined the room.
    ///
    /// ```json
    /// {"id":"participantJoined","participant":{"participantId":"p-9a8b","userId":"u2","name":"Bob","audio":true,"video":true}}
    /// ```
    ParticipantJoined { participant: ParticipantInfo },
    /// Someone left (`leave`, closed socket, timeout).
    ///
    /// ```json
    /// {"id":"participantLeft","participantId":"p-9a8b","reason":"left"}
    /// ```
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        participant_id: String,
        reason: LeaveReason,
    },
    /// A participant turned its microphone or camera on or off, deafened or undeafened, or
    /// its media connection changed state. Every field is the state after the change;
    /// `deafened` is left out when false, `media` by servers older than it.
    ///
    /// ```json
    /// {"id":"participantState","participantId":"p-9a8b","audio":true,"video":false}
    /// ```
    ///
    /// ```json
    /// {"id":"participantState","participantId":"p-9a8b","audio":false,"video":false,"deafened":true}
    /// ```
    ///
    /// ```json
    /// {"id":"participantState","participantId":"p-9a8b","audio":true,"video":true,"media":"failed"}
    /// ```
    #[serde(rename_all = "camelCase")]
    ParticipantState {
        participant_id: String,
        audio: bool,
        video: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deafened: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<ParticipantMedia>,
    },
    /// The media connection of this client changed state (`connected`, `disconnected`,
    /// `failed`). `failed` means the server has no media peer for this client any more (its
    /// media node died, or the connection timed out): the client creates a fresh peer
    /// connection and sends a new `offer`; the room may be on another media node by then.
    ///
    /// ```json
    /// {"id":"mediaState","state":"connected"}
    /// ```
    MediaState { state: MediaConnectionState },
    /// Dynacast: send only these simulcast layers (rids) of your own m-line `mid`; nobody
    /// takes the others now (set their encodings `active: false`; the rest `true`). Sent when
    /// the set changes; a layer is asked for again as soon as someone wants it. An empty
    /// `active`: nobody takes any layer of that camera now.
    ///
    /// ```json
    /// {"id":"publishLayers","mid":"1","active":["q","h"]}
    /// ```
    PublishLayers { mid: String, active: Vec<String> },
    /// Who speaks now, from the audio levels the media server reads on their packets
    /// (debounced: a pause between words does not end it), and the dominant speaker: the
    /// loudest one speaking, kept while it speaks unless another is clearly louder, and kept
    /// through silence (absent once nobody has spoken yet or it left). Sent on every change.
    /// The client's own id is in `participants` when it speaks.
    ///
    /// ```json
    /// {"id":"speaking","participants":["p-1f2e","p-9a8b"],"dominant":"p-1f2e"}
    /// ```
    Speaking {
        participants: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dominant: Option<String>,
    },
    /// This client left the room (answer to `leave`).
    ///
    /// ```json
    /// {"id":"left"}
    /// ```
    Left,
    /// Something the client sent was refused, or the server failed. `code` is stable.
    ///
    /// ```json
    /// {"id":"error","code":"room_full","message":"room general is full (25 participants)"}
    /// ```
    Error { code: ErrorCode, message: String },
    /// Keepalive, sent every `heartbeatIntervalMs` and in answer to the client's `heartbeat`.
    ///
    /// ```json
    /// {"id":"heartbeat","serverTimeMs":1764171234567}
    /// ```
    #[serde(rename_all = "camelCase")]
    Heartbeat { server_time_ms: u64 },
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaveReason {
    /// Sent `leave`.
    Left,
    /// The WebSocket closed.
    Disconnected,
    /// Silent longer than the heartbeat timeout.
    Timeout,
    /// The media connection failed.
    MediaFailed,
    /// The same user joined the room again (another tab or device): one seat per user.
    Replaced,
}

/// State of a participant's media connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaConnectionState {
    Connected,
    Disconnected,
    Failed,
}

/// Stable error codes. Their meaning never changes; new ones may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or JSON that does not fit the message's shape.
    BadMessage,
    /// The `id` names no message of this protocol.
    UnknownMessage,
    /// The token is missing, malformed, badly signed or names no room.
    InvalidToken,
    /// The token has expired.
    TokenExpired,
    /// The room already holds the maximum number of participants.
    RoomFull,
    /// The message needs a joined session (send `join` first).
    NotJoined,
    /// `join` on a session that has already joined.
    AlreadyJoined,
    /// The SDP could not be parsed or accepted.
    InvalidSdp,
    /// The message is not allowed now (e.g. a second `offer`, an `answer` with no offer).
    InvalidState,
    /// No media node can take the room.
    NoCapacity,
    /// A service the server needs is unreachable; try again later.
    Unavailable,
    /// The server failed; the message was not processed.
    Internal,
    /// `resume` named no participant that can be resumed (unknown, expired, or another
    /// room): join again.
    ResumeFailed,
    /// An `offer` or `answer` whose SDP is over the size cap (refused before parsing).
    SdpTooLarge,
    /// An `offer` with more m-lines than a client sends (refused before parsing).
    TooManyMLines,
    /// An `offer` that publishes more tracks than one participant may.
    TooManyTracks,
    /// An `iceCandidate` past the cap of trickled candidates for this peer.
    TooManyCandidates,
}

impl ErrorCode {
    /// The code as sent on the wire (`room_full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::SdpTooLarge => "sdp_too_large",
            ErrorCode::TooManyMLines => "too_many_m_lines",
            ErrorCode::TooManyTracks => "too_many_tracks",
            ErrorCode::TooManyCandidates => "too_many_candidates",
        }
    }
}

impl TrackSource {
    /// Whether a track of `kind` may carry this source: a microphone is audio, a camera
    /// video, a screen either (its picture, its sound).
    pub fn fits(self, kind: TrackKind) -> bool {
        matches!(
            (self, kind),
            (TrackSource::Microphone, TrackKind::Audio)
                | (TrackSource::Camera, TrackKind::Video)
                | (TrackSource::Screen, _)
        )
    }
}

impl ClientMessage {
    /// The message's `id` on the wire.
    pub fn id(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::IceCandidate { .. } => "iceCandidate",
            ClientMessage::SetAudio { .. } => "setAudio",
            ClientMessage::SetVideo { .. } => "setVideo",
            ClientMessage::SetDeafened { .. } => "setDeafened",
            ClientMessage::SetSources { .. } => "setSources",
            ClientMessage::SetTrackViews { .. } => "setTrackViews",
            ClientMessage::Leave => "leave",
            ClientMessage::Heartbeat => "heartbeat",
            ClientMessage::Resume { .. } => "resume",
        }
    }
}

impl ServerMessage {
    /// The message's `id` on the wire.
    pub fn id(&self) -> &'static str {
        match self {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Answer { .. } => "answer",
            ServerMessage::ServerOffer { .. } => "serverOffer",
            ServerMessage::ParticipantJoined { .. } => "participantJoined",
            ServerMessage::ParticipantLeft { .. } => "participantLeft",
            ServerMessage::ParticipantState { .. } => "participantState",
            ServerMessage::MediaState { .. } => "mediaState",
            ServerMessage::Speaking { .. } => "speaking",
            ServerMessage::PublishLayers { .. } => "publishLayers",
            ServerMessage::Left => "left",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Heartbeat { .. } => "heartbeat",
        }
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// Parse a client frame, telling a frame with an unknown `id` apart from a malformed one.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadMessage, format!("not valid JSON: {e}")))?;
    let id = match value.get("id") {
        Some(serde_json::Value::String(id)) => id.clone(),
        _ => {
            return Err((
                ErrorCode::BadMessage,
                "message has no string field \"id\"".into(),
            ))
        }
    };
    if !KNOWN_CLIENT_IDS.contains(&id.as_str()) {
        return Err((
            ErrorCode::UnknownMessage,
            format!("unknown message id {:?}", truncate(&id, 64)),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        (
            ErrorCode::BadMessage,
            format!("malformed {id:?} message: {e}"),
        )
    })
}

const KNOWN_CLIENT_IDS: &[&str] = &[
    "join",
    "offer",
    "answer",
    "iceCandidate",
    "setAudio",
    "setVideo",
    "setDeafened",
    "setSources",
    "setTrackViews",
    "leave",
    "heartbeat",
    "resume",
];

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_id_is_told_apart_from_malformed() {
        assert_eq!(
            parse_client_message(r#"{"id":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownMessage
        );
        assert_eq!(
            parse_client_message(r#"{"id":"join"}"#).unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message("{not json").unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message(r#"{"noid":1}"#).unwrap_err().0,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn join_defaults_media_on() {
        let m = parse_client_message(r#"{"id":"join","token":"t"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Join {
                token: "t".into(),
                name: None,
                audio: true,
                video: true
            }
        );
    }

    #[test]
    fn deafened_is_optional_both_ways() {
        // A message from a server or client that predates deafen still parses ...
        let old: ParticipantInfo = serde_json::from_str(
            r#"{"participantId":"p","userId":"u","name":"A","audio":true,"video":true}"#,
        )
        .unwrap();
        assert!(!old.deafened);
        // ... and a not-deafened participant looks exactly as it did before.
        assert!(!serde_json::to_string(&old).unwrap().contains("deafened"));
        let deaf = ServerMessage::ParticipantState {
            participant_id: "p".into(),
            audio: false,
            video: true,
            deafened: true,
            media: None,
        };
        assert!(serde_json::to_string(&deaf)
            .unwrap()
            .contains(r#""deafened":true"#));
        assert_eq!(
            parse_client_message(r#"{"id":"setDeafened","enabled":true}"#).unwrap(),
            ClientMessage::SetDeafened { enabled: true }
        );
    }

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadMessage,
            ErrorCode::UnknownMessage,
            ErrorCode::InvalidToken,
            ErrorCode::TokenExpired,
            ErrorCode::RoomFull,
            ErrorCode::NotJoined,
            ErrorCode::AlreadyJoined,
            ErrorCode::InvalidSdp,
            ErrorCode::InvalidState,
            ErrorCode::NoCapacity,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::ResumeFailed,
            ErrorCode::SdpTooLarge,
            ErrorCode::TooManyMLines,
            ErrorCode::TooManyTracks,
            ErrorCode::TooManyCandidates,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
