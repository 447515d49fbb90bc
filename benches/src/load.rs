//! A whole load run: tokens, participants spread over worker threads, the media node's
//! CPU and memory over the steady-state window, and the summary.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat;
use crate::sim::{self, tally, Endpoint, MediaPlan, ParticipantPlan, ParticipantReport, Signaling};

/// The server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// A Conclave signaling node (`url`: its base URL, `http://127.0.0.1:8080`).
    #[default]
    Conclave,
    /// Janus VideoRoom over its HTTP REST transport (`url`: `http://host:8088/janus`).
    Janus,
}

/// Janus room ids of a run: one per room index (fresh Janus per run, so fixed ids do).
pub fn janus_room_id(room_idx: u32) -> u64 {
    1000 + u64::from(room_idx)
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Target,
    /// Signaling node base URL, `http://127.0.0.1:8080` (Janus: `http://host:8088/janus`).
    pub url: String,
    pub rooms: u32,
    pub participants_per_room: u32,
    pub publishers_per_room: u32,
    pub media: MediaPlan,
    pub duration: Duration,
    /// Mint tokens with this secret; without it, ask the node's `/dev/token`.
    pub token_secret: Option<String>,
    /// PID of the process running the media node (CPU and memory are read from `/proc`).
    pub media_pid: Option<u32>,
    pub threads: usize,
    /// Settling time after the last join before the measured window starts.
    pub warmup: Duration,
    pub room_prefix: String,
    pub bind_ip: std::net::IpAddr,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Drop this share (percent) of the video packets each participant receives, before its
    /// client sees them: a lossy last mile. The node repairs them by NACK and retransmission,
    /// so `loss_percent` is what stays lost. 0: drop nothing.
    pub video_loss_percent: f64,
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Progress {
    pub joined: Arc<AtomicU64>,
    pub finished: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The result of a run (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub participants: u32,
    pub failed: u32,
    pub errors: Vec<String>,
    pub join_ms: Option<Percentiles>,
    pub join_to_first_media_ms: Option<Percentiles>,
    pub frames_sent: u64,
    pub frames_expected: u64,
    pub frames_received: u64,
    pub loss_percent: f64,
    pub reordered: u64,
    /// RTP media packets delivered to subscribers over the whole run.
    pub packets_received: u64,
    pub latency_ms: Option<Percentiles>,
    pub window_secs: f64,
    pub media_cpu_seconds: Option<f64>,
    /// CPU-seconds the generator itself spent in the window (it shares the machine).
    pub generator_cpu_seconds: Option<f64>,
    /// RTP media packets delivered to subscribers inside the measured window.
    pub window_packets: u64,
    /// `window_packets` per media-node CPU-second spent in the window.
    pub forwarded_per_cpu_second: Option<f64>,
    pub media_peak_rss_mib: Option<f64>,
    pub media_rss_per_participant_kib: Option<f64>,
    /// Video packets the participants dropped on purpose (`video_loss_percent`).
    pub video_packets_dropped: u64,
    /// Retransmitted (RTX) packets the participants received.
    pub retransmissions_received: u64,
}

/// Run the load and summarise it. Blocks the calling thread until the run ends.
pub fn run(cfg: &LoadConfig) -> Result<Summary, String> {
    if cfg.rooms == 0 || cfg.participants_per_room == 0 {
        return Err("rooms and participants per room must be at least 1".into());
    }
    if cfg.publishers_per_room > cfg.participants_per_room {
        return Err("publishers per room cannot exceed participants per room".into());
    }
    if let Some(pid) = cfg.media_pid {
        procstat::cpu_seconds(pid).ok_or(format!("no process {pid} to measure"))?;
    }
    let ws_base = match cfg.target {
        Target::Janus => String::new(),
        Target::Conclave => {
            if let Some(rest) = cfg.url.strip_prefix("https://") {
                format!("wss://{rest}")
            } else if let Some(rest) = cfg.url.strip_prefix("http://") {
                format!("ws://{rest}")
            } else {
                return Err(format!(
                    "url must start with http:// or https://: {}",
                    cfg.url
                ));
            }
        }
    };
    if cfg.target == Target::Janus {
        let rooms: Vec<u64> = (0..cfg.rooms).map(janus_room_id).collect();
        let url = cfg.url.clone();
        let publishers = cfg.publishers_per_room.max(1);
        actix_rt::System::new()
            .block_on(async move { crate::janus::create_rooms(&url, &rooms, publishers).await })
            .map_err(|e| format!("janus at {}: {e}", cfg.url))?;
    }
    let total = cfg.rooms * cfg.participants_per_room;
    // Joins take a moment each on a busy 2-core box; budget for them before the window.
    let join_budget = Duration::from_millis(200 + 40 * total as u64);
    let start = Instant::now();
    let window_start = start + join_budget + cfg.warmup;
    let stop_at = window_start + cfg.duration;
    let drain = Duration::from_secs(1);

    let progress = Arc::new(Progress::default());
    let mut plans = Vec::new();
    for room_idx in 0..cfg.rooms {
        let room = format!("{}-{room_idx}", cfg.room_prefix);
        for p in 0..cfg.participants_per_room {
            let index = room_idx * cfg.participants_per_room + p;
            let signaling = match cfg.target {
                Target::Conclave => Signaling::Conclave {
                    ws_url: format!("{ws_base}/ws?room={room}"),
                    token: token(cfg, &room, &format!("sim-{index}"))?,
                },
                Target::Janus => Signaling::Janus {
                    url: cfg.url.clone(),
                    room: janus_room_id(room_idx),
                },
            };
            plans.push(ParticipantPlan {
                index,
                signaling,
                publish: (p < cfg.publishers_per_room).then(|| cfg.media.clone()),
                epoch: start,
                stop_at,
                drain,
                bind_ip: cfg.bind_ip,
                window: (window_start, stop_at),
                joined_counter: progress.joined.clone(),
                drop_video_every: drop_every(cfg.video_loss_percent),
            });
        }
    }

    let rss_before = cfg.media_pid.and_then(procstat::rss_bytes);
    let (tx, rx) = std::sync::mpsc::channel::<ParticipantReport>();
    let threads = cfg.threads.max(1);
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine: Vec<ParticipantPlan> = plans
            .iter()
            .filter(|p| p.index as usize % threads == t)
            .cloned()
            .collect();
        let tx = tx.clone();
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut tasks = Vec::new();
                for (i, plan) in mine.into_iter().enumerate() {
                    let progress = progress.clone();
                    let tx = tx.clone();
                    tasks.push(actix_rt::spawn(async move {
                        // Stagger joins a little so a room does not get them all at once.
                        actix_rt::time::sleep(Duration::from_millis(15 * i as u64)).await;
                        let report = sim::run(plan).await;
                        progress.finished.fetch_add(1, Relaxed);
                        let _ = tx.send(report);
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        }));
    }
    drop(tx);

    // The measured window: sample the media node at its edges.
    let me = std::process::id();
    let mut cpu_at_window_start = None;
    let mut rss_at_window_end = None;
    let mut cpu_at_window_end = None;
    let mut own_cpu_at_window_start = None;
    let mut own_cpu_at_window_end = None;
    let deadline = stop_at + drain + Duration::from_secs(15);
    let mut last_print = Instant::now();
    while progress.finished.load(Relaxed) < total as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if cpu_at_window_start.is_none() && now >= window_start {
            cpu_at_window_start = cfg.media_pid.and_then(procstat::cpu_seconds);
            own_cpu_at_window_start = procstat::cpu_seconds(me);
        }
        if cpu_at_window_end.is_none() && now >= stop_at {
            cpu_at_window_end = cfg.media_pid.and_then(procstat::cpu_seconds);
            own_cpu_at_window_end = procstat::cpu_seconds(me);
            rss_at_window_end = cfg.media_pid.and_then(procstat::rss_bytes);
        }
        if cfg.progress && now.duration_since(last_print) >= Duration::from_secs(1) {
            last_print = now;
            let phase = if now < window_start {
                "joining"
            } else if now < stop_at {
                "measuring"
            } else {
                "draining"
            };
            eprint!(
                "\r[{:>5.1}s] {phase:<9} joined {}/{total}  done {}   ",
                now.duration_since(start).as_secs_f64(),
                progress.joined.load(Relaxed),
                progress.finished.load(Relaxed),
            );
        }
    }
    if cfg.progress {
        eprintln!();
    }
    let reports: Vec<ParticipantReport> = rx.try_iter().collect();
    // Threads finish on their own by the deadline; do not wait on a stuck one.
    for h in handles {
        if h.is_finished() {
            let _ = h.join();
        }
    }
    let window = match (cpu_at_window_start, cpu_at_window_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let own_window = match (own_cpu_at_window_start, own_cpu_at_window_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(summarise(
        cfg,
        total,
        reports,
        (window, own_window),
        rss_before,
        rss_at_window_end,
        window_start,
        stop_at,
    ))
}

fn token(cfg: &LoadConfig, room: &str, user: &str) -> Result<String, String> {
    if let Some(secret) = &cfg.token_secret {
        #[derive(Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            room: &'a str,
            community: &'a str,
            exp: u64,
        }
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 3600;
        return jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &Claims {
                sub: user,
                room,
                community: "load",
                exp,
            },
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| e.to_string());
    }
    // Dev mode: ask the node, over a plain blocking HTTP/1.1 request (no TLS here).
    let addr = cfg
        .url
        .strip_prefix("http://")
        .ok_or("without --token-secret the URL must be http:// (dev mode)")?
        .trim_end_matches('/');
    dev_token(addr, room, user)
}

fn dev_token(addr: &str, room: &str, user: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)
        .map_err(|e| format!("cannot reach signaling node at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /dev/token?room={room}&user={user}&community=load HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|_| format!("no dev token from {addr} (is it running with --dev?)"))?;
    v["token"].as_str().map(str::to_string).ok_or(format!(
        "no dev token from {addr} (is it running with --dev?)"
    ))
}

fn percentiles(h: &Histogram<u64>, scale: f64) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / scale,
        p99: h.value_at_quantile(0.99) as f64 / scale,
        max: h.max() as f64 / scale,
    })
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    cfg: &LoadConfig,
    total: u32,
    reports: Vec<ParticipantReport>,
    (cpu, own_cpu): (Option<f64>, Option<f64>),
    rss_before: Option<(u64, u64)>,
    rss_end: Option<(u64, u64)>,
    window_start: Instant,
    stop_at: Instant,
) -> Summary {
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut joins = new_hist();
    let mut first_media = new_hist();
    let mut latency = new_hist();
    let mut errors = Vec::new();
    let mut failed = total.saturating_sub(reports.len() as u32);
    let mut sent = 0;
    let window_packets: u64 = reports.iter().map(|r| r.window_packets).sum();
    for r in &reports {
        if let Some(j) = r.joined_after {
            let _ = joins.record(j.as_micros().max(1) as u64);
        }
        if let Some(f) = r.first_media_after_join {
            let _ = first_media.record(f.as_micros().max(1) as u64);
        }
        if let Some(e) = &r.error {
            failed += 1;
            if errors.len() < 10 {
                errors.push(format!("participant {}: {e}", r.index));
            }
        }
        let _ = latency.add(&r.latency_us);
        sent += r.sent_frames.iter().sum::<u64>();
    }
    let endpoints: Vec<Endpoint> = reports
        .iter()
        .map(|r| Endpoint {
            index: r.index,
            flows: &r.flows,
            sent: r.sent_frames,
            last_seq: r.last_seq,
        })
        .collect();
    let totals = tally(&endpoints, cfg.participants_per_room);
    let run_secs = stop_at.duration_since(window_start).as_secs_f64();
    let forwarded_per_cpu_second = cpu.filter(|c| *c > 0.0).map(|c| window_packets as f64 / c);
    Summary {
        participants: total,
        failed,
        errors,
        join_ms: percentiles(&joins, 1000.0),
        join_to_first_media_ms: percentiles(&first_media, 1000.0),
        frames_sent: sent,
        frames_expected: totals.expected,
        frames_received: totals.received,
        loss_percent: totals.loss_percent(),
        reordered: totals.reordered,
        packets_received: totals.packets,
        latency_ms: percentiles(&latency, 1000.0),
        window_secs: run_secs,
        window_packets,
        media_cpu_seconds: cpu,
        generator_cpu_seconds: own_cpu,
        forwarded_per_cpu_second,
        media_peak_rss_mib: rss_end.map(|(_, peak)| peak as f64 / (1024.0 * 1024.0)),
        media_rss_per_participant_kib: match (rss_before, rss_end) {
            (Some((before, _)), Some((after, _))) => {
                Some(after.saturating_sub(before) as f64 / 1024.0 / total as f64)
            }
            _ => None,
        },
        video_packets_dropped: reports.iter().map(|r| r.video_dropped).sum(),
        retransmissions_received: reports.iter().map(|r| r.rtx_received).sum(),
    }
}

