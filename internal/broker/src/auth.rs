//! Authentication of CONNECT tokens and authorization of requests.
//!
//! Anonymous mode accepts any token and grants everything in route family 1.
//! JWT mode verifies an HS256 token, resolves the route family from an
//! identity claim through the family map, and compiles the permission list
//! from the first permission source present (spec order: custom claim object
//! `.permissions`, top-level `permissions`, the configured permissions claim,
//! the role claim, `scp`, `scope`).
//!
//! Token time claims (`exp`, `nbf`) are checked against the broker's
//! [`Clock`], so tests with a manual clock can expire a token mid-session.
//! An expired token does not close the session: every later request that
//! needs a permission is refused with its domain's unauthorized code (the
//! broker design documents' per-authorization `exp` check; the spec leaves
//! the live broker's choice unconfirmed). Session-owned operations (commit of
//! an open transaction, unsubscribe by id …) keep working.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fitz_protocol::route::{self, Scheme};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::clock::Clock;

/// A route family: the isolation domain resolved from the caller's identity.
/// All state (KV data, registrations, leases …) is partitioned by it.
pub type Family = u32;

/// How CONNECT tokens are checked.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    mode: Mode,
}

#[derive(Clone, PartialEq, Eq)]
enum Mode {
    Anonymous,
    Jwt(Box<JwtConfig>),
}

#[derive(Clone, PartialEq, Eq)]
struct JwtConfig {
    secret: Vec<u8>,
    audiences: Vec<String>,
    family_map: HashMap<String, Family>,
    family_claim: String,
    org_claim: Option<String>,
    permissions_claim: Option<String>,
    custom_claim: Option<String>,
    role_claim: String,
}

/// Default audiences (`FITZ_JWT_AUDIENCES`).
pub const DEFAULT_AUDIENCES: [&str; 2] = ["fitz", "fitz-broker"];
/// Default identity claim (`FITZ_ROUTE_FAMILY_CLAIM`).
pub const DEFAULT_FAMILY_CLAIM: &str = "tid";
/// Default role claim (`FITZ_AUTH_ROLE_CLAIM`).
pub const DEFAULT_ROLE_CLAIM: &str = "roles";

impl AuthConfig {
    /// Any token (including an empty one) is accepted with full access in
    /// route family 1.
    pub fn anonymous() -> Self {
        Self {
            mode: Mode::Anonymous,
        }
    }

    /// HS256 JWTs signed with `secret`. Defaults: audiences `fitz` and
    /// `fitz-broker`, identity claim `tid`, family map `dev=1` (the official
    /// client's test tokens), role claim `roles`.
    pub fn jwt_hs256(secret: impl AsRef<[u8]>) -> Self {
        Self {
            mode: Mode::Jwt(Box::new(JwtConfig {
                secret: secret.as_ref().to_vec(),
                audiences: DEFAULT_AUDIENCES.iter().map(|s| s.to_string()).collect(),
                family_map: HashMap::from([("dev".to_string(), 1)]),
                family_claim: DEFAULT_FAMILY_CLAIM.to_string(),
                org_claim: None,
                permissions_claim: None,
                custom_claim: None,
                role_claim: DEFAULT_ROLE_CLAIM.to_string(),
            })),
        }
    }

