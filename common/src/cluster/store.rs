//! The store itself: [`ClusterStore`] with its Redis connection, [`ClusterError`], and the
//! name of every key (the table in `docs/cluster.md`). The keyspace files beside it
//! (`nodes`, `rooms`, `instances`, `events`) add the store's operations; this file imports
//! none of them.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// Why a store call failed.
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

/// Cluster state over one Redis connection (cheap to clone; reconnects by itself).
#[derive(Clone)]
pub struct ClusterStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

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

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn conn(&self) -> ConnectionManager {
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
}

/// Key naming: every key the store reads or writes from Rust (the table in `docs/cluster.md`).
/// The Lua scripts build `node:{id}`, `node:{id}:rooms` and `signaling:{instance}:members`
/// themselves from the prefix they are given.
impl ClusterStore {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Set: ids of every media node ever registered.
    pub(super) fn nodes_key(&self) -> String {
        self.key("nodes")
    }
    /// Hash: one media node's heartbeat fields.
    pub(super) fn node_key(&self, node_id: &str) -> String {
        self.key(&format!("node:{node_id}"))
    }
    /// String: the media node a room is placed on.
    pub(super) fn room_key(&self, room: &str) -> String {
        self.key(&format!("room:{room}"))
    }
    /// Hash: a room's members, participant id -> member record.
    pub(super) fn members_key(&self, room: &str) -> String {
        self.key(&format!("room:{room}:members"))
    }
    /// Set: a community's rooms with members.
    pub(super) fn community_rooms_key(&self, community: &str) -> String {
        self.key(&format!("community:{community}:rooms"))
    }
    /// Sorted set: signaling instance -> last heartbeat (ms).
    pub(super) fn instances_key(&self) -> String {
        self.key("signaling")
    }
    /// Hash: one signaling instance's heartbeat fields.
    pub(super) fn instance_key(&self, instance: &str) -> String {
        self.key(&format!("signaling:{instance}"))
    }
    /// Set: `participantId@room` of every member whose session is on an instance.
    pub(super) fn instance_members_key(&self, instance: &str) -> String {
        self.key(&format!("signaling:{instance}:members"))
    }
    /// Hash: dead instance -> `claimer|since` while its cleanup is under way.
    pub(super) fn cleanup_key(&self) -> String {
        self.key("signaling-cleanup")
    }
    /// Pub/sub channel of a room's events (`*` makes the pattern of every room).
    pub(super) fn room_events_channel(&self, room: &str) -> String {
        self.key(&format!("room-events:{room}"))
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
