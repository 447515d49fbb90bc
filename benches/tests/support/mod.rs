//! What the generator's process tests share: starting the binaries under test by PID, their
//! readiness lines, plain HTTP GETs and Prometheus samples.

#![allow(dead_code)] // Each test file uses a part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process we started; killed by PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary `name`, next to this test's (`CONCLAVE_MEDIA_BIN` / `CONCLAVE_SIGNALING_BIN`
/// point elsewhere, e.g. at a build of older code to see this test fail there).
pub fn bin(name: &str) -> std::path::PathBuf {
    let var = match name {
        "media-node" => "CONCLAVE_MEDIA_BIN",
        _ => "CONCLAVE_SIGNALING_BIN",
    };
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    // target/debug/deps/health_under_load-xxxx -> target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

/// Start `name` with `args`; its readiness line's `key=value` fields.
pub fn start(name: &str, args: &[&str], link_secret: &str) -> (Proc, String) {
    let mut child = Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("CONCLAVE_LINK_SECRET", link_secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening "), "{name}: {line:?}");
    (Proc(child), line)
}

pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

/// `GET path` over a fresh HTTP/1.0 connection: (status line, body, time to the last byte).
/// A request that takes over 5 s counts as 5 s.
pub fn timed_get(base: &str, path: &str) -> (String, String, Duration) {
    let addr = base.strip_prefix("http://").expect("http base");
    let started = Instant::now();
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let text = attempt().unwrap_or_default();
    let took = started.elapsed();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("no answer").to_string();
    (status, body.to_string(), took)
}

/// The value of an unlabelled sample in a Prometheus text exposition.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The value of the sample `name{labels}` (labels as exposed, e.g. `thread="0"`).
pub fn labelled_sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    sample(metrics, &format!("{name}{{{labels}}}"))
}
