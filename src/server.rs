//! The Thrift TCP server: an accept loop that refuses connections over the
//! cap at once, one task per connection reading requests in order, and a
//! graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, instrument, warn};

use crate::metrics::{Api, OpenConnection, Rejection};
use crate::thrift::codec::{self, Framing, Wire, WireError};
use crate::thrift::Handler;

/// At most one warning per this long that the connection cap was reached.
pub const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The Thrift spec's default MaxFrameSize.
pub const DEFAULT_MAX_FRAME: usize = 16_384_000;

/// Limits that protect the server from its peers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted, framed or not.
    pub max_frame: usize,
    pub max_connections: usize,
    /// How long a message may take to arrive once its first byte has; a
    /// connection idle between messages may stay open indefinitely.
    pub read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 4096,
            read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting,
/// lets in-flight requests finish (up to `limits.shutdown_timeout`) and
/// returns.
pub async fn run(listener: TcpListener, handler: Handler, limits: Limits, shutdown: impl Future) {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);

    tokio::select! {
        () = accept_loop(&listener, &handler, &limits, &permits, &stop, &tracker) => {}
        _ = shutdown => {}
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tracker.len(),
            "shutdown timeout reached; dropping unfinished connections"
        );
    }
}

async fn accept_loop(
    listener: &TcpListener,
    handler: &Handler,
    limits: &Arc<Limits>,
    permits: &Arc<Semaphore>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let metrics = handler.metrics();
    let mut cap = CapWarning::new(Api::Thrift, limits.max_connections);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually running out of file descriptors: back off, keep serving.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap, close at once: a client (or its balancer) fails
        // over now instead of waiting in the kernel's backlog.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connection_refused(Api::Thrift);
            cap.reached();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream,
            peer,
            handler: handler.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            buf: Vec::new(),
            message_started: None,
            _open: metrics.connection_opened(Api::Thrift),
        };
        tracker.spawn(async move {
            connection.serve().await;
            drop(permit);
        });
    }
}

/// A rate-limited warning that connections are being refused at the cap.
pub struct CapWarning {
    api: Api,
    cap: usize,
    last: Option<Instant>,
    refused: u64,
}

impl CapWarning {
    pub fn new(api: Api, cap: usize) -> CapWarning {
        CapWarning {
            api,
            cap,
            last: None,
            refused: 0,
        }
    }

    pub fn reached(&mut self) {
        self.refused += 1;
        if self.last.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
            warn!(
                api = ?self.api,
                cap = self.cap,
                refused = self.refused,
                "connection cap reached; refusing new connections"
            );
            self.last = Some(Instant::now());
            self.refused = 0;
        }
    }
}

/// One client connection.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    limits: Arc<Limits>,
    stop: CancellationToken,
    /// Bytes received but not yet answered.
    buf: Vec<u8>,
    /// When the first byte of the message being received arrived.
    message_started: Option<Instant>,
    _open: OpenConnection,
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
    #[error("arguments of an unframed message do not decode; the stream cannot be resynchronised")]
    Unsynchronised,
}

impl Closed {
    /// How the metrics count a connection closed for its input.
    fn rejection(&self) -> Option<Rejection> {
        match self {
            Closed::Wire(WireError::FrameTooLarge { .. }) => Some(Rejection::Oversized),
            Closed::Wire(_) | Closed::Unsynchronised => Some(Rejection::Garbage),
            Closed::SlowMessage(_) => Some(Rejection::Timeout),
            Closed::Eof | Closed::Shutdown | Closed::Io(_) => None,
        }
    }
}

impl Connection {
    #[instrument(level = "debug", name = "connection", skip_all, fields(peer = %self.peer))]
    async fn serve(mut self) {
        debug!("connection opened");
        match self.serve_requests().await {
            Ok(()) | Err(Closed::Eof | Closed::Shutdown) => debug!("connection closed"),
            Err(Closed::Io(err)) => debug!(error = %err, "connection failed"),
            Err(err) => {
                if let Some(reason) = err.rejection() {
                    self.handler.metrics().rejected(Api::Thrift, reason);
                }
                warn!(peer = %self.peer, error = %err, "closing connection");
            }
        }
    }

