//! The UDP path against hostile peers, with a real `media-node` process and real str0m
//! clients on 127.0.0.1 (this test plays the signaling node over a signed link).
//!
//! The attacker is a participant of the node: it knows its own ICE credentials and the
//! node's for it (both are in its SDP). Spoofing a source address is done by sending from
//! the socket that holds it: the test owns every client's socket, and to the node a datagram
//! from an address is the same whoever sent it.
//!
//! Each test fails against a router that learns addresses before checking MESSAGE-INTEGRITY,
//! repoints another peer's address, sends media to an unproven nomination, or has no ingress
//! budget.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use awc::ws;
use conclave_common::link::{MediaCommand, MediaEvent};
use conclave_common::protocol::{TrackInfo, TrackSource};
use futures_util::StreamExt;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc};
use support::{next_event, send, signed_link, Framed, Node};

const ROOM: &str = "udp-path";

/// One str0m client on its own UDP socket.
struct Client {
    id: String,
    rtc: Rtc,
    /// Everything the client sends and receives goes through this socket (str0m's `source`
    /// is ignored, as a NAT would rewrite it).
    socket: UdpSocket,
    local: SocketAddr,
    /// Our ICE credentials and the node's, from the SDP.
    ours: IceCreds,
    node: Option<IceCreds>,
    pending: Option<SdpPendingOffer>,
    video: Option<Mid>,
    frames_sent: u64,
    next_frame: Instant,
    /// Media frames received (a subscriber's count), in all and by our mid.
    frames_received: u64,
    frames_by_mid: BTreeMap<Mid, u64>,
    /// The tracks the node's last offer announced to us.
    tracks: Vec<TrackInfo>,
}

impl Client {
    fn new(id: &str) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let ours = rtc.direct_api().local_ice_credentials();
        Client {
            id: id.to_string(),
            rtc,
            socket,
            local,
            ours,
            node: None,
            pending: None,
            video: None,
            frames_sent: 0,
            next_frame: Instant::now(),
            frames_received: 0,
            frames_by_mid: BTreeMap::new(),
            tracks: Vec::new(),
        }
    }

    /// Our join offer: a video track to publish, or a receive-only audio line to listen.
    fn offer(&mut self, publish: bool) -> String {
        let mut api = self.rtc.sdp_api();
        if publish {
            self.video =
                Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        } else {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().expect("an offer");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    fn on_event(&mut self, event: MediaEvent, link_out: &mut Vec<MediaCommand>) {
        match event {
            MediaEvent::Answer { sdp, .. } => {
                let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                let pending = self.pending.take().expect("our offer");
                self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                self.node = self.rtc.direct_api().remote_ice_credentials();
            }
            MediaEvent::Offer { sdp, tracks, .. } => {
                self.tracks = tracks;
                let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
                link_out.push(MediaCommand::Answer {
                    room: ROOM.into(),
                    participant_id: self.id.clone(),
                    sdp: answer.to_sdp_string(),
                });
            }
            MediaEvent::PeerError { code, message, .. } => {
                panic!("{}: {code:?} {message}", self.id)
            }
            _ => {}
        }
    }

    /// Publish a 1,000-byte frame every 10 ms (once connected), take in what arrived, give
    /// str0m its time and send what it wants sent.
    fn step(&mut self) {
        let now = Instant::now();
        if let Some(mid) = self.video {
            if self.rtc.is_connected() && now >= self.next_frame {
                let writer = self.rtc.writer(mid).expect("our video track");
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt())
                    .expect("vp8");
                let time = MediaTime::new(self.frames_sent * 900, Frequency::NINETY_KHZ);
                writer.write(pt, now, time, vec![0x10; 1_000]).unwrap();
                self.frames_sent += 1;
                self.next_frame = now + Duration::from_millis(10);
            }
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, source)) = self.socket.recv_from(&mut buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    self.frames_received += 1;
                    *self.frames_by_mid.entry(data.mid).or_default() += 1;
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
    }

    /// A binding request to the node naming `as_ufrag_of`'s ufrag (USERNAME `node:client`),
    /// signed with `password`, nominating (USE-CANDIDATE) with a priority above any real pair.
    fn forged_request(as_ufrag_of: &Client, password: &str) -> Vec<u8> {
        let node = as_ufrag_of.node.as_ref().expect("connected");
        let username = format!("{}:{}", node.ufrag, as_ufrag_of.ours.ufrag);
        let msg =
            StunMessage::binding_request(&username, TransId::new(), true, 42, u32::MAX >> 1, true);
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(
                Some(password.as_bytes()),
                &mut buf,
                conclave_media_node::sfu::ice::stun_hmac,
            )
            .unwrap();
        buf.truncate(n);
        buf
    }
}

