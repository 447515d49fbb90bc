//! Types shared by Conclave's signaling and media nodes.
//!
//! # Layout
//! - [`protocol`]: browser <-> signaling-node messages (JSON over WebSocket).
//! - [`link`]: signaling-node <-> media-node messages (JSON over the internal WebSocket, or
//!   actix messages in-process).

pub mod link;
pub mod protocol;
