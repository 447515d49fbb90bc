//! What the node measures of its own load, in the unit of `conclave_common::load`: forwarded
//! packets per second (fpps). Rooms count what they forward into their thread's
//! [`ThreadLoad`] and reserve the modelled cost of new participants there; the node's control
//! actor runs the [`LoadMeter`] once a second, which turns the counts into rates per thread
//! and for the node (with bits out and CPU) and publishes them in [`NodeLoadFigures`] — read
//! by the heartbeat, `/healthz` and the metrics without asking any actor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use conclave_common::load::RAMP_SECS;

use crate::metrics::{self, ThreadMetrics};

/// How often the meter samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Rates are taken over this many sample intervals (smooths keyframe bursts).
const WINDOW_SAMPLES: usize = 3;

/// One room thread's load, shared between its rooms (which count and reserve) and the node's
/// control actor (which measures and places).
#[derive(Default)]
pub struct ThreadLoad {
    /// RTP packets the thread's rooms have forwarded (a running total: the meter takes rates).
    pub forwarded: AtomicU64,
    /// Forwarded packets per second over the last seconds (written by the meter).
    pub measured_fpps: AtomicU64,
    /// Rooms on the thread.
    pub rooms: AtomicU64,
    /// Modelled costs of rooms and participants too new to show in the measured rate, each
    /// until it expires.
    reservations: Mutex<Vec<(Instant, u64)>>,
    /// The thread's Linux thread id, for its CPU time (set once the thread runs).
    pub tid: OnceLock<u32>,
}

impl ThreadLoad {
    /// Hold `fpps` on this thread for the next `RAMP_SECS`.
    pub fn reserve(&self, fpps: u64) {
        if fpps == 0 {
            return;
        }
        let until = Instant::now() + Duration::from_secs(RAMP_SECS);
        // A poisoned lock only means a panic elsewhere mid-push: the list is still whole.
        let mut held = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        held.push((until, fpps));
    }

    /// What is reserved now (expired reservations are dropped).
    pub fn reserved(&self, now: Instant) -> u64 {
        let mut held = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(until, _)| *until > now);
        held.iter().map(|(_, fpps)| fpps).sum()
    }

    /// The thread's load: measured plus reserved.
    pub fn load(&self, now: Instant) -> u64 {
        self.measured_fpps.load(Relaxed) + self.reserved(now)
    }
}

/// The node's figures, as of the last sample: what its heartbeat publishes.
#[derive(Default, Debug)]
pub struct NodeLoadFigures {
    /// Measured fpps of all threads plus their reservations.
    pub load_fpps: AtomicU64,
    /// Bits per second sent on the media sockets.
    pub bits_out_per_sec: AtomicU64,
    /// CPU the process used, in thousandths of a core.
    pub cpu_millicores: AtomicU64,
    /// Load this node takes, in fpps.
    pub capacity_fpps: AtomicU64,
}

/// One sample of a thread's running totals.
#[derive(Clone, Copy)]
struct ThreadSample {
    at: Instant,
    forwarded: u64,
    bytes_out: u64,
}

/// Turns running totals into rates, once per `SAMPLE_INTERVAL` (owned by the control actor).
pub struct LoadMeter {
    threads: Vec<(std::sync::Arc<ThreadLoad>, ThreadMetrics)>,
    samples: Vec<VecDeque<ThreadSample>>,
    /// Each thread's CPU seconds as last read (the metric counts up by the difference).
    thread_cpu: Vec<f64>,
    cpu: VecDeque<(Instant, f64)>,
}

impl LoadMeter {
    pub fn new(threads: Vec<(std::sync::Arc<ThreadLoad>, ThreadMetrics)>) -> LoadMeter {
        let samples = threads.iter().map(|_| VecDeque::new()).collect();
        LoadMeter {
            thread_cpu: vec![0.0; threads.len()],
            threads,
            samples,
            cpu: VecDeque::new(),
        }
    }

