//! The floor: `udp-relay` started as a process, participants through it on 127.0.0.1.

use std::time::Duration;

use conclave_bench::floor::{self, FloorConfig, FloorSummary};
use conclave_bench::sim::MediaPlan;

fn config(batch: bool) -> FloorConfig {
    FloorConfig {
        relay_bin: Some(env!("CARGO_BIN_EXE_udp-relay").into()),
        batch,
        rooms: 1,
        participants_per_room: 3,
        publishers_per_room: 3,
        media: MediaPlan {
            audio: true,
            video: true,
            audio_bytes: 100,
            // Heavy enough that the relay uses several 10 ms CPU ticks in 2 s.
            video_kbps: 8000,
            video_fps: 30,
            keyframe_interval: 30,
        },
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        threads: 2,
        bind_ip: "127.0.0.1".parse().unwrap(),
        room_prefix: "floor".into(),
        progress: false,
    }
}

fn check(s: &FloorSummary) {
    let table = floor::table(s);
    assert!(s.packets_sent > 0, "{table}");
    assert_eq!(s.send_failures, 0, "{table}");
    assert!(s.packets_received > 0 && s.window_packets > 0, "{table}");
    // Everyone hears the other two publishers.
    assert_eq!(s.packets_received, s.packets_expected, "{table}");
    assert_eq!(s.loss_percent, 0.0, "{table}");
    assert!(s.relay_cpu_seconds.unwrap() > 0.0, "{table}");
    assert!(s.forwarded_per_cpu_second.unwrap() > 0.0, "{table}");
    assert!(
        s.latency_ms.is_some() && s.relay_peak_rss_mib.is_some(),
        "{table}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", s.relay_pid)).exists(),
        "relay {} still running",
        s.relay_pid
    );
    assert!(table.contains("forwarded packets per CPU-second"));
}

#[test]
fn floor_run_forwards_everything() {
    let s = floor::run_floor(&config(false)).expect("floor run");
    assert_eq!(s.relay_mode, "send_to");
    check(&s);
}

#[test]
fn floor_run_batched() {
    let s = floor::run_floor(&config(true)).expect("floor run");
    assert_eq!(s.relay_mode, "sendmmsg");
    check(&s);
}

#[test]
fn missing_relay_binary_is_an_error() {
    let cfg = FloorConfig {
        relay_bin: Some("/nonexistent/udp-relay".into()),
        ..config(false)
    };
    let err = floor::run_floor(&cfg).unwrap_err();
    assert!(err.contains("cannot start"), "{err}");
}
