//! One room thread's UDP socket, both halves: binding it, the receive loop with its router
//! that hands each datagram to the room SFU owning its peer, and the send half the thread's
//! rooms write their peers' transmits to. The first and last step of the data path (the
//! middle one, forwarding, is `forward.rs`). Each room thread has its own socket (its own
//! port): a datagram is received, forwarded and sent on one thread.
//!
//! `str0m`'s `Rtc::accepts` needs the `Rtc`, which lives inside a room actor, so the loop keeps
//! its own table: a STUN binding request names our ICE ufrag (`USERNAME = ours:theirs`), which
//! we chose per peer; after that the source address of the STUN request identifies the peer
//! for DTLS, SRTP and RTCP too.
//!
//! The bottom layer of the data path: it names no other file of the SFU. Rooms reach it through
//! [`RouterHandle`] and [`UdpSender`]; it reaches rooms through the `Recipient<DatagramBatch>`
//! in each [`Route`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::{Message, Recipient};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::metrics::{self, ThreadMetrics};

/// Kernel buffer asked for on the media socket. The default (≈ 208 KiB) overflows when
/// keyframes of many publishers arrive at once; the kernel caps it at `net.core.rmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Largest datagram we accept; WebRTC keeps packets under the path MTU (≈ 1200–1500 bytes).
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per wakeup when more are waiting. Handing a room several at once lets it
/// poll each subscriber once per batch instead of once per packet.
const MAX_BATCH: usize = 16;

/// Identifies one peer (one participant's `Rtc`) inside the node.
pub type PeerKey = u64;

/// Datagrams for peers of one room that arrived together: what the socket hands a room (the
/// room SFU handles it; the socket only holds a `Recipient` of it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DatagramBatch(pub Vec<DatagramIn>);

