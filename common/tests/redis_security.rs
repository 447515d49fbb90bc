//! The store against real `redis-server` processes that require a password, an ACL user or
//! TLS (issue 11, item 6), and the name charset that keeps one room's keys from naming
//! another's. Every connection is made by `RedisSettings::client`, as in the nodes.

use std::time::Duration;

use conclave_common::cluster::{
    resume_hash, ClusterError, ClusterStore, MemberRecord, NodeInfo, NodeLoad, RedisSettings,
};
use conclave_common::protocol::ParticipantInfo;
use conclave_common::test_redis::{Security, TestRedis};
use futures_util::StreamExt;

const NOW: u64 = 1_000_000;
const TTL: u64 = 60_000;
const PASSWORD: &str = "default-pw-5f2a";
const APP_USER: &str = "conclave";
const APP_PASSWORD: &str = "app-pw-93c1";
/// An ACL user allowed only Conclave's keys and channels (the advice of docs/security.md;
/// Redis matches a PSUBSCRIBE pattern literally against the user's channel patterns, hence
/// the room events' own pattern).
fn app_user() -> String {
    let rules = |p: &str| format!("~{p}:* &{p}:* &{p}:room-events:*");
    format!(
        "{APP_USER} on >{APP_PASSWORD} {} {} +@all -@dangerous",
        rules("conclave"),
        rules("sec")
    )
}
const WRONG: &str = "wrong-pw-77d0";

fn member(pid: &str) -> MemberRecord {
    MemberRecord {
        participant: ParticipantInfo {
            participant_id: pid.into(),
            user_id: format!("u-{pid}"),
            name: pid.into(),
            audio: true,
            video: true,
            deafened: false,
            media: None,
        },
        signaling: "sig.1".into(),
        resume_hash: resume_hash(&format!("secret-{pid}")),
    }
}

fn settings(url: String, password: Option<&str>) -> RedisSettings {
    RedisSettings {
        url,
        password: password.map(str::to_string),
        ca_file: None,
    }
}

/// `redis://[userinfo@]127.0.0.1:PORT/`.
fn url_with(redis: &TestRedis, userinfo: &str) -> String {
    format!("redis://{userinfo}127.0.0.1:{}/", redis.port)
}

async fn connect(settings: RedisSettings) -> Result<ClusterStore, ClusterError> {
    ClusterStore::connect(settings, "sec:").await
}

