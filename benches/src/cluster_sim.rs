//! The cluster simulator (`cluster-sim`): a big cluster's Redis traffic, made by the store
//! code the real nodes run (`conclave_common::cluster::ClusterStore`), against one real
//! Redis. Not to be confused with [`crate::sim`] (one simulated participant of the media load
//! generator).
//!
//! A run: `nodes` simulated media nodes heartbeat every `heartbeat_ms` (each with a load that
//! moves, so placement's choice moves too); `signaling` simulated signaling instances
//! heartbeat every second and hold `rooms` rooms of `members` members each, placed and joined
//! as a signaling node does, and re-assert them every `assert_ms` as one batched call per
//! instance (`assert_rooms`, what `signaling-node`'s `AssertBatch` sends). Meanwhile
//! `placements` new rooms are placed one after the other (at most `place_rate` a second) and
//! timed. Redis's own figures come from `INFO commandstats` and `INFO cpu`, read before and
//! after the measured phase (`CONFIG RESETSTAT` is not used: other clients' stats are left
//! alone, only differences are reported).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conclave_common::cluster::{
    now_ms, ClusterError, ClusterStore, MemberRecord, NodeInfo, NodeLoad, RoomAssertion,
    ROOM_TTL_MS,
};
use conclave_common::protocol::ParticipantInfo;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub redis_url: String,
    /// Prefix of every key the run writes.
    pub prefix: String,
    pub nodes: usize,
    pub signaling: usize,
    /// Rooms held (placed, joined and re-asserted) through the run.
    pub rooms: usize,
    pub members: usize,
    /// New rooms placed and timed in the measured phase.
    pub placements: usize,
    /// Most placements a second in the measured phase (0: one after the other, no pause).
    pub place_rate: u32,
    /// Shortest measured phase: it runs at least this long, and until every placement is made.
    pub min_measure: Duration,
    /// Longest measured phase: placements not made by then are not made.
    pub max_measure: Duration,
    pub heartbeat_ms: u64,
    pub assert_ms: u64,
    /// Place with the script before the sorted sets (every node read at each placement).
    pub legacy: bool,
    /// Requests in flight while setting up the rooms.
    pub concurrency: usize,
}

/// Redis's counters at one moment.
#[derive(Debug, Clone, Default)]
struct RedisStats {
    /// command -> (calls, usec)
    commands: HashMap<String, (u64, u64)>,
    /// used_cpu_sys + used_cpu_user, seconds.
    cpu: f64,
    total_commands: u64,
}

/// One command's share of the measured phase.
#[derive(Debug, Clone)]
pub struct CommandFigure {
    pub command: String,
    pub calls: u64,
    pub usec_per_call: f64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub nodes: usize,
    pub rooms: usize,
    pub signaling: usize,
    pub legacy: bool,
    pub setup_secs: f64,
    pub measured_secs: f64,
    pub placements: u64,
    pub no_capacity: u64,
    /// Placements that failed otherwise (Redis errors, timeouts).
    pub failed: u64,
    pub place_p50_us: u64,
    pub place_p99_us: u64,
    pub place_max_us: u64,
    /// `evalsha` (placement scripts, plus the re-assertions when rooms are held) per call.
    pub evalsha_usec_per_call: f64,
    /// Every command Redis ran during the measured phase (the busiest first).
    pub commands: Vec<CommandFigure>,
    /// Commands Redis ran per second over the measured phase (a script call is one).
    pub redis_ops_per_sec: f64,
    /// Redis CPU (user + sys) over the measured phase, in cores (0.25 = a quarter core).
    pub redis_cpu_cores: f64,
    /// Redis CPU per command, microseconds.
    pub redis_cpu_us_per_op: f64,
    /// Heartbeats and re-assertions the simulated nodes made in the measured phase.
    pub heartbeats: u64,
    pub asserted_rooms: u64,
}

async fn redis_stats(store: &ClusterStore) -> Result<RedisStats, ClusterError> {
    let mut conn = store.connection_manager();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .arg("cpu")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    let mut stats = RedisStats::default();
    let (mut sys, mut user) = (0.0, 0.0);
    for line in info.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            // cmdstat_evalsha:calls=5,usec=100,usec_per_call=20.00,...
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let field = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            stats
                .commands
                .insert(name.to_string(), (field("calls"), field("usec")));
        } else if let Some(v) = line.strip_prefix("used_cpu_sys:") {
            sys = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("used_cpu_user:") {
            user = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
            stats.total_commands = v.trim().parse().unwrap_or(0);
        }
    }
    stats.cpu = sys + user;
    Ok(stats)
}

