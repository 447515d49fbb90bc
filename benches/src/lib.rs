//! Conclave's load generator and benchmark support.
//!
//! # Layout
//! - [`sim`]: one simulated participant (signaling over WebSocket, str0m client over UDP,
//!   synthetic media out, measured media in).
//! - [`payload`]: the stamped payload (publisher, sequence, send time).
//! - [`load`]: a whole run — tokens, many participants over worker threads, the summary.
//! - [`floor`]: the same scenario through `udp-relay` (plain UDP), the reports' baseline.
//! - [`procstat`]: the media node's CPU and memory from `/proc`.

pub mod floor;
pub mod load;
pub mod payload;
pub mod procstat;
pub mod sim;