/// A store that works end to end: a node registers, a room is placed, a member joins, and a
/// room event published on the store's connection reaches a pub/sub subscription made from
/// the store's client (the room bus's path).
async fn works(store: &ClusterStore, what: &str) {
    let node = NodeInfo {
        id: "m1".into(),
        link_url: "ws://m1/internal/link".into(),
        udp_addrs: vec!["127.0.0.1:40000".into()],
        capacity: 10,
        load_capacity: 50_000,
    };
    store
        .heartbeat(&node, &NodeLoad::default(), false, NOW)
        .await
        .unwrap();
    assert_eq!(store.place_room("acme/general", NOW).await.unwrap(), "m1");
    store
        .join_member("acme/general", "acme", &member("p1"), 25, TTL)
        .await
        .unwrap();
    let mut pubsub = store.client().get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(store.room_events_pattern())
        .await
        .unwrap();
    store
        .publish_room_event("acme/general", "hello")
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap_or_else(|_| panic!("{what}: the event arrives"))
        .expect("a message");
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

fn refused(result: Result<ClusterStore, ClusterError>, what: &str) -> ClusterError {
    match result {
        Ok(_) => panic!("{what}: connected"),
        Err(e) => {
            let text = format!("{e} {e:?}");
            for secret in [PASSWORD, APP_PASSWORD, WRONG] {
                assert!(!text.contains(secret), "{what}: a password in {text}");
            }
            e
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_password_or_an_acl_user_is_required_and_the_right_one_is_enough() {
    let redis = TestRedis::start_secured(Security {
        password: Some(PASSWORD.into()),
        users: vec![app_user()],
        tls: false,
    });

    // Missing or wrong: refused at connect, as an authentication failure (the nodes stop on
    // it), and no password in the error.
    for (what, attempt) in [
        ("no password", settings(url_with(&redis, ""), None)),
        (
            "wrong password",
            settings(url_with(&redis, ""), Some(WRONG)),
        ),
        (
            "wrong password in the URL",
            settings(url_with(&redis, &format!(":{WRONG}@")), None),
        ),
        (
            "ACL user, wrong password",
            settings(url_with(&redis, &format!("{APP_USER}:{WRONG}@")), None),
        ),
        (
            "ACL user's password for the default user",
            settings(url_with(&redis, ""), Some(APP_PASSWORD)),
        ),
    ] {
        let e = refused(connect(attempt).await, what);
        assert!(matches!(e, ClusterError::Auth(_)), "{what}: {e:?}");
        assert!(e.is_fatal(), "{what}");
    }

    // Given twice: a configuration error before any connection.
    let twice = settings(url_with(&redis, &format!(":{PASSWORD}@")), Some(PASSWORD));
    let e = refused(connect(twice).await, "password twice");
    assert!(matches!(e, ClusterError::Config(_)), "{e:?}");

    // Right: in the URL, from the separate password setting, and as the ACL user (its name
    // in the URL, its password in either place).
    for (what, attempt) in [
        (
            "password in the URL",
            settings(url_with(&redis, &format!(":{PASSWORD}@")), None),
        ),
        (
            "password setting",
            settings(url_with(&redis, ""), Some(PASSWORD)),
        ),
        (
            "ACL user in the URL",
            settings(
                url_with(&redis, &format!("{APP_USER}:{APP_PASSWORD}@")),
                None,
            ),
        ),
        (
            "ACL user with the password setting",
            settings(
                url_with(&redis, &format!("{APP_USER}@")),
                Some(APP_PASSWORD),
            ),
        ),
    ] {
        let store = connect(attempt)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        works(&store, what).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn rediss_works_with_the_ca_file_and_not_without_it() {
    let redis = TestRedis::start_secured(Security {
        password: Some(PASSWORD.into()),
        tls: true,
        ..Security::default()
    });
    let ca_file = redis.ca_file.clone().expect("a TLS server has a CA file");
    assert!(redis.url.starts_with("rediss://"), "{}", redis.url);

    let trusted = RedisSettings {
        url: redis.url.clone(),
        password: Some(PASSWORD.into()),
        ca_file: Some(ca_file.clone()),
    };
    works(&connect(trusted.clone()).await.unwrap(), "TLS").await;

    // The throwaway CA is not among the system's roots: the certificate is refused (a TLS
    // failure, retried by the nodes, not an authentication one).
    let untrusted = RedisSettings {
        ca_file: None,
        ..trusted.clone()
    };
    let e = refused(connect(untrusted).await, "no CA file");
    assert!(matches!(e, ClusterError::Redis(_)), "{e:?}");

    // Plain text to the TLS port gets no answer it can use.
    let plain = RedisSettings {
        url: redis.url.replace("rediss://", "redis://"),
        ca_file: None,
        ..trusted.clone()
    };
    let plain = tokio::time::timeout(Duration::from_secs(10), connect(plain))
        .await
        .expect("a plain connection to a TLS port fails in time");
    refused(plain, "plain text to the TLS port");

    // A CA file with a redis:// URL is a configuration mistake, said before connecting.
    let mistaken = RedisSettings {
        url: redis.url.replace("rediss://", "redis://"),
        ..trusted.clone()
    };
    let e = refused(connect(mistaken).await, "CA file without TLS");
    assert!(matches!(e, ClusterError::Config(_)), "{e:?}");
    let missing = RedisSettings {
        ca_file: Some(ca_file.with_file_name("absent.pem")),
        ..trusted
    };
    let e = refused(connect(missing).await, "unreadable CA file");
    assert!(matches!(e, ClusterError::Config(_)), "{e:?}");
}

/// Room `x:members` would be stored at `room:acme/x:members`, which is room `x`'s member
/// hash. Placed first, it would make room `x` unusable (WRONGTYPE); the store refuses it.
#[tokio::test(flavor = "current_thread")]
async fn a_room_named_x_members_cannot_take_room_xs_member_hash() {
    let redis = TestRedis::start();
    let store = ClusterStore::connect(&redis.url, "names:").await.unwrap();
    let node = NodeInfo {
        id: "m1".into(),
        link_url: "ws://m1/internal/link".into(),
        udp_addrs: vec!["127.0.0.1:40000".into()],
        capacity: 10,
        load_capacity: 50_000,
    };
    store
        .heartbeat(&node, &NodeLoad::default(), false, NOW)
        .await
        .unwrap();

    let hostile = "acme/x:members";
    let invalid = |r: Result<_, ClusterError>, what: &str| match r {
        Err(ClusterError::InvalidName { name, .. }) => assert_eq!(name, hostile, "{what}"),
        other => panic!("{what}: {:?}", other.map(|_| ())),
    };
    invalid(store.place_room(hostile, NOW).await.map(|_| ()), "place");
    invalid(
        store
            .join_member(hostile, "acme", &member("evil"), 25, TTL)
            .await
            .map(|_| ()),
        "join",
    );
    invalid(
        store
            .assert_room(hostile, "acme", "m1", "sig.1", &[member("evil")], TTL)
            .await
            .map(|_| ()),
        "assert",
    );
    invalid(
        store
            .leave_member(hostile, "acme", "evil", None)
            .await
            .map(|_| ()),
        "leave",
    );

    // Room x works, and its member hash is a hash holding exactly its member.
    assert_eq!(store.place_room("acme/x", NOW).await.unwrap(), "m1");
    store
        .join_member("acme/x", "acme", &member("p1"), 25, TTL)
        .await
        .unwrap();
    let members = store.room_members("acme/x").await.unwrap();
    assert_eq!(members, vec![member("p1")]);
    let mut conn = RedisSettings::from(&redis.url)
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kind: String = redis::cmd("TYPE")
        .arg("names:room:acme/x:members")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");

    // Node ids and signaling instances name keys too.
    let hostile_node = NodeInfo {
        id: "m1:rooms".into(),
        ..node
    };
    assert!(matches!(
        store
            .heartbeat(&hostile_node, &NodeLoad::default(), false, NOW)
            .await,
        Err(ClusterError::InvalidName { .. })
    ));
    assert!(matches!(
        store.reserve_load("m1:rooms", 440).await,
        Err(ClusterError::InvalidName { .. })
    ));
    assert!(matches!(
        store
            .signaling_heartbeat("sig:members", "http://x", NOW)
            .await,
        Err(ClusterError::InvalidName { .. })
    ));
}
