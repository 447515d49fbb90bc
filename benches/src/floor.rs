//! The floor: the same scenario as a load run (rooms, participants, media plan), relayed by
//! `udp-relay` — plain UDP, no ICE, DTLS or SRTP — and measured the same way (relay CPU over
//! the window from `/proc`, stamped payloads for loss and latency). Reports show the SFU's
//! cost as a ratio to this.
//!
//! Media on the wire: audio is one datagram of `audio_bytes` every 20 ms; a video frame of
//! `video_kbps * 1000 / 8 / fps` bytes (3x on keyframes) is split into datagrams of at most
//! [`MAX_PACKET_BYTES`]. Every datagram carries a [`payload`] stamp with its own sequence
//! number, so loss and latency are per packet.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{LoadConfig, Percentiles};
use crate::payload::{self, Stamp};
use crate::procstat;
use crate::sim::{record_flow, tally, Endpoint, Flows, MediaPlan};

/// Largest media datagram payload a video frame is split into.
pub const MAX_PACKET_BYTES: usize = 1200;

/// Settings of one floor run.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// The `udp-relay` binary. Default: next to the current executable (or one directory up,
    /// for test binaries in `target/*/deps`).
    pub relay_bin: Option<PathBuf>,
    /// Run the relay with `--batch` (one `sendmmsg` per packet instead of a `send_to` per
    /// member).
    pub batch: bool,
    pub rooms: u32,
    pub participants_per_room: u32,
    pub publishers_per_room: u32,
    pub media: MediaPlan,
    /// The measured window.
    pub duration: Duration,
    /// Media flows this long before the window starts.
    pub warmup: Duration,
    /// Threads sending and receiving for the simulated participants.
    pub threads: usize,
    pub bind_ip: IpAddr,
    pub room_prefix: String,
    /// Print what is going on to stderr.
    pub progress: bool,
}

impl FloorConfig {
    /// The floor for a load scenario: same rooms, participants, media, window and threads.
    pub fn from_load(cfg: &LoadConfig) -> Self {
        FloorConfig {
            relay_bin: None,
            batch: false,
            rooms: cfg.rooms,
            participants_per_room: cfg.participants_per_room,
            publishers_per_room: cfg.publishers_per_room,
            media: cfg.media.clone(),
            duration: cfg.duration,
            warmup: cfg.warmup,
            threads: cfg.threads,
            bind_ip: cfg.bind_ip,
            room_prefix: cfg.room_prefix.clone(),
            progress: cfg.progress,
        }
    }
}

/// The result of a floor run (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct FloorSummary {
    /// `"send_to"` or `"sendmmsg"`.
    pub relay_mode: &'static str,
    pub relay_pid: u32,
    pub participants: u32,
    pub publishers: u32,
    /// Media datagrams sent by all publishers over the whole run.
    pub packets_sent: u64,
    /// Sends the kernel refused (full send buffer); these never existed for the receivers.
    pub send_failures: u64,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub loss_percent: f64,
    pub reordered: u64,
    pub latency_ms: Option<Percentiles>,
    pub window_secs: f64,
    /// Media datagrams delivered to participants inside the measured window.
    pub window_packets: u64,
    pub window_packets_per_second: f64,
    pub relay_cpu_seconds: Option<f64>,
    /// Relay CPU in the window as a percentage of one core.
    pub relay_cpu_percent: Option<f64>,
    /// `window_packets` per relay CPU-second spent in the window.
    pub forwarded_per_cpu_second: Option<f64>,
    pub relay_peak_rss_mib: Option<f64>,
}

