//! A media-node process in cluster mode: it registers in a real Redis and its heartbeat
//! carries the true participant count as peers come and go through a signaling node.

use std::time::{Duration, Instant};

use conclave_common::cluster::ClusterStore;
use serde_json::json;

use crate::cluster_support::{eventually, join_and_offer, now_ms, spawn_media_node, start_redis};
use crate::support::{remote_media, start_with, valid_offer, Options};

#[actix_rt::test]
async fn heartbeats_register_the_node_and_carry_the_true_participant_count() {
    let (_redis, redis_url) = start_redis();
    let (_media, link_url, _) = spawn_media_node(&redis_url, "media-hb", 7);

    let store = ClusterStore::connect(&redis_url, "conclave:")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "node registered with 0",
        || async { store.node_participants("media-hb").await.unwrap() == Some(0) },
    )
    .await;
    assert_eq!(
        store.node_link_url("media-hb").await.unwrap().as_deref(),
        Some(link_url.as_str())
    );

    // A signaling node using that media node: a participant offers, and leaves.
    let server = start_with(Options::default(), None, Some(remote_media(link_url)));
    let (mut alice, _) = server.join("alice", "hb").await;
    // The link may still be connecting: retry the offer until the media node answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        alice
            .send(json!({"id": "offer", "sdp": valid_offer()}))
            .await;
        let reply = match alice.recv(Duration::from_secs(5)).await {
            crate::support::Received::Message(v) => v,
            other => panic!("no reply to the offer: {other:?}"),
        };
        if reply["id"] == "answer" {
            break;
        }
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "media link never came up");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(
        Duration::from_secs(5),
        "count 1 after the peer joined",
        || async { store.node_participants("media-hb").await.unwrap() == Some(1) },
    )
    .await;
    alice.send(json!({"id": "leave"})).await;
    alice.expect("left").await;
    eventually(
        Duration::from_secs(5),
        "count 0 after the leave",
        || async { store.node_participants("media-hb").await.unwrap() == Some(0) },
    )
    .await;
    // Placement sees the live node.
    assert_eq!(
        store.place_room("test/new", now_ms()).await.unwrap(),
        "media-hb"
    );
}

#[actix_rt::test]
async fn new_rooms_go_to_the_least_loaded_media_node_until_none_has_capacity() {
    let (_redis, redis_url) = start_redis();
    let (_m1, _, udp1) = spawn_media_node(&redis_url, "m1", 1);
    let (_m2, _, udp2) = spawn_media_node(&redis_url, "m2", 1);
    let store = ClusterStore::connect(&redis_url, "conclave:")
        .await
        .unwrap();
    for id in ["m1", "m2"] {
        eventually(
            Duration::from_secs(10),
            "media nodes registered",
            || async { store.node_participants(id).await.unwrap() == Some(0) },
        )
        .await;
    }
    let server = crate::support::start_cluster(Options::default(), store.clone());

    // Equal loads: the lowest id takes the first room; the media node that answers is the
    // one whose UDP address is in the SDP.
    let (_ann, a) = join_and_offer(&server, "ann", "A").await;
    assert_eq!(a["id"], "answer", "{a}");
    let port = |udp: &str| udp.rsplit(':').next().unwrap().to_string();
    assert!(a["sdp"]
        .as_str()
        .unwrap()
        .contains(&format!(" {} typ host", port(&udp1))));
    assert_eq!(
        store.room_node("test/A").await.unwrap().as_deref(),
        Some("m1")
    );
    // m1 is full now: the next room goes to m2.
    let (_bob, b) = join_and_offer(&server, "bob", "B").await;
    assert_eq!(b["id"], "answer", "{b}");
    assert!(b["sdp"]
        .as_str()
        .unwrap()
        .contains(&format!(" {} typ host", port(&udp2))));
    assert_eq!(
        store.room_node("test/B").await.unwrap().as_deref(),
        Some("m2")
    );
    // Both full: a third room is refused with a clear error.
    let (_cat, c) = join_and_offer(&server, "cat", "C").await;
    assert_eq!(c["id"], "error", "{c}");
    assert_eq!(c["code"], "no_capacity", "{c}");
}
