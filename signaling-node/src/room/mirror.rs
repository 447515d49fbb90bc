//! The one cluster component of a room: [`ClusterMirror`], held as `Option<ClusterMirror>`
//! (`None` on a single node). It owns the room's handles on the shared store and the room
//! bus, the media node the room is on, and the queue that runs the room's Redis operations
//! one after the other. Each method is one Redis half of something the room does (publish an
//! event, write a member, join, claim, leave, re-assert); what the room does with the answers
//! is in `cluster.rs`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::prelude::*;
use conclave_common::cluster::{
    resume_hash, Claim, Claimed, Joined, Left, MemberRecord, RoomAssertion,
};
use conclave_common::cluster::{ClusterError, ClusterStore, ROOM_TTL_MS};
use conclave_common::protocol::{ParticipantInfo, ServerMessage};
use tokio::sync::{mpsc, oneshot};

use super::assert_batch::AssertBatch;
use crate::metrics;
use crate::room_bus::{BusMessage, RoomBus};

/// Longest wait for one Redis operation before the room treats Redis as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits between the background attempts to remove the record of a member that left while
/// Redis failed (the room may have closed meanwhile, so no assertion would drop it).
const DEPARTURE_RETRIES_SECS: [u64; 6] = [1, 2, 4, 8, 16, 32];

/// Cluster mode: the shared store and the event bus between signaling instances (what the
/// node hands every room).
#[derive(Clone)]
pub struct RoomCluster {
    pub store: ClusterStore,
    pub bus: Addr<RoomBus>,
    /// Most Redis operations one room may have waiting (`--room-redis-queue`).
    pub queue_capacity: usize,
    /// This instance's re-assertions, one pipeline per tick.
    pub asserts: AssertBatch,
}

/// A room's part of the cluster: its records in Redis and its events on the bus.
pub(super) struct ClusterMirror {
    pub(super) store: ClusterStore,
    pub(super) bus: Addr<RoomBus>,
    /// The media node the room is on (it changes when the room moves).
    pub(super) node: Option<String>,
    /// `community/room`: the room's id in Redis.
    room: String,
    community: String,
    /// This signaling instance (the owner written in our member records).
    instance: String,
    queue: RedisQueue,
    asserts: AssertBatch,
}

/// The answer of a queued Redis operation.
pub(super) type Pending<T> = oneshot::Receiver<Result<T, ClusterError>>;

impl ClusterMirror {
    /// Start the room's Redis queue (inside a running actix system).
    pub(super) fn new(
        cluster: RoomCluster,
        room: String,
        community: String,
        instance: String,
        node: Option<String>,
    ) -> Self {
        ClusterMirror {
            store: cluster.store,
            bus: cluster.bus,
            node,
            room,
            community,
            instance,
            queue: RedisQueue::start(cluster.queue_capacity),
            asserts: cluster.asserts,
        }
    }

    /// Owned copies of the store, room id, community and instance, for a queued operation.
    fn owned(&self) -> (ClusterStore, String, String, String) {
        (
            self.store.clone(),
            self.room.clone(),
            self.community.clone(),
            self.instance.clone(),
        )
    }

    /// Our record of a member (keeping only a hash of its resume secret).
    pub(super) fn record(&self, participant: ParticipantInfo, resume_secret: &str) -> MemberRecord {
        MemberRecord {
            participant,
            signaling: self.instance.clone(),
            resume_hash: resume_hash(resume_secret),
        }
    }

    /// Publish an event of our members to the other instances.
    pub(super) fn publish(&self, message: ServerMessage) {
        let payload = BusMessage {
            from: self.instance.clone(),
            message,
        }
        .encode();
        let (store, room) = (self.store.clone(), self.room.clone());
        self.queue.push("publish", async move {
            store.publish_room_event(&room, &payload).await
        });
    }

    /// Rewrite a member's record (its audio/video state changed).
    pub(super) fn update(&self, record: MemberRecord) {
        let (store, room) = (self.store.clone(), self.room.clone());
        self.queue.push("update", async move {
            store.update_member(&room, &record).await.map(|_| ())
        });
    }

    /// Reserve `fpps` of load on the room's media node (a peer joined it), so that placement
    /// sees it before the node's next heartbeat reports it. Nobody waits: a failure is logged.
    pub(super) fn reserve_load(&self, fpps: u64) {
        let Some(node) = self.node.clone().filter(|_| fpps > 0) else {
            return;
        };
        let store = self.store.clone();
        self.queue.push(
            "reserve",
            async move { store.reserve_load(&node, fpps).await },
        );
    }

    /// Record a joining member (Redis enforces the cap across instances); the answer is
    /// every member's record.
    pub(super) fn join(&self, record: MemberRecord, cap: usize) -> Pending<Joined> {
        let (store, room, community, _) = self.owned();
        self.queue.run("join", async move {
            store
                .join_member(&room, &community, &record, cap, ROOM_TTL_MS)
                .await
        })
    }

