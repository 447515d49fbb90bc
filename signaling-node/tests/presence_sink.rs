//! The presence sink against a real Redis server (started on a free 127.0.0.1 port, killed by
//! its PID) and a local webhook server (actix-web on 127.0.0.1:0).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use conclave_common::presence::{PresenceEvent, PresenceKind};
use conclave_common::test_redis::TestRedis;
use conclave_signaling_node::presence::{
    read_stream, PresenceSettings, PresenceSink, PresenceStats, Publish, Stats, WebhookSettings,
};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const PREFIX: &str = "t:";

fn start_redis() -> TestRedis {
    TestRedis::start()
}

fn start_redis_on(port: u16) -> TestRedis {
    TestRedis::start_on(port)
}

/// A connection that fails fast while Redis is away (as `ClusterStore::connect` makes).
async fn connect(url: &str) -> ConnectionManager {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_factor(100)
        .set_max_delay(500)
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2));
    let client = conclave_common::cluster::RedisSettings::from(url)
        .client()
        .unwrap();
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

fn event(community: &str, i: u64) -> PresenceEvent {
    let kinds = [
        PresenceKind::Joined,
        PresenceKind::State,
        PresenceKind::Left,
        PresenceKind::Disconnected,
    ];
    let kind = kinds[(i % 4) as usize];
    PresenceEvent {
        kind,
        community: community.into(),
        room: "general".into(),
        participant_id: format!("p{i}"),
        user_id: format!("u{i}"),
        name: format!("User {i}"),
        audio: i & 1 == 0,
        video: i % 3 == 1,
        deafened: i % 5 == 2,
        reason: match kind {
            PresenceKind::Left => Some("left".into()),
            PresenceKind::Disconnected => Some("timeout".into()),
            _ => None,
        },
        at_ms: 1_700_000_000_000 + i,
        node: "sig.test".into(),
    }
}

fn webhook(url: String, secret: Option<&str>, max_attempts: u32) -> WebhookSettings {
    WebhookSettings {
        url,
        secret: secret.map(str::to_string),
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        ..WebhookSettings::default()
    }
}

fn start_sink(
    redis: Option<ConnectionManager>,
    webhook: Option<WebhookSettings>,
    stream_max_len: usize,
) -> Addr<PresenceSink> {
    PresenceSink::new(PresenceSettings {
        redis: redis.map(|c| (c, PREFIX.to_string())),
        webhook,
        stream_max_len,
    })
    .start()
}

async fn stats(sink: &Addr<PresenceSink>) -> PresenceStats {
    tokio::time::timeout(Duration::from_secs(1), sink.send(Stats))
        .await
        .expect("the sink answers at once")
        .unwrap()
}

