//! The re-assertion of every cluster room of this instance in one Redis round trip per
//! period: the registry ticks every room at once ([`ASSERT_INTERVAL`]), each room hands its
//! assertion to the instance's [`AssertBatch`] from its own Redis queue (so the assertion
//! keeps its place among the room's other operations), and the batch sends whatever arrived
//! within [`GATHER`] as one pipeline (`ClusterStore::assert_rooms`). At 100k rooms that is a
//! few pipelines per instance every 3 s instead of 33k EVALSHA round trips a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conclave_common::cluster::ROOM_TTL_MS;
use conclave_common::cluster::{Asserted, ClusterError, ClusterStore, RoomAssertion};
use tokio::sync::{mpsc, oneshot};

use crate::metrics;

/// How often every cluster room re-asserts its records and reconciles its mirror of the
/// others (the registry's tick).
pub const ASSERT_INTERVAL: Duration = Duration::from_secs(3);
/// How long the batch waits for more rooms after the first one of a tick.
const GATHER: Duration = Duration::from_millis(20);
/// Most rooms in one pipeline (bounds the request and the time Redis spends on one).
const MAX_ROOMS: usize = 1000;
/// Most assertions waiting for the batch (each room has at most one in flight).
const QUEUE: usize = 100_000;

type Request = (RoomAssertion, oneshot::Sender<Asserted>);

/// This instance's batch of room assertions (cheap to clone).
#[derive(Clone)]
pub struct AssertBatch {
    requests: mpsc::Sender<Request>,
    /// Pipelines sent so far.
    sent: Arc<AtomicU64>,
}

impl AssertBatch {
    /// Start the batch of `instance` (inside a running actix system).
    pub fn start(store: ClusterStore, instance: String) -> Self {
        let (requests, rx) = mpsc::channel(QUEUE);
        let sent = Arc::new(AtomicU64::new(0));
        actix::spawn(run(store, instance, rx, sent.clone()));
        AssertBatch { requests, sent }
    }

    /// Pipelines sent so far.
    pub fn pipelines(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Assert one room with the next pipeline; the answer is the room's.
    pub async fn assert(&self, assertion: RoomAssertion) -> Asserted {
        let (tx, rx) = oneshot::channel();
        self.requests
            .try_send((assertion, tx))
            .map_err(|_| ClusterError::Timeout)?;
        rx.await.unwrap_or(Err(ClusterError::Timeout))
    }
}

async fn run(
    store: ClusterStore,
    instance: String,
    mut rx: mpsc::Receiver<Request>,
    sent: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < MAX_ROOMS {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(request)) => batch.push(request),
                _ => break,
            }
        }
        let (assertions, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        sent.fetch_add(1, Ordering::Relaxed);
        let answers = metrics::timed(
            "assert_batch",
            store.assert_rooms(&instance, &assertions, ROOM_TTL_MS),
        )
        .await;
        match answers {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, rooms = assertions.len(), "room assertions failed");
                for reply in replies {
                    let _ = reply.send(Err(batch_failed(&e)));
                }
            }
        }
    }
}

/// Each room's copy of the batch's error (the store's errors are not `Clone`).
fn batch_failed(e: &ClusterError) -> ClusterError {
    let kind = match e {
        ClusterError::Redis(e) => e.kind(),
        _ => redis::ErrorKind::IoError,
    };
    ClusterError::Redis(redis::RedisError::from((
        kind,
        "room assertions failed",
        e.to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_common::cluster::MemberRecord;
    use conclave_common::protocol::ParticipantInfo;
    use conclave_common::test_redis::TestRedis;

    fn assertion(i: usize) -> RoomAssertion {
        RoomAssertion {
            room: format!("acme/r{i}"),
            community: "acme".into(),
            node: "m1".into(),
            mine: vec![MemberRecord {
                participant: ParticipantInfo {
                    participant_id: format!("p{i}"),
                    user_id: format!("u{i}"),
                    name: "n".into(),
                    audio: true,
                    video: false,
                    deafened: false,
                    media: None,
                },
                signaling: "sig-1.a".into(),
                resume_hash: "0".repeat(64),
            }],
        }
    }

    #[actix_rt::test]
    async fn a_ticks_worth_of_room_assertions_is_one_pipeline() {
        let redis = TestRedis::start();
        let store = ClusterStore::connect(&redis.url, "conclave:")
            .await
            .unwrap();
        let batch = AssertBatch::start(store.clone(), "sig-1.a".into());
        // 300 rooms assert at once (the registry's tick), each from its own task.
        let answers = futures_util::future::join_all((0..300).map(|i| {
            let batch = batch.clone();
            async move { batch.assert(assertion(i)).await }
        }))
        .await;
        assert!(answers.iter().all(|a| a
            .as_ref()
            .is_ok_and(|(node, all)| { node == "m1" && all.len() == 1 })));
        assert_eq!(
            batch.pipelines(),
            1,
            "one pipeline for the tick's 300 rooms"
        );
        assert_eq!(store.room_members("acme/r299").await.unwrap().len(), 1);
        // The next tick is another pipeline.
        batch.assert(assertion(0)).await.unwrap();
        assert_eq!(batch.pipelines(), 2);
    }
}
