//! Identities bound (issue 11, item 4), against a real server over real WebSockets: a resume
//! must come from the member's own user, rotates the resume secret, and works after the join
//! token expired; one user holds one seat per room (a second join replaces the first).

use std::time::Duration;

use serde_json::json;

use conclave_signaling_node::auth::now_secs;

use crate::support::{start, Options, Received};

#[actix_rt::test]
async fn a_resume_needs_the_members_own_user() {
    let server = start(Options {
        resume_grace: Duration::from_secs(10),
        ..Options::default()
    });
    let (alice, joined) = server.join("alice", "who").await;
    let resume_token = joined["resumeToken"].as_str().unwrap().to_string();
    drop(alice);
    // Mallory holds a valid token for the same room and Alice's resume token (stolen):
    // refused, as if the secret were wrong.
    let mut mallory = server.connect().await;
    mallory
        .send(json!({"id": "resume", "token": server.token("mallory", "who"), "resumeToken": resume_token}))
        .await;
    mallory.expect_error("resume_failed").await;
    // Alice herself gets her seat back.
    let mut alice = server.connect().await;
    alice
        .send(json!({"id": "resume", "token": server.token("alice", "who"), "resumeToken": resume_token}))
        .await;
    let resumed = alice.expect("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
}

#[actix_rt::test]
async fn a_resume_works_after_the_token_expired_and_rotates_the_secret() {
    let server = start(Options {
        resume_grace: Duration::from_secs(15),
        ..Options::default()
    });
    // A token at the edge of its life (valid thanks to the 5 s leeway), expired for good
    // 3 s later.
    let token = server.token_with_exp("alice", "late", now_secs() - 3);
    let mut alice = server.connect().await;
    alice
        .send(json!({"id": "join", "token": token, "name": "Alice"}))
        .await;
    let joined = alice.expect("joined").await;
    let first = joined["resumeToken"].as_str().unwrap().to_string();
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    // A join with it is refused now...
    let mut late = server.connect().await;
    late.send(json!({"id": "join", "token": token})).await;
    late.expect_error("token_expired").await;
    // ...but the member's resume is not.
    drop(alice);
    let mut alice = server.connect().await;
    alice
        .send(json!({"id": "resume", "token": token, "resumeToken": first}))
        .await;
    let resumed = alice.expect("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let second = resumed["resumeToken"].as_str().unwrap().to_string();
    assert_ne!(second, first, "the secret rotates on each resume");
    assert_eq!(
        second.split_once('.').map(|(pid, _)| pid),
        first.split_once('.').map(|(pid, _)| pid),
        "same participant"
    );

    // The old secret resumes nothing any more; the new one does.
    drop(alice);
    let mut replay = server.connect().await;
    replay
        .send(json!({"id": "resume", "token": token, "resumeToken": first}))
        .await;
    replay.expect_error("resume_failed").await;
    let mut alice = server.connect().await;
    alice
        .send(json!({"id": "resume", "token": token, "resumeToken": second}))
        .await;
    assert_eq!(alice.expect("joined").await["resumed"], true);
}

#[actix_rt::test]
async fn a_second_join_of_the_same_user_replaces_the_first() {
    let server = start(Options {
        room_cap: 2,
        ..Options::default()
    });
    let (mut laptop, laptop_joined) = server.join("alice", "seat").await;
    let laptop_id = laptop_joined["participantId"].as_str().unwrap().to_string();
    let (mut bob, _) = server.join("bob", "seat").await;
    laptop.expect("participantJoined").await;
    // Alice again, from her phone: the room is full, but her laptop's seat gives way.
    let (_phone, phone_joined) = server.join("alice", "seat").await;
    let others: Vec<&str> = phone_joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap())
        .collect();
    assert_eq!(others, ["bob"], "{phone_joined}");
    match laptop.recv(Duration::from_secs(5)).await {
        Received::Closed(Some(reason)) => {
            assert_eq!(reason.code, awc::ws::CloseCode::Other(4002), "{reason:?}")
        }
        other => panic!("expected the laptop closed with 4002, got {other:?}"),
    }
    let left = bob.expect("participantLeft").await;
    assert_eq!(
        (left["participantId"].as_str(), left["reason"].as_str()),
        (Some(laptop_id.as_str()), Some("replaced"))
    );
    let joined = bob.expect("participantJoined").await;
    assert_eq!(joined["participant"]["userId"], "alice");
    // The replaced seat cannot be resumed.
    let mut old = server.connect().await;
    old.send(json!({"id": "resume", "token": server.token("alice", "seat"), "resumeToken": laptop_joined["resumeToken"]}))
        .await;
    old.expect_error("resume_failed").await;
}