/// Dropping `percent` of the packets is dropping every n-th one (evenly spread, so runs
/// compare). `None` for 0.
fn drop_every(percent: f64) -> Option<u64> {
    (percent > 0.0).then(|| (100.0 / percent).round().max(1.0) as u64)
}

/// The human summary table.
pub fn table(s: &Summary) -> String {
    let pct = |p: &Option<Percentiles>| match p {
        Some(p) => format!("p50 {:.1}  p99 {:.1}  max {:.1}", p.p50, p.p99, p.max),
        None => "-".into(),
    };
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.2} {unit}"),
        None => "- (pass --media-pid)".into(),
    };
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<34} {v}\n"));
    row(
        "participants (failed)",
        format!("{} ({})", s.participants, s.failed),
    );
    row("join (ms)", pct(&s.join_ms));
    row("join -> first media (ms)", pct(&s.join_to_first_media_ms));
    row("frames sent", s.frames_sent.to_string());
    row(
        "frames received / expected",
        format!("{} / {}", s.frames_received, s.frames_expected),
    );
    row("loss", format!("{:.3} %", s.loss_percent));
    row("reordered frames", s.reordered.to_string());
    row("RTP packets received", s.packets_received.to_string());
    row("one-way latency (ms)", pct(&s.latency_ms));
    row("measured window", format!("{:.1} s", s.window_secs));
    row(
        "RTP packets received in window",
        s.window_packets.to_string(),
    );
    row("media node CPU in window", opt(s.media_cpu_seconds, "s"));
    if let Some(g) = s.generator_cpu_seconds {
        row("generator CPU in window", format!("{g:.2} s"));
    }
    row(
        "forwarded packets per CPU-second",
        opt(s.forwarded_per_cpu_second, ""),
    );
    row("media node peak RSS", opt(s.media_peak_rss_mib, "MiB"));
    row(
        "media node RSS per participant",
        opt(s.media_rss_per_participant_kib, "KiB"),
    );
    row(
        "video packets dropped (--video-loss)",
        s.video_packets_dropped.to_string(),
    );
    row(
        "retransmissions received",
        s.retransmissions_received.to_string(),
    );
    for e in &s.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}
