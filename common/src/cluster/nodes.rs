//! Media nodes and room placement: each media node's heartbeat (its *true* participant count
//! and load), liveness, the operators' node list, and atomic placement of rooms on the node
//! with the most load headroom (`scripts/place_room.lua`).
//!
//! Placement reads no node one by one: heartbeats, reservations and node deaths keep two
//! sorted sets and a hash with fixed names (`node-candidates`: live, not draining, not full
//! nodes scored by `load - load_capacity`; `node-heartbeats`: live nodes by last heartbeat;
//! `node-counts`: each node's participants, load and capacities with reservations), and the
//! script takes the head of the candidates (O(log n)). A node whose heartbeats stopped is
//! removed from them lazily, a bounded number per placement ([`PLACE_BUDGET`]).
//!
//! Load is in forwarded packets per second (`crate::load`). The media node's own heartbeat
//! carries its true count and its own load figure, so a crashed signaling node cannot leak
//! either; placement reserves a new room's expected cost (and one participant) at once, and
//! each join reserves what it adds ([`ClusterStore::reserve_load`]), so that rooms placed back
//! to back see fresh loads until the next heartbeat overwrites them with the node's figure.

use redis::{AsyncCommands, Script};
use serde::Serialize;

use super::store::{ClusterError, ClusterStore, NODE_TTL_MS};
use crate::load;

/// A media node older than this (since its last heartbeat) is dead to placement.
pub const NODE_STALE_MS: u64 = 5_000;
/// Lifetime of a room -> node record; refreshed while the room lives.
pub const ROOM_TTL_MS: u64 = 60_000;

/// Atomic placement: returns the room's live node, or takes the head of the candidates (the
/// live node with the most load headroom; ties: lowest id), records the room and reserves a
/// new room's cost and one participant on it.
const PLACE_ROOM: &str = include_str!("scripts/place_room.lua");
/// The placement script before the sorted sets (it reads every node's hash, O(n)), kept only
/// to measure against (`cluster-sim --legacy`); nothing in the product calls it.
const PLACE_ROOM_LEGACY: &str = include_str!("scripts/place_room_legacy.lua");
/// Adds to a node's counted `load` (and its candidate score), only if the node has counts.
const RESERVE_LOAD: &str = include_str!("scripts/reserve_load.lua");
/// Marks a node dead until its next heartbeat (`down_hb` = its last `hb`) and takes it out of
/// the sorted sets.
const NODE_DOWN: &str = include_str!("scripts/node_down.lua");

/// Most dead nodes one placement removes from the sorted sets, and most heads of the
/// candidates it looks at: a placement's work is bounded whatever the number of nodes. Dead
/// nodes come out of the candidates within one staleness window of placements (each removes
/// up to this many); a head that is not live is skipped and removed.
pub const PLACE_BUDGET: usize = 16;
/// Most calls of the placement script for one placement: when many nodes died at once, each
/// call removes up to 2 × [`PLACE_BUDGET`] of them and asks to be called again.
const PLACE_ATTEMPTS: usize = 32;

/// What a media node tells the cluster about itself (fixed while it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Internal link URL (`ws://host:port/internal/link`).
    pub link_url: String,
    /// Advertised UDP address (`ip:port`) of each room thread, browsers send media there.
    pub udp_addrs: Vec<String>,
    /// Most participants this node takes.
    pub capacity: u32,
    /// Most load this node takes, in forwarded packets per second (`crate::load`).
    pub load_capacity: u64,
}

/// What a media node measures and reports at each heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLoad {
    /// Peers it holds (its true count).
    pub participants: u32,
    /// Forwarded packets per second: measured, plus the modelled cost of participants too
    /// new to show in the measurement. Placement compares it with `load_capacity`.
    pub load_fpps: u64,
    /// Bits per second it sends (media to subscribers), for operators.
    pub bits_out_per_sec: u64,
    /// CPU the process used over the last seconds, in cores (1.5 = one and a half cores).
    pub cpu_cores: f64,
}

