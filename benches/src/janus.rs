//! Janus VideoRoom (Janus 1.1, `janus.plugin.videoroom`) as the server under test, so the
//! same simulated participants and workload measure it beside Conclave in one sitting.
//!
//! Only signaling is Janus's own; the media half ([`crate::sim::Media`]: socket, paced
//! senders, stamps, latency, loss) is the one every target shares. Signaling goes over
//! Janus's HTTP REST transport (`janus.transport.http`): create a session, attach two
//! VideoRoom handles, join the room as a publisher on one (and publish with a str0m offer),
//! and subscribe on the other to every other publisher — one subscriber peer connection with
//! a stream per publisher track (Janus 1.1 multistream), grown with `subscribe` requests as
//! publishers appear. Asynchronous events come from a long poll (`GET /janus/<session>`).
//!
//! Janus offers its subscriber streams; we answer with `start`. We keep at most one
//! subscription renegotiation in flight and batch the publishers that appear meanwhile.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use tokio::sync::mpsc;

use crate::sim::{Media, ParticipantPlan, ParticipantReport};

/// Longest a long poll may hang: Janus answers an idle one with a keepalive after 30 s.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(40);
/// Events taken per long poll (Janus then answers with a JSON array).
const LONG_POLL_MAX_EVENTS: u32 = 20;
/// Longest a plain request (create, attach, message) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body we read (a subscriber offer for 19 publishers is ≈ 60 KB).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// An SDP Janus sent with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    /// `offer` or `answer`.
    pub kind: String,
    pub sdp: String,
}

/// The parts of one Janus event a participant acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JanusEvent {
    /// The top-level kind: `event`, `webrtcup`, `media`, `hangup`, `keepalive`, `error`, ...
    pub janus: String,
    /// The handle the event is about (absent on session-level events).
    pub sender: Option<u64>,
    /// VideoRoom's own kind: `joined`, `event`, `attached`, `updated`, `updating`, ...
    pub videoroom: Option<String>,
    /// With `joined`: our publisher's feed id.
    pub id: Option<u64>,
    /// Feeds that are publishing (with `joined`: those already in the room).
    pub publishers: Vec<u64>,
    /// A feed that stopped publishing or left.
    pub gone: Option<u64>,
    pub jsep: Option<Jsep>,
    /// A failure, from Janus (`error`) or from the plugin (`error_code`), as `code: reason`.
    pub error: Option<String>,
    /// With `hangup`: why.
    pub reason: Option<String>,
}

/// Parse a long poll's answer: one event, or an array of them (`maxev` > 1).
pub fn parse_events(body: &str) -> Result<Vec<JanusEvent>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("bad janus json: {e}"))?;
    match v {
        Value::Array(items) => Ok(items.iter().map(parse_event).collect()),
        other => Ok(vec![parse_event(&other)]),
    }
}

