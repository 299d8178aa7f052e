//! Who a connection is: a hook ([`Authenticate`]) giving the principal a connection writes
//! presence as, with one built-in implementation, [`SignedToken`].
//!
//! A signed token is `<principal>.<expires>.<signature>`: the principal (1 to 128 bytes of
//! `A-Z a-z 0-9 _ - @ : +`), the Unix time in seconds after which it is refused, and the
//! lowercase hex HMAC-SHA256 of `<principal>.<expires>` under the shared secret. Clients pass it
//! in the connection URL (`ws://host/room?token=…`, y-websocket's `params: { token }`); your
//! login service mints it (`synckit-relay token --principal alice`, or the same three lines in
//! any language).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Decides who a connection is, from its room and its URL's query parameters.
pub trait Authenticate: Send + Sync + 'static {
    /// The principal (`Ok(Some(..))`), an anonymous connection (`Ok(None)`: presence is then
    /// written without an owner), or a refusal with a reason (`Err`: HTTP 401).
    fn authenticate(&self, room: &str, token: Option<&str>) -> Result<Option<String>, String>;
}

/// No authentication: every connection is anonymous.
#[derive(Debug, Default)]
pub struct Open;

impl Authenticate for Open {
    fn authenticate(&self, _room: &str, _token: Option<&str>) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// Tokens signed with a shared secret (HMAC-SHA256); see the module docs.
pub struct SignedToken {
    secret: Vec<u8>,
}

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

impl SignedToken {
    /// Verifies (and mints) tokens with `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the auth secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(Self { secret })
    }

    fn signature(&self, signed: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(signed.as_bytes());
        mac
    }

    /// A token for `principal`, valid for `ttl`.
    pub fn mint(&self, principal: &str, ttl: Duration) -> Result<String, String> {
        check_principal(principal)?;
        let expires = now_secs().saturating_add(ttl.as_secs());
        let signed = format!("{principal}.{expires}");
        let signature = hex::encode(self.signature(&signed).finalize().into_bytes());
        Ok(format!("{signed}.{signature}"))
    }

    /// The principal of a valid token.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let mut parts = token.rsplitn(3, '.');
        let (Some(signature), Some(expires), Some(principal)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token (expected principal.expires.signature)".into());
        };
        check_principal(principal)?;
        let signature = hex::decode(signature).map_err(|_| "malformed token signature")?;
        self.signature(&format!("{principal}.{expires}"))
            .verify_slice(&signature)
            .map_err(|_| "invalid token signature")?;
        let expires: u64 = expires.parse().map_err(|_| "malformed token expiry")?;
        if expires < now_secs() {
            return Err("expired token".into());
        }
        Ok(principal.to_owned())
    }
}

impl Authenticate for SignedToken {
    fn authenticate(&self, _room: &str, token: Option<&str>) -> Result<Option<String>, String> {
        let token = token.ok_or("a token is required (?token=…)")?;
        self.verify(token).map(Some)
    }
}

fn check_principal(principal: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-@:+".contains(c);
    if principal.is_empty() || principal.len() > 128 || !principal.chars().all(allowed) {
        return Err("a principal is 1 to 128 characters of A-Z a-z 0-9 _ - @ : +".into());
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_a_tampered_one_does_not() {
        let auth = SignedToken::new("0123456789abcdef0123").expect("secret");
        let token = auth.mint("alice", Duration::from_secs(60)).expect("mint");
        assert_eq!(auth.verify(&token), Ok("alice".to_owned()));
        let other = SignedToken::new("another secret of 16+ bytes").expect("secret");
        assert_eq!(other.verify(&token), Err("invalid token signature".into()));
        let forged = token.replacen("alice", "bob", 1);
        assert_eq!(auth.verify(&forged), Err("invalid token signature".into()));
        assert!(auth.verify("alice").is_err());
        assert!(auth.verify("alice.1.zz").is_err());
        assert_eq!(
            auth.authenticate("room", None),
            Err("a token is required (?token=…)".into())
        );
    }

    #[test]
    fn expired_tokens_and_bad_principals_are_refused() {
        let auth = SignedToken::new("0123456789abcdef0123").expect("secret");
        let signed = "alice.1";
        let signature = hex::encode(auth.signature(signed).finalize().into_bytes());
        assert_eq!(
            auth.verify(&format!("{signed}.{signature}")),
            Err("expired token".into())
        );
        assert!(auth.mint("al.ice", Duration::from_secs(1)).is_err());
        assert!(auth.mint("", Duration::from_secs(1)).is_err());
        assert!(SignedToken::new("short").is_err());
    }
}