    async fn serve_requests(&mut self) -> Result<(), Closed> {
        let wire = loop {
            match codec::detect(&self.buf, self.limits.max_frame) {
                Err(WireError::Incomplete) => self.read_more().await?,
                detected => break detected?,
            }
        };
        debug!(?wire, "detected wire format");
        loop {
            let (request, consumed) = self.next_request(wire).await?;
            if let Some(reply) = self.handler.respond(&request).await {
                let bytes = codec::encode(wire, &request.name, request.seq, &reply);
                self.stream.write_all(&bytes).await?;
            }
            match consumed {
                Some(n) => {
                    self.buf.drain(..n);
                    if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
                        // Do not hold a large message's buffer while idle.
                        self.buf = Vec::new();
                    }
                    // Pipelined bytes already here start the next message's clock.
                    self.message_started = (!self.buf.is_empty()).then(Instant::now);
                }
                None => return Err(Closed::Unsynchronised),
            }
        }
    }

    /// Reads until one whole request is buffered, and decodes it.
    async fn next_request(&mut self, wire: Wire) -> Result<(codec::Request, Option<usize>), Closed> {
        loop {
            let decoded = match wire.framing {
                Framing::Framed => self.framed_message().map(|frame| {
                    frame.map(|(start, end)| {
                        codec::decode(&self.buf[start..end], wire.protocol, true, self.limits.max_frame)
                            .map(|(request, _)| (request, Some(end)))
                    })
                })?,
                Framing::Buffered => Some(codec::decode(&self.buf, wire.protocol, false, self.limits.max_frame)),
            };
            match decoded {
                Some(Err(WireError::Incomplete)) | None => {
                    // An unframed message has no announced size: cap what is buffered.
                    if wire.framing == Framing::Buffered && self.buf.len() > self.limits.max_frame {
                        return Err(WireError::FrameTooLarge {
                            size: self.buf.len() as u64,
                            limit: self.limits.max_frame,
                        }
                        .into());
                    }
                    self.read_more().await?;
                }
                Some(result) => return Ok(result?),
            }
        }
    }

    /// The byte range of the first frame's payload, once all of it is here.
    fn framed_message(&self) -> Result<Option<(usize, usize)>, WireError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if size > self.limits.max_frame {
            return Err(WireError::FrameTooLarge {
                size: size as u64,
                limit: self.limits.max_frame,
            });
        }
        Ok((self.buf.len() >= 4 + size).then_some((4, 4 + size)))
    }

    /// Appends what the peer sends next, and whatever else is already
    /// waiting, so a large message is decoded once it has arrived rather
    /// than after every segment. Memory grows only with bytes that actually
    /// arrive, never with a length the peer merely announced.
    async fn read_more(&mut self) -> Result<(), Closed> {
        const CHUNK: usize = 64 * 1024;
        // Between messages a client may idle; a message, once started, must
        // arrive whole within the read timeout.
        let deadline = match (self.buf.is_empty(), self.message_started) {
            (false, Some(started)) => Some(started + self.limits.read_timeout),
            _ => None,
        };
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let was_empty = self.buf.is_empty();
        self.buf.reserve(CHUNK);
        let n = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Err(Closed::Shutdown),
            n = self.stream.read_buf(&mut self.buf) => n?,
            () = expired => return Err(Closed::SlowMessage(self.limits.read_timeout)),
        };
        if n == 0 {
            return Err(Closed::Eof);
        }
        if was_empty {
            self.message_started = Some(Instant::now());
        }
        while self.buf.len() <= self.limits.max_frame {
            self.buf.reserve(CHUNK);
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(0) => break, // EOF: the next read reports it
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
