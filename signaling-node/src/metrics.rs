//! The signaling node's Prometheus metrics (documented in `docs/metrics.md`). No per-room or
//! per-user labels: label values come from small fixed sets (message types, error codes,
//! outcomes, Redis operations).

use std::sync::LazyLock;

use conclave_common::metrics::{latency_buckets, register};
use conclave_common::protocol::ErrorCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help))
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), &[label]))
}

pub static SESSIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("conclave_signaling_sessions", "Open browser WebSockets"));
pub static ROOMS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "conclave_signaling_rooms",
        "Rooms with at least one member on this node",
    )
});
pub static PARTICIPANTS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "conclave_signaling_participants",
        "Members whose session is on this node (waiting to resume included)",
    )
});
pub static JOINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_joins_total",
        "Joins by outcome: ok, or the error code sent",
        "outcome",
    )
});
pub static RESUMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_resumes_total",
        "Resumes by outcome: ok, or the error code sent",
        "outcome",
    )
});
pub static LEAVES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_leaves_total",
        "Members gone from this node's rooms, by reason (left, disconnected, timeout)",
        "reason",
    )
});
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_errors_total",
        "error messages sent to browsers, by code",
        "code",
    )
});
pub static WS_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_ws_messages_received_total",
        "Browser messages by type (invalid: not a protocol message)",
        "type",
    )
});
pub static WS_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_ws_messages_sent_total",
        "Messages sent to browsers by type",
        "type",
    )
});
pub static SESSIONS_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_sessions_closed_total",
        "WebSockets the server closed for a limit: rate_limited, outbound_overflow, join_deadline",
        "reason",
    )
});
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_rate_limited_total",
        "Sessions closed over a message budget, by message class",
        "class",
    )
});
pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_connections_refused_total",
        "WebSocket upgrades refused before a session started, by reason (per_ip)",
        "reason",
    )
});
pub static ROOM_REDIS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_room_redis_dropped_total",
        "Redis operations a room's full queue did not take, by operation",
        "operation",
    )
});
pub static JOIN_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(Histogram::with_opts(
        HistogramOpts::new(
            "conclave_signaling_join_duration_seconds",
            "From a join (or resume) received to joined sent",
        )
        .buckets(latency_buckets()),
    ))
});
pub static PLACEMENT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(Histogram::with_opts(
        HistogramOpts::new(
            "conclave_signaling_placement_duration_seconds",
            "Finding a room's media node in Redis (placing it if new)",
        )
        .buckets(latency_buckets()),
    ))
});
pub static REDIS_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        HistogramOpts::new(
            "conclave_signaling_redis_operation_duration_seconds",
            "Redis operations by kind",
        )
        .buckets(latency_buckets()),
        &["operation"],
    ))
});
pub static REDIS_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_redis_errors_total",
        "Failed or timed-out Redis operations by kind",
        "operation",
    )
});
pub static REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "conclave_signaling_redis_up",
        "1 while this node's last Redis heartbeat succeeded (cluster mode only)",
    )
});
pub static PRESENCE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "conclave_signaling_presence_events_total",
        "Presence events by outcome: published (handed to the sink), redis_written, redis_failed, webhook_delivered, webhook_failed, dropped",
        "outcome",
    )
});
pub static FAILOVERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "conclave_signaling_media_failovers_total",
        "Rooms of this node moved to another media node after theirs died",
    ))
});

/// Redis operations, as labels.
pub const REDIS_OPERATIONS: [&str; 11] = [
    "place",
    "reserve",
    "join",
    "leave",
    "update",
    "claim",
    "assert",
    "assert_batch",
    "publish",
    "heartbeat",
    "sweep",
];

/// Time one Redis operation, counting its failure.
pub async fn timed<T, E>(
    operation: &'static str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let timer = REDIS_SECONDS.with_label_values(&[operation]).start_timer();
    let result = op.await;
    timer.observe_duration();
    if result.is_err() {
        REDIS_ERRORS.with_label_values(&[operation]).inc();
    }
    result
}

/// Register every signaling metric at 0 so each is exported from the start.
pub fn init(cluster: bool) {
    conclave_common::metrics::init("signaling");
    for g in [&SESSIONS, &ROOMS, &PARTICIPANTS] {
        LazyLock::force(g);
    }
    JOINS.with_label_values(&["ok"]);
    RESUMES.with_label_values(&["ok"]);
    for code in [
        ErrorCode::RoomFull,
        ErrorCode::NoCapacity,
        ErrorCode::Unavailable,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
    ] {
        JOINS.with_label_values(&[code.as_str()]);
        ERRORS.with_label_values(&[code.as_str()]);
    }
    RESUMES.with_label_values(&[ErrorCode::ResumeFailed.as_str()]);
    for reason in ["left", "disconnected", "timeout"] {
        LEAVES.with_label_values(&[reason]);
    }
    for t in [
        "join",
        "offer",
        "answer",
        "iceCandidate",
        "leave",
        "heartbeat",
        "invalid",
    ] {
        WS_RECEIVED.with_label_values(&[t]);
    }
    for t in ["joined", "answer", "serverOffer", "error", "heartbeat"] {
        WS_SENT.with_label_values(&[t]);
    }
    LazyLock::force(&JOIN_SECONDS);
    LazyLock::force(&FAILOVERS);
    for reason in ["rate_limited", "outbound_overflow", "join_deadline"] {
        SESSIONS_CLOSED.with_label_values(&[reason]);
    }
    for class in crate::limits::MessageClass::ALL {
        RATE_LIMITED.with_label_values(&[class.as_str()]);
    }
    CONNECTIONS_REFUSED.with_label_values(&["per_ip"]);
    if cluster {
        LazyLock::force(&PLACEMENT_SECONDS);
        LazyLock::force(&REDIS_UP);
        for op in REDIS_OPERATIONS {
            REDIS_SECONDS.with_label_values(&[op]);
            REDIS_ERRORS.with_label_values(&[op]);
        }
        for op in [
            "publish", "update", "reserve", "join", "claim", "leave", "assert",
        ] {
            ROOM_REDIS_DROPPED.with_label_values(&[op]);
        }
    }
    for outcome in [
        "published",
        "redis_written",
        "redis_failed",
        "webhook_delivered",
        "webhook_failed",
        "dropped",
    ] {
        PRESENCE.with_label_values(&[outcome]);
    }
}
