//! TURN credentials for browsers whose network blocks the direct path to the media node.
//!
//! The TURN server (coturn, `deploy/`) and this node share a secret; nothing else is shared
//! (coturn's `use-auth-secret`, the "TURN REST API" scheme): the node mints, per participant,
//! `username = "<expiry unix time>:<participant id>"` and
//! `credential = base64(HMAC-SHA1(secret, username))`. coturn recomputes the HMAC and refuses
//! the user name once its expiry has passed. The secret never leaves this module: not in
//! logs (`Debug` hides it), not on the wire.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use conclave_common::protocol::IceServer;
use ring::hmac;

/// Why the TURN flags cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TurnConfigError {
    #[error("--turn-uri {0:?}: expected turn:, turns: or stun: followed by host[:port][?transport=udp|tcp]")]
    BadUri(String),
    #[error("--turn-uri names TURN servers but no shared secret is set: set --turn-secret (CONCLAVE_TURN_SECRET) or --turn-secret-file (CONCLAVE_TURN_SECRET_FILE), the static-auth-secret of coturn")]
    NoSecret,
    #[error("a TURN secret is set but no --turn-uri (CONCLAVE_TURN_URIS): clients would get no server to use it with")]
    SecretWithoutUri,
    #[error("--turn-secret and --turn-secret-file are both set: use one")]
    TwoSecrets,
    #[error("the TURN secret is empty")]
    EmptySecret,
    #[error("--turn-secret-file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("--turn-ttl must be at least 60 seconds (a browser refreshes its TURN allocation with the same credentials for the whole call)")]
    TtlTooShort,
}

/// The ICE servers every participant gets, and the secret their TURN credentials are signed
/// with.
#[derive(Clone)]
pub struct TurnServers {
    /// `stun:` URIs (no credentials).
    stun: Vec<String>,
    /// `turn:` / `turns:` URIs, all under the one shared secret.
    turn: Vec<String>,
    key: Option<hmac::Key>,
    ttl: Duration,
}