/// The relay we started; killed by PID (and reaped) when dropped, also on error paths.
struct RelayProcess {
    child: Child,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_bin(cfg: &FloorConfig) -> Result<PathBuf, String> {
    if let Some(p) = &cfg.relay_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let dir = exe.parent().ok_or("current exe has no directory")?;
    let candidates = [
        Some(dir.join("udp-relay")),
        dir.parent().map(|d| d.join("udp-relay")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .ok_or(format!(
            "udp-relay not found next to {} (build it: cargo build -p conclave-bench --bins)",
            exe.display()
        ))
}

fn start_relay(cfg: &FloorConfig) -> Result<(RelayProcess, SocketAddr), String> {
    let bin = relay_bin(cfg)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--listen")
        .arg(SocketAddr::new(cfg.bind_ip, 0).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if cfg.batch {
        cmd.arg("--batch");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take();
    let relay = RelayProcess { child };
    // Read the ready line on a helper thread, so a stuck relay cannot hang us.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "udp-relay did not report its address within 10 s".to_string())?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp="))
        .and_then(|a| a.parse().ok())
        .ok_or(format!("udp-relay said {line:?}, not `listening udp=ADDR`"))?;
    Ok((relay, addr))
}

struct Sender {
    kind: u8,
    /// Next packet sequence number.
    seq: u64,
    /// Frames sent so far (keyframe cadence).
    frames: u64,
    next_at: Instant,
    interval: Duration,
}

/// One simulated participant: a socket connected to the relay, its senders, what it measured.
struct Sim {
    index: u32,
    socket: UdpSocket,
    senders: Vec<Sender>,
    /// (publisher, kind) -> flow.
    flows: Flows,
    latency_us: Histogram<u64>,
    sent_packets: [u64; 2],
    last_seq: [Option<u64>; 2],
    send_failures: u64,
    window_packets: u64,
}

#[derive(Clone, Copy)]
struct Timeline {
    window_start: Instant,
    stop_at: Instant,
    end: Instant,
}

fn new_hist() -> Histogram<u64> {
    // Invariant: 1 µs .. 60 s with 3 significant digits is a valid histogram.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn client_socket(bind_ip: IpAddr, relay: SocketAddr) -> Result<UdpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let local = SocketAddr::new(bind_ip, 0);
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("udp socket: {e}"))?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    socket
        .bind(&local.into())
        .map_err(|e| format!("udp bind: {e}"))?;
    let socket: UdpSocket = socket.into();
    socket
        .connect(relay)
        .map_err(|e| format!("udp connect: {e}"))?;
    Ok(socket)
}

/// Register with the relay, retrying until it answers (bounded).
fn join(socket: &UdpSocket, room: &str) -> Result<(), String> {
    let mut buf = [0u8; 512];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let msg = format!("JOIN {room} ");
    for _ in 0..10 {
        socket
            .send(msg.as_bytes())
            .map_err(|e| format!("join send: {e}"))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"JOINED ") => return Ok(()),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("join recv: {e}")),
            }
        }
    }
    Err(format!("relay never confirmed the join to {room}"))
}

impl Sim {
    fn send_due(&mut self, now: Instant, media: &MediaPlan, out: &mut Vec<u8>) {
        for i in 0..self.senders.len() {
            if self.senders[i].next_at > now {
                continue;
            }
            self.send_frame(i, media, out);
            let s = &mut self.senders[i];
            s.next_at += s.interval;
            // Never try to catch up a backlog in a burst (as the str0m participants).
            if s.next_at < now {
                s.next_at = now + s.interval;
            }
        }
    }

    fn send_frame(&mut self, sender: usize, m: &MediaPlan, out: &mut Vec<u8>) {
        let s = &mut self.senders[sender];
        let (len, keyframe) = if s.kind == 0 {
            (m.audio_bytes, false)
        } else {
            let frame_bytes = (m.video_kbps as usize * 1000 / 8) / m.video_fps.max(1) as usize;
            let key = s.frames.is_multiple_of(m.keyframe_interval.max(1) as u64);
            (if key { frame_bytes * 3 } else { frame_bytes }, key)
        };
        let mut remaining = len.max(1);
        while remaining > 0 {
            let size = remaining.min(MAX_PACKET_BYTES);
            remaining -= size;
            payload::encode(
                Stamp {
                    publisher: self.index,
                    kind: s.kind,
                    seq: s.seq,
                    sent_ns: payload::now_ns(),
                },
                keyframe,
                size,
                out,
            );
            match self.socket.send(out) {
                Ok(_) => {
                    self.sent_packets[s.kind as usize] += 1;
                    self.last_seq[s.kind as usize] = Some(s.seq);
                    s.seq += 1;
                }
                Err(_) => self.send_failures += 1,
            }
        }
        s.frames += 1;
    }

    /// Read everything queued on the socket.
    fn drain(&mut self, buf: &mut [u8], t: &Timeline) {
        while let Ok(n) = self.socket.recv(buf) {
            let Some(stamp) = payload::decode(&buf[..n]) else {
                continue;
            };
            let latency_ns = payload::now_ns().saturating_sub(stamp.sent_ns);
            let _ = self.latency_us.record((latency_ns / 1000).max(1));
            let now = Instant::now();
            if now >= t.window_start && now < t.stop_at {
                self.window_packets += 1;
            }
            record_flow(&mut self.flows, stamp, 1);
        }
    }
}

