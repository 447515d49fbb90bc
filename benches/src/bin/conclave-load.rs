//! `conclave-load`: simulated participants against a Conclave signaling node, like LiveKit's
//! `lk load-test`, or against Janus VideoRoom (`--target janus`) with the same participants
//! and workload. Prints a live progress line and a summary table; `--json` for machines.
//! `--floor` runs the same scenario through `udp-relay` (plain UDP, no WebRTC) instead: the
//! baseline the SFU's cost is reported against.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use conclave_bench::floor::{self, FloorConfig};
use conclave_bench::load::{self, LoadConfig, Target};
use conclave_bench::sim::MediaPlan;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetArg {
    /// A Conclave signaling node (`--url http://host:8080`).
    Conclave,
    /// Janus VideoRoom over Janus's HTTP transport (`--url http://host:8088/janus`).
    Janus,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mix {
    /// Audio and video.
    Av,
    Audio,
    Video,
}

/// Load generator for Conclave.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The server under test.
    #[arg(long, value_enum, default_value = "conclave")]
    target: TargetArg,
    /// Signaling node base URL (Janus: its HTTP API, `http://host:8088/janus`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 1)]
    rooms: u32,
    #[arg(long, default_value_t = 4)]
    participants: u32,
    /// Publishers per room (the rest only listen). Default: everyone.
    #[arg(long)]
    publishers: Option<u32>,
    #[arg(long, value_enum, default_value = "av")]
    mix: Mix,
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Audio payload bytes per 20 ms packet (Opus-sized).
    #[arg(long, default_value_t = 100)]
    audio_bytes: usize,
    /// Keyframe every N video frames.
    #[arg(long, default_value_t = 60)]
    keyframe_interval: u32,
    /// Seconds of measured steady state.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds between the last join and the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Token secret of the node; without it tokens come from the node's `/dev/token`.
    #[arg(long, env = "CONCLAVE_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// PID of the process hosting the media node (or of Janus), to measure its CPU and memory.
    #[arg(long)]
    media_pid: Option<u32>,
    /// Worker threads for the simulated participants. On a 2-core machine 1 leaves the
    /// other core to the node: with 2, the generator's own stalls show up as SFU latency.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value = "load")]
    room_prefix: String,
    /// Local IP for the participants' UDP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Drop this percentage of the video packets each participant receives (evenly spread,
    /// before the client sees them), as a lossy last mile would: shows NACK and
    /// retransmission at work. The reported loss is what stays lost after repair. Nothing is
    /// dropped in the last 0.5 s of publishing, where no later packet would reveal the gap.
    #[arg(long, default_value_t = 0.0, conflicts_with = "floor")]
    video_loss: f64,
    /// Write the summary as JSON to this file (`-` for stdout, instead of the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the scenario through `udp-relay` (plain UDP relay, no ICE/DTLS/SRTP) instead of
    /// the SFU: the floor. `--url`, `--token-secret` and `--media-pid` are not used.
    #[arg(long)]
    floor: bool,
    /// With `--floor`: the relay sends with one `sendmmsg` per packet instead of one
    /// `send_to` per member.
    #[arg(long, requires = "floor")]
    relay_batch: bool,
    /// With `--floor`: the `udp-relay` binary (default: next to this one).
    #[arg(long, requires = "floor")]
    relay_bin: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let (audio, video) = match cli.mix {
        Mix::Av => (true, true),
        Mix::Audio => (true, false),
        Mix::Video => (false, true),
    };
    let duration_ok = cli.duration > 0.0 && cli.duration <= 3600.0;
    if !duration_ok || !(0.0..=60.0).contains(&cli.warmup) {
        fail("--duration must be in (0, 3600] s and --warmup in [0, 60] s");
    }
    if cli.fps == 0 || cli.fps > 120 {
        fail("--fps must be 1..=120");
    }
    if !(0.0..=50.0).contains(&cli.video_loss) {
        fail("--video-loss must be a percentage in [0, 50]");
    }
    let cfg = LoadConfig {
        target: match cli.target {
            TargetArg::Conclave => Target::Conclave,
            TargetArg::Janus => Target::Janus,
        },
        url: cli.url.trim_end_matches('/').to_string(),
        rooms: cli.rooms,
        participants_per_room: cli.participants,
        publishers_per_room: cli.publishers.unwrap_or(cli.participants),
        media: MediaPlan {
            audio,
            video,
            audio_bytes: cli.audio_bytes,
            video_kbps: cli.video_kbps,
            video_fps: cli.fps,
            keyframe_interval: cli.keyframe_interval,
        },
        duration: Duration::from_secs_f64(cli.duration),
        token_secret: cli.token_secret,
        media_pid: cli.media_pid,
        threads: cli.threads,
        warmup: Duration::from_secs_f64(cli.warmup),
        room_prefix: cli.room_prefix,
        bind_ip: cli.bind_ip,
        progress: cli.json.as_deref() != Some(std::path::Path::new("-")),
        video_loss_percent: cli.video_loss,
    };
    if cli.floor {
        let floor_cfg = FloorConfig {
            relay_bin: cli.relay_bin,
            batch: cli.relay_batch,
            ..FloorConfig::from_load(&cfg)
        };
        match floor::run_floor(&floor_cfg) {
            Ok(s) => report(&s, &floor::table(&s), cli.json.as_deref()),
            Err(e) => fail(&e),
        }
    } else {
        match load::run(&cfg) {
            Ok(s) => report(&s, &load::table(&s), cli.json.as_deref()),
            Err(e) => fail(&e),
        }
    }
}

/// The table on stdout, or the JSON (to stdout for `-`, else to the file and the table too).
fn report<T: serde::Serialize>(summary: &T, table: &str, json: Option<&std::path::Path>) {
    match json {
        Some(path) if path.as_os_str() == "-" => {
            println!(
                "{}",
                serde_json::to_string_pretty(summary).unwrap_or_default()
            )
        }
        Some(path) => {
            let json = serde_json::to_string_pretty(summary).unwrap_or_default();
            if let Err(e) = std::fs::write(path, json) {
                fail(&format!("cannot write {}: {e}", path.display()));
            }
            print!("{table}");
        }
        None => print!("{table}"),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("conclave-load: {msg}");
    std::process::exit(2);
}