/// Wait until the sink's counters satisfy `ok` (panics after `within`).
async fn wait_stats(
    sink: &Addr<PresenceSink>,
    within: Duration,
    what: &str,
    ok: impl Fn(&PresenceStats) -> bool,
) -> PresenceStats {
    let deadline = Instant::now() + within;
    loop {
        let s = stats(sink).await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {what}; {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn whole_stream(conn: &mut ConnectionManager, community: &str) -> Vec<PresenceEvent> {
    read_stream(conn, PREFIX, community, "0", 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

#[actix_rt::test]
async fn stream_and_channel_hold_every_event_in_order_per_community() {
    let redis = start_redis();
    let mut conn = connect(&redis.url).await;
    let mut pubsub = conclave_common::cluster::RedisSettings::from(&redis.url)
        .client()
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(&["t:presence-live:c1", "t:presence-live:c2"])
        .await
        .unwrap();
    let sink = start_sink(Some(conn.clone()), None, 1000);

    let c1: Vec<_> = (0..20).map(|i| event("c1", i)).collect();
    let c2: Vec<_> = (100..103).map(|i| event("c2", i)).collect();
    for (i, e) in c1.iter().enumerate() {
        sink.do_send(Publish(e.clone()));
        if i % 7 == 3 {
            sink.do_send(Publish(c2[i / 7].clone()));
        }
    }
    let s = wait_stats(&sink, Duration::from_secs(5), "23 written", |s| {
        s.redis_written == 23
    })
    .await;
    assert_eq!((s.published, s.redis_failed, s.dropped), (23, 0, 0));

    assert_eq!(whole_stream(&mut conn, "c1").await, c1);
    assert_eq!(whole_stream(&mut conn, "c2").await, c2);
    // The Stream is under its own key, not the channel's name.
    let kind: String = redis::cmd("TYPE")
        .arg("t:presence:c1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "stream");

    // The live subscriber saw all 23, each community in order.
    let mut live = pubsub.on_message();
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    for _ in 0..23 {
        let msg = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("a live message")
            .unwrap();
        let e: PresenceEvent = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        match msg.get_channel_name() {
            "t:presence-live:c1" => got1.push(e),
            "t:presence-live:c2" => got2.push(e),
            other => panic!("unexpected channel {other}"),
        }
    }
    assert_eq!(got1, c1);
    assert_eq!(got2, c2);
}

#[actix_rt::test]
async fn a_consumer_catches_up_from_its_last_id() {
    let redis = start_redis();
    let mut conn = connect(&redis.url).await;
    let sink = start_sink(Some(conn.clone()), None, 1000);
    let all: Vec<_> = (0..17).map(|i| event("c1", i)).collect();

    for e in &all[..10] {
        sink.do_send(Publish(e.clone()));
    }
    wait_stats(&sink, Duration::from_secs(5), "10 written", |s| {
        s.redis_written == 10
    })
    .await;
    let first = read_stream(&mut conn, PREFIX, "c1", "0", 8).await.unwrap();
    let got: Vec<_> = first.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(got, all[..8]);
    let last_id = first.last().unwrap().0.clone();

    // The consumer is "down" while more events come.
    for e in &all[10..] {
        sink.do_send(Publish(e.clone()));
    }
    wait_stats(&sink, Duration::from_secs(5), "17 written", |s| {
        s.redis_written == 17
    })
    .await;
    let rest = read_stream(&mut conn, PREFIX, "c1", &last_id, 100)
        .await
        .unwrap();
    let got: Vec<_> = rest.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        got,
        all[8..],
        "exactly the events after the last id, in order"
    );
    let end = &rest.last().unwrap().0;
    assert!(read_stream(&mut conn, PREFIX, "c1", end, 100)
        .await
        .unwrap()
        .is_empty());
}

#[actix_rt::test]
async fn the_stream_is_trimmed_to_about_max_len() {
    let redis = start_redis();
    let mut conn = connect(&redis.url).await;
    let sink = start_sink(Some(conn.clone()), None, 10);
    for i in 0..400 {
        sink.do_send(Publish(event("c1", i)));
    }
    wait_stats(&sink, Duration::from_secs(5), "400 written", |s| {
        s.redis_written == 400
    })
    .await;
    let len: usize = redis::cmd("XLEN")
        .arg("t:presence:c1")
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries by default).
    assert!((10..=200).contains(&len), "XLEN {len}");
    let kept = whole_stream(&mut conn, "c1").await;
    assert_eq!(kept.last().unwrap(), &event("c1", 399));
}

/// What the test webhook saw.
#[derive(Clone, Debug)]
struct Hit {
    body: Vec<u8>,
    content_type: Option<String>,
    signature: Option<String>,
    delivery: String,
    attempt: String,
    at: Instant,
}

#[derive(Default)]
struct Hook {
    /// Statuses to answer, in order; 200 once empty.
    script: VecDeque<u16>,
    hits: Vec<Hit>,
}

type HookState = Arc<Mutex<Hook>>;

async fn hook_handler(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HookState>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut hook = state.lock().unwrap();
    hook.hits.push(Hit {
        body: body.to_vec(),
        content_type: header("content-type"),
        signature: header("x-conclave-signature"),
        delivery: header("x-conclave-delivery").unwrap_or_default(),
        attempt: header("x-conclave-attempt").unwrap_or_default(),
        at: Instant::now(),
    });
    let status = hook.script.pop_front().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// A webhook answering `script` then 200; returns its URL and what it saw.
fn start_hook(script: &[u16]) -> (String, HookState) {
    let state: HookState = Arc::new(Mutex::new(Hook {
        script: script.iter().copied().collect(),
        hits: Vec::new(),
    }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/presence", listener.local_addr().unwrap());
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(hook_handler))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    (url, state)
}

fn hits(state: &HookState) -> Vec<Hit> {
    state.lock().unwrap().hits.clone()
}

fn body_event(hit: &Hit) -> PresenceEvent {
    serde_json::from_slice(&hit.body).unwrap()
}

#[actix_rt::test]
async fn webhook_retries_5xx_with_backoff_then_delivers_once_in_order_signed() {
    let (url, state) = start_hook(&[503, 503]);
    let secret = "s3cret";
    let sink = start_sink(None, Some(webhook(url, Some(secret), 5)), 1000);
    let events: Vec<_> = (0..5).map(|i| event("c1", i)).collect();
    for e in &events {
        sink.do_send(Publish(e.clone()));
    }
    let s = wait_stats(&sink, Duration::from_secs(10), "5 delivered", |s| {
        s.webhook_delivered == 5
    })
    .await;
    assert_eq!((s.webhook_retries, s.webhook_failed, s.dropped), (2, 0, 0));

    let hits = hits(&state);
    assert_eq!(hits.len(), 7, "2 failed attempts + 5 deliveries: {hits:#?}");
    // The first event three times (same delivery id, attempts 1..3), with growing waits.
    for (k, hit) in hits[..3].iter().enumerate() {
        assert_eq!(body_event(hit), events[0]);
        assert_eq!(hit.delivery, hits[0].delivery);
        assert_eq!(hit.attempt, (k + 1).to_string());
    }
    assert!(hits[1].at - hits[0].at >= Duration::from_millis(100));
    assert!(hits[2].at - hits[1].at >= Duration::from_millis(200));
    // Each event delivered exactly once, in order: the 200s are hits 2..7.
    let delivered: Vec<_> = hits[2..].iter().map(body_event).collect();
    assert_eq!(delivered, events);
    let deliveries: std::collections::HashSet<_> = hits[2..].iter().map(|h| &h.delivery).collect();
    assert_eq!(deliveries.len(), 5);

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    for hit in &hits {
        assert_eq!(hit.content_type.as_deref(), Some("application/json"));
        let sig = hit.signature.as_deref().expect("signed");
        let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, &hit.body, &tag).expect("a correct HMAC-SHA256");
    }
}

#[actix_rt::test]
async fn webhook_does_not_retry_a_4xx_and_gives_up_after_max_attempts() {
    // 400 for the first event: no retry. 429 is retried.
    let (url, state) = start_hook(&[400, 429]);
    let sink = start_sink(None, Some(webhook(url, None, 5)), 1000);
    sink.do_send(Publish(event("c1", 0)));
    sink.do_send(Publish(event("c1", 1)));
    let s = wait_stats(
        &sink,
        Duration::from_secs(5),
        "1 failed, 1 delivered",
        |s| s.webhook_failed == 1 && s.webhook_delivered == 1,
    )
    .await;
    assert_eq!(s.webhook_retries, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = hits(&state);
    let bodies: Vec<_> = hits.iter().map(body_event).collect();
    assert_eq!(bodies, [event("c1", 0), event("c1", 1), event("c1", 1)]);
    assert!(
        hits.iter().all(|h| h.signature.is_none()),
        "no secret, no signature"
    );

    // Always 503 with 3 attempts: exactly 3 requests, then counted failed.
    let (url, state) = start_hook(&[503; 10]);
    let sink = start_sink(None, Some(webhook(url, None, 3)), 1000);
    sink.do_send(Publish(event("c1", 7)));
    let s = wait_stats(&sink, Duration::from_secs(5), "1 failed", |s| {
        s.webhook_failed == 1
    })
    .await;
    assert_eq!((s.webhook_delivered, s.webhook_retries), (0, 2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state.lock().unwrap().hits.len(), 3);
}

#[actix_rt::test]
async fn redis_down_counts_failures_without_blocking_and_the_webhook_still_gets_events() {
    let redis = start_redis();
    let port = redis.port;
    let conn = connect(&redis.url).await;
    let (url, state) = start_hook(&[]);
    let sink = start_sink(Some(conn), Some(webhook(url, None, 5)), 1000);
    sink.do_send(Publish(event("c1", 0)));
    wait_stats(&sink, Duration::from_secs(5), "1 written", |s| {
        s.redis_written == 1 && s.webhook_delivered == 1
    })
    .await;

    drop(redis); // killed
    let started = Instant::now();
    for i in 1..=5 {
        sink.do_send(Publish(event("c1", i)));
    }
    let s = wait_stats(&sink, Duration::from_secs(10), "5 Redis failures", |s| {
        s.redis_failed == 5 && s.webhook_delivered == 6
    })
    .await;
    assert_eq!(s.redis_written, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let bodies: Vec<_> = hits(&state).iter().map(body_event).collect();
    assert_eq!(bodies, (0..=5).map(|i| event("c1", i)).collect::<Vec<_>>());

    // Redis back (empty: no persistence): new events are written, the failed ones are gone.
    let _redis = start_redis_on(port);
    let mut probe = connect(&format!("redis://127.0.0.1:{port}/")).await;
    let mut i = 10;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = stats(&sink).await;
        sink.do_send(Publish(event("c1", i)));
        let after = wait_stats(&sink, Duration::from_secs(5), "an outcome", |s| {
            s.redis_written + s.redis_failed > before.redis_written + before.redis_failed
        })
        .await;
        if after.redis_written > before.redis_written {
            break;
        }
        assert!(Instant::now() < deadline, "Redis writes did not resume");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(whole_stream(&mut probe, "c1").await, [event("c1", i)]);
}
