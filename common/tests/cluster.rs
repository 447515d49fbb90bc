//! Placement against a real Redis server (started here on a free 127.0.0.1 port, stopped by
//! its PID at the end).
//!
//! Loads are in forwarded packets per second (fpps, `conclave_common::load`): a publisher of
//! audio and video sends 110 packets/s, audio only 50, to every other participant of its room,
//! so a room of n all-video participants costs n × (n − 1) × 110. Every expected node below is
//! worked out by hand from that model.

use conclave_common::cluster::{
    ClusterError, ClusterStore, Left, NodeInfo, NodeLoad, NODE_STALE_MS,
};
use conclave_common::load::{new_room_reservation, publisher_fpps, room_cost};
use conclave_common::test_redis::TestRedis;
use futures_util::future::join_all;

fn start_redis() -> TestRedis {
    TestRedis::start()
}

/// A node taking at most `capacity` participants and `load_capacity` fpps.
fn node(id: &str, capacity: u32, load_capacity: u64) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        link_url: format!("ws://{id}/internal/link"),
        udp_addrs: vec!["127.0.0.1:40000".into(), "127.0.0.1:40001".into()],
        capacity,
        load_capacity,
    }
}

/// A node's heartbeat reporting `participants` and `load_fpps`.
async fn beat(store: &ClusterStore, node: &NodeInfo, participants: u32, load_fpps: u64, now: u64) {
    let load = NodeLoad {
        participants,
        load_fpps,
        ..NodeLoad::default()
    };
    store.heartbeat(node, &load, false, now).await.unwrap();
}

/// A node whose load leaves room for everything: only participants count.
fn roomy(id: &str, capacity: u32) -> NodeInfo {
    node(id, capacity, 1_000_000)
}

const NOW: u64 = 1_000_000;
/// Audio and video.
const FULL: u64 = 110;
/// Audio only.
const AUDIO: u64 = 50;

#[test]
fn the_hand_figures_below_are_the_load_model() {
    assert_eq!(publisher_fpps(1, 1), FULL);
    assert_eq!(publisher_fpps(1, 0), AUDIO);
    assert_eq!(new_room_reservation(), 220);
    assert_eq!(room_cost(&[FULL; 6]), 3300);
    assert_eq!(room_cost(&[FULL; 3]) * 3, 1980);
    assert_eq!(room_cost(&[FULL; 20]), 41_800);
    assert_eq!(room_cost(&[AUDIO; 4]) * 10, 6000);
    assert_eq!(room_cost(&[FULL; 10]), 9900);
}

#[tokio::test(flavor = "current_thread")]
async fn rooms_go_to_the_node_with_the_most_load_headroom_not_the_fewest_participants() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1:").await.unwrap();
    // Equal capacities: 100 participants, 10,000 fpps.
    // a hosts one 6-person all-video room: 6 × 5 × 110 = 3,300 fpps, 6 participants.
    // b hosts three 3-person all-video rooms: 3 × (3 × 2 × 110) = 1,980 fpps, 9 participants.
    // Headroom: a 10,000 − 3,300 = 6,700; b 10,000 − 1,980 = 8,020. Counting participants
    // (a 6/100 < b 9/100) would pick a; the load model picks b.
    let (a, b) = (node("a", 100, 10_000), node("b", 100, 10_000));
    beat(&store, &a, 6, 3300, NOW).await;
    beat(&store, &b, 9, 1980, NOW).await;
    let mut placed = Vec::new();
    for i in 1..=9 {
        placed.push(store.place_room(&format!("room{i}"), NOW).await.unwrap());
    }
    // Worked by hand: each placement takes 220 fpps of its node's headroom.
    // b 8,020 > a 6,700 -> b (7,800); b 7,800 -> b (7,580); -> b (7,360); -> b (7,140);
    // -> b (6,920); b 6,920 > 6,700 -> b (6,700); a 6,700 = b 6,700, tie to the lowest id
    // -> a (6,480); b 6,700 > 6,480 -> b (6,480); a = b = 6,480 -> a (6,260).
    assert_eq!(placed, ["b", "b", "b", "b", "b", "b", "a", "b", "a"]);
    // a: 3,300 + 2 × 220; b: 1,980 + 7 × 220. One participant reserved per room.
    assert_eq!(store.node_load("a").await.unwrap(), Some(3740));
    assert_eq!(store.node_load("b").await.unwrap(), Some(3520));
    assert_eq!(store.node_participants("a").await.unwrap(), Some(8));
    assert_eq!(store.node_participants("b").await.unwrap(), Some(16));
    // A later join of a placed room goes to the same node and reserves nothing at placement.
    assert_eq!(store.place_room("room2", NOW).await.unwrap(), "b");
    assert_eq!(store.node_load("b").await.unwrap(), Some(3520));
    assert_eq!(store.node_participants("b").await.unwrap(), Some(16));
    // A heartbeat replaces the reservations with the node's own figures.
    beat(&store, &b, 10, 2100, NOW + 1000).await;
    assert_eq!(store.node_load("b").await.unwrap(), Some(2100));
    assert_eq!(store.node_participants("b").await.unwrap(), Some(10));
}