/// A simulated media node's figures at heartbeat `tick`: a load that moves between 0 and half
/// its capacity (deterministic, so runs repeat), a participant count far below its capacity.
fn node_load(index: usize, tick: u64) -> NodeLoad {
    let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ tick.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    NodeLoad {
        participants: (x % 500) as u32,
        load_fpps: x % (NODE_LOAD_CAPACITY / 2),
        bits_out_per_sec: 0,
        cpu_cores: 0.0,
    }
}

const NODE_LOAD_CAPACITY: u64 = 1_000_000_000;

fn node_info(index: usize) -> NodeInfo {
    NodeInfo {
        id: format!("m{index:05}"),
        link_url: format!(
            "ws://10.0.{}.{}:8081/internal/link",
            index / 250,
            index % 250
        ),
        udp_addrs: vec![format!("10.0.{}.{}:40000", index / 250, index % 250)],
        capacity: 1_000_000,
        load_capacity: NODE_LOAD_CAPACITY,
    }
}

fn member(room: usize, k: usize, instance: &str) -> MemberRecord {
    MemberRecord {
        participant: ParticipantInfo {
            participant_id: format!("p{room}-{k}"),
            user_id: format!("u{room}-{k}"),
            name: format!("User {k}"),
            audio: true,
            video: true,
            deafened: false,
            media: None,
        },
        signaling: instance.to_string(),
        resume_hash: "0".repeat(64),
    }
}

async fn place(store: &ClusterStore, room: &str, legacy: bool) -> Result<String, ClusterError> {
    if legacy {
        store.place_room_legacy(room, now_ms()).await
    } else {
        store.place_room(room, now_ms()).await
    }
}

/// Slices of the nodes whose heartbeats are sent together (one slice each tenth of a period).
const SLICES: usize = 10;