    /// Claim a member for this instance (`resume`), rotating its resume secret to
    /// `next_secret`: its record and every member's record, or `None` if no member has that
    /// id, secret and user.
    pub(super) fn claim(
        &self,
        participant_id: String,
        user_id: String,
        secret: String,
        next_secret: String,
    ) -> Pending<Claimed> {
        let (store, room, _, me) = self.owned();
        self.queue.run("claim", async move {
            let claim = Claim {
                participant_id: &participant_id,
                user_id: &user_id,
                secret: &secret,
                next_secret: &next_secret,
            };
            store.claim_member(&room, &claim, &me).await
        })
    }

    /// Remove our member's record (unless another instance owns it now).
    pub(super) fn leave(&self, participant_id: &str) -> Pending<Left> {
        let (store, room, community, me) = self.owned();
        let pid = participant_id.to_string();
        self.queue.run("leave", async move {
            store.leave_member(&room, &community, &pid, Some(&me)).await
        })
    }

    /// The removal failed: try again in the background, a bounded number of times.
    pub(super) fn leave_later(&self, participant_id: &str) {
        let (store, room, community, me) = self.owned();
        let pid = participant_id.to_string();
        actix::spawn(async move {
            for wait_secs in DEPARTURE_RETRIES_SECS {
                tokio::time::sleep(Duration::from_secs(wait_secs)).await;
                let left = store.leave_member(&room, &community, &pid, Some(&me)).await;
                if left.is_ok() {
                    return;
                }
            }
            tracing::warn!(participant = %pid, "member record left in Redis");
        });
    }

    /// Re-assert our members' records (`mine`, not empty) and the room's keys on `node`,
    /// with the instance's other rooms in one pipeline (`AssertBatch`), in its turn in the
    /// room's queue; the answer is the room's node in Redis and every member's record.
    pub(super) fn assert(
        &self,
        node: String,
        mine: Vec<MemberRecord>,
    ) -> Pending<(String, Vec<MemberRecord>)> {
        let assertion = RoomAssertion {
            room: self.room.clone(),
            community: self.community.clone(),
            node,
            mine,
        };
        let asserts = self.asserts.clone();
        self.queue
            .run("assert", async move { asserts.assert(assertion).await })
    }
}

/// Outcome of a queued Redis operation; one the full queue refused is a timeout.
pub(super) async fn settled<T>(rx: Pending<T>) -> Result<T, ClusterError> {
    rx.await.unwrap_or(Err(ClusterError::Timeout))
}

type RedisOp = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Redis operations of one room, run one after the other so that its records and events
/// keep the order in which the room made them. Bounded: while Redis is slow or away (each
/// operation may wait [`REDIS_TIMEOUT`]) members keep acting, and their operations must not
/// pile up. When full, an operation nobody waits for (publish an event, rewrite a record) is
/// dropped — the room's re-assertion every few seconds rewrites its records, and the other
/// instances resync from them — and one whose caller waits (join, resume, leave, assert)
/// fails at once as a timeout (a join then gets `unavailable`).
struct RedisQueue(mpsc::Sender<RedisOp>);

impl RedisQueue {
    fn start(capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<RedisOp>(capacity.max(1));
        actix::spawn(async move {
            while let Some(op) = rx.recv().await {
                op.await;
            }
        });
        RedisQueue(tx)
    }

    /// Queue `op` whose result nobody waits for; a failure is logged (the next assertion
    /// repairs the records).
    fn push(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<(), ClusterError>> + Send + 'static,
    ) {
        let queued = self.0.try_send(Box::pin(async move {
            match tokio::time::timeout(REDIS_TIMEOUT, metrics::timed(what, op)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed"),
                Err(_) => tracing::warn!("{what} timed out"),
            }
        }));
        if queued.is_err() {
            Self::full(what);
        }
    }

    /// The queue is full (or gone): count and log the operation that was not queued.
    fn full(what: &'static str) {
        metrics::ROOM_REDIS_DROPPED.with_label_values(&[what]).inc();
        tracing::warn!(
            operation = what,
            "room's redis queue full: operation dropped"
        );
    }

    /// Queue `op`; the receiver gets its result (or a timeout error).
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, ClusterError>> + Send + 'static,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        // A refused operation drops `tx`: its caller sees a timeout (`settled`).
        let queued = self.0.try_send(Box::pin(async move {
            let result = tokio::time::timeout(REDIS_TIMEOUT, metrics::timed(what, op))
                .await
                .unwrap_or(Err(ClusterError::Timeout));
            let _ = tx.send(result);
        }));
        if queued.is_err() {
            Self::full(what);
        }
        rx
    }
}
