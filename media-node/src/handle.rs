//! Starting the media node — the room threads with their sockets, and the `MediaNode` actor
//! on a control thread — and the [`MediaNodeHandle`] it returns: what the `media-node` process
//! and the signaling node's embedded media hold of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use actix::prelude::*;
use conclave_common::link::{MediaEvent, ToMediaNode};

use crate::config::MediaConfig;
use crate::error::StartError;
use crate::load::NodeLoadFigures;
use crate::metrics;
use crate::node::MediaNode;
use crate::threads::start_room_threads;

/// A running media node (its actors run on their own arbiter threads).
#[derive(Clone)]
pub struct MediaNodeHandle {
    pub node: Addr<MediaNode>,
    /// Where each room thread's UDP socket is bound (index = thread).
    pub udp_locals: Vec<SocketAddr>,
    /// What browsers are told to send to, per room thread (a room's candidate is its
    /// thread's).
    pub advertised: Vec<SocketAddr>,
    pub node_id: String,
    /// Peers on this node right now, over all rooms.
    pub participants: Arc<AtomicU64>,
    /// Rooms on this node right now. Like `participants`, read without asking the node's
    /// actor (health and metrics must answer while a room thread is saturated).
    pub rooms: Arc<AtomicU64>,
    /// Load, bits out and CPU as last measured (the heartbeat publishes them).
    pub load: Arc<NodeLoadFigures>,
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

    /// Each room thread's advertised address, as `ip:port`.
    pub fn advertised_strings(&self) -> Vec<String> {
        self.advertised.iter().map(|a| a.to_string()).collect()
    }

    /// The `hello` sent on a new link, with the proof that we hold the link secret.
    pub fn hello(&self, proof: Option<String>) -> MediaEvent {
        MediaEvent::Hello {
            node_id: self.node_id.clone(),
            udp_addr: self.advertised[0].to_string(),
            udp_addrs: self.advertised_strings(),
            proof,
        }
    }
}

/// Bind one UDP socket per room thread and start the node: the room threads (each with its
/// receive loop), and the `MediaNode` on a control thread of its own. The node's load capacity
/// is `load_capacity`, or the default for its thread count. Must be called inside a running
/// actix system.
pub fn start(config: &MediaConfig) -> Result<MediaNodeHandle, StartError> {
    metrics::init();
    // One crypto provider for every Rtc of the process (str0m's default backend).
    str0m::crypto::from_feature_flags().install_process_default();

    let participants = Arc::new(AtomicU64::new(0));
    let rooms = Arc::new(AtomicU64::new(0));
    let threads = start_room_threads(config, participants.clone(), config.caps.caps())?;
    let udp_locals: Vec<_> = threads.iter().map(|t| t.udp_local).collect();
    let advertised: Vec<_> = threads.iter().map(|t| t.shared.advertised).collect();
    let capacity = config
        .load_capacity
        .unwrap_or_else(|| conclave_common::load::default_capacity(threads.len()));
    let load = Arc::new(NodeLoadFigures::default());
    load.capacity_fpps.store(capacity, Relaxed);
    metrics::LOAD_CAPACITY_FPPS.set(capacity as i64);

    let orphan_grace = std::time::Duration::from_secs(config.orphan_grace_secs);
    let (figures, room_count) = (load.clone(), rooms.clone());
    let control = Arbiter::new();
    let node = MediaNode::start_in_arbiter(&control.handle(), move |_| {
        MediaNode::new(threads, figures, orphan_grace, room_count)
    });
    // The control thread lives as long as the process.
    std::mem::forget(control);
    let node_id = config.node_id.clone();
    tracing::info!(udp = ?udp_locals, advertised = ?advertised, node_id = %node_id, load_capacity = capacity, "media node started");
    Ok(MediaNodeHandle {
        node,
        udp_locals,
        advertised,
        node_id,
        participants,
        rooms,
        load,
        draining: Arc::default(),
        heartbeat_now: Arc::default(),
    })
}