/// One received datagram for a peer of a room (an owned copy: it crosses actors).
pub struct DatagramIn {
    pub peer: PeerKey,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

/// The media socket, bound, before its receive loop starts.
pub struct MediaSocket {
    socket: std::net::UdpSocket,
}

impl MediaSocket {
    /// Bind the media socket: non-blocking, with kernel buffers of `SOCKET_BUFFER_BYTES`.
    pub fn bind(addr: SocketAddr) -> std::io::Result<MediaSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: a smaller buffer still works, it only drops bursts sooner.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Ok(MediaSocket {
            socket: socket.into(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The send half: the thread's rooms send through a plain non-blocking handle of the
    /// same socket, counted in the thread's own counters.
    pub fn sender(&self, counters: ThreadMetrics) -> std::io::Result<UdpSender> {
        Ok(UdpSender {
            socket: Arc::new(self.socket.try_clone()?),
            counters,
        })
    }

    /// Start the receive loop on the current arbiter (whose runtime then owns the receive
    /// side). Must be called inside a running actix arbiter: the room thread's.
    pub fn spawn_receive_loop(
        self,
        updates: mpsc::UnboundedReceiver<RouterUpdate>,
        counters: ThreadMetrics,
    ) {
        // Invariant: called on an arbiter thread, inside its tokio runtime.
        let socket = Arc::new(UdpSocket::from_std(self.socket).expect("inside a tokio runtime"));
        actix::spawn(receive_loop(socket, updates, counters));
    }
}

/// The send half of a room thread's socket, shared by the thread's rooms. Non-blocking: a
/// full send buffer drops the packet (a NACK or the next keyframe repairs it).
#[derive(Clone)]
pub struct UdpSender {
    socket: Arc<std::net::UdpSocket>,
    counters: ThreadMetrics,
}

impl UdpSender {
    /// Send one datagram now, counting it; on failure it is dropped (and counted as such).
    #[inline]
    pub fn send(&self, contents: &[u8], destination: SocketAddr) -> std::io::Result<usize> {
        match self.socket.send_to(contents, destination) {
            Ok(n) => {
                self.counters.tx_packets.inc();
                self.counters.tx_bytes.inc_by(n as u64);
                Ok(n)
            }
            Err(e) => {
                metrics::UDP_ERRORS.inc();
                metrics::DROPPED.with_label_values(&["send_failed"]).inc();
                Err(e)
            }
        }
    }
}

/// Where datagrams of one peer go.
#[derive(Clone)]
pub struct Route {
    pub peer: PeerKey,
    /// Identifies the room, to group one wakeup's datagrams per room.
    pub room_id: u64,
    pub room: Recipient<DatagramBatch>,
}

/// Changes to the routing table, sent by room SFUs as peers come and go.
pub enum RouterUpdate {
    /// A new peer with our chosen ICE ufrag.
    Add { ufrag: String, route: Route },
    /// The peer is gone: forget its ufrag and every address learned for it.
    Remove { peer: PeerKey },
}

/// Handle the room SFUs use to change the routing table.
pub type RouterHandle = mpsc::UnboundedSender<RouterUpdate>;

/// Routing table: ufrag -> peer, learned source address -> peer.
#[derive(Default)]
pub struct Router {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
}

/// What the router decided for one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Deliver to this peer.
    Peer(PeerKey),
    /// Nobody owns it: drop.
    Drop(DropReason),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum DropReason {
    /// STUN naming a ufrag we never handed out.
    UnknownUfrag,
    /// Non-STUN from an address no STUN check taught us.
    UnknownSource,
}

impl Router {
    pub fn apply(&mut self, update: RouterUpdate) {
        match update {
            RouterUpdate::Add { ufrag, route } => {
                self.by_ufrag.insert(ufrag, route);
            }
            RouterUpdate::Remove { peer } => {
                self.by_ufrag.retain(|_, r| r.peer != peer);
                self.by_addr.retain(|_, r| r.peer != peer);
            }
        }
    }

    /// Find the owner of a datagram from `source`, learning the source address from STUN.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<&Route> {
        match self.decide(source, datagram) {
            Decision::Peer(_) => self.by_addr.get(&source),
            Decision::Drop(_) => None,
        }
    }

    /// The routing decision, with the side effect of learning addresses from STUN.
    pub fn decide(&mut self, source: SocketAddr, datagram: &[u8]) -> Decision {
        if let Some(ufrag) = stun_local_ufrag(datagram) {
            let Some(route) = self.by_ufrag.get(ufrag) else {
                return Decision::Drop(DropReason::UnknownUfrag);
            };
            let peer = route.peer;
            // A peer may reach us from several addresses (ICE tries them all); keep them all.
            if self.by_addr.get(&source).map(|r| r.peer) != Some(peer) {
                self.by_addr.insert(source, route.clone());
            }
            return Decision::Peer(peer);
        }
        match self.by_addr.get(&source) {
            Some(route) => Decision::Peer(route.peer),
            None => Decision::Drop(DropReason::UnknownSource),
        }
    }

    pub fn peers(&self) -> usize {
        self.by_ufrag.len()
    }
}

/// If `datagram` is a STUN message with a USERNAME attribute, the part before `:` (the ufrag
/// of the receiver, i.e. ours). Bounds-checked: any byte string is safe input.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const HEADER: usize = 20;
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const ATTR_USERNAME: u16 = 0x0006;
    // RFC 7983 demultiplexing: STUN starts with 0..=3; then the magic cookie.
    if datagram.len() < HEADER || datagram[0] > 3 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(HEADER..HEADER + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Receive datagrams until the socket fails, routing each to its room SFU, in batches of
/// whatever arrived together.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    mut updates: mpsc::UnboundedReceiver<RouterUpdate>,
    counters: ThreadMetrics,
) {
    let mut router = Router::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Per room: its recipient and the datagrams of this wakeup.
    let mut batches: Vec<(u64, Recipient<DatagramBatch>, Vec<DatagramIn>)> = Vec::new();
    loop {
        let first = tokio::select! {
            // Routing changes first, so a peer's ufrag is known before its first STUN.
            biased;
            update = updates.recv() => match update {
                Some(update) => {
                    router.apply(update);
                    continue;
                }
                None => break,
            },
            received = socket.recv_from(&mut buf) => received,
        };
        let mut received = Some(first);
        let mut count = 0;
        while let Some(result) = received.take() {
            match result {
                Ok((len, source)) => {
                    counters.rx_packets.inc();
                    counters.rx_bytes.inc_by(len as u64);
                    let datagram = &buf[..len];
                    match router.route(source, datagram) {
                        Some(route) => {
                            let item = DatagramIn {
                                peer: route.peer,
                                source,
                                data: datagram.to_vec(),
                            };
                            match batches.iter_mut().find(|(id, _, _)| *id == route.room_id) {
                                Some((_, _, items)) => items.push(item),
                                None => {
                                    batches.push((route.room_id, route.room.clone(), vec![item]))
                                }
                            }
                        }
                        None => {
                            metrics::DROPPED
                                .with_label_values(&["unknown_source"])
                                .inc();
                        }
                    }
                }
                // ICMP errors surface here on some systems; they concern one peer only.
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive error");
                    metrics::UDP_ERRORS.inc();
                }
            }
            count += 1;
            if count < MAX_BATCH {
                match socket.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => received = Some(other),
                }
            }
        }
        for (_, room, items) in batches.drain(..) {
            // do_send: the room's mailbox is unbounded; a bounded one drops bursts.
            metrics::QUEUE_DEPTH.inc();
            room.do_send(DatagramBatch(items));
        }
    }
    tracing::info!("udp receive loop ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with a USERNAME attribute, as a browser sends it.
    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&0x0006u16.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A second attribute after USERNAME, to check we stop at the right one.
        attr.extend_from_slice(&0x8029u16.to_be_bytes());
        attr.extend_from_slice(&8u16.to_be_bytes());
        attr.extend_from_slice(&[7; 8]);
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        msg.extend_from_slice(&[1; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn stun_username_gives_our_ufrag() {
        assert_eq!(
            stun_local_ufrag(&stun_with_username("srvUfrag:cliUfrag")),
            Some("srvUfrag")
        );
        assert_eq!(stun_local_ufrag(&stun_with_username("abc")), Some("abc"));
    }

    #[test]
    fn non_stun_and_truncated_input_is_none() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None); // RTP
        assert_eq!(stun_local_ufrag(&[22; 40]), None); // DTLS
        let full = stun_with_username("srvUfrag:cliUfrag");
        for cut in 0..full.len() {
            // Never panics, and never finds a username in a cut-short message.
            let _ = stun_local_ufrag(&full[..cut]);
        }
        // A length field pointing past the end.
        let mut lying = full.clone();
        lying[2] = 0xff;
        assert_eq!(stun_local_ufrag(&lying), None);
    }

    fn test_route(peer: PeerKey) -> Route {
        // A recipient is needed only to build a Route; the router never sends.
        struct Sink;
        impl actix::Actor for Sink {
            type Context = actix::Context<Self>;
        }
        impl actix::Handler<DatagramBatch> for Sink {
            type Result = ();
            fn handle(&mut self, _: DatagramBatch, _: &mut Self::Context) {}
        }
        let addr = actix::Actor::create(|_| Sink);
        Route {
            peer,
            room_id: 1,
            room: addr.recipient(),
        }
    }

    #[actix::test]
    async fn routes_by_ufrag_then_by_learned_address() {
        let mut router = Router::default();
        router.apply(RouterUpdate::Add {
            ufrag: "aaaa".into(),
            route: test_route(1),
        });
        router.apply(RouterUpdate::Add {
            ufrag: "bbbb".into(),
            route: test_route(2),
        });
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let rtp = [0x80u8; 100];

        // Before STUN, media from an address is unknown.
        assert_eq!(
            router.decide(a, &rtp),
            Decision::Drop(DropReason::UnknownSource)
        );
        assert_eq!(
            router.decide(a, &stun_with_username("aaaa:x")),
            Decision::Peer(1)
        );
        assert_eq!(
            router.decide(b, &stun_with_username("bbbb:y")),
            Decision::Peer(2)
        );
        assert_eq!(router.decide(a, &rtp), Decision::Peer(1));
        assert_eq!(router.decide(b, &rtp), Decision::Peer(2));
        assert_eq!(
            router.decide(b, &stun_with_username("zzzz:y")),
            Decision::Drop(DropReason::UnknownUfrag)
        );

        // Removing a peer forgets its ufrag and its learned addresses, not the other's.
        router.apply(RouterUpdate::Remove { peer: 1 });
        assert_eq!(
            router.decide(a, &rtp),
            Decision::Drop(DropReason::UnknownSource)
        );
        assert_eq!(
            router.decide(a, &stun_with_username("aaaa:x")),
            Decision::Drop(DropReason::UnknownUfrag)
        );
        assert_eq!(router.decide(b, &rtp), Decision::Peer(2));
        assert_eq!(router.peers(), 1);
    }

    #[actix::test]
    async fn a_peer_moving_address_is_followed() {
        let mut router = Router::default();
        router.apply(RouterUpdate::Add {
            ufrag: "aaaa".into(),
            route: test_route(1),
        });
        let first: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let second: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        router.decide(first, &stun_with_username("aaaa:x"));
        router.decide(second, &stun_with_username("aaaa:x"));
        assert_eq!(router.decide(second, &[0x80; 20]), Decision::Peer(1));
        assert_eq!(router.decide(first, &[0x80; 20]), Decision::Peer(1));
    }
}
