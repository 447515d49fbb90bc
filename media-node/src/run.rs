//! The `media-node` process as a whole, given its config: start the media node, register it in
//! the cluster (with a Redis URL), serve the internal HTTP API, and drain on SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix_web::web;
use conclave_common::cluster::{NodeInfo, RedisSettings};
use conclave_common::link_auth::LinkSecret;

use crate::config::NodeConfig;
use crate::error::StartError;
use crate::handle::{start, MediaNodeHandle};
use crate::http::{Endpoints, LinkGate};
use crate::{cluster, http, metrics};

/// While draining, how often the participant count is checked.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Run the media node until it has drained after SIGTERM (or its HTTP server fails).
/// Must be called inside a running actix system.
pub async fn run(config: NodeConfig) -> Result<(), StartError> {
    let gate = web::Data::new(LinkGate::new(link_secret(&config)?));
    let media = start(&config.media)?;
    metrics::CAPACITY.set(config.capacity as i64);
    let (listener, internal) = bind(config.listen)?;
    let link = config.link_listen.map(bind).transpose()?;
    let mut cluster_task = None;
    if let Some(redis_url) = config.redis_url {
        // Signaling nodes reach us at the link's own IP if it has one, else the advertised IP.
        let link_url = config.link_url.unwrap_or_else(|| {
            let at = link.as_ref().map_or(internal, |(_, addr)| *addr);
            let ip = match at.ip() {
                ip if ip.is_unspecified() => media.advertised[0].ip(),
                ip => ip,
            };
            format!("ws://{}/internal/link", SocketAddr::new(ip, at.port()))
        });
        let info = NodeInfo {
            id: media.node_id.clone(),
            link_url,
            udp_addrs: media.advertised_strings(),
            capacity: config.capacity,
            load_capacity: media.load.capacity_fpps.load(Relaxed),
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
    let link_addr = link.as_ref().map_or(internal, |(_, addr)| *addr);
    let udp: Vec<String> = media.udp_locals.iter().map(|a| a.to_string()).collect();
    println!(
        "listening internal=http://{internal} udp={} link=http://{link_addr}",
        udp.join(",")
    );
    let mut servers = Vec::new();
    match link {
        Some((link_listener, _)) => {
            servers.push(http::serve(listener, media.clone(), Endpoints::Probes)?);
            servers.push(http::serve(
                link_listener,
                media.clone(),
                Endpoints::Link(gate),
            )?);
        }
        None => servers.push(http::serve(listener, media.clone(), Endpoints::All(gate))?),
    }
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    let drain = Duration::from_secs(config.drain_timeout_secs);
    actix::spawn(async move {
        drain_on_signal(media, drain).await;
        for handle in handles {
            handle.stop(true).await;
        }
    });
    // The first server to end (stopped after the drain, or failed) ends the process.
    let served = futures_util::future::select_all(servers);
    match cluster_task {
        // The heartbeat loop ends only on refused credentials or unusable settings.
        Some(cluster) => tokio::select! {
            (done, _, _) = served => Ok(done?),
            Ok(fatal) = cluster => Err(fatal),
        },
        None => Ok(served.await.0?),
    }
}

/// The link secret, checked; `None` only in `--dev` (unauthenticated links, with a warning).
fn link_secret(config: &NodeConfig) -> Result<Option<LinkSecret>, StartError> {
    match (&config.link_secret, config.dev) {
        (Some(secret), _) => Ok(Some(LinkSecret::new(secret)?)),
        (None, true) => {
            tracing::warn!("dev mode: no --link-secret, internal links are NOT authenticated: anyone who reaches the link port controls every room");
            Ok(None)
        }
        (None, false) => Err(StartError::NoLinkSecret),
    }
}

fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
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
