//! Limits on what one client can do, against a real signaling-node process (embedded media
//! node): message budgets (a flood is closed with 1008, the room carries on), the bounded
//! outbound queue (a client that stops reading is cut, the server's RSS stays flat), the join
//! deadline (2,000 idle sockets from many addresses closed on time), and WebSockets per client
//! address behind trusted and untrusted proxies.
//!
//! The clients here are raw sockets with a small WebSocket framer of their own: they must
//! bind a source address in 127.0.0.0/8, set `X-Forwarded-For`, shrink their receive buffer
//! and stop reading, which no client library lets them do.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::cluster_support::{sibling_bin, Proc};
use crate::support::{Received, TestServer, SECRET};

/// A signaling-node process with its embedded media node, on 127.0.0.1 ports of its own.
struct Node {
    proc: Proc,
    server: TestServer,
    addr: SocketAddr,
    internal: String,
}

/// Start a node with `extra` flags. The one place this file starts a process.
fn spawn_node(extra: &[&str]) -> Node {
    let mut child = Command::new(sibling_bin("signaling-node"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
        ])
        .args(["--udp-listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--resume-grace-secs", "1"])
        .args(extra)
        .env(
            "CONCLAVE_TOKEN_SECRET",
            std::str::from_utf8(SECRET).unwrap(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("signaling-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let url = field("url=");
    let addr = url.trim_start_matches("http://").parse().unwrap();
    Node {
        proc: Proc(child),
        server: TestServer::at(url),
        addr,
        internal: field("internal="),
    }
}

impl Node {
    /// The process's resident set size.
    fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.proc.0.id());
        let status = std::fs::read_to_string(path).expect("server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// A counter's value in `/metrics` (the whole series name, labels included).
    async fn metric(&self, series: &str) -> f64 {
        let body = awc::Client::new()
            .get(format!("{}/metrics", self.internal))
            .send()
            .await
            .expect("metrics answer")
            .body()
            .limit(4 * 1024 * 1024)
            .await
            .expect("metrics body");
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The token of `user` for `room`.
    fn token(&self, user: &str, room: &str) -> String {
        self.server.token(user, room)
    }
}

/// 127.0.0.`n`.
fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// What an upgrade attempt got.
enum Upgrade {
    Open(RawWs),
    Refused(u16, String),
}

/// A raw client WebSocket.
struct RawWs {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

/// Connect from `from` to `to` and ask for a WebSocket with `headers` (`Name: value` lines).
/// `receive_buffer`: shrink the socket's receive buffer (a client that reads little).
async fn upgrade(
    from: IpAddr,
    to: SocketAddr,
    headers: &[String],
    receive_buffer: Option<u32>,
) -> std::io::Result<Upgrade> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut tcp: TcpStream = socket.connect(to).await?;
    let mut request = format!(
        "GET /ws?room=x HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut body))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        return Ok(Upgrade::Refused(
            status,
            String::from_utf8_lossy(&body[..n]).to_string(),
        ));
    }
    let (read, write) = tcp.into_split();
    Ok(Upgrade::Open(RawWs { read, write }))
}

/// One server frame.
#[derive(Debug)]
enum Frame {
    Text(String),
    Close(u16, String),
    Other,
}

impl RawWs {
    /// Open a WebSocket from `from`, or panic.
    async fn open(from: IpAddr, node: &Node) -> RawWs {
        match upgrade(from, node.addr, &[], None).await.expect("connects") {
            Upgrade::Open(ws) => ws,
            Upgrade::Refused(status, body) => panic!("upgrade refused: {status} {body}"),
        }
    }

    /// Send one masked text frame.
    async fn send(&mut self, v: serde_json::Value) -> std::io::Result<()> {
        self.write.write_all(&masked_text(&v.to_string())).await
    }

    /// The next frame.
    async fn frame(&mut self) -> std::io::Result<Frame> {
        read_frame(&mut self.read).await
    }

    /// The next text frame with this `id` (skipping others), within `wait`.
    async fn expect(&mut self, id: &str, wait: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.frame())
                .await
                .unwrap_or_else(|_| panic!("no {id:?} within {wait:?}"))
                .expect("frame");
            match frame {
                Frame::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
                Frame::Close(code, reason) => panic!("closed ({code} {reason}) waiting for {id}"),
                Frame::Other => {}
            }
        }
    }

    /// Read until the server closes: its close frame, or `None` if the connection ended
    /// without one. Panics after `wait`.
    async fn until_closed(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.frame()).await {
                Err(_) => panic!("not closed within {wait:?}"),
                Ok(Err(_)) => return None,
                Ok(Ok(Frame::Close(code, reason))) => return Some((code, reason)),
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn masked_text(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

async fn read_frame(read: &mut OwnedReadHalf) -> std::io::Result<Frame> {
    let mut head = [0u8; 2];
    read.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(read.read_u16().await?),
        127 => read.read_u64().await?,
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    read.read_exact(&mut payload).await?;
    Ok(match head[0] & 0x0f {
        0x1 => Frame::Text(String::from_utf8_lossy(&payload).to_string()),
        0x8 => {
            let code = payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
            Frame::Close(code, reason.to_string())
        }
        _ => Frame::Other,
    })
}

/// A member that floods `setAudio` is closed with 1008 and leaves the room; a member of the
/// same room that toggles at a human pace carries on, and the room still relays its state.
#[actix_rt::test]
async fn a_state_toggle_flood_is_closed_with_1008_and_the_room_carries_on() {
    let node = spawn_node(&[]);
    let (mut alice, _) = node.server.join("alice", "flood").await;
    let (mut bob, _) = node.server.join("bob", "flood").await;
    alice.expect("participantJoined").await;
    let mut mallory = RawWs::open(lo(1), &node).await;
    mallory
        .send(json!({"id": "join", "token": node.token("mallory", "flood")}))
        .await
        .unwrap();
    let joined = mallory.expect("joined", Duration::from_secs(10)).await;
    let mallory_id = joined["participantId"].as_str().unwrap().to_string();
    alice.expect("participantJoined").await;
    bob.expect("participantJoined").await;

    // 300 toggles at once: far over the default burst (30).
    for i in 0..300 {
        if mallory
            .send(json!({"id": "setAudio", "enabled": i % 2 == 0}))
            .await
            .is_err()
        {
            break; // Already closed.
        }
    }
    let (code, reason) = mallory
        .until_closed(Duration::from_secs(10))
        .await
        .expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(
        reason.contains("rate limit") && reason.contains("setAudio"),
        "{reason}"
    );

    // Alice saw at most the burst of Mallory's states, then Mallory leave.
    let mut states = 0;
    let left = loop {
        match alice.recv(Duration::from_secs(10)).await {
            Received::Message(v) if v["id"] == "participantState" => states += 1,
            Received::Message(v) if v["id"] == "participantLeft" => break v,
            other => panic!("expected mallory's states then participantLeft, got {other:?}"),
        }
    };
    assert_eq!(left["participantId"], mallory_id.as_str());
    assert!(states <= 35, "alice got {states} states from the flood");
    bob.expect("participantState").await; // (bob drains too; at least one came)
    while let Received::Message(v) = bob.recv(Duration::from_millis(300)).await {
        assert!(
            matches!(
                v["id"].as_str(),
                Some("participantState" | "participantLeft")
            ),
            "{v}"
        );
    }

    // Bob toggles like a person (10 clicks, 150 ms apart): each reaches alice, none closes him.
    for i in 0..10 {
        bob.send(json!({"id": "setVideo", "enabled": i % 2 == 1}))
            .await;
        let state = alice.expect("participantState").await;
        assert_eq!(state["video"], i % 2 == 1);
        actix_rt::time::sleep(Duration::from_millis(150)).await;
    }
    bob.heartbeat_roundtrip().await;
    assert_eq!(
        node.metric("conclave_signaling_rate_limited_total{class=\"state\"}")
            .await,
        1.0
    );
}

/// Clients that join and then never read, while another member toggles its state as fast as
/// its (raised) budget allows: each is closed at its queue bound, the server's RSS stays flat
/// (without the bound, every event for them would pile up in memory), and the others carry on.
#[actix_rt::test]
async fn clients_that_stop_reading_are_cut_at_their_bound_and_rss_stays_flat() {
    /// Non-reading members.
    const SLEEPERS: usize = 20;
    /// Toggles sent (each is one `participantState` of ≈ 90 bytes to every sleeper).
    const TOGGLES: usize = 20_000;
    const QUEUE: usize = 64 * 1024;
    /// Toggles the toggler may have sent and not yet seen echoed.
    const IN_FLIGHT: usize = 200;
    /// RSS growth allowed: buffering the events would take SLEEPERS × TOGGLES × ≥ 90 bytes
    /// (36 MB of JSON, more as queued messages).
    const RSS_GROWTH_AT_MOST: u64 = 12 * 1024 * 1024;

    let queue = QUEUE.to_string();
    let node = spawn_node(&[
        "--outbound-queue-bytes",
        &queue,
        "--rate-state",
        "100000:100000",
    ]);
    let mut sleepers = Vec::new();
    for i in 0..SLEEPERS {
        // A tiny receive buffer: the kernel holds little for them.
        let Upgrade::Open(mut ws) = upgrade(lo(2), node.addr, &[], Some(4096))
            .await
            .expect("connects")
        else {
            panic!("refused");
        };
        ws.send(json!({"id": "join", "token": node.token(&format!("sleeper{i}"), "sleepy")}))
            .await
            .unwrap();
        ws.expect("joined", Duration::from_secs(10)).await;
        sleepers.push(ws);
    }
    // The toggler reads everything it gets (in a task), so it is not a slow reader itself;
    // it counts the members it sees leave.
    let mut toggler = RawWs::open(lo(3), &node).await;
    toggler
        .send(json!({"id": "join", "token": node.token("toggler", "sleepy")}))
        .await
        .unwrap();
    toggler.expect("joined", Duration::from_secs(10)).await;
    let RawWs {
        mut read,
        mut write,
    } = toggler;
    let (left_tx, mut left_rx) = tokio::sync::mpsc::unbounded_channel();
    // The toggler's own states, echoed back: it keeps at most IN_FLIGHT toggles unanswered,
    // so that it is a fast reader (its own queue never fills) however fast the server goes.
    let echoes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let echoed = echoes.clone();
    let drain = actix_rt::spawn(async move {
        let wait = Duration::from_secs(60);
        while let Ok(Ok(f)) = tokio::time::timeout(wait, read_frame(&mut read)).await {
            match f {
                Frame::Close(code, reason) => panic!("the toggler was closed: {code} {reason}"),
                Frame::Text(t) if t.contains("\"participantLeft\"") => {
                    let _ = left_tx.send(());
                }
                Frame::Text(t) if t.contains("\"participantState\"") => {
                    echoed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });

    let rss_before = node.rss_bytes();
    let started = Instant::now();
    let mut rss_peak = rss_before;
    for i in 0..TOGGLES {
        let frame = masked_text(&json!({"id": "setAudio", "enabled": i % 2 == 1}).to_string());
        while i - echoes.load(std::sync::atomic::Ordering::Relaxed).min(i) > IN_FLIGHT {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "flood too slow"
            );
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        write.write_all(&frame).await.expect("toggler sends");
        if i % 1000 == 999 {
            rss_peak = rss_peak.max(node.rss_bytes());
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "flood too slow"
            );
        }
    }
    // The server has handled every toggle (the toggler saw each echoed): whatever it kept
    // for the sleepers is in its memory now.
    while echoes.load(std::sync::atomic::Ordering::Relaxed) < TOGGLES {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "echoes missing"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    rss_peak = rss_peak.max(node.rss_bytes());
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "{TOGGLES} toggles in {:?}; server RSS {} -> peak {} KiB (+{} KiB)",
        started.elapsed(),
        rss_before / 1024,
        rss_peak / 1024,
        growth / 1024
    );
    assert!(
        growth < RSS_GROWTH_AT_MOST,
        "the server buffered for clients that do not read: RSS grew {growth} bytes"
    );
    // Every sleeper was cut at its bound.
    let overflowed = "conclave_signaling_sessions_closed_total{reason=\"outbound_overflow\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.metric(overflowed).await < SLEEPERS as f64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {SLEEPERS} sleepers cut",
            node.metric(overflowed).await
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // Their connections are gone: what they read now ends (close frame, reset or EOF) after
    // no more than the kernel's buffers, the write buffer and the queue bound.
    for mut ws in sleepers {
        let mut read = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, ws.read.read(&mut buf)).await {
                Err(_) => panic!("a sleeper's connection still open after {read} bytes"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => read += n,
            }
        }
        assert!(read < 8 * 1024 * 1024, "a sleeper got {read} bytes");
    }
    // The toggler, who reads, is still served: it sees every sleeper leave (after the resume
    // grace), and its heartbeat is answered.
    for left in 0..SLEEPERS {
        tokio::time::timeout(Duration::from_secs(20), left_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("the toggler saw only {left} sleepers leave"));
    }
    write
        .write_all(&masked_text(&json!({"id": "heartbeat"}).to_string()))
        .await
        .expect("the toggler's socket is open");
    assert!(!drain.is_finished(), "the toggler's connection ended");
    drain.abort();
}

/// 2,000 WebSockets that never join, from 40 addresses in 127.0.0.0/8, are each closed (1008)
/// at the join deadline, not before; a member that joined stays.
#[actix_rt::test]
async fn sockets_that_never_join_are_closed_at_the_deadline() {
    const SOCKETS: usize = 2000;
    const ADDRESSES: usize = 40;
    const DEADLINE: Duration = Duration::from_secs(4);
    /// Lateness allowed on a loaded 2-core machine.
    const SLACK: Duration = Duration::from_secs(6);

    let node = spawn_node(&[
        "--join-deadline-secs",
        "4",
        "--max-connections-per-ip",
        "60",
    ]);
    let (mut member, _) = node.server.join("member", "stays").await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SOCKETS {
        let from = lo(10 + (i % ADDRESSES) as u8);
        let to = node.addr;
        tasks.push(actix_rt::spawn(async move {
            let mut ws =
                match tokio::time::timeout(Duration::from_secs(20), upgrade(from, to, &[], None))
                    .await
                {
                    Ok(Ok(Upgrade::Open(ws))) => ws,
                    Ok(Ok(Upgrade::Refused(status, body))) => panic!("refused {status}: {body}"),
                    Ok(Err(e)) => panic!("connect from {from}: {e}"),
                    Err(_) => panic!("connect from {from} timed out"),
                };
            let opened = Instant::now();
            let close = ws
                .until_closed(DEADLINE + SLACK + Duration::from_secs(5))
                .await;
            (opened.elapsed(), close)
        }));
    }
    let mut early = 0;
    let mut latest = Duration::ZERO;
    for task in tasks {
        let (after, close) = task.await.expect("client task");
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("join deadline"), "{reason}");
        // `opened` is taken after the upgrade answer: the server's clock started a little earlier.
        if after + Duration::from_millis(500) < DEADLINE {
            early += 1;
        }
        latest = latest.max(after);
    }
    eprintln!(
        "{SOCKETS} idle sockets closed; the last {latest:?} after its upgrade; all in {:?}",
        started.elapsed()
    );
    assert_eq!(early, 0, "sockets closed before the deadline");
    assert!(
        latest < DEADLINE + SLACK,
        "a socket closed {latest:?} after opening"
    );
    assert_eq!(
        node.metric("conclave_signaling_sessions_closed_total{reason=\"join_deadline\"}")
            .await,
        SOCKETS as f64
    );
    // The member that joined is still there.
    member.heartbeat_roundtrip().await;
}

/// At most N WebSockets per client address. From a peer that is not a trusted proxy, a
/// forged `X-Forwarded-For` changes nothing; from a trusted proxy, the address it appended
/// is the client (and what the client forged to its left is ignored).
#[actix_rt::test]
async fn connections_per_ip_are_limited_and_forwarded_for_is_believed_only_from_proxies() {
    let node = spawn_node(&[
        "--max-connections-per-ip",
        "3",
        "--trusted-proxies",
        "127.0.0.5",
    ]);
    let xff = |ip: &str| vec![format!("X-Forwarded-For: {ip}")];
    let open = |from: IpAddr, headers: Vec<String>| {
        let to = node.addr;
        async move { upgrade(from, to, &headers, None).await.expect("connects") }
    };

    // A direct client (127.0.0.6) forging a new address each time.
    let mut direct = Vec::new();
    for i in 0..3 {
        match open(lo(6), xff(&format!("198.51.100.{i}"))).await {
            Upgrade::Open(ws) => direct.push(ws),
            Upgrade::Refused(status, body) => panic!("refused early: {status} {body}"),
        }
    }
    match open(lo(6), xff("198.51.100.99")).await {
        Upgrade::Refused(status, body) => {
            assert_eq!(status, 429, "{body}");
            assert!(body.contains("too_many_connections"), "{body}");
        }
        Upgrade::Open(_) => panic!("a forged X-Forwarded-For dodged the per-IP limit"),
    }
    // Another address is not affected.
    assert!(matches!(open(lo(7), vec![]).await, Upgrade::Open(_)));
    // A closed connection frees its slot.
    drop(direct.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(lo(6), vec![]).await {
            Upgrade::Open(ws) => {
                direct.push(ws);
                break;
            }
            Upgrade::Refused(..) => {
                assert!(Instant::now() < deadline, "the slot was never released");
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // Through the trusted proxy (127.0.0.5): each client address counts on its own.
    let mut proxied = Vec::new();
    for _ in 0..3 {
        match open(lo(5), xff("203.0.113.1")).await {
            Upgrade::Open(ws) => proxied.push(ws),
            Upgrade::Refused(status, body) => panic!("refused early: {status} {body}"),
        }
    }
    // A fourth from 203.0.113.1 is refused, even with a forged address to its left.
    for forged in ["203.0.113.1", "10.9.9.9, 203.0.113.1"] {
        match open(lo(5), xff(forged)).await {
            Upgrade::Refused(status, _) => assert_eq!(status, 429),
            Upgrade::Open(_) => panic!("{forged}: over the limit for 203.0.113.1"),
        }
    }
    // Other clients behind the same proxy get in: the header is honoured.
    for client in ["203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        match open(lo(5), xff(client)).await {
            Upgrade::Open(ws) => proxied.push(ws),
            Upgrade::Refused(status, body) => panic!("{client} refused: {status} {body}"),
        }
    }
    // The proxy's own address (no header) is a client too.
    assert!(matches!(open(lo(5), vec![]).await, Upgrade::Open(_)));
    // And the sockets that got in work: one joins.
    let mut ws = proxied.pop().unwrap();
    ws.send(json!({"id": "join", "token": node.token("p", "proxied")}))
        .await
        .unwrap();
    ws.expect("joined", Duration::from_secs(10)).await;
    assert!(
        node.metric("conclave_signaling_connections_refused_total{reason=\"per_ip\"}")
            .await
            >= 3.0
    );
}

/// Cluster mode, Redis stalled (`CLIENT PAUSE`): a member toggling its state fills its room's
/// Redis queue (bound 8). The room carries on live (every state reaches the other member at
/// once), the operations over the bound are dropped (counted), a join meanwhile is refused
/// with `unavailable` at once instead of waiting behind the backlog, and once Redis answers
/// again the room's records converge to the final state (the re-assertion repairs what was
/// dropped).
#[actix_rt::test]
async fn a_room_whose_redis_stalls_keeps_a_bounded_queue_and_converges_after() {
    use crate::cluster_support::{eventually, spawn_media_node, spawn_signaling_node, TestRedis};
    use conclave_common::cluster::ClusterStore;
    const TOGGLES: usize = 301;

    let redis = TestRedis::start();
    let (_media, _, _) = spawn_media_node(&redis.url, "m-rq", 50);
    let store = ClusterStore::connect(&redis.url, "conclave:")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "media node registered", || async {
        store.node_participants("m-rq").await.unwrap().is_some()
    })
    .await;
    let (sig, server) = spawn_signaling_node(
        &redis.url,
        "sig-rq",
        &["--room-redis-queue", "8", "--rate-state", "1000:1000"],
    );
    let (mut ann, _) = server.join("ann", "rq").await;
    let (mut bob, bob_joined) = server.join("bob", "rq").await;
    let bob_id = bob_joined["participantId"].as_str().unwrap().to_string();
    ann.expect("participantJoined").await;

    // Redis stalls for 5 s: every command waits.
    let mut admin = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("ALL")
        .query(&mut admin)
        .unwrap();
    let paused = Instant::now();
    // The last two toggles go once the queue's runner surely holds its first operation, so
    // that they fill the slot it freed.
    for batch in [0..TOGGLES - 2, TOGGLES - 2..TOGGLES] {
        for i in batch.clone() {
            bob.send(json!({"id": "setAudio", "enabled": i % 2 == 1}))
                .await;
        }
        // Live in the room: ann gets every state, in order, while Redis is stalled.
        for i in batch {
            let state = ann.expect("participantState").await;
            assert_eq!(state["audio"], i % 2 == 1, "{state}");
        }
    }
    assert!(
        paused.elapsed() < Duration::from_secs(4),
        "states waited for Redis"
    );
    let internal = sig.internal.clone().expect("internal listener");
    let dropped = async |op: &str| -> f64 {
        let body = awc::Client::new()
            .get(format!("{internal}/metrics"))
            .send()
            .await
            .unwrap()
            .body()
            .await
            .unwrap();
        let series = format!("conclave_signaling_room_redis_dropped_total{{operation=\"{op}\"}} ");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
            .unwrap_or(0.0)
    };
    let (updates, publishes) = (dropped("update").await, dropped("publish").await);
    eprintln!("dropped while Redis stalled: {updates} updates, {publishes} publishes");
    // Each toggle makes two operations (rewrite the record, publish the event); the queue
    // holds 8 and runs 1 (a few may have run before the pause took hold).
    assert!(
        updates + publishes >= (2 * TOGGLES - 20) as f64,
        "{updates} + {publishes}"
    );
    // A join meanwhile is refused at once (the queue is full), not parked behind it.
    let mut cat = server.connect().await;
    let asked = Instant::now();
    cat.send(json!({"id": "join", "token": server.token("cat", "rq")}))
        .await;
    cat.expect_error("unavailable").await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // Redis answers again: bob's record ends with his last state (audio off).
    eventually(
        Duration::from_secs(20),
        "bob's record converged",
        || async {
            store
                .room_members("test/rq")
                .await
                .map(|members| {
                    members
                        .iter()
                        .any(|m| m.participant.participant_id == bob_id && !m.participant.audio)
                })
                .unwrap_or(false)
        },
    )
    .await;
    ann.heartbeat_roundtrip().await;
    drop(sig);
}

/// nginx with the shipped config (`deploy/nginx/conclave.conf.template`) in front of a node
/// that trusts it: the node counts WebSockets per client address, as nginx reports it in
/// `X-Forwarded-For`, and a client's own forged header changes nothing.
#[actix_rt::test]
async fn behind_the_shipped_nginx_config_each_client_address_counts_on_its_own() {
    let node = spawn_node(&[
        "--max-connections-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let nginx = Nginx::start(node.addr);
    let through = |from: u8, headers: Vec<String>| {
        let to = nginx.addr;
        async move {
            upgrade(lo(from), to, &headers, None)
                .await
                .expect("connects")
        }
    };
    let mut open = Vec::new();
    for _ in 0..2 {
        match through(21, vec![]).await {
            Upgrade::Open(ws) => open.push(ws),
            Upgrade::Refused(status, body) => panic!("refused early: {status} {body}"),
        }
    }
    // A third from 127.0.0.21 is refused by the node, forged header or not.
    for headers in [vec![], vec!["X-Forwarded-For: 198.51.100.7".to_string()]] {
        match through(21, headers).await {
            Upgrade::Refused(status, body) => {
                assert_eq!(status, 429, "{body}");
                assert!(body.contains("too_many_connections"), "{body}");
            }
            Upgrade::Open(_) => panic!("over the limit through nginx"),
        }
    }
    // Another client behind the same nginx is counted on its own, and its socket works.
    let Upgrade::Open(mut other) = through(22, vec![]).await else {
        panic!("127.0.0.22 refused: nginx's address counted for everyone");
    };
    other
        .send(json!({"id": "join", "token": node.token("o", "nginx")}))
        .await
        .unwrap();
    other.expect("joined", Duration::from_secs(10)).await;
}

/// An nginx we started from the shipped template, stopped (with its workers) by its PID.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Nginx {
    fn start(upstream: SocketAddr) -> Nginx {
        let template = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nginx/conclave.conf.template"
        );
        let dir =
            std::env::temp_dir().join(format!("conclave-limits-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
        let dir = TempDir(dir);
        let port = crate::cluster_support::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conf = std::fs::read_to_string(template)
            .expect("the nginx template")
            .replace("@PREFIX@", dir.0.to_str().unwrap())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@SIGNALING@", &format!("        server {upstream};"));
        let conf_path = dir.0.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a SIGKILL would leave them behind).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
