//! Time of one room placement (the Lua script round trip) against a Redis server:
//! `cargo run --release -p conclave-common --example placement_latency -- redis://127.0.0.1:6379/`
//! Writes keys under the prefix `placement-bench:` only.

use std::time::Instant;

use conclave_common::cluster::{ClusterStore, NodeInfo, NodeLoad};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let store = ClusterStore::connect(&url, "placement-bench:")
        .await
        .expect("redis reachable");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    for i in 0..3 {
        let node = NodeInfo {
            id: format!("m{i}"),
            link_url: format!("ws://m{i}/internal/link"),
            udp_addrs: vec!["127.0.0.1:40000".into()],
            capacity: 1_000_000,
            load_capacity: 1_000_000_000,
        };
        store
            .heartbeat(&node, &NodeLoad::default(), false, now())
            .await
            .unwrap();
    }
    let mut samples = Vec::new();
    for i in 0..2000 {
        let t = Instant::now();
        store.place_room(&format!("r{i}"), now()).await.unwrap();
        samples.push(t.elapsed().as_micros() as u64);
    }
    samples.sort_unstable();
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "placements: {}  p50 {} µs  p99 {} µs  max {} µs",
        samples.len(),
        q(0.5),
        q(0.99),
        samples[samples.len() - 1]
    );
}