/// A media node as the operators' node list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    pub link_url: String,
    /// Advertised UDP address of each room thread.
    pub udp_addrs: Vec<String>,
    /// Most participants.
    pub capacity: u32,
    pub participants: u32,
    /// Forwarded packets per second (with reservations of rooms placed or joined since the
    /// last heartbeat).
    pub load: u64,
    /// Most forwarded packets per second the node takes.
    pub load_capacity: u64,
    /// Bits per second sent.
    pub bits_out: u64,
    /// CPU used, in cores.
    pub cpu: f64,
    /// Milliseconds since the last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Placement may use it: a fresh heartbeat and no dropped link since. A node that is
    /// not live counts nothing (participants, load, bits out and CPU are 0): its rooms are
    /// moving to live nodes, which count their members.
    pub live: bool,
    pub draining: bool,
}

/// Fields of a node hash the node list reads, in this order.
const STATUS_FIELDS: [&str; 11] = [
    "link_url",
    "udp_addrs",
    "capacity",
    "participants",
    "load",
    "load_capacity",
    "bits_out",
    "cpu",
    "hb",
    "draining",
    "down_hb",
];

/// A candidate's score in `node-candidates`: ascending is most load headroom first.
fn candidate_score(load_fpps: u64, load_capacity: u64) -> i64 {
    load_fpps as i64 - load_capacity as i64
}

/// Milli-cores, as the node hash stores CPU (an integer, like every other field).
fn millicores(cores: f64) -> u64 {
    (cores.max(0.0) * 1000.0).round() as u64
}

