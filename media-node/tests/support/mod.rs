//! What the media node's process tests share: a real `media-node` process on 127.0.0.1 and
//! signed internal links to it.

#![allow(dead_code)] // Each test file uses a part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::error::WsClientError;
use awc::ws;
use conclave_common::link::{MediaCommand, MediaEvent};
use conclave_common::link_auth::{self, LinkSecret};
use futures_util::{SinkExt, StreamExt};

pub const LINK_SECRET: &str = "link-auth-test-secret-0123456789abcdef";

/// A `media-node` process on ports of its choosing; killed on drop.
pub struct Node {
    child: Child,
    /// `host:port` of the internal HTTP listener (link, /metrics, /healthz).
    pub internal: String,
    /// Its first room thread's UDP socket.
    pub udp: std::net::SocketAddr,
    pub node_id: String,
}

impl Node {
    /// Start a node named `node_id`, with `extra` flags.
    pub fn start(node_id: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_media-node"))
            .args(["--listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0"])
            .args(["--node-id", node_id, "--link-secret", LINK_SECRET])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("media-node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        // `listening internal=http://127.0.0.1:PORT udp=ADDR[,ADDR...]`
        let internal = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("internal=http://"))
            .unwrap_or_else(|| panic!("no internal address in {line:?}"))
            .to_string();
        let udp = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("udp="))
            .and_then(|list| list.split(',').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no udp address in {line:?}"));
        Node {
            child,
            internal,
            udp,
            node_id: node_id.to_string(),
        }
    }

    pub fn link_url(&self) -> String {
        format!("ws://{}/internal/link", self.internal)
    }

    /// The value of the metrics line starting with `line_start` (name and labels).
    pub async fn metric(&self, line_start: &str) -> f64 {
        let body = awc::Client::new()
            .get(format!("http://{}/metrics", self.internal))
            .send()
            .await
            .expect("metrics")
            .body()
            .limit(4 * 1024 * 1024)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in metrics"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Framed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

/// Open a link with this `Authorization` value (none: unsigned).
pub async fn open(node: &Node, authorization: Option<String>) -> Result<Framed, WsClientError> {
    let mut request = awc::Client::new()
        .ws(node.link_url())
        .max_frame_size(4 * 1024 * 1024);
    if let Some(value) = authorization {
        request = request.set_header("authorization", value);
    }
    request.connect().await.map(|(_, framed)| framed)
}

/// The next event on the link (within 10 s).
pub async fn next_event(link: &mut Framed) -> MediaEvent {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), link.next())
            .await
            .expect("an event within 10 s")
            .expect("link open")
            .expect("a frame");
        if let ws::Frame::Text(bytes) = frame {
            return serde_json::from_slice(&bytes).expect("a link event");
        }
    }
}

pub async fn send(link: &mut Framed, cmd: &MediaCommand) {
    let text = serde_json::to_string(cmd).unwrap();
    link.send(ws::Message::Text(text.into())).await.unwrap();
}

/// A signed link, with its hello checked.
pub async fn signed_link(node: &Node) -> Framed {
    let secret = LinkSecret::new(LINK_SECRET).unwrap();
    let (authorization, nonce) = secret.sign_upgrade(link_auth::unix_now());
    let mut link = open(node, Some(authorization)).await.expect("signed link");
    match next_event(&mut link).await {
        MediaEvent::Hello { node_id, proof, .. } => {
            assert_eq!(node_id, node.node_id);
            assert!(secret.verify_hello(&nonce, &node_id, &proof.expect("a proof")));
        }
        other => panic!("expected hello, got {other:?}"),
    }
    link
}
