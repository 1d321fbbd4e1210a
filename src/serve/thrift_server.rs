//! The Thrift TCP server: connections admitted by the shared accept loop
//! ([`crate::serve::accept`]), one task per connection reading requests in
//! order, and a graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use thrift::ApplicationErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{debug, instrument, warn};

use crate::config::{Requests, Thrift};
use crate::metrics::{Api, CloseReason, Rejection, ReplyBudgetEvent};
use crate::serve::accept::{Acceptor, Admitted};
use crate::serve::budget::{self, reply_cost, Budget, Order, Reservation, SMALL_REPLY, STALL_GRACE};
use crate::serve::throttle::Throttle;
use crate::thrift::codec::{
    self, exception, BadArgs, Framing, MessageCheck, MessageSpan, MessageType, Method, Request, Wire, WireError,
};
use crate::thrift::Handler;

/// How long a message that holds request budget may receive nothing
/// before it gives way to connections waiting for that budget. Longer than
/// the reply rule's grace: TCP retransmission alone can pause a healthy
/// sender for a few hundred milliseconds.
const SENDER_STALL_GRACE: Duration = Duration::from_secs(1);

/// A frame's first bytes that are read for whether it will be refused.
const EARLY_PREFIX: usize = 4096;

/// Bytes a connection may read beyond the message it is decoding: a
/// pipelining client waits in TCP flow control, not in our heap.
pub const READ_AHEAD: usize = 16 * 1024;

/// Room a message's first read makes when the connection holds no buffer:
/// enough for a small request, as most are, and an allocation the
/// allocator keeps at hand (glibc's thread cache stops at 1,032 bytes),
/// where a fresh 16 KB buffer for every call cost more than its lookup. A
/// larger message's header then says how much more room to make.
const FIRST_READ: usize = 1024;

/// Serves `listener` until `shutdown` completes, then stops accepting,
/// lets in-flight requests finish (up to `requests.shutdown_timeout`),
/// aborts what is still running, and returns once every connection task
/// has ended.
pub async fn run(listener: TcpListener, handler: Handler, limits: Thrift, requests: Requests, shutdown: impl Future) {
    let stop = Stop::default();
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = Arc::new(limits);
    let shared = ConnectionContext {
        handler,
        limits: limits.clone(),
        max_batch: requests.max_batch,
        stop: stop.clone(),
        requests: Budget::new(limits.max_buffered_bytes, Order::SmallestFirst),
        replies: Budget::new(limits.max_reply_bytes, Order::Arrival),
        warnings: Arc::new(Throttle::default()),
    };
    let metrics = shared.handler.metrics().clone();
    let acceptor = Acceptor::new(
        listener,
        Api::Thrift,
        limits.max_connections,
        metrics,
        shared.warnings.clone(),
    );
    let trimmer = tokio::spawn(budget::return_freed_memory(
        vec![shared.requests.clone(), shared.replies.clone()],
        acceptor.open_connections(),
    ));

    tokio::select! {
        () = accept_loop(&acceptor, &shared, &abort, &tracker) => {}
        _ = shutdown => {}
    }
    drop(acceptor);
    stop.begin();
    tracker.close();
    if tokio::time::timeout(requests.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tracker.len(),
            "shutdown timeout reached; aborting the requests still running"
        );
        abort.cancel();
        tracker.wait().await;
    }
    trimmer.abort();
}

/// What every connection shares.
#[derive(Clone)]
struct ConnectionContext {
    handler: Handler,
    limits: Arc<Thrift>,
    /// Most addresses in one request; a longer list is refused while it is
    /// decoded, before anything is allocated for it.
    max_batch: usize,
    stop: Stop,
    /// Request bytes in buffers beyond the read-ahead.
    requests: Budget,
    /// Large replies, and replies stalled on their peer.
    replies: Budget,
    /// Warnings about peers, one line per reason per interval.
    warnings: Arc<Throttle>,
}

/// Shutdown as the connections see it: the token their waits select on,
/// and a flag for the check every message makes before it starts
/// (`CancellationToken::is_cancelled` takes the token tree's mutex, which
/// every connection shares).
#[derive(Clone, Default)]
struct Stop {
    token: CancellationToken,
    begun: Arc<AtomicBool>,
}

