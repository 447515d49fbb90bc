//! Starting the media node — the socket, the room threads and the `MediaNode` actor — and the
//! [`MediaNodeHandle`] it returns: what the `media-node` process and the signaling node's
//! embedded media hold of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use actix::prelude::*;
use conclave_common::link::{MediaEvent, ToMediaNode};

use crate::config::MediaConfig;
use crate::error::StartError;
use crate::metrics;
use crate::node::MediaNode;
use crate::sfu::room::SfuShared;
use crate::sfu::udp::{MediaSocket, UdpStats};

/// A running media node (its actors run on their own arbiter thread).
#[derive(Clone)]
pub struct MediaNodeHandle {
    pub node: Addr<MediaNode>,
    /// Where the UDP socket is bound.
    pub udp_local: SocketAddr,
    /// What browsers are told to send to.
    pub advertised: SocketAddr,
    pub node_id: String,
    pub udp_stats: Arc<UdpStats>,
    /// Peers on this node right now, over all rooms.
    pub participants: Arc<AtomicU64>,
    /// Rooms on this node right now. Like `participants`, read without asking the node's
    /// actor (health and metrics must answer while the media thread is saturated).
    pub rooms: Arc<AtomicU64>,
    /// Set on SIGTERM: placement skips the node, readiness is false.
    pub draining: Arc<AtomicBool>,
    /// Wakes the cluster heartbeat at once (to announce draining without waiting).
    pub heartbeat_now: Arc<tokio::sync::Notify>,
}

impl MediaNodeHandle {
    /// Where in-process link commands go.
    pub fn commands(&self) -> Recipient<ToMediaNode> {
        self.node.clone().recipient()
    }

    /// The `hello` sent on a new link, with the proof that we hold the link secret.
    pub fn hello(&self, proof: Option<String>) -> MediaEvent {
        MediaEvent::Hello {
            node_id: self.node_id.clone(),
            udp_addr: self.advertised.to_string(),
            proof,
        }
    }
}

/// Bind the media UDP socket and start the node: the receive loop and the `MediaNode` on one
/// arbiter thread, room SFUs spread over `config.media_threads` arbiter threads.
/// Must be called inside a running actix system.
pub fn start(config: &MediaConfig) -> Result<MediaNodeHandle, StartError> {
    metrics::init();
    let addr = config.udp_listen;
    let udp = |source| StartError::Udp { addr, source };
    let socket = MediaSocket::bind(addr).map_err(udp)?;
    let udp_local = socket.local_addr().map_err(udp)?;
    let advertised = config.advertised_addr(udp_local);
    let node_id = config.node_id.clone();
    let udp_stats = Arc::new(UdpStats::default());
    let participants = Arc::new(AtomicU64::new(0));
    let counter = participants.clone();
    let rooms = Arc::new(AtomicU64::new(0));
    let room_count = rooms.clone();

    // One crypto provider for every Rtc of the process (str0m's default backend).
    str0m::crypto::from_feature_flags().install_process_default();

    let sender = socket.sender().map_err(udp)?;
    let threads = config.media_threads.unwrap_or(1);
    // The receive loop's own thread hosts rooms too (the first room, so a single room costs
    // no hop between threads per packet); further threads take the rooms after it.
    let arbiter = Arbiter::new();
    let mut room_arbiters = vec![arbiter.handle()];
    for _ in 1..threads.max(1) {
        let extra = Arbiter::new();
        room_arbiters.push(extra.handle());
        // Arbiter threads live as long as the process.
        std::mem::forget(extra);
    }
    let stats = udp_stats.clone();
    let orphan_grace = std::time::Duration::from_secs(config.orphan_grace_secs);
    let caps = config.caps.caps();
    let node = MediaNode::start_in_arbiter(&arbiter.handle(), move |_ctx| {
        // Inside the arbiter: its runtime owns the socket's receive side and the loop.
        let (router, updates) = tokio::sync::mpsc::unbounded_channel();
        socket.spawn_receive_loop(updates, stats);
        MediaNode::new(
            SfuShared {
                socket: sender,
                router,
                advertised,
                participants: counter,
                caps,
            },
            room_arbiters,
            orphan_grace,
            room_count,
        )
    });
    std::mem::forget(arbiter);
    tracing::info!(%udp_local, %advertised, node_id = %node_id, "media node started");
    Ok(MediaNodeHandle {
        node,
        udp_local,
        advertised,
        node_id,
        udp_stats,
        participants,
        rooms,
        draining: Arc::default(),
        heartbeat_now: Arc::default(),
    })
}