impl fmt::Debug for TurnServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServers")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("secret", &self.key.as_ref().map(|_| "<hidden>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnServers {
    /// From the flags: `uris` (`--turn-uri`), the secret given inline or as a file, the
    /// credentials' lifetime. `Ok(None)`: no TURN or STUN configured (clients get no
    /// `iceServers`).
    pub fn from_flags(
        uris: &[String],
        secret: Option<&str>,
        secret_file: Option<&Path>,
        ttl: Duration,
    ) -> Result<Option<Self>, TurnConfigError> {
        let secret = match (secret.filter(|s| !s.is_empty()), secret_file) {
            (Some(_), Some(_)) => return Err(TurnConfigError::TwoSecrets),
            (Some(s), None) => Some(s.to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    TurnConfigError::SecretFile {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                // A file written by `echo` or a Kubernetes Secret may end with a newline.
                let text = text.trim_end_matches(['\r', '\n']).to_string();
                if text.is_empty() {
                    return Err(TurnConfigError::EmptySecret);
                }
                Some(text)
            }
            (None, None) => None,
        };
        let uris: Vec<String> = uris
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        if uris.is_empty() {
            return match secret {
                Some(_) => Err(TurnConfigError::SecretWithoutUri),
                None => Ok(None),
            };
        }
        let (mut stun, mut turn) = (Vec::new(), Vec::new());
        for uri in uris {
            match uri_scheme(&uri) {
                Some("stun" | "stuns") => stun.push(uri),
                Some("turn" | "turns") => turn.push(uri),
                _ => return Err(TurnConfigError::BadUri(uri)),
            }
        }
        if !turn.is_empty() && secret.is_none() {
            return Err(TurnConfigError::NoSecret);
        }
        if ttl < Duration::from_secs(60) {
            return Err(TurnConfigError::TtlTooShort);
        }
        Ok(Some(TurnServers {
            stun,
            turn,
            key: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes())),
            ttl,
        }))
    }

    /// The `iceServers` for participant `who`, with TURN credentials valid from `now` for
    /// the configured lifetime.
    pub fn ice_servers(&self, who: &str, now: SystemTime) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(key)) = (self.turn.is_empty(), &self.key) {
            let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + self.ttl;
            let (username, credential) = credentials(key, expiry.as_secs(), who);
            servers.push(IceServer {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// coturn's REST-API credentials for `who` until `expiry` (unix seconds).
fn credentials(key: &hmac::Key, expiry: u64, who: &str) -> (String, String) {
    let username = format!("{expiry}:{who}");
    let credential =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(key, username.as_bytes()));
    (username, credential)
}

/// `turn` of `turn:host:3478?transport=udp`, if the URI has a host after its scheme.
fn uri_scheme(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    let host = rest.split(['?', ':']).next().unwrap_or("");
    let transport_ok = match rest.split_once('?') {
        None => true,
        Some((_, query)) => matches!(query, "transport=udp" | "transport=tcp"),
    };
    (!host.is_empty() && !rest.starts_with("//") && transport_ok).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn servers(
        uris: &[&str],
        secret: Option<&str>,
    ) -> Result<Option<TurnServers>, TurnConfigError> {
        let uris: Vec<String> = uris.iter().map(|s| s.to_string()).collect();
        TurnServers::from_flags(&uris, secret, None, DAY)
    }

    /// The credential is coturn's: the vector was computed independently, with
    /// `printf %s '1700086400:p-1f2e' | openssl dgst -sha1 -hmac 'north-wind' -binary | base64`.
    #[test]
    fn credentials_match_an_independent_hmac_sha1() {
        let turn = servers(
            &["turn:turn.example.com:3478?transport=udp"],
            Some("north-wind"),
        )
        .unwrap()
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ice = turn.ice_servers("p-1f2e", now);
        assert_eq!(ice.len(), 1);
        assert_eq!(ice[0].urls, ["turn:turn.example.com:3478?transport=udp"]);
        assert_eq!(ice[0].username.as_deref(), Some("1700086400:p-1f2e"));
        assert_eq!(
            ice[0].credential.as_deref(),
            Some("YpzkaR9UdgtNzTM+mdkbMzvKBqc=")
        );
    }

    #[test]
    fn expiry_is_now_plus_ttl_and_each_participant_differs() {
        let turn = servers(&["turns:t.example.com:443?transport=tcp"], Some("s"))
            .unwrap()
            .unwrap();
        let now = SystemTime::now();
        let a = turn.ice_servers("p-a", now);
        let b = turn.ice_servers("p-b", now);
        let user = a[0].username.clone().unwrap();
        let (expiry, who) = user.split_once(':').unwrap();
        let expiry: u64 = expiry.parse().unwrap();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(expiry, now_secs + DAY.as_secs());
        assert_eq!(who, "p-a");
        assert_ne!(a[0].credential, b[0].credential);
    }

    #[test]
    fn stun_only_needs_no_secret_and_gets_no_credentials() {
        let stun = servers(&["stun:stun.example.com:3478"], None)
            .unwrap()
            .unwrap();
        let ice = stun.ice_servers("p", SystemTime::now());
        assert_eq!(ice.len(), 1);
        assert_eq!(
            (ice[0].username.as_ref(), ice[0].credential.as_ref()),
            (None, None)
        );
    }

    #[test]
    fn flags_that_cannot_work_are_refused() {
        assert!(servers(&[], None).unwrap().is_none());
        assert!(matches!(
            servers(&["turn:h:3478"], None),
            Err(TurnConfigError::NoSecret)
        ));
        assert!(matches!(
            servers(&[], Some("s")),
            Err(TurnConfigError::SecretWithoutUri)
        ));
        for bad in [
            "http://h",
            "turn:",
            "turn://h:3478",
            "h:3478",
            "turn:h?transport=sctp",
        ] {
            assert!(
                matches!(servers(&[bad], Some("s")), Err(TurnConfigError::BadUri(_))),
                "{bad}"
            );
        }
        let uris = vec!["turn:h".to_string()];
        assert!(matches!(
            TurnServers::from_flags(&uris, Some("s"), None, Duration::from_secs(5)),
            Err(TurnConfigError::TtlTooShort)
        ));
    }

    #[test]
    fn the_secret_file_loses_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("conclave-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "north-wind\n").unwrap();
        let uris = vec!["turn:turn.example.com:3478?transport=udp".to_string()];
        let turn = TurnServers::from_flags(&uris, None, Some(&file), DAY)
            .unwrap()
            .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ice = turn.ice_servers("p-1f2e", now);
        assert_eq!(
            ice[0].credential.as_deref(),
            Some("YpzkaR9UdgtNzTM+mdkbMzvKBqc=")
        );
        assert!(matches!(
            TurnServers::from_flags(&uris, Some("x"), Some(&file), DAY),
            Err(TurnConfigError::TwoSecrets)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_the_secret() {
        let turn = servers(&["turn:h:3478"], Some("north-wind-secret"))
            .unwrap()
            .unwrap();
        let shown = format!("{turn:?}");
        assert!(!shown.contains("north-wind"), "{shown}");
        assert!(shown.contains("<hidden>"));
    }
}
