//! One simulated participant: str0m `Rtc`s as the WebRTC client over its own UDP socket,
//! synthetic audio and video out, every other publisher's media in, measured.
//!
//! The media half ([`Media`]: socket, peer connections, paced senders, measurement) is the
//! same for every server under test; only signaling differs. This file also holds Conclave's
//! signaling (its WebSocket protocol, one peer connection); [`crate::janus`] holds Janus
//! VideoRoom's (HTTP REST, a publisher and a subscriber peer connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use awc::ws;
use conclave_common::protocol::{ClientMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use crate::payload::{self, Stamp};

/// `drop_video_every` drops nothing this close to the end of publishing: a receiver learns
/// of a lost packet (and NACKs it) only from a later one.
const NO_DROP_BEFORE_STOP: Duration = Duration::from_millis(500);

/// What a participant sends.
#[derive(Debug, Clone)]
pub struct MediaPlan {
    pub audio: bool,
    pub video: bool,
    /// Opus-sized audio payload (bytes), sent every 20 ms.
    pub audio_bytes: usize,
    pub video_kbps: u32,
    pub video_fps: u32,
    /// A keyframe (3x the size) every this many frames.
    pub keyframe_interval: u32,
}

/// The server a participant signals with.
#[derive(Debug, Clone)]
pub enum Signaling {
    /// Conclave's WebSocket protocol.
    Conclave {
        /// `ws://host:port/ws?room=...`
        ws_url: String,
        token: String,
    },
    /// Janus VideoRoom over Janus's HTTP REST transport.
    Janus {
        /// `http://host:8088/janus`
        url: String,
        room: u64,
    },
}

/// Everything one participant needs to run.
#[derive(Debug, Clone)]
pub struct ParticipantPlan {
    pub index: u32,
    pub signaling: Signaling,
    /// `None`: listen only.
    pub publish: Option<MediaPlan>,
    /// The run's common time origin: each publisher's own clock (see [`Clock`]) is placed
    /// relative to it, so every run of the same plan sends on the same schedule.
    pub epoch: Instant,
    /// Publishing and measuring stop at this instant.
    pub stop_at: Instant,
    /// After `stop_at`, keep receiving this long for packets in flight.
    pub drain: Duration,
    /// Local IP to bind the UDP socket to.
    pub bind_ip: std::net::IpAddr,
    /// Packets received in this window are counted apart (the measured steady state).
    pub window: (Instant, Instant),
    /// Counted up when `joined` arrives (the progress line).
    pub joined_counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Drop every n-th video packet received (first transmissions only, never their
    /// retransmissions, and not in the last 0.5 s of publishing) before the client sees it.
    pub drop_video_every: Option<u64>,
}

/// Reception from one publisher of one kind.
#[derive(Debug, Clone)]
pub struct Flow {
    pub first_seq: u64,
    pub max_seq: u64,
    pub received: u64,
    pub reordered: u64,
    pub packets: u64,
}

/// Receptions of every (publisher, kind) flow of one receiver.
pub type Flows = HashMap<(u32, u8), Flow>;

/// Count one reception of `stamp` that carried `packets` RTP packets.
pub fn record_flow(flows: &mut Flows, stamp: Stamp, packets: u64) {
    let flow = flows.entry((stamp.publisher, stamp.kind)).or_insert(Flow {
        first_seq: stamp.seq,
        max_seq: stamp.seq,
        received: 0,
        reordered: 0,
        packets: 0,
    });
    flow.received += 1;
    flow.packets += packets;
    if stamp.seq < flow.max_seq {
        flow.reordered += 1;
    }
    flow.max_seq = flow.max_seq.max(stamp.seq);
    flow.first_seq = flow.first_seq.min(stamp.seq);
}

/// What one simulated participant sent and received, for [`tally`].
pub struct Endpoint<'a> {
    pub index: u32,
    pub flows: &'a Flows,
    /// Units sent per kind (frames or packets, as the flows count them).
    pub sent: [u64; 2],
    pub last_seq: [Option<u64>; 2],
}

/// Totals over every receiver of every publisher of the same room.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub expected: u64,
    pub received: u64,
    pub reordered: u64,
    pub packets: u64,
}

impl Tally {
    pub fn loss_percent(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            100.0 * self.expected.saturating_sub(self.received) as f64 / self.expected as f64
        }
    }
}

