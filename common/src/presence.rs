//! Presence events: who is in which voice channel, for users who are *not* in the call.
//!
//! A signaling node publishes one [`PresenceEvent`] per join, leave, lost participant and
//! audio/video change. They go to Redis (a Stream per community for consumers that must not
//! miss any, plus a pub/sub channel for live listeners) and optionally to an HTTP webhook.
//! Format, keys and delivery rules: `docs/presence.md`.

use serde::{Deserialize, Serialize};

/// The field of each Stream entry that holds the event's JSON (`XADD key * event <json>`).
pub const STREAM_FIELD: &str = "event";

/// The Redis Stream of a community's presence events: `{prefix}presence:{community}`.
pub fn stream_key(prefix: &str, community: &str) -> String {
    format!("{prefix}presence:{community}")
}

/// The pub/sub channel of a community's presence events: `{prefix}presence-live:{community}`
/// (a name of its own, so that `PSUBSCRIBE {prefix}presence-live:*` catches every community
/// and nobody mistakes the channel for the Stream key).
pub fn channel(prefix: &str, community: &str) -> String {
    format!("{prefix}presence-live:{community}")
}

/// What happened to a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceKind {
    /// The participant joined the room (sent once per join, not on `resume`).
    Joined,
    /// The participant left on purpose (`leave`), or was removed by the server for a reason
    /// other than a lost connection (see `reason`).
    Left,
    /// The participant was removed because its connection was lost and it did not come back
    /// within the resume grace period (or its signaling node died).
    Disconnected,
    /// The participant turned its microphone or camera on or off (`audio`/`video` hold the
    /// new state).
    State,
}

impl PresenceKind {
    /// The name used on the wire (`"joined"`, `"left"`, `"disconnected"`, `"state"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceKind::Joined => "joined",
            PresenceKind::Left => "left",
            PresenceKind::Disconnected => "disconnected",
            PresenceKind::State => "state",
        }
    }
}

/// One presence event, as JSON (camelCase) in the Stream, on the channel and in webhook bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    /// `joined`, `left`, `disconnected` or `state`.
    pub kind: PresenceKind,
    /// The community (server/guild) the room belongs to.
    pub community: String,
    /// The room (voice channel) inside the community.
    pub room: String,
    /// Unique id of this participation (one per join).
    pub participant_id: String,
    /// The user id from the access token (one user may join from several devices).
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Microphone on (after the event).
    pub audio: bool,
    /// Camera on (after the event).
    pub video: bool,
    /// Hears nobody (after the event). Left out when false; absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deafened: bool,
    /// For `left`/`disconnected`: why (`"left"`, `"disconnected"`, `"timeout"`,
    /// `"mediaFailed"`, `"kicked"`, ...). Absent for `joined` and `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the signaling node saw it, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Id of the signaling node instance that published it.
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: PresenceKind, reason: Option<&str>) -> PresenceEvent {
        PresenceEvent {
            kind,
            community: "c1".into(),
            room: "general".into(),
            participant_id: "p1".into(),
            user_id: "u1".into(),
            name: "Ann".into(),
            audio: true,
            video: false,
            deafened: false,
            reason: reason.map(str::to_string),
            at_ms: 1_700_000_000_000,
            node: "sig.ab12cd34".into(),
        }
    }

    #[test]
    fn json_is_camel_case_and_skips_an_absent_reason() {
        let joined = serde_json::to_value(event(PresenceKind::Joined, None)).unwrap();
        assert_eq!(
            joined,
            serde_json::json!({
                "kind": "joined", "community": "c1", "room": "general",
                "participantId": "p1", "userId": "u1", "name": "Ann",
                "audio": true, "video": false, "atMs": 1_700_000_000_000u64,
                "node": "sig.ab12cd34"
            })
        );
        let gone = event(PresenceKind::Disconnected, Some("disconnected"));
        let json = serde_json::to_value(&gone).unwrap();
        assert_eq!(json["kind"], "disconnected");
        assert_eq!(json["reason"], "disconnected");
        let back: PresenceEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, gone);
    }

    #[test]
    fn kinds_and_keys() {
        for kind in [
            PresenceKind::Joined,
            PresenceKind::Left,
            PresenceKind::Disconnected,
            PresenceKind::State,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(stream_key("conclave:", "c1"), "conclave:presence:c1");
        assert_eq!(channel("conclave:", "c1"), "conclave:presence-live:c1");
    }
}
