//! Media node configuration: flags, each with an environment variable. [`MediaConfig`] is the
//! media itself (also embedded by the signaling node); [`NodeConfig`] is the whole `media-node`
//! process around it.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use clap::{Args, Parser};
use conclave_common::caps::{self, ParticipantCaps};

/// Conclave media node: forwards WebRTC media between the participants of its rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct NodeConfig {
    /// Internal HTTP address: /healthz, /readyz, /metrics, and the link endpoint for
    /// signaling nodes unless `--link-listen` gives it its own. Keep it private.
    #[arg(long, env = "CONCLAVE_MEDIA_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Serve the internal link (`/internal/link`) here instead of on `--listen`: an address
    /// on the cluster-internal interface, so that the link is not on the public address
    /// browsers send media to (docs/security.md, "The internal link").
    #[arg(long, env = "CONCLAVE_LINK_LISTEN")]
    pub link_listen: Option<SocketAddr>,
    /// Shared secret of the internal link, 32 bytes or more, the same on every node of the
    /// cluster: signaling nodes sign each link upgrade with it and the node proves it holds
    /// it. Required unless `--dev`.
    #[arg(long, env = "CONCLAVE_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// Development mode: without `--link-secret`, accept unauthenticated links (anyone who
    /// reaches the link can then control every room). Never in production.
    #[arg(long, env = "CONCLAVE_DEV")]
    pub dev: bool,
    #[command(flatten)]
    pub media: MediaConfig,
    /// Redis URL of the cluster (`redis://host:6379/`): register and heartbeat there so
    /// signaling nodes place rooms here. Without it the node only serves its links.
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    pub redis_url: Option<String>,
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
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Most participants this node takes (placement skips it when full).
    #[arg(long, env = "CONCLAVE_CAPACITY", default_value_t = 500)]
    pub capacity: u32,
    /// Internal link URL signaling nodes should use for this node. Default: built from the
    /// advertised IP and the `--listen` port.
    #[arg(long, env = "CONCLAVE_LINK_URL")]
    pub link_url: Option<String>,
    /// On SIGTERM (or Ctrl-C): take no new rooms, serve the live ones until they empty or
    /// this many seconds pass, then exit (what is left fails over to other nodes).
    #[arg(long, env = "CONCLAVE_DRAIN_TIMEOUT", default_value_t = 600)]
    pub drain_timeout_secs: u64,
}

/// Media settings, shared by the `media-node` binary and the signaling node's embedded media.
#[derive(Debug, Clone, Args)]
pub struct MediaConfig {
    /// UDP address of the first room thread's media socket; thread `i` binds this port + `i`
    /// (with port 0, each thread takes an ephemeral port). Every participant of a room is
    /// multiplexed on its thread's socket.
    #[arg(long, env = "CONCLAVE_UDP_LISTEN", default_value = "0.0.0.0:40000")]
    pub udp_listen: SocketAddr,
    /// IP address browsers should send media to (our ICE candidate); the port is the UDP
    /// port. Defaults to the bound IP, or, when bound to 0.0.0.0, this host's primary IP.
    #[arg(long, env = "CONCLAVE_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Name of this media node in logs, link messages and the cluster. Letters, digits, `-`,
    /// `_`, `.` (it names Redis keys).
    #[arg(long, env = "CONCLAVE_NODE_ID", default_value = "media-1",
          value_parser = conclave_common::names::parse_name)]
    pub node_id: String,
    /// Room threads (default: the cores this process may use). Each has its own UDP socket on
    /// the `--udp-listen` port + its index (40000, 40001, ...: open them all) and runs its
    /// rooms end to end; a new room goes to the least-loaded thread, and a room lives on one
    /// thread (docs/cluster.md, "Sizing media nodes").
    #[arg(long, env = "CONCLAVE_MEDIA_THREADS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub media_threads: Option<usize>,
    /// Load this node takes, in forwarded packets per second (fpps, docs/cluster.md, "Sizing
    /// media nodes"). Default: 50,000 per room thread. Published in the heartbeat; placement
    /// sends new rooms to the node with the most headroom.
    #[arg(long, env = "CONCLAVE_LOAD_CAPACITY", value_parser = clap::value_parser!(u64).range(1..))]
    pub load_capacity: Option<u64>,
    /// Seconds the peers of a closed signaling link keep forwarding media, waiting for their
    /// participants to resume on another signaling node. Keep it at least the signaling
    /// nodes' `--resume-grace-secs`.
    #[arg(long, env = "CONCLAVE_ORPHAN_GRACE", default_value_t = 20)]
    pub orphan_grace_secs: u64,
    /// Datagrams per second one participant may send to the media node; more are dropped
    /// before any decryption (`conclave_media_dropped_packets_total{reason="over_budget"}`).
    /// The default is far above what a browser sends (docs/security.md, "The UDP path").
    #[arg(long, env = "CONCLAVE_PEER_INGRESS_PPS", default_value_t = crate::sfu::udp::DEFAULT_PEER_INGRESS_PPS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_ingress_pps: u32,
    /// Estimate each subscriber's bandwidth (send-side, from the browser's transport-wide
    /// congestion feedback) and give its videos the simulcast layers that fit in it
    /// (docs/media-quality.md). Off by default until it is proven under a real bandwidth cap:
    /// every video then gets the layer its tile asks for, whatever the link carries.
    #[arg(long, env = "CONCLAVE_BWE", default_value_t = false, action = clap::ArgAction::Set)]
    pub bwe: bool,
    #[command(flatten)]
    pub caps: CapsConfig,
}

