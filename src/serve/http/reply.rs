//! The reply budget as one HTTP connection sees it, with the rules of
//! Thrift's ([`crate::serve::budget`]): a large reply takes room before its
//! answers are built, waits for it within the request's deadline, and
//! holds it until hyper has taken its last slice for the socket. Its
//! socket ([`super::gathered`]) gives the room up, closing the connection,
//! when the peer takes nothing for [`STALL_GRACE`] while others wait.
//!
//! The reply leaves in slices, so that hyper copies a slice at a time into
//! its write buffer (bounded per connection) instead of the whole reply.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::metrics::{Api, Metrics, ReplyBudgetEvent};
use crate::serve::budget::{Budget, Reservation, SMALL_REPLY, STALL_GRACE};

/// How much of a charged reply hyper is handed at a time.
const SLICE: usize = 16 * 1024;

/// One connection's view of the HTTP reply budget: cheap to clone, shared
/// by its requests and its socket.
#[derive(Clone)]
pub(super) struct ReplyRoom {
    budget: Budget,
    metrics: Arc<Metrics>,
    /// Whether a reply of this connection holds room now.
    holding: Arc<AtomicBool>,
}

impl ReplyRoom {
    pub(super) fn new(budget: Budget, metrics: Arc<Metrics>) -> ReplyRoom {
        ReplyRoom {
            budget,
            metrics,
            holding: Arc::default(),
        }
    }

    /// Room for a reply that may hold `cost` bytes while it is built,
    /// waiting for it until `deadline`; `None` if none came by then. A
    /// small reply takes no room and never waits.
    pub(super) async fn take(&self, cost: usize, deadline: Instant) -> Option<Charge> {
        let mut held = Reservation::default();
        if cost > SMALL_REPLY {
            match tokio::time::timeout_at(deadline, self.budget.grow(&mut held, cost)).await {
                Ok(false) => {}
                Ok(true) => self.metrics.reply_budget(Api::Http, ReplyBudgetEvent::Waited),
                Err(_) => {
                    self.metrics.reply_budget(Api::Http, ReplyBudgetEvent::Refused);
                    return None;
                }
            }
            self.holding.store(true, Ordering::Relaxed);
        }
        Some(Charge {
            held,
            holding: self.holding.clone(),
        })
    }

    /// Whether the connection's socket, its peer having taken nothing
    /// since `since`, should give its room up now: it holds room, has
    /// waited [`STALL_GRACE`], and others wait for room. Counted when so.
    pub(super) fn gives_way(&self, since: Instant) -> bool {
        let gives_way =
            self.holding.load(Ordering::Relaxed) && since.elapsed() >= STALL_GRACE && self.budget.contended();
        if gives_way {
            self.metrics.reply_budget(Api::Http, ReplyBudgetEvent::GaveWay);
        }
        gives_way
    }

    /// Whether other replies wait for room now.
    pub(super) fn contended(&self) -> bool {
        self.budget.contended()
    }

    /// Whether a reply of this connection holds room now.
    pub(super) fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }
}

/// The room one reply holds. Dropped while still holding (its connection
/// went away mid-reply), it gives the room back as abandoned.
pub(super) struct Charge {
    held: Reservation,
    holding: Arc<AtomicBool>,
}

impl Charge {
    /// The response body for the reply `bytes`, holding what covers them
    /// until hyper has taken the last slice.
    pub(super) fn into_body(mut self, bytes: Vec<u8>) -> Body {
        self.held.shrink_to(bytes.len());
        Body::new(Sliced {
            bytes: Bytes::from(bytes),
            charge: self,
        })
    }

    /// Whether the reply holds room: it is large.
    pub(super) fn holds_room(&self) -> bool {
        !self.held.is_empty()
    }

    fn release(&mut self) {
        self.held.release();
        self.holding.store(false, Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.holding.store(false, Ordering::Relaxed);
    }
}

/// A reply's bytes, handed out [`SLICE`] at a time.
struct Sliced {
    bytes: Bytes,
    charge: Charge,
}

impl hyper::body::Body for Sliced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.bytes.is_empty() {
            return Poll::Ready(None);
        }
        let slice = this.bytes.split_to(this.bytes.len().min(SLICE));
        if this.bytes.is_empty() {
            // The last slice: what is left is bounded by hyper's buffer.
            this.charge.release();
        }
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.len() as u64)
    }
}
