//! The signaling node's errors: one enum per boundary, each mapped to the wire's error codes
//! (`conclave_common::protocol::ErrorCode`, listed in docs/protocol.md) here and nowhere else.
//!
//! - [`TokenError`]: an access token refused (at `join` and `resume`).
//! - [`Refusal`]: a `join` or `resume` refused (by the session, the registry or the room).
//! - [`RequestError`]: any other client message refused (the session stays open).
//! - [`StartError`]: the node cannot start (printed; the process exits with status 2).
//!
//! Each message is what the client reads in `error.message`: lowercase, no internals beyond
//! the cause of a cluster failure. Control flow never looks at the text: a room that is
//! closing is [`Refusal::RoomClosing`], which the session retries.

use std::net::SocketAddr;

use conclave_common::caps::CapExceeded;
use conclave_common::cluster::ClusterError;
use conclave_common::protocol::ErrorCode;

use crate::tls::TlsError;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::Invalid(_) => ErrorCode::InvalidToken,
        }
    }
}

/// Why a `join` or `resume` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// This session has joined (or is joining) already.
    #[error("this session has joined already")]
    SessionJoined,
    /// The participant is in the room already (a second join of the same id).
    #[error("participant is already in the room")]
    AlreadyJoined,
    /// The room holds its cap of participants (one node: counted by its roster).
    #[error("room {room} is full ({cap} participants)")]
    RoomFull { room: String, cap: usize },
    /// The room holds its cap of participants (cluster: counted in Redis).
    #[error("the room is full")]
    ClusterRoomFull,
    /// `resumeToken` is not `participantId.secret`.
    #[error("malformed resume token")]
    MalformedResumeToken,
    /// No member with that id and secret waits for a resume here (unknown or expired).
    #[error("nothing to resume (unknown or expired); join again")]
    NothingToResume,
    /// Every live media node is full.
    #[error("no media node has room for a new call; try again later")]
    NoCapacity,
    /// The room could not be placed: the cluster state did not answer (the cause is logged,
    /// never sent: it names internal addresses).
    #[error("cluster state unavailable; try again shortly")]
    Placement,
    /// The room's members could not be read or written in Redis (the cause is logged).
    #[error("cluster state unavailable; try again shortly")]
    Members,
    /// The room's media node was placed but is gone from the cluster state.
    #[error("media node {0} is not registered any more")]
    NodeGone(String),
    /// The room emptied and is stopping. The session asks the registry again; a client
    /// only sees [`Refusal::KeptClosing`].
    #[error("room is closing")]
    RoomClosing,
    /// The room was closing at every attempt.
    #[error("room kept closing; try again")]
    KeptClosing,
    /// The room registry stopped (the node is stopping).
    #[error("room registry unavailable")]
    RegistryGone,
    /// A room asked to move without a cluster (a bug; never sent to a client).
    #[error("rooms move only in cluster mode")]
    NotClustered,
}

impl Refusal {
    /// A placement that failed (the registry's view of a cluster error).
    pub fn placement(e: ClusterError) -> Self {
        match e {
            ClusterError::NoCapacity => Refusal::NoCapacity,
            e => {
                tracing::warn!(error = %e, "room placement failed");
                Refusal::Placement
            }
        }
    }

    /// A member record that could not be written or claimed (the room's view of a cluster
    /// error: the cap is enforced there).
    pub fn members(e: ClusterError) -> Self {
        match e {
            ClusterError::RoomFull => Refusal::ClusterRoomFull,
            e => {
                tracing::warn!(error = %e, "member record not written");
                Refusal::Members
            }
        }
    }

    /// The wire code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::SessionJoined | Refusal::AlreadyJoined => ErrorCode::AlreadyJoined,
            Refusal::RoomFull { .. } | Refusal::ClusterRoomFull => ErrorCode::RoomFull,
            Refusal::MalformedResumeToken | Refusal::NothingToResume => ErrorCode::ResumeFailed,
            Refusal::NoCapacity => ErrorCode::NoCapacity,
            Refusal::Placement | Refusal::Members | Refusal::NodeGone(_) | Refusal::RoomClosing => {
                ErrorCode::Unavailable
            }
            Refusal::KeptClosing | Refusal::RegistryGone | Refusal::NotClustered => {
                ErrorCode::Internal
            }
        }
    }
}

/// Why a message of a client (other than `join` and `resume`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A room request before `join`.
    #[error("send join first")]
    NotJoined,
    /// `leave` before `join`.
    #[error("not in a room")]
    NotInRoom,
    /// The room no longer has this participant.
    #[error("not a member of this room")]
    NotMember,
    /// A second `offer`: after the first, only the server offers.
    #[error("an offer was already sent: the server offers from now on")]
    OfferAlreadySent,
    /// An `answer` with no server offer to answer.
    #[error("answer without a server offer")]
    AnswerWithoutOffer,
    /// An `offer` while the room moves to another media node.
    #[error("the room is moving to another media node; offer again shortly")]
    RoomMoving,
    /// An `offer` the room's media node could not be sent (its link is down).
    #[error("media node unreachable; try again")]
    MediaNodeUnreachable,
    /// A binary or fragmented frame.
    #[error("only unfragmented JSON text frames are accepted")]
    NotText,
    /// Over a cap on what one participant creates (SDP size, m-lines, candidates).
    #[error(transparent)]
    Cap(#[from] CapExceeded),
}