    /// True in anonymous mode.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.mode, Mode::Anonymous)
    }

    fn jwt_mut(&mut self) -> Option<&mut JwtConfig> {
        match &mut self.mode {
            Mode::Jwt(j) => Some(j),
            Mode::Anonymous => None,
        }
    }

    /// Accepted `aud` values (JWT mode only; ignored when anonymous).
    #[must_use]
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Some(j) = self.jwt_mut() {
            j.audiences = audiences.into_iter().map(Into::into).collect();
        }
        self
    }

    /// Identity → route family (`FITZ_ROUTE_FAMILY_MAP`), replacing the default.
    #[must_use]
    pub fn family_map<I, S>(mut self, map: I) -> Self
    where
        I: IntoIterator<Item = (S, Family)>,
        S: Into<String>,
    {
        if let Some(j) = self.jwt_mut() {
            j.family_map = map.into_iter().map(|(k, v)| (k.into(), v)).collect();
        }
        self
    }

    /// The identity claim looked up in the family map (`FITZ_ROUTE_FAMILY_CLAIM`).
    #[must_use]
    pub fn family_claim(mut self, claim: impl Into<String>) -> Self {
        if let Some(j) = self.jwt_mut() {
            j.family_claim = claim.into();
        }
        self
    }

    /// An organisation claim preferred over the family claim when present
    /// (`FITZ_AUTH_ORG_CLAIM`).
    #[must_use]
    pub fn org_claim(mut self, claim: impl Into<String>) -> Self {
        if let Some(j) = self.jwt_mut() {
            j.org_claim = Some(claim.into());
        }
        self
    }

    /// A claim holding the permission list (`FITZ_AUTH_PERMISSIONS_CLAIM`).
    #[must_use]
    pub fn permissions_claim(mut self, claim: impl Into<String>) -> Self {
        if let Some(j) = self.jwt_mut() {
            j.permissions_claim = Some(claim.into());
        }
        self
    }

    /// A custom object claim whose `.permissions` member is read first
    /// (`FITZ_AUTH_CUSTOM_CLAIM`).
    #[must_use]
    pub fn custom_claim(mut self, claim: impl Into<String>) -> Self {
        if let Some(j) = self.jwt_mut() {
            j.custom_claim = Some(claim.into());
        }
        self
    }

    /// The role array claim (`FITZ_AUTH_ROLE_CLAIM`, default `roles`).
    #[must_use]
    pub fn role_claim(mut self, claim: impl Into<String>) -> Self {
        if let Some(j) = self.jwt_mut() {
            j.role_claim = claim.into();
        }
        self
    }

    /// Checks the configuration the way the real broker does at startup.
    pub fn validate(&self) -> Result<(), String> {
        let Mode::Jwt(j) = &self.mode else {
            return Ok(());
        };
        if j.secret.is_empty() {
            return Err("JWT mode needs a non-empty HMAC secret".into());
        }
        if j.audiences.is_empty() {
            return Err("JWT mode needs at least one audience".into());
        }
        if j.family_map.is_empty() {
            return Err("JWT mode needs a non-empty route family map".into());
        }
        if let Some((id, _)) = j.family_map.iter().find(|(_, f)| **f == 0) {
            return Err(format!("identity {id:?} maps to route family 0"));
        }
        Ok(())
    }

    /// Verifies a CONNECT token. The error is the `<reason>` of the
    /// `connect failed: <reason>` close.
    pub(crate) fn authenticate(&self, token: &[u8], clock: &Clock) -> Result<Grant, String> {
        match &self.mode {
            Mode::Anonymous => Ok(Grant::anonymous()),
            Mode::Jwt(j) => j.authenticate(token, clock.now()),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Anonymous => f.write_str("AuthConfig::Anonymous"),
            Mode::Jwt(j) => f
                .debug_struct("AuthConfig::JwtHs256")
                .field("secret", &"<redacted>")
                .field("audiences", &j.audiences)
                .field("family_map", &j.family_map)
                .field("family_claim", &j.family_claim)
                .field("org_claim", &j.org_claim)
                .field("permissions_claim", &j.permissions_claim)
                .field("custom_claim", &j.custom_claim)
                .field("role_claim", &j.role_claim)
                .finish(),
        }
    }
}