#[tokio::test(flavor = "current_thread")]
async fn a_bigger_node_wins_on_headroom_and_audio_rooms_cost_less() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1b:").await.unwrap();
    // a: two room threads (100,000 fpps), one 20-person all-video room:
    //    20 × 19 × 110 = 41,800 -> headroom 58,200 (20 of 100 participants).
    // b: one thread (50,000), ten 4-person audio-only rooms: 10 × (4 × 3 × 50) = 6,000
    //    -> headroom 44,000 (40 of 100 participants).
    // c: one thread (50,000), one 10-person all-video room: 10 × 9 × 110 = 9,900
    //    -> headroom 40,100 (10 of 100 participants: the fewest, which counting would pick).
    beat(&store, &node("a", 100, 100_000), 20, 41_800, NOW).await;
    beat(&store, &node("b", 100, 50_000), 40, 6000, NOW).await;
    beat(&store, &node("c", 100, 50_000), 10, 9900, NOW).await;
    assert_eq!(store.place_room("next", NOW).await.unwrap(), "a");
    // b's forty audio participants cost far less than c's ten on video: without a, b is next.
    let a_full = node("a", 100, 100_000);
    beat(&store, &a_full, 20, 100_000, NOW).await;
    assert_eq!(store.place_room("after", NOW).await.unwrap(), "b");
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_at_or_over_its_load_capacity_is_full() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1c:").await.unwrap();
    let (a, b, c) = (
        node("a", 100, 50_000),
        node("b", 100, 50_000),
        node("c", 100, 50_000),
    );
    // a is exactly at its load capacity (with no participants at all), c is over it; b has
    // 100 fpps of headroom: it takes a room (the 220 reservation puts it over), then no node
    // is left.
    beat(&store, &a, 0, 50_000, NOW).await;
    beat(&store, &b, 3, 49_900, NOW).await;
    beat(&store, &c, 1, 60_000, NOW).await;
    assert_eq!(store.place_room("r1", NOW).await.unwrap(), "b");
    assert_eq!(store.node_load("b").await.unwrap(), Some(50_120));
    assert!(matches!(
        store.place_room("r2", NOW).await,
        Err(ClusterError::NoCapacity)
    ));
    // c's load drops (its rooms emptied): it takes the next room.
    beat(&store, &c, 0, 0, NOW).await;
    assert_eq!(store.place_room("r2", NOW).await.unwrap(), "c");
}

#[tokio::test(flavor = "current_thread")]
async fn reservations_count_in_placement_and_never_create_a_node() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1d:").await.unwrap();
    let (a, b) = (node("a", 100, 50_000), node("b", 100, 50_000));
    beat(&store, &a, 4, 1000, NOW).await;
    beat(&store, &b, 4, 1200, NOW).await;
    // A third participant joined a 2-person video room on a: 2 × 110 + 220 = 440.
    store.reserve_load("a", 440).await.unwrap();
    assert_eq!(store.node_load("a").await.unwrap(), Some(1440));
    // So a's load (1,440) is now above b's (1,200): b has the most headroom. Without the
    // reservation a (1,000) would win.
    assert_eq!(store.place_room("r", NOW).await.unwrap(), "b");
    // A node that is not registered (or whose hash expired) gets no hash from a reservation.
    store.reserve_load("ghost", 440).await.unwrap();
    assert_eq!(store.node_load("ghost").await.unwrap(), None);
    let mut conn = store.connection_manager();
    let exists: bool = redis::cmd("EXISTS")
        .arg("t1d:node:ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "a reservation created a node hash");
    let ids: Vec<String> = store
        .nodes(NOW)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    // The next heartbeat overwrites the reservation with the node's own figure.
    beat(&store, &a, 5, 1300, NOW + 1000).await;
    assert_eq!(store.node_load("a").await.unwrap(), Some(1300));
}