/// Caps on what one participant creates (`conclave_common::caps`). The signaling node has the
/// same flags and checks them first; the media node checks them again, since its link is a
/// second way in. Give both the same values.
#[derive(Debug, Clone, Args)]
pub struct CapsConfig {
    /// Largest SDP offer or answer, in bytes; a larger one is refused (`sdp_too_large`) before
    /// it is parsed. The default holds a full room's answer with room to spare.
    #[arg(long, env = "CONCLAVE_MAX_SDP_BYTES", default_value_t = caps::DEFAULT_MAX_SDP_BYTES,
          value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_sdp_bytes: u32,
    /// Most m-lines in a client's offer (`too_many_m_lines`): microphone, camera, and a
    /// screen share's video and audio.
    #[arg(long, env = "CONCLAVE_MAX_OFFER_M_LINES", default_value_t = caps::DEFAULT_MAX_OFFER_M_LINES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_offer_m_lines: u32,
    /// Most tracks one participant publishes (`too_many_tracks`).
    #[arg(long, env = "CONCLAVE_MAX_TRACKS", default_value_t = caps::DEFAULT_MAX_TRACKS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tracks: u32,
    /// Most ICE candidates a participant may trickle per peer connection
    /// (`too_many_candidates`).
    #[arg(long, env = "CONCLAVE_MAX_REMOTE_CANDIDATES", default_value_t = caps::DEFAULT_MAX_REMOTE_CANDIDATES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_remote_candidates: u32,
}

impl Default for CapsConfig {
    fn default() -> Self {
        ParticipantCaps::default().into()
    }
}

impl From<ParticipantCaps> for CapsConfig {
    fn from(c: ParticipantCaps) -> Self {
        CapsConfig {
            max_sdp_bytes: c.max_sdp_bytes,
            max_offer_m_lines: c.max_offer_m_lines,
            max_tracks: c.max_tracks,
            max_remote_candidates: c.max_remote_candidates,
        }
    }
}

impl CapsConfig {
    /// The caps these flags set.
    pub fn caps(&self) -> ParticipantCaps {
        ParticipantCaps {
            max_sdp_bytes: self.max_sdp_bytes,
            max_offer_m_lines: self.max_offer_m_lines,
            max_tracks: self.max_tracks,
            max_remote_candidates: self.max_remote_candidates,
        }
    }
}

impl MediaConfig {
    /// What one peer may cost its thread's router.
    pub fn router_limits(&self) -> crate::sfu::udp::RouterLimits {
        crate::sfu::udp::RouterLimits {
            ingress_pps: self.peer_ingress_pps,
            ..Default::default()
        }
    }

    /// The address to advertise for a socket bound at `bound`.
    pub fn advertised_addr(&self, bound: SocketAddr) -> SocketAddr {
        let ip = self
            .advertise_ip
            .or_else(|| (!bound.ip().is_unspecified()).then(|| bound.ip()))
            .or_else(primary_ip)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        SocketAddr::new(ip, bound.port())
    }
}

/// The IP of the interface holding the default route. `connect` on UDP sends nothing; it only
/// asks the kernel for a route.
fn primary_ip() -> Option<IpAddr> {
    let probe = UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?; // TEST-NET-1: never contacted.
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
