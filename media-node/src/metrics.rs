//! The media node's Prometheus metrics (documented in `docs/metrics.md`). Counters and gauges
//! are plain atomics, cheap enough for the data path, and each gauge is kept current where
//! its state changes (rooms in `node.rs`, participants and tracks in `sfu/room.rs`): a scrape
//! asks no actor, and the signaling node's embedded media node exports them on its own
//! `/metrics` (same process, same registry). They count every media node of the process.

use std::sync::LazyLock;

use conclave_common::metrics::{latency_buckets, register};
use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

macro_rules! counter {
    ($name:ident, $metric:literal, $help:literal) => {
        pub static $name: LazyLock<IntCounter> =
            LazyLock::new(|| register(IntCounter::new($metric, $help)));
    };
}
macro_rules! gauge {
    ($name:ident, $metric:literal, $help:literal) => {
        pub static $name: LazyLock<IntGauge> =
            LazyLock::new(|| register(IntGauge::new($metric, $help)));
    };
}

gauge!(
    PARTICIPANTS,
    "conclave_media_participants",
    "Peers (participants) on this node"
);
gauge!(
    ROOMS,
    "conclave_media_rooms",
    "Rooms with an SFU on this node"
);
gauge!(
    TRACKS,
    "conclave_media_tracks",
    "Tracks published to this node"
);
gauge!(
    CAPACITY,
    "conclave_media_capacity",
    "Most participants this node takes (placement skips it when full)"
);
gauge!(
    LOAD_FPPS,
    "conclave_media_load_fpps",
    "Load: RTP packets forwarded per second over the last seconds, plus the modelled cost of participants too new to measure (docs/cluster.md, \"Sizing media nodes\")"
);
gauge!(
    LOAD_CAPACITY_FPPS,
    "conclave_media_load_capacity_fpps",
    "Load this node takes, in forwarded packets per second (placement skips it when full)"
);
gauge!(
    QUEUE_DEPTH,
    "conclave_media_room_queue_depth",
    "Datagram batches waiting in room actors' mailboxes (all rooms)"
);
counter!(
    NACKS,
    "conclave_media_nacks_total",
    "NACKs received from subscribers"
);
counter!(
    PLIS,
    "conclave_media_plis_total",
    "PLI keyframe requests received from subscribers"
);
counter!(
    FIRS,
    "conclave_media_firs_total",
    "FIR keyframe requests received from subscribers"
);
counter!(
    ICE_FAILURES,
    "conclave_media_ice_failures_total",
    "Peers dropped because ICE lost them for longer than the disconnect grace"
);
counter!(
    DTLS_FAILURES,
    "conclave_media_dtls_failures_total",
    "Peers dropped because their connection failed (DTLS/SRTP error or a broken peer)"
);
counter!(
    UDP_ERRORS,
    "conclave_media_udp_errors_total",
    "Errors receiving or sending on the media socket"
);
counter!(
    LAYER_SWITCHES,
    "conclave_media_layer_switches_total",
    "Times a subscriber's video started or changed simulcast layer (at a keyframe of the new one)"
);
counter!(
    DYNACAST_UPDATES,
    "conclave_media_dynacast_updates_total",
    "Times a publisher was told which simulcast layers of a track to send (layers nobody takes pause)"
);
counter!(
    KEYFRAME_REQUESTS_SENT,
    "conclave_media_keyframe_requests_sent_total",
    "Keyframe requests (PLI/FIR) the node sent to publishers, per layer at most every 500 ms"
);
counter!(
    LINK_COMMANDS_REFUSED,
    "conclave_media_link_commands_refused_total",
    "Link commands refused: about a peer another link owns, or adoptPeer with a wrong key"
);

/// A counter or gauge per room thread (label `thread`, `0`..).
fn per_thread_counter(name: &str, help: &str) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), &["thread"]))
}

pub static UDP_RX_PACKETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_thread_counter(
        "conclave_media_udp_received_packets_total",
        "Datagrams received on the media sockets, by room thread",
    )
});
pub static UDP_RX_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_thread_counter(
        "conclave_media_udp_received_bytes_total",
        "Bytes received on the media sockets, by room thread",
    )
});
pub static UDP_TX_PACKETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_thread_counter(
        "conclave_media_udp_sent_packets_total",
        "Datagrams sent on the media sockets, by room thread",
    )
});
pub static UDP_TX_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_thread_counter(
        "conclave_media_udp_sent_bytes_total",
        "Bytes sent on the media sockets, by room thread",
    )
});
pub static FORWARDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    per_thread_counter(
        "conclave_media_forwarded_packets_total",
        "RTP media packets forwarded to a subscriber (one per subscriber; retransmissions and RTCP not included), by room thread",
    )
});
pub static THREAD_LOAD_FPPS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "conclave_media_thread_load_fpps",
            "Load of each room thread (forwarded packets per second, measured plus new participants' modelled cost)",
        ),
        &["thread"],
    ))
});
pub static THREAD_ROOMS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new("conclave_media_thread_rooms", "Rooms on each room thread"),
        &["thread"],
    ))
});
pub static THREAD_CPU_SECONDS: LazyLock<CounterVec> = LazyLock::new(|| {
    register(CounterVec::new(
        Opts::new(
            "conclave_media_thread_cpu_seconds_total",
            "CPU time each room thread has used, user + system (Linux only; updated every second)",
        ),
        &["thread"],
    ))
});

