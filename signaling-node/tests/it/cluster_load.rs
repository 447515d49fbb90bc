//! The load a room puts on its media node, as Redis shows it between heartbeats: placement
//! reserves a new room's cost and each peer reserves what it adds (`load::join_cost`) on the
//! room's node, so that rooms placed before the node's next heartbeat see it.
//!
//! The media node here is a real process, but it heartbeats under another key prefix: the test
//! writes node `m`'s heartbeats itself (with the process's link URL), so no heartbeat of the
//! node overwrites a reservation while the test reads it.

use std::time::{Duration, Instant};

use conclave_common::cluster::{ClusterStore, NodeInfo, NodeLoad};
use serde_json::json;

use crate::cluster_support::start_redis;
use crate::cluster_support::{eventually, join_and_offer, now_ms, spawn_media_node_with};
use crate::support::{start_cluster, valid_offer, Client, Options, TestServer};

/// Node `m`'s heartbeat as the test writes it: `participants` and `load_fpps` exactly.
async fn beat(store: &ClusterStore, node: &NodeInfo, participants: u32, load_fpps: u64) {
    let load = NodeLoad {
        participants,
        load_fpps,
        ..NodeLoad::default()
    };
    store.heartbeat(node, &load, false, now_ms()).await.unwrap();
}

/// Node `m`'s load in Redis reaches `expected` (the reservation is queued, not awaited).
async fn load_becomes(store: &ClusterStore, expected: u64) {
    eventually(
        Duration::from_secs(5),
        &format!("load of m is {expected}"),
        || async { store.node_load("m").await.unwrap() == Some(expected) },
    )
    .await;
}

/// Read `c`'s messages until one matches.
async fn until(c: &mut Client, matches: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches(&c.expect_any().await) {
        assert!(Instant::now() < deadline, "no matching message");
    }
}

/// Join with the camera off, and offer; the offer is answered.
async fn join_audio_only_and_offer(server: &TestServer, user: &str, room: &str) -> Client {
    let mut c = server.connect().await;
    c.send(json!({"id": "join", "token": server.token(user, room), "video": false}))
        .await;
    c.expect("joined").await;
    c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.expect_any().await;
        assert_ne!(v["id"], "error", "{v}");
        if v["id"] == "answer" {
            return c;
        }
        assert!(Instant::now() < deadline, "no answer");
    }
}

#[actix_rt::test]
async fn each_peer_reserves_what_it_adds_to_the_room_nodes_load_until_the_next_heartbeat() {
    let (_redis, redis_url) = start_redis();
    // The process is node `m` (the signaling node checks the id the link proves), but it
    // heartbeats under `elsewhere:`; `conclave:node:m` is the test's.
    let (_media, link_url, udp) =
        spawn_media_node_with(&redis_url, "m", 100, &["--redis-prefix", "elsewhere:"]);
    let store = ClusterStore::connect(&redis_url, "conclave:")
        .await
        .unwrap();
    let m = NodeInfo {
        id: "m".into(),
        link_url,
        udp_addrs: vec![udp],
        capacity: 100,
        load_capacity: 50_000,
    };
    beat(&store, &m, 0, 1000).await;
    let server = start_cluster(Options::default(), store.clone());

    // The first join places the room on m: a new room reserves 220 (a two-person video
    // call), and the first peer alone adds nothing (nobody to send to or receive from).
    let (_ann, reply) = join_and_offer(&server, "ann", "call").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    load_becomes(&store, 1000 + 220).await;
    assert_eq!(store.node_participants("m").await.unwrap(), Some(1));
    // The second, on video: 110 to ann and ann's 110 to it: 220 more.
    let (mut bob, reply) = join_and_offer(&server, "bob", "call").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    load_becomes(&store, 1220 + 220).await;

    // The node's heartbeat replaces the reservations with its own figure.
    beat(&store, &m, 2, 5000).await;
    assert_eq!(store.node_load("m").await.unwrap(), Some(5000));
    // The third into a 2-person video room: 110 to each of 2, and 2 × 110 to it: 440.
    let (_cat, reply) = join_and_offer(&server, "cat", "call").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    load_becomes(&store, 5000 + 440).await;

    // Bob turns his camera off: he publishes 50 (audio) instead of 110.
    bob.send(json!({"id": "setVideo", "enabled": false})).await;
    // Everyone, bob too, hears of it once the room has applied it.
    until(&mut bob, |v| {
        v["id"] == "participantState" && v["video"] == false
    })
    .await;
    beat(&store, &m, 3, 6000).await;
    // Dee joins with her camera off (50): 50 to each of 3, and ann 110 + bob 50 + cat 110
    // to her: 150 + 270 = 420.
    let _dee = join_audio_only_and_offer(&server, "dee", "call").await;
    load_becomes(&store, 6000 + 420).await;

    // A heartbeat overwrites it again: the node's own figure wins.
    beat(&store, &m, 4, 4620).await;
    assert_eq!(store.node_load("m").await.unwrap(), Some(4620));
}
