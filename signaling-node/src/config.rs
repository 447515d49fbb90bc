//! Signaling node configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use conclave_media_node::config::MediaConfig;

use crate::client_ip::{Cidr, TrustedProxies};
use crate::limits::{Limits, Rate, RateLimits, SessionLimits};
use crate::turn::{TurnConfigError, TurnServers};

/// Conclave signaling node: WebSocket signaling for browsers, rooms, and (with no
/// `--media-node`) an embedded media node.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// HTTP(S) address for browsers (web client, WebSocket, health).
    #[arg(long, env = "CONCLAVE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Internal HTTP address for Prometheus and probes: `/metrics`, `/healthz`, `/readyz`.
    /// Keep it private.
    #[arg(long, env = "CONCLAVE_INTERNAL_LISTEN", default_value = "0.0.0.0:9090")]
    pub internal_listen: SocketAddr,
    /// On SIGTERM (or Ctrl-C): not ready, no new WebSockets, every client asked to reconnect
    /// elsewhere; exit once no room is left here or after this many seconds.
    #[arg(long, env = "CONCLAVE_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Internal link URL of a separate media node (`ws://host:8081/internal/link`). Without
    /// it, a media node runs inside this process.
    #[arg(long, env = "CONCLAVE_MEDIA_NODE")]
    pub media_node: Option<String>,
    /// Cluster mode: Redis URL of the cluster (`redis://host:6379/`). New rooms go to the
    /// least-loaded live media node registered there; `--media-node` and the embedded media
    /// node are not used.
    #[arg(long, env = "CONCLAVE_REDIS_URL", conflicts_with = "media_node")]
    pub redis_url: Option<String>,
    /// Shared secret of the internal link to separate media nodes (`--media-node`, cluster
    /// mode), 32 bytes or more, the same on every node: each link upgrade is signed with it
    /// and the media node must prove it holds it. Required with separate media nodes
    /// unless `--dev`.
    #[arg(long, env = "CONCLAVE_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// Prefix of every cluster key in Redis.
    #[arg(long, env = "CONCLAVE_REDIS_PREFIX", default_value = "conclave:")]
    pub redis_prefix: String,
    /// Redis password (the `default` user's `requirepass`, or the password of the ACL user the
    /// URL names: `redis://USER@host/`), kept out of the URL, e.g. from a Kubernetes Secret.
    /// Not together with a password in the URL.
    #[arg(long, env = "CONCLAVE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// PEM file of the CA certificate(s) a `rediss://` Redis's certificate must chain to
    /// (instead of the system's roots).
    #[arg(long, env = "CONCLAVE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Shared secret for access tokens (JWT HS256). Required unless `--dev`.
    #[arg(long, env = "CONCLAVE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Longest a token may still live when used: a token whose `exp` is further ahead is
    /// refused (`invalid_token`).
    #[arg(long, env = "CONCLAVE_TOKEN_MAX_LIFETIME", default_value_t = 86_400)]
    pub token_max_lifetime_secs: u64,
    /// If set, tokens must carry this `aud` claim.
    #[arg(long, env = "CONCLAVE_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// If set, tokens must carry this `iss` claim.
    #[arg(long, env = "CONCLAVE_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// Development mode: `/dev/token` mints tokens for the demo page; a random token secret
    /// is used if none is given. Never in production.
    #[arg(long, env = "CONCLAVE_DEV")]
    pub dev: bool,
    /// Allow `--dev` together with `--redis-url` or `--token-secret` (a local test cluster):
    /// without it such a start is refused, since dev mode would let anyone mint tokens for
    /// those real services. Starts with a loud warning. No effect without `--dev`.
    #[arg(long, env = "CONCLAVE_DEV_WITH_REAL_SERVICES")]
    pub dev_with_real_services: bool,
    /// Serve HTTPS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, env = "CONCLAVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "CONCLAVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate generated at start (browsers on other
    /// machines allow the camera only on https). Only with `--dev`.
    #[arg(long, env = "CONCLAVE_TLS_SELF_SIGNED", requires = "dev")]
    pub tls_self_signed: bool,
    /// Maximum participants per room (the old system's voice channel limit is 25).
    #[arg(long, env = "CONCLAVE_ROOM_CAP", default_value_t = 25)]
    pub room_cap: usize,
    /// Seconds between server heartbeats (WebSocket ping + `heartbeat` message).
    #[arg(long, env = "CONCLAVE_HEARTBEAT_INTERVAL", default_value_t = 10)]
    pub heartbeat_interval_secs: u64,
    /// Seconds of client silence after which the server closes the connection.
    #[arg(long, env = "CONCLAVE_CLIENT_TIMEOUT", default_value_t = 30)]
    pub client_timeout_secs: u64,
    /// Name of this signaling node in the cluster (logs, Redis, presence events). Each process
    /// start adds a random suffix, so a restarted node is a new instance.
    /// Letters, digits, `-`, `_`, `.` (it names Redis keys).
    #[arg(long, env = "CONCLAVE_SIGNALING_ID", default_value = "sig",
          value_parser = conclave_common::names::parse_name)]
    pub signaling_id: String,
    /// Seconds a participant whose WebSocket dropped stays in its room (media flowing) so
    /// that it can `resume` on a new connection, on this or another signaling node.
    #[arg(long, env = "CONCLAVE_RESUME_GRACE", default_value_t = 15)]
    pub resume_grace_secs: u64,
    /// POST every presence event (JSON) to this URL, with retries.
    #[arg(long, env = "CONCLAVE_PRESENCE_WEBHOOK")]
    pub presence_webhook: Option<String>,
    /// Sign presence webhook bodies with HMAC-SHA256 under this secret
    /// (`X-Conclave-Signature: sha256=<hex>`).
    #[arg(long, env = "CONCLAVE_PRESENCE_WEBHOOK_SECRET", hide_env_values = true)]
    pub presence_webhook_secret: Option<String>,
    /// Approximate length kept of each community's presence Stream in Redis.
    #[arg(long, env = "CONCLAVE_PRESENCE_STREAM_LEN", default_value_t = 100_000)]
    pub presence_stream_len: usize,
    /// Bearer key for the operators' query API (`/api/...`). Without it the API is off,
    /// except in `--dev` mode where it is open.
    #[arg(long, env = "CONCLAVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Web origins (besides the node's own host) whose pages may open `/ws`, comma-separated
    /// `scheme://host[:port]` (an app embedding the call); `*` for any. A handshake with
    /// another `Origin` gets 403; one without `Origin` (not a browser) is allowed.
    #[arg(long, env = "CONCLAVE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Number of HTTP worker threads (default: one per core).
    #[arg(long, env = "CONCLAVE_WORKERS")]
    pub workers: Option<usize>,
    /// Budget per WebSocket of `setAudio`/`setVideo`/`setDeafened`/`setTrackViews`:
    /// `RATE:BURST` (messages per second sustained, messages at once). A session over any budget is closed with 1008.
    #[arg(long, env = "CONCLAVE_RATE_STATE", default_value = "5:30")]
    pub rate_state: Rate,
    /// Budget per WebSocket of `iceCandidate` (`RATE:BURST`).
    #[arg(long, env = "CONCLAVE_RATE_CANDIDATE", default_value = "20:200")]
    pub rate_candidate: Rate,
    /// Budget per WebSocket of `offer` and `answer` (`RATE:BURST`).
    #[arg(long, env = "CONCLAVE_RATE_NEGOTIATION", default_value = "10:50")]
    pub rate_negotiation: Rate,
    /// Budget per WebSocket of `join`, `resume` and `leave` (`RATE:BURST`).
    #[arg(long, env = "CONCLAVE_RATE_MEMBERSHIP", default_value = "1:10")]
    pub rate_membership: Rate,
    /// Budget per WebSocket of `heartbeat` messages and ping/pong frames (`RATE:BURST`).
    #[arg(long, env = "CONCLAVE_RATE_HEARTBEAT", default_value = "2:20")]
    pub rate_heartbeat: Rate,
    /// Budget per WebSocket of frames that are not a client message (`RATE:BURST`).
    #[arg(long, env = "CONCLAVE_RATE_INVALID", default_value = "1:10")]
    pub rate_invalid: Rate,
    /// Seconds a new WebSocket has to send `join` or `resume` before it is closed (1008).
    #[arg(long, env = "CONCLAVE_JOIN_DEADLINE", default_value_t = 10)]
    pub join_deadline_secs: u64,
    /// Bytes of server messages that may wait for a client that does not read; over it the
    /// connection is closed (1013) and, if the client still does not read, reset.
    #[arg(long, env = "CONCLAVE_OUTBOUND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: usize,
    /// Kernel send buffer of each connection, in bytes (0: the kernel's autotuning, which
    /// grows it to 4 MiB for a client that does not read).
    #[arg(long, env = "CONCLAVE_SOCKET_SEND_BUFFER", default_value_t = 128 * 1024)]
    pub socket_send_buffer_bytes: usize,
    /// Most WebSockets open at once from one client address (IPv6: one /64); 0: no limit.
    /// Behind a proxy, set `--trusted-proxies`, or every client has the proxy's address.
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,
    /// Reverse proxies (IPs or CIDR blocks, comma-separated) whose `X-Forwarded-For` gives
    /// the client's address. From any other peer the header is ignored.
    #[arg(long, env = "CONCLAVE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// Cluster mode: most Redis operations one room may have waiting; over it, events and
    /// record rewrites are dropped (re-asserted within seconds) and joins get `unavailable`.
    #[arg(long, env = "CONCLAVE_ROOM_REDIS_QUEUE", default_value_t = 256)]
    pub room_redis_queue: usize,
    /// TURN and STUN servers for browsers whose network blocks the direct path to the media
    /// node, sent in every `joined` as `iceServers`: repeat the flag or separate with commas,
    /// e.g. `turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp`.
    /// `turn:`/`turns:` URIs need the shared secret (`--turn-secret` or `--turn-secret-file`).
    #[arg(long = "turn-uri", env = "CONCLAVE_TURN_URIS", value_delimiter = ',')]
    pub turn_uris: Vec<String>,
    /// The TURN server's shared secret (coturn: `use-auth-secret`, `static-auth-secret`):
    /// each participant gets credentials signed with it, never the secret itself.
    #[arg(long, env = "CONCLAVE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// File holding the TURN shared secret (e.g. a mounted Kubernetes Secret; one trailing
    /// newline is ignored), instead of `--turn-secret`.
    #[arg(long, env = "CONCLAVE_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// Seconds a participant's TURN credentials stay valid. The browser refreshes its TURN
    /// allocation with them for the whole call, so keep it longer than calls last; a resume
    /// or a new media connection gets fresh ones.
    #[arg(long = "turn-ttl", env = "CONCLAVE_TURN_TTL", default_value_t = 86_400)]
    pub turn_ttl_secs: u64,
    #[command(flatten)]
    pub media: MediaConfig,
}

