//! The cluster with real parts: a Redis server and media-node processes on 127.0.0.1, two or
//! more signaling nodes (in this process, or as processes when one must be killed).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use conclave_common::cluster::{ClusterStore, NodeInfo, NodeLoad};
use futures_util::future::join_all;
use serde_json::json;

use crate::cluster_support::*;
use crate::support::{start_cluster, valid_offer, Client, Options, Received, TestServer};

async fn store(redis_url: &str) -> ClusterStore {
    ClusterStore::connect(redis_url, "conclave:").await.unwrap()
}

async fn registered(store: &ClusterStore, ids: &[&str]) {
    for id in ids {
        eventually(Duration::from_secs(10), "media node registered", || async {
            store.node_participants(id).await.unwrap().is_some()
        })
        .await;
    }
}

fn signaling(store: &ClusterStore, id: &str, grace: Duration, room_cap: usize) -> TestServer {
    start_cluster(
        Options {
            signaling_id: id.into(),
            resume_grace: grace,
            room_cap,
            ..Options::default()
        },
        store.clone(),
    )
}

/// Redis and one registered media node `m1` (capacity 100), killed when dropped.
struct OneMediaNode {
    _redis: TestRedis,
    _media: Proc,
    store: ClusterStore,
}

async fn one_media_node() -> OneMediaNode {
    let (redis, redis_url) = start_redis();
    let (media, _, _) = spawn_media_node(&redis_url, "m1", 100);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    OneMediaNode {
        _redis: redis,
        _media: media,
        store,
    }
}

/// Every node's participant count in Redis equals `expected` (within a few heartbeats).
async fn counts_settle(store: &ClusterStore, expected: &[(&str, u32)]) {
    for (id, n) in expected {
        eventually(
            Duration::from_secs(15),
            &format!("{id} reports {n} participants"),
            || async { store.node_participants(id).await.unwrap() == Some(*n) },
        )
        .await;
    }
}

#[actix_rt::test]
async fn rooms_spread_over_nodes_that_are_not_full_and_counts_follow_the_truth() {
    let (_redis, redis_url) = start_redis();
    // Capacities 4, 8 and 1 participants: c is full after one room.
    let _a = spawn_media_node(&redis_url, "a", 4);
    let _b = spawn_media_node(&redis_url, "b", 8);
    let _c = spawn_media_node(&redis_url, "c", 1);
    let store = store(&redis_url).await;
    registered(&store, &["a", "b", "c"]).await;
    let sig = [
        signaling(&store, "sig-1", Duration::from_secs(1), 25),
        signaling(&store, "sig-2", Duration::from_secs(1), 25),
    ];

    // One participant per room, rooms created one after another through both signaling
    // nodes. No media flows, so the nodes report no load and have the same headroom but for
    // the 220 fpps each placement reserves until the node's next heartbeat: which node takes
    // a room depends on when heartbeats land (sequences worked by hand are in
    // common/tests/cluster.rs, where the test writes the heartbeats). What does not depend on
    // timing: the first room goes to the lowest id, and a node with as many participants as
    // its capacity is skipped, so 13 rooms fill a with 4, b with 8 and c with 1.
    let mut placed = Vec::new();
    let mut clients = Vec::new();
    for i in 0..13 {
        let room = format!("r{i}");
        let (c, reply) = join_and_offer(&sig[i % 2], &format!("u{i}"), &room).await;
        assert_eq!(reply["id"], "answer", "room {room}: {reply}");
        let node = store.room_node(&format!("test/{room}")).await.unwrap();
        placed.push(node.expect("room placed"));
        clients.push(c);
    }
    assert_eq!(placed[0], "a");
    let on = |id: &str| placed.iter().filter(|n| *n == id).count() as u32;
    assert_eq!((on("a"), on("b"), on("c")), (4, 8, 1), "{placed:?}");
    counts_settle(&store, &[("a", 4), ("b", 8), ("c", 1)]).await;
    // Every node is full now.
    let (_d, refused) = join_and_offer(&sig[0], "late", "r-late").await;
    assert_eq!(refused["code"], "no_capacity", "{refused}");

    // Churn: two leave, two vanish without a word (socket dropped), one more joins a room
    // that exists (later joins are not refused by node capacity).
    let mut it = clients.into_iter();
    let (mut r0, r1, mut r2, r3) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
    );
    r0.send(json!({"id": "leave"})).await;
    r0.expect("left").await;
    r2.send(json!({"id": "leave"})).await;
    r2.expect("left").await;
    drop(r1);
    drop(r3);
    let (_extra, reply) = join_and_offer(&sig[1], "extra", "r4").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    // Rooms r0 to r3 lost their one participant, r4 gained one.
    let after = |id: &str| {
        let gone = placed[..4].iter().filter(|n| *n == id).count() as u32;
        let added = u32::from(placed[4] == id);
        on(id) - gone + added
    };
    counts_settle(
        &store,
        &[("a", after("a")), ("b", after("b")), ("c", after("c"))],
    )
    .await;
    let members = store.room_members("test/r1").await.unwrap();
    assert!(members.is_empty(), "vanished member removed: {members:?}");
    assert_eq!(store.room_members("test/r4").await.unwrap().len(), 2);
    let rooms = store.community_rooms("test").await.unwrap();
    // 13 rooms, four of them emptied.
    assert_eq!(rooms.len(), 9, "{rooms:?}");
    drop(it);
}

