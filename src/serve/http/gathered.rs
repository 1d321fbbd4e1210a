//! A connection's socket that gathers replies: hyper flushes after every
//! reply, so the replies to pipelined requests would each take a write of
//! their own. Here a flush only marks the replies ready; they leave in one
//! write before the socket is next read (hyper reads when it has answered
//! every request it holds), when [`MAX_GATHERED`] bytes wait, or at
//! shutdown. A lone request's reply still leaves at once, before the read
//! that waits for the next request. hyper's own `pipeline_flush` was
//! measured and not used: it keeps reading and answering while the client
//! reads nothing, holding gigabytes for a thousand such clients.
//!
//! A client that stops taking its replies holds its connection for at
//! most `stall_limit` (the HTTP timeout) without progress, and for at most
//! [`STALL_GRACE`] while its reply holds room in the reply budget that
//! others wait for: then the socket fails with `TimedOut` and the
//! connection closes as a slow reader.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::reply::ReplyRoom;
use crate::serve::budget::STALL_GRACE;

/// The most reply bytes held back: a write's worth, so that a client that
/// pipelines and never reads holds no more here than in its socket buffer.
pub const MAX_GATHERED: usize = 16 * 1024;

pub struct Gathered {
    stream: TcpStream,
    /// Replies written and not yet sent; `sent` bytes of them are gone.
    out: Vec<u8>,
    sent: usize,
    stall: Stall,
}

impl Gathered {
    pub(super) fn new(stream: TcpStream, stall_limit: Duration, room: ReplyRoom) -> Gathered {
        Gathered {
            stream,
            out: Vec::new(),
            sent: 0,
            stall: Stall {
                limit: stall_limit,
                room,
                waiting: None,
            },
        }
    }

    /// Sends every reply held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let written = Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]);
            let n = ready!(self.stall.check(cx, written))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// How long the socket's writes have waited for the client.
struct Stall {
    limit: Duration,
    room: ReplyRoom,
    /// While a write waits for the client to take bytes: since when, and
    /// the timer for the next look.
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Stall {
    /// Passes a socket write's result on; one that has waited `limit` in
    /// all without the client taking a byte, or that gives its reply room
    /// up, becomes `TimedOut`.
    fn check<T>(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.waiting = None;
            return written;
        }
        let (since, timer) = self.waiting.get_or_insert_with(|| {
            let now = Instant::now();
            (now, Box::pin(tokio::time::sleep_until(now)))
        });
        let since = *since;
        loop {
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if now >= since + self.limit {
                let limit = self.limit;
                return Poll::Ready(Err(stalled(format!("the client took no reply bytes for {limit:?}"))));
            }
            if self.room.gives_way(since) {
                return Poll::Ready(Err(stalled(format!(
                    "the client took no reply bytes for {STALL_GRACE:?} while other replies waited for its room"
                ))));
            }
            // Holding room, look again after a grace; else at the limit.
            let next = match self.room.holding() {
                true => now + STALL_GRACE,
                false => since + self.limit,
            };
            timer.as_mut().reset(next.min(since + self.limit));
        }
    }
}

fn stalled(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl AsyncRead for Gathered {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + bytes.len() > MAX_GATHERED {
            ready!(this.poll_send(cx))?;
            if bytes.len() > MAX_GATHERED {
                let written = Pin::new(&mut this.stream).poll_write(cx, bytes);
                return this.stall.check(cx, written);
            }
        }
        this.out.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    /// Held until the next read: see the module's comment.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl Drop for Gathered {
    /// A connection hyper drops without a shutdown (after an error) still
    /// sends what it answered, if the socket takes it now.
    fn drop(&mut self) {
        if self.sent < self.out.len() {
            let _ = self.stream.try_write(&self.out[self.sent..]);
        }
    }
}

/// Whether hyper ended a connection because its client stopped taking
/// replies (the `TimedOut` above).
pub fn is_stalled(err: &hyper::Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<io::Error>())
        .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
}
