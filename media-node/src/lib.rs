//! Conclave media node: a selective forwarding unit built on str0m.
//!
//! # Layout
//! Lowest first: a file names only files listed before it (`tests/layers.rs` checks that no
//! import circle creeps in).
//! - [`config`]: flags and environment variables (`MediaConfig`, embedded by the signaling
//!   node too; `NodeConfig`, the whole process).
//! - [`error`]: start-up errors ([`StartError`]: what could not be bound, and where).
//! - [`metrics`]: the node's Prometheus metrics.
//! - [`load`]: what the node measures of its load (forwarded packets per second, bits out,
//!   CPU) per room thread and in all, and the reservations of new rooms and participants.
//! - [`sfu`]: the data path, in its own folder — the UDP socket (`sfu/udp.rs`: receive loop,
//!   router, send half) and forwarding (`sfu/forward.rs`) are where a packet goes; around them
//!   one `RoomSfu` actor per room (`room.rs`) owning each participant's `Rtc` (`peer.rs`),
//!   server-side renegotiation (`negotiate.rs`), str0m set-up and the panic guard (`rtc.rs`).
//! - [`threads`]: the room threads, each with its own UDP socket, router and rooms.
//! - [`node`]: `MediaNode`, the actor owning the rooms, placing each on the least-loaded room
//!   thread, dispatching link commands to them and running the load meter.
//! - [`handle`]: [`start`] — bind the sockets, start the threads and the node — and the
//!   [`MediaNodeHandle`] it returns (what the signaling node embeds).
//! - [`link`]: the internal WebSocket link to signaling nodes (one session actor per link).
//! - [`http`]: the internal HTTP server (link endpoint, health, readiness, metrics).
//! - [`cluster`]: registration and heartbeats in Redis (cluster mode).
//! - [`run`](mod@run): the `media-node` process — [`run()`] starts it all from a
//!   `NodeConfig` and drains on SIGTERM; `main.rs` only parses flags and calls it.

pub mod cluster;
pub mod config;
pub mod error;
pub mod handle;
pub mod http;
pub mod link;
pub mod load;
pub mod metrics;
pub mod node;
pub mod run;
pub mod sfu;
pub mod threads;

pub use error::StartError;
pub use handle::{start, MediaNodeHandle};
pub use run::{drain_on_signal, run};
