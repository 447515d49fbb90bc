//! The internal link between signaling nodes and media nodes.
//!
//! On the wire (two processes) each value is one JSON text frame on the media node's internal
//! WebSocket (`/internal/link`); in-process (the embedded default) the same values travel as
//! actix messages. Documented in `docs/protocol.md` ("Internal link").

use std::collections::BTreeMap;

use actix::{Message, Recipient};
use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, MediaConnectionState, TrackInfo, TrackSource, TrackView};

/// A signaling node's request to a media node. Peers are keyed by `participantId`, which is
/// unique per join across the cluster; `room` says which room SFU owns the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MediaCommand {
    /// Create the participant's peer from its offer. Answered by `answer` or `peerError`.
    /// `adoptVerifier` checks a later `adoptPeer`'s key (`link_auth::adopt_verifier`).
    /// `sources` (optional, absent when empty) is what the client declared its m-lines carry,
    /// by the offer's mids (`setSources`); the media node announces each published track to
    /// its subscribers with it (an undeclared or unfitting m-line: `microphone`/`camera`).
    ///
    /// ```json
    /// {"type":"addPeer","room":"acme/general","participantId":"p-1f2e","offer":"v=0\r\n...","adoptVerifier":"9f86d0...","sources":{"0":"microphone","1":"camera","2":"screen"}}
    /// ```
    #[serde(rename_all = "camelCase")]
    AddPeer {
        room: String,
        participant_id: String,
        offer: String,
        adopt_verifier: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sources: BTreeMap<String, TrackSource>,
    },
    /// The client's answer to a server `offer`.
    ///
    /// ```json
    /// {"type":"answer","room":"acme/general","participantId":"p-1f2e","sdp":"v=0\r\n..."}
    /// ```
    #[serde(rename_all = "camelCase")]
    Answer {
        room: String,
        participant_id: String,
        sdp: String,
    },
    /// A remote ICE candidate from the client (`candidate:...` line).
    ///
    /// ```json
    /// {"type":"candidate","room":"acme/general","participantId":"p-1f2e","candidate":"candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host"}
    /// ```
    #[serde(rename_all = "camelCase")]
    Candidate {
        room: String,
        participant_id: String,
        candidate: String,
    },
    /// How the participant shows the videos it receives, by its own mids (the client's
    /// `setTrackViews`, checked): the media node picks each one's simulcast layer by it.
    ///
    /// ```json
    /// {"type":"setTrackViews","room":"acme/general","participantId":"p-1f2e","views":{"k3F":{"width":640,"height":360},"p0Q":{"hidden":true}}}
    /// ```
    #[serde(rename_all = "camelCase")]
    SetTrackViews {
        room: String,
        participant_id: String,
        views: BTreeMap<String, TrackView>,
    },
    /// Drop the participant's peer and stop its tracks at every subscriber.
    ///
    /// ```json
    /// {"type":"removePeer","room":"acme/general","participantId":"p-1f2e"}
    /// ```
    #[serde(rename_all = "camelCase")]
    RemovePeer {
        room: String,
        participant_id: String,
    },
    /// From now on send this peer's events over this link: the participant resumed its
    /// session on this signaling node (its old one died or lost the WebSocket). Answered by
    /// `peerState` (and the server offer still awaiting an answer, if any), or `peerError`
    /// when the peer is gone or `adoptKey` does not match the peer's `adoptVerifier`. On
    /// success `nextAdoptVerifier` replaces the verifier (the member's resume secret rotated).
    ///
    /// ```json
    /// {"type":"adoptPeer","room":"acme/general","participantId":"p-1f2e","adoptKey":"3a7bd3...","nextAdoptVerifier":"c4ca42..."}
    /// ```
    #[serde(rename_all = "camelCase")]
    AdoptPeer {
        room: String,
        participant_id: String,
        adopt_key: String,
        next_adopt_verifier: String,
    },
}