impl JwtConfig {
    fn authenticate(&self, token: &[u8], now: SystemTime) -> Result<Grant, String> {
        let token = std::str::from_utf8(token).map_err(|_| "token is not UTF-8".to_string())?;
        if token.is_empty() {
            return Err("missing token".into());
        }
        let mut v = Validation::new(Algorithm::HS256);
        // Time claims are checked below against the broker clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "aud"]);
        v.set_audience(&self.audiences);
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(&self.secret),
            &v,
        )
        .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;

        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or("token exp is not a number")?;
        if exp <= now_secs {
            return Err("token expired".into());
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or("token nbf is not a number")?;
            if nbf > now_secs {
                return Err("token not yet valid".into());
            }
        }

        let family = self.resolve_family(&claims)?;
        let permissions = self.permissions(&claims)?;
        Ok(Grant {
            family,
            permissions: Permissions::List(permissions),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(exp)),
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        })
    }

    fn resolve_family(&self, claims: &Map<String, Value>) -> Result<Family, String> {
        let org = self
            .org_claim
            .as_deref()
            .and_then(|c| claims.get(c).map(|v| (c, v)));
        let (claim, value) = match org {
            Some(found) => found,
            None => {
                let c = self.family_claim.as_str();
                let v = claims
                    .get(c)
                    .ok_or_else(|| format!("missing route family claim {c:?}"))?;
                (c, v)
            }
        };
        let identity = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("route family claim {claim:?} is not a string")),
        };
        self.family_map
            .get(&identity)
            .copied()
            .ok_or_else(|| format!("route family identity {identity:?} is not mapped"))
    }

    fn permissions(&self, claims: &Map<String, Value>) -> Result<Vec<Permission>, String> {
        let custom = self
            .custom_claim
            .as_deref()
            .and_then(|c| claims.get(c))
            .and_then(|v| v.get("permissions"));
        let sources: [(Option<&Value>, bool); 6] = [
            (custom, false),
            (claims.get("permissions"), false),
            (
                self.permissions_claim
                    .as_deref()
                    .and_then(|c| claims.get(c)),
                false,
            ),
            (claims.get(&self.role_claim), false),
            (claims.get("scp"), true),
            (claims.get("scope"), true),
        ];
        let (value, strip) = sources
            .into_iter()
            .find_map(|(v, strip)| v.map(|v| (v, strip)))
            .ok_or("token carries no permissions")?;
        let entries: Vec<&str> = match value {
            Value::String(s) => s.split_whitespace().collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err("permission claim is neither a string nor an array".into()),
        };
        let perms: Vec<Permission> = entries
            .into_iter()
            .filter_map(|e| {
                let p = Permission::parse(e, strip);
                if p.is_none() {
                    tracing::debug!(entry = e, "ignoring unrecognised permission");
                }
                p
            })
            .collect();
        if perms.is_empty() {
            return Err("token carries no usable permission".into());
        }
        Ok(perms)
    }
}

/// Access a request needs or a permission grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `#read`.
    Read,
    /// `#write`.
    Write,
    /// `#*`: read, write and the operations that need both (RPC workers).
    All,
}

impl Access {
    /// True when a permission granting `self` satisfies a request needing `need`.
    pub fn satisfies(self, need: Access) -> bool {
        self == Access::All || self == need
    }
}

/// One compiled permission: `scheme://pattern#access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    scheme: Scheme,
    pattern: String,
    access: Access,
}

impl Permission {
    /// Parses a route-shaped permission (`kv://prod/**#read`, access `*` when
    /// `#` is absent) or a coarse scope (`kv.read`, `notice.write`,
    /// `queue.*`). With `strip_prefix` (for `scp`/`scope`), a resource-server
    /// prefix such as `api/` in front of a coarse scope is dropped.
    pub fn parse(entry: &str, strip_prefix: bool) -> Option<Permission> {
        let entry = entry.trim();
        if entry.contains("://") {
            let (pattern, access) = match entry.rsplit_once('#') {
                Some((p, a)) => (p, parse_access(a)?),
                None => (entry, Access::All),
            };
            let shape = route::shape(pattern).ok()?;
            return Some(Permission {
                scheme: shape.scheme,
                pattern: pattern.to_string(),
                access,
            });
        }
        let coarse = if strip_prefix {
            entry.rsplit('/').next().unwrap_or(entry)
        } else {
            entry
        };
        let (scheme, access) = coarse.split_once('.')?;
        let scheme = Scheme::parse(scheme)?;
        Some(Permission {
            scheme,
            pattern: format!("{}://**", scheme.as_str()),
            access: parse_access(access)?,
        })
    }

