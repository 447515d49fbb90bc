//! Where one peer's media may go: only to addresses the peer has proven are its own.
//!
//! str0m is an ICE-lite agent here: it sends to whichever address the last valid
//! USE-CANDIDATE came from. A valid one only proves the sender knows the ICE password, not
//! that it owns the source address, so a client can spoof a USE-CANDIDATE "from" a third
//! party and have its whole room's media (megabits per second) sent there. The router
//! (`udp.rs`) already refuses addresses another peer holds; this guard covers everyone else.
//!
//! The proof is a round trip (RFC 7675 consent): we send a binding request of our own to the
//! new address, with a transaction id from the CSPRNG, signed with the peer's password; only
//! whoever receives it there can answer it. Until the answer comes back, only STUN goes to
//! that address (and, while the DTLS handshake is not done, DTLS: the handshake itself only
//! completes if the peer is there, and carries no media). Checks are retried while media is
//! held back, and capped per peer, so a client cannot make us a reflector either.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::ice::StunMessage;

use super::ice;

/// Proven addresses kept per peer (a new one evicts the oldest).
const MAX_PROVEN: usize = 4;
/// A proven address the peer has sent no STUN from for this long is taken for gone when
/// another proven address was heard since: media moves there at once, not when str0m's
/// ICE-lite agent drops the old pair (15 s after its last request). Browsers repeat STUN on
/// the pair in use every 2.5–5 s.
const SILENT_AFTER: Duration = Duration::from_secs(4);
/// A check not answered this long is sent again (while media waits for it).
const CHECK_RETRY: Duration = Duration::from_millis(200);
/// Attempts per check; after that the address waits for a new series.
const CHECK_ATTEMPTS: u32 = 8;
/// A failed series towards an address may start over after this long.
const CHECK_SERIES_GAP: Duration = Duration::from_secs(5);
/// Check series (new addresses, or failed ones again) a peer may cause per window: a mobile
/// client changing networks needs a few; a client nominating third parties gets no more.
const MAX_SERIES_PER_WINDOW: u32 = 8;
const SERIES_WINDOW: Duration = Duration::from_secs(60);

/// The proof state of one peer's destinations.
pub struct PathGuard {
    proven: Vec<Proven>,
    checks: Vec<Check>,
    window_started: Instant,
    series_in_window: u32,
    /// Our ICE-CONTROLLED tie breaker, the same for every check of this peer.
    tie_breaker: u64,
}

/// An address the peer proved its own, and when a verified STUN request last came from it.
struct Proven {
    addr: SocketAddr,
    heard: Instant,
}

/// A consent check in flight towards one address.
struct Check {
    addr: SocketAddr,
    transaction_id: [u8; 12],
    first_sent: Instant,
    last_sent: Instant,
    attempts: u32,
}

/// What a transmit to a destination may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it there: STUN to where str0m says, anything else to a proven address (str0m's
    /// choice, or the peer's freshest proven one when str0m's has gone silent or is unproven).
    Send(SocketAddr),
    /// DTLS during the handshake, to an address not proven yet: send it, and prove the
    /// address before media follows.
    SendAndProve,
    /// Held back until the destination is proven (prove it).
    Hold,
}

/// What kind of packet a transmit is, by its first byte (RFC 7983).
fn is_stun(contents: &[u8]) -> bool {
    ice::looks_like_stun(contents)
}

fn is_dtls(contents: &[u8]) -> bool {
    contents.first().is_some_and(|b| (20..=63).contains(b))
}

impl PathGuard {
    pub fn new(now: Instant) -> PathGuard {
        PathGuard {
            proven: Vec::new(),
            checks: Vec::new(),
            window_started: now,
            series_in_window: 0,
            tie_breaker: u64::from_be_bytes(ice::random_bytes()),
        }
    }

    /// May `contents` go to `destination` now? `dtls_done`: the peer's DTLS handshake has
    /// completed (after it, DTLS too needs a proven address).
    pub fn verdict(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        dtls_done: bool,
        now: Instant,
    ) -> Verdict {
        if is_stun(contents) {
            Verdict::Send(destination)
        } else if let Some(to) = self.live_destination(destination, now) {
            Verdict::Send(to)
        } else if !dtls_done && is_dtls(contents) {
            Verdict::SendAndProve
        } else {
            Verdict::Hold
        }
    }

    /// Where media for `wanted` goes: `wanted` itself while it is proven and not silent;
    /// otherwise the proven address heard from last, if it was heard after `wanted`.
    fn live_destination(&self, wanted: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let wanted_heard = self
            .proven
            .iter()
            .find(|p| p.addr == wanted)
            .map(|p| p.heard);
        if let Some(heard) = wanted_heard {
            if now.saturating_duration_since(heard) < SILENT_AFTER {
                return Some(wanted);
            }
        }
        let freshest = self.proven.iter().max_by_key(|p| p.heard)?;
        match wanted_heard {
            Some(heard) if heard >= freshest.heard => Some(wanted),
            _ => Some(freshest.addr),
        }
    }

