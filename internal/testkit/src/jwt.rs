//! JWT minting for tests (HS256).
//!
//! [`test_token`] is the token of the official client's test suite: issuer
//! `""`, audience `fitz`, identity claim `tid = "dev"` (route family 1 under
//! the map `dev=1`) and full permissions on every domain. The builder makes
//! the variants the auth tests need.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// The HMAC secret of the reference authenticated broker.
pub const DEV_SECRET: &str = "dev-test-secret";

/// The audience brokers accept by default.
pub const AUDIENCE: &str = "fitz";

/// Full access to every domain.
pub const ALL_PERMISSIONS: [&str; 7] = [
    "kv://**#*",
    "queue://**#*",
    "rpc://**#*",
    "notice://**#*",
    "lease://**#*",
    "stream://**#*",
    "schedule://**#*",
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Builds a token claim by claim.
#[derive(Debug, Clone)]
pub struct Jwt {
    secret: String,
    claims: Map<String, Value>,
}

impl Jwt {
    /// The official suite's claims, valid for an hour, signed with
    /// [`DEV_SECRET`].
    pub fn dev() -> Self {
        let now = now();
        let claims = json!({
            "iss": "",
            "aud": AUDIENCE,
            "sub": "fitz-rs-tests",
            "tid": "dev",
            "iat": now,
            "exp": now + 3600,
            "permissions": ALL_PERMISSIONS,
        });
        let Value::Object(claims) = claims else {
            unreachable!("a JSON object literal")
        };
        Self {
            secret: DEV_SECRET.to_owned(),
            claims,
        }
    }

    /// Signs with another secret.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// `exp` = now + `seconds` (negative: already expired).
    #[must_use]
    pub fn expires_in(mut self, seconds: i64) -> Self {
        self.claims.insert("exp".into(), json!(now() + seconds));
        self
    }

    /// Replaces the permission list.
    #[must_use]
    pub fn permissions(mut self, permissions: &[&str]) -> Self {
        self.claims.insert("permissions".into(), json!(permissions));
        self
    }

    /// Sets the identity claim `tid` (the route family key).
    #[must_use]
    pub fn tid(mut self, tid: &str) -> Self {
        self.claims.insert("tid".into(), json!(tid));
        self
    }

    /// Sets any claim; `Value::Null` removes it.
    #[must_use]
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        if value.is_null() {
            self.claims.remove(name);
        } else {
            self.claims.insert(name.into(), value);
        }
        self
    }

    /// The compact token.
    pub fn mint(&self) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &self.claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap_or_default()
    }
}

/// The official suite's valid token.
pub fn test_token() -> String {
    Jwt::dev().mint()
}

/// Expired 60 s ago.
pub fn expired_token() -> String {
    Jwt::dev().expires_in(-60).mint()
}

/// Signed with a secret the broker does not know.
pub fn wrong_secret_token() -> String {
    Jwt::dev().secret("not-the-dev-secret").mint()
}

/// Valid, with only `permissions` (e.g. `["queue://**#read"]`).
pub fn scoped_token(permissions: &[&str]) -> String {
    Jwt::dev().permissions(permissions).mint()
}

/// Valid signature, but an identity (`tid`) outside the family map.
pub fn other_family_token(tid: &str) -> String {
    Jwt::dev().tid(tid).mint()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_with_the_dev_secret_only() {
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_audience(&[AUDIENCE]);
        let key = jsonwebtoken::DecodingKey::from_secret(DEV_SECRET.as_bytes());
        let ok = jsonwebtoken::decode::<Map<String, Value>>(&test_token(), &key, &v).unwrap();
        assert_eq!(ok.claims["tid"], "dev");
        assert_eq!(ok.claims["permissions"].as_array().unwrap().len(), 7);
        assert!(
            jsonwebtoken::decode::<Map<String, Value>>(&wrong_secret_token(), &key, &v).is_err()
        );
        assert!(jsonwebtoken::decode::<Map<String, Value>>(&expired_token(), &key, &v).is_err());
        let scoped = jsonwebtoken::decode::<Map<String, Value>>(
            &scoped_token(&["queue://**#read"]),
            &key,
            &v,
        )
        .unwrap();
        assert_eq!(scoped.claims["permissions"], json!(["queue://**#read"]));
    }
}
