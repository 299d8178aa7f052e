//! `tls.rs`'s unit tests: the connection string's TLS parameters.

use super::*;

#[test]
fn sslmode_and_rootcert_are_taken_out() {
    let t = TlsTarget::parse(
        "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Ftmp%2Fca.pem",
    )
    .unwrap();
    assert_eq!(t.rest, "postgres://u:p@db:5432/x?application_name=a");
    assert_eq!(t.mode, SslMode::VerifyFull);
    assert_eq!(t.root_cert.as_deref(), Some("/tmp/ca.pem"));

    let t = TlsTarget::parse("postgres://db/x").unwrap();
    assert_eq!(
        (t.rest.as_str(), t.mode),
        ("postgres://db/x", SslMode::Prefer)
    );

    let t = TlsTarget::parse("host=db sslmode=require dbname=x").unwrap();
    assert_eq!(
        (t.rest.as_str(), t.mode),
        ("host=db dbname=x", SslMode::Require)
    );

    let err = TlsTarget::parse("postgres://db/x?sslmode=maybe").unwrap_err();
    assert!(err.contains("verify-full"), "{err}");
}

#[test]
fn missing_root_file_is_a_clear_error() {
    let t = TlsTarget::parse("postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem")
        .unwrap();
    let err = t.client_config().unwrap_err();
    assert!(err.contains("/nonexistent.pem"), "{err}");
}
