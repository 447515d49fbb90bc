//! Conclave's load generator and benchmark support.
//!
//! # Layout
//! - [`sim`]: one simulated participant: the media half shared by every target (str0m
//!   clients over UDP, synthetic media out, each publisher on its own clock, measured media
//!   in) and Conclave's signaling (WebSocket).
//! - [`janus`]: the same participant signaling with Janus VideoRoom (HTTP REST), for
//!   side-by-side runs.
//! - [`payload`]: the stamped payload (publisher, sequence, send time).
//! - [`load`]: a whole run against either target (Conclave: tokens; Janus: rooms made
//!   first), many participants over worker threads, the summary.
//! - [`floor`]: the same scenario through `udp-relay` (plain UDP), the reports' baseline.
//! - [`cluster_sim`]: the cluster simulator (`cluster-sim`): many simulated media and
//!   signaling nodes' Redis traffic through the real store code, placement timed.
//! - [`procstat`]: the media node's CPU and memory from `/proc`.

pub mod cluster_sim;
pub mod floor;
pub mod janus;
pub mod load;
pub mod payload;
pub mod procstat;
pub mod sim;
