//! The media node's start-up errors: what could not be set up, and where. (Its other
//! boundaries have their own types: link commands answer with `MediaEvent` errors, a panic
//! inside one `Rtc` is caught by `sfu::rtc::guarded`.)

use std::net::SocketAddr;

/// Why the media node cannot start (printed; the process exits with status 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind media UDP {addr}: {source}")]
    Udp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("media UDP ports {base} + {threads} room threads run past port 65535: give a lower --udp-listen port or fewer --media-threads")]
    UdpPorts { base: SocketAddr, threads: usize },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no link secret: give --link-secret (CONCLAVE_LINK_SECRET), 32 bytes or more, the same on every node (or --dev on a development machine, for an unauthenticated link)")]
    NoLinkSecret,
    #[error("--link-secret: {0}")]
    LinkSecret(#[from] conclave_common::link_auth::LinkAuthError),
    #[error("internal HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    /// The cluster's Redis refused our credentials, or its settings cannot work.
    #[error("cluster redis at {url}: {source}")]
    Redis {
        url: String,
        source: conclave_common::cluster::ClusterError,
    },
}
