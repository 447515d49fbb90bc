//! Bad input on the WebSocket gets a clear error (or a clean close) and hurts nobody else.

use std::time::Duration;

use serde_json::json;

use crate::support::{start, valid_offer, Options, Received};

#[actix_rt::test]
async fn malformed_unknown_and_premature_messages_get_clear_errors() {
    let server = start(Options::default());
    let mut c = server.connect().await;

    c.send_text("{this is not json".into()).await;
    c.expect_error("bad_message").await;
    c.send(json!({"id": "teleport"})).await;
    let e = c.expect_error("unknown_message").await;
    assert!(e["message"].as_str().unwrap().contains("teleport"));
    c.send(json!({"no_id": true})).await;
    c.expect_error("bad_message").await;
    c.send(json!({"id": "setAudio", "enabled": "yes"})).await;
    c.expect_error("bad_message").await;
    c.send_binary(vec![1, 2, 3]).await;
    c.expect_error("bad_message").await;

    // Negotiation and leave before join.
    c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"id": "answer", "sdp": "v=0"})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"id": "setVideo", "enabled": false})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"id": "leave"})).await;
    c.expect_error("not_joined").await;

    // The connection is still usable.
    c.heartbeat_roundtrip().await;
}

#[actix_rt::test]
async fn invalid_and_expired_tokens_are_refused() {
    let server = start(Options::default());
    let mut c = server.connect().await;
    c.send(json!({"id": "join", "token": "not.a.jwt"})).await;
    c.expect_error("invalid_token").await;
    let expired = server.token_with_exp("u1", "r", 1_000_000);
    c.send(json!({"id": "join", "token": expired})).await;
    c.expect_error("token_expired").await;
    let forged = {
        let other = conclave_signaling_node::auth::TokenKeys::new(b"someone-else");
        other.mint(&conclave_signaling_node::auth::Claims {
            sub: "u1".into(),
            room: "r".into(),
            community: "test".into(),
            name: None,
            exp: conclave_signaling_node::auth::now_secs() + 60,
        })
    };
    c.send(json!({"id": "join", "token": forged})).await;
    c.expect_error("invalid_token").await;
    // After the refusals, a good token still joins on the same socket.
    c.send(json!({"id": "join", "token": server.token("u1", "r")}))
        .await;
    let joined = c.expect("joined").await;
    assert_eq!(joined["room"], "r");
    assert_eq!(joined["community"], "test");
}

#[actix_rt::test]
async fn oversized_frame_closes_with_1009_and_others_carry_on() {
    let server = start(Options::default());
    let (mut alice, _) = server.join("alice", "big").await;
    let (mut bob, _) = server.join("bob", "big").await;
    alice.expect("participantJoined").await;

    let mut mallory = server.connect().await;
    let huge = format!(
        "{{\"id\":\"heartbeat\",\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    mallory.send_text(huge).await;
    match mallory.recv(Duration::from_secs(10)).await {
        Received::Closed(Some(reason)) => {
            assert_eq!(u16::from(reason.code), 1009, "{reason:?}");
            assert!(reason.description.unwrap_or_default().contains("too large"));
        }
        other => panic!("expected a 1009 close, got {other:?}"),
    }

    // The room still works for the others.
    bob.send(json!({"id": "setVideo", "enabled": false})).await;
    let state = alice.expect("participantState").await;
    assert_eq!(state["video"], false);
}

#[actix_rt::test]
async fn garbage_sdp_is_refused_and_a_good_offer_still_works() {
    let server = start(Options::default());
    let (mut alice, _) = server.join("alice", "sdp").await;
    alice
        .send(json!({"id": "offer", "sdp": "this is not sdp at all"}))
        .await;
    let e = alice.expect_error("invalid_sdp").await;
    assert!(e["message"].as_str().unwrap().contains("SDP"), "{e}");
    // A plausible-looking but unusable SDP.
    alice
        .send(json!({"id": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}))
        .await;
    alice.expect_error("invalid_sdp").await;
    // The refused offers left no peer behind: a valid offer is answered.
    alice
        .send(json!({"id": "offer", "sdp": valid_offer()}))
        .await;
    let answer = alice.expect("answer").await;
    assert!(answer["sdp"].as_str().unwrap().starts_with("v=0"));
    // A second offer breaks the negotiation model.
    alice
        .send(json!({"id": "offer", "sdp": valid_offer()}))
        .await;
    alice.expect_error("invalid_state").await;
    // A garbage answer to nothing.
    alice.send(json!({"id": "answer", "sdp": "garbage"})).await;
    alice.expect_error("invalid_sdp").await;
}

#[actix_rt::test]
async fn a_join_over_the_cap_gets_room_full() {
    let server = start(Options {
        room_cap: 2,
        ..Options::default()
    });
    let (mut a, _) = server.join("a", "small").await;
    let (_b, joined_b) = server.join("b", "small").await;
    assert_eq!(joined_b["participants"].as_array().unwrap().len(), 1);
    a.expect("participantJoined").await;

    let mut c = server.connect().await;
    c.send(json!({"id": "join", "token": server.token("c", "small")}))
        .await;
    let e = c.expect_error("room_full").await;
    assert!(e["message"].as_str().unwrap().contains("full"));
    // The members saw nothing of it.
    a.expect_silence(Duration::from_millis(300)).await;
    // Another room is unaffected.
    c.send(json!({"id": "join", "token": server.token("c", "other")}))
        .await;
    c.expect("joined").await;
}

#[actix_rt::test]
async fn a_second_join_on_one_session_is_refused() {
    let server = start(Options::default());
    let (mut a, _) = server.join("a", "twice").await;
    a.send(json!({"id": "join", "token": server.token("a", "twice")}))
        .await;
    a.expect_error("already_joined").await;
}

#[actix_rt::test]
async fn a_silent_client_is_timed_out_and_the_others_told() {
    let server = start(Options {
        heartbeat: Duration::from_millis(500),
        client_timeout: Duration::from_secs(2),
        ..Options::default()
    });
    let (mut silent, joined) = server.join("silent", "hb").await;
    let silent_id = joined["participantId"].as_str().unwrap().to_string();
    let (mut alive, _) = server.join("alive", "hb").await;
    silent.expect("participantJoined").await;
    // `alive` keeps talking; `silent` never answers pings.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no participantLeft in time"
        );
        alive.send(json!({"id": "heartbeat"})).await;
        if let Received::Message(v) = alive.recv(Duration::from_millis(400)).await {
            if v["id"] == "participantLeft" {
                break v;
            }
        }
    };
    assert_eq!(left["participantId"], silent_id.as_str());
    assert_eq!(left["reason"], "timeout");
    match silent.recv(Duration::from_secs(5)).await {
        Received::Closed(_) => {}
        Received::Message(v) if v["id"] == "participantJoined" => {}
        other => panic!("silent client should be closed, got {other:?}"),
    }
}
