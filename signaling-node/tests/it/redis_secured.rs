//! Both node binaries against a Redis that requires a password (and has an ACL user), and
//! one that speaks only TLS (issue 11, item 6): with the right credentials and CA a call is
//! placed and answered; with a wrong or missing password each node stops at once and says
//! why, without printing the password.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conclave_common::cluster::{ClusterStore, RedisSettings};
use conclave_common::test_redis::{Security, TestRedis};

use crate::cluster_support::{
    eventually, join_and_offer, media_node_command, signaling_node_command, spawn_media_node_with,
    Proc,
};
use crate::support::TestServer;

const PASSWORD: &str = "default-pw-4be1";
const APP_USER: &str = "conclave";
const APP_PASSWORD: &str = "app-pw-0c7d";
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
const WRONG: &str = "wrong-pw-a913";

/// Run `command` until it exits (within 20 s); its exit code and everything it logged.
fn exit_and_log(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the node starts");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 20 s: {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().unwrap())
}

/// A signaling node from `command` (in cluster mode), once it has printed its URL.
fn start_signaling(mut command: Command) -> (Proc, TestServer) {
    let mut child = command
        .stderr(Stdio::null())
        .spawn()
        .expect("signaling-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .unwrap_or_else(|| panic!("no url in {line:?}"))
        .to_string();
    (Proc(child), TestServer::at(url))
}

async fn registered(store: &ClusterStore, id: &str) {
    eventually(Duration::from_secs(10), "media node registered", || async {
        store.node_participants(id).await.unwrap().is_some()
    })
    .await;
}

async fn call_is_answered(server: &TestServer, room: &str) {
    let (_alice, reply) = join_and_offer(server, "alice", room).await;
    assert_eq!(reply["id"], "answer", "{reply}");
}

#[actix_rt::test]
async fn with_the_password_a_call_works_and_without_it_each_node_stops_saying_why() {
    let redis = TestRedis::start_secured(Security {
        password: Some(PASSWORD.into()),
        users: vec![app_user()],
        tls: false,
    });
    let port = redis.port;

    // Right: the media node with the default user's password as a flag, the signaling node
    // as the ACL user, its name in the URL and its password from the environment.
    let (_media, _, _) =
        spawn_media_node_with(&redis.url, "m-auth", 10, &["--redis-password", PASSWORD]);
    let acl_url = format!("redis://{APP_USER}@127.0.0.1:{port}/");
    let mut command = signaling_node_command(&acl_url, "sig-auth", &[]);
    command.env("CONCLAVE_REDIS_PASSWORD", APP_PASSWORD);
    let (_signaling, server) = start_signaling(command);
    let store = ClusterStore::connect(
        RedisSettings {
            url: redis.url.clone(),
            password: Some(PASSWORD.into()),
            ca_file: None,
        },
        "conclave:",
    )
    .await
    .unwrap();
    registered(&store, "m-auth").await;
    call_is_answered(&server, "authed").await;

    // Wrong or missing: the node exits with an error naming the cause, never the password.
    let wrong_url = format!("redis://:{WRONG}@127.0.0.1:{port}/");
    let mut wrong_env = media_node_command(&redis.url, "m-wrong", 10, &[]);
    wrong_env.env("CONCLAVE_REDIS_PASSWORD", WRONG);
    let mut wrong_user = signaling_node_command(&acl_url, "sig-wrong", &[]);
    wrong_user.env("CONCLAVE_REDIS_PASSWORD", WRONG);
    let cases = [
        (
            "media, no password",
            media_node_command(&redis.url, "m-none", 10, &[]),
        ),
        ("media, wrong password in the env", wrong_env),
        (
            "signaling, no password",
            signaling_node_command(&redis.url, "sig-none", &[]),
        ),
        (
            "signaling, wrong password in the URL",
            signaling_node_command(&wrong_url, "sig-wrong-url", &[]),
        ),
        ("signaling, ACL user with a wrong password", wrong_user),
    ];
    for (what, command) in cases {
        let (code, log) = exit_and_log(command);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{what}: exit {code:?}\n{log}"
        );
        assert!(
            log.contains("redis refused the credentials"),
            "{what}: says why\n{log}"
        );
        assert!(!log.contains(WRONG), "{what}: printed the password\n{log}");
    }
    // The refused nodes registered nothing; the good ones still work.
    for id in ["m-none", "m-wrong"] {
        assert_eq!(store.node_participants(id).await.unwrap(), None, "{id}");
    }
    call_is_answered(&server, "still-authed").await;
}

#[actix_rt::test]
async fn both_nodes_reach_a_tls_only_redis_that_their_ca_file_trusts() {
    let redis = TestRedis::start_secured(Security {
        password: Some(PASSWORD.into()),
        tls: true,
        ..Security::default()
    });
    let ca_file = redis.ca_file.clone().unwrap();
    let ca = ca_file.to_str().unwrap();
    let tls_flags = ["--redis-password", PASSWORD, "--redis-ca-file", ca];
    let (_media, _, _) = spawn_media_node_with(&redis.url, "m-tls", 10, &tls_flags);
    let (_signaling, server) =
        start_signaling(signaling_node_command(&redis.url, "sig-tls", &tls_flags));
    let store = ClusterStore::connect(
        RedisSettings {
            url: redis.url.clone(),
            password: Some(PASSWORD.into()),
            ca_file: Some(ca_file.clone()),
        },
        "conclave:",
    )
    .await
    .unwrap();
    registered(&store, "m-tls").await;
    call_is_answered(&server, "over-tls").await;
}
