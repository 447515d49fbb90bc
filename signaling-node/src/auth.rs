//! Access tokens: a JWT (HS256, shared secret) minted by the chat backend for its logged-in
//! user, naming the user, the room and the community.

use conclave_common::names::check_name;
use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey};
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

pub use crate::error::TokenError;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The room (voice channel) the user may join.
    pub room: String,
    /// The community (Discord "server") the room belongs to.
    pub community: String,
    /// Display name suggested by the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Shortest token secret a node starts with (HS256 keys should be at least its output size).
pub const MIN_SECRET_LEN: usize = 32;

/// What a token must be besides well signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The longest a token may still live when it is used (`exp` at most this far ahead):
    /// a leaked token is not a key for weeks.
    pub max_lifetime_secs: u64,
    /// If set, the `aud` claim must name it.
    pub audience: Option<String>,
    /// If set, the `iss` claim must be it.
    pub issuer: Option<String>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            max_lifetime_secs: 24 * 3600,
            audience: None,
            issuer: None,
        }
    }
}

/// What a token is used for: a `resume` accepts an expired one (the resume secret proves the
/// client; its join token may well have expired during a long call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    Join,
    Resume,
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    policy: TokenPolicy,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            policy: TokenPolicy::default(),
        }
    }

    pub fn with_policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Invariant: HS256 encoding of a plain struct cannot fail.
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("hs256 encode")
    }

    /// A join token's claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_for(token, TokenUse::Join)
    }

    /// The token's claims if it may be used for `usage`.
    pub fn verify_for(&self, token: &str, usage: TokenUse) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = usage == TokenUse::Join;
        let mut required = vec!["exp", "sub"];
        match &self.policy.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Not configured: an `aud` the backend adds anyway is not a reason to refuse.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.policy.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data =
            decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let c = data.claims;
        if c.exp > now_secs() + self.policy.max_lifetime_secs + validation.leeway {
            return Err(TokenError::Invalid(format!(
                "token lives longer than the {} s the server allows",
                self.policy.max_lifetime_secs
            )));
        }
        for (field, value) in [
            ("sub", &c.sub),
            ("room", &c.room),
            ("community", &c.community),
        ] {
            if value.is_empty() || value.len() > 128 {
                return Err(TokenError::Invalid(format!(
                    "claim {field} must be 1..=128 bytes"
                )));
            }
        }
        // `community/room` is a room's id in Redis and on media nodes, and both name Redis
        // keys: one charset without separators (a room `x:members` would be `x`'s hash).
        for (field, value) in [("room", &c.room), ("community", &c.community)] {
            check_name(value).map_err(|e| TokenError::Invalid(format!("claim {field} {e}")))?;
        }
        Ok(c)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_common::protocol::ErrorCode;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            room: "general".into(),
            community: "acme".into(),
            name: None,
            exp,
        }
    }

    #[test]
    fn minted_token_verifies() {
        let keys = TokenKeys::new(b"secret");
        let c = claims(now_secs() + 60);
        assert_eq!(keys.verify(&keys.mint(&c)).unwrap(), c);
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_refused() {
        let keys = TokenKeys::new(b"secret");
        let old = keys.mint(&claims(now_secs() - 3600));
        assert_eq!(keys.verify(&old).unwrap_err(), TokenError::Expired);
        let other = TokenKeys::new(b"other").mint(&claims(now_secs() + 60));
        assert_eq!(
            keys.verify(&other).unwrap_err().code(),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            keys.verify("garbage").unwrap_err().code(),
            ErrorCode::InvalidToken
        );
        let mut slash = claims(now_secs() + 60);
        slash.community = "a/b".into();
        assert!(matches!(
            keys.verify(&keys.mint(&slash)),
            Err(TokenError::Invalid(_))
        ));
        // Names that would build another room's Redis keys, or a pattern, or nothing usable.
        for room in ["x:members", "a/b", "r*", "two words", "é"] {
            let mut odd = claims(now_secs() + 60);
            odd.room = room.into();
            assert_eq!(
                keys.verify(&keys.mint(&odd)).unwrap_err().code(),
                ErrorCode::InvalidToken,
                "{room}"
            );
        }
        let mut colon = claims(now_secs() + 60);
        colon.community = "acme:rooms".into();
        assert!(keys.verify(&keys.mint(&colon)).is_err());
        let mut empty_room = claims(now_secs() + 60);
        empty_room.room.clear();
        assert_eq!(
            keys.verify(&keys.mint(&empty_room)).unwrap_err().code(),
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn an_expired_token_still_serves_a_resume_but_not_a_join() {
        let keys = TokenKeys::new(b"secret");
        let old = keys.mint(&claims(now_secs() - 3600));
        assert_eq!(
            keys.verify_for(&old, TokenUse::Join).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            keys.verify_for(&old, TokenUse::Resume).unwrap(),
            claims(now_secs() - 3600)
        );
        // Still signed by us: a forged expired token serves nothing.
        let forged = TokenKeys::new(b"other").mint(&claims(now_secs() - 3600));
        assert!(keys.verify_for(&forged, TokenUse::Resume).is_err());
    }

    #[test]
    fn tokens_living_past_the_maximum_are_refused() {
        let keys = TokenKeys::new(b"secret").with_policy(TokenPolicy {
            max_lifetime_secs: 600,
            ..TokenPolicy::default()
        });
        assert!(keys.verify(&keys.mint(&claims(now_secs() + 590))).is_ok());
        let long = keys.mint(&claims(now_secs() + 7 * 24 * 3600));
        assert_eq!(
            keys.verify(&long).unwrap_err().code(),
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        #[derive(Serialize)]
        struct WithAudIss<'a> {
            #[serde(flatten)]
            claims: Claims,
            aud: &'a str,
            iss: &'a str,
        }
        let secret = b"secret";
        let mint = |aud: &str, iss: &str| {
            let body = WithAudIss {
                claims: claims(now_secs() + 60),
                aud,
                iss,
            };
            encode(
                &Header::new(Algorithm::HS256),
                &body,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let keys = TokenKeys::new(secret).with_policy(TokenPolicy {
            audience: Some("conclave".into()),
            issuer: Some("chat-backend".into()),
            ..TokenPolicy::default()
        });
        assert!(keys.verify(&mint("conclave", "chat-backend")).is_ok());
        assert!(keys
            .verify(&mint("another-service", "chat-backend"))
            .is_err());
        assert!(keys.verify(&mint("conclave", "someone-else")).is_err());
        // Without aud/iss at all: refused too.
        assert!(keys.verify(&keys.mint(&claims(now_secs() + 60))).is_err());
        // Not configured: not required.
        let plain = TokenKeys::new(secret);
        assert!(plain.verify(&mint("anything", "anyone")).is_ok());
    }
}
