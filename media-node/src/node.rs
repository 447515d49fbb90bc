//! `MediaNode`: the actor that owns the room SFUs of this node, puts each new room on the
//! least-loaded room thread and dispatches link commands to them; it also runs the load meter.
//! Control traffic only, on its own thread; media never passes through here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::link::{FromMediaNode, MediaCommand, MediaEvent, ToMediaNode};
use conclave_common::load;
use conclave_common::protocol::ErrorCode;

use crate::load::{LoadMeter, NodeLoadFigures, SAMPLE_INTERVAL};
use crate::sfu::messages::{
    AddPeer, AdoptPeer, PeerAnswer, PeerCandidate, RemovePeer, RoomEmpty, SetTrackViews, StopRoom,
};
use crate::sfu::room::RoomSfu;
use crate::threads::RoomThread;

/// Peer keys of each room start at a distinct multiple of this, so keys are unique per node.
const PEER_KEYS_PER_ROOM: u64 = 1 << 32;

/// A room hosted here.
struct RoomEntry {
    addr: Addr<RoomSfu>,
    /// Index of its room thread.
    thread: usize,
    /// `AddPeer`s sent to this room, compared with the room's count when it reports empty.
    adds_sent: u64,
}

/// The node's one control actor: rooms by name, each a `RoomSfu` on one of the room threads.
pub struct MediaNode {
    /// The room threads, each with its socket and what its rooms share.
    threads: Vec<RoomThread>,
    /// Turns the threads' counts into rates, once per `SAMPLE_INTERVAL`.
    meter: LoadMeter,
    /// Where the meter's figures go (the heartbeat and health read them).
    figures: Arc<NodeLoadFigures>,
    rooms: HashMap<String, RoomEntry>,
    /// Rooms opened so far: numbers each room's peer keys.
    rooms_created: u64,
    /// How long peers of a closed link keep forwarding, waiting to be adopted.
    orphan_grace: Duration,
    /// `rooms.len()`, shared: health and metrics read it without a message to this actor,
    /// which may be busy behind a saturated room thread.
    room_count: Arc<AtomicU64>,
}

impl MediaNode {
    pub fn new(
        threads: Vec<RoomThread>,
        figures: Arc<NodeLoadFigures>,
        orphan_grace: Duration,
        room_count: Arc<AtomicU64>,
    ) -> Self {
        let meter = LoadMeter::new(
            threads
                .iter()
                .map(|t| (t.shared.load.clone(), t.metrics.clone()))
                .collect(),
        );
        MediaNode {
            threads,
            meter,
            figures,
            rooms: HashMap::new(),
            rooms_created: 0,
            orphan_grace,
            room_count,
        }
    }

    /// The room thread a new room goes to: the least loaded (measured plus reserved), the
    /// lowest index on a tie.
    fn least_loaded_thread(&self) -> &RoomThread {
        let now = std::time::Instant::now();
        // Invariant: there is at least one room thread (`thread_count` is at least 1).
        self.threads
            .iter()
            .min_by_key(|t| (t.shared.load.load(now), t.index))
            .expect("at least one room thread")
    }

    fn room_for_add(&mut self, room: &str, ctx: &mut Context<Self>) -> &mut RoomEntry {
        if !self.rooms.contains_key(room) {
            self.rooms_created += 1;
            let thread = self.least_loaded_thread();
            // The room is placed to be joined: hold a small call's cost on its thread so
            // that rooms opened back to back spread over the threads.
            thread.shared.load.reserve(load::new_room_reservation());
            thread.shared.load.rooms.fetch_add(1, Relaxed);
            let sfu = RoomSfu::new(
                room.to_string(),
                thread.shared.clone(),
                ctx.address().recipient(),
                self.rooms_created * PEER_KEYS_PER_ROOM,
            );
            tracing::info!(%room, thread = thread.index, "room opened on a room thread");
            let entry = RoomEntry {
                addr: RoomSfu::start_in_arbiter(&thread.arbiter, |_| sfu),
                thread: thread.index,
                adds_sent: 0,
            };
            self.rooms.insert(room.to_string(), entry);
            self.room_count.fetch_add(1, Relaxed);
            crate::metrics::ROOMS.inc();
        }
        // Invariant: inserted just above if it was missing.
        self.rooms.get_mut(room).expect("room entry exists")
    }
}

impl Actor for MediaNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.meter.sample(&self.figures);
        ctx.run_interval(SAMPLE_INTERVAL, |node, _| node.meter.sample(&node.figures));
    }
}

