//! Liveness and metrics answer within 100 ms while the media node's media thread is
//! saturated (issue 11, item 8). A real `media-node` process with one room thread, a real
//! `signaling-node` linked to it, and the load generator's `many` scenario (50 rooms × 4,
//! everyone publishing audio and video) against them; during the load, `/healthz`, `/readyz`
//! and `/metrics` of the media node and the signaling node's internal `/healthz` and
//! `/metrics` are polled, each answer timed from connect to last byte.
//!
//! The bound is a correctness bound, not a benchmark. The load is `many` overdriven (video at
//! 1.5 Mbps, the generator on two threads), so the media thread gets more than it can handle
//! (about half the packets are lost): a room thread that has just enough work leaves gaps in
//! which an actor message slips through, and then even the old probe passes. The test checks
//! that the media thread was saturated (runnable all the time: on a CPU or waiting for one,
//! from the thread's `/proc/<pid>/task/<tid>/schedstat`). Against the old code (the probe
//! sends a message to the node's actor, which shares that thread) it fails: maxima of
//! 195–228 ms in 3 of 3 runs (`CONCLAVE_MEDIA_BIN=<old build>`), against ≤ 48 ms here.
//!
//! Needs `cargo build --bins` first (the binaries under test).

use std::time::{Duration, Instant};

use conclave_bench::load::{self, LoadConfig, Target};
use conclave_bench::sim::MediaPlan;

mod support;
use support::{field, sample, timed_get};

/// The bound every probe answer must keep.
const PROBE_BOUND: Duration = Duration::from_millis(100);
/// Polls per endpoint (bounded), one every `POLL_INTERVAL`.
const POLLS: usize = 60;
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Share of wall time the media thread must be runnable for the load to count as saturating.
const SATURATED: f64 = 0.9;

/// The start-up arguments of every process of this file, in one place.
mod args {
    /// `media-node`: one room thread, so the `many` scenario saturates it.
    pub const MEDIA_NODE: &[&str] = &[
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "127.0.0.1:0",
        "--advertise-ip",
        "127.0.0.1",
        "--media-threads",
        "1",
    ];
    /// `signaling-node` linked to that media node (append `--media-node <link url>`); dev
    /// mode mints the generator's tokens (no Redis, no real secret: plain dev mode).
    pub const SIGNALING_NODE: &[&str] = &[
        "--listen",
        "127.0.0.1:0",
        "--internal-listen",
        "127.0.0.1:0",
        "--dev",
        "--room-cap",
        "200",
        // 200 generated participants come from one address.
        "--max-connections-per-ip",
        "0",
    ];
    /// The internal link's secret, given to both processes (CONCLAVE_LINK_SECRET).
    pub const LINK_SECRET: &str = "health-under-load-link-secret-0123456789";
}

/// Per thread of `pid`: (time on a CPU, time waiting for one), in ns, from schedstat.
fn thread_sched(pid: u32) -> Vec<(u32, u64, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some((tid, f.next()??, f.next()??))
    })
    .collect()
}

/// The busiest thread of `pid` over `window`: (share of wall time on a CPU, share runnable
/// — on a CPU or waiting for one).
fn busiest_thread(pid: u32, before: &[(u32, u64, u64)], window: Duration) -> (f64, f64) {
    let after = thread_sched(pid);
    let wall = window.as_nanos() as f64;
    after
        .iter()
        .filter_map(|&(tid, run, wait)| {
            let &(_, run0, wait0) = before.iter().find(|b| b.0 == tid)?;
            let run = run.saturating_sub(run0) as f64 / wall;
            Some((run, run + wait.saturating_sub(wait0) as f64 / wall))
        })
        .fold((0.0, 0.0), |best, t| if t.0 > best.0 { t } else { best })
}

