//! A server on an ephemeral port and a small JSON WebSocket client.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::web::Bytes;
use awc::ws;
use conclave_common::caps::ParticipantCaps;
use conclave_common::link_auth::LinkSecret;
use conclave_common::protocol::ServerMessage;
use conclave_media_node::config::MediaConfig;
use conclave_signaling_node::auth::{now_secs, Claims, TokenKeys};
use conclave_signaling_node::limits::Limits;
use conclave_signaling_node::media_link::{MediaTarget, RemoteMedia};
use conclave_signaling_node::origin::AllowedOrigins;
use conclave_signaling_node::turn::TurnServers;
use conclave_signaling_node::{serve, start_services, MediaSetup, ServiceSettings};
use futures_util::{SinkExt, StreamExt};

pub const SECRET: &[u8] = b"signaling-test-token-secret-0123456789";
pub const API_KEY: &str = "test-api-key";

pub struct TestServer {
    pub base: String,
    /// The first room thread's UDP socket: a server's first room opens there (the least
    /// loaded thread, the lowest index on a tie).
    pub udp: std::net::SocketAddr,
    keys: TokenKeys,
}

pub struct Options {
    pub room_cap: usize,
    pub heartbeat: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    pub signaling_id: String,
    /// Caps the signaling node checks.
    pub caps: ParticipantCaps,
    /// Caps the (embedded) media node checks.
    pub media_caps: ParticipantCaps,
    /// Rates, queues and deadlines per client.
    pub limits: Limits,
    /// `--allowed-origins` (empty: the server's own host only).
    pub allowed_origins: Vec<String>,
    /// `--turn-uri` and its secret (`None`: no `iceServers` in `joined`).
    pub turn: Option<TurnServers>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            room_cap: 25,
            heartbeat: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(1),
            signaling_id: "sig-test".into(),
            caps: ParticipantCaps::default(),
            media_caps: ParticipantCaps::default(),
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            turn: None,
        }
    }
}

/// The internal link's secret of every node the tests start (processes get it as
/// CONCLAVE_LINK_SECRET).
pub const LINK_SECRET: &str = "signaling-test-link-secret-0123456789";

pub fn link_secret() -> LinkSecret {
    LinkSecret::new(LINK_SECRET).expect("long enough")
}

/// A separate media node at `url`, reached with the tests' link secret.
pub fn remote_media(url: String) -> MediaTarget {
    MediaTarget::Remote(RemoteMedia {
        url,
        secret: Some(link_secret()),
        node_id: None,
    })
}

/// The settings of an in-process media node on 127.0.0.1, port chosen by the OS.
pub fn media_config(caps: ParticipantCaps) -> MediaConfig {
    MediaConfig {
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        advertise_ip: None,
        node_id: "media-test".into(),
        media_threads: Some(2),
        load_capacity: None,
        orphan_grace_secs: 20,
        peer_ingress_pps: conclave_media_node::sfu::udp::DEFAULT_PEER_INGRESS_PPS,
        bwe: false,
        caps: caps.into(),
    }
}

/// Start a signaling node with an embedded media node, on 127.0.0.1 ports chosen by the OS.
pub fn start(opts: Options) -> TestServer {
    start_with_tls(opts, None)
}

/// Like [`start`], serving HTTPS with `tls` when given (`base` is then `https://...`).
pub fn start_with_tls(opts: Options, tls: Option<rustls::ServerConfig>) -> TestServer {
    start_with(opts, tls, None)
}

/// Like [`start`], with a separate media node at `media` instead of the embedded one.
pub fn start_with(
    opts: Options,
    tls: Option<rustls::ServerConfig>,
    remote_media: Option<MediaTarget>,
) -> TestServer {
    start_setup(opts, tls, |local| {
        MediaSetup::Single(remote_media.unwrap_or(MediaTarget::Local(local)))
    })
}

/// A signaling node in cluster mode: rooms placed through `store` on registered media nodes.
pub fn start_cluster(opts: Options, store: conclave_common::cluster::ClusterStore) -> TestServer {
    start_setup(opts, None, |_| MediaSetup::Cluster(store))
}

