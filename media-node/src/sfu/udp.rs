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
use std::time::{Duration, Instant};

use actix::{Message, Recipient};
use str0m::ice::StunMessage;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::ice;
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
        limits: RouterLimits,
    ) {
        // Invariant: called on an arbiter thread, inside its tokio runtime.
        let socket = Arc::new(UdpSocket::from_std(self.socket).expect("inside a tokio runtime"));
        actix::spawn(receive_loop(socket, updates, counters, limits));
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
    /// A new peer with our ICE credentials for it: its STUN names the ufrag and is signed
    /// with the password.
    Add {
        ufrag: String,
        password: String,
        route: Route,
    },
    /// The peer is gone: forget its ufrag and every address learned for it.
    Remove { peer: PeerKey },
}

/// Handle the room SFUs use to change the routing table.
pub type RouterHandle = mpsc::UnboundedSender<RouterUpdate>;

/// What one peer may cost the router: addresses it may hold and packets it may send.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Learned addresses per peer; a new one evicts the one verified longest ago.
    pub addrs_per_peer: usize,
    /// Datagrams per second a peer may send (its bucket holds one second of them); the
    /// rest is dropped here, before decryption costs anything.
    pub ingress_pps: u32,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            addrs_per_peer: DEFAULT_ADDRS_PER_PEER,
            ingress_pps: DEFAULT_PEER_INGRESS_PPS,
        }
    }
}

/// A browser has at most a handful of candidate pairs towards our one address (host v4/v6,
/// server-reflexive, relayed): 8 leaves room and bounds what one peer holds.
pub const DEFAULT_ADDRS_PER_PEER: usize = 8;
/// A 2.5 Mbps simulcast publisher sends ≈ 300 packets/s with audio and RTCP, a keyframe
/// burst a few hundred at once: 1,500/s (≈ 13 Mbps of full-size packets) never drops an
/// honest client's packet and caps what a flooding one costs.
pub const DEFAULT_PEER_INGRESS_PPS: u32 = 1_500;
/// An address whose owner has not re-verified it (by STUN, which browsers repeat every few
/// seconds on the pair in use) for this long may be taken by another peer: a NAT may have
/// handed the port on. Before that, it is never repointed.
const ADDRESS_STALE_AFTER: Duration = Duration::from_secs(30);

/// One peer as the router knows it.
struct RoutedPeer {
    route: Route,
    ufrag: String,
    password: String,
    /// Addresses a verified STUN request came from, with when it last did.
    addrs: Vec<(SocketAddr, Instant)>,
    budget: IngressBudget,
}

/// A token bucket of datagrams: refills at the peer's rate, holds one second of it.
struct IngressBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl IngressBudget {
    fn full(pps: u32, now: Instant) -> IngressBudget {
        IngressBudget {
            tokens: f64::from(pps),
            refilled_at: now,
        }
    }

    /// Take one datagram's token; `false` if the bucket is empty.
    fn take(&mut self, pps: u32, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.refilled_at = self.refilled_at.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(pps)).min(f64::from(pps));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Routing table: our ufrag -> peer, learned source address -> peer, and each peer's
/// password, addresses and ingress budget.
#[derive(Default)]
pub struct Router {
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    peers: HashMap<PeerKey, RoutedPeer>,
    limits: RouterLimits,
}

/// Why the router dropped a datagram (the label of `conclave_media_dropped_packets_total`).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum DropReason {
    /// STUN naming a ufrag we never handed out (or none).
    UnknownUfrag,
    /// Non-STUN from an address no verified STUN request taught us.
    UnknownSource,
    /// A STUN request naming a peer's ufrag whose MESSAGE-INTEGRITY is not made with that
    /// peer's password: forged, it teaches nothing.
    BadIntegrity,
    /// A verified STUN request from an address another peer holds: never repointed.
    AddressTaken,
    /// The peer sent more than its ingress budget.
    OverBudget,
}

impl DropReason {
    /// Every reason, for registering the metric's labels at start.
    pub const ALL: [DropReason; 5] = [
        DropReason::UnknownUfrag,
        DropReason::UnknownSource,
        DropReason::BadIntegrity,
        DropReason::AddressTaken,
        DropReason::OverBudget,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::UnknownSource => "unknown_source",
            DropReason::BadIntegrity => "bad_integrity",
            DropReason::AddressTaken => "address_taken",
            DropReason::OverBudget => "over_budget",
        }
    }
}

