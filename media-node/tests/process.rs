//! The `media-node` process, run for real: it refuses to start with a clear message naming
//! what it could not bind or a missing link secret (`StartError`, exit status 1), and its
//! internal link refuses a frame over the limit from its header.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

mod support;

use conclave_common::link_auth::{self, LinkSecret};
use support::{Node, LINK_SECRET};

fn run_media_node(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_media-node"))
        .args(args)
        .output()
        .expect("media-node runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_link_secret_the_node_does_not_start() {
    let (code, stderr) =
        run_media_node(&["--listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("media-node: no link secret"), "{stderr}");
    let short = &LINK_SECRET[..31];
    let (code, stderr) = run_media_node(&[
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        "127.0.0.1:0",
        "--link-secret",
        short,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("shorter than 32 bytes"), "{stderr}");
}

#[test]
fn a_taken_udp_port_is_named_in_the_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run_media_node(&[
        "--listen",
        "127.0.0.1:0",
        "--udp-listen",
        &addr,
        "--link-secret",
        LINK_SECRET,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("media-node: cannot bind media UDP {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_taken_internal_port_is_named_in_the_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run_media_node(&[
        "--listen",
        &addr,
        "--udp-listen",
        "127.0.0.1:0",
        "--link-secret",
        LINK_SECRET,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("media-node: cannot listen on {addr}")),
        "{stderr}"
    );
}

fn link_secret() -> LinkSecret {
    LinkSecret::new(LINK_SECRET).expect("long enough")
}

/// A link frame that declares more than the limit (1 MiB) is refused from its header: the
/// node closes the link (1009) although only a part of the frame ever arrives. A node that
/// buffered frames whole would wait for the rest and never close.
#[test]
fn a_link_frame_over_the_limit_is_refused_from_its_header() {
    /// What the frame declares.
    const DECLARED: usize = 32 * 1024 * 1024;
    /// What the client streams of it: past the limit, far short of what it declared.
    const STREAMED: usize = 4 * 1024 * 1024;
    let node = Node::start("media-1", &[]);
    let mut tcp = TcpStream::connect(&node.internal).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (authorization, _) = link_secret().sign_upgrade(link_auth::unix_now());
    write!(
        tcp,
        "GET /internal/link HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: {authorization}\r\n\r\n",
        node.internal
    )
    .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).expect("upgrade response");
        response.push(byte[0]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(DECLARED as u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let streaming = std::thread::spawn(move || {
        // Stops early once the node has closed (a write error or a full window).
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..STREAMED / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });

    // Frames before the close (the node's hello) are skipped; the close carries 1009.
    let code = loop {
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).expect("a frame from the node");
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            tcp.read_exact(&mut ext).unwrap();
            len = u64::from(u16::from_be_bytes(ext));
        }
        let mut payload = vec![0u8; len as usize];
        tcp.read_exact(&mut payload).unwrap();
        if head[0] == 0x88 {
            break u16::from_be_bytes([payload[0], payload[1]]);
        }
    };
    assert_eq!(code, 1009);
    drop(tcp);
    streaming.join().unwrap();
}
