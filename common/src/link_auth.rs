//! Authentication of the internal link (signaling node -> media node) and of peer adoption.
//!
//! Both ends hold one shared **link secret** (32 bytes or more). Three checks use it or
//! derive from it, all HMAC-SHA256:
//!
//! 1. **Upgrade** (signaling -> media): the WebSocket upgrade carries
//!    `Authorization: Conclave-Link ts=<unix secs>,nonce=<32 hex>,sig=<64 hex>` where `sig` is
//!    the HMAC of `conclave-link/v1 <ts> <nonce>`. The media node accepts it within
//!    [`UPGRADE_WINDOW_SECS`] of its own clock and only once ([`ReplayGuard`]).
//! 2. **Hello** (media -> signaling): the media node's first frame carries `proof`, the HMAC
//!    of `conclave-link-hello/v1 <nonce> <node id>`, so a signaling node sends nothing (SDP
//!    included) to an address that does not hold the secret (a rewritten `link_url`).
//! 3. **Adoption** (per peer): taking over a peer needs a key bound to that participant's
//!    resume secret, not just the link secret. `addPeer` carries [`adopt_verifier`] of the
//!    key; `adoptPeer` carries the key itself ([`adopt_key`]), which the media node checks
//!    against the verifier. Documented in docs/security.md ("The internal link").

use std::collections::HashMap;
use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Shortest link secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// How far an upgrade's timestamp may be from the media node's clock (either way).
pub const UPGRADE_WINDOW_SECS: u64 = 60;
/// The `Authorization` scheme of a link upgrade.
pub const SCHEME: &str = "Conclave-Link";
/// Most nonces remembered: signed upgrades inside one window (reconnects are one a second
/// per signaling node at most, so this is never reached by honest nodes).
const MAX_REMEMBERED_NONCES: usize = 100_000;

/// Why a link upgrade or hello was refused. Logged, never sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkAuthError {
    #[error("link secret is shorter than {MIN_SECRET_LEN} bytes")]
    SecretTooShort,
    #[error("no Conclave-Link authorization")]
    Missing,
    #[error("malformed Conclave-Link authorization")]
    Malformed,
    #[error("signature does not match the link secret")]
    BadSignature,
    #[error("timestamp outside the {UPGRADE_WINDOW_SECS} s window (clock skew or a replay)")]
    Stale,
    #[error("nonce already used (a replayed upgrade)")]
    Replayed,
}

impl LinkAuthError {
    /// The reason as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            LinkAuthError::SecretTooShort => "secret_too_short",
            LinkAuthError::Missing => "missing",
            LinkAuthError::Malformed => "malformed",
            LinkAuthError::BadSignature => "bad_signature",
            LinkAuthError::Stale => "stale",
            LinkAuthError::Replayed => "replayed",
        }
    }
}

/// Seconds since the Unix epoch (the upgrade timestamp's clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The shared link secret, as an HMAC key (shared: every link of a node clones it).
#[derive(Clone)]
pub struct LinkSecret {
    key: Arc<hmac::Key>,
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

impl LinkSecret {
    /// A secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &str) -> Result<Self, LinkAuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(LinkAuthError::SecretTooShort);
        }
        Ok(LinkSecret {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())),
        })
    }

    fn sign(&self, text: &str) -> String {
        hex::encode(hmac::sign(&self.key, text.as_bytes()))
    }

    fn verify(&self, text: &str, sig_hex: &str) -> bool {
        match hex::decode(sig_hex) {
            Ok(sig) => hmac::verify(&self.key, text.as_bytes(), &sig).is_ok(),
            Err(_) => false,
        }
    }

    /// The `Authorization` value of an upgrade made at `now` (unix seconds), and its nonce
    /// (which the media node's hello proof names).
    pub fn sign_upgrade(&self, now: u64) -> (String, String) {
        let nonce = random_hex(16);
        let sig = self.sign(&upgrade_text(now, &nonce));
        (format!("{SCHEME} ts={now},nonce={nonce},sig={sig}"), nonce)
    }

    /// Check an upgrade's `Authorization` value at `now`; returns its nonce. Replays are
    /// refused by `replay`.
    pub fn verify_upgrade(
        &self,
        header: Option<&str>,
        now: u64,
        replay: &mut ReplayGuard,
    ) -> Result<String, LinkAuthError> {
        let header = header.ok_or(LinkAuthError::Missing)?;
        let fields = header
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(LinkAuthError::Missing)?;
        let mut ts = None;
        let mut nonce = None;
        let mut sig = None;
        for field in fields.split(',') {
            match field.trim().split_once('=') {
                Some(("ts", v)) => ts = v.parse::<u64>().ok(),
                Some(("nonce", v)) if v.len() == 32 && is_hex(v) => nonce = Some(v),
                Some(("sig", v)) if v.len() == 64 && is_hex(v) => sig = Some(v),
                _ => return Err(LinkAuthError::Malformed),
            }
        }
        let (Some(ts), Some(nonce), Some(sig)) = (ts, nonce, sig) else {
            return Err(LinkAuthError::Malformed);
        };
        if !self.verify(&upgrade_text(ts, nonce), sig) {
            return Err(LinkAuthError::BadSignature);
        }
        if ts.abs_diff(now) > UPGRADE_WINDOW_SECS {
            return Err(LinkAuthError::Stale);
        }
        if !replay.first_use(nonce, now) {
            return Err(LinkAuthError::Replayed);
        }
        Ok(nonce.to_string())
    }

    /// The media node's proof in its hello: it holds the secret, and answers this upgrade.
    pub fn hello_proof(&self, nonce: &str, node_id: &str) -> String {
        self.sign(&hello_text(nonce, node_id))
    }

    /// Whether a hello's proof answers the upgrade with `nonce`.
    pub fn verify_hello(&self, nonce: &str, node_id: &str, proof: &str) -> bool {
        self.verify(&hello_text(nonce, node_id), proof)
    }
}

