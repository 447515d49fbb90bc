//! The `media-node` process as a whole, given its config: start the media node, register it in
//! the cluster (with a Redis URL), serve the internal HTTP API, and drain on SIGTERM.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use conclave_common::cluster::{NodeInfo, RedisSettings};

use crate::config::NodeConfig;
use crate::error::StartError;
use crate::handle::{start, MediaNodeHandle};
use crate::{cluster, http, metrics};

/// While draining, how often the participant count is checked.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Run the media node until it has drained after SIGTERM (or its HTTP server fails).
/// Must be called inside a running actix system.
pub async fn run(config: NodeConfig) -> Result<(), StartError> {
    let media = start(&config.media)?;
    metrics::CAPACITY.set(config.capacity as i64);
    let addr = config.listen;
    let listen = |source| StartError::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    let internal = listener.local_addr().map_err(listen)?;
    let mut cluster_task = None;
    if let Some(redis_url) = config.redis_url {
        // Signaling nodes reach us at the advertised IP unless told otherwise.
        let link_url = config.link_url.unwrap_or_else(|| {
            format!(
                "ws://{}:{}/internal/link",
                media.advertised.ip(),
                internal.port()
            )
        });
        let info = NodeInfo {
            id: media.node_id.clone(),
            link_url,
            udp_addr: media.advertised.to_string(),
            capacity: config.capacity,
        };
        let redis = RedisSettings {
            url: redis_url,
            password: config.redis_password,
            ca_file: config.redis_ca_file,
        };
        cluster_task = Some(actix::spawn(cluster::heartbeat_loop(
            redis,
            config.redis_prefix,
            info,
            media.clone(),
        )));
    }
    // Machine-readable readiness line on stdout (tests and scripts wait for it).
    println!(
        "listening internal=http://{internal} udp={}",
        media.udp_local
    );
    let server = http::serve(listener, media.clone())?;
    let handle = server.handle();
    let drain = Duration::from_secs(config.drain_timeout_secs);
    actix::spawn(async move {
        drain_on_signal(media, drain).await;
        handle.stop(true).await;
    });
    match cluster_task {
        // The heartbeat loop ends only on refused credentials or unusable settings.
        Some(cluster) => tokio::select! {
            served = server => Ok(served?),
            Ok(fatal) = cluster => Err(fatal),
        },
        None => Ok(server.await?),
    }
}

/// Wait for SIGTERM or Ctrl-C, then drain: mark the node draining (placement skips it from its
/// next heartbeat, sent at once; readiness turns false), keep serving until no participant is
/// left or `timeout` passes. Returns when the node may stop; its remaining rooms, if any, fail
/// over when their links drop.
pub async fn drain_on_signal(media: MediaNodeHandle, timeout: Duration) {
    let name = conclave_common::shutdown::stop_signal().await;
    media.draining.store(true, Relaxed);
    conclave_common::metrics::DRAINING.set(1);
    media.heartbeat_now.notify_one();
    let deadline = tokio::time::Instant::now() + timeout;
    tracing::info!(
        signal = name,
        timeout_secs = timeout.as_secs(),
        participants = media.participants.load(Relaxed),
        "draining: no new rooms; waiting for the live ones to empty"
    );
    loop {
        let left = media.participants.load(Relaxed);
        if left == 0 {
            tracing::info!("drained: no participant left; stopping");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                participants = left,
                "drain timeout: stopping; the remaining rooms fail over"
            );
            return;
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}
