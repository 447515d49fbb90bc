//! The cluster simulator stays working: a few seconds with a handful of nodes and rooms
//! against a real Redis (started here), with both placement scripts.

use std::time::Duration;

use conclave_bench::cluster_sim::{run, SimConfig};
use conclave_common::test_redis::TestRedis;

fn config(url: &str, legacy: bool) -> SimConfig {
    SimConfig {
        redis_url: url.to_string(),
        prefix: if legacy { "legacy:" } else { "sets:" }.into(),
        nodes: 5,
        signaling: 2,
        rooms: 40,
        members: 2,
        placements: 200,
        place_rate: 100,
        min_measure: Duration::from_secs(2),
        max_measure: Duration::from_secs(10),
        heartbeat_ms: 500,
        assert_ms: 500,
        legacy,
        concurrency: 8,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_simulator_places_heartbeats_and_reasserts_through_the_store() {
    let redis = TestRedis::start();
    for legacy in [false, true] {
        let report = run(&config(&redis.url, legacy)).await.unwrap();
        let text = report.render();
        assert_eq!(report.placements, 200, "{text}");
        assert_eq!((report.no_capacity, report.failed), (0, 0), "{text}");
        assert!(report.place_p50_us > 0 && report.place_p99_us >= report.place_p50_us);
        // Heartbeats every 500 ms for 2 s or more: 5 nodes, at least 3 rounds.
        assert!(report.heartbeats >= 15, "{text}");
        // The 40 rooms re-asserted at least twice.
        assert!(report.asserted_rooms >= 80, "{text}");
        assert!(report.evalsha_usec_per_call > 0.0, "{text}");
        assert!(report.redis_ops_per_sec > 0.0, "{text}");
    }
}
