//! Real processes for cluster tests: a Redis server and media-node binaries on 127.0.0.1,
//! each killed by its PID when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{valid_offer, Client, Received, TestServer};

/// A child process we started, killed by PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub use conclave_common::test_redis::{free_port, TestRedis};

pub fn start_redis() -> (TestRedis, String) {
    let redis = TestRedis::start();
    let url = redis.url.clone();
    (redis, url)
}

/// A Redis server on `port` (to restart one where it was).
pub fn start_redis_on(port: u16) -> (TestRedis, String) {
    let redis = TestRedis::start_on(port);
    let url = redis.url.clone();
    (redis, url)
}

pub fn media_node_bin() -> std::path::PathBuf {
    sibling_bin("media-node")
}

/// A binary of this workspace next to the test executable.
pub fn sibling_bin(name: &str) -> std::path::PathBuf {
    // target/debug/deps/it-xxxx -> target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

/// Poll `check` every 100 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
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

/// A media-node process in cluster mode; returns it, its link URL and its first room thread's UDP address.
pub fn spawn_media_node(redis_url: &str, id: &str, capacity: u32) -> (Proc, String, String) {
    spawn_media_node_with(redis_url, id, capacity, &[])
}

/// Like [`spawn_media_node`], with extra flags.
pub fn spawn_media_node_with(
    redis_url: &str,
    id: &str,
    capacity: u32,
    extra: &[&str],
) -> (Proc, String, String) {
    let mut child = media_node_command(redis_url, id, capacity, extra)
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
    // The first room thread's socket: a node's first room opens there (the least loaded
    // thread, the lowest index on a tie).
    let udp = field("udp=")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    (Proc(child), link_url, udp)
}

/// The command line of a media-node in cluster mode (stdout piped: its readiness line).
pub fn media_node_command(redis_url: &str, id: &str, capacity: u32, extra: &[&str]) -> Command {
    let mut command = Command::new(media_node_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0"])
        .args(["--redis-url", redis_url, "--node-id", id])
        .args(["--capacity", &capacity.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("CONCLAVE_LINK_SECRET", crate::support::LINK_SECRET)
        .stdout(Stdio::piped());
    command
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Join `room` as `user` and offer; returns the client (still in the room) and the reply to
/// the offer (or the error refusing the join).
pub async fn join_and_offer(
    server: &TestServer,
    user: &str,
    room: &str,
) -> (Client, serde_json::Value) {
    let mut c = server.connect().await;
    c.send(json!({"id": "join", "token": server.token(user, room)}))
        .await;
    let reply = c.recv(Duration::from_secs(10)).await;
    let Received::Message(joined) = reply else {
        panic!("no reply to join: {reply:?}");
    };
    if joined["id"] != "joined" {
        return (c, joined);
    }
    // The link to a newly used media node may still be connecting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        // Room events of others joining at the same time may come first.
        let v = loop {
            let v = c.expect_any().await;
            if v["id"] == "answer" || v["id"] == "error" {
                break v;
            }
        };
        if v["id"] == "answer" || v["code"] != "unavailable" || Instant::now() > deadline {
            return (c, v);
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A signaling-node process and where its internal API is (`http://...`).
pub struct SignalingProc {
    pub proc: Proc,
    pub internal: Option<String>,
}

impl SignalingProc {
    /// `kill -9`, now.
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// A signaling-node process in cluster mode (token secret: `support::SECRET`); returns it and
/// a test server handle at its URL.
pub fn spawn_signaling_node(
    redis_url: &str,
    id: &str,
    extra: &[&str],
) -> (SignalingProc, TestServer) {
    let mut child = signaling_node_command(redis_url, id, extra)
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
    let internal = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("internal="))
        .map(str::to_string);
    let proc = SignalingProc {
        proc: Proc(child),
        internal,
    };
    (proc, TestServer::at(url))
}

/// The command line of a signaling-node in cluster mode (token secret: `support::SECRET`;
/// stdout piped: its readiness line).
pub fn signaling_node_command(redis_url: &str, id: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(sibling_bin("signaling-node"));
    command
        .args(["--listen", "127.0.0.1:0", "--redis-url", redis_url])
        .args(["--internal-listen", "127.0.0.1:0"])
        .args(["--signaling-id", id, "--workers", "1"])
        .args(extra)
        .env(
            "CONCLAVE_TOKEN_SECRET",
            std::str::from_utf8(crate::support::SECRET).unwrap(),
        )
        .env("CONCLAVE_LINK_SECRET", crate::support::LINK_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    command
}

impl Proc {
    /// `kill -9`, now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
