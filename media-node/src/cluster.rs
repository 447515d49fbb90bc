//! Cluster membership: with a Redis URL, the media node registers itself and heartbeats its
//! true participant count and its measured load (forwarded packets per second, with the
//! reservations of new participants; bits out; CPU), so signaling nodes can place rooms on the
//! node with the most headroom.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use conclave_common::cluster::{now_ms, ClusterStore, NodeInfo, NodeLoad, RedisSettings};

use crate::error::StartError;

use crate::handle::MediaNodeHandle;

/// How often the node reports itself (a node silent for `NODE_STALE_MS` is dead to placement).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Wait between attempts while Redis is unreachable.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Heartbeat forever (run it as a task). Never gives up on an unreachable Redis: logs and
/// retries. Returns only when Redis refuses our credentials or the settings cannot work
/// (waiting cannot fix either): the node then stops with that error.
pub async fn heartbeat_loop(
    redis: RedisSettings,
    prefix: String,
    info: NodeInfo,
    media: MediaNodeHandle,
) -> StartError {
    tracing::info!(redis_url = %redis.redacted_url(), node = %info.id, "joining the cluster");
    let store = loop {
        match ClusterStore::connect(redis.clone(), &prefix).await {
            Ok(store) => break store,
            Err(e) if e.is_fatal() => {
                return StartError::Redis {
                    url: redis.redacted_url(),
                    source: e,
                }
            }
            Err(e) => {
                tracing::error!(redis_url = %redis.redacted_url(), error = %e, "redis unreachable; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    };
    tracing::info!(node = %info.id, "registered in the cluster");
    let mut failing = false;
    loop {
        let draining = media.draining.load(Relaxed);
        let figures = &media.load;
        let load = NodeLoad {
            participants: media.participants.load(Relaxed) as u32,
            load_fpps: figures.load_fpps.load(Relaxed),
            bits_out_per_sec: figures.bits_out_per_sec.load(Relaxed),
            cpu_cores: figures.cpu_millicores.load(Relaxed) as f64 / 1000.0,
        };
        match store.heartbeat(&info, &load, draining, now_ms()).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("redis reachable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cluster heartbeat failed; retrying");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = media.heartbeat_now.notified() => {}
        }
    }
}
