//! The internal link's authentication, against a real `media-node` process: unsigned,
//! wrongly signed, stale and replayed upgrades are refused (401) and counted; a signed one gets
//! a hello that proves the node holds the secret; a link cannot steer a peer another link owns,
//! and adopting a peer needs the key bound to its member, not just the link secret.

mod support;

use conclave_common::link::{MediaCommand, MediaEvent};
use conclave_common::link_auth::{self, adopt_key, adopt_verifier, LinkSecret};
use conclave_common::protocol::ErrorCode;
use support::{next_event, open, send, signed_link, Framed, Node, LINK_SECRET};

fn status(result: Result<Framed, awc::error::WsClientError>) -> u16 {
    match result {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    }
}

#[actix_rt::test]
async fn unsigned_wrongly_signed_stale_and_replayed_upgrades_are_refused() {
    let node = Node::start("media-auth", &[]);
    let refused = |reason: &str| {
        format!("conclave_media_link_upgrades_refused_total{{reason=\"{reason}\"}} ")
    };
    let secret = LinkSecret::new(LINK_SECRET).unwrap();
    let now = link_auth::unix_now();

    assert_eq!(status(open(&node, None).await), 401, "unsigned");
    assert_eq!(node.metric(&refused("missing")).await, 1.0);

    let other = LinkSecret::new("another-secret-of-the-right-length-000000").unwrap();
    let (forged, _) = other.sign_upgrade(now);
    assert_eq!(status(open(&node, Some(forged)).await), 401, "other secret");
    assert_eq!(node.metric(&refused("bad_signature")).await, 1.0);

    let (stale, _) = secret.sign_upgrade(now - 2 * link_auth::UPGRADE_WINDOW_SECS);
    assert_eq!(status(open(&node, Some(stale)).await), 401, "stale");
    assert_eq!(node.metric(&refused("stale")).await, 1.0);

    let garbage = "Conclave-Link ts=1,nonce=00,sig=00".to_string();
    assert_eq!(status(open(&node, Some(garbage)).await), 401, "malformed");
    assert_eq!(node.metric(&refused("malformed")).await, 1.0);

    let (good, _) = secret.sign_upgrade(now);
    assert_eq!(status(open(&node, Some(good.clone())).await), 101, "signed");
    assert_eq!(status(open(&node, Some(good)).await), 401, "replayed");
    assert_eq!(node.metric(&refused("replayed")).await, 1.0);

    // And a signed link gets a hello that proves the node holds the secret.
    drop(signed_link(&node).await);
}

fn valid_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// What a garbage `answer` from `link` tells about the peer: `InvalidSdp` means the command
/// reached the peer (the link owns it), `InvalidState` that it was refused as "no peer".
async fn probe(link: &mut Framed) -> ErrorCode {
    send(
        link,
        &MediaCommand::Answer {
            room: "r".into(),
            participant_id: "p".into(),
            sdp: "not sdp".into(),
        },
    )
    .await;
    match next_event(link).await {
        MediaEvent::PeerError { code, .. } => code,
        other => panic!("expected peerError, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_link_cannot_steer_another_links_peer_and_adoption_needs_the_members_key() {
    let node = Node::start("media-auth", &[]);
    let mut owner = signed_link(&node).await;
    let mut other = signed_link(&node).await;
    let refused = "conclave_media_link_commands_refused_total ";

    let key = adopt_key("the member's resume secret", "r", "p");
    send(
        &mut owner,
        &MediaCommand::AddPeer {
            room: "r".into(),
            participant_id: "p".into(),
            offer: valid_offer(),
            adopt_verifier: adopt_verifier(&key),
            sources: Default::default(),
        },
    )
    .await;
    assert!(matches!(
        next_event(&mut owner).await,
        MediaEvent::Answer { .. }
    ));

    // Answer, candidate and removal from the other link do not reach the peer.
    assert_eq!(probe(&mut other).await, ErrorCode::InvalidState);
    send(
        &mut other,
        &MediaCommand::Candidate {
            room: "r".into(),
            participant_id: "p".into(),
            candidate: "candidate:1 1 udp 2122260223 192.0.2.9 9 typ host".into(),
        },
    )
    .await;
    send(
        &mut other,
        &MediaCommand::RemovePeer {
            room: "r".into(),
            participant_id: "p".into(),
        },
    )
    .await;
    // Adoption with the shared link secret but a key of another member fails.
    send(
        &mut other,
        &MediaCommand::AdoptPeer {
            room: "r".into(),
            participant_id: "p".into(),
            adopt_key: adopt_key("a guess", "r", "p"),
            next_adopt_verifier: adopt_verifier("mine now"),
        },
    )
    .await;
    assert!(matches!(
        next_event(&mut other).await,
        MediaEvent::PeerError {
            code: ErrorCode::InvalidState,
            ..
        }
    ));
    // Answer, candidate and adoption were counted (removal of another's peer is ignored
    // quietly: it is also how a stale orphan cleanup ends).
    assert_eq!(node.metric(refused).await, 3.0);
    // The peer is still there, and still the owner's.
    assert_eq!(probe(&mut owner).await, ErrorCode::InvalidSdp);

    // With the member's key the other link takes the peer over; the old owner is refused.
    let rotated = adopt_key("the rotated secret", "r", "p");
    send(
        &mut other,
        &MediaCommand::AdoptPeer {
            room: "r".into(),
            participant_id: "p".into(),
            adopt_key: key.clone(),
            next_adopt_verifier: adopt_verifier(&rotated),
        },
    )
    .await;
    assert_eq!(probe(&mut other).await, ErrorCode::InvalidSdp);
    assert_eq!(probe(&mut owner).await, ErrorCode::InvalidState);

    // The used key is spent: the verifier rotated with the adoption.
    send(
        &mut owner,
        &MediaCommand::AdoptPeer {
            room: "r".into(),
            participant_id: "p".into(),
            adopt_key: key,
            next_adopt_verifier: adopt_verifier("again"),
        },
    )
    .await;
    assert!(matches!(
        next_event(&mut owner).await,
        MediaEvent::PeerError { .. }
    ));
    assert_eq!(probe(&mut other).await, ErrorCode::InvalidSdp);
}
