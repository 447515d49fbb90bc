//! TURN credentials in `joined` (issue 13, item 7), against a real server over real
//! WebSockets: every `joined`, the resume's too, carries `iceServers` with credentials minted
//! for that participant (coturn's REST scheme, checked by recomputing the HMAC here), fresh
//! each time; a server without TURN sends no `iceServers` at all.

use std::time::Duration;

use base64::Engine as _;
use ring::hmac;
use serde_json::json;

use conclave_signaling_node::auth::now_secs;
use conclave_signaling_node::turn::TurnServers;

use crate::support::{start, Options};

const TURN_SECRET: &str = "turn-test-shared-secret";
const UDP: &str = "turn:turn.test:3478?transport=udp";
const TLS: &str = "turns:turn.test:443?transport=tcp";

fn turn(ttl: Duration) -> TurnServers {
    TurnServers::from_flags(&[UDP.into(), TLS.into()], Some(TURN_SECRET), None, ttl)
        .unwrap()
        .unwrap()
}

/// Checks `joined`'s one TURN entry for participant `pid`; returns the expiry it names.
fn check_ice_servers(joined: &serde_json::Value, pid: &str, ttl: u64) -> u64 {
    let servers = joined["iceServers"]
        .as_array()
        .expect("iceServers in joined");
    assert_eq!(servers.len(), 1, "{joined}");
    let server = &servers[0];
    assert_eq!(server["urls"], json!([UDP, TLS]));
    let username = server["username"].as_str().unwrap();
    let (expiry, who) = username.split_once(':').expect("<expiry>:<participant>");
    assert_eq!(who, pid);
    let expiry: u64 = expiry.parse().unwrap();
    let now = now_secs();
    assert!(
        expiry > now && expiry <= now + ttl && expiry + 5 >= now + ttl,
        "expiry {expiry}, now {now}"
    );
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TURN_SECRET.as_bytes());
    let want =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()));
    assert_eq!(server["credential"], want.as_str());
    assert!(
        !joined.to_string().contains(TURN_SECRET),
        "the secret is never sent"
    );
    expiry
}

#[actix_rt::test]
async fn joined_and_resumed_carry_fresh_turn_credentials() {
    let ttl = Duration::from_secs(600);
    let server = start(Options {
        resume_grace: Duration::from_secs(10),
        turn: Some(turn(ttl)),
        ..Options::default()
    });
    let (alice, joined) = server.join("alice", "relay").await;
    let pid = joined["participantId"].as_str().unwrap().to_string();
    let first = check_ice_servers(&joined, &pid, ttl.as_secs());

    // A second later the resume's `joined` has credentials minted then, not the old ones.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    drop(alice);
    let mut alice = server.connect().await;
    alice
        .send(json!({"id": "resume", "token": server.token("alice", "relay"), "resumeToken": joined["resumeToken"]}))
        .await;
    let resumed = alice.expect("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let second = check_ice_servers(&resumed, &pid, ttl.as_secs());
    assert!(
        second > first,
        "fresh credentials on resume: {first} then {second}"
    );

    // Another participant gets its own.
    let (_bob, bob_joined) = server.join("bob", "relay").await;
    let bob = bob_joined["participantId"].as_str().unwrap();
    check_ice_servers(&bob_joined, bob, ttl.as_secs());
}

#[actix_rt::test]
async fn without_turn_joined_has_no_ice_servers() {
    let server = start(Options::default());
    let (_alice, joined) = server.join("alice", "plain").await;
    assert!(joined.get("iceServers").is_none(), "{joined}");
}