/// Heartbeat the simulated media nodes `nodes` (the first one is node number `first`) once
/// (tick `tick`); the number made.
async fn beat_all(
    stores: &[ClusterStore],
    nodes: &[NodeInfo],
    first: usize,
    tick: u64,
    concurrency: usize,
) -> u64 {
    let now = now_ms();
    stream::iter(nodes.iter().enumerate())
        .map(|(i, node)| {
            let i = first + i;
            let store = &stores[i % stores.len()];
            async move {
                store
                    .heartbeat(node, &node_load(i, tick), false, now)
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await as u64
}

/// One simulated signaling instance's rooms.
struct Instance {
    id: String,
    store: ClusterStore,
    rooms: Vec<RoomAssertion>,
}

/// Heartbeat the media nodes and the signaling instances until `stop`. Real nodes heartbeat
/// each on its own phase: the nodes are beaten in ten slices, one slice every tenth of the
/// period (a burst of every node at once would queue the timed placements behind it, which no
/// real cluster does).
async fn beat_loop(
    cfg: &SimConfig,
    stores: &[ClusterStore],
    nodes: &[NodeInfo],
    instances: &[Instance],
    stop: &Cell<bool>,
    heartbeats: &Cell<u64>,
) {
    let slices = SLICES.min(nodes.len()).max(1);
    let per_slice = nodes.len().div_ceil(slices);
    let mut step = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(
        (cfg.heartbeat_ms / slices as u64).max(1),
    ));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.get() {
        every.tick().await;
        if stop.get() {
            break;
        }
        let slice = (step % slices as u64) as usize;
        let tick = 1 + step / slices as u64;
        let first = slice * per_slice;
        let these = &nodes[first.min(nodes.len())..(first + per_slice).min(nodes.len())];
        let made = beat_all(stores, these, first, tick, cfg.concurrency).await;
        heartbeats.set(heartbeats.get() + made);
        if slice == 0 {
            for i in instances {
                let _ = i
                    .store
                    .signaling_heartbeat(&i.id, "http://sim", now_ms())
                    .await;
            }
        }
        step += 1;
    }
}

/// Run the simulation described by `cfg` and report.
pub async fn run(cfg: &SimConfig) -> Result<SimReport, ClusterError> {
    let started = Instant::now();
    let nodes: Vec<NodeInfo> = (0..cfg.nodes).map(node_info).collect();
    // A few connections for the media nodes (each real one has its own; Redis's cost per
    // command is the same), one per signaling instance, one for the timed placements.
    let mut node_stores = Vec::new();
    for _ in 0..cfg.nodes.clamp(1, 8) {
        node_stores.push(ClusterStore::connect(cfg.redis_url.as_str(), &cfg.prefix).await?);
    }
    let probe = ClusterStore::connect(cfg.redis_url.as_str(), &cfg.prefix).await?;
    let placer = ClusterStore::connect(cfg.redis_url.as_str(), &cfg.prefix).await?;
    beat_all(&node_stores, &nodes, 0, 0, cfg.concurrency).await;

    // The rooms, spread over the instances, placed and joined as a signaling node does.
    let mut instances = Vec::new();
    for s in 0..cfg.signaling.max(1) {
        instances.push(Instance {
            id: format!("sig-{s}.sim"),
            store: ClusterStore::connect(cfg.redis_url.as_str(), &cfg.prefix).await?,
            rooms: Vec::new(),
        });
    }
    let n_instances = instances.len();
    // Heartbeats go on while the rooms are made (it may take longer than the staleness window).
    let setup_done = Cell::new(false);
    let setup_beats = Cell::new(0u64);
    let setup = async {
        let made: Result<Vec<(usize, RoomAssertion)>, ClusterError> = stream::iter(0..cfg.rooms)
            .map(|r| {
                let owner = r % n_instances;
                let (store, instance) = (&instances[owner].store, instances[owner].id.clone());
                async move {
                    let room = format!("sim/held-{r}");
                    let node = place(store, &room, cfg.legacy).await?;
                    let mut mine = Vec::new();
                    for k in 0..cfg.members {
                        let record = member(r, k, &instance);
                        store
                            .join_member(&room, "sim", &record, 100, ROOM_TTL_MS)
                            .await?;
                        mine.push(record);
                    }
                    Ok::<_, ClusterError>((
                        owner,
                        RoomAssertion {
                            room,
                            community: "sim".into(),
                            node,
                            mine,
                        },
                    ))
                }
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        setup_done.set(true);
        made
    };
    let (made, ()) = futures_util::join!(
        setup,
        beat_loop(
            cfg,
            &node_stores,
            &nodes,
            &instances,
            &setup_done,
            &setup_beats
        )
    );
    let made = made?;
    for (owner, room) in made {
        instances[owner].rooms.push(room);
    }
    let setup_secs = started.elapsed().as_secs_f64();

    // The measured phase: background heartbeats and re-assertions, timed placements.
    let stop = Rc::new(Cell::new(false));
    let heartbeats = Cell::new(0u64);
    let asserted = Rc::new(Cell::new(0u64));
    let before = redis_stats(&probe).await?;
    let measure_start = Instant::now();

    let beating = beat_loop(cfg, &node_stores, &nodes, &instances, &stop, &heartbeats);
    let asserting = {
        let (stop, asserted) = (stop.clone(), asserted.clone());
        let instances = &instances;
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(cfg.assert_ms));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await; // The rooms were just written.
            while !stop.get() {
                every.tick().await;
                if stop.get() {
                    break;
                }
                // Each instance's rooms in batches of at most 1000, like `AssertBatch`.
                let batches = instances
                    .iter()
                    .flat_map(|i| i.rooms.chunks(1000).map(move |chunk| (i, chunk)));
                let counts: Vec<u64> = stream::iter(batches)
                    .map(|(i, chunk)| async move {
                        match i.store.assert_rooms(&i.id, chunk, ROOM_TTL_MS).await {
                            Ok(answers) => answers.iter().filter(|a| a.is_ok()).count() as u64,
                            Err(_) => 0,
                        }
                    })
                    .buffer_unordered(n_instances)
                    .collect()
                    .await;
                asserted.set(asserted.get() + counts.iter().sum::<u64>());
            }
        }
    };
    let placing = {
        let stop = stop.clone();
        let placer = &placer;
        async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds are valid");
            let (mut no_capacity, mut failed) = (0u64, 0u64);
            let gap = if cfg.place_rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(1.0 / f64::from(cfg.place_rate))
            };
            let begun = Instant::now();
            for p in 0..cfg.placements {
                if begun.elapsed() >= cfg.max_measure {
                    break;
                }
                let due = begun + gap * p as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let room = format!("sim/new-{p}");
                let t = Instant::now();
                match place(placer, &room, cfg.legacy).await {
                    Ok(_) => {
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(ClusterError::NoCapacity) => no_capacity += 1,
                    Err(_) => failed += 1,
                }
            }
            if let Some(rest) = cfg.min_measure.checked_sub(begun.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            stop.set(true);
            (hist, no_capacity, failed)
        }
    };
    let ((hist, no_capacity, failed), (), ()) = futures_util::join!(placing, beating, asserting);
    let measured_secs = measure_start.elapsed().as_secs_f64();
    let after = redis_stats(&probe).await?;

    let mut commands: Vec<CommandFigure> = after
        .commands
        .iter()
        .filter_map(|(name, (calls, usec))| {
            let (calls0, usec0) = before.commands.get(name).copied().unwrap_or((0, 0));
            let calls = calls.saturating_sub(calls0);
            (calls > 0).then(|| CommandFigure {
                command: name.clone(),
                calls,
                usec_per_call: usec.saturating_sub(usec0) as f64 / calls as f64,
            })
        })
        .collect();
    commands.sort_by(|a, b| {
        let time = |c: &CommandFigure| c.usec_per_call * c.calls as f64;
        time(b).total_cmp(&time(a))
    });
    let evalsha_usec_per_call = commands
        .iter()
        .find(|c| c.command == "evalsha")
        .map_or(0.0, |c| c.usec_per_call);
    let ops = after.total_commands.saturating_sub(before.total_commands) as f64;
    let cpu = after.cpu - before.cpu;
    Ok(SimReport {
        nodes: cfg.nodes,
        rooms: cfg.rooms,
        signaling: n_instances,
        legacy: cfg.legacy,
        setup_secs,
        measured_secs,
        placements: hist.len(),
        no_capacity,
        failed,
        place_p50_us: hist.value_at_quantile(0.5),
        place_p99_us: hist.value_at_quantile(0.99),
        place_max_us: hist.max(),
        evalsha_usec_per_call,
        commands,
        redis_ops_per_sec: ops / measured_secs,
        redis_cpu_cores: cpu / measured_secs,
        redis_cpu_us_per_op: if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 },
        heartbeats: heartbeats.get(),
        asserted_rooms: asserted.get(),
    })
}

/// Delete every key under the run's prefix (SCAN, bounded batches).
pub async fn clean(cfg: &SimConfig) -> Result<u64, ClusterError> {
    let store = ClusterStore::connect(cfg.redis_url.as_str(), &cfg.prefix).await?;
    let mut conn = store.connection_manager();
    let pattern = format!("{}*", cfg.prefix);
    let (mut cursor, mut deleted) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

impl SimReport {
    /// The report as text: one line of figures, then Redis's commands.
    pub fn render(&self) -> String {
        let mut out = format!(
            "script={} nodes={} rooms={} signaling={} setup={:.1}s measured={:.1}s\n\
             placements={} no_capacity={} failed={} p50={}us p99={}us max={}us evalsha_usec_per_call={:.2}\n\
             redis_ops_per_sec={:.0} redis_cpu_cores={:.3} redis_cpu_us_per_op={:.2} heartbeats={} asserted_rooms={}\n",
            if self.legacy { "legacy" } else { "sorted-sets" },
            self.nodes,
            self.rooms,
            self.signaling,
            self.setup_secs,
            self.measured_secs,
            self.placements,
            self.no_capacity,
            self.failed,
            self.place_p50_us,
            self.place_p99_us,
            self.place_max_us,
            self.evalsha_usec_per_call,
            self.redis_ops_per_sec,
            self.redis_cpu_cores,
            self.redis_cpu_us_per_op,
            self.heartbeats,
            self.asserted_rooms,
        );
        for c in &self.commands {
            out += &format!(
                "  {:<12} calls={:<9} usec_per_call={:.2}\n",
                c.command, c.calls, c.usec_per_call
            );
        }
        out
    }
}
