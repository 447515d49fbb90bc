//! Real `redis-server` processes for tests (feature `test-support`, used only by tests).
//!
//! Tests of one binary run in parallel, and a test that restarts Redis "where it was" frees
//! its port for a while. A port picked by binding port 0 can then be handed to another test,
//! and two tests end up sharing one server. So ports are never handed out twice in one
//! process, and a started server is checked to be the process we spawned.

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free 127.0.0.1 TCP port that this process has not handed out before.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A `redis-server` we started (no persistence), killed by its PID when dropped.
pub struct TestRedis {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl TestRedis {
    /// A new server on a port of its own.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(redis) = Self::try_start_on(free_port()) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server on `port` (to restart one where it was; the port came from [`free_port`]).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port)
            .unwrap_or_else(|| panic!("redis-server could not start on port {port}"))
    }

    fn try_start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test command installs it)");
        let mut redis = TestRedis {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if redis.child.try_wait().ok().flatten().is_some() {
                return None; // exited: the port was taken
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whoever answers must be our process, not another test's server.
        let ours = redis.server_pid() == Some(redis.child.id());
        ours.then_some(redis)
    }

    /// The process id the server on our port reports.
    fn server_pid(&self) -> Option<u32> {
        let mut conn = redis::Client::open(self.url.as_str())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