impl Router {
    pub fn new(limits: RouterLimits) -> Router {
        Router {
            limits,
            ..Router::default()
        }
    }

    pub fn apply(&mut self, update: RouterUpdate, now: Instant) {
        match update {
            RouterUpdate::Add {
                ufrag,
                password,
                route,
            } => {
                let peer = route.peer;
                self.by_ufrag.insert(ufrag.clone(), peer);
                let budget = IngressBudget::full(self.limits.ingress_pps, now);
                self.peers.insert(
                    peer,
                    RoutedPeer {
                        route,
                        ufrag,
                        password,
                        addrs: Vec::new(),
                        budget,
                    },
                );
            }
            RouterUpdate::Remove { peer } => {
                if let Some(gone) = self.peers.remove(&peer) {
                    self.by_ufrag.remove(&gone.ufrag);
                    for (addr, _) in gone.addrs {
                        self.by_addr.remove(&addr);
                    }
                }
            }
        }
    }

    /// The route of a datagram from `source`, learning the source from a verified STUN
    /// request; or why it is dropped.
    pub fn route(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<&Route, DropReason> {
        let key = self.decide(source, datagram, now)?;
        self.peers
            .get(&key)
            .map(|p| &p.route)
            .ok_or(DropReason::UnknownSource)
    }

    /// The routing decision, with the side effects of learning addresses from verified STUN
    /// and spending the peer's ingress budget.
    pub fn decide(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<PeerKey, DropReason> {
        let key = match ice::binding_request(datagram) {
            Some(request) => self.learn(source, &request, now)?,
            None => *self.by_addr.get(&source).ok_or(DropReason::UnknownSource)?,
        };
        let peer = self.peers.get_mut(&key).ok_or(DropReason::UnknownSource)?;
        if !peer.budget.take(self.limits.ingress_pps, now) {
            return Err(DropReason::OverBudget);
        }
        Ok(key)
    }

    /// A STUN binding request: the peer whose ufrag it names, if its MESSAGE-INTEGRITY is
    /// made with that peer's password; its source is then that peer's (unless another peer
    /// holds it).
    fn learn(
        &mut self,
        source: SocketAddr,
        request: &StunMessage<'_>,
        now: Instant,
    ) -> Result<PeerKey, DropReason> {
        let (ours, _) = request.split_username().ok_or(DropReason::UnknownUfrag)?;
        let key = *self.by_ufrag.get(ours).ok_or(DropReason::UnknownUfrag)?;
        let peer = self.peers.get(&key).ok_or(DropReason::UnknownUfrag)?;
        if !ice::integrity_ok(request, &peer.password) {
            return Err(DropReason::BadIntegrity);
        }
        match self.by_addr.get(&source).copied() {
            Some(owner) if owner == key => {
                if let Some(entry) = self
                    .peers
                    .get_mut(&key)
                    .and_then(|p| p.addrs.iter_mut().find(|(a, _)| *a == source))
                {
                    entry.1 = now;
                }
            }
            Some(owner) => {
                // Another peer's address: a spoofed source, unless the owner has gone quiet
                // there long enough for a NAT to have handed the port on.
                let owner_fresh = self.peers.get(&owner).is_some_and(|o| {
                    o.addrs.iter().any(|(a, verified)| {
                        *a == source
                            && now.saturating_duration_since(*verified) < ADDRESS_STALE_AFTER
                    })
                });
                if owner_fresh {
                    return Err(DropReason::AddressTaken);
                }
                if let Some(o) = self.peers.get_mut(&owner) {
                    o.addrs.retain(|(a, _)| *a != source);
                }
                self.add_address(key, source, now);
            }
            None => self.add_address(key, source, now),
        }
        Ok(key)
    }

    /// Give `source` to peer `key`, evicting the address it verified longest ago when it
    /// holds its limit.
    fn add_address(&mut self, key: PeerKey, source: SocketAddr, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if peer.addrs.len() >= self.limits.addrs_per_peer.max(1) {
            if let Some(oldest) = (0..peer.addrs.len()).min_by_key(|&i| peer.addrs[i].1) {
                let (evicted, _) = peer.addrs.swap_remove(oldest);
                self.by_addr.remove(&evicted);
            }
        }
        peer.addrs.push((source, now));
        self.by_addr.insert(source, key);
    }

    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Addresses the router holds, over all peers.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

/// Receive datagrams until the socket fails, routing each to its room SFU, in batches of
/// whatever arrived together.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    mut updates: mpsc::UnboundedReceiver<RouterUpdate>,
    counters: ThreadMetrics,
    limits: RouterLimits,
) {
    let mut router = Router::new(limits);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Per room: its recipient and the datagrams of this wakeup.
    let mut batches: Vec<(u64, Recipient<DatagramBatch>, Vec<DatagramIn>)> = Vec::new();
    loop {
        let first = tokio::select! {
            // Routing changes first, so a peer's ufrag is known before its first STUN.
            biased;
            update = updates.recv() => match update {
                Some(update) => {
                    router.apply(update, Instant::now());
                    continue;
                }
                None => break,
            },
            received = socket.recv_from(&mut buf) => received,
        };
        // One clock reading per wakeup: the ingress budgets need no finer time.
        let now = Instant::now();
        let mut received = Some(first);
        let mut count = 0;
        while let Some(result) = received.take() {
            match result {
                Ok((len, source)) => {
                    counters.rx_packets.inc();
                    counters.rx_bytes.inc_by(len as u64);
                    let datagram = &buf[..len];
                    match router.route(source, datagram, now) {
                        Ok(route) => {
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
                        Err(reason) => {
                            metrics::DROPPED.with_label_values(&[reason.label()]).inc();
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
    use proptest::prelude::*;
    use str0m::ice::TransId;

    /// A binding request as a browser sends it to us: `USERNAME = ours:theirs`, signed with
    /// `password` (ours, if the sender is the peer).
    fn stun_request(ours: &str, password: &str, use_candidate: bool) -> Vec<u8> {
        let username = format!("{ours}:theirUfrag");
        let msg = StunMessage::binding_request(
            &username,
            TransId::new(),
            true,
            1,
            0x6e7f_00ff,
            use_candidate,
        );
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(Some(password.as_bytes()), &mut buf, ice::stun_hmac)
            .unwrap();
        buf.truncate(n);
        buf
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

    /// A router with peers 1 (ufrag `aaaa`, password `pass-a…`) and 2 (`bbbb`, `pass-b…`).
    fn two_peers(limits: RouterLimits, now: Instant) -> Router {
        let mut router = Router::new(limits);
        for (peer, ufrag, password) in [(1, "aaaa", PASS_A), (2, "bbbb", PASS_B)] {
            router.apply(
                RouterUpdate::Add {
                    ufrag: ufrag.into(),
                    password: password.into(),
                    route: test_route(peer),
                },
                now,
            );
        }
        router
    }

    const PASS_A: &str = "pass-a-0123456789abcdefgh";
    const PASS_B: &str = "pass-b-0123456789abcdefgh";
    const RTP: [u8; 100] = [0x80; 100];

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[actix::test]
    async fn routes_by_verified_stun_then_by_learned_address() {
        let now = Instant::now();
        let mut router = two_peers(RouterLimits::default(), now);
        let (a, b) = (addr(5000), addr(6000));

        // Before STUN, media from an address is unknown.
        assert_eq!(router.decide(a, &RTP, now), Err(DropReason::UnknownSource));
        assert_eq!(
            router.decide(a, &stun_request("aaaa", PASS_A, true), now),
            Ok(1)
        );
        assert_eq!(
            router.decide(b, &stun_request("bbbb", PASS_B, false), now),
            Ok(2)
        );
        assert_eq!(router.decide(a, &RTP, now), Ok(1));
        assert_eq!(router.decide(b, &RTP, now), Ok(2));
        assert_eq!(
            router.decide(b, &stun_request("zzzz", PASS_B, false), now),
            Err(DropReason::UnknownUfrag)
        );

        // Removing a peer forgets its ufrag and its learned addresses, not the other's.
        router.apply(RouterUpdate::Remove { peer: 1 }, now);
        assert_eq!(router.decide(a, &RTP, now), Err(DropReason::UnknownSource));
        assert_eq!(
            router.decide(a, &stun_request("aaaa", PASS_A, false), now),
            Err(DropReason::UnknownUfrag)
        );
        assert_eq!(router.decide(b, &RTP, now), Ok(2));
        assert_eq!((router.peers(), router.addresses()), (1, 1));
    }

    #[actix::test]
    async fn stun_with_a_bad_integrity_teaches_nothing() {
        let now = Instant::now();
        let mut router = two_peers(RouterLimits::default(), now);
        let (a, spoofed) = (addr(5000), addr(7000));
        assert_eq!(
            router.decide(a, &stun_request("aaaa", PASS_A, true), now),
            Ok(1)
        );
        // Peer 1's ufrag, signed with a guess (or with peer 2's password): dropped, and the
        // source stays unknown.
        for password in ["a-guess-0123456789abcdefgh", PASS_B] {
            assert_eq!(
                router.decide(spoofed, &stun_request("aaaa", password, true), now),
                Err(DropReason::BadIntegrity)
            );
        }
        assert_eq!(
            router.decide(spoofed, &RTP, now),
            Err(DropReason::UnknownSource)
        );
        // And the same from peer 1's own address does not move it either.
        assert_eq!(
            router.decide(a, &stun_request("bbbb", PASS_A, true), now),
            Err(DropReason::BadIntegrity)
        );
        assert_eq!(router.decide(a, &RTP, now), Ok(1));
    }

    #[actix::test]
    async fn an_address_held_by_another_peer_is_never_repointed_while_fresh() {
        let now = Instant::now();
        let mut router = two_peers(RouterLimits::default(), now);
        let victim = addr(5000);
        assert_eq!(
            router.decide(victim, &stun_request("aaaa", PASS_A, true), now),
            Ok(1)
        );
        // Peer 2 signs correctly with its own password, from peer 1's address (spoofed).
        let forged = stun_request("bbbb", PASS_B, true);
        assert_eq!(
            router.decide(victim, &forged, now),
            Err(DropReason::AddressTaken)
        );
        assert_eq!(router.decide(victim, &RTP, now), Ok(1));
        // Peer 1 keeps re-verifying it: still its own half a minute later.
        let later = now + ADDRESS_STALE_AFTER;
        assert_eq!(
            router.decide(victim, &stun_request("aaaa", PASS_A, false), later),
            Ok(1)
        );
        assert_eq!(
            router.decide(victim, &forged, later),
            Err(DropReason::AddressTaken)
        );
        // Quiet there for longer than that: a NAT may have given the port to peer 2.
        let stale = later + ADDRESS_STALE_AFTER;
        assert_eq!(router.decide(victim, &forged, stale), Ok(2));
        assert_eq!(router.decide(victim, &RTP, stale), Ok(2));
    }

    #[actix::test]
    async fn a_peer_moving_address_is_followed_and_its_addresses_are_capped() {
        let start = Instant::now();
        let limits = RouterLimits {
            addrs_per_peer: 3,
            ..RouterLimits::default()
        };
        let mut router = two_peers(limits, start);
        let at = |i: u64| start + Duration::from_millis(i);
        for (i, port) in (5000..5005).enumerate() {
            let request = stun_request("aaaa", PASS_A, false);
            assert_eq!(router.decide(addr(port), &request, at(i as u64)), Ok(1));
        }
        // The three verified last are kept; the older ones were evicted.
        assert_eq!(router.addresses(), 3);
        for port in 5000..5002 {
            assert_eq!(
                router.decide(addr(port), &RTP, at(10)),
                Err(DropReason::UnknownSource)
            );
        }
        for port in 5002..5005 {
            assert_eq!(router.decide(addr(port), &RTP, at(10)), Ok(1));
        }
        // Re-verifying an address keeps it: 5002 is refreshed, so 5003 goes next.
        router
            .decide(addr(5002), &stun_request("aaaa", PASS_A, false), at(11))
            .unwrap();
        router
            .decide(addr(5010), &stun_request("aaaa", PASS_A, false), at(12))
            .unwrap();
        assert_eq!(router.decide(addr(5002), &RTP, at(13)), Ok(1));
        assert_eq!(
            router.decide(addr(5003), &RTP, at(13)),
            Err(DropReason::UnknownSource)
        );
    }

    #[actix::test]
    async fn a_peer_over_its_ingress_budget_is_dropped_and_others_are_not() {
        let start = Instant::now();
        let limits = RouterLimits {
            ingress_pps: 100,
            ..RouterLimits::default()
        };
        let mut router = two_peers(limits, start);
        let (a, b) = (addr(5000), addr(6000));
        router
            .decide(a, &stun_request("aaaa", PASS_A, true), start)
            .unwrap();
        router
            .decide(b, &stun_request("bbbb", PASS_B, true), start)
            .unwrap();
        // The bucket holds one second (100) and the STUN took one.
        let passed = (0..1_000)
            .filter(|_| router.decide(a, &RTP, start).is_ok())
            .count();
        assert_eq!(passed, 99);
        assert_eq!(router.decide(a, &RTP, start), Err(DropReason::OverBudget));
        // Peer 2 has its own bucket.
        assert_eq!(router.decide(b, &RTP, start), Ok(2));
        // 50 ms later, 5 more tokens.
        let later = start + Duration::from_millis(50);
        let passed = (0..100)
            .filter(|_| router.decide(a, &RTP, later).is_ok())
            .count();
        assert_eq!(passed, 5);
    }

    /// Runs `check` on `cases` inputs from `strategy` against one router with two peers
    /// (one actix system for all cases: a route needs an actor).
    fn run_cases<S: Strategy>(
        strategy: S,
        check: impl Fn(&mut Router, S::Value) -> Result<(), TestCaseError>,
    ) {
        let now = Instant::now();
        let router = std::cell::RefCell::new(two_peers(RouterLimits::default(), now));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 2_000,
            ..ProptestConfig::default()
        });
        runner
            .run(&strategy, |value| check(&mut router.borrow_mut(), value))
            .unwrap();
    }

    /// Any datagram from any source: a decision, never a panic, and never a peer for an
    /// address no verified STUN taught.
    #[actix::test]
    async fn classification_of_arbitrary_datagrams_never_panics() {
        let strategy = (proptest::collection::vec(any::<u8>(), 0..600), 1u16..);
        run_cases(strategy, |router, (datagram, port)| {
            let result = router.decide(addr(port), &datagram, Instant::now());
            prop_assert!(result.is_err(), "{:?}", result);
            let _ = ice::binding_success(&datagram);
            let _ = ice::transaction_id(&datagram);
            Ok(())
        });
    }

    /// STUN requests naming a real ufrag, with arbitrary attributes and integrity: the
    /// verification runs on them, never panics, and learns nothing without the password.
    #[actix::test]
    async fn stun_naming_a_peer_with_arbitrary_attributes_never_learns() {
        let attrs = proptest::collection::vec(any::<u8>(), 0..200);
        let strategy = (attrs, any::<[u8; 20]>(), 0u8..4);
        run_cases(strategy, |router, (attrs, integrity, class)| {
            let mut body = Vec::new();
            for (kind, value) in [(0x0006u16, &b"aaaa:x"[..]), (0x0024, &[0, 0, 0, 1][..])] {
                body.extend_from_slice(&kind.to_be_bytes());
                body.extend_from_slice(&(value.len() as u16).to_be_bytes());
                body.extend_from_slice(value);
                body.resize(body.len().next_multiple_of(4), 0);
            }
            body.extend_from_slice(&attrs[..attrs.len() - attrs.len() % 4]);
            body.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
            body.extend_from_slice(&integrity);
            let mut datagram = vec![class, 1];
            datagram.extend_from_slice(&(body.len() as u16).to_be_bytes());
            datagram.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            datagram.extend_from_slice(&[9; 12]);
            datagram.extend_from_slice(&body);
            prop_assert!(router.decide(addr(9), &datagram, Instant::now()).is_err());
            prop_assert_eq!(router.addresses(), 0);
            Ok(())
        });
    }
}
