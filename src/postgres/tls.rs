//! TLS for the store's connections: `sslmode` and `sslrootcert` from the connection string,
//! through rustls (no OpenSSL, no libpq).
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only and never checks the server's
//! certificate, so this module takes both parameters out of the string before tokio-postgres
//! parses it and decides itself what to verify:
//!
//! | `sslmode`     | encrypted                      | certificate checked                        |
//! |---------------|--------------------------------|--------------------------------------------|
//! | `disable`     | no                             | —                                          |
//! | `allow`       | as `prefer`                    | no                                         |
//! | `prefer` (default) | when the server offers TLS | no (as libpq, unless `sslrootcert` is set) |
//! | `require`     | yes, else the connection fails | no (as libpq, unless `sslrootcert` is set) |
//! | `verify-ca`   | yes                            | chain to a trusted root                    |
//! | `verify-full` | yes                            | chain and host name                        |
//!
//! Trusted roots: the PEM file named by `sslrootcert`, or the system's store when it is absent
//! or `sslrootcert=system`.

use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the connection string asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode={other:?} is not supported; use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }

    /// The mode tokio-postgres negotiates with; verification is ours.
    fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// A connection string split into what tokio-postgres parses and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsTarget {
    /// The connection string without `sslmode` and `sslrootcert`.
    pub(crate) rest: String,
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<String>,
}

impl TlsTarget {
    /// Splits `url` (URL form `postgres://…?sslmode=…` or key-value form `host=… sslmode=…`).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let mut mode = None;
        let mut root_cert = None;
        let mut take = |key: &str, value: String| -> Result<bool, String> {
            match key {
                "sslmode" => mode = Some(SslMode::parse(&value)?),
                "sslrootcert" => root_cert = Some(value),
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(key, percent_decode(value))? {
                    kept.push(pair);
                }
            }
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        } else {
            // Key-value form, split on whitespace: a quoted value keeps its words, though runs
            // of spaces inside quotes collapse to one.
            let mut kept = Vec::new();
            for token in url.split_whitespace() {
                let (key, value) = token.split_once('=').unwrap_or((token, ""));
                let value = value.trim_matches('\'').to_owned();
                if !take(key.trim(), value)? {
                    kept.push(token);
                }
            }
            kept.join(" ")
        };
        Ok(Self {
            rest,
            mode: mode.unwrap_or(SslMode::Prefer),
            root_cert,
        })
    }

    /// The rustls client configuration for this mode.
    fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let verify = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => self.root_cert.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        };
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("TLS set-up: {e}"))?;
            if self.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        } else {
            Arc::new(EncryptOnly(provider))
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match self.root_cert.as_deref() {
            Some(path) if path != "system" => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read sslrootcert {path:?}: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("bad certificate in {path:?}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad certificate in {path:?}: {e}"))?;
                }
            }
            _ => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err(format!(
                "sslmode={:?} needs trusted root certificates and none were found; \
                 set sslrootcert=/path/to/ca.pem in the connection string",
                self.mode
            ));
        }
        Ok(roots)
    }
}

/// Opens one connection to `url`, honouring its `sslmode` and `sslrootcert`.
pub(crate) async fn connect(url: &str) -> ConnectionResult<AsyncPgConnection> {
    match client_config(url)? {
        (config, None) => finish(config.connect(tokio_postgres::NoTls).await).await,
        (config, Some(tls)) => finish(config.connect(tls).await).await,
    }
}

/// `url` as tokio-postgres' configuration, and the TLS its connections use (none for
/// `sslmode=disable`).
pub(crate) fn client_config(
    url: &str,
) -> ConnectionResult<(tokio_postgres::Config, Option<MakeRustlsConnect>)> {
    let target = TlsTarget::parse(url).map_err(ConnectionError::InvalidConnectionUrl)?;
    let mut config: tokio_postgres::Config = target
        .rest
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    config.ssl_mode(target.mode.wire());
    if target.mode == SslMode::Disable {
        return Ok((config, None));
    }
    let tls = MakeRustlsConnect::new(
        target
            .client_config()
            .map_err(ConnectionError::BadConnection)?,
    );
    Ok((config, Some(tls)))
}

async fn finish<S>(
    connected: Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, S>,
        ),
        tokio_postgres::Error,
    >,
) -> ConnectionResult<AsyncPgConnection>
where
    S: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    let (client, connection) =
        connected.map_err(|e| ConnectionError::BadConnection(with_sources(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// tokio-postgres puts the useful part ("invalid peer certificate: UnknownIssuer") in the
/// error's source; keep the whole chain.
pub(crate) fn with_sources(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `sslmode=prefer|require` without `sslrootcert`: encryption against passive eavesdropping,
/// any certificate accepted (libpq's behaviour). Handshake signatures are still checked, so
/// the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca` (or `require` with `sslrootcert`): the chain must lead to a trusted root;
/// the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `%XX` escapes in a URL query value (a certificate path may contain `/` written as `%2F`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
