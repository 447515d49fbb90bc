//! The data path: one UDP socket, one `RoomSfu` actor per room owning the str0m `Rtc` of every
//! participant in it, forwarding in RTP mode between them.
//!
//! A packet's way through, file by file (read `udp.rs` and `forward.rs` for the whole data
//! path; the rest is control):
//!
//! ```text
//! udp.rs      receive_loop: recv_from -> router (verified STUN, then learned source address;
//!             the peer's ingress budget) -> DatagramBatch to the peer's room
//! room.rs     on_datagram: Rtc::handle_input(Receive)          (peer.rs: Peer::poll_output
//!             -> Event::RtpPacket -> Propagated::Rtp)
//! forward.rs  fan_out: for each other connected peer: its simulcast layer (simulcast.rs),
//!             map payload type, number it in the peer's stream, StreamTx::write_rtp
//! room.rs     drive: each written-to peer's Rtc::poll_output -> Transmit
//! peer.rs     only to an address the peer proved its own (consent.rs)
//! udp.rs      UdpSender::send (send_to on the same socket)
//! ```
//!
//! # Layout (lowest first: a file names only files listed before it)
//! - [`ice`]: ICE credentials from the CSPRNG, STUN parsing and integrity checks, our own
//!   consent-check requests.
//! - [`udp`]: the socket, both halves — bind, receive loop and router, send half; the
//!   `DatagramBatch` it hands rooms.
//! - [`rtc`]: str0m configuration (`rtc_config`, send-stream sizing) and the panic guard
//!   `guarded` (a panic inside one `Rtc` costs that peer, never the room).
//! - [`messages`]: what the room actor handles, and `RoomEmpty`, which it sends up to the node.
//! - `consent`: where one peer's media may go — addresses it proved its own by answering
//!   our consent check (a forged nomination cannot aim the room's media at a third party).
//! - `simulcast`: which layer of a publisher's video each subscriber gets, and its stream
//!   kept continuous across layer changes (VP8 reading, layer choice, munger).
//! - `speech`: who is speaking, from the audio levels publishers put on their packets, and
//!   the room's dominant speaker.
//! - `peer`: one participant — `Peer`, its tracks, `poll_output` and event handling.
//! - `negotiate`: server-side renegotiation — queued track changes, one offer at a time.
//! - `forward`: forwarding — fan-out, payload-type map, sequence rebase, keyframe throttling.
//! - [`room`]: the `RoomSfu` actor — handlers, peer lifecycle, the drive loop and its timer.

pub mod ice;
pub mod messages;
pub mod room;
pub mod rtc;
pub mod udp;

mod consent;
mod forward;
mod negotiate;
mod peer;
mod simulcast;
mod speech;

pub use rtc::rtc_config;
pub use udp::DatagramBatch;
