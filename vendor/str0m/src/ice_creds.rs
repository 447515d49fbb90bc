//! Conclave patch: ICE credentials from the OS CSPRNG.
//!
//! Upstream draws ufrags and passwords from `is`'s non-cryptographic generator (fastrand),
//! whose state a remote peer can learn from values it sees. The password is what lets a
//! peer's STUN be trusted, so it must be unguessable (RFC 8445 §5.3: at least 128 bits of
//! CSPRNG output). Used for the default local credentials and for ICE restarts, local or
//! remote.

use is::IceCreds;

const ICE_CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// About 95 bits.
const UFRAG_LEN: usize = 16;
/// About 143 bits.
const PASSWORD_LEN: usize = 24;

/// New local ICE credentials from the OS CSPRNG.
pub fn secure_ice_creds() -> IceCreds {
    IceCreds {
        ufrag: random_ice_string(UFRAG_LEN),
        pass: random_ice_string(PASSWORD_LEN),
    }
}

/// `len` uniformly drawn characters of `ICE_CHARS` (bytes >= 248 = 4 * 62 are redrawn).
fn random_ice_string(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 32];
        // Invariant: the OS random source works once the process runs; without it no
        // secret would be safe, so failing loudly is right.
        getrandom::getrandom(&mut bytes).expect("the OS random source works");
        for byte in bytes {
            if byte < 248 && out.len() < len {
                out.push(ICE_CHARS[usize::from(byte % 62)] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn secure_creds_are_long_random_ice_chars() {
        let a = secure_ice_creds();
        let b = secure_ice_creds();
        assert_eq!((a.ufrag.len(), a.pass.len()), (UFRAG_LEN, PASSWORD_LEN));
        assert!(
            a.ufrag
                .bytes()
                .chain(a.pass.bytes())
                .all(|c| ICE_CHARS.contains(&c))
        );
        assert_ne!(a.ufrag, b.ufrag);
        assert_ne!(a.pass, b.pass);
    }

    #[test]
    fn an_ice_restart_uses_secure_creds() {
        let mut rtc = crate::Rtc::new(std::time::Instant::now());
        let creds = rtc.sdp_api().ice_restart(true);
        assert_eq!(
            (creds.ufrag.len(), creds.pass.len()),
            (UFRAG_LEN, PASSWORD_LEN)
        );
    }
}