/// Expected vs received: a receiver expects everything a publisher of its room sent from the
/// first unit it got on; from a publisher it never heard, everything that publisher sent.
pub fn tally(endpoints: &[Endpoint], participants_per_room: u32) -> Tally {
    let room_of = |index: u32| index / participants_per_room;
    let mut t = Tally::default();
    for receiver in endpoints {
        for publisher in endpoints
            .iter()
            .filter(|p| p.index != receiver.index && room_of(p.index) == room_of(receiver.index))
        {
            for kind in 0..2u8 {
                let Some(last) = publisher.last_seq[kind as usize] else {
                    continue;
                };
                match receiver.flows.get(&(publisher.index, kind)) {
                    Some(flow) => {
                        t.expected += last.saturating_sub(flow.first_seq) + 1;
                        t.received += flow.received;
                        t.reordered += flow.reordered;
                        t.packets += flow.packets;
                    }
                    None => t.expected += publisher.sent[kind as usize],
                }
            }
        }
    }
    t
}

/// What one participant measured.
#[derive(Debug)]
pub struct ParticipantReport {
    pub index: u32,
    pub joined_after: Option<Duration>,
    pub first_media_after_join: Option<Duration>,
    pub connected: bool,
    /// (publisher, kind) -> flow.
    pub flows: Flows,
    /// One-way latency of every received frame, microseconds.
    pub latency_us: Histogram<u64>,
    /// Frames/packets we sent, per kind (0 audio, 1 video).
    pub sent_frames: [u64; 2],
    /// Last sequence number sent per kind (for receivers' expected counts).
    pub last_seq: [Option<u64>; 2],
    /// RTP packets received inside the plan's window.
    pub window_packets: u64,
    /// Video packets dropped on purpose (`drop_video_every`).
    pub video_dropped: u64,
    /// Retransmissions (RTX packets) received.
    pub rtx_received: u64,
    window: (Instant, Instant),
    pub error: Option<String>,
}

impl ParticipantReport {
    fn new(index: u32, window: (Instant, Instant)) -> Self {
        ParticipantReport {
            index,
            joined_after: None,
            first_media_after_join: None,
            connected: false,
            flows: HashMap::new(),
            // Invariant: 1 µs .. 60 s with 3 significant digits is a valid histogram.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            sent_frames: [0, 0],
            last_seq: [None, None],
            window_packets: 0,
            video_dropped: 0,
            rtx_received: 0,
            window,
            error: None,
        }
    }
}

type WsFramed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

/// One publisher's own media clock, as if each ran on a machine of its own: its audio and
/// its video each tick from their own phase within the interval, at a rate a little off
/// nominal (a crystal within ±100 ppm), never in step with another publisher's and never
/// driven from one shared loop. Derived from the participant's index, so every run, against
/// every server, sends on the same schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// Where each kind's ticks fall within its interval, a fraction in [0, 1): [audio, video].
    pub phase: [f64; 2],
    /// How far this clock runs off nominal, parts per million, within ±100.
    pub skew_ppm: f64,
}

impl Clock {
    pub fn for_publisher(index: u32) -> Clock {
        // splitmix64: well-spread values from consecutive indices.
        let mut state = u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut unit = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        Clock {
            phase: [unit(), unit()],
            skew_ppm: (unit() * 2.0 - 1.0) * 100.0,
        }
    }

    /// The interval this clock actually ticks at for a nominal one.
    pub fn interval(&self, nominal: Duration) -> Duration {
        nominal.mul_f64(1.0 + self.skew_ppm * 1e-6)
    }
}

/// One outgoing track, paced by its publisher's [`Clock`]: frame `k` is due at
/// `origin + k * interval`.
struct Sender {
    /// Index into [`Media::peers`] of the peer connection that sends it.
    peer: usize,
    mid: Mid,
    kind: u8,
    seq: u64,
    origin: Instant,
    interval: Duration,
    next_at: Instant,
    /// The server asked for a keyframe: the next video frame is one.
    keyframe_wanted: bool,
}

impl Sender {
    fn new(
        peer: usize,
        mid: Mid,
        kind: u8,
        nominal: Duration,
        clock: Clock,
        epoch: Instant,
    ) -> Self {
        let origin = epoch + nominal.mul_f64(clock.phase[kind as usize]);
        Sender {
            peer,
            mid,
            kind,
            seq: 0,
            origin,
            interval: clock.interval(nominal),
            next_at: origin,
            keyframe_wanted: false,
        }
    }

