//! Caps on what one participant creates (issue 11, item 2): an offer with hundreds of m-lines,
//! an SDP over the size cap, a flood of trickled candidates, too many tracks and a second room
//! on one session are each refused with their own error code, the hostile session stays
//! joined, and a call in the same room carries on. The signaling node refuses first (cheap
//! scans, before anything goes to the link); the media node refuses the same inputs when they
//! reach it another way (the link is a second way in).

use conclave_signaling_node::limits::{Limits, Rate};
use std::time::{Duration, Instant};

use actix::prelude::*;
use conclave_common::caps::ParticipantCaps;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent, ToMediaNode};
use serde_json::json;
use str0m::media::{Direction, MediaKind};

use crate::support::{media_config, start, valid_offer, Client, Options, Received};

/// A str0m client's offer sending one m-line per kind in `kinds`.
fn offer_sending(kinds: &[MediaKind]) -> String {
    let mut rtc = str0m::Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    for kind in kinds {
        api.add_media(*kind, Direction::SendOnly, None, None, None);
    }
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// A valid offer followed by more (small, sending) audio sections: `m_lines` in all.
fn offer_with_m_lines(m_lines: usize) -> String {
    let mut sdp = valid_offer();
    for i in 2..m_lines {
        sdp.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:x{i}\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
    }
    sdp
}

/// A valid offer padded with attribute lines to at least `bytes`.
fn offer_of_size(bytes: usize) -> String {
    let mut sdp = valid_offer();
    while sdp.len() < bytes {
        sdp.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(990)));
    }
    sdp
}

fn candidate(i: usize) -> String {
    format!(
        "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
        20_000 + i
    )
}

/// Send `count` candidates and collect the errors that come back (other messages, such as a
/// server offer, are skipped); waits at most 30 s.
async fn trickle(c: &mut Client, count: usize, expect_errors: usize) -> Vec<serde_json::Value> {
    for i in 0..count {
        c.send(json!({"id": "iceCandidate", "candidate": candidate(i), "sdpMid": "0", "sdpMLineIndex": 0}))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut errors = Vec::new();
    while errors.len() < expect_errors && Instant::now() < deadline {
        match c.recv(Duration::from_secs(5)).await {
            Received::Message(v) if v["id"] == "error" => errors.push(v),
            Received::Message(_) => {}
            other => panic!("expected errors, got {other:?} after {}", errors.len()),
        }
    }
    errors
}

/// Messages arriving within `wait`, until silence.
async fn drain(c: &mut Client, wait: Duration) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    while let Received::Message(v) = c.recv(wait).await {
        seen.push(v);
    }
    seen
}