/// A publisher and a subscriber in one room on `node`, connected, media flowing.
struct Call {
    link: Framed,
    publisher: Client,
    subscriber: Client,
}

impl Call {
    async fn start(node: &Node) -> Call {
        let mut publisher = Client::new("pub");
        let offer = publisher.offer(true);
        Call::start_with(node, publisher, offer, BTreeMap::new()).await
    }

    /// A call whose publisher has made its own `offer` and declared `sources` for it.
    async fn start_with(
        node: &Node,
        mut publisher: Client,
        offer: String,
        sources: BTreeMap<String, TrackSource>,
    ) -> Call {
        let mut link = signed_link(node).await;
        let mut subscriber = Client::new("sub");
        let subscriber_offer = subscriber.offer(false);
        for (client, offer, sources) in [
            (&mut publisher, offer, sources),
            (&mut subscriber, subscriber_offer, BTreeMap::new()),
        ] {
            send(
                &mut link,
                &MediaCommand::AddPeer {
                    room: ROOM.into(),
                    participant_id: client.id.clone(),
                    offer,
                    adopt_verifier: "unused".into(),
                    sources,
                },
            )
            .await;
            let event = next_event(&mut link).await;
            assert!(matches!(event, MediaEvent::Answer { .. }), "{event:?}");
            client.on_event(event, &mut Vec::new());
        }
        let mut call = Call {
            link,
            publisher,
            subscriber,
        };
        call.run_for(Duration::from_secs(3)).await;
        assert!(
            call.subscriber.frames_received > 50,
            "the call did not start: {} frames",
            call.subscriber.frames_received
        );
        call
    }

    /// Run both clients and the link for `duration`; the frames the subscriber got meanwhile.
    async fn run_for(&mut self, duration: Duration) -> u64 {
        let before = self.subscriber.frames_received;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let frame = tokio::time::timeout(Duration::from_millis(2), self.link.next()).await;
            if let Ok(Some(Ok(ws::Frame::Text(text)))) = frame {
                let event: MediaEvent = serde_json::from_slice(&text).unwrap();
                let to = match &event {
                    MediaEvent::Answer { participant_id, .. }
                    | MediaEvent::Offer { participant_id, .. }
                    | MediaEvent::PeerState { participant_id, .. }
                    | MediaEvent::PeerError { participant_id, .. } => participant_id.clone(),
                    _ => String::new(),
                };
                let mut replies = Vec::new();
                if to == self.publisher.id {
                    self.publisher.on_event(event, &mut replies);
                } else if to == self.subscriber.id {
                    self.subscriber.on_event(event, &mut replies);
                }
                for reply in replies {
                    send(&mut self.link, &reply).await;
                }
            }
            self.publisher.step();
            self.subscriber.step();
        }
        self.subscriber.frames_received - before
    }
}

/// Frames the subscriber gets in 2 s of an intact call: ≈ 200 (one per 10 ms), fewer on a
/// busy machine; a broken call gets none after the first few milliseconds.
const INTACT_FRAMES_MIN: u64 = 60;

