//! How an [`UnnamedConnection`](super::UnnamedConnection) cancels a statement past its
//! timeout: a cancel request (a connection of its own, with the key the server — or the
//! pooler — gave the session), with the TLS the session uses, except under `sslmode=prefer`
//! where it goes unencrypted as libpq (before 17) sends it.
//!
//! tokio-postgres half-closes the socket as soon as the request is written; PgBouncer 1.18
//! then drops the request unread ("client unexpected eof"). So the socket here waits, when
//! asked to shut down, for the other side to close it (PgBouncer does once it has forwarded
//! the request; PostgreSQL at once).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where and how a session's cancel requests go.
#[derive(Clone)]
pub(crate) struct Canceller {
    /// The first TCP host and port of the URL (`None`: a Unix socket; tokio-postgres' own
    /// cancel is used).
    address: Option<(String, u16)>,
    /// TLS for the request (`None`: plaintext).
    tls: Option<MakeRustlsConnect>,
}

impl Canceller {
    /// For sessions opened with `config` and `tls`.
    pub(crate) fn new(config: &Config, tls: Option<MakeRustlsConnect>) -> Self {
        let address = config
            .get_hosts()
            .iter()
            .enumerate()
            .find_map(|(i, host)| match host {
                Host::Tcp(name) => Some((
                    name.clone(),
                    config
                        .get_ports()
                        .get(i)
                        .or(config.get_ports().first())
                        .copied()
                        .unwrap_or(5432),
                )),
                #[cfg(unix)]
                Host::Unix(_) => None,
            });
        let prefer = config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer;
        Self {
            address,
            tls: if prefer { None } else { tls },
        }
    }

    /// Asks the server (or the pooler in front of it) to cancel what `token`'s session runs;
    /// the error says why the request could not be sent.
    pub(crate) async fn cancel(&self, token: &CancelToken) -> Result<(), String> {
        let Some((host, port)) = &self.address else {
            return token.cancel_query(NoTls).await.map_err(|e| e.to_string());
        };
        let socket = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| e.to_string())?;
        let socket = UntilClosed(socket);
        let sent = match &self.tls {
            None => token.cancel_query_raw(socket, NoTls).await,
            Some(tls) => {
                let mut tls = tls.clone();
                let connect = <MakeRustlsConnect as MakeTlsConnect<UntilClosed>>::make_tls_connect(
                    &mut tls, host,
                )
                .map_err(|e| e.to_string())?;
                token.cancel_query_raw(socket, connect).await
            }
        };
        sent.map_err(|e| e.to_string())
    }
}

/// A socket whose shutdown waits until the other side closes it.
pub(crate) struct UntilClosed(TcpStream);

impl AsyncRead for UntilClosed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UntilClosed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                // Reset by the other side: closed too.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
