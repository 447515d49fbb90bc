//! The store itself: [`ClusterStore`] with its Redis connection, [`RedisSettings`] (the one
//! place every Redis connection of both node kinds is made: password, ACL user, TLS),
//! [`ClusterError`], and the name of every key (the table in `docs/cluster.md`). The keyspace
//! files beside it (`nodes`, `rooms`, `instances`, `events`) add the store's operations; this
//! file imports none of them.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::names::{self, NameError};

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

/// How a PEM certificate begins (an empty CA file would trust nothing, silently).
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// How to reach the cluster's Redis. Every Redis connection of both node kinds (the store's
/// multiplexed connection, the room bus's pub/sub, tests' helpers) is made from one of these
/// by [`RedisSettings::client`], so credentials and TLS apply to all of them.
///
/// - `redis://host:6379/`: no password; `redis://:PASSWORD@host/`: `requirepass`;
///   `redis://USER:PASSWORD@host/`: an ACL user.
/// - `password` (`--redis-password`, `CONCLAVE_REDIS_PASSWORD`) keeps the password out of the
///   URL (e.g. from a Kubernetes Secret); with it the URL names no password (a user is fine:
///   `redis://USER@host/`).
/// - `rediss://host:6380/`: TLS, the server's certificate checked against the system's roots,
///   or only against the PEM CA certificates in `ca_file` (`--redis-ca-file`) when given.
#[derive(Clone, Default)]
pub struct RedisSettings {
    pub url: String,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl From<&str> for RedisSettings {
    fn from(url: &str) -> Self {
        RedisSettings {
            url: url.to_string(),
            ..RedisSettings::default()
        }
    }
}

impl From<&String> for RedisSettings {
    fn from(url: &String) -> Self {
        url.as_str().into()
    }
}

/// Never the password.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl RedisSettings {
    /// The URL for logs (a password in it replaced by `***`).
    pub fn redacted_url(&self) -> String {
        redacted(&self.url)
    }

    /// A client for this Redis: the only constructor of Redis connections in Conclave.
    pub fn client(&self) -> Result<redis::Client, ClusterError> {
        let config = |what: &str| ClusterError::Config(what.to_string());
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map_err(|_| config("the Redis URL is not a valid redis:// or rediss:// URL"))?;
        if let Some(password) = self.password.as_ref().filter(|p| !p.is_empty()) {
            if info.redis.password.is_some() {
                return Err(config(
                    "the Redis password is both in the URL and in --redis-password: give it once",
                ));
            }
            info.redis.password = Some(password.clone());
        }
        let tls = matches!(info.addr, redis::ConnectionAddr::TcpTls { .. });
        let unusable = |e: redis::RedisError| ClusterError::Config(e.to_string());
        match &self.ca_file {
            None => redis::Client::open(info).map_err(unusable),
            Some(_) if !tls => Err(config("--redis-ca-file needs a rediss:// URL")),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    ClusterError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                if !root_cert
                    .windows(PEM_CERTIFICATE.len())
                    .any(|w| w == PEM_CERTIFICATE)
                {
                    return Err(ClusterError::Config(format!(
                        "{} holds no PEM certificate",
                        path.display()
                    )));
                }
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certificates).map_err(unusable)
            }
        }
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
    /// The settings cannot work (bad URL, unreadable CA file, password given twice): fix the
    /// configuration; retrying does not help.
    #[error("redis settings: {0}")]
    Config(String),
    /// Redis refused our credentials (wrong or missing password, unknown or disabled user).
    #[error("redis refused the credentials (wrong or missing password or user): {0}")]
    Auth(String),
    /// A community, room or node name outside the charset of `crate::names`.
    #[error("name {name:?} {reason}")]
    InvalidName { name: String, reason: NameError },
}

impl ClusterError {
    /// Whether retrying with the same settings cannot help (the node should stop and say so).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ClusterError::Config(_) | ClusterError::Auth(_))
    }

    /// A refused name, for the store's write paths.
    pub(super) fn check_name(name: &str) -> Result<(), ClusterError> {
        names::check_name(name).map_err(|reason| ClusterError::InvalidName {
            name: name.to_string(),
            reason,
        })
    }

    /// A refused room id (`community/room`).
    pub(super) fn check_room_id(room: &str) -> Result<(), ClusterError> {
        names::check_room_id(room).map_err(|reason| ClusterError::InvalidName {
            name: room.to_string(),
            reason,
        })
    }
}

/// Sort Redis's refusal of our credentials from other failures. The password is never in the
/// error text (Redis does not echo it).
fn classify(e: redis::RedisError) -> ClusterError {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if auth {
        ClusterError::Auth(e.to_string())
    } else {
        ClusterError::Redis(e)
    }
}

