//! Conclave signaling node: browsers connect over WebSocket; rooms relay negotiation to a
//! media node and broadcast room events.
//!
//! # Layout
//! - [`session`]: one actor per browser WebSocket (parsing, token check, heartbeat).
//! - [`room`]: one actor per room (membership, state, negotiation relay, events), with its
//!   pure membership logic in [`roster`].
//! - [`registry`]: room key -> room actor, and which media node a room uses.
//! - [`media_link`]: the link to the media node (in-process or internal WebSocket).
//! - [`room_bus`], [`upkeep`]: cluster mode — room events between signaling instances, and
//!   this instance's heartbeat plus the cleanup after dead ones.
//! - [`presence`]: presence events to Redis and a webhook.
//! - [`messages`]: the messages between those actors.
//! - [`auth`]: access tokens. [`http`]: public routes. [`tls`]: HTTPS. [`config`]: flags.
//! - [`web_client`]: the browser client (`static/`), embedded as one table.

pub mod auth;
pub mod config;
pub mod http;
pub mod media_link;
pub mod messages;
pub mod metrics;
pub mod presence;
pub mod registry;
pub mod room;
pub mod room_bus;
pub mod roster;
pub mod session;
pub mod tls;
pub mod upkeep;
pub mod web_client;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};

use crate::auth::TokenKeys;
use crate::http::AppState;
use crate::media_link::{MediaLink, MediaTarget};
use crate::presence::{PresenceSettings, PresenceSink, WebhookSettings};
use crate::registry::{Placement, Registry};
use crate::room::{RoomCluster, RoomDeps};
use crate::room_bus::RoomBus;
use crate::session::SessionDeps;
use crate::upkeep::Upkeep;

/// Seconds a stopping server waits for open connections (WebSockets never finish by themselves).
const SHUTDOWN_TIMEOUT_SECS: u64 = 3;

/// What the HTTP server needs to run: started once, outside the per-worker app factory, so
/// that every worker shares one registry (one actor per room, not one per worker).
#[derive(Clone)]
pub struct Services {
    pub state: AppState,
}

/// Where media goes.
pub enum MediaSetup {
    /// One media node for every room (embedded, or `--media-node`).
    Single(MediaTarget),
    /// Cluster mode: each new room is placed on the least-loaded live media node in Redis.
    Cluster(conclave_common::cluster::ClusterStore),
}

/// Settings of [`start_services`].
pub struct ServiceSettings {
    pub media: MediaSetup,
    pub token_secret: Vec<u8>,
    pub dev: bool,
    pub room_cap: usize,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    /// This node's name; the process's instance id adds a random suffix.
    pub signaling_id: String,
    /// Where this node serves browsers (recorded in Redis for operators).
    pub public_url: String,
    pub presence_webhook: Option<WebhookSettings>,
    pub presence_stream_len: usize,
    pub api_key: Option<String>,
}

/// Start the media link, the room registry and (cluster mode) the room bus and upkeep.
/// Call inside a running actix system.
pub fn start_services(s: ServiceSettings) -> Services {
    let instance = format!(
        "{}.{}",
        s.signaling_id,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let store = match &s.media {
        MediaSetup::Cluster(store) => Some(store.clone()),
        MediaSetup::Single(_) => None,
    };
    metrics::init(store.is_some());
    let presence = (store.is_some() || s.presence_webhook.is_some()).then(|| {
        PresenceSink::new(PresenceSettings {
            redis: store
                .as_ref()
                .map(|st| (st.connection_manager(), st.prefix().to_string())),
            webhook: s.presence_webhook.clone(),
            stream_max_len: s.presence_stream_len,
        })
        .start()
    });
    let cluster = store.as_ref().map(|store| {
        actix::spawn(
            Upkeep {
                store: store.clone(),
                instance: instance.clone(),
                url: s.public_url.clone(),
                resume_grace: s.resume_grace,
                presence: presence.clone(),
            }
            .run(),
        );
        RoomCluster {
            store: store.clone(),
            bus: RoomBus::new(store.clone(), instance.clone()).start(),
        }
    });
    let placement = match s.media {
        MediaSetup::Single(target) => Placement::Fixed(MediaLink::new(target).start()),
        MediaSetup::Cluster(store) => Placement::Cluster(store),
    };
    tracing::info!(%instance, cluster = cluster.is_some(), "signaling instance starting");
    let room_deps = |registry| RoomDeps {
        registry,
        cap: s.room_cap,
        heartbeat_interval_ms: s.heartbeat_interval.as_millis() as u64,
        resume_grace: s.resume_grace,
        instance: instance.clone(),
        presence: presence.clone(),
        cluster,
    };
    let registry = Registry::start(placement, room_deps);
    Services {
        state: AppState {
            deps: SessionDeps {
                registry,
                keys: Arc::new(TokenKeys::new(&s.token_secret)),
                heartbeat_interval: s.heartbeat_interval,
                client_timeout: s.client_timeout,
            },
            dev: s.dev,
            api: http::ApiState {
                store,
                key: s.api_key,
                open: s.dev,
            },
            instance,
            draining: Arc::default(),
        },
    }
}

/// Serve the public HTTP(S) API on `listener`.
pub fn serve(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    services: Services,
    workers: Option<usize>,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(services.state);
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            // Open WebSockets would hold a graceful stop for the default 30 s.
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            // SIGTERM drains (`drain_on_signal`); the servers are stopped when that is done.
            .disable_signals();
    let server = match workers {
        Some(n) => server.workers(n),
        None => server,
    };
    let server = match tls {
        Some(cfg) => server.listen_rustls_0_23(listener, cfg)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Serve the internal API (`/metrics`, `/healthz`, `/readyz`) on `listener`: for Prometheus
/// and the orchestrator's probes, never for browsers.
pub fn serve_internal(
    listener: TcpListener,
    services: &Services,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(services.state.clone());
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(http::internal_routes)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// Wait for SIGTERM or Ctrl-C, then drain: readiness turns false and new WebSockets get 503
/// (the load balancer sends them elsewhere), every member is asked to reconnect (its browser
/// resumes on another node, media untouched), and this returns once no room is left here —
/// members that came back elsewhere were handed over, the others left after the resume grace
/// — or after `timeout`.
pub async fn drain_on_signal(services: Services, timeout: Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let name = conclave_common::shutdown::stop_signal().await;
    let state = &services.state;
    state.draining.store(true, Relaxed);
    conclave_common::metrics::DRAINING.set(1);
    let registry = &state.deps.registry;
    let rooms = registry.send(registry::RoomCount).await.unwrap_or(0);
    tracing::info!(
        signal = name,
        rooms,
        timeout_secs = timeout.as_secs(),
        "draining: asking every client to reconnect elsewhere"
    );
    registry.do_send(registry::DrainRooms);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rooms = registry.send(registry::RoomCount).await.unwrap_or(0);
        if rooms == 0 {
            tracing::info!("drained: no room left; stopping");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(rooms, "drain timeout: stopping");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
