//! Prometheus metrics shared by both node kinds: the process's registry (the `prometheus`
//! default registry, which also holds the `process_*` collector), build info, the draining
//! flag, and the text encoding served at `/metrics`. Each node kind defines its own metrics
//! next to this (`signaling-node/src/metrics.rs`, `media-node/src/metrics.rs`); every metric
//! is documented in `docs/metrics.md`.

use std::sync::LazyLock;

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, TextEncoder};

/// `conclave_draining`: 1 while the node drains (SIGTERM), else 0.
pub static DRAINING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "conclave_draining",
        "1 while this node drains after SIGTERM (placement skips it, it is not ready), else 0",
    ))
});

static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "conclave_build_info",
            "Always 1; labels say which component and version runs",
        ),
        &["component", "version"],
    ))
});

/// Register `metric` in the process's registry (idempotent per name: a second registration
/// of the same name is a programming error and panics at start, not later).
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    metric: Result<M, prometheus::Error>,
) -> M {
    // Invariant: metric names and help texts are constants of this code base.
    let metric = metric.expect("valid metric definition");
    prometheus::default_registry()
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// Announce `component` ("signaling" or "media") in `conclave_build_info`.
pub fn init(component: &str) {
    BUILD_INFO
        .with_label_values(&[component, env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&DRAINING);
}

/// Every registered metric in the Prometheus text format.
pub fn encode() -> String {
    let mut out = Vec::new();
    let families = prometheus::gather();
    // Invariant: encoding into a Vec cannot fail for well-formed families.
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding");
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets for durations from 100 µs to 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
}