impl Stop {
    fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

async fn accept_loop(
    acceptor: &Acceptor,
    shared: &ConnectionContext,
    abort: &CancellationToken,
    tracker: &TaskTracker,
) {
    loop {
        let (stream, peer, admitted) = acceptor.accept().await;
        let connection = Connection {
            stream,
            peer,
            shared: shared.clone(),
            buf: BytesMut::new(),
            request_held: Reservation::default(),
            reply_held: Reservation::default(),
            message_started: None,
            early_checked: false,
            deadline: Deadline::default(),
            _admitted: admitted,
        };
        let abort = abort.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = connection.serve() => {}
                () = abort.cancelled() => {}
            }
        });
    }
}

/// One client connection.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    shared: ConnectionContext,
    /// Bytes received but not yet answered: at most the message being
    /// decoded and [`READ_AHEAD`] more.
    buf: BytesMut,
    /// Request budget held for `buf` beyond the read-ahead.
    request_held: Reservation,
    /// Reply budget held for the request being answered.
    reply_held: Reservation,
    /// When the first byte of the message being received arrived; `None`
    /// between messages.
    message_started: Option<Instant>,
    /// Whether the message being received was read for an early refusal.
    early_checked: bool,
    /// The timer of the idle and read timeouts.
    deadline: Deadline,
    /// Its place under the connection cap, until it ends.
    _admitted: Admitted,
}

/// A connection's one timer for its idle and read timeouts, moved only
/// when it must fire sooner than it is set to: between calls the deadline
/// only grows later, so it stays registered instead of being registered and
/// removed on every read (3% of a single call's CPU). When it fires before
/// the deadline waited for, it is set again.
#[derive(Default)]
struct Deadline(Option<Pin<Box<Sleep>>>);

impl Deadline {
    /// Completes once `at` has passed.
    async fn until(&mut self, at: Instant) {
        let sleep = self.0.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        loop {
            sleep.as_mut().await;
            if Instant::now() >= at {
                return;
            }
            sleep.as_mut().reset(at);
        }
    }
}

/// Whether a message's reply got its room in the reply budget.
enum Room {
    Made,
    /// None came within this long.
    Refused(Duration),
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("peer closed the connection")]
    Eof,
    #[error("server is shutting down")]
    Shutdown,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("a message took longer than {0:?} to arrive")]
    SlowMessage(Duration),
    #[error("no message for {0:?}")]
    Idle(Duration),
    #[error("the peer did not read a reply within {0:?}")]
    SlowReader(Duration),
    #[error("the peer stopped reading, and other connections wait for the {0} bytes of reply budget it holds")]
    GaveWay(usize),
    #[error("the peer stopped sending for {0:?}, and other connections wait for the request budget its message holds")]
    StalledSender(Duration),
    #[error("an unframed message does not walk; the stream cannot be resynchronised")]
    Unsynchronised,
}

impl Closed {
    /// How the metrics count a connection closed for its input.
    fn rejection(&self) -> Option<Rejection> {
        match self {
            Closed::Wire(WireError::FrameTooLarge { .. }) => Some(Rejection::Oversized),
            Closed::Wire(_) | Closed::Unsynchronised => Some(Rejection::Garbage),
            Closed::SlowMessage(_) | Closed::SlowReader(_) | Closed::GaveWay(_) | Closed::StalledSender(_) => {
                Some(Rejection::Timeout)
            }
            Closed::Eof | Closed::Shutdown | Closed::Io(_) | Closed::Idle(_) => None,
        }
    }

    /// Why, as the metrics and the log's rate limit name it.
    fn reason(&self) -> CloseReason {
        match self {
            Closed::Eof => CloseReason::PeerClosed,
            Closed::Shutdown => CloseReason::Shutdown,
            Closed::Io(_) => CloseReason::IoError,
            Closed::Wire(WireError::FrameTooLarge { .. }) => CloseReason::Oversized,
            Closed::Wire(WireError::NotThrift(_)) => CloseReason::NotThrift,
            Closed::Wire(_) => CloseReason::Malformed,
            Closed::SlowMessage(_) => CloseReason::SlowMessage,
            Closed::Idle(_) => CloseReason::Idle,
            Closed::SlowReader(_) => CloseReason::SlowReader,
            Closed::GaveWay(_) => CloseReason::GaveWayReply,
            Closed::StalledSender(_) => CloseReason::GaveWayRequest,
            Closed::Unsynchronised => CloseReason::Unsynchronised,
        }
    }
}

