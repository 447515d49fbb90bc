//! Room threads and the load model, measured on real processes (issue 14 items 1–2): rooms
//! land on different room threads, each thread's socket carries only its rooms, and the load
//! figure a media node publishes in its heartbeat follows what it really forwards.
//!
//! Needs `cargo build --bins` first (the binaries under test) and `redis-server`.

use std::process::Command;
use std::time::{Duration, Instant};

use conclave_bench::load::{self, LoadConfig, Summary, Target};
use conclave_bench::sim::MediaPlan;
use conclave_common::test_redis::TestRedis;

mod support;
use support::{field, labelled_sample, timed_get};

const LINK_SECRET: &str = "room-threads-test-link-secret-0123456789";
const TOKEN_SECRET: &str = "room-threads-test-token-secret-0123456789";

/// One room of `participants`, all publishing audio and video, for `secs`.
fn one_room(url: &str, prefix: &str, participants: u32, secs: u64, warmup: u64) -> LoadConfig {
    LoadConfig {
        target: Target::Conclave,
        url: url.to_string(),
        rooms: 1,
        participants_per_room: participants,
        publishers_per_room: participants,
        media: MediaPlan {
            audio: true,
            video: true,
            audio_bytes: 100,
            video_kbps: 300,
            video_fps: 15,
            keyframe_interval: 30,
        },
        duration: Duration::from_secs(secs),
        token_secret: Some(TOKEN_SECRET.into()),
        media_pid: None,
        threads: 1,
        warmup: Duration::from_secs(warmup),
        room_prefix: prefix.into(),
        bind_ip: "127.0.0.1".parse().unwrap(),
        progress: false,
        video_loss_percent: 0.0,
    }
}

fn run_ok(cfg: LoadConfig) -> Summary {
    let summary = load::run(&cfg).expect("the load runs");
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    summary
}

/// A signaling node with an embedded media node of two room threads: its first room opens on
/// thread 0 (a tie goes to the lowest index), its second on thread 1 (thread 0 then carries
/// the first room's reservation and media). While both run, each thread has one room; at the
/// end each thread's forwarded count is what its own room's subscribers received, and
/// nothing of the other room: a room's datagrams never cross to another thread's socket.
#[test]
fn rooms_land_on_different_threads_and_each_threads_socket_carries_only_its_room() {
    let (_node, line) = support::start(
        "signaling-node",
        &[
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--token-secret",
            TOKEN_SECRET,
            "--udp-listen",
            "127.0.0.1:0",
            "--media-threads",
            "2",
            "--max-connections-per-ip",
            "0",
        ],
        LINK_SECRET,
    );
    let (url, internal) = (field(&line, "url="), field(&line, "internal="));
    let udp: Vec<&str> = field(&line, "udp=").leak().split(',').collect();
    assert_eq!(udp.len(), 2, "one socket per room thread: {line:?}");
    assert_ne!(udp[0], udp[1], "{line:?}");

    let small = one_room(&url, "small", 2, 9, 1);
    let small = std::thread::spawn(move || run_ok(small));
    let metrics = || timed_get(&internal, "/metrics").1;
    wait_for(|| {
        labelled_sample(&metrics(), "conclave_media_thread_rooms", "thread=\"0\"") == Some(1.0)
    });
    let big = one_room(&url, "big", 4, 5, 1);
    let big = std::thread::spawn(move || run_ok(big));
    wait_for(|| {
        labelled_sample(&metrics(), "conclave_media_thread_rooms", "thread=\"1\"") == Some(1.0)
    });
    let m = metrics();
    assert_eq!(
        labelled_sample(&m, "conclave_media_thread_rooms", "thread=\"0\""),
        Some(1.0),
        "one room per thread while both run"
    );
    let (small, big) = (small.join().unwrap(), big.join().unwrap());

    let m = metrics();
    let forwarded = |thread: &str| {
        labelled_sample(
            &m,
            "conclave_media_forwarded_packets_total",
            &format!("thread=\"{thread}\""),
        )
        .unwrap()
    };
    let (on_0, on_1) = (forwarded("0"), forwarded("1"));
    // 2 publishers × 1 subscriber for 9 s against 4 × 3 for 5 s: ≈ 3.3× apart, so a room
    // counted on the wrong thread could not pass.
    for (thread, counted, received) in [
        ("0 (small room)", on_0, small.packets_received as f64),
        ("1 (big room)", on_1, big.packets_received as f64),
    ] {
        assert!(received > 0.0, "thread {thread}: nothing received");
        assert!(
            (counted - received).abs() <= 0.03 * counted,
            "thread {thread} forwarded {counted}, its room's subscribers received {received}"
        );
    }
    for thread in ["0", "1"] {
        let rx = labelled_sample(
            &m,
            "conclave_media_udp_received_packets_total",
            &format!("thread=\"{thread}\""),
        );
        assert!(
            rx.unwrap_or(0.0) > 0.0,
            "thread {thread}'s socket received nothing"
        );
    }
}

/// A media node in cluster mode (real Redis) and a signaling node placing rooms on it. For a
/// 3-person and then a 6-person room, the `load` its heartbeat writes to Redis, read once the
/// participants' reservations have expired, is within 10 % of what the participants really
/// received per second (0 % loss: that is what the node forwarded).
#[test]
fn the_heartbeats_load_follows_the_forwarding_rate_for_two_room_sizes() {
    let redis = TestRedis::start();
    let redis_url = redis.url.clone();
    let (_media, _) = support::start(
        "media-node",
        &[
            "--listen",
            "127.0.0.1:0",
            "--udp-listen",
            "127.0.0.1:0",
            "--advertise-ip",
            "127.0.0.1",
            "--media-threads",
            "1",
            "--node-id",
            "m1",
            "--redis-url",
            &redis_url,
        ],
        LINK_SECRET,
    );
    let (_signaling, line) = support::start(
        "signaling-node",
        &[
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--token-secret",
            TOKEN_SECRET,
            "--redis-url",
            &redis_url,
            "--link-secret",
            LINK_SECRET,
            "--max-connections-per-ip",
            "0",
        ],
        LINK_SECRET,
    );
    let url = field(&line, "url=");
    let heartbeat_load = || -> Option<f64> {
        let out = Command::new("redis-cli")
            .args(["-u", &redis_url, "HGET", "conclave:node:m1", "load"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    wait_for(|| heartbeat_load().is_some());

    for (prefix, participants) in [("three", 3), ("six", 6)] {
        // Joins take about a second; reservations last RAMP_SECS (5 s) after each; the rate
        // is measured over 3 s. Read the heartbeats from 8 s on, the load's window from 2 s.
        let cfg = one_room(&url, prefix, participants, 12, 2);
        let run = std::thread::spawn(move || run_ok(cfg));
        std::thread::sleep(Duration::from_secs(8));
        let mut readings = Vec::new();
        for _ in 0..3 {
            readings.extend(heartbeat_load());
            std::thread::sleep(Duration::from_millis(1000));
        }
        let summary = run.join().unwrap();
        assert!(
            summary.loss_percent < 0.5,
            "{prefix}: loss {}",
            summary.loss_percent
        );
        readings.sort_by(f64::total_cmp);
        let published = readings[readings.len() / 2];
        let truth = summary.window_packets as f64 / summary.window_secs;
        assert!(truth > 0.0, "{prefix}: nothing forwarded");
        assert!(
            (published - truth).abs() <= 0.10 * truth,
            "{prefix}: heartbeat load {published} fpps (readings {readings:?}), forwarded {truth:.0} per second"
        );
    }
}

/// Poll `ready` every 100 ms for up to 30 s.
fn wait_for(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}
