//! The socket side of an [`UnnamedConnection`](super::UnnamedConnection), polled by the task
//! that runs the statement instead of a task of its own.
//!
//! tokio-postgres hands back, beside its `Client`, a `Connection` future that does the socket's
//! reading and writing; spawned (as diesel-async does), every statement costs two wake-ups
//! across threads — request to the driver task, answer back. Measured here with a prepared
//! `SELECT 1` on a multi-threaded runtime: 5,944 statements/s with the driver spawned, 15,100
//! on one thread. Polled together with the statement, the answer is read by the task waiting
//! for it. Between statements nothing polls it: what the server sends meanwhile (a notice, its
//! goodbye) waits in the socket, and [`Driver::is_closed`] looks at it without blocking when
//! the pool checks the connection out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::task::noop_waker_ref;

/// tokio-postgres' `Connection`, whatever its TLS stream.
type Socket = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// See the module docs.
pub(crate) struct Driver(Option<Socket>);

impl Driver {
    pub(crate) fn new<F>(connection: F) -> Self
    where
        F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        Self(Some(Box::pin(connection)))
    }

    /// True once the socket closed (dropped then: the client's requests fail at once).
    pub(crate) fn is_closed(&mut self) -> bool {
        let mut context = Context::from_waker(noop_waker_ref());
        self.poll_socket(&mut context);
        self.0.is_none()
    }

    /// Runs `work` (a statement on this connection's client) while polling the socket.
    pub(crate) async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|context| {
            // `work` first: a request it queues goes out in this turn; then `work` again, for
            // an answer the socket just read.
            if let Poll::Ready(output) = work.as_mut().poll(context) {
                return Poll::Ready(output);
            }
            self.poll_socket(context);
            work.as_mut().poll(context)
        })
        .await
    }

    fn poll_socket(&mut self, context: &mut Context<'_>) {
        if let Some(socket) = self.0.as_mut() {
            if let Poll::Ready(result) = socket.as_mut().poll(context) {
                if let Err(error) = result {
                    tracing::debug!(%error, "an unnamed connection's socket closed");
                }
                // Dropped: every request waiting for an answer fails instead of hanging.
                self.0 = None;
            }
        }
    }
}