fn upgrade_text(ts: u64, nonce: &str) -> String {
    format!("conclave-link/v1 {ts} {nonce}")
}

fn hello_text(nonce: &str, node_id: &str) -> String {
    format!("conclave-link-hello/v1 {nonce} {node_id}")
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `n` bytes from the operating system's CSPRNG, as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        // The OS RNG does not fail on the platforms we run on; if it ever does, nothing
        // secret may be made from a weaker source.
        .expect("operating system random number generator");
    hex::encode(bytes)
}

/// Nonces of upgrades accepted within the window: each is accepted once.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// Nonce -> the time it was seen (unix seconds).
    seen: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Remember `nonce`; false if it was seen before (or the guard is full of fresh nonces).
    fn first_use(&mut self, nonce: &str, now: u64) -> bool {
        if self.seen.len() >= MAX_REMEMBERED_NONCES / 2 {
            // Forget nonces whose timestamps can no longer pass the window check.
            self.seen
                .retain(|_, seen| now.saturating_sub(*seen) <= 2 * UPGRADE_WINDOW_SECS);
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES || self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_string(), now);
        true
    }
}

/// The key that adopts a participant's peer: derived from the member's resume secret, so only
/// a signaling node that holds the member (and checked its resume secret) can make it.
pub fn adopt_key(resume_secret: &str, room: &str, participant_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, resume_secret.as_bytes());
    let text = format!("conclave-adopt/v1 {room} {participant_id}");
    hex::encode(hmac::sign(&key, text.as_bytes()))
}

const VERIFIER_TEXT: &[u8] = b"conclave-adopt-verifier/v1";

/// What `addPeer` gives the media node: it checks an adoption key against this, and cannot
/// make the key from it.
pub fn adopt_verifier(adopt_key: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, adopt_key.as_bytes());
    hex::encode(hmac::sign(&key, VERIFIER_TEXT))
}

/// Whether `adopt_key` is the key behind `verifier` (constant time).
pub fn adopt_key_matches(adopt_key: &str, verifier: &str) -> bool {
    let Ok(expected) = hex::decode(verifier) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, adopt_key.as_bytes());
    hmac::verify(&key, VERIFIER_TEXT, &expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn secret() -> LinkSecret {
        LinkSecret::new(SECRET).unwrap()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            LinkSecret::new(&SECRET[..31]).unwrap_err(),
            LinkAuthError::SecretTooShort
        );
    }

    #[test]
    fn a_signed_upgrade_is_accepted_once() {
        let mut guard = ReplayGuard::default();
        let (header, nonce) = secret().sign_upgrade(1_000);
        assert_eq!(
            secret().verify_upgrade(Some(&header), 1_030, &mut guard),
            Ok(nonce)
        );
        assert_eq!(
            secret().verify_upgrade(Some(&header), 1_031, &mut guard),
            Err(LinkAuthError::Replayed)
        );
    }

    #[test]
    fn upgrades_outside_the_window_or_under_another_secret_are_refused() {
        let mut guard = ReplayGuard::default();
        let (header, _) = secret().sign_upgrade(1_000);
        assert_eq!(
            secret().verify_upgrade(Some(&header), 1_000 + UPGRADE_WINDOW_SECS + 1, &mut guard),
            Err(LinkAuthError::Stale)
        );
        let other = LinkSecret::new("another secret that is long enough!").unwrap();
        assert_eq!(
            other.verify_upgrade(Some(&header), 1_000, &mut guard),
            Err(LinkAuthError::BadSignature)
        );
    }

    #[test]
    fn altered_or_malformed_headers_are_refused() {
        let mut guard = ReplayGuard::default();
        let (header, _) = secret().sign_upgrade(1_000);
        let later = header.replace("ts=1000", "ts=1001");
        assert_eq!(
            secret().verify_upgrade(Some(&later), 1_000, &mut guard),
            Err(LinkAuthError::BadSignature)
        );
        for bad in [
            "",
            "Bearer x",
            "Conclave-Link ts=1",
            "Conclave-Link ts=1,nonce=zz,sig=00",
        ] {
            assert!(
                secret()
                    .verify_upgrade(Some(bad), 1_000, &mut guard)
                    .is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            secret().verify_upgrade(None, 1_000, &mut guard),
            Err(LinkAuthError::Missing)
        );
    }

    #[test]
    fn the_hello_proof_names_the_nonce_and_the_node() {
        let proof = secret().hello_proof("aa", "media-1");
        assert!(secret().verify_hello("aa", "media-1", &proof));
        assert!(!secret().verify_hello("ab", "media-1", &proof));
        assert!(!secret().verify_hello("aa", "media-2", &proof));
    }

    #[test]
    fn an_adoption_key_matches_only_its_own_member() {
        let key = adopt_key("resume-secret", "acme/general", "p-1");
        let verifier = adopt_verifier(&key);
        assert!(adopt_key_matches(&key, &verifier));
        for other in [
            adopt_key("another-secret", "acme/general", "p-1"),
            adopt_key("resume-secret", "acme/general", "p-2"),
            adopt_key("resume-secret", "acme/random", "p-1"),
        ] {
            assert!(!adopt_key_matches(&other, &verifier));
        }
        // The verifier itself does not adopt.
        assert!(!adopt_key_matches(&verifier, &verifier));
        assert!(!adopt_key_matches(&key, "not hex"));
    }
}
