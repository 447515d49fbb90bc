//! The cluster store: all of Conclave's shared state in Redis, behind one [`ClusterStore`]
//! (one multiplexed connection, cheap to clone, reconnects by itself). Key schema in
//! `docs/cluster.md`; every key starts with one prefix.
//!
//! # Layout
//! - `store`: the store, its connection, [`RedisSettings`] (the one factory of every Redis
//!   connection: password, ACL user, TLS), [`ClusterError`], and the name of every key. Write
//!   paths refuse names outside `crate::names` (a room `x:members` would be room `x`'s hash).
//! - `nodes`: media nodes (heartbeat, liveness, the operators' node list) and room placement.
//! - `rooms`: rooms and their members across signaling instances (join, leave, resume,
//!   re-assertion).
//! - `instances`: signaling instances' heartbeats and the cleanup of dead ones.
//! - `events`: the room event channels the signaling instances share.
//! - `scripts/*.lua`: the Lua scripts (each one atomic on the server), loaded with
//!   `include_str!`; every write that must agree across nodes is one of them.
//!
//! Every item is used from this module's path (`conclave_common::cluster::*`); the files
//! above are private. Imports point one way: each keyspace file uses `store`, `store` uses
//! none of them, and none uses another.

mod events;
mod instances;
mod nodes;
mod rooms;
mod store;

pub use instances::SIGNALING_STALE_MS;
pub use nodes::{NodeInfo, NodeLoad, NodeStatus, NODE_STALE_MS, PLACE_BUDGET, ROOM_TTL_MS};
pub use rooms::{resume_hash, Asserted, Claim, Claimed, Joined, Left, MemberRecord, RoomAssertion};
pub use store::{now_ms, redacted, ClusterError, ClusterStore, RedisSettings};