#[tokio::test(flavor = "current_thread")]
async fn the_node_list_shows_load_capacity_cpu_and_every_udp_address() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1e:").await.unwrap();
    let load = NodeLoad {
        participants: 7,
        load_fpps: 4620,
        bits_out_per_sec: 21_000_000,
        cpu_cores: 1.25,
    };
    store
        .heartbeat(&node("a", 100, 100_000), &load, true, NOW)
        .await
        .unwrap();
    let list = store.nodes(NOW + 400).await.unwrap();
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "id": "a",
            "linkUrl": "ws://a/internal/link",
            "udpAddrs": ["127.0.0.1:40000", "127.0.0.1:40001"],
            "capacity": 100,
            "participants": 7,
            "load": 4620,
            "loadCapacity": 100_000,
            "bitsOut": 21_000_000,
            "cpu": 1.25,
            "heartbeatAgeMs": 400,
            "live": true,
            "draining": true,
        }])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_whose_link_dropped_shows_its_real_heartbeat_age_and_counts_nothing() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1f:").await.unwrap();
    let load = NodeLoad {
        participants: 7,
        load_fpps: 4620,
        bits_out_per_sec: 21_000_000,
        cpu_cores: 1.25,
    };
    let (a, b) = (node("a", 100, 100_000), node("b", 100, 100_000));
    store.heartbeat(&a, &load, false, NOW).await.unwrap();
    store.heartbeat(&b, &load, false, NOW).await.unwrap();
    // a signaling node's link to a drops: a is dead at once, 400 ms after its last heartbeat.
    store.node_down("a").await.unwrap();
    let list = serde_json::to_value(store.nodes(NOW + 400).await.unwrap()).unwrap();
    let figures = |n: &serde_json::Value| {
        let f = |k: &str| n[k].clone();
        (
            f("id"),
            f("live"),
            f("heartbeatAgeMs"),
            f("participants"),
            f("load"),
        )
    };
    // Its members are moving to live nodes (which count them): a counts none of them.
    assert_eq!(
        figures(&list[0]),
        ("a".into(), false.into(), 400.into(), 0.into(), 0.into()),
        "{list}"
    );
    assert_eq!(
        (&list[0]["bitsOut"], &list[0]["cpu"]),
        (&0.into(), &0.0.into())
    );
    assert_eq!(
        figures(&list[1]),
        ("b".into(), true.into(), 400.into(), 7.into(), 4620.into()),
        "{list}"
    );
    // Placement agrees: a (the lower id, equal headroom) is skipped.
    assert_eq!(store.place_room("x", NOW + 400).await.unwrap(), "b");
    // A node whose heartbeat went stale counts nothing either, with its real age.
    let later = NOW + NODE_STALE_MS + 1;
    let list = serde_json::to_value(store.nodes(later).await.unwrap()).unwrap();
    assert_eq!(
        figures(&list[1]),
        (
            "b".into(),
            false.into(),
            (NODE_STALE_MS + 1).into(),
            0.into(),
            0.into()
        ),
        "{list}"
    );
    // a's next heartbeat revives it (b has the reservation of x: a has more headroom).
    store.heartbeat(&a, &load, false, NOW + 1000).await.unwrap();
    let list = serde_json::to_value(store.nodes(NOW + 1000).await.unwrap()).unwrap();
    assert_eq!(
        figures(&list[0]),
        ("a".into(), true.into(), 0.into(), 7.into(), 4620.into()),
        "{list}"
    );
    assert_eq!(store.place_room("y", NOW + 1000).await.unwrap(), "a");
    // Marking a node that has no hash creates none.
    store.node_down("ghost").await.unwrap();
    assert_eq!(store.node_link_url("ghost").await.unwrap(), None);
    assert_eq!(store.nodes(NOW + 1000).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn full_and_dead_nodes_are_skipped_and_no_capacity_is_an_error() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t2:").await.unwrap();
    beat(&store, &roomy("a", 1), 1, 0, NOW).await; // full (participants)
    beat(&store, &roomy("b", 10), 0, 0, NOW - NODE_STALE_MS - 1).await; // dead
    beat(&store, &roomy("c", 2), 1, 500, NOW).await;
    assert_eq!(store.place_room("r1", NOW).await.unwrap(), "c");
    // c is now full too (its participant reservation counts at once).
    assert!(matches!(
        store.place_room("r2", NOW).await,
        Err(ClusterError::NoCapacity)
    ));
    // b comes back to life: it takes the next room.
    beat(&store, &roomy("b", 10), 0, 0, NOW).await;
    assert_eq!(store.place_room("r2", NOW).await.unwrap(), "b");
}

#[tokio::test(flavor = "current_thread")]
async fn a_room_whose_node_died_is_placed_again_on_a_live_node() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t3:").await.unwrap();
    beat(&store, &roomy("a", 10), 0, 0, NOW).await;
    beat(&store, &roomy("b", 10), 5, 3000, NOW).await;
    assert_eq!(store.place_room("r", NOW).await.unwrap(), "a");
    // a stops heartbeating; b goes on.
    let later = NOW + NODE_STALE_MS + 1;
    beat(&store, &roomy("b", 10), 5, 3000, later).await;
    assert_eq!(store.place_room("r", later).await.unwrap(), "b");
    assert_eq!(
        store.node_link_url("b").await.unwrap().as_deref(),
        Some("ws://b/internal/link")
    );
}

