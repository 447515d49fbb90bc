//! What one WebSocket may do: a token bucket per session per message class, free of actors
//! and I/O (time is passed in), so that the session only asks [`Budgets::charge`] and closes
//! with 1008 on a refusal. Rates and bursts come from flags (`--rate-*`); defaults sit far
//! above what the web client sends (`static/js`), so only a misbehaving client meets them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use conclave_common::protocol::ClientMessage;

use crate::client_ip::TrustedProxies;

/// Kinds of client traffic, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageClass {
    /// `setAudio`, `setVideo`, `setDeafened`: a person clicking mute; `setTrackViews`: the
    /// page's layout changing (debounced by the client).
    State,
    /// `iceCandidate`: trickle ICE sends a burst at the start of each negotiation.
    Candidate,
    /// `offer`, `answer`: one offer at join, one answer per server offer.
    Negotiation,
    /// `join`, `resume`, `leave`: a few per connection.
    Membership,
    /// `heartbeat` messages and WebSocket ping/pong frames: one per heartbeat interval.
    Heartbeat,
    /// Frames that are not a client message (bad JSON, unknown `id`, binary): never from a
    /// working client; each one costs an error reply.
    Invalid,
}

impl MessageClass {
    pub const ALL: [MessageClass; 6] = [
        MessageClass::State,
        MessageClass::Candidate,
        MessageClass::Negotiation,
        MessageClass::Membership,
        MessageClass::Heartbeat,
        MessageClass::Invalid,
    ];

    pub fn of(msg: &ClientMessage) -> MessageClass {
        match msg {
            ClientMessage::SetAudio { .. }
            | ClientMessage::SetVideo { .. }
            | ClientMessage::SetDeafened { .. }
            | ClientMessage::SetTrackViews { .. } => Self::State,
            ClientMessage::IceCandidate { .. } => Self::Candidate,
            ClientMessage::Offer { .. }
            | ClientMessage::Answer { .. }
            | ClientMessage::SetSources { .. } => Self::Negotiation,
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } | ClientMessage::Leave => {
                Self::Membership
            }
            ClientMessage::Heartbeat => Self::Heartbeat,
        }
    }

    /// Label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Candidate => "candidate",
            Self::Negotiation => "negotiation",
            Self::Membership => "membership",
            Self::Heartbeat => "heartbeat",
            Self::Invalid => "invalid",
        }
    }

    /// What the client sent too much of (the close reason names it; ≤ 123 bytes in all).
    pub fn describe(self) -> &'static str {
        match self {
            Self::State => "setAudio/setVideo/setDeafened/setTrackViews",
            Self::Candidate => "iceCandidate",
            Self::Negotiation => "offer/answer",
            Self::Membership => "join/resume/leave",
            Self::Heartbeat => "heartbeat/ping",
            Self::Invalid => "invalid messages",
        }
    }
}

/// A sustained rate (messages per second) and a burst (messages at once). Written
/// `RATE:BURST` on the command line, e.g. `5:30`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Rate {
        Rate { per_second, burst }
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let (rate, burst) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected RATE:BURST, e.g. 5:30"))?;
        let per_second: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("{rate:?}: not a number of messages per second"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|_| format!("{burst:?}: not a whole number of messages"))?;
        if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
            return Err(format!("{s:?}: rate and burst must be above 0"));
        }
        Ok(Rate { per_second, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.per_second, self.burst)
    }
}

/// The budget of every class (the same for every session).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub state: Rate,
    pub candidate: Rate,
    pub negotiation: Rate,
    pub membership: Rate,
    pub heartbeat: Rate,
    pub invalid: Rate,
}

impl RateLimits {
    pub fn of(&self, class: MessageClass) -> Rate {
        match class {
            MessageClass::State => self.state,
            MessageClass::Candidate => self.candidate,
            MessageClass::Negotiation => self.negotiation,
            MessageClass::Membership => self.membership,
            MessageClass::Heartbeat => self.heartbeat,
            MessageClass::Invalid => self.invalid,
        }
    }
}

/// Defaults: several times what the web client sends at its busiest.
impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            // A person toggles mute a few times a second at most.
            state: Rate::new(5.0, 30),
            // Chromium trickles a few candidates per interface and m-line, all at once after
            // the offer; an ICE restart repeats them.
            candidate: Rate::new(20.0, 200),
            // One offer at join, then one answer per server offer; renegotiations run one at
            // a time, each a round trip.
            negotiation: Rate::new(10.0, 50),
            // One join or resume per connection (a refused resume is followed by a join).
            membership: Rate::new(1.0, 10),
            // The web client sends one heartbeat per interval (10 s); browsers answer pings.
            heartbeat: Rate::new(2.0, 20),
            // A working client sends none.
            invalid: Rate::new(1.0, 10),
        }
    }
}