    /// The first tick of this sender's grid after `now`. After a stall the missed ticks are
    /// skipped, never sent in a burst, and the phase is kept.
    fn tick_after(&self, now: Instant) -> Instant {
        if now < self.origin {
            return self.origin;
        }
        let k = (now - self.origin).as_nanos() / self.interval.as_nanos().max(1) + 1;
        self.origin + self.interval * u32::try_from(k).unwrap_or(u32::MAX)
    }
}

/// The media half of a participant, the same whatever the signaling: one UDP socket, the
/// participant's peer connections on it, its paced senders, and what it measures.
pub(crate) struct Media {
    socket: UdpSocket,
    local: SocketAddr,
    /// The participant's peer connections, all on `socket` (Conclave: one; Janus: a
    /// publisher and a subscriber). A datagram goes to the one that accepts it.
    pub(crate) peers: Vec<Rtc>,
    /// Whether each peer connection is up (ICE and DTLS done): its senders start then.
    connected: Vec<bool>,
    senders: Vec<Sender>,
    /// When the server confirmed the join (for join → first media).
    pub(crate) joined_at: Option<Instant>,
    /// str0m's earliest timeout over all peers, from the last [`Media::drain`].
    next_timeout: Instant,
    buf: Vec<u8>,
    payload_buf: Vec<u8>,
    video_seen: u64,
}

impl Media {
    pub(crate) fn bind(plan: &ParticipantPlan) -> Result<Media, String> {
        let socket =
            bind_udp(SocketAddr::new(plan.bind_ip, 0)).map_err(|e| format!("udp bind: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        Ok(Media {
            socket,
            local,
            peers: Vec::new(),
            connected: Vec::new(),
            senders: Vec::new(),
            joined_at: None,
            next_timeout: Instant::now(),
            buf: vec![0u8; 2048],
            payload_buf: Vec::with_capacity(4096),
            video_seen: 0,
        })
    }

