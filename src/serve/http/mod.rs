//! The HTTP listener beside the Thrift port: the old service's JSON API,
//! Prometheus metrics and health checks. It uses the same lookups as the
//! Thrift handler and never touches the database itself.
//!
//! Every connection and request is bounded: connections over the cap are
//! closed at once, headers must arrive within the request timeout (which
//! also closes a keep-alive connection idle that long), bodies have a size
//! limit and share a byte budget (over it, they wait, then get 503), requests
//! in flight have a cap (over it, 503 at once), and each request has a
//! deadline.

mod api;
mod gathered;
mod reply;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Http, Requests};
use crate::metrics::{Api, CloseReason, Metrics};
use crate::serve::accept::Acceptor;
use crate::serve::budget::{self, Budget, Order};
use crate::serve::workers::Workers;
use crate::service::Locator;

/// The most bytes hyper buffers for one connection, headers included (so
/// larger headers get 431). Its default, about 400 KiB, would let the
/// bodies being read take several times their budget in read buffers.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// The most reply bytes the kernel holds unsent for one connection
/// (`TCP_NOTSENT_LOWAT`): without it, the send buffer grows to 4 MiB for a
/// peer that reads nothing, and a thousand such peers drive the kernel's
/// TCP memory into pressure, where every connection's packets are dropped
/// and wait for retransmission (seen: 200–600 ms stalls for the others).
/// A reading peer keeps it drained, so it does not slow large replies.
const MAX_UNSENT: libc::c_int = 128 * 1024;

fn limit_unsent(stream: &tokio::net::TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt reads an int option of a socket this process owns.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&MAX_UNSENT as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Serves the HTTP API on what `acceptor` admits until `shutdown`
/// completes, then lets open requests finish (up to
/// `requests.shutdown_timeout`).
pub async fn run(
    acceptor: Acceptor,
    locator: Locator,
    metrics: Arc<Metrics>,
    limits: Http,
    requests: Requests,
    workers: &Workers,
    shutdown: impl Future,
) {
    let bodies = Budget::new(limits.max_buffered_bytes, Order::SmallestFirst);
    let replies = Budget::new(limits.max_reply_bytes, Order::Arrival);
    let trimmer = tokio::spawn(budget::return_freed_memory(
        vec![bodies.clone(), replies.clone()],
        acceptor.open_connections(),
    ));
    let api = Arc::new(api::HttpApi::new(
        locator,
        metrics.clone(),
        &limits,
        requests.max_batch,
        bodies,
        workers.batch_lane(),
    ));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .max_buf_size(MAX_CONNECTION_BUFFER)
        // A reply of head and a small body goes out as one buffer: copying
        // the body costs less than the vectored write (BENCHMARKS.md).
        .writev(false);

    let timeout = limits.timeout;
    // Ends the connections still open when the shutdown timeout expires.
    let abandon = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer, admitted) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut shutdown => break,
        };
        limit_unsent(&stream);
        // Served on the next worker's reactor from here on.
        let Ok(stream) = stream.into_std() else { continue };
        let room = reply::ReplyRoom::new(replies.clone(), metrics.clone());
        let (api, requests_room) = (api.clone(), room.clone());
        let service = hyper::service::service_fn(move |request| {
            let (api, room) = (api.clone(), requests_room.clone());
            async move { api.serve(request, &room).await }
        });
        let (http, watcher, abandon, metrics) = (http.clone(), graceful.watcher(), abandon.clone(), metrics.clone());
        workers.next().spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            let stream = TokioIo::new(gathered::Gathered::new(stream, timeout, room));
            let connection = watcher.watch(http.serve_connection(stream, service));
            let reason = tokio::select! {
                ended = connection => match ended {
                    Ok(()) => CloseReason::Completed,
                    Err(err) if err.is_timeout() => CloseReason::SlowMessage,
                    Err(err) if gathered::is_stalled(&err) => CloseReason::SlowReader,
                    Err(err) if err.is_parse() || err.is_parse_too_large() => CloseReason::Malformed,
                    Err(_) => CloseReason::IoError,
                },
                () = abandon.cancelled() => CloseReason::Shutdown,
            };
            metrics.connection_closed(Api::Http, reason);
            drop(admitted);
        });
    }
    drop(acceptor);
    info!("HTTP: draining connections");
    if tokio::time::timeout(requests.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP shutdown timeout reached; dropping unfinished requests");
    }
    abandon.cancel();
    trimmer.abort();
}
