//! The load generator, tested against a real signaling node process (embedded media node) on
//! 127.0.0.1. Needs `cargo build --bins` first (the test command does it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conclave_bench::load::{self, LoadConfig, Target};
use conclave_bench::sim::MediaPlan;

/// A signaling node we started; killed by PID when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signaling_bin() -> std::path::PathBuf {
    // target/debug/deps/load-xxxx -> target/debug/signaling-node
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("signaling-node");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

fn start_node() -> Node {
    let mut child = Command::new(signaling_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--dev",
            "--udp-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
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
    Node { child, url }
}

fn config(node: &Node, participants: u32, secs: f64) -> LoadConfig {
    LoadConfig {
        target: Target::Conclave,
        url: node.url.clone(),
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
        duration: Duration::from_secs_f64(secs),
        token_secret: None,
        media_pid: Some(node.child.id()),
        threads: 1,
        warmup: Duration::from_secs(1),
        room_prefix: "t".into(),
        bind_ip: "127.0.0.1".parse().unwrap(),
        progress: false,
        video_loss_percent: 0.0,
    }
}

#[test]
fn a_short_run_reports_no_loss_and_sane_latency() {
    let node = start_node();
    let s = load::run(&config(&node, 3, 3.0)).unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    assert!(s.frames_expected > 100, "{s:?}");
    assert_eq!(s.frames_received, s.frames_expected, "{s:?}");
    assert_eq!(s.loss_percent, 0.0);
    let lat = s.latency_ms.clone().unwrap();
    assert!(lat.p50 > 0.0 && lat.p99 < 250.0, "{lat:?}");
    assert!(s.window_packets > 0);
    assert!(s.media_cpu_seconds.unwrap() > 0.0);
    assert!(s.forwarded_per_cpu_second.unwrap() > 0.0);
    let j = s.join_to_first_media_ms.clone().unwrap();
    assert!(j.max < 5000.0, "{j:?}");
}

/// A lossy last mile: every 20th video packet a participant receives is dropped before its
/// client sees it. The client NACKs, the node resends from its retransmission cache (RTX),
/// and every frame still arrives.
#[test]
fn dropped_video_packets_are_repaired_by_retransmission() {
    let node = start_node();
    let mut cfg = config(&node, 3, 3.0);
    cfg.video_loss_percent = 5.0;
    let s = load::run(&cfg).unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    assert!(s.video_packets_dropped > 20, "{s:?}");
    assert!(
        s.retransmissions_received >= s.video_packets_dropped,
        "each dropped packet was resent: {s:?}"
    );
    assert!(s.frames_expected > 100, "{s:?}");
    assert_eq!(s.frames_received, s.frames_expected, "{s:?}");
    assert_eq!(s.loss_percent, 0.0);
}

#[test]
fn a_node_killed_mid_run_shows_as_loss_not_a_hang() {
    let mut node = start_node();
    let mut cfg = config(&node, 3, 4.0);
    cfg.media_pid = None;
    let started = Instant::now();
    let run = std::thread::spawn(move || load::run(&cfg));
    // Let media flow, then kill the node (SIGKILL) in the middle of the window.
    std::thread::sleep(Duration::from_millis(3500));
    node.child.kill().unwrap();
    let s = run.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run must end on its own deadline"
    );
    assert!(s.frames_received > 0, "media flowed before the kill: {s:?}");
    assert!(s.loss_percent > 10.0, "the kill must show as loss: {s:?}");
    assert!(
        s.failed > 0,
        "participants report the lost signaling: {s:?}"
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let bin = env!("CARGO_BIN_EXE_conclave-load");
    let cases: &[(&[&str], &str)] = &[
        (&["--participants", "0"], "at least 1"),
        (
            &["--participants", "2", "--publishers", "3"],
            "cannot exceed",
        ),
        (&["--url", "ftp://example"], "http://"),
        (&["--duration=-1"], "--duration"),
        (&["--fps", "0"], "--fps"),
        (&["--url", "http://127.0.0.1:1"], "cannot reach"),
        (&["--mix", "smell"], "invalid value"),
        (&["--media-pid", "4000000000"], "4000000000"),
        (&["--video-loss", "60"], "--video-loss"),
        (&["--floor", "--video-loss", "5"], "cannot be used with"),
    ];
    for (args, expect) in cases {
        let out = Command::new(bin).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
    }
}
