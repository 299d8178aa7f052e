//! The identity provider's public keys: a JWKS (RFC 7517) from an `https://` URL or a file,
//! picked by `kid`. An unknown `kid` refetches the set (at most once per refetch interval), so
//! a key rotation needs no restart; a set older than its maximum age is refetched before use,
//! so a withdrawn key stops verifying.
//!
//! Each key verifies only the algorithms it is for (RFC 8725 §3.1): its `alg` when the set says,
//! else its type's (RSA: RS256/384/512 and PS256/384/512; EC P-256: ES256, P-384: ES384; OKP
//! Ed25519: EdDSA). Symmetric (`oct`) keys and encryption keys in a set are skipped: an HMAC
//! key is the shared secret's business, never a published one's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Largest JWKS document read (bytes).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One key of the set, with the algorithms it verifies.
pub struct Key {
    pub(super) decoding: DecodingKey,
    pub(super) algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    unnamed: Vec<Arc<Key>>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // A token without a kid: only a set of exactly one key says which.
            None => {
                let mut all = self.by_kid.values().chain(self.unnamed.iter());
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

enum Source {
    File(PathBuf),
    Url(reqwest::Url, reqwest::Client),
}

/// A JWKS, fetched at start and refetched as the module docs say.
pub struct Jwks {
    source: Source,
    refetch_interval: Duration,
    max_age: Duration,
    keys: RwLock<(Arc<KeySet>, Instant)>,
    /// When the set was last fetched (or tried): one fetch at a time, rate-limited.
    fetching: tokio::sync::Mutex<Instant>,
}

impl Jwks {
    /// Loads the set at `location` (`https://…`, `http://` on a loopback host only, or a file
    /// path). Fails when it cannot be read or holds no usable key.
    pub async fn load(
        location: &str,
        refetch_interval: Duration,
        max_age: Duration,
    ) -> Result<Self, String> {
        let source = if location.starts_with("https://") || location.starts_with("http://") {
            let url = reqwest::Url::parse(location)
                .map_err(|e| format!("--jwks {location:?} is not a URL: {e}"))?;
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if url.scheme() == "http" && !loopback {
                return Err(format!(
                    "--jwks {location:?}: keys are fetched over https:// (http:// only from a loopback host)"
                ));
            }
            let client = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
            Source::Url(url, client)
        } else {
            Source::File(PathBuf::from(location))
        };
        let jwks = Self {
            source,
            refetch_interval,
            max_age,
            keys: RwLock::new((Arc::default(), Instant::now())),
            fetching: tokio::sync::Mutex::new(Instant::now()),
        };
        let set = jwks.fetch().await?;
        if set.by_kid.is_empty() && set.unnamed.is_empty() {
            return Err(format!(
                "the JWKS at {location} holds no usable signing key"
            ));
        }
        jwks.store(set);
        Ok(jwks)
    }

    fn current(&self) -> (Arc<KeySet>, Instant) {
        let guard = self.keys.read().unwrap_or_else(|p| p.into_inner());
        (guard.0.clone(), guard.1)
    }

    fn store(&self, set: KeySet) {
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        *guard = (Arc::new(set), Instant::now());
    }

    /// The key for a token's `kid`: from the set, else from a refetched set (unless one was
    /// fetched within the refetch interval).
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, String> {
        let (set, fetched) = self.current();
        if fetched.elapsed() < self.max_age {
            if let Some(key) = set.find(kid) {
                return Ok(key);
            }
        }
        let mut last = self.fetching.lock().await;
        // Another request may have refetched while this one waited.
        let (set, fetched) = self.current();
        let fresh = fetched.elapsed() < self.max_age;
        if let Some(key) = set.find(kid).filter(|_| fresh) {
            return Ok(key);
        }
        // Rate-limited either way: an identity provider that is down is not hammered.
        if last.elapsed() >= self.refetch_interval {
            *last = Instant::now();
            match self.fetch().await {
                Ok(set) => self.store(set),
                Err(error) => {
                    tracing::warn!(%error, "cannot refetch the JWKS; keeping the keys it had")
                }
            }
        }
        let (set, _) = self.current();
        set.find(kid).ok_or_else(|| match kid {
            Some(kid) => format!("no key {kid:?} in the identity provider's JWKS"),
            None => "the token names no key (kid) and the JWKS holds several".into(),
        })
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read the JWKS file {}: {e}", path.display()))?,
            Source::Url(url, client) => {
                let response = client
                    .get(url.clone())
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("cannot fetch the JWKS from {url}: {e}"))?;
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    return Err(format!("the JWKS at {url} is over {MAX_JWKS_BYTES} bytes"));
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("cannot read the JWKS from {url}: {e}"))?
                    .to_vec()
            }
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS is over {MAX_JWKS_BYTES} bytes"));
        }
        parse(&bytes)
    }
}

/// The usable keys of a JWKS document; keys of unknown types are skipped, not fatal.
fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let Some(Value::Array(keys)) = document.get("keys") else {
        return Err("the JWKS has no \"keys\" array".into());
    };
    let mut set = KeySet::default();
    for value in keys {
        let jwk: Jwk = match serde_json::from_value(value.clone()) {
            Ok(jwk) => jwk,
            Err(error) => {
                tracing::debug!(%error, "JWKS: a key of a type this relay does not read, skipped");
                continue;
            }
        };
        let Some(algorithms) = algorithms(&jwk) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            tracing::warn!(kid = ?jwk.common.key_id, "JWKS: an unreadable key, skipped");
            continue;
        };
        let key = Arc::new(Key {
            decoding,
            algorithms,
        });
        match jwk.common.key_id.clone() {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

/// What a key verifies, or `None` for a key this relay never uses (symmetric, encryption).
fn algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        // The set pins the key to one algorithm: that one, if the key's type can do it.
        Some(pinned) => {
            let pinned = Algorithm::try_from(pinned).ok()?;
            by_type.contains(&pinned).then(|| vec![pinned])
        }
        None => Some(by_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_verify_only_their_own_algorithms_and_symmetric_ones_are_skipped() {
        // An Ed25519 public key (RFC 8037 A.2), an RSA key pinned to RS256, an HMAC key, an
        // encryption key and a key type no one knows.
        let rsa_n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let set = parse(
            json!({ "keys": [
                { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
                { "kty": "RSA", "kid": "rsa", "alg": "RS256", "n": rsa_n, "e": "AQAB" },
                { "kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": rsa_n, "e": "AQAB" },
                { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" },
                { "kty": "unknown", "kid": "new" }
            ]})
            .to_string()
            .as_bytes(),
        )
        .expect("a JWKS");
        let ed = set.find(Some("ed")).expect("ed");
        assert_eq!(ed.algorithms, vec![Algorithm::EdDSA]);
        let rsa = set.find(Some("rsa")).expect("rsa");
        assert_eq!(rsa.algorithms, vec![Algorithm::RS256]);
        assert!(set.find(Some("rsa-enc")).is_none());
        assert!(set.find(Some("hmac")).is_none());
        assert!(set.find(Some("new")).is_none());
        // Two keys: a token without a kid names none of them.
        assert!(set.find(None).is_none());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
