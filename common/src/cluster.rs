//! Cluster state in Redis: media node registry with heartbeats, and atomic least-loaded
//! placement of rooms. Key schema in `docs/cluster.md`; every key starts with one prefix.
//!
//! The media node's own heartbeat carries its *true* participant count, so a crashed
//! signaling node cannot leak counts; placement adds a one-participant reservation at once so
//! that rooms placed back to back see fresh loads until the next heartbeat reconciles.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

/// A media node older than this (since its last heartbeat) is dead to placement.
pub const NODE_STALE_MS: u64 = 5_000;
/// A node's hash expires this long after its last heartbeat (cleanup of dead nodes).
const NODE_TTL_MS: u64 = 15_000;
/// Lifetime of a room -> node record; refreshed while the room lives.
pub const ROOM_TTL_MS: u64 = 60_000;

/// `url` for logs: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Wall-clock milliseconds since the Unix epoch (heartbeats and records compare these across
/// machines).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no media node has capacity")]
    NoCapacity,
    #[error("the room is full")]
    RoomFull,
    #[error("redis did not answer in time")]
    Timeout,
}

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

/// Cluster state over one Redis connection (cheap to clone; reconnects by itself).
#[derive(Clone)]
pub struct ClusterStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

/// Atomic placement: returns the room's live node, or picks the live node with the lowest
/// participants/capacity (ties: lowest id), records the room and reserves one participant.
const PLACE_ROOM: &str = include_str!("cluster/scripts/place_room.lua");

impl ClusterStore {
    /// Connect to `redis_url`; all keys go under `prefix` (e.g. `conclave:`).
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(redis_url)?;
        // Fail fast while Redis is away (the defaults retry for minutes with commands
        // waiting): callers decide what to do, and the next command reconnects.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_factor(100)
            .set_max_delay(500)
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(ClusterStore {
            client,
            conn,
            prefix: prefix.to_string(),
        })
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The store's multiplexed connection (cheap to clone), for other users of the same Redis.
    pub fn connection_manager(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A Redis client for connections the store does not multiplex (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Register (or refresh) a media node with its true participant count; a draining node
    /// takes no new rooms.
    pub async fn heartbeat(
        &self,
        node: &NodeInfo,
        participants: u32,
        draining: bool,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let key = self.key(&format!("node:{}", node.id));
        let mut conn = self.conn.clone();
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
            .sadd(self.key("nodes"), &node.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The node of `room`, placing the room on the least-loaded live node if it has none.
    pub async fn place_room(&self, room: &str, now_ms: u64) -> Result<String, ClusterError> {
        let mut conn = self.conn.clone();
        let placed: Option<String> = Script::new(PLACE_ROOM)
            .key(self.key(&format!("room:{room}")))
            .key(self.key("nodes"))
            .arg(now_ms)
            .arg(NODE_STALE_MS)
            .arg(ROOM_TTL_MS)
            .arg(&self.prefix)
            .arg(room)
            .invoke_async(&mut conn)
            .await?;
        placed.ok_or(ClusterError::NoCapacity)
    }

    /// The node a room is placed on, if any.
    pub async fn room_node(&self, room: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key(&format!("room:{room}"))).await?)
    }

    /// The link URL of a node, if it is registered.
    pub async fn node_link_url(&self, node_id: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .hget(self.key(&format!("node:{node_id}")), "link_url")
            .await?)
    }

    /// A node's recorded participant count (reservations included until its heartbeat).
    pub async fn node_participants(&self, node_id: &str) -> Result<Option<u32>, ClusterError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .hget(self.key(&format!("node:{node_id}")), "participants")
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redacted("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            super::redacted("rediss://app:s3cret@r.example:6380/"),
            "rediss://app:***@r.example:6380/"
        );
        assert_eq!(
            super::redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