#[actix_rt::test]
async fn stun_from_a_victims_address_naming_another_peer_leaves_its_route_alone() {
    let node = Node::start("media-udp-1", &[]);
    let mut call = Call::start(&node).await;
    let victim = call.publisher.socket.try_clone().unwrap();
    let to_node = node.udp;

    // The subscriber (the attacker) names its own ufrag from the publisher's address: first
    // with a guessed password, then correctly signed with its own. An unchecked router would
    // send the publisher's media to the attacker's connection, which cannot decrypt it, and
    // the call would stop.
    let bad = Client::forged_request(&call.subscriber, "a-guessed-password-000000");
    let node_creds = call.subscriber.node.clone().unwrap();
    let good = Client::forged_request(&call.subscriber, &node_creds.pass);
    for forged in [&bad, &good] {
        for _ in 0..5 {
            victim.send_to(forged, to_node).unwrap();
        }
        let frames = call.run_for(Duration::from_secs(2)).await;
        assert!(
            frames >= INTACT_FRAMES_MIN,
            "the publisher's media stopped after a forged STUN: {frames} frames in 2 s"
        );
    }
    let dropped =
        |reason: &str| format!("conclave_media_dropped_packets_total{{reason=\"{reason}\"}} ");
    assert!(node.metric(&dropped("bad_integrity")).await >= 5.0);
    assert!(node.metric(&dropped("address_taken")).await >= 5.0);
}

#[actix_rt::test]
async fn a_forged_nomination_from_a_third_party_gets_no_media() {
    let node = Node::start("media-udp-2", &[]);
    let mut call = Call::start(&node).await;
    // A third party somewhere: it never answers, it only counts what arrives.
    let third_party = UdpSocket::bind("127.0.0.1:0").unwrap();
    third_party.set_nonblocking(true).unwrap();

    // The subscriber nominates the third party's address, correctly signed (it knows the
    // node's password for it): str0m takes the nomination and sends there.
    let node_creds = call.subscriber.node.clone().unwrap();
    let forged = Client::forged_request(&call.subscriber, &node_creds.pass);
    for _ in 0..3 {
        third_party.send_to(&forged, node.udp).unwrap();
    }
    call.run_for(Duration::from_secs(2)).await;

    let (mut stun, mut media) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = third_party.recv_from(&mut buf) {
        match buf[..n].first() {
            Some(0..=3) => stun += 1,
            Some(128..=191) => media += 1,
            _ => {}
        }
    }
    // Without the guard: ≈ 200 SRTP packets (everything the subscriber should get).
    assert_eq!(
        media, 0,
        "media went to an address that never proved it is the peer"
    );
    // It got our consent checks (and str0m's answers to the forged requests), a bounded few.
    assert!((1..=30).contains(&stun), "{stun} STUN packets");
    // And the nomination did not even take the subscriber's media away: str0m aims at the
    // unproven address, the node sends to the subscriber's proven one.
    let frames = call.run_for(Duration::from_secs(2)).await;
    assert!(
        frames >= INTACT_FRAMES_MIN,
        "{frames} frames in 2 s after the forgery"
    );
}

#[actix_rt::test]
async fn a_flooding_peer_is_held_to_its_budget_and_the_call_goes_on() {
    const BUDGET: f64 = 500.0;
    let node = Node::start(
        "media-udp-3",
        &["--peer-ingress-pps", "500", "--media-threads", "1"],
    );
    let mut call = Call::start(&node).await;
    let received = "conclave_media_udp_received_packets_total{thread=\"0\"} ";
    let over_budget = "conclave_media_dropped_packets_total{reason=\"over_budget\"} ";
    let (received_before, over_before) =
        (node.metric(received).await, node.metric(over_budget).await);
    let started = Instant::now();
    // The subscriber floods from its own (learned) address: 20,000 RTP-shaped datagrams, in
    // bursts the node's socket buffer takes.
    let flooder = call.subscriber.socket.try_clone().unwrap();
    let mut junk = vec![0u8; 200];
    junk[0] = 0x80;
    for _ in 0..100 {
        for _ in 0..200 {
            let _ = flooder.send_to(&junk, node.udp);
        }
        call.run_for(Duration::from_millis(5)).await;
    }
    let frames = call.run_for(Duration::from_secs(2)).await;
    assert!(
        frames >= INTACT_FRAMES_MIN,
        "{frames} frames in 2 s after the flood"
    );
    let received = node.metric(received).await - received_before;
    let over = node.metric(over_budget).await - over_before;
    let elapsed = started.elapsed().as_secs_f64();
    // What the node read was the flood, the publisher's media (≈ 110/s) and the subscriber's
    // own RTCP and STUN: of the flood, at most one bucket plus the refill got through.
    assert!(
        received > 5_000.0,
        "the node read only {received} datagrams"
    );
    let allowed = BUDGET * (1.0 + elapsed) + 150.0 * elapsed;
    assert!(
        over >= received - allowed,
        "only {over} of {received} datagrams dropped over budget in {elapsed:.1} s"
    );
}