/// One worker thread: paced sends, and a `ppoll` over its sockets in between.
fn drive(sims: &mut [Sim], media: &MediaPlan, t: Timeline) {
    let mut fds: Vec<libc::pollfd> = sims
        .iter()
        .map(|s| libc::pollfd {
            fd: s.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(4096);
    loop {
        let now = Instant::now();
        if now >= t.end {
            break;
        }
        let mut wake = t.end;
        if now < t.stop_at {
            for s in sims.iter_mut() {
                s.send_due(now, media, &mut out);
            }
            wake = sims
                .iter()
                .flat_map(|s| s.senders.iter().map(|x| x.next_at))
                .min()
                .unwrap_or(t.stop_at)
                .min(t.stop_at);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; no signal mask.
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if ready <= 0 {
            continue;
        }
        for (fd, s) in fds.iter_mut().zip(sims.iter_mut()) {
            if fd.revents & libc::POLLIN != 0 {
                s.drain(&mut buf, &t);
            }
            fd.revents = 0;
        }
    }
}

/// Run the floor and summarise it. Blocks the calling thread until the run ends; the relay
/// is killed by its PID before this returns, whatever the outcome.
pub fn run_floor(cfg: &FloorConfig) -> Result<FloorSummary, String> {
    if cfg.rooms == 0 || cfg.participants_per_room == 0 {
        return Err("rooms and participants per room must be at least 1".into());
    }
    if cfg.publishers_per_room > cfg.participants_per_room {
        return Err("publishers per room cannot exceed participants per room".into());
    }
    let (relay, relay_addr) = start_relay(cfg)?;
    let relay_pid = relay.child.id();
    procstat::cpu_seconds(relay_pid).ok_or(format!("no relay process {relay_pid} to measure"))?;
    let total = cfg.rooms * cfg.participants_per_room;
    if cfg.progress {
        eprintln!("floor: udp-relay pid {relay_pid} on {relay_addr}; joining {total}");
    }

    let mut sims = Vec::with_capacity(total as usize);
    for room_idx in 0..cfg.rooms {
        let room = format!("{}-{room_idx}", cfg.room_prefix);
        for p in 0..cfg.participants_per_room {
            let index = room_idx * cfg.participants_per_room + p;
            let socket = client_socket(cfg.bind_ip, relay_addr)?;
            join(&socket, &room)?;
            socket
                .set_nonblocking(true)
                .map_err(|e| format!("nonblocking: {e}"))?;
            sims.push(Sim {
                index,
                socket,
                senders: Vec::new(),
                flows: HashMap::new(),
                latency_us: new_hist(),
                sent_packets: [0, 0],
                last_seq: [None, None],
                send_failures: 0,
                window_packets: 0,
            });
        }
    }

    // Everyone is registered: media starts now, spread over each interval so the
    // participants do not all send in the same instant.
    let start = Instant::now();
    let m = &cfg.media;
    for (i, sim) in sims.iter_mut().enumerate() {
        if sim.index % cfg.participants_per_room >= cfg.publishers_per_room {
            continue;
        }
        let offset = |interval: Duration| interval.mul_f64(i as f64 / total as f64);
        let mut add = |kind: u8, interval: Duration| {
            sim.senders.push(Sender {
                kind,
                seq: 0,
                frames: 0,
                next_at: start + offset(interval),
                interval,
            })
        };
        if m.audio {
            add(0, Duration::from_millis(20));
        }
        if m.video {
            add(1, Duration::from_secs(1) / m.video_fps.max(1));
        }
    }
    let t = Timeline {
        window_start: start + cfg.warmup,
        stop_at: start + cfg.warmup + cfg.duration,
        end: start + cfg.warmup + cfg.duration + Duration::from_millis(500),
    };

    let threads = cfg.threads.clamp(1, sims.len());
    let mut groups: Vec<Vec<Sim>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, sim) in sims.into_iter().enumerate() {
        groups[i % threads].push(sim);
    }
    let mut cpu_start = None;
    let mut cpu_end = None;
    let mut rss_end = None;
    let sims: Vec<Sim> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                scope.spawn(move || {
                    drive(&mut group, m, t);
                    group
                })
            })
            .collect();
        sleep_until(t.window_start);
        cpu_start = procstat::cpu_seconds(relay_pid);
        if cfg.progress {
            eprintln!("floor: measuring {:.1} s", cfg.duration.as_secs_f64());
        }
        sleep_until(t.stop_at);
        cpu_end = procstat::cpu_seconds(relay_pid);
        rss_end = procstat::rss_bytes(relay_pid);
        // The workers stop at `t.end` on their own.
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| "a floor worker thread panicked")?);
        }
        Ok::<_, String>(all)
    })?;
    let mut relay = relay;
    if let Ok(Some(status)) = relay.child.try_wait() {
        return Err(format!("udp-relay exited during the run: {status}"));
    }
    drop(relay);

    let cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(summarise(cfg, relay_pid, &sims, cpu, rss_end, t))
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn percentiles(h: &Histogram<u64>, scale: f64) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / scale,
        p99: h.value_at_quantile(0.99) as f64 / scale,
        max: h.max() as f64 / scale,
    })
}