/// The parts of one Janus message we act on (anything else is left at its default).
pub fn parse_event(v: &Value) -> JanusEvent {
    let data = &v["plugindata"]["data"];
    let feeds = |list: &Value| -> Vec<u64> {
        list.as_array()
            .map(|l| l.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    let error = if let Some(code) = data["error_code"].as_i64() {
        Some(format!("{code}: {}", data["error"].as_str().unwrap_or("")))
    } else if v["janus"] == "error" {
        Some(format!(
            "{}: {}",
            v["error"]["code"].as_i64().unwrap_or(0),
            v["error"]["reason"].as_str().unwrap_or("")
        ))
    } else {
        None
    };
    JanusEvent {
        janus: v["janus"].as_str().unwrap_or("").to_string(),
        sender: v["sender"].as_u64(),
        videoroom: data["videoroom"].as_str().map(str::to_string),
        id: data["id"]
            .as_u64()
            .filter(|_| data["videoroom"] == "joined"),
        publishers: feeds(&data["publishers"]),
        gone: data["unpublished"]
            .as_u64()
            .or_else(|| data["leaving"].as_u64()),
        jsep: v["jsep"]["sdp"].as_str().map(|sdp| Jsep {
            kind: v["jsep"]["type"].as_str().unwrap_or("").to_string(),
            sdp: sdp.to_string(),
        }),
        error,
        reason: v["reason"].as_str().map(str::to_string),
    }
}

/// The id in a synchronous `success` answer (`create`, `attach`), or the error.
pub fn parse_success_id(body: &str) -> Result<u64, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("bad janus json: {e}"))?;
    if let Some(e) = parse_event(&v).error {
        return Err(format!("janus error {e}"));
    }
    v["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("no id in janus answer: {body}"))
}

/// A VideoRoom `create` request for a room of `publishers` publishers, set up like the
/// Conclave run: Opus and VP8, no bitrate cap, no periodic keyframe requests.
pub fn create_room_body(room: u64, publishers: u32) -> Value {
    json!({
        "request": "create",
        "room": room,
        "description": format!("conclave-load {room}"),
        "publishers": publishers,
        "audiocodec": "opus",
        "videocodec": "vp8",
        "bitrate": 0,
        "fir_freq": 0,
        "notify_joining": false,
    })
}

/// Janus's HTTP REST API at one base URL (`http://host:8088/janus`).
#[derive(Clone)]
struct Api {
    client: awc::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            client: awc::Client::builder().timeout(LONG_POLL_TIMEOUT).finish(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let fut = async {
            let mut resp = self
                .client
                .post(&url)
                .send_json(body)
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            let bytes = resp
                .body()
                .limit(MAX_BODY_BYTES)
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| format!("POST {url} timed out"))?
    }

    async fn create_session(&self) -> Result<u64, String> {
        let body = self
            .post("", &json!({"janus": "create", "transaction": tx_id()}))
            .await?;
        parse_success_id(&body)
    }

    async fn attach(&self, session: u64) -> Result<u64, String> {
        let body = self
            .post(
                &format!("/{session}"),
                &json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": tx_id()}),
            )
            .await?;
        parse_success_id(&body)
    }

    /// A message to the plugin; the answer is `ack` (its result comes as an event) or, for
    /// synchronous requests, the result itself.
    async fn message(
        &self,
        session: u64,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<JanusEvent, String> {
        let mut msg = json!({"janus": "message", "transaction": tx_id(), "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let answer = self.post(&format!("/{session}/{handle}"), &msg).await?;
        let v: Value = serde_json::from_str(&answer).map_err(|e| format!("bad janus json: {e}"))?;
        let ev = parse_event(&v);
        match &ev.error {
            Some(e) => Err(format!("janus error {e}")),
            None => Ok(ev),
        }
    }

    async fn destroy(&self, session: u64) {
        let _ = self
            .post(
                &format!("/{session}"),
                &json!({"janus": "destroy", "transaction": tx_id()}),
            )
            .await;
    }

    /// Long-poll the session's events into `tx` until `end`, or until the receiver is gone.
    async fn poll_events(self, session: u64, end: Instant, tx: mpsc::UnboundedSender<JanusEvent>) {
        let url = format!("{}/{session}?maxev={LONG_POLL_MAX_EVENTS}", self.base);
        while Instant::now() < end && !tx.is_closed() {
            let body = async {
                let mut resp = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let bytes = resp
                    .body()
                    .limit(MAX_BODY_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
            };
            match tokio::time::timeout_at(end.into(), body).await {
                Ok(Ok(text)) => {
                    let Ok(events) = parse_events(&text) else {
                        continue;
                    };
                    for ev in events {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => return,
            }
        }
    }
}

fn tx_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Create the VideoRoom rooms of a run (before any participant joins). A room that exists
/// already is fine.
pub async fn create_rooms(base: &str, rooms: &[u64], publishers: u32) -> Result<(), String> {
    let api = Api::new(base);
    let session = api.create_session().await?;
    let handle = api.attach(session).await?;
    for &room in rooms {
        match api
            .message(session, handle, create_room_body(room, publishers), None)
            .await
        {
            Ok(ev) if ev.videoroom.as_deref() == Some("created") => {}
            Ok(ev) => return Err(format!("room {room} not created: {ev:?}")),
            // 427: the room exists (a previous run on the same Janus).
            Err(e) if e.contains("427") => {}
            Err(e) => return Err(e),
        }
    }
    api.destroy(session).await;
    Ok(())
}

/// `fut`, or an error once `end` passes.
async fn within<T>(
    end: Instant,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout_at(end.into(), fut)
        .await
        .map_err(|_| format!("janus {what} timed out"))?
}

/// The subscription side: which feeds we receive, and the one renegotiation in flight.
#[derive(Default)]
struct Subscriptions {
    /// Our own feed (never subscribed to).
    me: Option<u64>,
    /// Feeds subscribed to or queued.
    known: HashSet<u64>,
    /// Feeds to add with the next `join` or `subscribe`.
    queued: Vec<u64>,
    /// A `join`/`subscribe` was sent and its offer not yet answered.
    in_flight: bool,
    /// The subscriber handle has joined (later feeds are added with `subscribe`).
    joined: bool,
}

impl Subscriptions {
    fn add(&mut self, feeds: &[u64]) {
        for &f in feeds {
            if Some(f) != self.me && self.known.insert(f) {
                self.queued.push(f);
            }
        }
    }
}

/// One participant signaling with Janus: a publisher handle and peer connection (if the plan
/// publishes) and a subscriber handle and peer connection for everyone else's streams.
pub(crate) async fn run(
    plan: &ParticipantPlan,
    url: &str,
    room: u64,
    report: &mut ParticipantReport,
) -> Result<(), String> {
    let end = plan.stop_at + plan.drain;
    let started = Instant::now();
    let api = Api::new(url);
    let session = within(end, "create", api.create_session()).await?;
    let pub_handle = within(end, "attach", api.attach(session)).await?;
    let sub_handle = within(end, "attach", api.attach(session)).await?;
    let (tx, mut events) = mpsc::unbounded_channel();
    actix_rt::spawn(api.clone().poll_events(session, end, tx));

    let result = drive(
        plan,
        &api,
        session,
        pub_handle,
        sub_handle,
        room,
        &mut events,
        started,
        report,
    )
    .await;
    // Hang up everything at once: the next run starts clean.
    let _ = tokio::time::timeout(Duration::from_secs(2), api.destroy(session)).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &ParticipantPlan,
    api: &Api,
    session: u64,
    pub_handle: u64,
    sub_handle: u64,
    room: u64,
    events: &mut mpsc::UnboundedReceiver<JanusEvent>,
    started: Instant,
    report: &mut ParticipantReport,
) -> Result<(), String> {
    let end = plan.stop_at + plan.drain;
    let mut media = Media::bind(plan)?;
    let pub_peer = match plan.publish {
        Some(_) => Some(media.add_peer()?),
        None => None,
    };
    let sub_peer = media.add_peer()?;
    let mut pending: Option<SdpPendingOffer> = None;
    let mut subs = Subscriptions::default();
    let mut signaling_up = true;
    let mut poll_ended_early = false;

    api.message(
        session,
        pub_handle,
        json!({"request": "join", "ptype": "publisher", "room": room, "display": format!("sim-{}", plan.index)}),
        None,
    )
    .await?;

    loop {
        media.drain(report)?;
        if Instant::now() >= end {
            break;
        }
        let wake = media.wake_at(plan, end);
        tokio::select! {
            ev = events.recv(), if signaling_up => {
                let Some(ev) = ev else {
                    // The long poll ended (it stops at `end`, maybe a moment before this
                    // loop does). Media goes on either way; what stops arriving is loss.
                    signaling_up = false;
                    poll_ended_early = Instant::now() < plan.stop_at;
                    continue;
                };
                if ev.janus == "hangup" && Instant::now() < plan.stop_at {
                    return Err(format!("janus hung up handle {:?}: {}", ev.sender, ev.reason.unwrap_or_default()));
                }
                if ev.sender == Some(pub_handle) {
                    if let Some(e) = &ev.error {
                        return Err(format!("janus publisher error {e}"));
                    }
                    if ev.videoroom.as_deref() == Some("joined") {
                        media.joined_at = Some(Instant::now());
                        plan.joined_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        report.joined_after = Some(started.elapsed());
                        subs.me = ev.id;
                        if let Some(peer) = pub_peer {
                            let (offer, p) = media.publish_offer(peer, plan)?;
                            pending = Some(p);
                            api.message(
                                session,
                                pub_handle,
                                json!({"request": "publish"}),
                                Some(json!({"type": "offer", "sdp": offer.to_sdp_string(), "trickle": false})),
                            )
                            .await?;
                        }
                    }
                    if let (Some(j), Some(peer)) = (&ev.jsep, pub_peer) {
                        if j.kind == "answer" {
                            let answer = SdpAnswer::from_sdp_string(&j.sdp).map_err(|e| e.to_string())?;
                            if let Some(p) = pending.take() {
                                media.peers[peer].sdp_api().accept_answer(p, answer).map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    subs.add(&ev.publishers);
                } else if ev.sender == Some(sub_handle) {
                    if let Some(j) = ev.jsep.as_ref().filter(|j| j.kind == "offer") {
                        let offer = SdpOffer::from_sdp_string(&j.sdp).map_err(|e| e.to_string())?;
                        let answer = media.peers[sub_peer].sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
                        api.message(
                            session,
                            sub_handle,
                            json!({"request": "start"}),
                            Some(json!({"type": "answer", "sdp": answer.to_sdp_string(), "trickle": false})),
                        )
                        .await?;
                        subs.in_flight = false;
                    } else if ev.error.is_some()
                        || (ev.videoroom.as_deref() == Some("updated") && ev.jsep.is_none())
                    {
                        // Nothing to renegotiate (or a feed went away meanwhile): go on.
                        subs.in_flight = false;
                    }
                }
                if !subs.in_flight && !subs.queued.is_empty() {
                    let streams: Vec<Value> = subs.queued.drain(..).map(|f| json!({"feed": f})).collect();
                    let body = if subs.joined {
                        json!({"request": "subscribe", "streams": streams})
                    } else {
                        json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams})
                    };
                    api.message(session, sub_handle, body, None).await?;
                    subs.joined = true;
                    subs.in_flight = true;
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
    if poll_ended_early {
        return Err("janus long poll ended before the end of publishing".into());
    }
    Ok(())
}
