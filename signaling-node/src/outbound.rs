//! The bounded outbound queue of a browser WebSocket: a client that stops reading is cut
//! off, not buffered for.
//!
//! Why it is needed: actix-http polls a response body (here the session actor's frames) only
//! while its write buffer has room. Once a client stops reading, the kernel's buffers fill,
//! then actix's; from then on the session actor is not even polled, and every room event for
//! it piles up in its mailbox without bound. So the actor runs in a task of its own (the
//! *pump*), which moves each encoded frame into a queue that counts its bytes; the HTTP body
//! only drains that queue. Over the limit the queue is dropped, a 1013 close (try again
//! later: the client may reconnect and resume) is put in its place, the actor is stopped, and if the socket has not taken the close within
//! [`CLOSE_GRACE`] it is cut (reset): nothing of the connection is left waiting on a reader
//! that does not read. The same cut ends any connection whose session has stopped but whose
//! socket stays blocked (a heartbeat timeout on a client that is gone without a FIN).

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, Parser};
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;

use crate::metrics;

/// How long a closing connection may take to send its last frames before its socket is cut.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A second descriptor of a connection's socket (a `dup`), taken when the connection is
/// accepted: the server can then cut a connection whose writer is blocked, which actix
/// offers no way to do. Owning the descriptor means it cannot be reused by another
/// connection while we hold it.
#[derive(Debug)]
pub struct ConnectionSocket(socket2::Socket);

impl ConnectionSocket {
    /// For `HttpServer::on_connect`: the connection is a `TcpStream`, or one inside TLS.
    /// Also fixes its kernel send buffer at `send_buffer` bytes (0: the kernel's default).
    /// Left alone, Linux grows it up to `tcp_wmem`'s maximum (4 MiB here) for a client that
    /// does not read: kernel memory held for nobody.
    pub fn of_connection(conn: &dyn Any, send_buffer: usize) -> Option<ConnectionSocket> {
        use actix_web::rt::net::TcpStream;
        let tcp = if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
            tcp
        } else {
            let tls =
                conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()?;
            tls.get_ref().0
        };
        let socket = socket2::SockRef::from(tcp);
        if send_buffer > 0 {
            if let Err(e) = socket.set_send_buffer_size(send_buffer) {
                tracing::warn!(error = %e, "cannot bound the connection's send buffer");
            }
        }
        match socket.try_clone() {
            Ok(socket) => Some(ConnectionSocket(socket)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hold the connection's socket");
                None
            }
        }
    }

    /// Cut the connection: discard what is unsent (a reset, not a FIN behind the unread
    /// data) and wake actix's blocked writer, which then drops the connection.
    pub fn cut(&self) {
        let _ = self.0.set_linger(Some(Duration::ZERO));
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Frames between the pump (the session's side) and the HTTP body (the socket's side).
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// No more frames will come: the body ends once `chunks` is empty.
    finished: bool,
    /// actix-http dropped the body: the connection is gone.
    body_gone: bool,
    /// The body waits for frames.
    body_waker: Option<Waker>,
    /// The pump waits for the session's frames.
    pump_waker: Option<Waker>,
}

impl Queue {
    fn wake_body(&mut self) {
        if let Some(w) = self.body_waker.take() {
            w.wake();
        }
    }
}

/// The response body of a WebSocket whose session frames come from `frames` (the actor's
/// context stream), queued at most `limit` bytes. `socket` is what [`CLOSE_GRACE`] cuts.
pub fn bounded<S>(
    frames: S,
    limit: usize,
    socket: Option<std::sync::Arc<ConnectionSocket>>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let queue = Rc::new(RefCell::new(Queue::default()));
    actix::spawn(pump(Box::pin(frames), queue.clone(), limit, socket));
    OutboundBody(queue)
}

/// Run the session (by polling its frames) until it stops, the connection goes, or the
/// queue overflows; then make sure the connection ends.
async fn pump(
    mut frames: Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>,
    queue: Rc<RefCell<Queue>>,
    limit: usize,
    socket: Option<std::sync::Arc<ConnectionSocket>>,
) {
    let overflowed = poll_fn(|cx: &mut Context<'_>| loop {
        let mut q = queue.borrow_mut();
        if q.body_gone {
            return Poll::Ready(false);
        }
        q.pump_waker = Some(cx.waker().clone());
        drop(q);
        match frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let mut q = queue.borrow_mut();
                if q.bytes + chunk.len() > limit {
                    q.chunks.clear();
                    q.bytes = 0;
                    let mut close = BytesMut::new();
                    Parser::write_close(
                        &mut close,
                        Some(CloseReason {
                            code: CloseCode::Again,
                            description: Some(format!(
                                "outbound queue over {limit} bytes: the client is not reading"
                            )),
                        }),
                        false,
                    );
                    q.chunks.push_back(close.freeze());
                    q.finished = true;
                    q.wake_body();
                    return Poll::Ready(true);
                }
                q.bytes += chunk.len();
                q.chunks.push_back(chunk);
                q.wake_body();
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::info!(error = %e, "websocket output failed");
                return Poll::Ready(false);
            }
            Poll::Ready(None) => return Poll::Ready(false),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    // Dropping the frames stops the session actor (it leaves its room, which may take a
    // `resume` later) and frees its mailbox.
    drop(frames);
    {
        let mut q = queue.borrow_mut();
        q.finished = true;
        q.wake_body();
        if q.body_gone {
            return;
        }
    }
    if overflowed {
        metrics::SESSIONS_CLOSED
            .with_label_values(&["outbound_overflow"])
            .inc();
        tracing::info!(limit, "client not reading: outbound queue full, closing");
    }
    // The session has ended but the connection is still open: give its last frames (the
    // close) a moment, then cut it if its writer is still blocked.
    tokio::time::sleep(CLOSE_GRACE).await;
    if !queue.borrow().body_gone {
        if let Some(socket) = socket {
            tracing::info!("connection still blocked after its close: cutting it");
            socket.cut();
        }
    }
}

/// The HTTP side of the queue.
struct OutboundBody(Rc<RefCell<Queue>>);

impl Stream for OutboundBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = self.0.borrow_mut();
        if let Some(chunk) = q.chunks.pop_front() {
            q.bytes = q.bytes.saturating_sub(chunk.len());
            return Poll::Ready(Some(Ok(chunk)));
        }
        if q.finished {
            return Poll::Ready(None);
        }
        q.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut q = self.0.borrow_mut();
        q.body_gone = true;
        q.chunks.clear();
        if let Some(w) = q.pump_waker.take() {
            w.wake();
        }
    }
}
