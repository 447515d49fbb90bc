//! Presence events out of the signaling node: to Redis (a Stream per community plus a pub/sub
//! channel) and to an optional HTTP webhook. Format and delivery rules: `docs/presence.md`.
//!
//! One [`PresenceSink`] actor per signaling node. Rooms hand it events with
//! `do_send(Publish(event))`, which never waits. The sink puts each event in two bounded
//! queues (Redis, webhook), each drained in order by one task of its own, so neither a slow
//! Redis nor a slow webhook holds up rooms or each other. A full queue drops its oldest event.
//!
//! - Redis: `XADD {p}presence:{community} MAXLEN ~ <n> * event <json>` and
//!   `PUBLISH {p}presence-live:{community} <json>` in one pipeline (several queued events go in
//!   one pipeline). A failure is logged and counted and the events are dropped: the Stream is
//!   a record of what Redis accepted, not a queue that waits for Redis.
//! - Webhook: `POST <url>` with the JSON, signed with HMAC-SHA256 when a secret is set, retried
//!   with exponential backoff on connection errors, timeouts, 5xx and 429; one event at a time,
//!   so the receiver sees them in order (at least once).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::web::Bytes;
use conclave_common::presence::{channel, stream_key, PresenceEvent, STREAM_FIELD};
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError};
use tokio::sync::Notify;

/// Webhook header carrying `sha256=<hex HMAC-SHA256 of the body>` (only with a secret).
pub const SIGNATURE_HEADER: &str = "X-Conclave-Signature";
/// Webhook header identifying one event across its retries (`<node>/<sequence>`), for
/// receivers that drop duplicates.
pub const DELIVERY_HEADER: &str = "X-Conclave-Delivery";
/// Webhook header with the attempt number (1 for the first try).
pub const ATTEMPT_HEADER: &str = "X-Conclave-Attempt";

/// Events waiting for Redis at most (the oldest is dropped beyond).
const REDIS_QUEUE_LEN: usize = 10_000;
/// Events written to Redis in one pipeline at most.
const REDIS_BATCH: usize = 100;
/// A Redis pipeline that takes longer fails (its events are dropped).
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two webhook attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes of a webhook response read (and ignored) so the connection can be reused.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;

/// Where and how to POST presence events.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL receiving each event as a JSON body.
    pub url: String,
    /// Key of the `X-Conclave-Signature` HMAC; no header without it.
    pub secret: Option<String>,
    /// Tries per event, the first one included (at least 1).
    pub max_attempts: u32,
    /// Events waiting for the webhook at most; beyond, the oldest is dropped.
    pub queue_len: usize,
    /// Wait before the second attempt; it doubles after each failed attempt (up to 30 s).
    pub initial_backoff: Duration,
    /// Time allowed for one attempt (connect, send, response head).
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    /// No URL; 5 attempts (waits 0.5 s, 1 s, 2 s, 4 s), queue of 10 000, 10 s per attempt.
    fn default() -> Self {
        WebhookSettings {
            url: String::new(),
            secret: None,
            max_attempts: 5,
            queue_len: 10_000,
            initial_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Settings of [`PresenceSink::new`].
pub struct PresenceSettings {
    /// Redis connection and key prefix (e.g. `conclave:`); `None` = no Redis.
    pub redis: Option<(ConnectionManager, String)>,
    /// `None` = no webhook.
    pub webhook: Option<WebhookSettings>,
    /// Approximate length kept of each community's Stream (`MAXLEN ~`); 0 = no trimming.
    pub stream_max_len: usize,
}

/// Hand one event to the sink. Never waits; the sink stamps nothing (fill `at_ms`, `node`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub PresenceEvent);

/// Ask for the sink's counters.
#[derive(Message)]
#[rtype(result = "PresenceStats")]
pub struct Stats;

/// Counters since the sink started (each event counts once per outcome and target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Events received by `Publish`.
    pub published: u64,
    /// Events written to Redis (XADD + PUBLISH).
    pub redis_written: u64,
    /// Events dropped because Redis failed or did not answer in time.
    pub redis_failed: u64,
    /// Events the webhook acknowledged with a 2xx.
    pub webhook_delivered: u64,
    /// Webhook attempts that failed and were retried.
    pub webhook_retries: u64,
    /// Events given up on: a 4xx other than 429, or every attempt failed.
    pub webhook_failed: u64,
    /// Events dropped because a queue (Redis or webhook) was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    redis_written: AtomicU64,
    redis_failed: AtomicU64,
    webhook_delivered: AtomicU64,
    webhook_retries: AtomicU64,
    webhook_failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    /// Count `n` events with this outcome, here and in `conclave_signaling_presence_events_total`.
    fn add(counter: &AtomicU64, outcome: &str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        crate::metrics::PRESENCE
            .with_label_values(&[outcome])
            .inc_by(n);
    }

    fn snapshot(&self) -> PresenceStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PresenceStats {
            published: get(&self.published),
            redis_written: get(&self.redis_written),
            redis_failed: get(&self.redis_failed),
            webhook_delivered: get(&self.webhook_delivered),
            webhook_retries: get(&self.webhook_retries),
            webhook_failed: get(&self.webhook_failed),
            dropped: get(&self.dropped),
        }
    }
}

