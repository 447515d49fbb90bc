//! The messages a room SFU handles (all control traffic, from the node actor), and the one it
//! sends up to the node when it empties. Media arrives as `udp::DatagramBatch`, defined by the
//! socket that sends it.

use std::collections::BTreeMap;

use actix::prelude::*;
use conclave_common::link::FromMediaNode;
use conclave_common::protocol::{TrackSource, TrackView};

/// Create a participant's peer from its SDP offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddPeer {
    pub participant_id: String,
    pub offer: String,
    /// Checks the key of a later `AdoptPeer` (`link_auth::adopt_verifier`).
    pub adopt_verifier: String,
    /// What the client declared its m-lines carry, by mid (`setSources`).
    pub sources: BTreeMap<String, TrackSource>,
    pub link: Recipient<FromMediaNode>,
}

/// The participant's answer to our last offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerAnswer {
    pub participant_id: String,
    pub sdp: String,
    pub link: Recipient<FromMediaNode>,
}

/// How the participant shows the videos it receives, by its mids (only its own link may).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTrackViews {
    pub participant_id: String,
    pub views: BTreeMap<String, TrackView>,
    pub link: Recipient<FromMediaNode>,
}

/// A remote ICE candidate, from the link that sent it (only the peer's own link may).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerCandidate {
    pub participant_id: String,
    pub candidate: String,
    pub link: Recipient<FromMediaNode>,
}

/// Drop a participant's peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemovePeer {
    pub participant_id: String,
    /// Only if its events still go to this link (an orphan whose signaling node never came
    /// back); `None` removes it whoever owns it.
    pub only_if_link: Option<Recipient<FromMediaNode>>,
}

/// Send a peer's events to a new link (its participant resumed on another signaling node),
/// if `adopt_key` matches the peer's adoption verifier.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptPeer {
    pub participant_id: String,
    pub adopt_key: String,
    pub next_adopt_verifier: String,
    pub link: Recipient<FromMediaNode>,
}

/// Stop the room (the node saw it empty).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRoom;

/// Number of peers, for the node's load report.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PeerCount;

/// Sent up to the node (through a `Recipient`) when the room has no peers left. `adds_seen`
/// lets the node tell whether an `AddPeer` is still on its way here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomEmpty {
    pub room: String,
    pub adds_seen: u64,
}
