//! Media node configuration: flags, each with an environment variable.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use clap::Args;

/// Media settings, shared by the `media-node` binary and the signaling node's embedded media.
#[derive(Debug, Clone, Args)]
pub struct MediaConfig {
    /// UDP address for all media (every participant of the node is multiplexed on it).
    #[arg(long, env = "CONCLAVE_UDP_LISTEN", default_value = "0.0.0.0:40000")]
    pub udp_listen: SocketAddr,
    /// IP address browsers should send media to (our ICE candidate); the port is the UDP
    /// port. Defaults to the bound IP, or, when bound to 0.0.0.0, this host's primary IP.
    #[arg(long, env = "CONCLAVE_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Name of this media node in logs, link messages and (later) the cluster.
    #[arg(long, env = "CONCLAVE_NODE_ID", default_value = "media-1")]
    pub node_id: String,
    /// Threads running room SFUs (a room lives on one). More threads take more rooms on a
    /// many-core node, but cost ≈ 15 % CPU per forwarded packet in our benchmark (see
    /// docs/performance.md), so the default is 1.
    #[arg(long, env = "CONCLAVE_MEDIA_THREADS")]
    pub media_threads: Option<usize>,
    /// Seconds the peers of a closed signaling link keep forwarding media, waiting for their
    /// participants to resume on another signaling node. Keep it at least the signaling
    /// nodes' `--resume-grace-secs`.
    #[arg(long, env = "CONCLAVE_ORPHAN_GRACE", default_value_t = 20)]
    pub orphan_grace_secs: u64,
}

impl MediaConfig {
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