#[test]
fn liveness_and_metrics_answer_within_100_ms_while_the_media_thread_is_saturated() {
    let (media, media_line) = support::start("media-node", args::MEDIA_NODE, args::LINK_SECRET);
    let media_http = field(&media_line, "internal=");
    let link = format!("{}/internal/link", media_http.replace("http://", "ws://"));
    let mut sig_args = args::SIGNALING_NODE.to_vec();
    sig_args.extend(["--media-node", &link]);
    let (_signaling, sig_line) = support::start("signaling-node", &sig_args, args::LINK_SECRET);
    let (url, sig_internal) = (field(&sig_line, "url="), field(&sig_line, "internal="));

    // The `many` scenario of docs/performance.md (50 rooms × 4, all publish audio + video),
    // overdriven: 1.5 Mbps video, the generator on two threads.
    let rooms = 50;
    let per_room = 4;
    let cfg = LoadConfig {
        target: Target::Conclave,
        url,
        rooms,
        participants_per_room: per_room,
        publishers_per_room: per_room,
        media: MediaPlan {
            audio: true,
            video: true,
            audio_bytes: 100,
            video_kbps: 1500,
            video_fps: 30,
            keyframe_interval: 60,
        },
        duration: Duration::from_secs(12),
        token_secret: None,
        media_pid: None,
        threads: 2,
        warmup: Duration::from_secs(1),
        room_prefix: "busy".into(),
        bind_ip: "127.0.0.1".parse().unwrap(),
        progress: false,
        video_loss_percent: 0.0,
    };
    let load = std::thread::spawn(move || load::run(&cfg));

    // Everyone joined and publishing: the media node's own gauge says so.
    let total = (rooms * per_room) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m, _) = timed_get(&media_http, "/metrics");
        if sample(&m, "conclave_media_participants") == Some(total) {
            break;
        }
        assert!(
            Instant::now() < deadline && !load.is_finished(),
            "the {total} participants never all joined: {:?}",
            sample(&m, "conclave_media_participants")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let media ramp up (every subscriber connected) before measuring.
    std::thread::sleep(Duration::from_secs(2));

    let pid = media.0.id();
    let sched_before = thread_sched(pid);
    let window_start = Instant::now();
    let endpoints = [
        (media_http.clone(), "/healthz"),
        (media_http.clone(), "/metrics"),
        (media_http.clone(), "/readyz"),
        (sig_internal.clone(), "/healthz"),
        (sig_internal.clone(), "/metrics"),
    ];
    // One poller per endpoint, at the same time (a probe and a scrape may coincide).
    let pollers: Vec<_> = endpoints
        .into_iter()
        .map(|(base, path)| {
            std::thread::spawn(move || {
                let mut times = Vec::new();
                let mut bad = Vec::new();
                for _ in 0..POLLS {
                    let (status, body, took) = timed_get(&base, path);
                    if !status.contains(" 200 ") {
                        bad.push(format!("{status} {body}"));
                    }
                    times.push(took);
                    std::thread::sleep(POLL_INTERVAL);
                }
                (format!("{base}{path}"), times, bad)
            })
        })
        .collect();
    let results: Vec<_> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
    let window = window_start.elapsed();
    let (on_cpu, runnable) = busiest_thread(pid, &sched_before, window);
    let (_, m, _) = timed_get(&media_http, "/metrics");
    let still_there = sample(&m, "conclave_media_participants");
    let summary = load.join().unwrap();

    let mut report = format!(
        "media thread over {:.1} s: on a CPU {:.0} %, runnable {:.0} %; participants at the end {still_there:?}\n",
        window.as_secs_f64(),
        on_cpu * 100.0,
        runnable * 100.0
    );
    for (what, times, _) in &results {
        let max = times.iter().max().copied().unwrap_or_default();
        let mut sorted = times.clone();
        sorted.sort();
        let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        report += &format!(
            "{what}: {} polls, p50 {:.1} ms, max {:.1} ms\n",
            times.len(),
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    eprintln!("{report}");
    if let Ok(s) = &summary {
        eprintln!(
            "load: {} joined, {} failed, loss {:.3} %",
            s.participants, s.failed, s.loss_percent
        );
    }
    // The load really saturated the media thread (else the bound proves nothing).
    assert!(
        runnable >= SATURATED,
        "the media thread was not saturated; the test proves nothing:\n{report}"
    );
    assert_eq!(
        still_there,
        Some(total),
        "the call lasted the window:\n{report}"
    );
    for (what, times, bad) in &results {
        assert!(bad.is_empty(), "{what} answered badly: {bad:?}\n{report}");
        assert!(times.len() >= POLLS / 2, "{what}: too few polls\n{report}");
        let max = times.iter().max().copied().unwrap_or_default();
        assert!(
            max <= PROBE_BOUND,
            "{what} took {:.1} ms (bound {} ms) while the media thread was saturated:\n{report}",
            max.as_secs_f64() * 1e3,
            PROBE_BOUND.as_millis()
        );
    }
}
