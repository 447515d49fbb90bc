//! ICE on our side of the UDP path, the pieces both the router (`udp.rs`) and each peer's path
//! guard (`consent.rs`) need: ICE credentials from the OS CSPRNG (the vendored str0m's
//! `secure_ice_creds`, also used for its ICE restarts), STUN parsing and
//! MESSAGE-INTEGRITY checks (HMAC-SHA1 keyed with an ICE password, RFC 8489 §14.5), and the
//! binding requests the node sends itself to prove that an address belongs to a peer
//! (RFC 7675 consent: only the peer, which knows its own password, can answer one).
//!
//! Everything here takes bytes from the network: any input is safe (no panic, no index out of
//! bounds); the property tests in `udp.rs` feed it arbitrary datagrams.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use str0m::ice::StunMessage;

/// STUN attribute types we write or read beyond what str0m's parser gives.
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_FINGERPRINT: u16 = 0x8028;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// FINGERPRINT is the CRC-32 of the message XORed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The PRIORITY our consent requests carry: a host candidate's (RFC 8445 §5.1.2.1 with type
/// preference 126, local preference 65535, component 1). The peer only echoes it.
const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// Local ICE credentials for a new peer, from the OS CSPRNG (str0m's own `IceCreds::new`
/// draws from a non-cryptographic generator whose output a client can learn).
pub use str0m::ice::secure_ice_creds;

/// `N` bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Invariant: the OS random source does not fail on Linux once the process runs (ring
    // reads getrandom(2)); without it no secret of ours would be safe either.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    bytes
}

/// HMAC-SHA1 of `parts` under `key`: STUN's MESSAGE-INTEGRITY.
pub fn stun_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(context.sign().as_ref());
    out
}

/// Whether a datagram is STUN by its first byte (RFC 7983 demultiplexing: 0..=3).
pub fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b <= 3)
}

/// A well-formed STUN binding request (it carries USERNAME, PRIORITY and
/// MESSAGE-INTEGRITY, which str0m's parser checks are present), not yet verified.
pub fn binding_request(datagram: &[u8]) -> Option<StunMessage<'_>> {
    if !looks_like_stun(datagram) {
        return None;
    }
    StunMessage::parse(datagram)
        .ok()
        .filter(StunMessage::is_binding_request)
}

/// A well-formed STUN binding success response (with MESSAGE-INTEGRITY and
/// XOR-MAPPED-ADDRESS), not yet verified.
pub fn binding_success(datagram: &[u8]) -> Option<StunMessage<'_>> {
    if !looks_like_stun(datagram) {
        return None;
    }
    StunMessage::parse(datagram)
        .ok()
        .filter(StunMessage::is_successful_binding_response)
}

/// The transaction id of a STUN message (bytes 8..20), if the datagram is long enough.
pub fn transaction_id(datagram: &[u8]) -> Option<[u8; 12]> {
    datagram.get(8..20)?.try_into().ok()
}

/// Whether `message` carries a MESSAGE-INTEGRITY made with `password`.
pub fn integrity_ok(message: &StunMessage<'_>, password: &str) -> bool {
    message.verify(password.as_bytes(), stun_hmac)
}