#[actix_rt::test]
async fn twenty_racing_joins_through_two_signaling_nodes_share_one_room_on_one_media_node() {
    let (_redis, redis_url) = start_redis();
    let _m = [
        spawn_media_node(&redis_url, "m1", 100),
        spawn_media_node(&redis_url, "m2", 100),
        spawn_media_node(&redis_url, "m3", 100),
    ];
    let store = store(&redis_url).await;
    registered(&store, &["m1", "m2", "m3"]).await;
    let sig = [
        signaling(&store, "sig-1", Duration::from_secs(1), 25),
        signaling(&store, "sig-2", Duration::from_secs(1), 25),
    ];
    // Each client joins, offers, and collects the roster from `joined` and later events
    // until it knows all 19 others, whichever signaling node they are on.
    let member = |i: usize| {
        let server = &sig[i % 2];
        async move {
            let mut c = server.connect().await;
            let token = server.token(&format!("u{i}"), "race");
            c.send(json!({"id": "join", "token": token})).await;
            let joined = c.expect("joined").await;
            let mut known: HashSet<String> = joined["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["participantId"].as_str().unwrap().to_string())
                .collect();
            c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
            let mut answered = false;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !(answered && known.len() == 19) {
                let wait = deadline.saturating_duration_since(Instant::now());
                match c.recv(wait).await {
                    Received::Message(v) if v["id"] == "answer" => answered = true,
                    Received::Message(v) if v["id"] == "participantJoined" => {
                        known.insert(v["participant"]["participantId"].as_str().unwrap().into());
                    }
                    Received::Message(v) if v["id"] == "error" => panic!("u{i}: {v}"),
                    Received::Message(_) => {}
                    other => panic!(
                        "u{i} knows {} others, answered {answered}: {other:?}",
                        known.len()
                    ),
                }
            }
            c
        }
    };
    let _clients = join_all((0..20).map(member)).await;
    let node = store.room_node("test/race").await.unwrap().expect("placed");
    let mut expected = vec![("m1", 0), ("m2", 0), ("m3", 0)];
    for e in &mut expected {
        if e.0 == node {
            e.1 = 20;
        }
    }
    counts_settle(&store, &expected).await;
    assert_eq!(store.room_members("test/race").await.unwrap().len(), 20);
}

#[actix_rt::test]
async fn the_room_cap_holds_across_signaling_nodes() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let sig = [
        signaling(&store, "sig-1", Duration::from_secs(1), 5),
        signaling(&store, "sig-2", Duration::from_secs(1), 5),
    ];
    let sig = &sig;
    let joins = (0..10).map(|i| async move {
        let mut c = sig[i % 2].connect().await;
        c.send(json!({"id": "join", "token": sig[i % 2].token(&format!("u{i}"), "capped")}))
            .await;
        let reply = c.expect_any().await;
        (c, reply)
    });
    let replies: Vec<_> = join_all(joins).await;
    let ok = replies.iter().filter(|(_, r)| r["id"] == "joined").count();
    let full = replies
        .iter()
        .filter(|(_, r)| r["code"] == "room_full")
        .count();
    assert_eq!(
        (ok, full),
        (5, 5),
        "{:?}",
        replies.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn a_room_placed_on_a_node_that_cannot_be_reached_moves_to_a_live_one() {
    let (_redis, redis_url) = start_redis();
    let _b = spawn_media_node(&redis_url, "b", 100);
    let store = store(&redis_url).await;
    registered(&store, &["b"]).await;
    // "a" heartbeats as a fresh, empty node (it wins placement), but nothing listens at its
    // link: it died right after its last heartbeat.
    let closed = free_port();
    let ghost = NodeInfo {
        id: "a".into(),
        link_url: format!("ws://127.0.0.1:{closed}/internal/link"),
        udp_addrs: vec!["127.0.0.1:9".into()],
        capacity: 100,
        load_capacity: conclave_common::load::default_capacity(1),
    };
    store
        .heartbeat(&ghost, &NodeLoad::default(), false, now_ms())
        .await
        .unwrap();
    let sig = signaling(&store, "sig-1", Duration::from_secs(1), 25);

    let started = Instant::now();
    let (mut c, reply) = join_and_offer(&sig, "u1", "stranded").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    assert_eq!(
        store.room_node("test/stranded").await.unwrap().as_deref(),
        Some("b")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The unreachable node is out of placement now, not after its heartbeat goes stale.
    let (_c2, reply) = join_and_offer(&sig, "u2", "next").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    assert_eq!(
        store.room_node("test/next").await.unwrap().as_deref(),
        Some("b")
    );
    c.send(json!({"id": "leave"})).await;
    c.expect("left").await;
}

/// After `mediaState failed` (other messages skipped), offer again until the room's new
/// media node answers (its link may still be connecting).
async fn offer_again_after_failure(c: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.expect_any().await;
        if v["id"] == "mediaState" && v["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "no mediaState failed");
    }
    loop {
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        let v = loop {
            let v = c.expect_any().await;
            if v["id"] == "answer" || v["id"] == "error" {
                break v;
            }
        };
        if v["id"] == "answer" {
            return;
        }
        assert_eq!(v["code"], "unavailable", "{v}");
        assert!(
            Instant::now() < deadline,
            "the new media node never answered"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn a_killed_media_node_counts_nothing_and_keeps_no_room_that_moved_away() {
    let (_redis, redis_url) = start_redis();
    let (mut m1, _, _) = spawn_media_node(&redis_url, "m1", 100);
    let _m2 = spawn_media_node(&redis_url, "m2", 100);
    let store = store(&redis_url).await;
    registered(&store, &["m1", "m2"]).await;
    let sig = signaling(&store, "sig-1", Duration::from_secs(5), 25);
    // Equal headroom: the room goes to the lower id, m1.
    let (mut ann, a) = join_and_offer(&sig, "ann", "call").await;
    assert_eq!(a["id"], "answer", "{a}");
    let (mut bob, b) = join_and_offer(&sig, "bob", "call").await;
    assert_eq!(b["id"], "answer", "{b}");
    assert_eq!(
        store.room_node("test/call").await.unwrap().as_deref(),
        Some("m1")
    );
    counts_settle(&store, &[("m1", 2)]).await;

    m1.kill();
    let killed = Instant::now();
    // The room moves to m2 and both members offer there.
    offer_again_after_failure(&mut ann).await;
    offer_again_after_failure(&mut bob).await;
    assert_eq!(
        store.room_node("test/call").await.unwrap().as_deref(),
        Some("m2")
    );
    counts_settle(&store, &[("m2", 2)]).await;

    // m1 is still listed (its hash lives 15 s after its last heartbeat): dead, counting
    // none of the members m2 now counts, with the real age of its last heartbeat.
    let mut res = awc::Client::new()
        .get(format!("{}/api/nodes", sig.base))
        .insert_header((
            "Authorization",
            format!("Bearer {}", crate::support::API_KEY),
        ))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = res.json().await.unwrap();
    let since_kill = killed.elapsed().as_millis() as u64;
    let nodes = v["mediaNodes"].as_array().expect("mediaNodes");
    let m1 = nodes.iter().find(|n| n["id"] == "m1").expect("m1 listed");
    assert_eq!(m1["live"], false, "{v}");
    assert_eq!(m1["participants"], 0, "{v}");
    // It last reported at most one heartbeat period (1 s) before the kill.
    let age = m1["heartbeatAgeMs"].as_u64().unwrap();
    assert!(
        age <= since_kill + 2_000,
        "age {age} ms, killed {since_kill} ms ago: {v}"
    );
    let total: u64 = nodes
        .iter()
        .map(|n| n["participants"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "each member counted once: {v}");

    // The room left m1's room set, and that set expires with m1's hash.
    let mut conn = store.connection_manager();
    let key = "conclave:node:m1:rooms";
    let rooms: Vec<String> = redis::AsyncCommands::smembers(&mut conn, key)
        .await
        .unwrap();
    assert!(rooms.is_empty(), "{rooms:?}");
    let m2_rooms: Vec<String> = redis::AsyncCommands::smembers(&mut conn, "conclave:node:m2:rooms")
        .await
        .unwrap();
    assert_eq!(m2_rooms, ["test/call"]);
    let ttl: i64 = redis::AsyncCommands::pttl(&mut conn, "conclave:node:m2:rooms")
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 15_000,
        "m2's room set expires with m2's hash: {ttl}"
    );
}

#[actix_rt::test]
async fn sockets_dropped_right_after_join_leave_no_member_behind() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let sig = signaling(&store, "sig-1", Duration::from_secs(1), 25);
    let mut stays = sig.connect().await;
    stays
        .send(json!({"id": "join", "token": sig.token("stays", "hasty")}))
        .await;
    stays.expect("joined").await;

    // Each sends `join` and drops its socket at once (the session sees the drop once its
    // join is done, and the member goes after the resume grace).
    for i in 0..5 {
        let mut hasty = sig.connect().await;
        hasty
            .send(json!({"id": "join", "token": sig.token(&format!("h{i}"), "hasty")}))
            .await;
        drop(hasty);
    }
    // Those whose join got through before their socket went (some do not) joined, and leave
    // again after the resume grace: the one who stays sees as many leaves as joins, and Redis
    // ends with only that one.
    let (mut joined, mut left) = (0, 0);
    let until = Instant::now() + Duration::from_secs(15);
    let settled_after = Instant::now() + Duration::from_secs(1);
    loop {
        if let Received::Message(m) = stays.recv(Duration::from_millis(300)).await {
            match m["id"].as_str() {
                Some("participantJoined") => joined += 1,
                Some("participantLeft") => left += 1,
                _ => {}
            }
        }
        let members = store.room_members("test/hasty").await.unwrap().len();
        if Instant::now() > settled_after && joined == left && members == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "joined {joined}, left {left}, members {members}"
        );
    }
}

#[actix_rt::test]
async fn members_on_two_signaling_nodes_see_each_other_and_resume_across_nodes() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let grace = Duration::from_secs(5);
    let (s1, s2) = (
        signaling(&store, "sig-1", grace, 25),
        signaling(&store, "sig-2", grace, 25),
    );
    let (mut ann, ann_joined) = s1.join("ann", "shared").await;
    ann.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    ann.expect("answer").await;
    let (mut bob, bob_joined) = s2.join("bob", "shared").await;
    assert_eq!(
        bob_joined["participants"][0]["userId"], "ann",
        "{bob_joined}"
    );
    let bob_id = bob_joined["participantId"].as_str().unwrap().to_string();
    let j = ann.expect("participantJoined").await;
    assert_eq!(j["participant"]["participantId"], bob_id.as_str());
    // State travels across signaling nodes too.
    bob.send(json!({"id": "setAudio", "enabled": false})).await;
    bob.expect("participantState").await; // His own, as everyone gets it.
    let st = ann.expect("participantState").await;
    assert_eq!(
        (st["participantId"].as_str(), &st["audio"]),
        (Some(bob_id.as_str()), &json!(false))
    );
    // Deafen too, through the room record and event of the other node.
    bob.send(json!({"id": "setDeafened", "enabled": true}))
        .await;
    bob.expect("participantState").await;
    let st = ann.expect("participantState").await;
    assert_eq!(
        (st["participantId"].as_str(), &st["deafened"]),
        (Some(bob_id.as_str()), &json!(true)),
        "{st}"
    );

    // Ann's socket drops; she resumes on the *other* signaling node.
    let ann_token = s1.token("ann", "shared");
    let resume_token = ann_joined["resumeToken"].as_str().unwrap().to_string();
    drop(ann);
    let mut ann2 = s2.connect().await;
    ann2.send(json!({"id": "resume", "token": ann_token, "resumeToken": resume_token}))
        .await;
    let resumed = ann2.expect("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["participants"][0]["participantId"], bob_id.as_str());
    assert_eq!(resumed["participants"][0]["deafened"], true, "{resumed}");
    // Bob saw no leave and no join for her.
    bob.expect_silence(Duration::from_secs(2)).await;
    let members = store.room_members("test/shared").await.unwrap();
    let ann_rec = members
        .iter()
        .find(|m| m.participant.user_id == "ann")
        .unwrap();
    assert!(ann_rec.signaling.starts_with("sig-2."), "{ann_rec:?}");
    // Past sig-1's grace period she is still there (it is sig-2's member now).
    actix_rt::time::sleep(grace + Duration::from_secs(1)).await;
    bob.expect_silence(Duration::from_millis(100)).await;
    // A wrong secret is refused, and says what to do.
    let mut mallory = s1.connect().await;
    mallory
        .send(json!({"id": "resume", "token": s1.token("ann", "shared"), "resumeToken": format!("{}.nope", ann_rec.participant.participant_id)}))
        .await;
    mallory.expect_error("resume_failed").await;
    // Her leave reaches Bob on the other node.
    ann2.send(json!({"id": "leave"})).await;
    ann2.expect("left").await;
    let l = bob.expect("participantLeft").await;
    assert_eq!(l["reason"], "left");
    assert_eq!(store.room_members("test/shared").await.unwrap().len(), 1);
}

#[actix_rt::test]
async fn a_member_who_resumes_back_on_its_first_signaling_node_is_its_member_again() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let grace = Duration::from_secs(3);
    let (s1, s2) = (
        signaling(&store, "sig-1", grace, 25),
        signaling(&store, "sig-2", grace, 25),
    );
    let (mut ann, ann_joined) = s1.join("ann", "back").await;
    ann.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    ann.expect("answer").await;
    let (mut bob, _) = s1.join("bob", "back").await;
    let token = s1.token("ann", "back");
    let resume_token = ann_joined["resumeToken"].as_str().unwrap().to_string();
    let resume = json!({"id": "resume", "token": token, "resumeToken": resume_token});

    // sig-1 -> sig-2 -> sig-1, each socket dropped; sig-1 still holds her (within its grace).
    drop(ann);
    let mut on_s2 = s2.connect().await;
    on_s2.send(resume.clone()).await;
    let on_s2_joined = on_s2.expect("joined").await;
    assert_eq!(on_s2_joined["resumed"], true);
    drop(on_s2);
    // The resume rotated her secret: the old one no longer works, even on sig-1, which
    // still holds her (stale) with it.
    let mut stale = s1.connect().await;
    stale.send(resume).await;
    stale.expect_error("resume_failed").await;
    let mut back = s1.connect().await;
    back.send(json!({"id": "resume", "token": token, "resumeToken": on_s2_joined["resumeToken"]}))
        .await;
    assert_eq!(back.expect("joined").await["resumed"], true);
    let owner = |members: Vec<conclave_common::cluster::MemberRecord>| {
        members
            .into_iter()
            .find(|m| m.participant.user_id == "ann")
            .map(|m| m.signaling)
    };
    let members = store.room_members("test/back").await.unwrap();
    assert!(
        owner(members).is_some_and(|o| o.starts_with("sig-1.")),
        "sig-1 claimed her back in Redis"
    );
    // sig-2's grace runs out: it finds she is not its member any more and leaves her be.
    actix_rt::time::sleep(grace + Duration::from_secs(1)).await;
    let members = store.room_members("test/back").await.unwrap();
    assert!(owner(members).is_some_and(|o| o.starts_with("sig-1.")));
    bob.expect_silence(Duration::from_millis(500)).await;
    back.send(json!({"id": "leave"})).await;
    back.expect("left").await;
    assert_eq!(bob.expect("participantLeft").await["reason"], "left");
}

#[actix_rt::test]
async fn a_killed_signaling_node_is_cleaned_up_after_the_grace_period() {
    let (_redis, redis_url) = start_redis();
    let _m = spawn_media_node_with(&redis_url, "m1", 100, &["--orphan-grace-secs", "3"]);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    let (mut victim, s1) =
        spawn_signaling_node(&redis_url, "sig-victim", &["--resume-grace-secs", "2"]);
    let s2 = signaling(&store, "sig-2", Duration::from_secs(2), 25);
    let (_cat, reply) = join_and_offer(&s1, "cat", "orphans").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    let (mut dan, reply) = join_and_offer(&s2, "dan", "orphans").await;
    assert_eq!(reply["id"], "answer", "{reply}");
    counts_settle(&store, &[("m1", 2)]).await;

    let killed = Instant::now();
    victim.kill();
    // Cat never comes back: after the instance is stale (5 s) and the grace (2 s), a survivor
    // removes her, and Dan is told.
    let left = loop {
        let v = dan.expect_any().await;
        if v["id"] == "participantLeft" {
            break v;
        }
    };
    let after = killed.elapsed();
    assert_eq!(left["reason"], "disconnected");
    assert!(
        after >= Duration::from_secs(6) && after < Duration::from_secs(15),
        "cleaned up after {after:?}"
    );
    let members = store.room_members("test/orphans").await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    // Her orphaned peer expires on the media node: the count follows.
    counts_settle(&store, &[("m1", 1)]).await;
    // And presence consumers were told.
    let (seen, _) = read_presence(&store, "0").await;
    assert_eq!(
        seen.last(),
        Some(&ev("disconnected", "cat", true, true, Some("disconnected"))),
        "{seen:?}"
    );
}

#[actix_rt::test]
async fn redis_down_mid_call_keeps_the_call_and_refuses_new_joins_until_it_returns() {
    let port = free_port();
    let (redis, redis_url) = start_redis_on(port);
    let _m = spawn_media_node(&redis_url, "m1", 100);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    let sig = signaling(&store, "sig-1", Duration::from_secs(5), 25);
    let (mut ann, _) = join_and_offer(&sig, "ann", "call").await;
    let (mut bob, bob_joined) = sig.join("bob", "call").await;
    ann.expect("participantJoined").await;

    drop(redis); // Redis dies (its data with it).
    bob.send(json!({"id": "setVideo", "enabled": false})).await;
    let st = ann.expect("participantState").await;
    assert_eq!(st["video"], false);
    let mut cat = sig.connect().await;
    cat.send(json!({"id": "join", "token": sig.token("cat", "call")}))
        .await;
    let refused = cat.expect_error("unavailable").await;
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("cluster state"), "{refused}");
    // The Redis client's own error (addresses, os errors) stays in the logs.
    assert!(
        !message.contains("redis")
            && !message.contains("os error")
            && !message.contains("127.0.0.1"),
        "{refused}"
    );
    // A member whose socket drops meanwhile resumes on the node that holds it.
    let resume = json!({"id": "resume", "token": sig.token("bob", "call"),
        "resumeToken": bob_joined["resumeToken"]});
    drop(bob);
    let mut bob = sig.connect().await;
    bob.send(resume).await;
    let resumed = bob.expect("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    ann.expect_silence(Duration::from_millis(500)).await;

    // Redis returns empty: the media node re-registers, the room re-asserts its members, and
    // joins work again.
    let (_redis2, _) = start_redis_on(port);
    registered(&store, &["m1"]).await;
    eventually(Duration::from_secs(15), "members re-asserted", || async {
        store
            .room_members("test/call")
            .await
            .map(|m| m.len() == 2)
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        store.room_node("test/call").await.unwrap().as_deref(),
        Some("m1")
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cat.send(json!({"id": "join", "token": sig.token("cat", "call")}))
            .await;
        let v = cat.expect_any().await;
        if v["id"] == "joined" {
            assert_eq!(v["participants"].as_array().unwrap().len(), 2, "{v}");
            break;
        }
        assert_eq!(v["code"], "unavailable", "{v}");
        assert!(Instant::now() < deadline, "joins never came back");
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    ann.expect("participantJoined").await;
}

#[actix_rt::test]
async fn a_join_right_after_redis_returns_does_not_wait_for_a_sleeping_reconnection() {
    let port = free_port();
    let (redis, redis_url) = start_redis_on(port);
    let _m = spawn_media_node(&redis_url, "m1", 100);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    let sig = signaling(&store, "sig-1", Duration::from_secs(5), 25);
    let (_ann, a) = join_and_offer(&sig, "ann", "call").await;
    assert_eq!(a["id"], "answer", "{a}");
    let mut cat = sig.connect().await;

    // Redis restarts, losing its data. The signaling node's commands fail meanwhile (its
    // heartbeat every second, the room's re-assertion every 3 s), each starting a reconnection
    // of the store's connection, whose attempt fails too. This command (on the same store)
    // makes sure that has happened before Redis is back, instead of within the next second;
    // the sleep lets its attempt run (starting Redis below blocks this thread, where the
    // store's reconnection runs).
    drop(redis);
    assert!(store.room_node("test/call").await.is_err());
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    let (_redis2, _) = start_redis_on(port);
    let started = Instant::now();
    cat.send(json!({"id": "join", "token": sig.token("cat", "call")}))
        .await;
    let v = cat.expect_any().await;
    let waited = started.elapsed();
    assert_eq!(v["id"], "joined", "{v}");
    // Not behind a reconnection sleeping in the redis crate's backoff (at least 1 s).
    assert!(
        waited < Duration::from_millis(600),
        "the join waited {waited:?}"
    );
}

#[actix_rt::test]
async fn a_signaling_node_waits_for_an_unreachable_redis_and_says_so() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let mut child = std::process::Command::new(sibling_bin("signaling-node"))
        .args(["--listen", "127.0.0.1:0", "--redis-url", &url])
        .args(["--dev", "--dev-with-real-services"])
        .args(["--internal-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let said = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("it says what is wrong");
        if line.contains("redis unreachable") {
            break line;
        }
    };
    assert!(said.contains(&url), "names the URL: {said}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running, retrying"
    );
    let _redis = start_redis_on(port);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    assert!(ready.starts_with("listening url="), "{ready}");
    let _ = child.kill();
    let _ = child.wait();
}

#[actix_rt::test]
async fn the_query_api_lists_a_communitys_rooms_and_the_nodes() {
    let (_redis, redis_url) = start_redis();
    let _m = spawn_media_node(&redis_url, "m1", 50);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    let sig = signaling(&store, "sig-1", Duration::from_secs(1), 25);
    let (mut ann, _) = sig.join("ann", "lobby").await;
    let (_bob, _) = sig.join("bob", "music").await;
    ann.send(json!({"id": "setAudio", "enabled": false})).await;
    let client = awc::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut req = client.get(format!("{}{path}", sig.base));
        if let Some(k) = key {
            req = req.insert_header(("Authorization", format!("Bearer {k}")));
        }
        req
    };
    let mut res = get("/api/communities/test/rooms", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let _ = res.body().await;
    eventually(Duration::from_secs(5), "ann muted in redis", || async {
        let mut res = get("/api/communities/test/rooms", Some(crate::support::API_KEY))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = res.json().await.unwrap();
        let rooms = v["rooms"].as_array().unwrap();
        rooms.len() == 2
            && rooms[0]["room"] == "lobby"
            && rooms[0]["mediaNode"] == "m1"
            && rooms[0]["participants"][0]["userId"] == "ann"
            && rooms[0]["participants"][0]["audio"] == false
            && rooms[1]["room"] == "music"
    })
    .await;
    let mut res = get("/api/nodes", Some(crate::support::API_KEY))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["mediaNodes"][0]["id"], "m1", "{v}");
    assert_eq!(v["mediaNodes"][0]["capacity"], 50, "{v}");
    assert_eq!(v["mediaNodes"][0]["live"], true, "{v}");
    // Load in forwarded packets per second, against a capacity in the same unit; one UDP
    // address per room thread.
    assert!(v["mediaNodes"][0]["load"].is_u64(), "{v}");
    assert!(v["mediaNodes"][0]["loadCapacity"].as_u64() > Some(0), "{v}");
    assert!(v["mediaNodes"][0]["cpu"].is_number(), "{v}");
    assert!(v["mediaNodes"][0]["bitsOut"].is_u64(), "{v}");
    let udp = v["mediaNodes"][0]["udpAddrs"].as_array().expect("udpAddrs");
    assert!(!udp.is_empty() && udp.iter().all(|a| a.is_string()), "{v}");
}

/// (kind, participant, audio, video, reason) of each presence event, in Stream order.
type Seen = Vec<(String, String, bool, bool, Option<String>)>;

async fn read_presence(store: &ClusterStore, after: &str) -> (Seen, String) {
    let mut conn = store.connection_manager();
    let events = conclave_signaling_node::presence::read_stream(
        &mut conn,
        store.prefix(),
        "test",
        after,
        1000,
    )
    .await
    .unwrap();
    let last = events
        .last()
        .map(|(id, _)| id.clone())
        .unwrap_or(after.into());
    let seen = events
        .into_iter()
        .map(|(_, e)| {
            let kind = serde_json::to_value(e.kind)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            (kind, e.user_id, e.audio, e.video, e.reason)
        })
        .collect();
    (seen, last)
}

/// Read from `after` until at least `n` events came (5 s at most).
async fn read_at_least(store: &ClusterStore, after: &str, n: usize) -> (Seen, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (seen, last) = read_presence(store, after).await;
        if seen.len() >= n || Instant::now() > deadline {
            return (seen, last);
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ev(
    kind: &str,
    user: &str,
    audio: bool,
    video: bool,
    reason: Option<&str>,
) -> (String, String, bool, bool, Option<String>) {
    (
        kind.into(),
        user.into(),
        audio,
        video,
        reason.map(String::from),
    )
}

#[actix_rt::test]
async fn a_presence_consumer_sees_the_exact_sequence_and_catches_up_after_a_restart() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let sig = signaling(&store, "sig-1", Duration::from_secs(1), 25);

    let (mut ann, _) = sig.join("ann", "voice").await;
    let (mut bob, _) = sig.join("bob", "voice").await;
    ann.send(json!({"id": "setAudio", "enabled": false})).await;
    ann.expect("participantJoined").await;
    ann.expect("participantState").await;
    // The consumer reads what is there, then stops.
    let (first, last) = read_at_least(&store, "0", 3).await;
    assert_eq!(
        first,
        vec![
            ev("joined", "ann", true, true, None),
            ev("joined", "bob", true, true, None),
            ev("state", "ann", false, true, None),
        ]
    );
    // While it is down: Bob leaves, Ann turns her camera off, then her socket drops and she
    // never comes back (grace 1 s).
    bob.expect("participantState").await; // Ann's mute.
    bob.send(json!({"id": "leave"})).await;
    bob.expect("left").await;
    ann.expect("participantLeft").await;
    ann.send(json!({"id": "setVideo", "enabled": false})).await;
    ann.expect("participantState").await;
    drop(ann);
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    // Restarted from its last id, it gets exactly the rest, in order.
    let (rest, _) = read_at_least(&store, &last, 3).await;
    assert_eq!(
        rest,
        vec![
            ev("left", "bob", true, true, Some("left")),
            ev("state", "ann", false, false, None),
            ev("disconnected", "ann", false, false, Some("disconnected")),
        ]
    );
}

/// GET `url`: status and JSON body.
async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let mut res = awc::Client::new().get(url).send().await.expect("answers");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[actix_rt::test]
async fn readiness_stays_up_without_redis_and_flips_while_draining_then_the_node_exits_0() {
    let port = free_port();
    let (redis, redis_url) = start_redis_on(port);
    let _m = spawn_media_node(&redis_url, "m1", 100);
    let store = store(&redis_url).await;
    registered(&store, &["m1"]).await;
    let (mut node, sig) =
        spawn_signaling_node(&redis_url, "sig-drain", &["--resume-grace-secs", "2"]);
    let internal = node.internal.clone().expect("internal address");
    let ready = format!("{internal}/readyz");
    eventually(Duration::from_secs(10), "ready with redis up", || async {
        let (status, body) = get_json(&ready).await;
        status == 200 && body["redis"] == "up"
    })
    .await;
    let (mut ann, _) = sig.join("ann", "drain").await;

    // Redis goes away: still ready (the call goes on), says so, and refuses new joins.
    drop(redis);
    eventually(Duration::from_secs(10), "ready with redis down", || async {
        let (status, body) = get_json(&ready).await;
        status == 200 && body["redis"] == "down"
    })
    .await;
    let metrics = awc::Client::new()
        .get(format!("{internal}/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("conclave_signaling_redis_up 0"),
        "{metrics}"
    );
    let mut bob = sig.connect().await;
    bob.send(json!({"id": "join", "token": sig.token("bob", "drain")}))
        .await;
    bob.expect_error("unavailable").await;
    let (_redis2, _) = start_redis_on(port);

    // SIGTERM: not ready at once, Ann is asked to reconnect elsewhere (1012), and the node
    // exits 0 once her grace period is over (she never came back).
    let pid = node.proc.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "not ready while draining",
        || async {
            let (status, body) = get_json(&ready).await;
            status == 503 && body["draining"] == true
        },
    )
    .await;
    match ann.recv(Duration::from_secs(5)).await {
        Received::Closed(Some(reason)) => {
            assert_eq!(reason.code, awc::ws::CloseCode::Restart, "{reason:?}")
        }
        other => panic!("expected a close asking to reconnect, got {other:?}"),
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "drained node did not exit"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

/// One seat per user across the cluster: Ann joins again through another signaling node; her
/// first seat's connection (on the first node) is closed with 4002, everyone sees it leave as
/// `replaced`, and Redis holds one record of hers.
#[actix_rt::test]
async fn a_users_join_on_another_signaling_node_replaces_its_seat_there() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let grace = Duration::from_secs(5);
    let (s1, s2) = (
        signaling(&store, "sig-1", grace, 25),
        signaling(&store, "sig-2", grace, 25),
    );
    let (mut first, first_joined) = s1.join("ann", "seat").await;
    let first_id = first_joined["participantId"].as_str().unwrap().to_string();
    first
        .send(json!({"id": "offer", "sdp": valid_offer()}))
        .await;
    first.expect("answer").await;
    let (mut bob, _) = s1.join("bob", "seat").await;
    first.expect("participantJoined").await;

    let (_second, second_joined) = s2.join("ann", "seat").await;
    let second_id = second_joined["participantId"].as_str().unwrap().to_string();
    let others: Vec<&str> = second_joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userId"].as_str().unwrap())
        .collect();
    assert_eq!(others, ["bob"], "{second_joined}");
    match first.recv(Duration::from_secs(5)).await {
        Received::Closed(Some(reason)) => {
            assert_eq!(reason.code, awc::ws::CloseCode::Other(4002), "{reason:?}")
        }
        other => panic!("expected the first seat closed with 4002, got {other:?}"),
    }
    // Bob (on the first node) sees the first seat leave as replaced, and the second join.
    let mut seen_left = false;
    let mut seen_joined = false;
    while !(seen_left && seen_joined) {
        let m = bob.expect_any().await;
        match m["id"].as_str() {
            Some("participantLeft") => {
                assert_eq!(m["participantId"], first_id.as_str(), "{m}");
                assert_eq!(m["reason"], "replaced", "{m}");
                seen_left = true;
            }
            Some("participantJoined") => {
                assert_eq!(m["participant"]["participantId"], second_id.as_str(), "{m}");
                seen_joined = true;
            }
            _ => {}
        }
    }
    // Past the first node's assertions (every 3 s) Redis still holds one seat of Ann's.
    actix_rt::time::sleep(Duration::from_secs(4)).await;
    let members = store.room_members("test/seat").await.unwrap();
    let anns: Vec<_> = members
        .iter()
        .filter(|m| m.participant.user_id == "ann")
        .map(|m| m.participant.participant_id.as_str())
        .collect();
    assert_eq!(anns, [second_id.as_str()]);
}

/// A member's media state reaches the members of the other signaling node: in its record
/// (the roster of `joined`) and through the room's events (`participantState`).
#[actix_rt::test]
async fn media_state_travels_across_signaling_nodes() {
    let cluster = one_media_node().await;
    let store = cluster.store.clone();
    let grace = Duration::from_secs(5);
    let (s1, s2) = (
        signaling(&store, "sig-1", grace, 25),
        signaling(&store, "sig-2", grace, 25),
    );
    let (mut ann, ann_joined) = s1.join("ann", "media-state").await;
    let ann_id = ann_joined["participantId"].as_str().unwrap().to_string();
    let (mut bob, bob_joined) = s2.join("bob", "media-state").await;
    assert_eq!(
        bob_joined["participants"][0]["media"], "connecting",
        "{bob_joined}"
    );
    ann.expect("participantJoined").await;
    // Ann's offer is refused by the media node: she has no media, and Bob sees it.
    ann.send(json!({"id": "offer", "sdp": "v=0\r\nthis is not SDP\r\n"}))
        .await;
    ann.expect_error("invalid_sdp").await;
    let st = bob.expect("participantState").await;
    assert_eq!(
        (st["participantId"].as_str(), &st["media"]),
        (Some(ann_id.as_str()), &json!("failed")),
        "{st}"
    );
    // She tries again: connecting, on the other node too.
    ann.send(json!({"id": "offer", "sdp": valid_offer()})).await;
    ann.expect("answer").await;
    let st = bob.expect("participantState").await;
    assert_eq!(st["media"], "connecting", "{st}");
    // Ann herself hears of it through `mediaState`/errors only.
    ann.expect_silence(Duration::from_millis(300)).await;
}