impl Handler<ToMediaNode> for MediaNode {
    type Result = ();
    /// A command from a signaling node: hand it to the room's SFU.
    fn handle(&mut self, msg: ToMediaNode, ctx: &mut Context<Self>) {
        let ToMediaNode { cmd, reply_to } = msg;
        match cmd {
            MediaCommand::AddPeer {
                room,
                participant_id,
                offer,
                adopt_verifier,
                sources,
            } => {
                let entry = self.room_for_add(&room, ctx);
                entry.adds_sent += 1;
                entry.addr.do_send(AddPeer {
                    participant_id,
                    offer,
                    adopt_verifier,
                    sources,
                    link: reply_to,
                });
            }
            MediaCommand::Answer {
                room,
                participant_id,
                sdp,
            } => match self.rooms.get(&room) {
                Some(entry) => entry.addr.do_send(PeerAnswer {
                    participant_id,
                    sdp,
                    link: reply_to,
                }),
                None => reply_to.do_send(FromMediaNode(MediaEvent::PeerError {
                    room,
                    participant_id,
                    code: ErrorCode::InvalidState,
                    message: "no media peer for this participant".into(),
                })),
            },
            MediaCommand::Candidate {
                room,
                participant_id,
                candidate,
            } => {
                if let Some(entry) = self.rooms.get(&room) {
                    entry.addr.do_send(PeerCandidate {
                        participant_id,
                        candidate,
                        link: reply_to,
                    });
                }
            }
            MediaCommand::SetTrackViews {
                room,
                participant_id,
                views,
            } => {
                if let Some(entry) = self.rooms.get(&room) {
                    entry.addr.do_send(SetTrackViews {
                        participant_id,
                        views,
                        link: reply_to,
                    });
                }
            }
            MediaCommand::RemovePeer {
                room,
                participant_id,
            } => {
                if let Some(entry) = self.rooms.get(&room) {
                    // Only the signaling node holding the peer may remove it: another one
                    // (whose member resumed elsewhere meanwhile) must not cut it off.
                    entry.addr.do_send(RemovePeer {
                        participant_id,
                        only_if_link: Some(reply_to),
                    });
                }
            }
            MediaCommand::AdoptPeer {
                room,
                participant_id,
                adopt_key,
                next_adopt_verifier,
            } => match self.rooms.get(&room) {
                Some(entry) => entry.addr.do_send(AdoptPeer {
                    participant_id,
                    adopt_key,
                    next_adopt_verifier,
                    link: reply_to,
                }),
                None => reply_to.do_send(FromMediaNode(MediaEvent::PeerError {
                    room,
                    participant_id,
                    code: ErrorCode::InvalidState,
                    message: "no media peer for this participant (it expired)".into(),
                })),
            },
        }
    }
}

/// A signaling link closed with these peers (participant -> room). Media keeps flowing:
/// the signaling node may have died while its browsers are fine, and they resume on another
/// signaling node, which adopts the peers. Those still owned by the closed link after the
/// grace period are removed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkClosed {
    pub peers: Vec<(String, String)>,
    pub link: Recipient<FromMediaNode>,
}

impl Handler<LinkClosed> for MediaNode {
    type Result = ();
    /// After the orphan grace, remove the link's peers that no other link adopted.
    fn handle(&mut self, msg: LinkClosed, ctx: &mut Context<Self>) {
        if msg.peers.is_empty() {
            return;
        }
        ctx.run_later(self.orphan_grace, move |node, _| {
            for (participant_id, room) in msg.peers {
                if let Some(entry) = node.rooms.get(&room) {
                    entry.addr.do_send(RemovePeer {
                        participant_id,
                        only_if_link: Some(msg.link.clone()),
                    });
                }
            }
        });
    }
}

impl Handler<RoomEmpty> for MediaNode {
    type Result = ();
    /// A room has no peers: stop it, unless an `AddPeer` is still on its way to it.
    fn handle(&mut self, msg: RoomEmpty, _: &mut Context<Self>) {
        let idle = self
            .rooms
            .get(&msg.room)
            .is_some_and(|e| e.adds_sent == msg.adds_seen);
        if idle {
            if let Some(entry) = self.rooms.remove(&msg.room) {
                self.room_count.fetch_sub(1, Relaxed);
                self.threads[entry.thread]
                    .shared
                    .load
                    .rooms
                    .fetch_sub(1, Relaxed);
                crate::metrics::ROOMS.dec();
                entry.addr.do_send(StopRoom);
            }
        }
    }
}
