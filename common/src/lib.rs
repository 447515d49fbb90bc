//! Types shared by Conclave's signaling and media nodes.
//!
//! # Layout
//! - [`protocol`]: browser <-> signaling-node messages (JSON over WebSocket).
//! - [`cluster`]: cluster state in Redis (node registry, least-loaded room placement).
//! - [`room_state`]: rooms shared by several signaling nodes (members, events, instances).
//! - [`link`]: signaling-node <-> media-node messages (JSON over the internal WebSocket, or
//!   actix messages in-process).

pub mod cluster;
pub mod link;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod room_state;
pub mod shutdown;
#[cfg(feature = "test-support")]
pub mod test_redis;
