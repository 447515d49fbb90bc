//! Operator safety (issue 11, items 7 and 8), with the real binary where start-up policy is
//! the subject: `--dev` next to real services is refused unless said explicitly; `/ws`
//! checks the page's `Origin`; the embedded media node's gauges reach the node's `/metrics`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster_support::{sibling_bin, Proc};
use crate::support::{start, valid_offer, Options, TestServer, SECRET};

/// How a start-up of `signaling-node` with these flags and environment ended.
enum Started {
    /// Refused: exit code and stderr.
    Exited(Option<i32>, String),
    /// Running: the process, its readiness line and its stderr so far.
    Running(Proc, String, String),
}

/// Every `signaling-node` process of this file is started here (its flags in one place).
fn signaling_node(args: &[&str], env: &[(&str, &str)]) -> Started {
    let mut cmd = Command::new(sibling_bin("signaling-node"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--internal-listen",
        "127.0.0.1:0",
    ])
    .args(["--udp-listen", "127.0.0.1:0", "--workers", "1"])
    .args(args)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Only what the test says, not whatever the environment running the tests holds.
    for var in [
        "CONCLAVE_DEV",
        "CONCLAVE_DEV_WITH_REAL_SERVICES",
        "CONCLAVE_TOKEN_SECRET",
        "CONCLAVE_REDIS_URL",
        "CONCLAVE_ALLOWED_ORIGINS",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("signaling-node starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    if line.starts_with("listening ") {
        // The warning is written before the readiness line.
        let err: Vec<String> = erx.try_iter().collect();
        return Started::Running(Proc(child), line, err.join("\n"));
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "neither ready nor exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = Vec::new();
    while let Ok(l) = erx.recv_timeout(Duration::from_millis(500)) {
        err.push(l);
    }
    Started::Exited(status.code(), err.join("\n"))
}

/// Flags, environment, and the flag the refusal must name.
type DevCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn dev_mode_next_to_redis_or_a_token_secret_is_refused_with_a_clear_message() {
    let cases: [DevCase; 3] = [
        (
            &["--dev", "--redis-url", "redis://127.0.0.1:1/"],
            &[],
            "--redis-url",
        ),
        (
            &["--dev"],
            &[("CONCLAVE_TOKEN_SECRET", "a-real-secret")],
            "--token-secret",
        ),
        (
            &[],
            &[("CONCLAVE_DEV", "true"), ("CONCLAVE_TOKEN_SECRET", "s")],
            "--token-secret",
        ),
    ];
    for (args, env, names) in cases {
        let started = Instant::now();
        match signaling_node(args, env) {
            Started::Exited(code, stderr) => {
                assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
                assert!(
                    stderr.contains(&format!("--dev with {names}"))
                        && stderr.contains("--dev-with-real-services"),
                    "{args:?} {env:?}: the message names the clash and the way out: {stderr}"
                );
                // Refused at once, not after trying to reach Redis.
                assert!(started.elapsed() < Duration::from_secs(10));
            }
            Started::Running(_, line, _) => panic!("{args:?} {env:?} started: {line}"),
        }
    }
}

#[test]
fn dev_mode_with_real_services_starts_only_when_said_explicitly_and_warns() {
    let Started::Running(_node, _, stderr) = signaling_node(
        &["--dev", "--dev-with-real-services"],
        &[(
            "CONCLAVE_TOKEN_SECRET",
            "a-local-cluster-secret-0123456789abcdef",
        )],
    ) else {
        panic!("--dev-with-real-services must start");
    };
    assert!(
        stderr.contains("WARNING") && stderr.contains("DEV MODE WITH REAL SERVICES"),
        "a loud warning at start: {stderr}"
    );
    // Plain dev mode (the demo: no Redis, no secret) starts without that warning.
    let Started::Running(_demo, _, stderr) = signaling_node(&["--dev"], &[]) else {
        panic!("plain --dev must start");
    };
    assert!(!stderr.contains("REAL SERVICES"), "{stderr}");
}

#[test]
fn allowed_origins_that_are_not_origins_stop_the_start() {
    match signaling_node(&["--dev", "--allowed-origins", "app.example.com"], &[]) {
        Started::Exited(code, stderr) => {
            assert_eq!(code, Some(2), "{stderr}");
            assert!(stderr.contains("scheme://host[:port]"), "{stderr}");
        }
        Started::Running(_, line, _) => panic!("started: {line}"),
    }
}

/// A page of another site is refused before the upgrade (403); the node's own page, a
/// listed app and a client without `Origin` (not a browser) get through and can join.
#[actix_rt::test]
async fn websockets_from_foreign_origins_are_refused_before_the_upgrade() {
    let server = start(Options {
        allowed_origins: vec!["https://app.example.com".into()],
        ..Options::default()
    });
    let own = server.base.clone(); // http://127.0.0.1:<port>: what the bundled page sends.
    for foreign in [
        "https://evil.example",
        "http://127.0.0.1:1",
        "http://app.example.com",
        "null",
    ] {
        assert_eq!(
            server.connect_from(Some(foreign)).await.err(),
            Some(403),
            "{foreign} must be refused"
        );
    }
    let allowed = [Some(own.as_str()), Some("https://app.example.com"), None];
    for (i, origin) in allowed.into_iter().enumerate() {
        let mut c = server
            .connect_from(origin)
            .await
            .unwrap_or_else(|status| panic!("{origin:?} refused with {status}"));
        let token = server.token(&format!("u{i}"), "origins");
        c.send(json!({"id": "join", "token": token, "name": "x"}))
            .await;
        c.expect("joined").await;
    }
}

#[actix_rt::test]
async fn a_star_allows_every_origin() {
    let server = start(Options {
        allowed_origins: vec!["*".into()],
        ..Options::default()
    });
    assert!(server
        .connect_from(Some("https://evil.example"))
        .await
        .is_ok());
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

async fn get_text(url: &str) -> String {
    let mut res = awc::Client::new().get(url).send().await.expect("answers");
    assert_eq!(res.status().as_u16(), 200, "{url}");
    let body = res.body().limit(4 << 20).await.expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

/// The embedded default exports the media node's gauges with real values on the signaling
/// node's `/metrics` (they used to stay 0 there: only the separate media node's `/metrics`
/// set them). A process of its own, since the gauges count every media node of a process.
#[actix_rt::test]
async fn the_embedded_media_nodes_gauges_show_a_call() {
    let secret = std::str::from_utf8(SECRET).unwrap();
    let Started::Running(_node, line, _) =
        signaling_node(&[], &[("CONCLAVE_TOKEN_SECRET", secret)])
    else {
        panic!("embedded node must start");
    };
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    };
    let (url, internal) = (field("url="), field("internal="));
    let server = TestServer::at(url);
    let gauges = || async {
        let m = get_text(&format!("{internal}/metrics")).await;
        let rooms = sample(&m, "conclave_media_rooms");
        (sample(&m, "conclave_media_participants"), rooms)
    };
    assert_eq!(gauges().await, (Some(0.0), Some(0.0)));
    let mut clients = Vec::new();
    for (user, room) in [("a", "one"), ("b", "one"), ("c", "two")] {
        let (mut c, _) = server.join(user, room).await;
        c.send(json!({"id": "offer", "sdp": valid_offer()})).await;
        c.expect("answer").await;
        clients.push(c);
    }
    // The peer is counted just after its answer is sent (another thread): poll.
    let wait_for = |want: (Option<f64>, Option<f64>)| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = gauges().await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gauges {got:?}, expected {want:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for((Some(3.0), Some(2.0))).await;
    let health = get_text(&format!("{internal}/healthz")).await;
    assert!(health.contains(r#""status":"ok""#), "{health}");
    // One leaves: its peer goes, and with it the room "two".
    let mut c = clients.pop().unwrap();
    c.send(json!({"id": "leave"})).await;
    wait_for((Some(2.0), Some(1.0))).await;
}
