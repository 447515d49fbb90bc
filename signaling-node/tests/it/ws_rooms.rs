//! Room events over the WebSocket: roster, joins, leaves, state changes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{start, valid_offer, Options, Received};

#[actix_rt::test]
async fn roster_events_and_state_reach_every_member() {
    let server = start(Options::default());
    let (mut a, joined_a) = server.join("alice", "g").await;
    assert_eq!(joined_a["protocolVersion"], 1);
    assert!(joined_a["participants"].as_array().unwrap().is_empty());
    let a_id = joined_a["participantId"].as_str().unwrap().to_string();

    let (mut b, joined_b) = server.join("bob", "g").await;
    let roster = joined_b["participants"].as_array().unwrap();
    assert_eq!(roster.len(), 1);
    assert_eq!(roster[0]["participantId"], a_id.as_str());
    assert_eq!(roster[0]["name"], "alice");
    let b_id = joined_b["participantId"].as_str().unwrap().to_string();
    let pj = a.expect("participantJoined").await;
    assert_eq!(pj["participant"]["participantId"], b_id.as_str());
    // The joiner learns the roster from `joined`, not from its own participantJoined.
    b.expect_silence(Duration::from_millis(200)).await;

    a.send(json!({"id": "setAudio", "enabled": false})).await;
    for c in [&mut a, &mut b] {
        let s = c.expect("participantState").await;
        assert_eq!(s["participantId"], a_id.as_str());
        assert_eq!(s["audio"], false);
        assert_eq!(s["video"], true);
    }
    // Setting the same state again is not news.
    a.send(json!({"id": "setAudio", "enabled": false})).await;
    b.expect_silence(Duration::from_millis(300)).await;
    // Not deafened: the field is left out, as before deafen existed.
    assert!(
        joined_b["participants"][0].get("deafened").is_none(),
        "{joined_b}"
    );

    // Deafen is state too: everyone hears of it, once, with the rest of the state.
    a.send(json!({"id": "setDeafened", "enabled": true})).await;
    for c in [&mut a, &mut b] {
        let s = c.expect("participantState").await;
        assert_eq!(s["participantId"], a_id.as_str());
        assert_eq!(
            (&s["audio"], &s["video"], &s["deafened"]),
            (&json!(false), &json!(true), &json!(true))
        );
    }
    a.send(json!({"id": "setDeafened", "enabled": true})).await;
    b.expect_silence(Duration::from_millis(300)).await;

    // A third member sees the muted state in its roster.
    let (_c, joined_c) = server.join("carol", "g").await;
    let alice = joined_c["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participantId"] == a_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(alice["audio"], false);
    assert_eq!(alice["deafened"], true, "{alice}");
    a.expect("participantJoined").await;
    b.expect("participantJoined").await;
    // Undeafened: the field goes again (absent = false).
    a.send(json!({"id": "setDeafened", "enabled": false})).await;
    let s = b.expect("participantState").await;
    assert!(s.get("deafened").is_none(), "{s}");
    a.expect("participantState").await;

    b.send(json!({"id": "leave"})).await;
    b.expect("left").await;
    let l = a.expect("participantLeft").await;
    assert_eq!(l["participantId"], b_id.as_str());
    assert_eq!(l["reason"], "left");

    drop(b);
    // A closed socket is a disconnect.
    drop(_c);
    let l = a.expect("participantLeft").await;
    assert_eq!(l["reason"], "disconnected");
}

#[actix_rt::test]
async fn rooms_are_separate() {
    let server = start(Options::default());
    let (mut a, _) = server.join("a", "one").await;
    let (_b, joined_b) = server.join("b", "two").await;
    assert!(joined_b["participants"].as_array().unwrap().is_empty());
    a.expect_silence(Duration::from_millis(300)).await;
}

#[actix_rt::test]
async fn each_offer_is_answered_with_our_media_address() {
    let server = start(Options::default());
    let (mut a, _) = server.join("a", "media").await;
    let (mut b, _) = server.join("b", "media").await;
    a.expect("participantJoined").await;
    for c in [&mut a, &mut b] {
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        let answer = c.expect("answer").await;
        let sdp = answer["sdp"].as_str().unwrap();
        // Our one host candidate is the media node's UDP socket; we are ICE-lite.
        let candidate = format!("{} {} typ host", server.udp.ip(), server.udp.port());
        assert!(sdp.contains(&candidate), "{sdp}");
        assert!(sdp.contains("a=ice-lite"), "{sdp}");
        // Only Opus and VP8 are offered back.
        assert!(sdp.contains("opus/48000"), "{sdp}");
        assert!(sdp.contains("VP8/90000"), "{sdp}");
        assert!(!sdp.contains("H264"), "{sdp}");
    }
    // Track announcements (`serverOffer`) need connected media: see the browser tests.
}

