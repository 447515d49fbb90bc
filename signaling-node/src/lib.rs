//! Conclave signaling node: browsers connect over WebSocket; rooms relay negotiation to a
//! media node and broadcast room events.
//!
//! # Layout
//! Layers point one way (`tests/layers.rs` fails on an import circle): each module uses
//! only those below it. A lower actor talks up through `Recipient`s of messages it defines.
//!
//! - [`node`]: the whole node from its [`Config`](config::Config): policy (token mode,
//!   single / embedded / cluster topology, TLS), start-up, serving, draining. `main.rs` only
//!   parses flags, sets up logging and calls [`run`].
//! - [`http`]: public and internal routes (web client, WebSocket, dev tokens, health,
//!   operators' query API).
//! - [`session`]: one actor per browser WebSocket (parsing, token check, heartbeat).
//! - [`registry`]: room key -> room actor, and which media node a room uses (placement and
//!   moves in cluster mode).
//! - [`room`]: one actor per room. Single-node membership in `room/members.rs`, negotiation
//!   relay and failover in `room/media.rs`, the cluster mirror (Redis queue, reconcile,
//!   re-assertion) behind one optional component in `room/cluster.rs` and `room/mirror.rs`,
//!   pure membership logic in [`room::roster`], the room's messages in [`room::messages`].
//! - [`media_link`]: the link to a media node (in-process or internal WebSocket).
//! - [`room_bus`]: cluster mode, room events between signaling instances (Redis pub/sub).
//! - [`presence`]: presence events to Redis and a webhook.
//! - [`upkeep`]: cluster mode, this instance's heartbeat and the cleanup after dead ones.
//! - [`error`]: every error enum and its wire code, in one place.
//! - [`web_client`]: the browser client (`static/`), embedded as one table.
//! - [`limits`]: what one client may do (message budgets per class, pure token buckets);
//!   [`outbound`]: each WebSocket's bounded outbound queue (a client that stops reading is
//!   cut off); [`client_ip`]: the client's address behind trusted proxies, connections per
//!   address.
//! - [`web_client`]: the browser client (`static/`), embedded as one table, with its CSP.
//! - [`origin`]: which web origins may open `/ws` (pure logic).
//! - [`turn`]: TURN credentials for the clients' `iceServers` (coturn's shared secret).
//! - [`auth`]: access tokens. [`tls`]: HTTPS. [`config`]: flags. [`metrics`]: Prometheus.
//!
//! Order: node → http → session → registry → room → {media link, room bus, presence} →
//! {upkeep uses the bus and presence} → error, auth, tls, metrics → `conclave_common`.

pub mod auth;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod media_link;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod outbound;
pub mod presence;
pub mod registry;
pub mod room;
pub mod room_bus;
pub mod session;
pub mod tls;
pub mod turn;
pub mod upkeep;
pub mod web_client;

pub use node::{
    drain_on_signal, run, serve, serve_internal, start_services, MediaSetup, ServiceSettings,
    Services,
};