fn start_setup(
    opts: Options,
    tls: Option<rustls::ServerConfig>,
    setup: impl FnOnce(actix::Recipient<conclave_common::link::ToMediaNode>) -> MediaSetup,
) -> TestServer {
    let media =
        conclave_media_node::start(&media_config(opts.media_caps)).expect("media node starts");
    let services = start_services(ServiceSettings {
        media: setup(media.commands()),
        token_secret: SECRET.to_vec(),
        token_policy: Default::default(),
        dev: true,
        room_cap: opts.room_cap,
        heartbeat_interval: opts.heartbeat,
        client_timeout: opts.client_timeout,
        resume_grace: opts.resume_grace,
        signaling_id: opts.signaling_id,
        public_url: "http://test".into(),
        presence_webhook: None,
        presence_stream_len: 1000,
        api_key: Some(API_KEY.into()),
        link_secret: Some(link_secret()),
        caps: opts.caps,
        limits: opts.limits,
        allowed_origins: AllowedOrigins::parse(&opts.allowed_origins).expect("valid origins"),
        turn: opts.turn.map(std::sync::Arc::new),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().unwrap());
    let server = serve(listener, tls, services, Some(1)).unwrap();
    actix_rt::spawn(server);
    TestServer {
        base,
        udp: media.udp_locals[0],
        keys: TokenKeys::new(SECRET),
    }
}

impl TestServer {
    /// A server started elsewhere (another process) at `base`, with our token secret.
    pub fn at(base: String) -> TestServer {
        TestServer {
            base,
            udp: "127.0.0.1:9".parse().unwrap(),
            keys: TokenKeys::new(SECRET),
        }
    }

    pub fn token(&self, user: &str, room: &str) -> String {
        self.token_with_exp(user, room, now_secs() + 600)
    }

    pub fn token_with_exp(&self, user: &str, room: &str, exp: u64) -> String {
        self.keys.mint(&Claims {
            sub: user.into(),
            room: room.into(),
            community: "test".into(),
            name: None,
            exp,
        })
    }

    pub async fn connect(&self) -> Client {
        self.connect_from(None).await.expect("websocket connects")
    }

    /// Open `/ws` as a page of `origin` would (`None`: no `Origin` header, as non-browser
    /// clients do); the handshake's HTTP status if the server refuses the upgrade.
    pub async fn connect_from(&self, origin: Option<&str>) -> Result<Client, u16> {
        let url = format!("{}/ws?room=x", self.base.replace("http", "ws"));
        let mut req = awc::Client::new().ws(url).max_frame_size(2 * 1024 * 1024);
        if let Some(origin) = origin {
            req = req.origin(origin);
        }
        match req.connect().await {
            Ok((_, framed)) => Ok(Client { framed }),
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16()),
            Err(e) => panic!("websocket handshake failed: {e}"),
        }
    }

    /// Connect and join `room` as `user`; returns the client and its `joined` message.
    pub async fn join(&self, user: &str, room: &str) -> (Client, serde_json::Value) {
        let mut c = self.connect().await;
        c.send(serde_json::json!({"id": "join", "token": self.token(user, room), "name": user}))
            .await;
        let joined = c.expect("joined").await;
        (c, joined)
    }
}

pub struct Client {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
}

/// What a receive produced.
#[derive(Debug)]
pub enum Received {
    Message(serde_json::Value),
    Closed(Option<ws::CloseReason>),
    Timeout,
}

impl Client {
    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.framed
            .send(ws::Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Any WebSocket message (fragments included); errors ignored.
    pub async fn send_message(&mut self, message: ws::Message) {
        let _ = self.framed.send(message).await;
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        let _ = self
            .framed
            .send(ws::Message::Binary(Bytes::from(data)))
            .await;
    }

    /// Next JSON message that is not a heartbeat, or a close, within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) => return Received::Timeout,
                Ok(None) => return Received::Closed(None),
                Ok(Some(Err(_))) => return Received::Closed(None),
                Ok(Some(Ok(f))) => f,
            };
            match frame {
                ws::Frame::Text(t) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&t).expect("server sends JSON");
                    // Every server message must parse as our protocol type.
                    let _: ServerMessage =
                        serde_json::from_value(v.clone()).expect("server message fits protocol");
                    if v["id"] != "heartbeat" {
                        return Received::Message(v);
                    }
                }
                ws::Frame::Close(reason) => return Received::Closed(reason),
                _ => {}
            }
        }
    }

    /// The next message must have this `id`.
    pub async fn expect(&mut self, id: &str) -> serde_json::Value {
        match self.recv(Duration::from_secs(10)).await {
            Received::Message(v) if v["id"] == id => v,
            other => panic!("expected {id:?}, got {other:?}"),
        }
    }

    /// The next message, whatever it is (not a heartbeat).
    pub async fn expect_any(&mut self) -> serde_json::Value {
        match self.recv(Duration::from_secs(10)).await {
            Received::Message(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message must be an error with this code.
    pub async fn expect_error(&mut self, code: &str) -> serde_json::Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// Nothing but heartbeats arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        match self.recv(wait).await {
            Received::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Answer the server's pings? No: this client never answers, to look dead.
    pub async fn heartbeat_roundtrip(&mut self) {
        self.send(serde_json::json!({"id": "heartbeat"})).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .expect("heartbeat answer in time")
                .expect("open")
                .expect("frame");
            if let ws::Frame::Text(t) = frame {
                let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
                if v["id"] == "heartbeat" {
                    return;
                }
            }
        }
    }
}

/// A valid SDP offer with one audio and one video m-line, made by str0m as a client.
pub fn valid_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}