#[actix_rt::test]
async fn a_client_whose_address_changes_gets_its_media_back_after_proving_the_new_one() {
    let node = Node::start("media-udp-4", &[]);
    let mut call = Call::start(&node).await;
    // A NAT rebinding (or a move to another network without an ICE restart): from now on the
    // subscriber's datagrams come from a new port, and the old one is gone. Its ICE agent
    // keeps nominating the pair it uses; the node must follow it, but only after the new
    // address answers a consent check.
    let moved = UdpSocket::bind("127.0.0.1:0").unwrap();
    moved.set_nonblocking(true).unwrap();
    let old = std::mem::replace(&mut call.subscriber.socket, moved);
    drop(old);
    let checks_before = node
        .metric("conclave_media_path_checks_total{result=\"proven\"} ")
        .await;
    // The client's next STUN from the new address (keep-alives come every few seconds) is
    // proven at once; media moves there when the old address has been silent for 4 s.
    let mut frames = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) && frames < INTACT_FRAMES_MIN {
        frames += call.run_for(Duration::from_millis(500)).await;
    }
    assert!(
        frames >= INTACT_FRAMES_MIN,
        "media did not follow the client to its new address: {frames} frames in {:?}",
        started.elapsed()
    );
    let proven = node
        .metric("conclave_media_path_checks_total{result=\"proven\"} ")
        .await;
    assert!(
        proven > checks_before,
        "the new address was proven by a consent check"
    );
}

#[actix_rt::test]
async fn declared_sources_announce_each_track_by_the_publishers_own_mid() {
    let node = Node::start("media-udp-5", &[]);
    // A camera and a screen share: two video m-lines; only the screen one carries frames.
    let mut publisher = Client::new("pub");
    let mut api = publisher.rtc.sdp_api();
    let camera = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let screen = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    publisher.pending = Some(pending);
    publisher.video = Some(screen);
    let sources = BTreeMap::from([
        (screen.to_string(), TrackSource::Screen),
        // A microphone cannot be a video m-line: ignored, the camera default stands.
        (camera.to_string(), TrackSource::Microphone),
    ]);
    let mut call = Call::start_with(&node, publisher, offer.to_sdp_string(), sources).await;
    call.run_for(Duration::from_millis(500)).await;

    let sub = &call.subscriber;
    let announced = |source: TrackSource| -> Vec<String> {
        sub.tracks
            .iter()
            .filter(|t| t.source == source && t.participant_id == "pub")
            .map(|t| t.mid.clone())
            .collect()
    };
    let (screens, cameras) = (
        announced(TrackSource::Screen),
        announced(TrackSource::Camera),
    );
    assert_eq!(
        (screens.len(), cameras.len()),
        (1, 1),
        "announced: {:?}",
        sub.tracks
    );
    let frames_on = |mid: &str| {
        sub.frames_by_mid
            .iter()
            .find(|(m, _)| m.to_string() == mid)
            .map_or(0, |(_, n)| *n)
    };
    // The frames the publisher sent on its screen m-line arrive on the track announced as
    // the screen; the camera's track, announced as a camera, gets none.
    assert!(
        frames_on(&screens[0]) > 50,
        "{} frames on the screen track",
        frames_on(&screens[0])
    );
    assert_eq!(frames_on(&cameras[0]), 0);
}
