//! `cluster-sim`: a big cluster's Redis traffic (simulated media nodes heartbeating, simulated
//! signaling instances holding and re-asserting rooms) through the real store code against
//! one real Redis, with placement latency, Redis-side time per command and Redis CPU per
//! operation (`conclave_bench::cluster_sim`). Results and commands: docs/cluster.md,
//! "Redis at scale".

use std::time::Duration;

use clap::Parser;
use conclave_bench::cluster_sim::{self, SimConfig};

/// Simulate a cluster's Redis traffic and measure placement.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The Redis to load (use a Redis nobody else uses: the run writes under `--prefix`, and
    /// its figures are Redis-wide).
    #[arg(
        long,
        env = "CLUSTER_SIM_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Prefix of every key written.
    #[arg(long, default_value = "cluster-sim:")]
    prefix: String,
    /// Delete every key under the prefix first (earlier runs' nodes and rooms).
    #[arg(long)]
    clean: bool,
    /// Simulated media nodes (1..=100000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    nodes: u32,
    /// Simulated signaling instances holding the rooms (1..=1000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    signaling: u32,
    /// Rooms held through the run: placed, joined and re-asserted (0..=1000000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    rooms: u32,
    /// Members of each held room (1..=50).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=50))]
    members: u32,
    /// New rooms placed and timed (0..=1000000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    placements: u32,
    /// Most timed placements per second (0: back to back).
    #[arg(long, default_value_t = 0)]
    place_rate: u32,
    /// Shortest measured phase, seconds.
    #[arg(long, default_value_t = 5)]
    min_secs: u64,
    /// Longest measured phase, seconds (1..=3600).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_secs: u64,
    /// Media node heartbeat period, ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    heartbeat_ms: u64,
    /// Re-assertion period of the signaling instances, ms.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    assert_ms: u64,
    /// Place with the script before the sorted sets (reads every node at each placement).
    #[arg(long)]
    legacy: bool,
    /// Requests in flight while setting up rooms and heartbeating (1..=10000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
}

fn main() {
    let cli = Cli::parse();
    let cfg = SimConfig {
        redis_url: cli.redis_url,
        prefix: cli.prefix,
        nodes: cli.nodes as usize,
        signaling: cli.signaling as usize,
        rooms: cli.rooms as usize,
        members: cli.members as usize,
        placements: cli.placements as usize,
        place_rate: cli.place_rate,
        min_measure: Duration::from_secs(cli.min_secs),
        max_measure: Duration::from_secs(cli.max_secs.max(cli.min_secs)),
        heartbeat_ms: cli.heartbeat_ms,
        assert_ms: cli.assert_ms,
        legacy: cli.legacy,
        concurrency: cli.concurrency as usize,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(async {
        if cli.clean {
            cluster_sim::clean(&cfg).await?;
        }
        cluster_sim::run(&cfg).await
    });
    match report {
        Ok(report) => print!("{}", report.render()),
        Err(e) => {
            eprintln!("cluster-sim: {e}");
            std::process::exit(1);
        }
    }
}
