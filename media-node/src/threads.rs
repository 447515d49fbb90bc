//! Room threads: each one an arbiter with its own UDP socket (its own port), its own router
//! and its rooms, so that a datagram is received, decrypted, forwarded and sent on one thread,
//! with no hop between threads. The node puts each new room on the least-loaded thread
//! (`node.rs`); a room never moves, so one thread bounds the largest room.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::{Arbiter, ArbiterHandle};
use conclave_common::caps::ParticipantCaps;

use crate::config::MediaConfig;
use crate::error::StartError;
use crate::load::{current_tid, ThreadLoad};
use crate::metrics::ThreadMetrics;
use crate::sfu::room::SfuShared;
use crate::sfu::udp::MediaSocket;

/// One room thread as the node's control actor holds it.
pub struct RoomThread {
    pub index: usize,
    pub arbiter: ArbiterHandle,
    /// What the thread's rooms share: its socket, router, advertised address, load.
    pub shared: SfuShared,
    /// Where its socket is bound.
    pub udp_local: SocketAddr,
    pub metrics: ThreadMetrics,
}

/// How many room threads: the flag, else the cores this process may use.
pub fn thread_count(config: &MediaConfig) -> usize {
    config
        .media_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Bind one socket per room thread and start the threads with their receive loops. Thread
/// `i` binds `udp_listen`'s port + `i` (each takes its own ephemeral port when that is 0).
pub fn start_room_threads(
    config: &MediaConfig,
    participants: Arc<AtomicU64>,
    caps: ParticipantCaps,
) -> Result<Vec<RoomThread>, StartError> {
    let count = thread_count(config);
    let base = config.udp_listen;
    // Bind every socket first: a taken port fails the start before any thread runs.
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let mut addr = base;
        if base.port() != 0 {
            let port = u16::try_from(usize::from(base.port()) + index).map_err(|_| {
                StartError::UdpPorts {
                    base,
                    threads: count,
                }
            })?;
            addr.set_port(port);
        }
        let udp = |source| StartError::Udp { addr, source };
        let socket = MediaSocket::bind(addr).map_err(udp)?;
        let local = socket.local_addr().map_err(udp)?;
        sockets.push((socket, local));
    }
    let mut threads = Vec::with_capacity(count);
    for (index, (socket, udp_local)) in sockets.into_iter().enumerate() {
        let metrics = ThreadMetrics::new(index);
        let sender = socket
            .sender(metrics.clone())
            .map_err(|source| StartError::Udp {
                addr: udp_local,
                source,
            })?;
        let load = Arc::new(ThreadLoad::default());
        let arbiter = Arbiter::new();
        let (router, updates) = tokio::sync::mpsc::unbounded_channel();
        let (loop_metrics, thread_load) = (metrics.clone(), load.clone());
        let limits = config.router_limits();
        arbiter.spawn_fn(move || {
            // On the room thread: its runtime owns the socket's receive side.
            if let Some(tid) = current_tid() {
                let _ = thread_load.tid.set(tid);
            }
            socket.spawn_receive_loop(updates, loop_metrics, limits);
        });
        threads.push(RoomThread {
            index,
            arbiter: arbiter.handle(),
            shared: SfuShared {
                socket: sender,
                router,
                advertised: config.advertised_addr(udp_local),
                participants: participants.clone(),
                caps,
                load,
                counters: metrics.clone(),
                bwe: config.bwe,
            },
            udp_local,
            metrics,
        });
        // Room threads live as long as the process.
        std::mem::forget(arbiter);
    }
    Ok(threads)
}
