//! Who a connection is from, and how many WebSockets each client address may hold.
//!
//! Behind a reverse proxy every connection comes from the proxy's address; the client's is
//! in `X-Forwarded-For`. That header is believed only when the peer is one of the
//! configured proxies (`--trusted-proxies`); then the client is the rightmost address in it
//! that is not a trusted proxy (what a client puts in the header itself stays on the left,
//! so it cannot choose its own address). From any other peer the header is ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{s:?}: not an IP address or CIDR block"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: `peer`, or (when `peer` is a trusted proxy) the rightmost
    /// address in the `X-Forwarded-For` values (in header order) that is not a trusted proxy.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for.rev().flat_map(|v| v.rsplit(','));
        for hop in hops {
            let Some(ip) = parse_hop(hop) else {
                // Garbage from here on was written by whoever sent it: stop at the last
                // address a trusted proxy vouched for.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// The key a client's connections are counted under: its IPv4 address, or its IPv6 /64
/// (one host usually holds a whole /64).
fn counted_as(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

/// Open WebSockets per client address, at most `max` each (0: no limit). Shared by every
/// worker thread.
#[derive(Debug, Clone)]
pub struct ConnectionsPerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open WebSocket of `ip`: counted until dropped.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionsPerIp {
    pub fn new(max: usize) -> Self {
        ConnectionsPerIp {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more WebSocket of `ip`, or `None` if it holds `max` already.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = counted_as(ip);
        // Invariant: the lock is never held across a panic (plain map updates).
        let mut open = self.open.lock().expect("per-IP table lock");
        let n = open.entry(ip).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }

    /// WebSockets open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().expect("per-IP table lock");
        open.get(&counted_as(ip)).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("per-IP table lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.9.9")));
        let one: Cidr = "127.0.0.5".parse().unwrap();
        assert!(one.contains(ip("127.0.0.5")) && !one.contains(ip("127.0.0.6")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // From a client directly: its header is ignored.
        let direct = trusted.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter());
        assert_eq!(direct, ip("203.0.113.9"));
        // From the proxy: the address it appended.
        let via = trusted.client_ip(ip("10.0.0.2"), ["203.0.113.9"].into_iter());
        assert_eq!(via, ip("203.0.113.9"));
        // A client that forges the header gets its forgery kept on the left, ignored.
        let forged = trusted.client_ip(
            ip("10.0.0.2"),
            ["1.2.3.4, 5.6.7.8, 203.0.113.9"].into_iter(),
        );
        assert_eq!(forged, ip("203.0.113.9"));
        // Two proxies in a row (both trusted), and two header lines.
        let chain = trusted.client_ip(
            ip("10.0.0.2"),
            ["1.1.1.1, 198.51.100.7", "10.9.9.9"].into_iter(),
        );
        assert_eq!(chain, ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), std::iter::empty()),
            ip("10.0.0.2")
        );
        // Garbage after the trusted part: the last vouched-for address.
        let garbage = trusted.client_ip(ip("10.0.0.2"), ["evil, 10.0.0.3"].into_iter());
        assert_eq!(garbage, ip("10.0.0.3"));
        // Ports and IPv6.
        let ported = trusted.client_ip(ip("10.0.0.2"), ["[2001:db8::1]:443"].into_iter());
        assert_eq!(ported, ip("2001:db8::1"));
        // Nobody trusted: always the peer.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.2"), ["1.2.3.4"].into_iter()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn connections_per_ip_are_capped_and_released() {
        let limit = ConnectionsPerIp::new(2);
        let a = ip("192.0.2.1");
        let (s1, s2) = (limit.acquire(a).unwrap(), limit.acquire(a).unwrap());
        assert!(limit.acquire(a).is_none());
        assert!(limit.acquire(ip("192.0.2.2")).is_some(), "another address");
        drop(s1);
        let s3 = limit.acquire(a).expect("a slot was released");
        drop((s2, s3));
        assert_eq!(limit.open(a), 0);
        // IPv6: one /64 is one client.
        let _x = limit.acquire(ip("2001:db8::1")).unwrap();
        let _y = limit.acquire(ip("2001:db8::2")).unwrap();
        assert!(limit.acquire(ip("2001:db8::ffff")).is_none());
        assert!(limit.acquire(ip("2001:db8:0:1::1")).is_some());
        // 0: no limit.
        let open = ConnectionsPerIp::new(0);
        let slots: Vec<_> = (0..1000).map(|_| open.acquire(a).unwrap()).collect();
        assert_eq!(open.open(a), 1000);
        drop(slots);
    }
}