    pub fn is_proven(&self, addr: SocketAddr) -> bool {
        self.proven.iter().any(|p| p.addr == addr)
    }

    /// A verified STUN request came from `source`: if it is proven, it is alive.
    pub fn heard_from(&mut self, source: SocketAddr, now: Instant) {
        if let Some(p) = self.proven.iter_mut().find(|p| p.addr == source) {
            p.heard = now;
        }
    }

    /// Checks were sent and none was ever answered.
    pub fn never_proven(&self) -> bool {
        self.proven.is_empty() && !self.checks.is_empty()
    }

    /// The transaction id of a check to send towards `addr` now, if one is due: a first
    /// attempt (within the per-peer cap), or a retry of one not yet answered.
    pub fn check_due(&mut self, addr: SocketAddr, now: Instant) -> Option<[u8; 12]> {
        if self.is_proven(addr) {
            return None;
        }
        if let Some(i) = self.checks.iter().position(|c| c.addr == addr) {
            let check = &mut self.checks[i];
            if check.attempts < CHECK_ATTEMPTS {
                if now.saturating_duration_since(check.last_sent) < CHECK_RETRY {
                    return None;
                }
                check.attempts += 1;
                check.last_sent = now;
                return Some(check.transaction_id);
            }
            if now.saturating_duration_since(check.first_sent) < CHECK_SERIES_GAP {
                return None;
            }
            // The series failed long enough ago: a new one, if the cap allows.
            self.checks.swap_remove(i);
        }
        if now.saturating_duration_since(self.window_started) >= SERIES_WINDOW {
            self.window_started = now;
            self.series_in_window = 0;
        }
        if self.series_in_window >= MAX_SERIES_PER_WINDOW {
            return None;
        }
        self.series_in_window += 1;
        let transaction_id = ice::random_bytes();
        // One series per address; the oldest goes if a client keeps moving.
        if self.checks.len() >= MAX_SERIES_PER_WINDOW as usize {
            self.checks.remove(0);
        }
        self.checks.push(Check {
            addr,
            transaction_id,
            first_sent: now,
            last_sent: now,
            attempts: 1,
        });
        Some(transaction_id)
    }

    /// Our binding request for a check (the caller sends it to the checked address).
    pub fn request(
        &self,
        transaction_id: [u8; 12],
        local_ufrag: &str,
        remote_ufrag: &str,
        remote_password: &str,
    ) -> Vec<u8> {
        ice::consent_request(
            remote_ufrag,
            local_ufrag,
            remote_password,
            transaction_id,
            self.tie_breaker,
        )
    }

