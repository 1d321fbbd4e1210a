//! Building the server from its settings: the open-file limit, the data
//! source, the listeners, and running them until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::thrift_server;
use crate::config::{DataSource, Settings, DEFAULT_HTTP_MAX_CONNECTIONS};
use crate::data::source;
use crate::metrics::{Api, Metrics};
use crate::serve::accept::Acceptor;
use crate::serve::http;
use crate::serve::throttle::Throttle;
use crate::serve::workers::Workers;
use crate::service::Locator;
use crate::thrift::Handler;

/// Descriptors kept for everything but client connections: the database
/// pool, the mmdb, data files, the listeners, logs.
const OTHER_FILES: u64 = 256;

/// Raises the open-file soft limit to the hard limit, and refuses
/// connection caps the limit cannot hold: past it, accepts would fail
/// instead of refusing politely at the cap. Returns the HTTP cap: as
/// given, or by default as much of [`DEFAULT_HTTP_MAX_CONNECTIONS`] as the
/// limit leaves beside the Thrift cap.
fn fit_file_limit(settings: &Settings) -> anyhow::Result<usize> {
    let limit = raise_file_limit();
    let thrift = settings.thrift.max_connections as u64 + OTHER_FILES;
    let http = match settings.http.max_connections {
        _ if settings.http.addr.is_none() => 0,
        Some(cap) => cap,
        None => {
            let room = usize::try_from(limit.saturating_sub(thrift)).unwrap_or(usize::MAX);
            let cap = DEFAULT_HTTP_MAX_CONNECTIONS.min(room).max(1);
            if cap < DEFAULT_HTTP_MAX_CONNECTIONS {
                info!(cap, limit, "HTTP connection cap lowered to fit the open-file limit");
            }
            cap
        }
    };
    let needed = thrift + http as u64;
    if needed > limit {
        bail!(
            "--max-connections {} and --http-max-connections {http} need about {needed} open files, \
             but the limit is {limit} (raise it with ulimit -n or LimitNOFILE, or lower the caps)",
            settings.thrift.max_connections
        );
    }
    Ok(http)
}

/// The open-file limit after raising the soft limit to the hard one.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return u64::MAX; // unknown: do not refuse on a guess
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Asks the running server to check for new data now (SIGHUP).
#[derive(Clone)]
pub struct ReloadHandle(Arc<watch::Sender<u64>>);

impl ReloadHandle {
    pub fn reload(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// The HTTP listener, with its connection cap fitted to the open-file
/// limit, and the runtimes that serve its connections.
struct HttpListener {
    acceptor: Acceptor,
    workers: Workers,
}

/// A server that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    handler: Handler,
    /// The HTTP listener, unless HTTP is off.
    http: Option<HttpListener>,
    settings: Settings,
    locator: Locator,
    metrics: Arc<Metrics>,
    reload: ReloadHandle,
    /// Stops the background tasks (reloads, file watching).
    stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let http_max_connections = fit_file_limit(settings)?;
        crate::memory::map_large_blocks_apart();
        let metrics = Arc::new(Metrics::new());
        let (reload, wake) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let opened = source::open(settings, &metrics, &wake, &stop).await?;

        let thrift = &settings.thrift;
        let listener = listen(thrift.addr)
            .await
            .with_context(|| format!("cannot listen on {}", thrift.addr))?;
        let addr = listener.local_addr()?;
        let http = match settings.http.addr {
            None => None,
            Some(http_addr) => {
                let http_listener = listen(http_addr)
                    .await
                    .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
                info!(addr = %http_listener.local_addr()?, "HTTP API, /metrics and /readyz listening");
                let workers = Workers::start().context("cannot start the HTTP workers")?;
                let warnings = Arc::new(Throttle::default());
                Some(HttpListener {
                    acceptor: Acceptor::new(
                        http_listener,
                        Api::Http,
                        http_max_connections,
                        metrics.clone(),
                        warnings,
                    ),
                    workers,
                })
            }
        };
        let data = &opened.described;
        match &opened.maxmind {
            Some(maxmind) => {
                let geo = maxmind.current();
                info!(%addr, %data, mmdb = geo.label(), mmdb_build = %geo.describe(), "xm-ip-service listening");
            }
            None => {
                info!(%addr, %data, "xm-ip-service listening");
                warn!("no MaxMind database: the fallback is off (give --mmdb)");
            }
        }
        if settings.source == DataSource::Builtin {
            info!(
                "serving a small built-in sample: scripts/fetch-data.sh fetches the full data into data/, \
                 and --database-url serves tables from PostgreSQL"
            );
        }
        let locator = Locator::new(opened.ranges, opened.maxmind);
        Ok(Application {
            listener,
            handler: Handler::new(locator.clone(), metrics.clone()),
            http,
            settings: settings.clone(),
            locator,
            metrics,
            reload: ReloadHandle(Arc::new(reload)),
            stop,
            background: opened.refreshing,
        })
    }

    /// The Thrift listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The HTTP listener's address, unless HTTP is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|http| http.acceptor.local_addr())
    }

    /// What SIGHUP uses to ask for a check for new data.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serves both listeners until `shutdown` completes and their
    /// in-flight requests are done.
    pub async fn run_until_stopped(self, shutdown: impl Future) {
        let stopping = CancellationToken::new();
        let Settings {
            thrift, http, requests, ..
        } = self.settings;
        let thrift = thrift_server::run(
            self.listener,
            self.handler.clone(),
            thrift,
            requests.clone(),
            stopping.cancelled(),
        );
        // The workers outlive the HTTP server: they are dropped last.
        let (acceptor, workers) = self.http.map(|http| (http.acceptor, http.workers)).unzip();
        let http = async {
            if let (Some(acceptor), Some(workers)) = (acceptor, &workers) {
                http::run(
                    acceptor,
                    self.locator,
                    self.metrics.clone(),
                    http,
                    requests.clone(),
                    workers,
                    stopping.cancelled(),
                )
                .await;
            }
        };
        let signal = async {
            shutdown.await;
            self.metrics.start_draining();
            info!(
                delay = ?requests.drain_delay,
                "shutting down: /readyz answers 503 while the listeners stay open for the drain delay"
            );
            tokio::time::sleep(requests.drain_delay).await;
            info!("draining connections");
            stopping.cancel();
        };
        tokio::join!(thrift, http, signal);
        self.stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.handler.close();
        // Only now: nothing runs on the HTTP workers any more.
        drop(workers);
        info!("stopped");
    }
}

/// Thousands of clients connecting at once (a balancer failing over, a
/// load test) queue in the kernel rather than having their SYNs dropped
/// and retried a second later; the kernel caps this at somaxconn.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` with [`LISTEN_BACKLOG`].
async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
