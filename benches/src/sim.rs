//! One simulated participant: the real signaling protocol over WebSocket, a str0m `Rtc` as
//! the WebRTC client over its own UDP socket, synthetic audio and video out, every other
//! publisher's media in, measured.

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

/// Everything one participant needs to run.
#[derive(Debug, Clone)]
pub struct ParticipantPlan {
    pub index: u32,
    /// `ws://host:port/ws?room=...`
    pub ws_url: String,
    pub token: String,
    /// `None`: listen only.
    pub publish: Option<MediaPlan>,
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

struct Sender {
    mid: Mid,
    kind: u8,
    seq: u64,
    next_at: Instant,
    interval: Duration,
}

/// Run one participant until `stop_at + drain`. Never hangs: every wait is bounded by that.
pub async fn run(plan: ParticipantPlan) -> ParticipantReport {
    let mut report = ParticipantReport::new(plan.index, plan.window);
    if let Err(e) = run_inner(&plan, &mut report).await {
        report.error = Some(e);
    }
    report
}

async fn run_inner(plan: &ParticipantPlan, report: &mut ParticipantReport) -> Result<(), String> {
    let end = plan.stop_at + plan.drain;
    let started = Instant::now();
    let (_, mut framed) = tokio::time::timeout_at(
        end.into(),
        awc::Client::new()
            .ws(plan.ws_url.as_str())
            .max_frame_size(4 * 1024 * 1024)
            .connect(),
    )
    .await
    .map_err(|_| "websocket connect timed out".to_string())?
    .map_err(|e| format!("websocket connect failed: {e}"))?;

    send(
        &mut framed,
        &ClientMessage::Join {
            token: plan.token.clone(),
            name: Some(format!("sim-{}", plan.index)),
            audio: plan.publish.as_ref().is_some_and(|m| m.audio),
            video: plan.publish.as_ref().is_some_and(|m| m.video),
        },
    )
    .await?;

    let socket =
        bind_udp(SocketAddr::new(plan.bind_ip, 0)).map_err(|e| format!("udp bind: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let now = Instant::now();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);

    // Our one offer: send-only audio and video (a listener offers nothing but still needs
    // the transport, so it offers a recv-only audio line that will never carry media).
    let mut api = rtc.sdp_api();
    let mut senders = Vec::new();
    match &plan.publish {
        Some(m) => {
            if m.audio {
                let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                senders.push(Sender {
                    mid,
                    kind: 0,
                    seq: 0,
                    next_at: now,
                    interval: Duration::from_millis(20),
                });
            }
            if m.video {
                let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                senders.push(Sender {
                    mid,
                    kind: 1,
                    seq: 0,
                    next_at: now,
                    interval: Duration::from_secs(1) / m.video_fps.max(1),
                });
            }
        }
        None => {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
    }
    let (offer, pending) = api.apply().ok_or("no offer to make")?;
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let mut offer_sdp = Some(offer.to_sdp_string());

    let mut joined_at: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    let mut payload_buf = Vec::with_capacity(4096);
    let mut next_timeout;
    let mut media_enabled = false;
    let mut signaling_up = true;
    let mut video_seen: u64 = 0;

    loop {
        // Drain str0m until it wants time.
        loop {
            match rtc.poll_output().map_err(|e| format!("rtc: {e}"))? {
                Output::Timeout(t) => {
                    next_timeout = t;
                    break;
                }
                Output::Transmit(t) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => on_event(e, report, joined_at, &mut media_enabled),
            }
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let publishing = media_enabled && now < plan.stop_at;
        let next_send = senders
            .iter()
            .map(|s| s.next_at)
            .min()
            .filter(|_| publishing)
            .unwrap_or(end);
        let wake = next_timeout.min(next_send).min(end);

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
                        joined_at = Some(Instant::now());
                        plan.joined_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        report.joined_after = Some(started.elapsed());
                        if let Some(sdp) = offer_sdp.take() {
                            send(&mut framed, &ClientMessage::Offer { sdp }).await?;
                        }
                    }
                    ServerMessage::Answer { sdp } => {
                        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
                        if let Some(p) = pending.take() {
                            rtc.sdp_api().accept_answer(p, answer).map_err(|e| e.to_string())?;
                        }
                    }
                    ServerMessage::ServerOffer { sdp, .. } => {
                        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
                        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
                        send(&mut framed, &ClientMessage::Answer { sdp: answer.to_sdp_string() }).await?;
                    }
                    ServerMessage::Error { code, message } => {
                        return Err(format!("server error {}: {message}", code.as_str()));
                    }
                    _ => {}
                }
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = received {
                    // The video payload types as negotiated: the codec's and its RTX's.
                    let video = rtc.codec_config().find(|p| p.spec().codec == Codec::Vp8).map(|p| (p.pt(), p.resend()));
                    match (rtp_payload_type(&buf[..n]), video) {
                        (Some(pt), Some((_, Some(rtx)))) if pt == *rtx => report.rtx_received += 1,
                        (Some(pt), Some((vp8, _))) if pt == *vp8 => {
                            video_seen += 1;
                            // Not at the very end: only a later packet reveals the gap.
                            let may_drop = Instant::now() + NO_DROP_BEFORE_STOP < plan.stop_at;
                            if may_drop && plan.drop_video_every.is_some_and(|every| video_seen.is_multiple_of(every)) {
                                report.video_dropped += 1;
                                continue;
                            }
                        }
                        _ => {}
                    }
                    if let Ok(r) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                        rtc.handle_input(Input::Receive(Instant::now(), r)).map_err(|e| e.to_string())?;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if publishing {
                    if let Some(m) = &plan.publish {
                        for s in senders.iter_mut().filter(|s| s.next_at <= now) {
                            send_frame(&mut rtc, s, m, plan.index, &mut payload_buf, report)?;
                            s.next_at += s.interval;
                            // Never try to catch up a backlog in a burst.
                            if s.next_at < now { s.next_at = now + s.interval; }
                        }
                    }
                }
                rtc.handle_input(Input::Timeout(now)).map_err(|e| e.to_string())?;
            }
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
    media_enabled: &mut bool,
) {
    match e {
        Event::Connected => {
            report.connected = true;
            *media_enabled = true;
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
        let key = s.seq.is_multiple_of(m.keyframe_interval.max(1) as u64);
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