fn summarise(
    cfg: &FloorConfig,
    relay_pid: u32,
    sims: &[Sim],
    cpu: Option<f64>,
    rss_end: Option<(u64, u64)>,
    t: Timeline,
) -> FloorSummary {
    let mut latency = new_hist();
    for s in sims {
        let _ = latency.add(&s.latency_us);
    }
    let endpoints: Vec<Endpoint> = sims
        .iter()
        .map(|s| Endpoint {
            index: s.index,
            flows: &s.flows,
            sent: s.sent_packets,
            last_seq: s.last_seq,
        })
        .collect();
    let totals = tally(&endpoints, cfg.participants_per_room);
    let window_secs = t.stop_at.duration_since(t.window_start).as_secs_f64();
    let window_packets: u64 = sims.iter().map(|s| s.window_packets).sum();
    FloorSummary {
        relay_mode: if cfg.batch { "sendmmsg" } else { "send_to" },
        relay_pid,
        participants: sims.len() as u32,
        publishers: cfg.rooms * cfg.publishers_per_room,
        packets_sent: sims
            .iter()
            .map(|s| s.sent_packets.iter().sum::<u64>())
            .sum(),
        send_failures: sims.iter().map(|s| s.send_failures).sum(),
        packets_expected: totals.expected,
        packets_received: totals.received,
        loss_percent: totals.loss_percent(),
        reordered: totals.reordered,
        latency_ms: percentiles(&latency, 1000.0),
        window_secs,
        window_packets,
        window_packets_per_second: window_packets as f64 / window_secs.max(1e-9),
        relay_cpu_seconds: cpu,
        relay_cpu_percent: cpu.map(|c| 100.0 * c / window_secs.max(1e-9)),
        forwarded_per_cpu_second: cpu.filter(|c| *c > 0.0).map(|c| window_packets as f64 / c),
        relay_peak_rss_mib: rss_end.map(|(_, peak)| peak as f64 / (1024.0 * 1024.0)),
    }
}

/// The human summary table, in the style of [`crate::load::table`].
pub fn table(s: &FloorSummary) -> String {
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.2} {unit}"),
        None => "-".into(),
    };
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<34} {v}\n"));
    row(
        "floor relay",
        match s.relay_mode {
            "sendmmsg" => "udp-relay, one sendmmsg per packet".to_string(),
            mode => format!("udp-relay, one {mode} per member"),
        },
    );
    row(
        "participants (publishers)",
        format!("{} ({})", s.participants, s.publishers),
    );
    row(
        "packets sent (send failures)",
        format!("{} ({})", s.packets_sent, s.send_failures),
    );
    row(
        "packets received / expected",
        format!("{} / {}", s.packets_received, s.packets_expected),
    );
    row("loss", format!("{:.3} %", s.loss_percent));
    row("reordered packets", s.reordered.to_string());
    row(
        "one-way latency (ms)",
        match &s.latency_ms {
            Some(p) => format!("p50 {:.3}  p99 {:.3}  max {:.3}", p.p50, p.p99, p.max),
            None => "-".into(),
        },
    );
    row("measured window", format!("{:.1} s", s.window_secs));
    row("packets received in window", s.window_packets.to_string());
    row(
        "packets per second in window",
        format!("{:.0}", s.window_packets_per_second),
    );
    row(
        "relay CPU in window",
        match (s.relay_cpu_seconds, s.relay_cpu_percent) {
            (Some(c), Some(p)) => format!("{c:.2} s ({p:.1} % of a core)"),
            _ => "-".into(),
        },
    );
    row(
        "forwarded packets per CPU-second",
        opt(s.forwarded_per_cpu_second, ""),
    );
    row("relay peak RSS", opt(s.relay_peak_rss_mib, "MiB"));
    out
}
