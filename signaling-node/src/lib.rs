//! Conclave signaling node: browsers connect over WebSocket; rooms relay negotiation to a
//! media node and broadcast room events.
//!
//! # Layout
//! - [`session`]: one actor per browser WebSocket (parsing, token check, heartbeat).
//! - [`room`]: one actor per room (membership, state, negotiation relay, events), with its
//!   pure membership logic in [`roster`].
//! - [`registry`]: room key -> room actor.
//! - [`media_link`]: the link to the media node (in-process or internal WebSocket).
//! - [`messages`]: the messages between those actors.
//! - [`auth`]: access tokens. [`http`]: public routes. [`tls`]: HTTPS. [`config`]: flags.

pub mod auth;
pub mod config;
pub mod http;
pub mod media_link;
pub mod messages;
pub mod presence;
pub mod registry;
pub mod room;
pub mod roster;
pub mod session;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};

use crate::auth::TokenKeys;
use crate::http::AppState;
use crate::media_link::{MediaLink, MediaTarget};
use crate::registry::{Placement, Registry};
use crate::session::SessionDeps;

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
}

/// Start the media link and the room registry. Call inside a running actix system.
pub fn start_services(s: ServiceSettings) -> Services {
    let placement = match s.media {
        MediaSetup::Single(target) => Placement::Fixed(MediaLink::new(target).start()),
        MediaSetup::Cluster(store) => Placement::Cluster(store),
    };
    let registry = Registry::new(
        placement,
        s.room_cap,
        s.heartbeat_interval.as_millis() as u64,
    )
    .start();
    Services {
        state: AppState {
            deps: SessionDeps {
                registry,
                keys: Arc::new(TokenKeys::new(&s.token_secret)),
                heartbeat_interval: s.heartbeat_interval,
                client_timeout: s.client_timeout,
            },
            dev: s.dev,
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
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
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