    /// A binding success response from `source`: `true` if it answers our check towards
    /// that address and is signed with the peer's password — the address is then proven.
    pub fn on_success_response(
        &mut self,
        source: SocketAddr,
        transaction_id: [u8; 12],
        response: &StunMessage<'_>,
        remote_password: &str,
        now: Instant,
    ) -> bool {
        let Some(i) = self
            .checks
            .iter()
            .position(|c| c.addr == source && c.transaction_id == transaction_id)
        else {
            return false;
        };
        if !ice::integrity_ok(response, remote_password) {
            return false;
        }
        self.checks.swap_remove(i);
        if self.proven.len() >= MAX_PROVEN {
            self.proven.remove(0);
        }
        self.proven.push(Proven {
            addr: source,
            heard: now,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTP: [u8; 40] = [0x80; 40];
    const DTLS: [u8; 40] = [22; 40];
    const STUN: [u8; 40] = [0; 40];
    const PASSWORD: &str = "their-password-0123456789";

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The peer's answer to our check with `transaction_id`, signed with `password`.
    fn answer(transaction_id: [u8; 12], password: &str) -> Vec<u8> {
        // str0m's TransId cannot be built from bytes: write a reply with any id, then set
        // ours and sign again (integrity covers the id).
        let reply = StunMessage::binding_reply(str0m::ice::TransId::new(), addr(1));
        let mut buf = [0u8; 256];
        let n = reply.to_bytes(None, &mut buf, ice::stun_hmac).unwrap();
        // Without integrity the reply ends in FINGERPRINT (8 bytes): rebuild it with one.
        let mut msg = buf[..n - 8].to_vec();
        msg[8..20].copy_from_slice(&transaction_id);
        let length = (msg.len() - 20 + 24) as u16;
        msg[2..4].copy_from_slice(&length.to_be_bytes());
        let mac = ice::stun_hmac(password.as_bytes(), &[&msg]);
        msg.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        msg.extend_from_slice(&mac);
        msg
    }

    fn respond(guard: &mut PathGuard, from: SocketAddr, id: [u8; 12], password: &str) -> bool {
        respond_at(guard, from, id, password, Instant::now())
    }

    fn respond_at(
        guard: &mut PathGuard,
        from: SocketAddr,
        id: [u8; 12],
        password: &str,
        now: Instant,
    ) -> bool {
        let bytes = answer(id, password);
        let msg = ice::binding_success(&bytes).expect("a success response");
        let id = ice::transaction_id(&bytes).unwrap();
        guard.on_success_response(from, id, &msg, PASSWORD, now)
    }

    #[test]
    fn media_waits_for_the_answer_to_our_check() {
        let now = Instant::now();
        let mut guard = PathGuard::new(now);
        let a = addr(5000);
        // STUN always goes; DTLS during the handshake; media only once proven.
        assert_eq!(guard.verdict(a, &STUN, true, now), Verdict::Send(a));
        assert_eq!(guard.verdict(a, &DTLS, false, now), Verdict::SendAndProve);
        assert_eq!(guard.verdict(a, &DTLS, true, now), Verdict::Hold);
        assert_eq!(guard.verdict(a, &RTP, false, now), Verdict::Hold);

        let id = guard.check_due(a, now).expect("a first check");
        // Not again at once; again after the retry interval, with the same id.
        assert_eq!(guard.check_due(a, now), None);
        assert_eq!(guard.check_due(a, now + CHECK_RETRY), Some(id));

        // An answer from elsewhere, or signed with another password, proves nothing.
        assert!(!respond(&mut guard, addr(5001), id, PASSWORD));
        assert!(!respond(&mut guard, a, id, "a-guess-00000000000000000"));
        assert!(!respond(&mut guard, a, [7; 12], PASSWORD));
        assert_eq!(guard.verdict(a, &RTP, true, now), Verdict::Hold);

        assert!(respond_at(&mut guard, a, id, PASSWORD, now));
        assert_eq!(guard.verdict(a, &RTP, true, now), Verdict::Send(a));
        assert_eq!(guard.verdict(a, &DTLS, true, now), Verdict::Send(a));
        assert_eq!(guard.check_due(a, now + CHECK_RETRY * 2), None);
    }

    #[test]
    fn media_for_an_unproven_address_goes_to_the_peers_proven_one() {
        let now = Instant::now();
        let mut guard = PathGuard::new(now);
        let (a, third_party) = (addr(5000), addr(9));
        let id = guard.check_due(a, now).unwrap();
        assert!(respond_at(&mut guard, a, id, PASSWORD, now));
        // A forged nomination points str0m at a third party: media still goes to the peer.
        assert_eq!(
            guard.verdict(third_party, &RTP, true, now),
            Verdict::Send(a)
        );
        // STUN goes where str0m says (it answers requests from where they came).
        assert_eq!(
            guard.verdict(third_party, &STUN, true, now),
            Verdict::Send(third_party)
        );
    }

    #[test]
    fn media_follows_the_peer_to_its_new_proven_address_once_the_old_one_is_silent() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut guard = PathGuard::new(start);
        let (old, new) = (addr(5000), addr(5001));
        let id = guard.check_due(old, at(0)).unwrap();
        assert!(respond_at(&mut guard, old, id, PASSWORD, at(0)));
        // The peer moves at 1 s: its STUN comes from `new`, proven at 1.1 s.
        let id = guard.check_due(new, at(1_000)).unwrap();
        assert!(respond_at(&mut guard, new, id, PASSWORD, at(1_100)));
        guard.heard_from(new, at(2_000));
        // str0m still sends to `old`. While `old` may be alive, it keeps it...
        assert_eq!(
            guard.verdict(old, &RTP, true, at(3_000)),
            Verdict::Send(old)
        );
        // ...once `old` has been silent for SILENT_AFTER, media goes to `new`.
        let later = at(0) + SILENT_AFTER;
        assert_eq!(guard.verdict(old, &RTP, true, later), Verdict::Send(new));
        // If `old` speaks again and is the freshest, it is used again.
        guard.heard_from(old, later);
        assert_eq!(guard.verdict(old, &RTP, true, later), Verdict::Send(old));
    }

    #[test]
    fn checks_towards_an_address_that_never_answers_stop() {
        let start = Instant::now();
        let mut guard = PathGuard::new(start);
        let victim = addr(9);
        let mut sent = 0;
        // Media held back for 10 s, offered every 10 ms: at most the capped attempts.
        for ms in (0..10_000).step_by(10) {
            let now = start + Duration::from_millis(ms);
            if guard.check_due(victim, now).is_some() {
                sent += 1;
            }
        }
        // One series, then a second one after the gap, and so on: each at most 8.
        assert!(sent <= CHECK_ATTEMPTS * 2, "{sent} checks");
        assert!(sent >= CHECK_ATTEMPTS, "{sent} checks");
    }

    #[test]
    fn new_addresses_per_peer_are_capped() {
        let now = Instant::now();
        let mut guard = PathGuard::new(now);
        let started = (0..100)
            .filter(|i| guard.check_due(addr(6000 + i), now).is_some())
            .count();
        assert_eq!(started, MAX_SERIES_PER_WINDOW as usize);
        // A window later, more may start.
        assert!(guard.check_due(addr(7000), now + SERIES_WINDOW).is_some());
    }
}