/// The rooms in a node's room set, sorted, and the set's time to live (ms; -1: none, -2: no set).
async fn room_set(store: &ClusterStore, node: &str) -> (Vec<String>, i64) {
    use redis::AsyncCommands;
    let key = format!("{}node:{node}:rooms", store.prefix());
    let mut conn = store.connection_manager();
    let mut rooms: Vec<String> = conn.smembers(&key).await.unwrap();
    rooms.sort();
    (rooms, conn.pttl(&key).await.unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn a_room_that_moves_leaves_its_dead_nodes_room_set_and_every_room_set_expires() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t3b:").await.unwrap();
    let node_ttl = 15_000;
    beat(&store, &roomy("a", 10), 0, 0, NOW).await;
    beat(&store, &roomy("b", 10), 5, 3000, NOW).await;
    assert_eq!(store.place_room("r", NOW).await.unwrap(), "a");
    assert_eq!(store.place_room("stays", NOW).await.unwrap(), "a");
    let (rooms, ttl) = room_set(&store, "a").await;
    assert_eq!(rooms, ["r", "stays"]);
    assert!(
        ttl > 0 && ttl <= node_ttl,
        "a's room set expires with a: {ttl}"
    );
    // a's link drops (it died): r is placed again, on b, and is in b's set only.
    store.node_down("a").await.unwrap();
    assert_eq!(store.place_room("r", NOW).await.unwrap(), "b");
    let (rooms, ttl) = room_set(&store, "a").await;
    assert_eq!(rooms, ["stays"], "the moved room left the dead node's set");
    assert!(ttl > 0 && ttl <= node_ttl, "{ttl}");
    let (rooms, ttl) = room_set(&store, "b").await;
    assert_eq!(rooms, ["r"]);
    assert!(ttl > 0 && ttl <= node_ttl, "{ttl}");
}

#[tokio::test(flavor = "current_thread")]
async fn twenty_racing_placements_of_one_room_agree_and_reserve_once() {
    let redis = start_redis();
    let setup = ClusterStore::connect(&redis.url, "t4:").await.unwrap();
    for id in ["a", "b", "c"] {
        beat(&setup, &node(id, 100, 50_000), 0, 0, NOW).await;
    }
    // Twenty independent connections, as from several signaling nodes, all at once.
    let mut stores = Vec::new();
    for _ in 0..20 {
        stores.push(ClusterStore::connect(&redis.url, "t4:").await.unwrap());
    }
    let results = join_all(stores.iter().map(|s| s.place_room("hot", NOW))).await;
    let first = results[0].as_ref().unwrap().clone();
    assert!(results.iter().all(|r| r.as_ref().unwrap() == &first));
    let (mut participants, mut load) = (0, 0);
    for id in ["a", "b", "c"] {
        participants += setup.node_participants(id).await.unwrap().unwrap_or(0);
        load += setup.node_load(id).await.unwrap().unwrap_or(0);
    }
    assert_eq!(participants, 1, "one participant reserved for one room");
    assert_eq!(load, 220, "one new-room reservation for one room");
}

#[tokio::test(flavor = "current_thread")]
async fn a_draining_node_takes_no_new_rooms_but_keeps_its_own() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t5:").await.unwrap();
    beat(&store, &node("a", 10, 50_000), 0, 0, NOW).await;
    beat(&store, &node("b", 10, 50_000), 5, 2200, NOW).await;
    assert_eq!(store.place_room("old", NOW).await.unwrap(), "a");
    // a drains: the emptier node is skipped for new rooms, its room stays.
    let drained = NodeLoad {
        participants: 1,
        ..NodeLoad::default()
    };
    store
        .heartbeat(&node("a", 10, 50_000), &drained, true, NOW)
        .await
        .unwrap();
    assert_eq!(store.place_room("new", NOW).await.unwrap(), "b");
    assert_eq!(store.place_room("old", NOW).await.unwrap(), "a");
}

