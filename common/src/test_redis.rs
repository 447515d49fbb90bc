//! Real `redis-server` processes for tests (feature `test-support`, used only by tests).
//!
//! Tests of one binary run in parallel, and a test that restarts Redis "where it was" frees
//! its port for a while. A port picked by binding port 0 can then be handed to another test,
//! and two tests end up sharing one server. So ports are never handed out twice in one
//! process, and a started server is checked to be the process we spawned.
//!
//! [`TestRedis::start_secured`] starts one that requires a password, has ACL users, or
//! speaks only TLS (with a throwaway CA made by rcgen; its certificate names 127.0.0.1).

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
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
    /// `redis://127.0.0.1:PORT/`, or `rediss://...` with TLS; never with a password in it.
    pub url: String,
    /// With TLS: the PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// What [`server_pid`](Self::server_pid) authenticates with.
    password: Option<String>,
    /// Files of a TLS server, removed when dropped.
    dir: Option<PathBuf>,
}

/// What a [`TestRedis::start_secured`] server requires of its clients.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `requirepass`: the password of the `default` user.
    pub password: Option<String>,
    /// ACL users, each as the words of a `user` config line after `user`, e.g.
    /// `app on >PASSWORD ~conclave:* &conclave:* +@all`.
    pub users: Vec<String>,
    /// Serve TLS only (no plain port).
    pub tls: bool,
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

    /// A new server that requires what `security` says.
    pub fn start_secured(security: Security) -> Self {
        for _ in 0..5 {
            if let Some(redis) = Self::try_start(free_port(), &security) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn try_start_on(port: u16) -> Option<Self> {
        Self::try_start(port, &Security::default())
    }

    fn try_start(port: u16, security: &Security) -> Option<Self> {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(password) = &security.password {
            command.args(["--requirepass", password]);
        }
        for user in &security.users {
            command.arg("--user").args(user.split_whitespace());
        }
        let dir = security.tls.then(|| write_tls_files(port));
        let scheme = match &dir {
            Some(dir) => {
                let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
                command.args(["--port", "0", "--tls-port", &port.to_string()]);
                command.args(["--tls-cert-file", &file("server.pem")]);
                command.args(["--tls-key-file", &file("server.key")]);
                command.args(["--tls-ca-cert-file", &file("ca.pem")]);
                command.args(["--tls-auth-clients", "no"]);
                "rediss"
            }
            None => {
                command.args(["--port", &port.to_string()]);
                "redis"
            }
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the test command installs it)");
        let mut redis = TestRedis {
            child,
            port,
            url: format!("{scheme}://127.0.0.1:{port}/"),
            ca_file: dir.as_ref().map(|d| d.join("ca.pem")),
            password: security.password.clone(),
            dir,
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
        let settings = crate::cluster::RedisSettings {
            url: self.url.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
        };
        let mut conn = settings
            .client()
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
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it, as PEM files
/// `ca.pem`, `server.pem`, `server.key` in a new directory.
fn write_tls_files(port: u16) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "conclave test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let dir =
        std::env::temp_dir().join(format!("conclave-test-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for TLS files");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).expect("TLS file written");
    }
    dir
}