impl Connection {
    #[instrument(level = "debug", name = "connection", skip_all, fields(peer = %self.peer))]
    async fn serve(mut self) {
        debug!("connection opened");
        let Err(ended) = self.serve_requests().await;
        let metrics = self.shared.handler.metrics();
        metrics.connection_closed(Api::Thrift, ended.reason());
        match ended {
            Closed::Eof | Closed::Shutdown => debug!("connection closed"),
            Closed::Io(err) => debug!(error = %err, "connection failed"),
            err @ Closed::Idle(_) => debug!(error = %err, "closing idle connection"),
            err => {
                if let Some(rejection) = err.rejection() {
                    metrics.rejected(Api::Thrift, rejection);
                }
                if let Some(left_out) = self.shared.warnings.admit(err.reason().as_str()) {
                    warn!(peer = %self.peer, error = %err, left_out, "closing connection");
                }
            }
        }
    }

    /// Serves requests until the connection ends, and says why it did.
    async fn serve_requests(&mut self) -> Result<std::convert::Infallible, Closed> {
        let limits = self.shared.limits.clone();
        let wire = loop {
            match codec::detect(&self.buf, limits.max_frame) {
                Err(WireError::Incomplete) => self.read_more(1).await?,
                detected => break detected?,
            }
        };
        debug!(?wire, "detected wire format");
        let mut check = MessageCheck::new(wire, limits.max_frame);
        loop {
            let found = match check.check(&self.buf) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    if !self.refused_early(wire, &mut check).await? {
                        self.read_more(check.wanted(&self.buf)).await?;
                    }
                    continue;
                }
                Err(WireError::Malformed(why)) if wire.framing == Framing::Buffered => {
                    // The message's end cannot be found: tell the peer why
                    // if its header decodes, then close.
                    if let Ok(header) = codec::decode_header(&self.buf, wire.protocol) {
                        let call = Err(BadArgs::Malformed(why));
                        self.answer(wire, Request::new(header, call)).await?;
                    }
                    return Err(Closed::Unsynchronised);
                }
                Err(err) => return Err(err.into()),
            };
            let room = self.make_room_for_reply(wire, &found).await?;
            // Requests already buffered are not started once shutdown has begun.
            if self.shared.stop.has_begun() {
                return Err(Closed::Shutdown);
            }
            let message = &self.buf[found.body..found.end];
            match room {
                Room::Made => {
                    let request = codec::decode(message, wire.protocol, self.shared.max_batch)?;
                    self.answer(wire, request).await?;
                }
                Room::Refused(waited) => {
                    let header = codec::decode_header(message, wire.protocol)?;
                    self.refuse_for_want_of_room(wire, header, waited).await?;
                }
            }
            self.buf.advance(found.end);
            self.message_done();
        }
    }

    /// Waits for room in the reply budget for answering the message
    /// `found`, unless its reply will be small, for at most the write
    /// timeout: the time a reply may take to leave.
    async fn make_room_for_reply(&mut self, wire: Wire, found: &MessageSpan) -> Result<Room, Closed> {
        let message = &self.buf[found.body..found.end];
        let cost = codec::announced_batch(message, wire.protocol, message.len())
            .filter(|&n| n <= self.shared.max_batch)
            .map_or(0, |n| reply_cost(n, message.len()));
        if cost <= SMALL_REPLY {
            return Ok(Room::Made);
        }
        let stop = self.shared.stop.clone();
        let limit = self.shared.limits.write_timeout;
        let metrics = self.shared.handler.metrics();
        tokio::select! {
            biased;
            () = stop.cancelled() => Err(Closed::Shutdown),
            waited = self.shared.replies.grow(&mut self.reply_held, cost) => {
                if waited {
                    metrics.reply_budget(Api::Thrift, ReplyBudgetEvent::Waited);
                }
                Ok(Room::Made)
            }
            () = tokio::time::sleep(limit) => {
                metrics.reply_budget(Api::Thrift, ReplyBudgetEvent::Refused);
                Ok(Room::Refused(limit))
            }
        }
    }

    /// Tells the caller of a message that no reply room came within
    /// `waited`: a `TApplicationException`, so that it retries elsewhere.
    async fn refuse_for_want_of_room(
        &mut self,
        wire: Wire,
        header: codec::Header,
        waited: Duration,
    ) -> Result<(), Closed> {
        let (name, message_type, seq) = header;
        let metrics = self.shared.handler.metrics();
        metrics.rejected(Api::Thrift, Rejection::Overloaded);
        let method = Method::parse(&name).map_or("unknown", Method::name);
        metrics.request(Api::Thrift, method, "exception", waited);
        if MessageType::from(message_type) == MessageType::Oneway {
            return Ok(());
        }
        let message = format!("the server had no room for this reply within {waited:?}; retry shortly");
        let bytes = codec::encode(
            wire,
            &name,
            seq,
            &exception(ApplicationErrorKind::InternalError, message),
        );
        self.write_reply(&bytes).await
    }

    /// Readies the buffer for the next message.
    fn message_done(&mut self) {
        if self.buf.is_empty() {
            // Hold no memory or budget while idle.
            self.buf = BytesMut::new();
            self.request_held.release();
        }
        // Pipelined bytes already here start the next message's clock.
        self.message_started = (!self.buf.is_empty()).then(Instant::now);
        self.early_checked = false;
    }

    /// Answers a message whose first bytes show that it will be refused
    /// (its address list is over the batch limit) at once, then reads the
    /// rest of it and drops it as it arrives: such a message is never held.
    /// Returns whether it did.
    async fn refused_early(&mut self, wire: Wire, check: &mut MessageCheck) -> Result<bool, Closed> {
        if self.early_checked {
            return Ok(false);
        }
        let (body, size) = match check.frame_so_far(&self.buf) {
            Some(framed) => framed,
            None if wire.framing == Framing::Buffered => (&self.buf[..], self.shared.limits.max_frame),
            None => return Ok(false),
        };
        // Read once the prefix is whole; before that, at most once per read.
        self.early_checked = body.len() >= EARLY_PREFIX;
        let prefix = &body[..body.len().min(EARLY_PREFIX)];
        let Some(request) = codec::refuse_early(prefix, wire.protocol, size, self.shared.max_batch) else {
            return Ok(false);
        };
        self.answer(wire, request).await?;
        match wire.framing {
            Framing::Framed => {
                let left = 4 + size - self.buf.len();
                self.buf.clear();
                self.request_held.release();
                self.discard(left).await?;
            }
            Framing::Buffered => self.walk_past(check).await?,
        }
        self.message_done();
        Ok(true)
    }

    /// Reads the rest of an unframed message, dropping each part once the
    /// walk has passed it.
    async fn walk_past(&mut self, check: &mut MessageCheck) -> Result<(), Closed> {
        loop {
            match check.check(&self.buf) {
                Ok(Some(found)) => {
                    self.buf.advance(found.end);
                    return Ok(());
                }
                Ok(None) => {
                    let walked = check.forget();
                    self.buf.advance(walked);
                    self.read_more(1).await?;
                }
                Err(WireError::Malformed(_)) => return Err(Closed::Unsynchronised),
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Reads `left` bytes and drops them, within what is left of the
    /// message's read timeout.
    async fn discard(&mut self, mut left: usize) -> Result<(), Closed> {
        let read_timeout = self.shared.limits.read_timeout;
        let deadline = self.message_started.unwrap_or_else(Instant::now) + read_timeout;
        let stop = self.shared.stop.clone();
        while left > 0 {
            self.buf.clear();
            self.buf.reserve(READ_AHEAD);
            let mut limited = (&mut self.buf).limit(left.min(READ_AHEAD));
            let n = tokio::select! {
                biased;
                () = stop.cancelled() => return Err(Closed::Shutdown),
                n = self.stream.read_buf(&mut limited) => n?,
                () = tokio::time::sleep_until(deadline) => return Err(Closed::SlowMessage(read_timeout)),
            };
            if n == 0 {
                return Err(Closed::Eof);
            }
            left -= n;
        }
        self.buf.clear();
        Ok(())
    }

    /// Runs `request` and writes its reply, if it has one. The request and
    /// its answers are dropped once encoded: a slow reader holds only the
    /// reply's bytes.
    async fn answer(&mut self, wire: Wire, request: Request) -> Result<(), Closed> {
        let Some(reply) = self.shared.handler.respond(&request).await else {
            return Ok(());
        };
        let bytes = codec::encode(wire, &request.name, request.seq, &reply);
        drop(reply);
        drop(request);
        // What the reply holds now is its bytes.
        self.reply_held.shrink_to(bytes.len());
        self.write_reply(&bytes).await?;
        self.reply_held.release();
        Ok(())
    }

    /// Writes `bytes`, closing the connection when the peer stops reading:
    /// after `--write-timeout`, or, for a reply that holds reply budget,
    /// as soon as it has made no progress for [`STALL_GRACE`] while other
    /// connections wait for that budget. Peers that do not read cannot
    /// keep memory from those that do.
    async fn write_reply(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let write_timeout = self.shared.limits.write_timeout;
        let holds_budget = !self.reply_held.is_empty();
        let started = Instant::now();
        let mut next_check = started + STALL_GRACE;
        let (mut written, mut written_at_check) = (0, 0);
        while written < bytes.len() {
            // The timers are made and polled only when the write must wait:
            // a reply that leaves at once touches no timer.
            tokio::select! {
                biased;
                n = self.stream.write(&bytes[written..]) => written += n?,
                () = async { tokio::time::sleep_until(next_check).await }, if holds_budget => {
                    if written == written_at_check && self.shared.replies.contended() {
                        self.shared.handler.metrics().reply_budget(Api::Thrift, ReplyBudgetEvent::GaveWay);
                        return Err(Closed::GaveWay(bytes.len()));
                    }
                    written_at_check = written;
                    next_check += STALL_GRACE;
                }
                () = async { tokio::time::sleep_until(started + write_timeout).await } => {
                    return Err(Closed::SlowReader(write_timeout));
                }
            }
        }
        Ok(())
    }

    /// Reads at least one byte, and at most `want` (the bytes the message
    /// still needs, as far as is known) plus [`READ_AHEAD`]. A message that
    /// fits in the read-ahead never waits for budget; a larger one takes
    /// budget for whatever the buffer will hold beyond the read-ahead
    /// first, and gives it up, closing the connection, if its peer then
    /// sends nothing for [`SENDER_STALL_GRACE`] while others wait for it.
    /// Memory grows only with bytes that actually arrive, never with a
    /// length the peer merely announced.
    async fn read_more(&mut self, want: usize) -> Result<(), Closed> {
        let (read_timeout, idle_timeout) = (self.shared.limits.read_timeout, self.shared.limits.idle_timeout);
        // Between messages a client may idle up to the idle timeout; a
        // message, once started, must arrive whole within the read timeout.
        let deadline = match self.message_started {
            Some(started) => Some((started + read_timeout, false)),
            None if idle_timeout.is_zero() => None,
            None => Some((Instant::now() + idle_timeout, true)),
        };
        let timer = &mut self.deadline;
        let expired = async {
            match deadline {
                Some((at, idle)) => {
                    timer.until(at).await;
                    idle
                }
                None => std::future::pending().await,
            }
        };
        let timed_out = |idle: bool| {
            if idle {
                Closed::Idle(idle_timeout)
            } else {
                Closed::SlowMessage(read_timeout)
            }
        };
        tokio::pin!(expired);

        let stop = &self.shared.stop;
        let needed = self.buf.len().saturating_add(want.max(1));
        let room = if needed <= READ_AHEAD {
            READ_AHEAD - self.buf.len()
        } else {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Err(Closed::Shutdown),
                _ = self.shared.requests.grow(&mut self.request_held, needed) => {}
                idle = &mut expired => return Err(timed_out(idle)),
            }
            let room = want.saturating_add(READ_AHEAD);
            if want > READ_AHEAD && self.buf.capacity() < self.buf.len() + room {
                // A frame of known size: room for exactly it, so that the
                // buffer is what the budget was charged for, not twice that
                // as amortised growth would make it.
                let mut exact = BytesMut::with_capacity(self.buf.len() + room);
                exact.extend_from_slice(&self.buf);
                self.buf = exact;
            }
            room
        };
        let first = if self.buf.capacity() == 0 {
            FIRST_READ
        } else {
            READ_AHEAD
        };
        self.buf.reserve(room.min(first));
        let holds_budget = !self.request_held.is_empty();
        let mut next_check = Instant::now() + SENDER_STALL_GRACE;
        let mut limited = (&mut self.buf).limit(room);
        // Bytes already here are read before shutdown is asked after (which
        // takes locks); `serve_requests` asks before it starts each message.
        let n = loop {
            tokio::select! {
                biased;
                n = self.stream.read_buf(&mut limited) => break n?,
                () = stop.cancelled() => return Err(Closed::Shutdown),
                idle = &mut expired => return Err(timed_out(idle)),
                () = async { tokio::time::sleep_until(next_check).await }, if holds_budget => {
                    if self.shared.requests.contended() {
                        return Err(Closed::StalledSender(SENDER_STALL_GRACE));
                    }
                    next_check += SENDER_STALL_GRACE;
                }
            }
        };
        if n == 0 {
            return Err(Closed::Eof);
        }
        self.message_started.get_or_insert_with(Instant::now);
        // Whatever else is already waiting, up to the same bound, so that a
        // large message is decoded once it has arrived, not after every
        // segment. A read that left room in the buffer emptied the socket.
        let mut left = room - n;
        while left > 0 && self.buf.len() == self.buf.capacity() {
            self.buf.reserve(left.min(READ_AHEAD));
            match self.stream.try_read_buf(&mut (&mut self.buf).limit(left)) {
                Ok(0) => break, // EOF: the next read reports it
                Ok(got) => left -= got,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