/// Whether `id` is in the placement sorted set `set` (`node-candidates`, `node-heartbeats`).
async fn in_set(store: &ClusterStore, set: &str, id: &str) -> bool {
    let mut conn = store.connection_manager();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{}{set}", store.prefix()))
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    score.is_some()
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_whose_heartbeat_stopped_leaves_the_candidates_within_the_staleness_window() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t7:").await.unwrap();
    let (a, b) = (node("a", 100, 50_000), node("b", 100, 50_000));
    beat(&store, &a, 0, 0, NOW).await;
    beat(&store, &b, 0, 1000, NOW).await;
    assert_eq!(
        store.placement_candidates(NOW, 10).await.unwrap(),
        ["a", "b"]
    );
    // b goes on beating; a's heartbeats stop at NOW.
    beat(&store, &b, 0, 1000, NOW + 3000).await;
    let edge = NOW + NODE_STALE_MS;
    assert_eq!(
        store.placement_candidates(edge, 10).await.unwrap(),
        ["a", "b"]
    );
    assert_eq!(store.place_room("at-the-edge", edge).await.unwrap(), "a");
    // One millisecond later a is no candidate, and the next placement removes it from the
    // sorted sets and the counts (lazily: nothing else would).
    let after = edge + 1;
    assert_eq!(store.placement_candidates(after, 10).await.unwrap(), ["b"]);
    assert!(in_set(&store, "node-candidates", "a").await);
    assert_eq!(store.place_room("later", after).await.unwrap(), "b");
    assert!(!in_set(&store, "node-candidates", "a").await);
    assert!(!in_set(&store, "node-heartbeats", "a").await);
    assert_eq!(store.node_load("a").await.unwrap(), None);
    // A room on a is placed again, on b.
    assert_eq!(store.place_room("at-the-edge", after).await.unwrap(), "b");
    // a's next heartbeat makes it a candidate again.
    beat(&store, &a, 0, 0, after).await;
    assert_eq!(
        store.placement_candidates(after, 10).await.unwrap(),
        ["a", "b"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ties_go_to_the_lowest_id_among_many_nodes() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t8:").await.unwrap();
    // Forty equal nodes registered highest id first: each placement takes the lowest id with
    // the most headroom, and its reservation sends the next one to the next id.
    let ids: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    for id in ids.iter().rev() {
        beat(&store, &node(id, 100, 50_000), 0, 1000, NOW).await;
    }
    let mut placed = Vec::new();
    for i in 0..40 {
        placed.push(store.place_room(&format!("r{i}"), NOW).await.unwrap());
    }
    assert_eq!(placed, ids);
    // All at 1,220 now: the forty-first is n00's again.
    assert_eq!(store.place_room("r40", NOW).await.unwrap(), "n00");
}

#[tokio::test(flavor = "current_thread")]
async fn draining_full_and_dead_nodes_are_never_chosen_even_many_at_once() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t9:").await.unwrap();
    let drained = NodeLoad::default();
    // Every one of these has more headroom than `live`, the one node placement may take.
    for i in 0..10 {
        store
            .heartbeat(
                &node(&format!("drain{i}"), 100, 50_000),
                &drained,
                true,
                NOW,
            )
            .await
            .unwrap();
        beat(&store, &node(&format!("fullp{i}"), 5, 50_000), 5, 0, NOW).await;
        beat(
            &store,
            &node(&format!("fullf{i}"), 100, 50_000),
            0,
            50_000,
            NOW,
        )
        .await;
    }
    // Three placement budgets' worth of nodes die at once (their heartbeats stop).
    let dead = 3 * conclave_common::cluster::PLACE_BUDGET;
    for i in 0..dead {
        beat(
            &store,
            &node(&format!("dead{i:03}"), 100, 50_000),
            0,
            0,
            NOW,
        )
        .await;
    }
    let later = NOW + NODE_STALE_MS + 1;
    beat(&store, &node("live", 100, 50_000), 10, 40_000, later).await;
    assert_eq!(
        store.placement_candidates(later, 100).await.unwrap(),
        ["live"]
    );
    for i in 0..5 {
        assert_eq!(
            store.place_room(&format!("r{i}"), later).await.unwrap(),
            "live"
        );
    }
    for i in 0..dead {
        assert!(!in_set(&store, "node-candidates", &format!("dead{i:03}")).await);
    }
    // The one live node fills up (participants): nothing is left.
    beat(&store, &node("live", 11, 50_000), 10, 40_000, later).await;
    assert_eq!(store.place_room("r5", later).await.unwrap(), "live");
    assert!(matches!(
        store.place_room("r6", later).await,
        Err(ClusterError::NoCapacity)
    ));
}

#[test]
fn placement_reservation_node_down_and_assertion_build_no_key_names() {
    // Every key these scripts touch comes in KEYS (Redis Cluster routes by the declared
    // keys); a key built from the prefix inside a script would be undeclared.
    for (name, source) in [
        (
            "place_room",
            include_str!("../src/cluster/scripts/place_room.lua"),
        ),
        (
            "reserve_load",
            include_str!("../src/cluster/scripts/reserve_load.lua"),
        ),
        (
            "node_down",
            include_str!("../src/cluster/scripts/node_down.lua"),
        ),
        (
            "assert_room",
            include_str!("../src/cluster/scripts/assert_room.lua"),
        ),
    ] {
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for built in ["prefix", "'node:", "':rooms'", "'signaling:", "'room:"] {
            assert!(!code.contains(built), "{name}.lua builds a key: {built}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_command_after_redis_returns_does_not_wait_for_a_sleeping_reconnection() {
    let redis = start_redis();
    let port = redis.port;
    let store = ClusterStore::connect(&redis.url, "t6:").await.unwrap();
    beat(&store, &roomy("a", 10), 0, 0, NOW).await;
    // Redis is killed (its data with it). A command meanwhile fails and starts a
    // reconnection; let its attempt run, and fail, while Redis is down (starting Redis below
    // blocks this thread, the runtime's only one).
    drop(redis);
    assert!(store.room_node("r").await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _back = TestRedis::start_on(port);
    let started = std::time::Instant::now();
    let answer = store.room_node("r").await;
    let waited = started.elapsed();
    // It goes through (on a new connection) instead of failing on the attempt made while Redis
    // was down, and at once: the redis crate's own retry would sleep at least 1 s first.
    assert_eq!(answer.unwrap(), None);
    assert!(
        waited < std::time::Duration::from_millis(500),
        "waited {waited:?}"
    );
}

mod members {
    use super::*;
    use conclave_common::cluster::{resume_hash, Claim, Claimed, MemberRecord};
    use conclave_common::protocol::ParticipantInfo;

    const TTL: u64 = 60_000;

    fn member(pid: &str, instance: &str) -> MemberRecord {
        MemberRecord {
            participant: ParticipantInfo {
                participant_id: pid.into(),
                user_id: format!("u-{pid}"),
                name: pid.to_uppercase(),
                audio: true,
                video: true,
                deafened: false,
                media: None,
            },
            signaling: instance.into(),
            resume_hash: resume_hash(&format!("secret-{pid}")),
        }
    }

    fn ids(mut all: Vec<MemberRecord>) -> Vec<String> {
        all.sort_by(|a, b| {
            a.participant
                .participant_id
                .cmp(&b.participant.participant_id)
        });
        all.into_iter()
            .map(|m| m.participant.participant_id)
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_users_second_join_displaces_the_first_even_in_a_full_room() {
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "m1:").await.unwrap();
        let room = "acme/general";
        let mut first = member("a", "s1");
        first.participant.user_id = "ada".into();
        store
            .join_member(room, "acme", &first, 2, TTL)
            .await
            .unwrap();
        store
            .join_member(room, "acme", &member("b", "s1"), 2, TTL)
            .await
            .unwrap();
        // Ada again, from another device on another instance: the room is full, but her
        // first seat gives way.
        let mut second = member("a2", "s2");
        second.participant.user_id = "ada".into();
        let joined = store
            .join_member(room, "acme", &second, 2, TTL)
            .await
            .unwrap();
        assert_eq!(ids(joined.members), ["a2", "b"]);
        assert_eq!(joined.displaced, vec![first]);
        // Gone from s1's index too (a dead s1's cleanup will not resurrect it).
        let s1_members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("m1:signaling:s1:members")
            .query_async(&mut store.connection_manager())
            .await
            .unwrap();
        assert_eq!(s1_members, ["b@acme/general"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_cap_holds_across_instances_and_leaves_free_places() {
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "m1:").await.unwrap();
        let room = "acme/general";
        store
            .join_member(room, "acme", &member("a", "s1"), 2, TTL)
            .await
            .unwrap();
        let all = store
            .join_member(room, "acme", &member("b", "s2"), 2, TTL)
            .await
            .unwrap();
        assert_eq!(ids(all.members), ["a", "b"]);
        assert!(all.displaced.is_empty());
        assert!(matches!(
            store
                .join_member(room, "acme", &member("c", "s1"), 2, TTL)
                .await,
            Err(ClusterError::RoomFull)
        ));
        assert_eq!(store.community_rooms("acme").await.unwrap(), [room]);
        // Only the owning instance removes its member (unless forced).
        assert_eq!(
            store
                .leave_member(room, "acme", "b", Some("s1"))
                .await
                .unwrap(),
            Left::OwnedBy("s2".into())
        );
        let removed = store
            .leave_member(room, "acme", "b", Some("s2"))
            .await
            .unwrap();
        let Left::Removed(removed) = removed else {
            panic!("not removed: {removed:?}");
        };
        assert_eq!(removed.participant.name, "B");
        assert_eq!(
            store
                .leave_member(room, "acme", "b", Some("s2"))
                .await
                .unwrap(),
            Left::Absent
        );
        store
            .join_member(room, "acme", &member("c", "s1"), 2, TTL)
            .await
            .unwrap();
        assert_eq!(ids(store.room_members(room).await.unwrap()), ["a", "c"]);
        // The last leave drops the room from its community.
        store.leave_member(room, "acme", "a", None).await.unwrap();
        store.leave_member(room, "acme", "c", None).await.unwrap();
        assert!(store.community_rooms("acme").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_resume_claims_the_member_only_with_its_secret() {
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "m2:").await.unwrap();
        let room = "acme/general";
        store
            .join_member(room, "acme", &member("a", "s1"), 5, TTL)
            .await
            .unwrap();
        store
            .join_member(room, "acme", &member("b", "s1"), 5, TTL)
            .await
            .unwrap();
        let claim = |pid: &'static str, user: &'static str, secret: &'static str| Claim {
            participant_id: pid,
            user_id: user,
            secret,
            next_secret: "rotated",
        };
        // A wrong secret, an unknown member, another user's token: nothing to claim.
        for (wrong, found) in [
            (claim("a", "u-a", "wrong"), Claimed::Refused),
            (claim("zz", "u-zz", "secret-zz"), Claimed::Absent),
            (claim("a", "u-b", "secret-a"), Claimed::Refused),
        ] {
            assert_eq!(store.claim_member(room, &wrong, "s2").await.unwrap(), found);
        }
        let Claimed::Taken(mine, all) = store
            .claim_member(room, &claim("a", "u-a", "secret-a"), "s2")
            .await
            .unwrap()
        else {
            panic!("the right secret and user claim the member");
        };
        assert_eq!(mine.signaling, "s2");
        // The secret rotated: the old one claims nothing any more, the new one does.
        assert_eq!(mine.resume_hash, resume_hash("rotated"));
        assert_eq!(
            store
                .claim_member(room, &claim("a", "u-a", "secret-a"), "s2")
                .await
                .unwrap(),
            Claimed::Refused
        );
        assert_eq!(mine.participant, member("a", "s1").participant);
        assert_eq!(ids(all), ["a", "b"]);
        // The old instance can no longer remove or update it; the new one can.
        assert_eq!(
            store
                .leave_member(room, "acme", "a", Some("s1"))
                .await
                .unwrap(),
            Left::OwnedBy("s2".into())
        );
        assert!(!store.update_member(room, &member("a", "s1")).await.unwrap());
        assert!(store.update_member(room, &member("a", "s2")).await.unwrap());
        // s1 died: sweeping it finds only b (a moved to s2).
        store
            .signaling_heartbeat("s1", "http://s1", NOW)
            .await
            .unwrap();
        store
            .signaling_heartbeat("s2", "http://s2", NOW + 20_000)
            .await
            .unwrap();
        let dead = store
            .claim_dead_signaling("s2", NOW + 20_000, 10_000)
            .await
            .unwrap();
        let s1_members = vec![("s1".to_string(), vec![("b".to_string(), room.to_string())])];
        assert_eq!(dead, s1_members);
        // Claimed once: another sweeper gets nothing...
        assert!(store
            .claim_dead_signaling("s3", NOW + 21_000, 10_000)
            .await
            .unwrap()
            .is_empty());
        // ...but the claimer gets it again until it is finished (its cleanup may have been
        // cut short), and anyone does once the claimer is silent too.
        assert_eq!(
            store
                .claim_dead_signaling("s2", NOW + 22_000, 10_000)
                .await
                .unwrap(),
            s1_members
        );
        store
            .signaling_heartbeat("s2", "http://s2", NOW + 35_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_dead_signaling("s3", NOW + 40_000, 10_000)
                .await
                .unwrap(),
            s1_members
        );
        store.finish_dead_signaling("s1").await.unwrap();
        assert!(store
            .claim_dead_signaling("s3", NOW + 41_000, 10_000)
            .await
            .unwrap()
            .is_empty());
        // An instance that heartbeats again while its cleanup is under way is left alone.
        store
            .signaling_heartbeat("s2", "http://s2", NOW + 42_000)
            .await
            .unwrap();
        store
            .signaling_heartbeat("s1", "http://s1", NOW + 30_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_dead_signaling("s2", NOW + 45_000, 10_000)
                .await
                .unwrap()
                .len(),
            1,
            "s1 is dead again and claimed"
        );
        store
            .signaling_heartbeat("s1", "http://s1", NOW + 46_000)
            .await
            .unwrap();
        for claimer in ["s2", "s3"] {
            assert!(store
                .claim_dead_signaling(claimer, NOW + 50_000, 10_000)
                .await
                .unwrap()
                .is_empty());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_batched_call_asserts_every_room_of_an_instance_each_on_its_own() {
        use conclave_common::cluster::RoomAssertion;
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "t7c:").await.unwrap();
        let mut conn = store.connection_manager();
        // r1 is already recorded on node y (another instance placed it): the assertion keeps
        // y and says so.
        let _: () = redis::cmd("SET")
            .arg("t7c:room:test/r1")
            .arg("y")
            .query_async(&mut conn)
            .await
            .unwrap();
        let assertion = |room: &str, node: &str, pid: &str| RoomAssertion {
            room: room.into(),
            community: "test".into(),
            node: node.into(),
            mine: vec![member(pid, "sig-1")],
        };
        let rooms = [
            assertion("test/r0", "x", "a"),
            assertion("test/r1", "x", "b"),
            assertion("bad:name/r2", "x", "c"),
            assertion("test/r3", "x", "d"),
        ];
        let answers = store.assert_rooms("sig-1", &rooms, TTL).await.unwrap();
        assert_eq!(answers.len(), 4);
        let node_of = |i: usize| answers[i].as_ref().map(|(n, _)| n.clone()).ok();
        assert_eq!(node_of(0).as_deref(), Some("x"));
        assert_eq!(node_of(1).as_deref(), Some("y"));
        // A refused name fails alone.
        assert!(matches!(answers[2], Err(ClusterError::InvalidName { .. })));
        assert_eq!(node_of(3).as_deref(), Some("x"));
        for (room, pid) in [("test/r0", "a"), ("test/r1", "b"), ("test/r3", "d")] {
            let all = store.room_members(room).await.unwrap();
            assert_eq!(ids(all), [pid], "{room}");
        }
        // Each room is in its node's set, made with the node's TTL.
        let (rooms_x, ttl) = room_set(&store, "x").await;
        assert_eq!(rooms_x, ["test/r0", "test/r3"]);
        assert!(ttl > 0 && ttl <= 15_000, "{ttl}");
        assert_eq!(room_set(&store, "y").await.0, ["test/r1"]);
        // One round trip for the scripts, one for the room sets, whatever the number of
        // rooms: 3 EVALSHA calls (the refused room sends none).
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(info.contains("cmdstat_evalsha:calls=3,"), "{info}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_assertion_that_makes_a_nodes_room_set_gives_it_the_nodes_ttl() {
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "t7b:").await.unwrap();
        // The room's node has no set (Redis restarted, or the node died and its keys
        // expired): the set the assertion makes expires too, as the node's hash would.
        let (node, _) = store
            .assert_room(
                "test/gone",
                "test",
                "c",
                "sig-1",
                &[member("p1", "sig-1")],
                TTL,
            )
            .await
            .unwrap();
        assert_eq!(node, "c");
        let (rooms, ttl) = room_set(&store, "c").await;
        assert_eq!(rooms, ["test/gone"]);
        assert!(ttl > 0 && ttl <= 15_000, "c's room set expires: {ttl}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn assert_recreates_records_after_a_flush_and_drops_stale_ones() {
        let redis = start_redis();
        let store = ClusterStore::connect(&redis.url, "m3:").await.unwrap();
        let room = "acme/general";
        store
            .join_member(room, "acme", &member("a", "s1"), 5, TTL)
            .await
            .unwrap();
        store
            .join_member(room, "acme", &member("gone", "s1"), 5, TTL)
            .await
            .unwrap();
        store
            .join_member(room, "acme", &member("b", "s2"), 5, TTL)
            .await
            .unwrap();
        // s1 now has only a: its assert drops "gone" and keeps s2's b.
        let (node, all) = store
            .assert_room(room, "acme", "media-1", "s1", &[member("a", "s1")], TTL)
            .await
            .unwrap();
        assert_eq!(node, "media-1");
        assert_eq!(ids(all), ["a", "b"]);
        // Redis loses everything; each instance re-asserts its own.
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut store.connection_manager())
            .await
            .unwrap();
        store
            .assert_room(room, "acme", "media-1", "s1", &[member("a", "s1")], TTL)
            .await
            .unwrap();
        let (node, all) = store
            .assert_room(room, "acme", "media-2", "s2", &[member("b", "s2")], TTL)
            .await
            .unwrap();
        assert_eq!(node, "media-1", "the first assert recorded the room's node");
        assert_eq!(ids(all), ["a", "b"]);
        assert_eq!(
            store.room_node(room).await.unwrap().as_deref(),
            Some("media-1")
        );
        assert_eq!(store.community_rooms("acme").await.unwrap(), [room]);
    }
}
