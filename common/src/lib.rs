//! Types shared by Conclave's signaling and media nodes.
//!
//! # Layout
//! - [`protocol`]: browser <-> signaling-node messages (JSON over WebSocket).
//! - [`link`]: signaling-node <-> media-node messages (JSON over the internal WebSocket, or
//!   actix messages in-process).
//! - [`caps`]: caps on what one participant creates (SDP size, m-lines, tracks, candidates),
//!   checked alike by the signaling and the media node.
//! - [`cluster`]: the cluster store, all shared state in Redis behind one `ClusterStore`:
//!   `cluster/store.rs` (connection, errors, key names), then one file per keyspace:
//!   `cluster/nodes.rs` (media nodes, placement), `cluster/rooms.rs` (rooms and members),
//!   `cluster/instances.rs` (signaling instances), `cluster/events.rs` (room events), and
//!   `cluster/scripts/*.lua` (the Lua scripts).
//! - [`link_auth`]: the internal link's authentication (signed upgrade, hello proof) and the
//!   per-peer adoption key.
//! - [`frame_limit`]: a WebSocket frame-size limit checked from each frame's header, before its
//!   payload is buffered (the browser socket and the internal link).
//! - [`load`]: the load model — what media costs a node, in forwarded packets per second (the
//!   unit of heartbeats, capacities and placement reservations).
//! - [`names`]: the charset of every name that becomes part of a Redis key (communities,
//!   rooms, node and signaling ids).
//! - [`presence`]: presence events for listeners outside the call (format and key names).
//! - [`metrics`]: the Prometheus registry and metrics both node kinds share.
//! - [`shutdown`]: the stop signal both node kinds drain on.
//! - `test_redis` (feature `test-support`): real `redis-server` processes for tests.
//! - `layers` (feature `test-support`): the import-circle check each crate's `tests/layers.rs`
//!   runs on its own `src/`.
//!
//! Dependencies point one way: `link`, `caps` and `cluster` use `protocol`; `cluster` also
//! uses `names`; the others use no sibling.

pub mod caps;
pub mod cluster;
pub mod frame_limit;
#[cfg(feature = "test-support")]
pub mod layers;
pub mod link;
pub mod link_auth;
pub mod load;
pub mod metrics;
pub mod names;
pub mod presence;
pub mod protocol;
pub mod shutdown;
#[cfg(feature = "test-support")]
pub mod test_redis;