impl MediaCommand {
    pub fn room(&self) -> &str {
        match self {
            MediaCommand::AddPeer { room, .. }
            | MediaCommand::Answer { room, .. }
            | MediaCommand::Candidate { room, .. }
            | MediaCommand::SetTrackViews { room, .. }
            | MediaCommand::RemovePeer { room, .. }
            | MediaCommand::AdoptPeer { room, .. } => room,
        }
    }
}

/// A media node's message to the signaling node that owns the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MediaEvent {
    /// Sent once when the link opens. `udpAddrs` are the advertised media addresses, one per
    /// room thread (`udpAddr` is the first). `proof` (absent only on a node without a link
    /// secret, `--dev`) shows the node holds the link secret:
    /// `link_auth::LinkSecret::hello_proof` of the upgrade's nonce and `nodeId`.
    ///
    /// ```json
    /// {"type":"hello","nodeId":"media-1","udpAddr":"203.0.113.7:40000","udpAddrs":["203.0.113.7:40000","203.0.113.7:40001"],"proof":"5d41a..."}
    /// ```
    #[serde(rename_all = "camelCase")]
    Hello {
        node_id: String,
        udp_addr: String,
        #[serde(default)]
        udp_addrs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// Who speaks in the room now (read from the audio levels on publishers' packets), and
    /// the dominant speaker (the last one, through silence). Sent on every change, to each
    /// signaling node with a peer in the room.
    ///
    /// ```json
    /// {"type":"speaking","room":"acme/general","participants":["p-1f2e"],"dominant":"p-1f2e"}
    /// ```
    #[serde(rename_all = "camelCase")]
    Speaking {
        room: String,
        participants: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dominant: Option<String>,
    },
    /// Dynacast: which simulcast layers (rids) of the publisher's m-line `mid` (its own mid)
    /// any subscriber takes now; the client sends only those (the others are paused until
    /// wanted). Sent to the publisher's link when the set changes.
    ///
    /// ```json
    /// {"type":"publishLayers","room":"acme/general","participantId":"p-1f2e","mid":"1","active":["q"]}
    /// ```
    #[serde(rename_all = "camelCase")]
    PublishLayers {
        room: String,
        participant_id: String,
        mid: String,
        active: Vec<String>,
    },
    /// The answer to `addPeer`.
    ///
    /// ```json
    /// {"type":"answer","room":"acme/general","participantId":"p-1f2e","sdp":"v=0\r\n..."}
    /// ```
    #[serde(rename_all = "camelCase")]
    Answer {
        room: String,
        participant_id: String,
        sdp: String,
    },
    /// A server offer for the participant (tracks added or removed); `tracks` lists all tracks
    /// sent to it once applied.
    ///
    /// ```json
    /// {"type":"offer","room":"acme/general","participantId":"p-1f2e","sdp":"v=0\r\n...","tracks":[]}
    /// ```
    #[serde(rename_all = "camelCase")]
    Offer {
        room: String,
        participant_id: String,
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// The participant's media connection changed state.
    ///
    /// ```json
    /// {"type":"peerState","room":"acme/general","participantId":"p-1f2e","state":"connected"}
    /// ```
    #[serde(rename_all = "camelCase")]
    PeerState {
        room: String,
        participant_id: String,
        state: MediaConnectionState,
    },
    /// A command about this participant failed (bad SDP, unknown peer...).
    ///
    /// ```json
    /// {"type":"peerError","room":"acme/general","participantId":"p-1f2e","code":"invalid_sdp","message":"offer is not valid SDP"}
    /// ```
    #[serde(rename_all = "camelCase")]
    PeerError {
        room: String,
        participant_id: String,
        code: ErrorCode,
        message: String,
    },
}

/// In-process form of a command: the command plus where its events go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToMediaNode {
    pub cmd: MediaCommand,
    pub reply_to: Recipient<FromMediaNode>,
}

/// In-process form of an event.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromMediaNode(pub MediaEvent);