impl Config {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs.max(1))
    }
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout_secs.max(2))
    }
    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs(self.resume_grace_secs)
    }
    /// The TURN/STUN servers clients get (`None`: none configured).
    pub fn turn(&self) -> Result<Option<TurnServers>, TurnConfigError> {
        TurnServers::from_flags(
            &self.turn_uris,
            self.turn_secret.as_deref(),
            self.turn_secret_file.as_deref(),
            Duration::from_secs(self.turn_ttl_secs),
        )
    }
    /// What one client may do (rates, queues, deadlines, connections).
    pub fn limits(&self) -> Limits {
        Limits {
            session: SessionLimits {
                rates: RateLimits {
                    state: self.rate_state,
                    candidate: self.rate_candidate,
                    negotiation: self.rate_negotiation,
                    membership: self.rate_membership,
                    heartbeat: self.rate_heartbeat,
                    invalid: self.rate_invalid,
                },
                join_deadline: Duration::from_secs(self.join_deadline_secs.max(1)),
                outbound_queue_bytes: self.outbound_queue_bytes.max(64 * 1024),
                socket_send_buffer: self.socket_send_buffer_bytes,
            },
            max_connections_per_ip: self.max_connections_per_ip,
            trusted_proxies: TrustedProxies(self.trusted_proxies.clone()),
            room_redis_queue: self.room_redis_queue.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the library's defaults (tests and embedders get what the
    /// binary gets).
    #[test]
    fn limit_flags_default_to_the_library_defaults() {
        let config = Config::parse_from(["signaling-node", "--dev"]);
        let limits = config.limits();
        let defaults = Limits::default();
        assert_eq!(limits.session.rates, defaults.session.rates);
        assert_eq!(limits.session.join_deadline, defaults.session.join_deadline);
        assert_eq!(
            limits.session.outbound_queue_bytes,
            defaults.session.outbound_queue_bytes
        );
        assert_eq!(
            limits.session.socket_send_buffer,
            defaults.session.socket_send_buffer
        );
        assert_eq!(
            limits.max_connections_per_ip,
            defaults.max_connections_per_ip
        );
        assert_eq!(limits.room_redis_queue, defaults.room_redis_queue);
        assert!(limits.trusted_proxies.0.is_empty());
    }

    #[test]
    fn limit_flags_parse() {
        let config = Config::parse_from([
            "signaling-node",
            "--dev",
            "--rate-state",
            "100:500",
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.5",
        ]);
        assert_eq!(config.rate_state, Rate::new(100.0, 500));
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(Config::try_parse_from(["signaling-node", "--rate-state", "5"]).is_err());
        assert!(Config::try_parse_from(["signaling-node", "--trusted-proxies", "x"]).is_err());
    }

    #[test]
    fn turn_uris_repeat_or_split_on_commas() {
        let config = Config::parse_from([
            "signaling-node",
            "--dev",
            "--turn-uri",
            "turn:t.example.com:3478?transport=udp,turns:t.example.com:443?transport=tcp",
            "--turn-uri",
            "stun:t.example.com:3478",
            "--turn-secret",
            "s3cret",
        ]);
        assert_eq!(config.turn_uris.len(), 3);
        let turn = config.turn().unwrap().unwrap();
        let ice = turn.ice_servers("p", std::time::SystemTime::now());
        assert_eq!(ice.len(), 2, "{ice:?}");
        assert!(Config::parse_from(["signaling-node", "--dev"])
            .turn()
            .unwrap()
            .is_none());
    }
}