impl RequestError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::NotJoined | RequestError::NotInRoom | RequestError::NotMember => {
                ErrorCode::NotJoined
            }
            RequestError::OfferAlreadySent | RequestError::AnswerWithoutOffer => {
                ErrorCode::InvalidState
            }
            RequestError::RoomMoving | RequestError::MediaNodeUnreachable => ErrorCode::Unavailable,
            RequestError::NotText => ErrorCode::BadMessage,
            RequestError::Cap(e) => e.code(),
        }
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "a token secret is required: set --token-secret or CONCLAVE_TOKEN_SECRET (or use --dev)"
    )]
    NoTokenSecret,
    #[error("the token secret is shorter than 32 bytes: use a random secret of 32 bytes or more (e.g. openssl rand -hex 32)")]
    TokenSecretTooShort,
    #[error("a link secret is required to reach separate media nodes: set --link-secret or CONCLAVE_LINK_SECRET, the same on every node (or use --dev for an unauthenticated link)")]
    NoLinkSecret,
    #[error("--link-secret: {0}")]
    LinkSecret(#[from] conclave_common::link_auth::LinkAuthError),
    /// `--dev` next to real services (`uses`): its open token minting and query API would
    /// reach them. Allowed only with the explicit `--dev-with-real-services`.
    #[error(
        "--dev with {uses} looks like a real deployment: dev mode lets anyone mint tokens \
         at /dev/token and read the query API. Remove --dev, or, for a local test cluster \
         only, add --dev-with-real-services (CONCLAVE_DEV_WITH_REAL_SERVICES=true)"
    )]
    DevWithRealServices { uses: String },
    /// `--allowed-origins` has an entry that is not an origin.
    #[error("{0}")]
    AllowedOrigins(String),
    /// The embedded media node could not start (its UDP socket).
    #[error("{0}")]
    Media(#[from] conclave_media_node::StartError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Turn(#[from] crate::turn::TurnConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The cluster's Redis refused our credentials, or its settings cannot work.
    #[error("cluster redis at {url}: {source}")]
    Redis { url: String, source: ClusterError },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_wire_code() {
        let cases = [
            (Refusal::SessionJoined, "already_joined"),
            (Refusal::AlreadyJoined, "already_joined"),
            (
                Refusal::RoomFull {
                    room: "g".into(),
                    cap: 2,
                },
                "room_full",
            ),
            (Refusal::ClusterRoomFull, "room_full"),
            (Refusal::MalformedResumeToken, "resume_failed"),
            (Refusal::NothingToResume, "resume_failed"),
            (Refusal::NoCapacity, "no_capacity"),
            (Refusal::Placement, "unavailable"),
            (Refusal::Members, "unavailable"),
            (Refusal::NodeGone("m1".into()), "unavailable"),
            (Refusal::RoomClosing, "unavailable"),
            (Refusal::KeptClosing, "internal"),
            (Refusal::RegistryGone, "internal"),
            (Refusal::NotClustered, "internal"),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code().as_str(), code, "{refusal:?}");
        }
    }

    #[test]
    fn each_request_error_and_token_error_has_its_wire_code() {
        let cases = [
            (RequestError::NotJoined, "not_joined"),
            (RequestError::NotInRoom, "not_joined"),
            (RequestError::NotMember, "not_joined"),
            (RequestError::OfferAlreadySent, "invalid_state"),
            (RequestError::AnswerWithoutOffer, "invalid_state"),
            (RequestError::RoomMoving, "unavailable"),
            (RequestError::MediaNodeUnreachable, "unavailable"),
            (RequestError::NotText, "bad_message"),
            (
                CapExceeded::SdpTooLarge { size: 2, limit: 1 }.into(),
                "sdp_too_large",
            ),
            (
                CapExceeded::TooManyCandidates { limit: 1 }.into(),
                "too_many_candidates",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code().as_str(), code, "{error:?}");
        }
        assert_eq!(TokenError::Expired.code().as_str(), "token_expired");
        assert_eq!(
            TokenError::Invalid("x".into()).code().as_str(),
            "invalid_token"
        );
    }

    #[test]
    fn cluster_errors_become_the_refusal_of_their_boundary() {
        assert_eq!(
            Refusal::placement(ClusterError::NoCapacity),
            Refusal::NoCapacity
        );
        assert_eq!(
            Refusal::placement(ClusterError::Timeout).to_string(),
            "cluster state unavailable; try again shortly"
        );
        assert_eq!(
            Refusal::members(ClusterError::RoomFull),
            Refusal::ClusterRoomFull
        );
        assert_eq!(
            Refusal::members(ClusterError::Timeout).to_string(),
            "cluster state unavailable; try again shortly"
        );
    }

    #[test]
    fn messages_stay_as_clients_know_them() {
        assert_eq!(
            Refusal::RoomFull {
                room: "general".into(),
                cap: 25
            }
            .to_string(),
            "room general is full (25 participants)"
        );
        assert_eq!(Refusal::RoomClosing.to_string(), "room is closing");
        assert_eq!(
            Refusal::NothingToResume.to_string(),
            "nothing to resume (unknown or expired); join again"
        );
    }
}