#[actix_rt::test]
async fn hostile_sdp_and_candidates_are_refused_and_the_call_goes_on() {
    // The caps are under test, not the message rates (limits.rs): the candidate budget is
    // raised so that the 1,000 candidates meet the cap rather than the rate limit.
    let mut limits = Limits::default();
    limits.session.rates.candidate = Rate::new(1000.0, 2000);
    let server = start(Options {
        limits,
        ..Options::default()
    });
    let (mut alice, _) = server.join("alice", "call").await;
    let (mut bob, _) = server.join("bob", "call").await;
    let (mut mallory, _) = server.join("mallory", "call").await;
    alice.expect("participantJoined").await;
    alice.expect("participantJoined").await;
    bob.expect("participantJoined").await;
    for c in [&mut alice, &mut bob] {
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        c.expect("answer").await;
    }

    // 500 m-lines (≈ 50 KB, under the size cap): refused before parsing.
    let many = offer_with_m_lines(500);
    assert!(many.len() < ParticipantCaps::default().max_sdp_bytes as usize);
    mallory.send(json!({"id": "offer", "sdp": many})).await;
    let e = mallory.expect_error("too_many_m_lines").await;
    assert!(e["message"].as_str().unwrap().contains('4'), "{e}");
    // An SDP over the size cap (200 KiB: the cap is 120 KiB, a frame may hold 256 KiB).
    mallory
        .send(json!({"id": "offer", "sdp": offer_of_size(200 * 1024)}))
        .await;
    mallory.expect_error("sdp_too_large").await;
    mallory
        .send(json!({"id": "answer", "sdp": offer_of_size(200 * 1024)}))
        .await;
    mallory.expect_error("sdp_too_large").await;
    // One room per session: another room, or a resume, on a joined session.
    mallory
        .send(json!({"id": "join", "token": server.token("mallory", "elsewhere")}))
        .await;
    mallory.expect_error("already_joined").await;
    mallory
        .send(json!({"id": "resume", "token": server.token("mallory", "elsewhere"), "resumeToken": "p-x.y"}))
        .await;
    mallory.expect_error("already_joined").await;

    // The refused offers left nothing behind: a valid one is answered.
    mallory
        .send(json!({"id": "offer", "sdp": valid_offer()}))
        .await;
    mallory.expect("answer").await;
    // 1,000 candidates: the first 64 are relayed, every one after is refused.
    let errors = trickle(&mut mallory, 1000, 936).await;
    assert_eq!(errors.len(), 936);
    for e in &errors {
        assert_eq!(e["code"], "too_many_candidates", "{e}");
    }
    assert!(drain(&mut mallory, Duration::from_millis(500))
        .await
        .iter()
        .all(|v| v["id"] != "error"));

    // Mallory is still a member: its state change reaches the others.
    mallory
        .send(json!({"id": "setAudio", "enabled": false}))
        .await;
    // The call goes on: events flow, nobody else saw an error, a newcomer is answered.
    alice
        .send(json!({"id": "setVideo", "enabled": false}))
        .await;
    let seen = drain(&mut bob, Duration::from_millis(500)).await;
    assert!(seen
        .iter()
        .any(|v| v["id"] == "participantState" && v["audio"] == false));
    assert!(seen
        .iter()
        .any(|v| v["id"] == "participantState" && v["video"] == false));
    let (mut carol, joined) = server.join("carol", "call").await;
    assert_eq!(joined["participants"].as_array().unwrap().len(), 3);
    carol
        .send(json!({"id": "offer", "sdp": valid_offer()}))
        .await;
    carol.expect("answer").await;
    for c in [&mut alice, &mut bob] {
        let seen = drain(c, Duration::from_millis(500)).await;
        assert!(seen.iter().all(|v| v["id"] != "error"), "{seen:?}");
        assert!(seen.iter().any(|v| v["id"] == "participantJoined"));
    }

    // A 1 MiB SDP never reaches a parser: the frame limit closes that socket (1009); the
    // others carry on.
    let (mut big, _) = server.join("big", "call").await;
    big.send(json!({"id": "offer", "sdp": offer_of_size(1024 * 1024)}))
        .await;
    match big.recv(Duration::from_secs(10)).await {
        Received::Closed(Some(r)) => assert_eq!(u16::from(r.code), 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    alice.heartbeat_roundtrip().await;
    bob.send(json!({"id": "setAudio", "enabled": false})).await;
    let seen = drain(&mut alice, Duration::from_millis(500)).await;
    assert!(seen
        .iter()
        .any(|v| v["id"] == "participantState" && v["audio"] == false));
}

/// With the signaling node's caps tighter than the media node's, every refusal comes from
/// the signaling node: the offers and candidates it refuses never reached the link (the
/// media node would have accepted them).
#[actix_rt::test]
async fn the_signaling_node_refuses_before_the_link() {
    let three = offer_sending(&[MediaKind::Audio, MediaKind::Video, MediaKind::Video]);
    // Room for that offer (refused for its m-lines, not its size) and for a valid one.
    let small = three.len().max(valid_offer().len()) as u32 + 100;
    let server = start(Options {
        caps: ParticipantCaps {
            max_sdp_bytes: small,
            max_offer_m_lines: 2,
            max_tracks: 2,
            max_remote_candidates: 5,
        },
        ..Options::default()
    });
    let (mut c, _) = server.join("c", "tight").await;
    c.send(json!({"id": "offer", "sdp": three})).await;
    c.expect_error("too_many_m_lines").await;
    c.send(json!({"id": "offer", "sdp": offer_of_size(small as usize + 1)}))
        .await;
    let e = c.expect_error("sdp_too_large").await;
    assert!(
        e["message"].as_str().unwrap().contains(&small.to_string()),
        "{e}"
    );
    c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    c.expect("answer").await;
    let errors = trickle(&mut c, 10, 5).await;
    assert_eq!(errors.len(), 5);
    assert!(errors.iter().all(|e| e["code"] == "too_many_candidates"));
}

/// Collects what a media node sends back over the in-process link.
struct Events(tokio::sync::mpsc::UnboundedSender<MediaEvent>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<FromMediaNode> for Events {
    type Result = ();
    fn handle(&mut self, msg: FromMediaNode, _: &mut Context<Self>) {
        let _ = self.0.send(msg.0);
    }
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<MediaEvent>) -> MediaEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

/// The media node's own defence, reached without a signaling node in front (as a link client
/// would): each cap refused with its code in a `peerError`; the peer it already has stays.
#[actix_rt::test]
async fn the_media_node_refuses_the_same_when_reached_directly() {
    let caps = ParticipantCaps {
        // Above the tracks cap, so that an offer with 5 sending m-lines reaches that check.
        max_offer_m_lines: 8,
        ..ParticipantCaps::default()
    };
    let media = conclave_media_node::start(&media_config(caps)).expect("media node starts");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let events = Events(tx).start().recipient();
    let send = |cmd: MediaCommand| {
        media.commands().do_send(ToMediaNode {
            cmd,
            reply_to: events.clone(),
        })
    };
    let add = |offer: String| MediaCommand::AddPeer {
        room: "acme/direct".into(),
        participant_id: "p-1".into(),
        offer,
        adopt_verifier: conclave_common::link_auth::adopt_verifier("key"),
        sources: Default::default(),
    };
    let code_of = |e: MediaEvent| match e {
        MediaEvent::PeerError { code, .. } => code.as_str(),
        other => panic!("expected peerError, got {other:?}"),
    };

    send(add(offer_with_m_lines(500)));
    assert_eq!(code_of(next(&mut rx).await), "too_many_m_lines");
    // In-process there is no frame limit: a 1 MiB SDP meets the size cap itself.
    send(add(offer_of_size(1024 * 1024)));
    assert_eq!(code_of(next(&mut rx).await), "sdp_too_large");
    let five = offer_sending(&[
        MediaKind::Audio,
        MediaKind::Video,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Video,
    ]);
    send(add(five));
    assert_eq!(code_of(next(&mut rx).await), "too_many_tracks");

    send(add(valid_offer()));
    assert!(matches!(next(&mut rx).await, MediaEvent::Answer { .. }));
    for i in 0..1000 {
        send(MediaCommand::Candidate {
            room: "acme/direct".into(),
            participant_id: "p-1".into(),
            candidate: candidate(i),
        });
    }
    for _ in 0..936 {
        assert_eq!(code_of(next(&mut rx).await), "too_many_candidates");
    }
    send(MediaCommand::Answer {
        room: "acme/direct".into(),
        participant_id: "p-1".into(),
        sdp: offer_of_size(300 * 1024),
    });
    assert_eq!(code_of(next(&mut rx).await), "sdp_too_large");
    // The peer is still there (a second addPeer for it is refused as such).
    send(add(valid_offer()));
    let e = next(&mut rx).await;
    assert!(
        matches!(&e, MediaEvent::PeerError { message, .. } if message.contains("already has a peer")),
        "{e:?}"
    );
}