/// One room thread's data-path counters: its own children of the per-thread metrics, so
/// threads never write to a shared counter per packet.
#[derive(Clone)]
pub struct ThreadMetrics {
    pub rx_packets: IntCounter,
    pub rx_bytes: IntCounter,
    pub tx_packets: IntCounter,
    pub tx_bytes: IntCounter,
    pub forwarded: IntCounter,
    pub load_fpps: IntGauge,
    pub rooms: IntGauge,
    pub cpu_seconds: Counter,
}

impl ThreadMetrics {
    /// The counters of room thread `index` (exported from now on, at 0).
    pub fn new(index: usize) -> ThreadMetrics {
        let label = index.to_string();
        let l = [label.as_str()];
        ThreadMetrics {
            rx_packets: UDP_RX_PACKETS.with_label_values(&l),
            rx_bytes: UDP_RX_BYTES.with_label_values(&l),
            tx_packets: UDP_TX_PACKETS.with_label_values(&l),
            tx_bytes: UDP_TX_BYTES.with_label_values(&l),
            forwarded: FORWARDED.with_label_values(&l),
            load_fpps: THREAD_LOAD_FPPS.with_label_values(&l),
            rooms: THREAD_ROOMS.with_label_values(&l),
            cpu_seconds: THREAD_CPU_SECONDS.with_label_values(&l),
        }
    }
}

/// `conclave_media_link_upgrades_refused_total{reason}`.
pub static LINK_UPGRADES_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "conclave_media_link_upgrades_refused_total",
            "Internal link upgrades refused, by reason: missing, malformed, bad_signature, stale, replayed",
        ),
        &["reason"],
    ))
});
pub const LINK_REFUSAL_REASONS: [&str; 5] =
    ["missing", "malformed", "bad_signature", "stale", "replayed"];

/// `conclave_media_dropped_packets_total{reason}`.
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "conclave_media_dropped_packets_total",
            "Packets dropped, by reason: unknown_source (no peer of ours), unknown_ufrag (STUN naming no peer of ours), bad_integrity (STUN not signed with the named peer's ICE password), address_taken (verified STUN from another peer's address), over_budget (a peer over its ingress budget), unproven_path (to an address the peer has not proven its own), rejected (the peer's connection refused it), no_route (no send stream for a subscriber's track), send_failed (socket error)",
        ),
        &["reason"],
    ))
});
pub const DROP_REASONS: [&str; 9] = [
    "unknown_source",
    "unknown_ufrag",
    "bad_integrity",
    "address_taken",
    "over_budget",
    "unproven_path",
    "rejected",
    "no_route",
    "send_failed",
];

/// `conclave_media_path_checks_total{result}`: consent checks sent to addresses a peer's
/// media would go to, and the ones answered (the address proven the peer's).
pub static PATH_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "conclave_media_path_checks_total",
            "Consent checks towards addresses a peer's media would go to: sent, and proven (answered by the peer)",
        ),
        &["result"],
    ))
});

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    ))
}

pub static BWE_ESTIMATE: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "conclave_media_bwe_estimate_bps",
        "Subscribers' bandwidth estimates (bits per second), one sample per update (--bwe)",
        vec![100e3, 250e3, 500e3, 1e6, 2e6, 4e6, 8e6, 16e6],
    )
});
pub static RTT: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "conclave_media_rtt_seconds",
        "Round-trip time to participants, from RTCP (one sample per peer every 2 s)",
        latency_buckets(),
    )
});
pub static LOSS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "conclave_media_loss_ratio",
        "Fraction of our packets lost on the way to participants, from their RTCP receiver reports",
        vec![0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
    )
});
pub static JITTER: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "conclave_media_jitter_seconds",
        "Interarrival jitter of published tracks as we receive them",
        latency_buckets(),
    )
});
pub static FORWARD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "conclave_media_forward_seconds",
        "Room actor time per forwarded packet (one sample per datagram batch: handling time / packets forwarded)",
        vec![0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001],
    )
});

/// Register every media metric (so each is exported from the start, at 0).
pub fn init() {
    conclave_common::metrics::init("media");
    for m in [
        &PARTICIPANTS,
        &ROOMS,
        &TRACKS,
        &CAPACITY,
        &LOAD_FPPS,
        &LOAD_CAPACITY_FPPS,
        &QUEUE_DEPTH,
    ] {
        LazyLock::force(m);
    }
    for c in [
        &NACKS,
        &PLIS,
        &FIRS,
        &ICE_FAILURES,
        &DTLS_FAILURES,
        &UDP_ERRORS,
        &LINK_COMMANDS_REFUSED,
        &LAYER_SWITCHES,
        &KEYFRAME_REQUESTS_SENT,
        &DYNACAST_UPDATES,
    ] {
        LazyLock::force(c);
    }
    for reason in DROP_REASONS {
        DROPPED.with_label_values(&[reason]);
    }
    for reason in LINK_REFUSAL_REASONS {
        LINK_UPGRADES_REFUSED.with_label_values(&[reason]);
    }
    for result in ["sent", "proven"] {
        PATH_CHECKS.with_label_values(&[result]);
    }
    for h in [&RTT, &LOSS, &JITTER, &FORWARD_SECONDS, &BWE_ESTIMATE] {
        LazyLock::force(h);
    }
}