/// A token bucket: holds up to `burst` tokens, refills at `per_second`; each message takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst),
            refilled: now,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate.per_second)
            .min(f64::from(self.rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One session's buckets, one per class.
#[derive(Debug, Clone)]
pub struct Budgets {
    buckets: [TokenBucket; 6],
}

impl Budgets {
    pub fn new(limits: &RateLimits, now: Instant) -> Budgets {
        Budgets {
            buckets: MessageClass::ALL.map(|class| TokenBucket::new(limits.of(class), now)),
        }
    }

    /// Charge one message of `class`: false if the session is over that budget.
    pub fn charge(&mut self, class: MessageClass, now: Instant) -> bool {
        self.buckets[class as usize].take(now)
    }
}

/// Everything about a session's connection that is a limit (shared by all sessions).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub rates: RateLimits,
    /// A socket that has not sent `join` or `resume` by then is closed (1008).
    pub join_deadline: Duration,
    /// Bytes of server frames allowed to wait for a client that reads slowly; over it the
    /// connection is cut.
    pub outbound_queue_bytes: usize,
    /// Kernel send buffer of each connection (0: the kernel's autotuning, up to 4 MiB).
    pub socket_send_buffer: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            rates: RateLimits::default(),
            join_deadline: Duration::from_secs(10),
            outbound_queue_bytes: 1024 * 1024,
            // Signaling messages are small: ample for a browser on a slow link.
            socket_send_buffer: 128 * 1024,
        }
    }
}

/// The close reason a session over its budget gets (a close frame carries ≤ 123 bytes).
pub fn rate_limit_reason(class: MessageClass) -> String {
    format!("rate limit exceeded: {}", class.describe())
}

/// Every limit on clients, from the flags.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session: SessionLimits,
    /// Most WebSockets open at once per client address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Cluster mode: most Redis operations waiting per room.
    pub room_redis_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session: SessionLimits::default(),
            max_connections_per_ip: 100,
            trusted_proxies: TrustedProxies::default(),
            room_redis_queue: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::new(2.0, 5), t0);
        assert!((0..5).all(|_| bucket.take(t0)), "the burst");
        assert!(!bucket.take(t0), "over the burst");
        // Half a second refills one token (2 per second).
        let t1 = t0 + Duration::from_millis(500);
        assert!(bucket.take(t1));
        assert!(!bucket.take(t1));
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert!((0..5).all(|_| bucket.take(t2)));
        assert!(!bucket.take(t2));
    }

    #[test]
    fn a_steady_client_under_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::new(5.0, 1), t0);
        // 4 per second for a minute.
        for i in 0..240u64 {
            assert!(
                bucket.take(t0 + Duration::from_millis(250 * i)),
                "message {i}"
            );
        }
    }

    #[test]
    fn classes_have_separate_budgets() {
        let t0 = Instant::now();
        let limits = RateLimits {
            state: Rate::new(1.0, 2),
            ..RateLimits::default()
        };
        let mut budgets = Budgets::new(&limits, t0);
        assert!(budgets.charge(MessageClass::State, t0));
        assert!(budgets.charge(MessageClass::State, t0));
        assert!(!budgets.charge(MessageClass::State, t0));
        // Candidates are not affected by the exhausted state budget.
        assert!((0..200).all(|_| budgets.charge(MessageClass::Candidate, t0)));
        assert!(!budgets.charge(MessageClass::Candidate, t0));
    }

    #[test]
    fn rates_parse_from_flags() {
        assert_eq!("5:30".parse::<Rate>(), Ok(Rate::new(5.0, 30)));
        assert_eq!("0.5:3".parse::<Rate>(), Ok(Rate::new(0.5, 3)));
        for bad in ["5", "x:3", "5:x", "0:3", "5:0", "-1:3", "inf:3", "5:-1"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let r = Rate::new(5.0, 30);
        assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
    }

    #[test]
    fn every_close_reason_fits_a_close_frame() {
        for class in MessageClass::ALL {
            assert!(rate_limit_reason(class).len() <= 123, "{class:?}");
        }
    }
}
