//! Placement against a real Redis server (started here on a free 127.0.0.1 port, stopped by
//! its PID at the end).

use conclave_common::cluster::{ClusterError, ClusterStore, Left, NodeInfo, NODE_STALE_MS};
use conclave_common::test_redis::TestRedis;
use futures_util::future::join_all;

fn start_redis() -> TestRedis {
    TestRedis::start()
}

fn node(id: &str, capacity: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        link_url: format!("ws://{id}/internal/link"),
        udp_addr: "127.0.0.1:40000".into(),
        capacity,
    }
}

const NOW: u64 = 1_000_000;

#[tokio::test(flavor = "current_thread")]
async fn rooms_go_to_the_least_loaded_node_ties_to_the_lowest_id() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t1:").await.unwrap();
    // Known loads: a 0/10, b 2/10, c 1/20.
    store
        .heartbeat(&node("a", 10), 0, false, NOW)
        .await
        .unwrap();
    store
        .heartbeat(&node("b", 10), 2, false, NOW)
        .await
        .unwrap();
    store
        .heartbeat(&node("c", 20), 1, false, NOW)
        .await
        .unwrap();
    let mut placed = Vec::new();
    for i in 1..=9 {
        placed.push(store.place_room(&format!("room{i}"), NOW).await.unwrap());
    }
    // Worked by hand: each placement reserves one participant on its node.
    // a .0 b .2 c .05 -> a; a .1 c .05 -> c; a .1 = c .1 -> a; c .1 -> c; c .15 -> c;
    // a .2 = b .2 = c .2 -> a; b .2 = c .2 -> b; c .2 -> c; c .25 -> c.
    assert_eq!(placed, ["a", "c", "a", "c", "c", "a", "b", "c", "c"]);
    assert_eq!(store.node_participants("a").await.unwrap(), Some(3));
    assert_eq!(store.node_participants("c").await.unwrap(), Some(6));
    // A later join of a placed room goes to the same node and reserves nothing more.
    assert_eq!(store.place_room("room2", NOW).await.unwrap(), "c");
    assert_eq!(store.node_participants("c").await.unwrap(), Some(6));
    // A heartbeat replaces reservations with the true count.
    store
        .heartbeat(&node("c", 20), 0, false, NOW + 1000)
        .await
        .unwrap();
    assert_eq!(store.node_participants("c").await.unwrap(), Some(0));
}

#[tokio::test(flavor = "current_thread")]
async fn full_and_dead_nodes_are_skipped_and_no_capacity_is_an_error() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t2:").await.unwrap();
    store.heartbeat(&node("a", 1), 1, false, NOW).await.unwrap(); // full
    store
        .heartbeat(&node("b", 10), 0, false, NOW - NODE_STALE_MS - 1)
        .await
        .unwrap(); // dead
    store.heartbeat(&node("c", 2), 1, false, NOW).await.unwrap();
    assert_eq!(store.place_room("r1", NOW).await.unwrap(), "c");
    // c is now full too (its reservation counts at once).
    assert!(matches!(
        store.place_room("r2", NOW).await,
        Err(ClusterError::NoCapacity)
    ));
    // b comes back to life: it takes the next room.
    store
        .heartbeat(&node("b", 10), 0, false, NOW)
        .await
        .unwrap();
    assert_eq!(store.place_room("r2", NOW).await.unwrap(), "b");
}

#[tokio::test(flavor = "current_thread")]
async fn a_room_whose_node_died_is_placed_again_on_a_live_node() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t3:").await.unwrap();
    store
        .heartbeat(&node("a", 10), 0, false, NOW)
        .await
        .unwrap();
    store
        .heartbeat(&node("b", 10), 5, false, NOW)
        .await
        .unwrap();
    assert_eq!(store.place_room("r", NOW).await.unwrap(), "a");
    // a stops heartbeating; b goes on.
    let later = NOW + NODE_STALE_MS + 1;
    store
        .heartbeat(&node("b", 10), 5, false, later)
        .await
        .unwrap();
    assert_eq!(store.place_room("r", later).await.unwrap(), "b");
    assert_eq!(
        store.node_link_url("b").await.unwrap().as_deref(),
        Some("ws://b/internal/link")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn twenty_racing_placements_of_one_room_agree_and_reserve_once() {
    let redis = start_redis();
    let setup = ClusterStore::connect(&redis.url, "t4:").await.unwrap();
    for id in ["a", "b", "c"] {
        setup
            .heartbeat(&node(id, 100), 0, false, NOW)
            .await
            .unwrap();
    }
    // Twenty independent connections, as from several signaling nodes, all at once.
    let mut stores = Vec::new();
    for _ in 0..20 {
        stores.push(ClusterStore::connect(&redis.url, "t4:").await.unwrap());
    }
    let results = join_all(stores.iter().map(|s| s.place_room("hot", NOW))).await;
    let first = results[0].as_ref().unwrap().clone();
    assert!(results.iter().all(|r| r.as_ref().unwrap() == &first));
    let total: u32 = [
        setup.node_participants("a").await.unwrap().unwrap_or(0),
        setup.node_participants("b").await.unwrap().unwrap_or(0),
        setup.node_participants("c").await.unwrap().unwrap_or(0),
    ]
    .iter()
    .sum();
    assert_eq!(total, 1, "one reservation for one room");
}

#[tokio::test(flavor = "current_thread")]
async fn a_draining_node_takes_no_new_rooms_but_keeps_its_own() {
    let redis = start_redis();
    let store = ClusterStore::connect(&redis.url, "t5:").await.unwrap();
    store
        .heartbeat(&node("a", 10), 0, false, NOW)
        .await
        .unwrap();
    store
        .heartbeat(&node("b", 10), 5, false, NOW)
        .await
        .unwrap();
    assert_eq!(store.place_room("old", NOW).await.unwrap(), "a");
    // a drains: the emptier node is skipped for new rooms, its room stays.
    store.heartbeat(&node("a", 10), 1, true, NOW).await.unwrap();
    assert_eq!(store.place_room("new", NOW).await.unwrap(), "b");
    assert_eq!(store.place_room("old", NOW).await.unwrap(), "a");
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
