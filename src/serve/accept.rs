//! The accept loop both listeners share. A failed accept (usually no file
//! descriptor left) backs off and serving goes on. A connection over the
//! cap is closed at once, counted and warned about once per interval, so
//! that a client or its balancer fails over instead of waiting in the
//! kernel's backlog. An admitted one gets `TCP_NODELAY` and holds its
//! place under the cap until it is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::metrics::{Api, Metrics, OpenConnection};
use crate::serve::throttle::Throttle;

/// How long to wait after a failed accept before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener and its connection cap.
pub struct Acceptor {
    listener: TcpListener,
    api: Api,
    places: Arc<Semaphore>,
    cap: usize,
    metrics: Arc<Metrics>,
    warnings: Arc<Throttle>,
}

/// An admitted connection's place under the cap and its count in
/// `connections_open`, both given back when it is dropped.
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl Acceptor {
    /// Accepts on `listener` for `api`, at most `cap` connections at once.
    pub fn new(
        listener: TcpListener,
        api: Api,
        cap: usize,
        metrics: Arc<Metrics>,
        warnings: Arc<Throttle>,
    ) -> Acceptor {
        Acceptor {
            listener,
            api,
            places: Arc::new(Semaphore::new(cap)),
            cap,
            metrics,
            warnings,
        }
    }

    /// The next connection admitted under the cap. Cancel-safe: dropping
    /// the future loses no admitted connection.
    pub async fn accept(&self) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    if let Some(left_out) = self.warnings.admit("accept failed") {
                        warn!(api = ?self.api, error = %err, left_out, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(place) = self.places.clone().try_acquire_owned() else {
                self.metrics.connection_refused(self.api);
                if let Some(left_out) = self.warnings.admit("connection cap reached") {
                    warn!(
                        api = ?self.api,
                        cap = self.cap,
                        refused = left_out + 1,
                        "connection cap reached; refusing new connections"
                    );
                }
                continue; // `stream` dropped: closed at once
            };
            let _ = stream.set_nodelay(true);
            let admitted = Admitted {
                _place: place,
                _open: self.metrics.connection_opened(self.api),
            };
            return (stream, peer, admitted);
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Counts the connections admitted and still open, for whoever
    /// watches them from elsewhere.
    pub fn open_connections(&self) -> impl Fn() -> usize + Send + 'static {
        let (places, cap) = (self.places.clone(), self.cap);
        move || cap - places.available_permits()
    }
}
