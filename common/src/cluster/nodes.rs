//! Media nodes and room placement: each media node's heartbeat (its *true* participant count
//! and load), liveness, the operators' node list, and atomic placement of rooms on the node
//! with the most load headroom (`scripts/place_room.lua`).
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

/// Atomic placement: returns the room's live node, or picks the live node with the most load
/// headroom (ties: lowest id), records the room and reserves a new room's cost and one
/// participant on it.
const PLACE_ROOM: &str = include_str!("scripts/place_room.lua");
/// Adds to a node's `load`, only if the node's hash exists (never creates half a hash).
const RESERVE_LOAD: &str = include_str!("scripts/reserve_load.lua");
/// Marks a node dead until its next heartbeat (`down_hb` = its last `hb`), only if its hash
/// exists.
const NODE_DOWN: &str = include_str!("scripts/node_down.lua");

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
        let key = self.node_key(&node.id);
        let mut conn = self.conn();
        redis::pipe()
            .atomic()
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
            .pexpire(self.node_rooms_key(&node.id), NODE_TTL_MS as i64)
            .ignore()
            .sadd(self.nodes_key(), &node.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Add `fpps` to a node's load (a participant joined one of its rooms), until its next
    /// heartbeat replaces the figure with its own. Nothing happens if the node has no hash
    /// (expired, or never registered): a partial hash would look like a node.
    pub async fn reserve_load(&self, node_id: &str, fpps: u64) -> Result<(), ClusterError> {
        ClusterError::check_name(node_id)?;
        let mut conn = self.conn();
        let _: Option<i64> = Script::new(RESERVE_LOAD)
            .key(self.node_key(node_id))
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
        let placed: Option<String> = Script::new(PLACE_ROOM)
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

    /// A node's recorded participant count (reservations included until its heartbeat).
    pub async fn node_participants(&self, node_id: &str) -> Result<Option<u32>, ClusterError> {
        let mut conn = self.conn();
        Ok(conn.hget(self.node_key(node_id), "participants").await?)
    }

    /// A node's recorded load in fpps (reservations included until its heartbeat).
    pub async fn node_load(&self, node_id: &str) -> Result<Option<u64>, ClusterError> {
        let mut conn = self.conn();
        Ok(conn.hget(self.node_key(node_id), "load").await?)
    }

    /// A media node's link dropped: dead to placement now, instead of after its heartbeat
    /// goes stale. A live node's next heartbeat revives it. Its last heartbeat time is kept
    /// (the node list shows how long ago it reported).
    pub async fn node_down(&self, node_id: &str) -> Result<(), ClusterError> {
        ClusterError::check_name(node_id)?;
        let mut conn = self.conn();
        let _: i64 = Script::new(NODE_DOWN)
            .key(self.node_key(node_id))
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
            let current = |name: &str| if live { number(name).unwrap_or(0) } else { 0 };
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
