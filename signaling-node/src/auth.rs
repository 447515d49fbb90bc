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

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Invariant: HS256 encoding of a plain struct cannot fail.
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("hs256 encode")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let c = data.claims;
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
}
