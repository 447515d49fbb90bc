//! Media nodes and room placement: each media node's heartbeat (with its *true*
//! participant count), liveness, the operators' node list, and atomic least-loaded placement
//! of rooms (`scripts/place_room.lua`).
//!
//! The media node's own heartbeat carries its true count, so a crashed signaling node cannot
//! leak counts; placement adds a one-participant reservation at once so that rooms placed back
//! to back see fresh loads until the next heartbeat reconciles.

use redis::{AsyncCommands, Script};
use serde::Serialize;

use super::store::{ClusterError, ClusterStore};

/// A media node older than this (since its last heartbeat) is dead to placement.
pub const NODE_STALE_MS: u64 = 5_000;
/// A node's hash expires this long after its last heartbeat (cleanup of dead nodes).
const NODE_TTL_MS: u64 = 15_000;
/// Lifetime of a room -> node record; refreshed while the room lives.
pub const ROOM_TTL_MS: u64 = 60_000;

/// Atomic placement: returns the room's live node, or picks the live node with the lowest
/// participants/capacity (ties: lowest id), records the room and reserves one participant.
const PLACE_ROOM: &str = include_str!("scripts/place_room.lua");

/// What a media node tells the cluster about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Internal link URL (`ws://host:port/internal/link`).
    pub link_url: String,
    /// Advertised UDP address for media.
    pub udp_addr: String,
    /// Most participants this node takes.
    pub capacity: u32,
}

/// A media node as the operators' node list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    pub link_url: String,
    pub udp_addr: String,
    pub capacity: u32,
    pub participants: u32,
    /// Milliseconds since the last heartbeat.
    pub heartbeat_age_ms: u64,
    pub live: bool,
    pub draining: bool,
}

/// `link_url`, `udp_addr`, `capacity`, `participants`, `hb`, `draining` of a node hash.
type NodeFields = (
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<u32>,
    Option<u64>,
    Option<String>,
);

impl ClusterStore {
    /// Register (or refresh) a media node with its true participant count; a draining node
    /// takes no new rooms.
    pub async fn heartbeat(
        &self,
        node: &NodeInfo,
        participants: u32,
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
                    ("udp_addr", node.udp_addr.clone()),
                    ("capacity", node.capacity.to_string()),
                    ("participants", participants.to_string()),
                    ("hb", now_ms.to_string()),
                    ("draining", if draining { "1" } else { "0" }.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, NODE_TTL_MS as i64)
            .ignore()
            .sadd(self.nodes_key(), &node.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The node of `room`, placing the room on the least-loaded live node if it has none.
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

    /// A media node's link dropped: dead to placement now, instead of after its heartbeat
    /// goes stale. A live node's next heartbeat revives it.
    pub async fn node_down(&self, node_id: &str) -> Result<(), ClusterError> {
        let key = self.node_key(node_id);
        let mut conn = self.conn();
        let exists: bool = conn.exists(&key).await?;
        if exists {
            conn.hset::<_, _, _, ()>(&key, "hb", 0).await?;
        }
        Ok(())
    }

    /// Every registered media node with its load, for operators.
    pub async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut conn = self.conn();
        let mut ids: Vec<String> = conn.smembers(self.nodes_key()).await?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let fields: NodeFields = redis::cmd("HMGET")
                .arg(self.node_key(&id))
                .arg(&[
                    "link_url",
                    "udp_addr",
                    "capacity",
                    "participants",
                    "hb",
                    "draining",
                ])
                .query_async(&mut conn)
                .await?;
            let (Some(link_url), Some(udp_addr), capacity, participants, Some(hb), draining) =
                fields
            else {
                continue; // Expired: gone for good.
            };
            let heartbeat_age_ms = now_ms.saturating_sub(hb);
            out.push(NodeStatus {
                id,
                link_url,
                udp_addr,
                capacity: capacity.unwrap_or(0),
                participants: participants.unwrap_or(0),
                heartbeat_age_ms,
                live: heartbeat_age_ms <= NODE_STALE_MS,
                draining: draining.as_deref() == Some("1"),
            });
        }
        Ok(out)
    }
}