    /// A new peer connection on our socket (Opus and VP8 only); returns its index.
    pub(crate) fn add_peer(&mut self) -> Result<usize, String> {
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(self.local, "udp").map_err(|e| e.to_string())?);
        self.peers.push(rtc);
        self.connected.push(false);
        Ok(self.peers.len() - 1)
    }

    /// `peer`'s offer of what the plan publishes (send-only audio and video, each paced by
    /// the publisher's own clock). A listener offers a recv-only audio line that will never
    /// carry media (it still needs the transport).
    pub(crate) fn publish_offer(
        &mut self,
        peer: usize,
        plan: &ParticipantPlan,
    ) -> Result<(SdpOffer, SdpPendingOffer), String> {
        let clock = Clock::for_publisher(plan.index);
        let mut api = self.peers[peer].sdp_api();
        match &plan.publish {
            Some(m) => {
                if m.audio {
                    let mid =
                        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                    let nominal = Duration::from_millis(20);
                    self.senders
                        .push(Sender::new(peer, mid, 0, nominal, clock, plan.epoch));
                }
                if m.video {
                    let mid =
                        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                    let nominal = Duration::from_secs(1) / m.video_fps.max(1);
                    self.senders
                        .push(Sender::new(peer, mid, 1, nominal, clock, plan.epoch));
                }
            }
            None => {
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
        }
        api.apply().ok_or_else(|| "no offer to make".to_string())
    }

    /// Drain every peer connection until it wants time: send its datagrams, record its
    /// events.
    pub(crate) fn drain(&mut self, report: &mut ParticipantReport) -> Result<(), String> {
        let mut earliest: Option<Instant> = None;
        for (i, rtc) in self.peers.iter_mut().enumerate() {
            loop {
                match rtc.poll_output().map_err(|e| format!("rtc: {e}"))? {
                    Output::Timeout(t) => {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                        break;
                    }
                    Output::Transmit(t) => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                    // The server asks for a keyframe (a new subscriber, a layer change, a
                    // loss): the next frame is one, as a browser's encoder does.
                    Output::Event(Event::KeyframeRequest(req)) => {
                        for s in self.senders.iter_mut() {
                            if s.peer == i && s.mid == req.mid {
                                s.keyframe_wanted = true;
                            }
                        }
                    }
                    Output::Event(e) => {
                        on_event(e, report, self.joined_at, &mut self.connected[i]);
                    }
                }
            }
        }
        self.next_timeout = earliest.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        Ok(())
    }

    /// When the participant's loop must wake next: str0m's earliest timeout, the next frame
    /// due on a connected sender before `stop_at`, or `end`.
    pub(crate) fn wake_at(&self, plan: &ParticipantPlan, end: Instant) -> Instant {
        let publishing = Instant::now() < plan.stop_at;
        let next_send = self
            .senders
            .iter()
            .filter(|s| publishing && self.connected[s.peer])
            .map(|s| s.next_at)
            .min()
            .unwrap_or(end);
        self.next_timeout.min(next_send).min(end)
    }

    /// Wait for the next datagram; it is left in the receive buffer for [`Media::on_datagram`].
    pub(crate) async fn recv(&mut self) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(&mut self.buf).await
    }

    /// Hand the datagram [`Media::recv`] returned to the peer connection that accepts it
    /// (dropping it first if the plan drops this video packet).
    pub(crate) fn on_datagram(
        &mut self,
        n: usize,
        source: SocketAddr,
        plan: &ParticipantPlan,
        report: &mut ParticipantReport,
    ) -> Result<(), String> {
        let now = Instant::now();
        let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &self.buf[..n]) else {
            return Ok(());
        };
        let input = Input::Receive(now, r);
        let peer = if self.peers.len() == 1 {
            0
        } else {
            match self.peers.iter().position(|rtc| rtc.accepts(&input)) {
                Some(p) => p,
                None => return Ok(()),
            }
        };
        let Some(rtc) = self.peers.get_mut(peer) else {
            return Ok(());
        };
        // The video payload types as negotiated: the codec's and its RTX's.
        let video = rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| (p.pt(), p.resend()));
        match (rtp_payload_type(&self.buf[..n]), video) {
            (Some(pt), Some((_, Some(rtx)))) if pt == *rtx => report.rtx_received += 1,
            (Some(pt), Some((vp8, _))) if pt == *vp8 => {
                self.video_seen += 1;
                // Not at the very end: only a later packet reveals the gap.
                let may_drop = now + NO_DROP_BEFORE_STOP < plan.stop_at;
                if may_drop
                    && plan
                        .drop_video_every
                        .is_some_and(|every| self.video_seen.is_multiple_of(every))
                {
                    report.video_dropped += 1;
                    return Ok(());
                }
            }
            _ => {}
        }
        rtc.handle_input(input).map_err(|e| e.to_string())
    }

    /// Send every frame that is due (before `stop_at`, on connected peers) and give every
    /// peer connection its timeout.
    pub(crate) fn on_wake(
        &mut self,
        plan: &ParticipantPlan,
        report: &mut ParticipantReport,
    ) -> Result<(), String> {
        let now = Instant::now();
        if let Some(m) = plan.publish.as_ref().filter(|_| now < plan.stop_at) {
            for s in self.senders.iter_mut() {
                if s.next_at > now || !self.connected[s.peer] {
                    continue;
                }
                send_frame(
                    &mut self.peers[s.peer],
                    s,
                    m,
                    plan.index,
                    &mut self.payload_buf,
                    report,
                )?;
                s.next_at = s.tick_after(now);
            }
        }
        for rtc in self.peers.iter_mut() {
            rtc.handle_input(Input::Timeout(now))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Run one participant until `stop_at + drain`. Never hangs: every wait is bounded by that.
pub async fn run(plan: ParticipantPlan) -> ParticipantReport {
    let mut report = ParticipantReport::new(plan.index, plan.window);
    let result = match &plan.signaling {
        Signaling::Conclave { ws_url, token } => {
            run_conclave(&plan, ws_url, token, &mut report).await
        }
        Signaling::Janus { url, room } => crate::janus::run(&plan, url, *room, &mut report).await,
    };
    if let Err(e) = result {
        report.error = Some(e);
    }
    report
}

/// A participant signaling with Conclave: one peer connection; we offer once at join, then
/// answer the server's offers.
async fn run_conclave(
    plan: &ParticipantPlan,
    ws_url: &str,
    token: &str,
    report: &mut ParticipantReport,
) -> Result<(), String> {
    let end = plan.stop_at + plan.drain;
    let started = Instant::now();
    let (_, mut framed) = tokio::time::timeout_at(
        end.into(),
        awc::Client::new()
            .ws(ws_url)
            .max_frame_size(4 * 1024 * 1024)
            .connect(),
    )
    .await
    .map_err(|_| "websocket connect timed out".to_string())?
    .map_err(|e| format!("websocket connect failed: {e}"))?;

    send(
        &mut framed,
        &ClientMessage::Join {
            token: token.to_string(),
            name: Some(format!("sim-{}", plan.index)),
            audio: plan.publish.as_ref().is_some_and(|m| m.audio),
            video: plan.publish.as_ref().is_some_and(|m| m.video),
        },
    )
    .await?;

    let mut media = Media::bind(plan)?;
    let peer = media.add_peer()?;
    let (offer, pending) = media.publish_offer(peer, plan)?;
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let mut offer_sdp = Some(offer.to_sdp_string());
    let mut signaling_up = true;

    loop {
        media.drain(report)?;
        if Instant::now() >= end {
            break;
        }
        let wake = media.wake_at(plan, end);

        tokio::select! {
            frame = framed.next(), if signaling_up => {
                let text = match frame {
                    Some(Ok(ws::Frame::Text(t))) => t,
                    Some(Ok(ws::Frame::Ping(p))) => {
                        let _ = framed.send(ws::Message::Pong(p)).await;
                        continue;
                    }
                    Some(Ok(ws::Frame::Close(_))) | None | Some(Err(_)) => {
                        // Media does not go through signaling: keep publishing and
                        // measuring until the end; what no longer arrives is loss.
                        signaling_up = false;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let msg: ServerMessage = serde_json::from_slice(&text)
                    .map_err(|e| format!("bad server message: {e}"))?;
                match msg {
                    ServerMessage::Joined { .. } => {
                        media.joined_at = Some(Instant::now());
                        plan.joined_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        report.joined_after = Some(started.elapsed());
                        if let Some(sdp) = offer_sdp.take() {
                            send(&mut framed, &ClientMessage::Offer { sdp }).await?;
                        }
                    }
                    ServerMessage::Answer { sdp } => {
                        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
                        if let Some(p) = pending.take() {
                            media.peers[peer].sdp_api().accept_answer(p, answer).map_err(|e| e.to_string())?;
                        }
                    }
                    ServerMessage::ServerOffer { sdp, .. } => {
                        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
                        let answer = media.peers[peer].sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
                        send(&mut framed, &ClientMessage::Answer { sdp: answer.to_sdp_string() }).await?;
                    }
                    ServerMessage::Error { code, message } => {
                        return Err(format!("server error {}: {message}", code.as_str()));
                    }
                    _ => {}
                }
            }
            received = media.recv() => {
                if let Ok((n, source)) = received {
                    media.on_datagram(n, source, plan, report)?;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => media.on_wake(plan, report)?,
        }
    }
    if !signaling_up {
        return Err("signaling connection closed".into());
    }
    // Leave politely and wait for `left`, so the node frees the peer at once instead of
    // keeping it for a resume (which would weigh on the next run).
    let _ = send(&mut framed, &ClientMessage::Leave).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(frame)) = framed.next().await {
            if let ws::Frame::Text(t) = frame {
                if let Ok(ServerMessage::Left) = serde_json::from_slice(&t) {
                    break;
                }
            }
        }
    })
    .await;
    let _ = framed.close().await;
    Ok(())
}

/// The payload type of an RTP datagram (SRTP leaves the header in the clear); `None` for
/// STUN, DTLS and RTCP.
fn rtp_payload_type(datagram: &[u8]) -> Option<u8> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 {
        return None;
    }
    let pt = datagram[1] & 0x7f;
    // RTCP packet types 192..=223 read as 64..=95 here; RFC 5761 keeps RTP out of that range.
    (!(64..=95).contains(&pt)).then_some(pt)
}

fn on_event(
    e: Event,
    report: &mut ParticipantReport,
    joined_at: Option<Instant>,
    connected: &mut bool,
) {
    match e {
        Event::Connected => {
            report.connected = true;
            *connected = true;
        }
        Event::MediaData(data) => {
            let Some(stamp) = payload::decode(&data.data) else {
                return;
            };
            if report.first_media_after_join.is_none() {
                report.first_media_after_join = joined_at.map(|j| j.elapsed());
            }
            let latency_ns = payload::now_ns().saturating_sub(stamp.sent_ns);
            let _ = report.latency_us.record((latency_ns / 1000).max(1));
            let packets = (**data.seq_range.end()).wrapping_sub(**data.seq_range.start()) + 1;
            record_flow(&mut report.flows, stamp, packets);
            let now = Instant::now();
            if now >= report.window.0 && now < report.window.1 {
                report.window_packets += packets;
            }
        }
        _ => {}
    }
}

fn send_frame(
    rtc: &mut Rtc,
    s: &mut Sender,
    m: &MediaPlan,
    publisher: u32,
    buf: &mut Vec<u8>,
    report: &mut ParticipantReport,
) -> Result<(), String> {
    let Some(writer) = rtc.writer(s.mid) else {
        return Ok(());
    };
    let codec = if s.kind == 0 { Codec::Opus } else { Codec::Vp8 };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return Ok(());
    };
    let (len, keyframe, time) = if s.kind == 0 {
        (
            m.audio_bytes,
            false,
            MediaTime::new(s.seq * 960, Frequency::FORTY_EIGHT_KHZ),
        )
    } else {
        let frame_bytes = (m.video_kbps as usize * 1000 / 8) / m.video_fps.max(1) as usize;
        let key = s.seq.is_multiple_of(m.keyframe_interval.max(1) as u64)
            || std::mem::take(&mut s.keyframe_wanted);
        let len = if key { frame_bytes * 3 } else { frame_bytes };
        (
            len,
            key,
            MediaTime::new(
                s.seq * 90_000 / m.video_fps.max(1) as u64,
                Frequency::NINETY_KHZ,
            ),
        )
    };
    payload::encode(
        Stamp {
            publisher,
            kind: s.kind,
            seq: s.seq,
            sent_ns: payload::now_ns(),
        },
        keyframe,
        len,
        buf,
    );
    writer
        .write(pt, Instant::now(), time, buf.clone())
        .map_err(|e| format!("write: {e}"))?;
    report.sent_frames[s.kind as usize] += 1;
    report.last_seq[s.kind as usize] = Some(s.seq);
    s.seq += 1;
    Ok(())
}

/// A UDP socket with a 1 MiB receive buffer: on a loaded 2-core box the generator may fall
/// behind for a moment, and a dropped packet there would be blamed on the SFU.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(1024 * 1024);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn send(framed: &mut WsFramed, msg: &ClientMessage) -> Result<(), String> {
    let json = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    framed
        .send(ws::Message::Text(json.into()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_publisher_has_its_own_clock() {
        let clocks: Vec<Clock> = (0..20).map(Clock::for_publisher).collect();
        // The same index gives the same clock (runs and targets compare).
        assert_eq!(clocks[7], Clock::for_publisher(7));
        for c in &clocks {
            assert!(c.phase.iter().all(|p| (0.0..1.0).contains(p)), "{c:?}");
            assert!(c.skew_ppm.abs() <= 100.0, "{c:?}");
        }
        // Phases spread over the interval, not bunched on one tick: every tenth of the
        // video interval holds at least one of the 20 publishers' first frames.
        let mut tenths = [0; 10];
        for c in &clocks {
            tenths[(c.phase[1] * 10.0) as usize] += 1;
        }
        assert!(tenths.iter().filter(|&&n| n > 0).count() >= 7, "{tenths:?}");
        let nominal = Duration::from_millis(20);
        assert_ne!(clocks[0].interval(nominal), clocks[1].interval(nominal));
    }

    #[test]
    fn a_sender_keeps_its_grid_and_skips_missed_ticks() {
        let epoch = Instant::now();
        let clock = Clock {
            phase: [0.25, 0.0],
            skew_ppm: 0.0,
        };
        let s = Sender::new(
            0,
            Mid::from("0"),
            0,
            Duration::from_millis(20),
            clock,
            epoch,
        );
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(s.origin, epoch + ms(5));
        assert_eq!(s.tick_after(epoch), epoch + ms(5));
        assert_eq!(s.tick_after(epoch + ms(5)), epoch + ms(25));
        // Woken late (a stall of 3 intervals): the next tick on the grid, no burst.
        assert_eq!(s.tick_after(epoch + ms(71)), epoch + ms(85));
    }
}