    /// Take a sample and publish the rates in `figures` and the metrics.
    pub fn sample(&mut self, figures: &NodeLoadFigures) {
        let now = Instant::now();
        let (mut load, mut bytes_per_sec) = (0, 0.0);
        let threads = self.threads.iter().zip(&mut self.samples);
        for (((thread, metrics), window), last_cpu) in threads.zip(&mut self.thread_cpu) {
            push(
                window,
                ThreadSample {
                    at: now,
                    forwarded: thread.forwarded.load(Relaxed),
                    bytes_out: metrics.tx_bytes.get(),
                },
            );
            let (first, last) = (window[0], window[window.len() - 1]);
            let secs = last.at.duration_since(first.at).as_secs_f64();
            if secs > 0.0 {
                let fpps = (last.forwarded - first.forwarded) as f64 / secs;
                thread.measured_fpps.store(fpps.round() as u64, Relaxed);
                bytes_per_sec += last.bytes_out.saturating_sub(first.bytes_out) as f64 / secs;
            }
            let thread_load = thread.load(now);
            load += thread_load;
            metrics.load_fpps.set(thread_load as i64);
            metrics.rooms.set(thread.rooms.load(Relaxed) as i64);
            if let Some(cpu) = thread.tid.get().and_then(|tid| thread_cpu_seconds(*tid)) {
                metrics.cpu_seconds.inc_by((cpu - *last_cpu).max(0.0));
                *last_cpu = cpu;
            }
        }
        figures.load_fpps.store(load, Relaxed);
        figures
            .bits_out_per_sec
            .store((bytes_per_sec * 8.0).round() as u64, Relaxed);
        metrics::LOAD_FPPS.set(load as i64);
        if let Some(cpu) = process_cpu_seconds() {
            self.cpu.push_back((now, cpu));
            if self.cpu.len() > WINDOW_SAMPLES + 1 {
                self.cpu.pop_front();
            }
            let (first, last) = (self.cpu[0], self.cpu[self.cpu.len() - 1]);
            let secs = last.0.duration_since(first.0).as_secs_f64();
            if secs > 0.0 {
                let cores = (last.1 - first.1) / secs;
                figures
                    .cpu_millicores
                    .store((cores * 1000.0).round() as u64, Relaxed);
            }
        }
    }
}

/// Keep the last `WINDOW_SAMPLES + 1` samples (a rate over `WINDOW_SAMPLES` intervals).
fn push(window: &mut VecDeque<ThreadSample>, sample: ThreadSample) {
    window.push_back(sample);
    if window.len() > WINDOW_SAMPLES + 1 {
        window.pop_front();
    }
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`: 100 on every Linux platform we run).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds from a `/proc/.../stat` line (fields 14 and 15, counted after the
/// command name, which may itself hold spaces and parentheses).
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds this process has used (Linux; `None` elsewhere).
pub fn process_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU seconds one thread of this process has used (Linux; `None` elsewhere).
pub fn thread_cpu_seconds(tid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// The calling thread's Linux thread id (`/proc/thread-self` -> `PID/task/TID`).
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_expire() {
        let load = ThreadLoad::default();
        load.reserve(220);
        load.reserve(440);
        load.reserve(0);
        load.measured_fpps.store(1000, Relaxed);
        let now = Instant::now();
        assert_eq!(load.reserved(now), 660);
        assert_eq!(load.load(now), 1660);
        let later = now + Duration::from_secs(RAMP_SECS + 1);
        assert_eq!(load.reserved(later), 0);
        assert_eq!(load.load(later), 1000);
    }

    #[test]
    fn cpu_fields_are_read_after_the_name() {
        // A real line's shape, with a name holding a space and a parenthesis.
        let line = "4242 (media (x) node) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 7 0 100 0 0";
        assert_eq!(stat_cpu_seconds(line), Some(3.25));
        assert_eq!(stat_cpu_seconds("garbage"), None);
        assert_eq!(stat_cpu_seconds("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_and_thread_have_cpu_times_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        // Burn a little CPU so that the counts are not zero.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let tid = current_tid().expect("a thread id");
        assert!(thread_cpu_seconds(tid).expect("thread CPU") > 0.0);
        assert!(process_cpu_seconds().expect("process CPU") > 0.0);
        let other = std::thread::spawn(current_tid).join().unwrap();
        assert_ne!(other, Some(tid));
    }

    #[test]
    fn the_meter_turns_counts_into_rates() {
        let thread = std::sync::Arc::new(ThreadLoad::default());
        let mut meter = LoadMeter::new(vec![(thread.clone(), ThreadMetrics::new(99))]);
        let figures = NodeLoadFigures::default();
        meter.sample(&figures);
        thread.forwarded.fetch_add(5_000, Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        meter.sample(&figures);
        let fpps = thread.measured_fpps.load(Relaxed);
        // 5,000 packets in ≈ 0.5 s (a loaded machine may stretch the sleep).
        assert!((6_000..=10_100).contains(&fpps), "{fpps}");
        thread.reserve(220);
        meter.sample(&figures);
        assert!(figures.load_fpps.load(Relaxed) >= 220);
    }
}
