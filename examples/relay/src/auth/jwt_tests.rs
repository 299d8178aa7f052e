//! The rules of `jwt.rs` that the end-to-end test (`web/test/access.test.mjs`, tokens minted
//! by jose) does not reach from outside: the relay's own minting, the default room access, the
//! audience rule and the claims' bounds.

use std::time::Duration;

use serde_json::json;

use super::*;

const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef";

fn options() -> JwtOptions {
    JwtOptions {
        issuer: None,
        audience: None,
        leeway: Duration::ZERO,
        principal_claim: "sub".into(),
        rooms_claim: "rooms".into(),
        user_claim: "user".into(),
        default_access: None,
    }
}

fn sign(claims: serde_json::Value) -> String {
    let key = EncodingKey::from_secret(SECRET).expect("key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
}

fn exp() -> u64 {
    now_secs() + 600
}

#[tokio::test]
async fn minted_tokens_verify_with_their_rooms_user_and_expiry() {
    let auth = JwtAuth::new(Some(SECRET), None, options()).expect("auth");
    let token = auth
        .mint(
            "alice",
            &[
                ("team-a/*".into(), Access::Write),
                ("lobby".into(), Access::Read),
            ],
            Some(json!({ "name": "Alice" })),
            Duration::from_secs(60),
        )
        .expect("mint");
    let grant = auth.verify(&token).await.expect("verifies");
    assert_eq!(grant.principal.as_deref(), Some("alice"));
    assert_eq!(grant.user, Some(json!({ "name": "Alice" })));
    assert_eq!(grant.rooms.access("team-a/doc"), Some(Access::Write));
    assert_eq!(grant.rooms.access("lobby"), Some(Access::Read));
    assert_eq!(grant.rooms.access("team-b/doc"), None);
    let remaining = grant.remaining().expect("expires");
    assert!(remaining <= Duration::from_secs(60) && remaining >= Duration::from_secs(58));
}

#[tokio::test]
async fn without_the_rooms_claim_a_token_opens_what_the_default_says() {
    let token = sign(json!({ "sub": "alice", "exp": exp() }));
    let closed = JwtAuth::new(Some(SECRET), None, options()).expect("auth");
    assert_eq!(
        closed
            .verify(&token)
            .await
            .expect("grant")
            .rooms
            .access("any"),
        None
    );
    let open = JwtAuth::new(
        Some(SECRET),
        None,
        JwtOptions {
            default_access: Some(Access::Read),
            ..options()
        },
    )
    .expect("auth");
    let grant = open.verify(&token).await.expect("grant");
    assert_eq!(grant.rooms.access("any"), Some(Access::Read));
}

#[tokio::test]
async fn an_audience_is_refused_unless_it_is_the_configured_one() {
    let token = sign(json!({ "sub": "alice", "exp": exp(), "aud": "another-api" }));
    let none = JwtAuth::new(Some(SECRET), None, options()).expect("auth");
    let refused = none.verify(&token).await.expect_err("refused");
    assert!(refused.contains("--jwt-audience"), "{refused}");
    let ours = JwtAuth::new(
        Some(SECRET),
        None,
        JwtOptions {
            audience: Some("relay".into()),
            ..options()
        },
    )
    .expect("auth");
    assert!(ours.verify(&token).await.is_err());
    let right = sign(json!({ "sub": "alice", "exp": exp(), "aud": ["relay", "x"] }));
    assert!(ours.verify(&right).await.is_ok());
}

#[tokio::test]
async fn claims_out_of_bounds_are_refused_with_why() {
    let auth = JwtAuth::new(Some(SECRET), None, options()).expect("auth");
    let cases = [
        (json!({ "exp": exp() }), "no sub claim"),
        (json!({ "sub": "", "exp": exp() }), "must be a string"),
        (json!({ "sub": 7, "exp": exp() }), "must be a string"),
        (json!({ "sub": "a" }), "no exp claim"),
        (
            json!({ "sub": "a", "exp": exp(), "user": "x".repeat(MAX_USER_BYTES) }),
            "user claim is",
        ),
        (
            json!({ "sub": "a", "exp": exp(), "rooms": ["a"] }),
            "rooms claim must be",
        ),
    ];
    for (claims, why) in cases {
        let refused = auth
            .verify(&sign(claims.clone()))
            .await
            .expect_err("refused");
        assert!(refused.contains(why), "{claims}: {refused}");
    }
    assert!(JwtAuth::new(Some(b"short"), None, options()).is_err());
    assert!(JwtAuth::new(None, None, options()).is_err());
}
