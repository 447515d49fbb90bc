//! A media-node process in cluster mode: it registers in a real Redis and its heartbeat
//! carries the true participant count as peers come and go through a signaling node.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conclave_common::cluster::ClusterStore;
use conclave_signaling_node::media_link::MediaTarget;
use serde_json::json;

use crate::support::{start_with, valid_offer, Options};

/// A child process we started, killed by PID when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis() -> (Proc, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (the test command installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), format!("redis://127.0.0.1:{port}/"))
}

fn media_node_bin() -> std::path::PathBuf {
    // target/debug/deps/it-xxxx -> target/debug/media-node
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("media-node");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

/// Poll `check` every 100 ms until it is true or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A media-node process in cluster mode; returns it, its link URL and its UDP address.
fn spawn_media_node(redis_url: &str, id: &str, capacity: u32) -> (Proc, String, String) {
    let mut child = Command::new(media_node_bin())
        .args(["--listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0"])
        .args(["--redis-url", redis_url, "--node-id", id])
        .args(["--capacity", &capacity.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("media-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let link_url = format!("ws://{}/internal/link", field("internal=http://"));
    let udp = field("udp=");
    (Proc(child), link_url, udp)
}

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
    let server = start_with(
        Options::default(),
        None,
        Some(MediaTarget::Remote(link_url)),
    );
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Join `room` as `user` and offer; returns the client (still in the room) and the reply to
/// the offer (or the error refusing the join).
async fn join_and_offer(
    server: &crate::support::TestServer,
    user: &str,
    room: &str,
) -> (crate::support::Client, serde_json::Value) {
    let mut c = server.connect().await;
    c.send(json!({"id": "join", "token": server.token(user, room)}))
        .await;
    let reply = c.recv(Duration::from_secs(10)).await;
    let crate::support::Received::Message(joined) = reply else {
        panic!("no reply to join: {reply:?}");
    };
    if joined["id"] != "joined" {
        return (c, joined);
    }
    // The link to a newly used media node may still be connecting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        let v = c.expect_any().await;
        if v["id"] == "answer" || v["code"] != "unavailable" || Instant::now() > deadline {
            return (c, v);
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
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