/// A binding request from us to the peer (we are the controlled agent: ICE-lite), as a full
/// ICE agent answers it: USERNAME `theirs:ours`, PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY
/// under the peer's password, FINGERPRINT. Written here rather than with str0m's builder
/// because the transaction id must come from the CSPRNG: it is what a spoofer would have to
/// guess to answer for an address that is not theirs.
pub fn consent_request(
    remote_ufrag: &str,
    local_ufrag: &str,
    remote_password: &str,
    transaction_id: [u8; 12],
    tie_breaker: u64,
) -> Vec<u8> {
    let username = format!("{remote_ufrag}:{local_ufrag}");
    let mut msg = Vec::with_capacity(128);
    msg.extend_from_slice(&0x0001u16.to_be_bytes()); // binding request
    msg.extend_from_slice(&[0, 0]); // length, set below
    msg.extend_from_slice(&MAGIC_COOKIE);
    msg.extend_from_slice(&transaction_id);
    push_attribute(&mut msg, ATTR_USERNAME, username.as_bytes());
    push_attribute(&mut msg, ATTR_PRIORITY, &HOST_PRIORITY.to_be_bytes());
    push_attribute(&mut msg, ATTR_ICE_CONTROLLED, &tie_breaker.to_be_bytes());
    // MESSAGE-INTEGRITY covers the header with a length that ends after itself.
    set_length(&mut msg, 24);
    let integrity = stun_hmac(remote_password.as_bytes(), &[&msg]);
    push_attribute(&mut msg, ATTR_MESSAGE_INTEGRITY, &integrity);
    // FINGERPRINT covers everything before it, with the final length.
    set_length(&mut msg, 8);
    let crc = crc32fast::hash(&msg) ^ FINGERPRINT_XOR;
    push_attribute(&mut msg, ATTR_FINGERPRINT, &crc.to_be_bytes());
    msg
}

/// Append a type-length-value attribute, padded to 4 bytes.
fn push_attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&kind.to_be_bytes());
    // Our attributes are short (a username of two ufrags, fixed-size values).
    msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// Set the header's length field to the attributes written so far plus `more` bytes.
fn set_length(msg: &mut [u8], more: usize) {
    let length = (msg.len() - 20 + more) as u16;
    msg[2..4].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_long_enough_and_never_repeat() {
        let a = secure_ice_creds();
        let b = secure_ice_creds();
        // RFC 8445: at least 24 bits of ufrag, 128 of password; ice-chars only.
        assert!(a.ufrag.len() >= 16 && a.pass.len() >= 22);
        assert!(a
            .ufrag
            .bytes()
            .chain(a.pass.bytes())
            .all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.ufrag, b.ufrag);
        assert_ne!(a.pass, b.pass);
    }

    #[test]
    fn a_consent_request_parses_and_verifies_with_the_peers_password_only() {
        let id = random_bytes::<12>();
        let bytes = consent_request("theirUfrag", "ourUfrag", "their-password-0123456789", id, 7);
        let msg = binding_request(&bytes).expect("a binding request str0m parses");
        assert_eq!(msg.split_username(), Some(("theirUfrag", "ourUfrag")));
        assert!(!msg.use_candidate());
        assert_eq!(msg.ice_controlled(), Some(7));
        assert_eq!(transaction_id(&bytes), Some(id));
        assert!(integrity_ok(&msg, "their-password-0123456789"));
        assert!(!integrity_ok(&msg, "our-password-000000000000"));
        // The FINGERPRINT is right: RFC 8489's CRC over all but the attribute itself.
        let (body, fingerprint) = bytes.split_at(bytes.len() - 4);
        let expected = crc32fast::hash(&body[..body.len() - 4]) ^ FINGERPRINT_XOR;
        assert_eq!(fingerprint, expected.to_be_bytes());
    }

    #[test]
    fn a_reply_made_by_an_ice_agent_verifies() {
        // str0m's own STUN writer, as a browser-side full agent would answer our request.
        let reply = StunMessage::binding_reply(
            str0m::ice::TransId::new(),
            "192.0.2.1:4000".parse().unwrap(),
        );
        let mut buf = [0u8; 256];
        let n = reply
            .to_bytes(Some(b"their-password-0123456789"), &mut buf, stun_hmac)
            .unwrap();
        let msg = binding_success(&buf[..n]).expect("a success response");
        assert!(integrity_ok(&msg, "their-password-0123456789"));
        assert!(!integrity_ok(&msg, "a-guess-00000000000000000"));
        assert!(binding_request(&buf[..n]).is_none());
    }

    #[test]
    fn non_stun_is_neither_request_nor_response() {
        for datagram in [&[][..], &[0x80; 40], &[22; 40], &[0; 19], &[1; 20]] {
            assert!(binding_request(datagram).is_none());
            assert!(binding_success(datagram).is_none());
        }
    }
}