impl ClusterStore {
    /// Register (or refresh) a media node with its true participant count and its load; a
    /// draining node takes no new rooms. Overwrites the reservations made since the last
    /// heartbeat (the node's own figures include what they stood in for).
    pub async fn heartbeat(
        &self,
        node: &NodeInfo,
        load: &NodeLoad,
        draining: bool,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        ClusterError::check_name(&node.id)?;
        let id = &node.id;
        let key = self.node_key(id);
        let counts = self.node_counts_key();
        let candidates = self.node_candidates_key();
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("link_url", node.link_url.clone()),
                    ("udp_addrs", node.udp_addrs.join(",")),
                    ("capacity", node.capacity.to_string()),
                    ("load_capacity", node.load_capacity.to_string()),
                    ("participants", load.participants.to_string()),
                    ("load", load.load_fpps.to_string()),
                    ("bits_out", load.bits_out_per_sec.to_string()),
                    ("cpu", millicores(load.cpu_cores).to_string()),
                    ("hb", now_ms.to_string()),
                    ("draining", if draining { "1" } else { "0" }.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, NODE_TTL_MS as i64)
            .ignore()
            // The room set lives as long as the hash: a dead node's expires with it.
            .pexpire(self.node_rooms_key(id), NODE_TTL_MS as i64)
            .ignore()
            .sadd(self.nodes_key(), id)
            .ignore()
            .hset_multiple(
                &counts,
                &[
                    (format!("{id}:participants"), u64::from(load.participants)),
                    (format!("{id}:capacity"), u64::from(node.capacity)),
                    (format!("{id}:load"), load.load_fpps),
                    (format!("{id}:load_capacity"), node.load_capacity),
                ],
            )
            .ignore()
            .zadd(self.node_heartbeats_key(), id, now_ms)
            .ignore();
        if draining || load.participants >= node.capacity || load.load_fpps >= node.load_capacity {
            pipe.zrem(&candidates, id).ignore();
        } else {
            pipe.zadd(
                &candidates,
                id,
                candidate_score(load.load_fpps, node.load_capacity),
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Add `fpps` to a node's load (a participant joined one of its rooms), until its next
    /// heartbeat replaces the figure with its own. Nothing happens if the node has no hash
    /// (expired, or never registered): a partial hash would look like a node.
    pub async fn reserve_load(&self, node_id: &str, fpps: u64) -> Result<(), ClusterError> {
        ClusterError::check_name(node_id)?;
        let mut conn = self.conn();
        let _: Option<i64> = Script::new(RESERVE_LOAD)
            .key(self.node_counts_key())
            .key(self.node_candidates_key())
            .arg(node_id)
            .arg(fpps)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The node of `room`, placing the room on the live node with the most load headroom if
    /// it has none.
    pub async fn place_room(&self, room: &str, now_ms: u64) -> Result<String, ClusterError> {
        ClusterError::check_room_id(room)?;
        let mut conn = self.conn();
        let script = Script::new(PLACE_ROOM);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.room_key(room))
            .key(self.node_candidates_key())
            .key(self.node_heartbeats_key())
            .key(self.node_counts_key())
            .arg(now_ms)
            .arg(NODE_STALE_MS)
            .arg(ROOM_TTL_MS)
            .arg(load::new_room_reservation())
            .arg(PLACE_BUDGET);
        let mut placed = None;
        for _ in 0..PLACE_ATTEMPTS {
            let answer: Option<(String, u8, String)> = invocation.invoke_async(&mut conn).await?;
            match answer {
                Some((_, 2, _)) => continue, // Dead heads removed: again.
                answer => {
                    placed = answer;
                    break;
                }
            }
        }
        let (node, placed_now, left) = placed.ok_or(ClusterError::NoCapacity)?;
        if placed_now == 1 {
            // The room sets are indexes beside the placement (kept out of the script, whose
            // keys are then all declared): the new node holds the room, a dead node it left
            // does not. A new set gets the node's TTL (its heartbeats keep it while it lives).
            let rooms = self.node_rooms_key(&node);
            let mut pipe = redis::pipe();
            pipe.sadd(&rooms, room)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&rooms)
                .arg(NODE_TTL_MS)
                .arg("NX")
                .ignore();
            if !left.is_empty() && left != node {
                pipe.srem(self.node_rooms_key(&left), room).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(node)
    }

    /// Placement as it was before the sorted sets (every node's hash read at each call), for
    /// the cluster simulator's comparison only (`benches`, `cluster-sim --legacy`). It reads
    /// the heartbeat's own `participants` and `load` in the node hashes and reserves there,
    /// not in the counts: do not mix it with [`place_room`](Self::place_room) on one prefix.
    #[doc(hidden)]
    pub async fn place_room_legacy(&self, room: &str, now_ms: u64) -> Result<String, ClusterError> {
        ClusterError::check_room_id(room)?;
        let mut conn = self.conn();
        let placed: Option<String> = Script::new(PLACE_ROOM_LEGACY)
            .key(self.room_key(room))
            .key(self.nodes_key())
            .arg(now_ms)
            .arg(NODE_STALE_MS)
            .arg(ROOM_TTL_MS)
            .arg(self.prefix())
            .arg(room)
            .arg(load::new_room_reservation())
            .arg(NODE_TTL_MS)
            .invoke_async(&mut conn)
            .await?;
        placed.ok_or(ClusterError::NoCapacity)
    }

    /// The node a room is placed on, if any.
    pub async fn room_node(&self, room: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.conn();
        Ok(conn.get(self.room_key(room)).await?)
    }

    /// The link URL of a node, if it is registered.
    pub async fn node_link_url(&self, node_id: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.conn();
        Ok(conn.hget(self.node_key(node_id), "link_url").await?)
    }

    /// A live node's counted participants (reservations included until its heartbeat); `None`
    /// for a node that is not live.
    pub async fn node_participants(&self, node_id: &str) -> Result<Option<u32>, ClusterError> {
        let mut conn = self.conn();
        let field = format!("{node_id}:participants");
        Ok(conn.hget(self.node_counts_key(), field).await?)
    }

    /// A live node's counted load in fpps (reservations included until its heartbeat); `None`
    /// for a node that is not live.
    pub async fn node_load(&self, node_id: &str) -> Result<Option<u64>, ClusterError> {
        let mut conn = self.conn();
        let field = format!("{node_id}:load");
        Ok(conn.hget(self.node_counts_key(), field).await?)
    }

    /// The ids of the nodes placement may take now, best first (most load headroom; ties:
    /// lowest id), at most `limit`: the head of the candidates, without the nodes that are
    /// not live at `now_ms` (left there until a placement removes them). For operators and
    /// tests.
    pub async fn placement_candidates(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn();
        let head: Vec<String> = conn
            .zrangebyscore_limit(self.node_candidates_key(), "-inf", "(0", 0, limit as isize)
            .await?;
        if head.is_empty() {
            return Ok(head);
        }
        let beats: Vec<Option<u64>> = redis::cmd("ZMSCORE")
            .arg(self.node_heartbeats_key())
            .arg(&head)
            .query_async(&mut conn)
            .await?;
        let cutoff = now_ms.saturating_sub(NODE_STALE_MS);
        Ok(head
            .into_iter()
            .zip(beats)
            .filter(|(_, hb)| hb.is_some_and(|hb| hb >= cutoff))
            .map(|(id, _)| id)
            .collect())
    }

    /// A media node's link dropped: dead to placement now, instead of after its heartbeat
    /// goes stale. A live node's next heartbeat revives it. Its last heartbeat time is kept
    /// (the node list shows how long ago it reported).
    pub async fn node_down(&self, node_id: &str) -> Result<(), ClusterError> {
        ClusterError::check_name(node_id)?;
        let mut conn = self.conn();
        let _: i64 = Script::new(NODE_DOWN)
            .key(self.node_key(node_id))
            .key(self.node_candidates_key())
            .key(self.node_heartbeats_key())
            .key(self.node_counts_key())
            .arg(node_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Every registered media node with its load, for operators.
    pub async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut conn = self.conn();
        let mut ids: Vec<String> = conn.smembers(self.nodes_key()).await?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let fields: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.node_key(&id))
                .arg(&STATUS_FIELDS)
                .query_async(&mut conn)
                .await?;
            // A field by name (HMGET answers in STATUS_FIELDS' order).
            let text = |name: &str| {
                let i = STATUS_FIELDS.iter().position(|f| *f == name);
                i.and_then(|i| fields.get(i).cloned().flatten())
            };
            let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
            let (Some(link_url), Some(hb)) = (text("link_url"), number("hb")) else {
                continue; // Expired: gone for good.
            };
            let udp_addrs = text("udp_addrs")
                .map(|v| {
                    v.split(',')
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let heartbeat_age_ms = now_ms.saturating_sub(hb);
            // The same rule as placement's (`place_room.lua`): fresh, and no dropped link
            // since that heartbeat.
            let down = number("down_hb") == Some(hb);
            let live = heartbeat_age_ms <= NODE_STALE_MS && !down;
            // A dead node's last figures are not current: its members are gone or moving to
            // live nodes, which count them (counting both would count them twice).
            // Participants and load with the reservations made since the heartbeat.
            let counted: (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(self.node_counts_key())
                .arg(format!("{id}:participants"))
                .arg(format!("{id}:load"))
                .query_async(&mut conn)
                .await?;
            let current = |name: &str| {
                let value = match name {
                    "participants" => counted.0.or(number(name)),
                    "load" => counted.1.or(number(name)),
                    _ => number(name),
                };
                if live {
                    value.unwrap_or(0)
                } else {
                    0
                }
            };
            out.push(NodeStatus {
                id,
                link_url,
                udp_addrs,
                capacity: number("capacity").unwrap_or(0) as u32,
                participants: current("participants") as u32,
                load: current("load"),
                load_capacity: number("load_capacity").unwrap_or(0),
                bits_out: current("bits_out"),
                cpu: current("cpu") as f64 / 1000.0,
                heartbeat_age_ms,
                live,
                draining: text("draining").as_deref() == Some("1"),
            });
        }
        Ok(out)
    }
}