/// Connection attempts the store's connection manager retries when it finds its connection
/// gone: none, so a reconnection is one attempt and never sleeps. The redis crate (0.32)
/// sleeps at least 1 s, plus up to as much again of jitter, before its first retry, whatever
/// `factor` and `max_delay` say, and every command waits for the reconnection under way: right
/// after Redis came back, a join waited up to ~1.5 s for a retry that was sleeping (behind a
/// room's re-assertion, which waited for it too). With one attempt, a command during an outage
/// fails at once and the next one tries again; [`StoreConnection`] resends a command that found
/// a failed attempt.
const RECONNECT_RETRIES: usize = 0;
/// Longest wait for one connection attempt (an unreachable host; a closed port fails at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the answer to one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The store's connection: its multiplexed [`ConnectionManager`], and one resend of a command
/// that was never sent because the reconnection it waited for had failed. The manager makes
/// one connection attempt each time it finds the connection gone ([`RECONNECT_RETRIES`]); a
/// command that finds the last attempt failed starts a new one and fails without being sent.
/// Sent once more, it waits for that new attempt: the first command after Redis returns goes
/// through instead of failing on an attempt made while Redis was down. A command that may have
/// reached Redis is never resent (our scripts are not all idempotent: a resume rotates its
/// secret).
#[derive(Clone)]
pub(super) struct StoreConnection(ConnectionManager);

/// Whether a command failed before it was sent: the connection manager's reconnection had
/// failed (the manager says so with this text, on I/O errors only, and only there).
fn never_sent(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().starts_with("Reconnecting failed")
}

impl redis::aio::ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            match self.0.send_packed_command(cmd).await {
                Err(e) if never_sent(&e) => {
                    tracing::debug!(error = %e, "redis reconnection had failed; sending again");
                    self.0.send_packed_command(cmd).await
                }
                answer => answer,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            match self.0.send_packed_commands(cmd, offset, count).await {
                Err(e) if never_sent(&e) => {
                    tracing::debug!(error = %e, "redis reconnection had failed; sending again");
                    self.0.send_packed_commands(cmd, offset, count).await
                }
                answer => answer,
            }
        })
    }

    fn get_db(&self) -> i64 {
        redis::aio::ConnectionLike::get_db(&self.0)
    }
}

/// Cluster state over one Redis connection (cheap to clone; reconnects by itself).
#[derive(Clone)]
pub struct ClusterStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl ClusterStore {
    /// Connect to the Redis `redis` describes (a URL converts into [`RedisSettings`]); all keys
    /// go under `prefix` (e.g. `conclave:`). A PING proves the credentials:
    /// [`ClusterError::Auth`] when Redis refuses them.
    pub async fn connect(
        redis: impl Into<RedisSettings>,
        prefix: &str,
    ) -> Result<Self, ClusterError> {
        let client = redis.into().client()?;
        // Fail fast while Redis is away, and never make a command wait for a reconnection
        // that is sleeping (see `RECONNECT_RETRIES`): callers decide what to do, and the
        // next command reconnects.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(classify)?;
        // Without a password the connection opens fine and the first command is refused.
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(classify)?;
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

    pub(super) fn conn(&self) -> StoreConnection {
        StoreConnection(self.conn.clone())
    }

    /// The store's multiplexed connection (cheap to clone), for other users of the same Redis
    /// (the same single-attempt reconnection, without [`StoreConnection`]'s resend).
    pub fn connection_manager(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A Redis client for connections the store does not multiplex (pub/sub), made by
    /// [`RedisSettings::client`] (same credentials and TLS).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

/// A media node's keys (its hash and its room set) expire this long after its last heartbeat
/// (cleanup of dead nodes; a live node's heartbeat, every second, keeps them).
pub(super) const NODE_TTL_MS: u64 = 15_000;

/// Key naming: every key the store reads or writes from Rust (the table in `docs/cluster.md`).
/// Some Lua scripts (join, leave, resume, the dead instances' cleanup) still build
/// `signaling:{instance}:members` and `node:{id}:rooms` themselves from the prefix they are
/// given; placement, reservations, `node_down` and the re-assertion declare every key.
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
    /// Sorted set: the media nodes placement may take (live, not draining, not full), scored
    /// by `load - load_capacity` (ascending: most headroom first; ties: lowest id).
    pub(super) fn node_candidates_key(&self) -> String {
        self.key("node-candidates")
    }
    /// Sorted set: live media nodes (no dropped link since) -> last heartbeat (ms).
    pub(super) fn node_heartbeats_key(&self) -> String {
        self.key("node-heartbeats")
    }
    /// Hash: `{id}:participants`, `{id}:capacity`, `{id}:load`, `{id}:load_capacity` of each
    /// live media node, with the reservations made since its heartbeat.
    pub(super) fn node_counts_key(&self) -> String {
        self.key("node-counts")
    }
    /// Set: the rooms on one media node (expires with the node's hash).
    pub(super) fn node_rooms_key(&self, node_id: &str) -> String {
        self.key(&format!("node:{node_id}:rooms"))
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

    #[test]
    fn settings_print_no_password() {
        let settings = super::RedisSettings {
            url: "redis://app:in-url-pw@redis:6379/".into(),
            password: Some("flag-pw".into()),
            ca_file: None,
        };
        let shown = format!("{settings:?} {}", settings.redacted_url());
        assert!(
            !shown.contains("in-url-pw") && !shown.contains("flag-pw"),
            "{shown}"
        );
        assert!(shown.contains("redis://app:***@redis:6379/"), "{shown}");
    }
}
