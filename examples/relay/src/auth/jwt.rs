//! JWTs from the application's identity provider, verified with the `jsonwebtoken` crate:
//! HS256 with a shared secret (`--auth-secret`), RS256/384/512, PS256/384/512, ES256/384 and
//! EdDSA with the provider's JWKS (`--jwks`). `exp` is required; `nbf` is checked when present;
//! the issuer and the audience when configured; a small leeway for clocks.
//!
//! The claims the relay reads (names configurable): the principal (`sub`), the rooms
//! (`rooms`: `scope.rs`), the identity others see (`user`). `synckit-relay token` mints HS256
//! tokens with the same claims ([`JwtAuth::mint`]).

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::jwks::Jwks;
use super::scope::{Access, Scopes};
use super::{now_secs, Authenticate, Grant, Refusal};

/// Longest token accepted (bytes): a larger one is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Shortest shared secret (RFC 7518 §3.2: an HS256 key of at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest `user` claim (serialized JSON bytes): it travels in every state of the connection.
pub const MAX_USER_BYTES: usize = 4 * 1024;

/// What a token must carry and where the relay finds its claims.
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// Required `iss` (none: not checked).
    pub issuer: Option<String>,
    /// Required `aud` (none: a token that names an audience is refused, RFC 7519 §4.1.3).
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// The claim naming the rooms.
    pub rooms_claim: String,
    /// The claim holding what others see as `state.user`.
    pub user_claim: String,
    /// What a token without the rooms claim may open (`None`: nothing).
    pub default_access: Option<Access>,
}

/// Verifies JWTs (see the module docs).
pub struct JwtAuth {
    secret: Option<(DecodingKey, EncodingKey)>,
    jwks: Option<Jwks>,
    options: JwtOptions,
}

impl JwtAuth {
    /// Verifies HS256 with `secret` (at least [`MIN_SECRET_BYTES`]) and the JWKS's algorithms
    /// with `jwks`; at least one of the two.
    pub fn new(
        secret: Option<&[u8]>,
        jwks: Option<Jwks>,
        options: JwtOptions,
    ) -> Result<Self, String> {
        if secret.is_none() && jwks.is_none() {
            return Err("tokens need a shared secret or a JWKS".into());
        }
        let secret = match secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(format!(
                "the auth secret must be at least {MIN_SECRET_BYTES} bytes (HS256, RFC 7518 §3.2)"
            ))
            }
            Some(secret) => Some((
                DecodingKey::from_secret(secret).map_err(|e| format!("bad secret: {e}"))?,
                EncodingKey::from_secret(secret).map_err(|e| format!("bad secret: {e}"))?,
            )),
            None => None,
        };
        Ok(Self {
            secret,
            jwks,
            options,
        })
    }

    /// An HS256 token for `principal` valid for `ttl`, with the rooms claim (pattern →
    /// access) and, if given, the user claim; with the configured issuer and audience.
    pub fn mint(
        &self,
        principal: &str,
        rooms: &[(String, Access)],
        user: Option<Value>,
        ttl: Duration,
    ) -> Result<String, String> {
        let (_, key) = self
            .secret
            .as_ref()
            .ok_or("minting needs the shared secret (--auth-secret)")?;
        let now = now_secs();
        let mut claims = Map::new();
        claims.insert(self.options.principal_claim.clone(), principal.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
        let rooms: Map<String, Value> = rooms
            .iter()
            .map(|(pattern, access)| (pattern.clone(), access.as_str().into()))
            .collect();
        claims.insert(self.options.rooms_claim.clone(), rooms.into());
        if let Some(user) = user {
            claims.insert(self.options.user_claim.clone(), user);
        }
        if let Some(issuer) = &self.options.issuer {
            claims.insert("iss".into(), issuer.as_str().into());
        }
        if let Some(audience) = &self.options.audience {
            claims.insert("aud".into(), audience.as_str().into());
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| format!("cannot sign the token: {e}"))
    }

    async fn verify(&self, token: &str) -> Result<Grant, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "token of {} bytes is over the limit of {MAX_TOKEN_BYTES}",
                token.len()
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            format!("malformed token, or an algorithm never accepted (such as none): {e}")
        })?;
        let alg = header.alg;
        let jwks_key;
        let key = match alg {
            Algorithm::HS256 => {
                &self
                    .secret
                    .as_ref()
                    .ok_or("HS256 tokens are not accepted here (no shared secret)")?
                    .0
            }
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(format!("{alg:?} is not accepted (HS256 only)"))
            }
            _ => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    format!("{alg:?} tokens are not accepted here (no JWKS configured)")
                })?;
                jwks_key = jwks.key(header.kid.as_deref()).await?;
                if !jwks_key.algorithms.contains(&alg) {
                    return Err(format!(
                        "key {:?} is for {:?}, not {alg:?}",
                        header.kid.as_deref().unwrap_or_default(),
                        jwks_key.algorithms
                    ));
                }
                &jwks_key.decoding
            }
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation(alg))
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidAudience if self.options.audience.is_none() => {
                    "the token names an audience (aud) and this relay expects none (--jwt-audience)"
                        .to_owned()
                }
                kind => refusal_reason(kind),
            })?
            .claims;
        self.grant(&claims)
    }

    /// Pinned to the header's algorithm (already checked against the key above).
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.options.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.options.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without a configured audience, a token naming one is refused (jsonwebtoken's rule):
        // a token meant for another API of the same provider must not open this relay.
        if let Some(audience) = &self.options.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn grant(&self, claims: &Map<String, Value>) -> Result<Grant, String> {
        let options = &self.options;
        let claim = &options.principal_claim;
        let principal = match claims.get(claim) {
            Some(Value::String(p))
                if !p.is_empty()
                    && p.len() <= synckit_awareness::MAX_ID_BYTES
                    && !p.contains('\0') =>
            {
                p.clone()
            }
            Some(_) => {
                return Err(format!(
                    "the {claim} claim (the principal) must be a string of 1 to {} bytes",
                    synckit_awareness::MAX_ID_BYTES
                ))
            }
            None => return Err(format!("the token has no {claim} claim (the principal)")),
        };
        let rooms = match claims.get(&options.rooms_claim) {
            Some(value) => Scopes::from_claim(value)
                .map_err(|why| format!("the {} claim {why}", options.rooms_claim))?,
            None => options
                .default_access
                .map_or_else(Scopes::none, Scopes::all),
        };
        let user = claims.get(&options.user_claim).cloned();
        if let Some(user) = &user {
            let bytes = user.to_string().len();
            if bytes > MAX_USER_BYTES {
                return Err(format!(
                    "the {} claim is {bytes} bytes, over {MAX_USER_BYTES}",
                    options.user_claim
                ));
            }
        }
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_add(options.leeway.as_secs()));
        Ok(Grant {
            principal: Some(principal),
            user,
            rooms,
            expires,
        })
    }
}

fn refusal_reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired token".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "token from another issuer (iss)".into(),
        ErrorKind::InvalidAudience => "token for another audience (aud)".into(),
        ErrorKind::InvalidSignature => "invalid token signature".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed {claim} claim"),
        other => format!("invalid token: {other:?}"),
    }
}

#[async_trait]
impl Authenticate for JwtAuth {
    async fn authenticate(&self, token: Option<&str>) -> Result<Grant, Refusal> {
        let token = token.ok_or_else(|| {
            Refusal::unauthenticated("a token is required (?token=… or Authorization: Bearer …)")
        })?;
        self.verify(token).await.map_err(Refusal::unauthenticated)
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