/// A peer whose media never connects (an offer without candidates, and no UDP ever sent: ICE
/// has nothing to fail on) is dropped after the connect deadline (30 s), and its participant
/// is told; it stays in the room. The others see its media connecting, then failed, then
/// connecting again when it offers again (`media` in the roster and `participantState`).
#[actix_rt::test]
async fn media_that_never_connects_is_dropped_after_the_deadline() {
    let server = start(Options {
        client_timeout: Duration::from_secs(120),
        ..Default::default()
    });
    let (mut a, joined_a) = server.join("a", "never-connects").await;
    let a_id = joined_a["participantId"].as_str().unwrap().to_string();
    let (mut b, joined_b) = server.join("b", "never-connects").await;
    // The newcomer's roster shows that a has no media connection yet ...
    assert_eq!(
        joined_b["participants"][0]["media"], "connecting",
        "{joined_b}"
    );
    // ... and a sees the same of b.
    let pj = a.expect("participantJoined").await;
    assert_eq!(pj["participant"]["media"], "connecting", "{pj}");
    a.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    a.expect("answer").await;
    // Offering is still connecting: not news for b.
    b.expect_silence(Duration::from_millis(300)).await;
    let offered = Instant::now();
    loop {
        match a.recv(Duration::from_secs(45)).await {
            Received::Message(v) if v["id"] == "mediaState" && v["state"] == "failed" => break,
            Received::Message(v) if v["id"] == "mediaState" => {}
            other => panic!("expected mediaState failed, got {other:?}"),
        }
    }
    assert!(
        offered.elapsed() >= Duration::from_secs(25),
        "dropped too early: {:?}",
        offered.elapsed()
    );
    // b sees a's media fail (a itself has `mediaState`, not this).
    let failed = b.expect("participantState").await;
    assert_eq!(failed["participantId"], a_id.as_str(), "{failed}");
    assert_eq!(
        (&failed["media"], &failed["audio"], &failed["video"]),
        (&json!("failed"), &json!(true), &json!(true))
    );
    // Still a member: the room answers a new offer, and b sees a trying again.
    a.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    a.expect("answer").await;
    let again = b.expect("participantState").await;
    assert_eq!(again["media"], "connecting", "{again}");
    // A later change of a's microphone carries the media state along (full state).
    a.send(json!({"id": "setAudio", "enabled": false})).await;
    assert_eq!(a.expect("participantState").await["media"], "connecting");
    assert_eq!(b.expect("participantState").await["media"], "connecting");
}

/// `setSources` (what the client's own m-lines carry) needs a joined session, fits the offer
/// caps, and is taken silently; what it changes shows in the others' `serverOffer` tracks
/// (connected media: e2e/call-split.test.js).
#[actix_rt::test]
async fn source_declarations_are_checked_and_taken_silently() {
    let server = start(Options::default());
    let mut c = server.connect().await;
    c.send(json!({"id": "setSources", "sources": {"0": "microphone", "1": "camera"}}))
        .await;
    c.expect_error("not_joined").await;
    let (mut a, _) = server.join("a", "sources").await;
    let (mut b, _) = server.join("b", "sources").await;
    a.expect("participantJoined").await;
    a.send(json!({"id": "setSources", "sources": {"0": "microphone", "1": "screen"}}))
        .await;
    a.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    // No reply of its own, and nothing for the others: the offer's answer comes next.
    a.expect("answer").await;
    b.expect_silence(Duration::from_millis(300)).await;
    // More m-lines than an offer may have (4), an empty or over-long mid, an unknown source.
    for sources in [
        json!({"0": "microphone", "1": "camera", "2": "screen", "3": "screen", "4": "screen"}),
        json!({"": "camera"}),
        json!({"x".repeat(33): "camera"}),
        json!({"1": "window"}),
    ] {
        a.send(json!({"id": "setSources", "sources": sources}))
            .await;
        a.expect_error("bad_message").await;
    }
}