    /// The pattern part (`scheme://…`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The granted access.
    pub fn access(&self) -> Access {
        self.access
    }
}

fn parse_access(s: &str) -> Option<Access> {
    match s {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "*" | "all" => Some(Access::All),
        _ => None,
    }
}

/// What a session may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permissions {
    /// Anonymous mode: `<scheme>://**#*` for every scheme.
    Full,
    /// Compiled permissions from the token.
    List(Vec<Permission>),
}

impl Permissions {
    /// True when one permission covers every route `target` (a concrete
    /// route or a pattern, with scheme) can address, with enough access.
    pub fn allows(&self, target: &str, need: Access) -> bool {
        match self {
            Permissions::Full => true,
            Permissions::List(list) => {
                let Ok((scheme, _)) = route::split(target) else {
                    return false;
                };
                list.iter().any(|p| {
                    p.scheme == scheme
                        && p.access.satisfies(need)
                        && route::covers(&p.pattern, target)
                })
            }
        }
    }
}

/// The outcome of a successful CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Route family of every request of the session.
    pub family: Family,
    /// Compiled permissions.
    pub permissions: Permissions,
    /// The token's `exp`; `None` in anonymous mode.
    pub expires_at: Option<SystemTime>,
    /// The token's `sub`, for logs and inspection.
    pub subject: Option<String>,
}

impl Grant {
    /// Anonymous: family 1, everything allowed, never expires.
    pub fn anonymous() -> Self {
        Self {
            family: 1,
            permissions: Permissions::Full,
            expires_at: None,
            subject: None,
        }
    }

    /// Permission check including the token's expiry.
    pub fn allows(&self, target: &str, need: Access, now: impl FnOnce() -> SystemTime) -> bool {
        if let Some(exp) = self.expires_at
            && now() >= exp
        {
            return false;
        }
        self.permissions.allows(target, need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_route_and_coarse_permissions() {
        let p = Permission::parse("kv://prod/**#read", false).unwrap();
        assert_eq!((p.scheme, p.access), (Scheme::Kv, Access::Read));
        let p = Permission::parse("notice://**", false).unwrap();
        assert_eq!(p.access, Access::All);
        let p = Permission::parse("api/notice.write", true).unwrap();
        assert_eq!((p.pattern(), p.access), ("notice://**", Access::Write));
        assert!(Permission::parse("api/notice.write", false).is_none());
        assert!(Permission::parse("queue.*", false).is_some());
        assert!(Permission::parse("kv://a//b#read", false).is_none());
        assert!(Permission::parse("kv://a#admin", false).is_none());
        assert!(Permission::parse("openid", true).is_none());
    }

    #[test]
    fn coverage_and_access_levels() {
        let perms = Permissions::List(vec![
            Permission::parse("kv://prod/**#read", false).unwrap(),
            Permission::parse("notice://prod/*/x#write", false).unwrap(),
        ]);
        assert!(perms.allows("kv://prod/a/b", Access::Read));
        assert!(!perms.allows("kv://prod/a/b", Access::Write));
        assert!(!perms.allows("kv://dev/a/b", Access::Read));
        assert!(perms.allows("kv://prod/*/b", Access::Read));
        assert!(!perms.allows("kv://**", Access::Read));
        assert!(perms.allows("notice://prod/q/x", Access::Write));
        assert!(!perms.allows("notice://prod/**", Access::Write));
        assert!(Access::All.satisfies(Access::Write));
        assert!(!Access::Write.satisfies(Access::All));
    }
}