/// A bounded FIFO with one consumer; pushing to a full queue drops the oldest item.
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    cap: usize,
    ready: Notify,
    closed: AtomicBool,
}

impl<T> Queue<T> {
    fn new(cap: usize) -> Self {
        Queue {
            items: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Append `item`; returns true when the oldest item was dropped to make room.
    fn push(&self, item: T) -> bool {
        let dropped = {
            let mut items = self.items.lock().unwrap();
            let dropped = items.len() >= self.cap && items.pop_front().is_some();
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Up to `max` items, waiting for the first; `None` once closed and empty.
    async fn pop(&self, max: usize) -> Option<Vec<T>> {
        loop {
            {
                let mut items = self.items.lock().unwrap();
                if !items.is_empty() {
                    let n = items.len().min(max);
                    return Some(items.drain(..n).collect());
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so no wake-up is lost.
            self.ready.notified().await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

/// An event on its way to Redis.
struct RedisItem {
    community: String,
    json: Arc<str>,
}

/// An event on its way to the webhook.
struct WebhookItem {
    body: Bytes,
    delivery: String,
}

/// Publishes presence events to Redis and a webhook (one per signaling node).
pub struct PresenceSink {
    settings: Option<PresenceSettings>,
    redis_queue: Option<Arc<Queue<RedisItem>>>,
    webhook_queue: Option<Arc<Queue<WebhookItem>>>,
    counters: Arc<Counters>,
    sequence: u64,
}

impl PresenceSink {
    /// A sink for `settings`; `.start()` it inside an actix system (it spawns its delivery
    /// tasks on the current arbiter). With neither Redis nor a webhook it only counts.
    pub fn new(settings: PresenceSettings) -> Self {
        PresenceSink {
            settings: Some(settings),
            redis_queue: None,
            webhook_queue: None,
            counters: Arc::default(),
            sequence: 0,
        }
    }

    fn enqueue<T>(&self, queue: &Queue<T>, item: T, target: &str) {
        if queue.push(item) {
            Counters::add(&self.counters.dropped, "dropped", 1);
            tracing::warn!(target = target, "presence queue full: oldest event dropped");
        }
    }
}

impl Actor for PresenceSink {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        let Some(settings) = self.settings.take() else {
            return;
        };
        if let Some((conn, prefix)) = settings.redis {
            let queue = Arc::new(Queue::new(REDIS_QUEUE_LEN));
            self.redis_queue = Some(queue.clone());
            actix::spawn(run_redis(
                queue,
                conn,
                prefix,
                settings.stream_max_len,
                self.counters.clone(),
            ));
        }
        if let Some(webhook) = settings.webhook {
            if let Err(e) = webhook.url.parse::<awc::http::Uri>() {
                tracing::error!(url = %webhook.url, error = %e, "presence webhook URL is invalid");
            }
            let queue = Arc::new(Queue::new(webhook.queue_len));
            self.webhook_queue = Some(queue.clone());
            actix::spawn(run_webhook(queue, webhook, self.counters.clone()));
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // The tasks deliver what is queued, then end.
        if let Some(q) = &self.redis_queue {
            q.close();
        }
        if let Some(q) = &self.webhook_queue {
            q.close();
        }
    }
}

impl Handler<Publish> for PresenceSink {
    type Result = ();

    fn handle(&mut self, Publish(event): Publish, _ctx: &mut Context<Self>) {
        Counters::add(&self.counters.published, "published", 1);
        if self.redis_queue.is_none() && self.webhook_queue.is_none() {
            return;
        }
        let json = match serde_json::to_string(&event) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, "presence event not serializable");
                return;
            }
        };
        self.sequence += 1;
        if let Some(queue) = &self.webhook_queue {
            let item = WebhookItem {
                body: Bytes::from(json.clone()),
                delivery: format!("{}/{}", event.node, self.sequence),
            };
            self.enqueue(queue, item, "webhook");
        }
        if let Some(queue) = &self.redis_queue {
            let item = RedisItem {
                community: event.community,
                json: json.into(),
            };
            self.enqueue(queue, item, "redis");
        }
    }
}

impl Handler<Stats> for PresenceSink {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.snapshot())
    }
}

/// Drain the Redis queue: each batch is one pipeline of XADD + PUBLISH per event, in order.
async fn run_redis(
    queue: Arc<Queue<RedisItem>>,
    mut conn: ConnectionManager,
    prefix: String,
    max_len: usize,
    counters: Arc<Counters>,
) {
    while let Some(batch) = queue.pop(REDIS_BATCH).await {
        let mut pipe = redis::pipe();
        for item in &batch {
            let xadd = pipe.cmd("XADD").arg(stream_key(&prefix, &item.community));
            if max_len > 0 {
                xadd.arg("MAXLEN").arg("~").arg(max_len);
            }
            xadd.arg("*").arg(STREAM_FIELD).arg(&*item.json).ignore();
            pipe.cmd("PUBLISH")
                .arg(channel(&prefix, &item.community))
                .arg(&*item.json)
                .ignore();
        }
        let n = batch.len() as u64;
        let outcome = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        match outcome {
            Ok(Ok(())) => Counters::add(&counters.redis_written, "redis_written", n),
            Ok(Err(e)) => {
                Counters::add(&counters.redis_failed, "redis_failed", n);
                tracing::warn!(error = %e, events = n, "presence events not written to Redis (dropped)");
            }
            Err(_) => {
                Counters::add(&counters.redis_failed, "redis_failed", n);
                tracing::warn!(
                    events = n,
                    "Redis did not answer in time: presence events dropped"
                );
            }
        }
    }
}

/// How one webhook attempt ended.
enum Attempt {
    Delivered,
    /// Worth another try (connection error, timeout, 5xx, 429).
    Retry(String),
    /// Not worth another try (other 4xx, 3xx, invalid URL).
    GiveUp(String),
}

/// Drain the webhook queue one event at a time (in order), each with its retries.
async fn run_webhook(
    queue: Arc<Queue<WebhookItem>>,
    settings: WebhookSettings,
    counters: Arc<Counters>,
) {
    let client = awc::Client::builder()
        .timeout(settings.timeout)
        .disable_redirects()
        .finish();
    let key = settings
        .secret
        .as_ref()
        .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes()));
    let attempts = settings.max_attempts.max(1);
    while let Some(batch) = queue.pop(1).await {
        for item in batch {
            let signature = key.as_ref().map(|k| signature(k, &item.body));
            let mut backoff = settings.initial_backoff;
            for attempt in 1..=attempts {
                let outcome =
                    post(&client, &settings.url, &item, signature.as_deref(), attempt).await;
                match outcome {
                    Attempt::Delivered => {
                        Counters::add(&counters.webhook_delivered, "webhook_delivered", 1);
                        break;
                    }
                    Attempt::Retry(why) if attempt < attempts => {
                        Counters::add(&counters.webhook_retries, "webhook_retries", 1);
                        tracing::debug!(delivery = %item.delivery, attempt, %why, "presence webhook: retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Attempt::Retry(why) | Attempt::GiveUp(why) => {
                        Counters::add(&counters.webhook_failed, "webhook_failed", 1);
                        tracing::warn!(delivery = %item.delivery, attempt, %why, "presence webhook: event not delivered");
                        break;
                    }
                }
            }
        }
    }
}

async fn post(
    client: &awc::Client,
    url: &str,
    item: &WebhookItem,
    signature: Option<&str>,
    attempt: u32,
) -> Attempt {
    let mut request = client
        .post(url)
        .insert_header((awc::http::header::CONTENT_TYPE, "application/json"))
        .insert_header((DELIVERY_HEADER, item.delivery.as_str()))
        .insert_header((ATTEMPT_HEADER, attempt.to_string()));
    if let Some(sig) = signature {
        request = request.insert_header((SIGNATURE_HEADER, sig));
    }
    match request.send_body(item.body.clone()).await {
        Ok(mut response) => {
            let status = response.status();
            // Read the (ignored) body so the connection can serve the next event.
            let _ = response.body().limit(RESPONSE_BODY_LIMIT).await;
            if status.is_success() {
                Attempt::Delivered
            } else if status.is_server_error() || status.as_u16() == 429 {
                Attempt::Retry(format!("status {status}"))
            } else {
                Attempt::GiveUp(format!("status {status}"))
            }
        }
        Err(e @ (awc::error::SendRequestError::Url(_) | awc::error::SendRequestError::Http(_))) => {
            Attempt::GiveUp(e.to_string())
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Events of `community`'s Stream after `after_id` (exclusive; `"0"` = from the start), at
/// most `count`, oldest first, with their Stream ids. A consumer keeps the last id it handled
/// and passes it back to catch up after a restart. Needs Redis 6.2+ (exclusive `XRANGE`).
pub async fn read_stream(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    community: &str,
    after_id: &str,
    count: usize,
) -> Result<Vec<(String, PresenceEvent)>, RedisError> {
    let start = match after_id {
        "" | "0" | "0-0" | "-" => "-".to_string(),
        id => format!("({id}"),
    };
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream_key(prefix, community))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    entries
        .into_iter()
        .map(|(id, fields)| {
            let json = fields
                .chunks(2)
                .find(|kv| kv.len() == 2 && kv[0] == STREAM_FIELD)
                .map(|kv| kv[1].as_str())
                .ok_or_else(|| {
                    RedisError::from((
                        ErrorKind::TypeError,
                        "presence entry without an event field",
                        id.clone(),
                    ))
                })?;
            let event = serde_json::from_str(json).map_err(|e| {
                RedisError::from((
                    ErrorKind::TypeError,
                    "presence entry is not an event",
                    format!("{id}: {e}"),
                ))
            })?;
            Ok((id, event))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let q = Queue::new(3);
        assert!(!q.push(1));
        assert!(!q.push(2));
        assert!(!q.push(3));
        assert!(q.push(4));
        assert_eq!(q.pop(10).await, Some(vec![2, 3, 4]));
        q.push(5);
        q.close();
        assert_eq!(q.pop(10).await, Some(vec![5]));
        assert_eq!(q.pop(10).await, None);
    }
}
