//! Building the server from its settings: where the tables come from
//! (PostgreSQL per call, PostgreSQL into memory, files, or the built-in
//! sample), the MaxMind database, the background reloads and the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::Table;
use crate::http::{self, HttpLimits};
use crate::import::{DataFiles, FileSource, FileTables, FileWatch};
use crate::index::Tables;
use crate::metrics::{Metrics, TableState};
use crate::mmdb::{GeoDb, MaxMind};
use crate::ranges::Ranges;
use crate::server::{self, Limits};
use crate::service::{Locator, Route};
use crate::store::{self, Reloader, Store, StoreConfig};
use crate::thrift::Handler;

/// Where lookups in PostgreSQL-backed tables happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupMode {
    /// Every call queries PostgreSQL (concurrent calls share queries).
    Postgres,
    /// The tables are loaded into memory at start-up and kept in step.
    Memory,
}

/// Everything `serve` needs; each option can also come from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on for Thrift.
    pub addr: String,
    /// Address for the HTTP API, /metrics and the health checks, or "off".
    pub http_addr: String,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/ip_service.
    /// Without it (and without --data) the service serves data/ if
    /// scripts/fetch-data.sh filled it, else its built-in sample.
    pub database_url: Option<String>,
    /// Serve the tables from the IP database files in this directory
    /// instead of a database: .ipdb gives cn and v6, .mmdb gives en and
    /// the MaxMind fallback, cn.csv/en.csv/v6.csv give their table.
    pub data: Option<PathBuf>,
    /// With a database: query it on every call, or hold the tables in
    /// memory and follow its imports.
    pub lookup: Option<LookupMode>,
    /// GeoIP2/GeoLite2 City database; without it (and without one among
    /// the data files) the MaxMind fallback is off.
    pub mmdb: Option<PathBuf>,
    /// Apply pending migrations before serving.
    pub migrate: bool,
    /// Most PostgreSQL connections held at once.
    pub pool_size: usize,
    /// Bound on connecting, waiting for a connection and each query.
    pub db_timeout: Duration,
    /// How often the in-memory tables and the mmdb file are checked for
    /// changes a notification did not announce (SIGHUP checks at once).
    pub reload_interval: Duration,
    /// Most IPs in one request; exactly this many is accepted.
    pub max_batch: usize,
    /// Largest message in bytes, framed or not.
    pub max_frame: usize,
    /// Most Thrift connections at once; further ones are closed at once.
    pub max_connections: usize,
    /// Most HTTP connections at once; further ones are closed at once.
    /// `None`: [`DEFAULT_HTTP_MAX_CONNECTIONS`], or what the open-file
    /// limit leaves beside the Thrift cap, if that is less.
    pub http_max_connections: Option<usize>,
    /// Most HTTP requests handled at once; further ones get 503 at once.
    pub http_max_in_flight: usize,
    /// Largest HTTP request body in bytes.
    pub http_max_body: usize,
    /// Request body bytes all HTTP requests together may hold; a body
    /// waits for room, and gets 503 after the HTTP timeout.
    pub http_max_buffered_bytes: usize,
    /// How long an HTTP request may take, headers, body and answer.
    pub http_timeout: Duration,
    /// How long one message may take to arrive once it has started.
    pub read_timeout: Duration,
    /// How long a Thrift connection may send nothing between messages
    /// before it is closed; 0 means forever.
    pub idle_timeout: Duration,
    /// How long writing one reply may take: a peer that stops reading is
    /// closed then.
    pub write_timeout: Duration,
    /// Request bytes all Thrift connections together may hold in buffers
    /// beyond a 16 KiB read-ahead each; a large message waits for budget.
    pub max_buffered_bytes: usize,
    /// Bytes all Thrift connections together may hold for large replies
    /// and for replies a peer has stopped reading.
    pub max_reply_bytes: usize,
    /// How long in-flight requests may take to finish on SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
}

impl Settings {
    /// Settings for a Thrift server on `addr`, without HTTP, and every
    /// other option at its default.
    pub fn new(addr: &str) -> Settings {
        Settings {
            addr: addr.to_owned(),
            http_addr: "off".to_owned(),
            database_url: None,
            data: None,
            lookup: None,
            mmdb: None,
            migrate: false,
            pool_size: 16,
            db_timeout: Duration::from_secs(2),
            reload_interval: Duration::from_secs(30),
            max_batch: 10_000,
            max_frame: server::DEFAULT_MAX_FRAME,
            max_connections: 4096,
            http_max_connections: None,
            http_max_in_flight: 1024,
            http_max_body: 1 << 20,
            http_max_buffered_bytes: 128 << 20,
            http_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            max_buffered_bytes: 256 << 20,
            max_reply_bytes: 64 << 20,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Descriptors kept for everything but client connections: the database
/// pool, the mmdb, data files, the listeners, logs.
const OTHER_FILES: u64 = 256;

/// The HTTP connection cap when none is given, if the open-file limit
/// has room for it.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 10_000;

/// Raises the open-file soft limit to the hard limit, and refuses
/// connection caps the limit cannot hold: past it, accepts would fail
/// instead of refusing politely at the cap. Returns the HTTP cap: as
/// given, or by default as much of [`DEFAULT_HTTP_MAX_CONNECTIONS`] as the
/// limit leaves beside the Thrift cap.
fn fit_file_limit(settings: &Settings) -> anyhow::Result<usize> {
    let limit = raise_file_limit();
    let thrift = settings.max_connections as u64 + OTHER_FILES;
    let http = match settings.http_max_connections {
        _ if settings.http_addr == "off" => 0,
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
            settings.max_connections
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

/// Where the range tables come from.
enum Data {
    Postgres { url: String, mode: LookupMode },
    Files(DataFiles),
}

/// The default data directory, relative to where the service runs.
const DATA_DIR: &str = "data";

fn choose_data(settings: &Settings) -> anyhow::Result<Data> {
    if settings.database_url.is_none() {
        if settings.lookup == Some(LookupMode::Postgres) {
            bail!("--lookup postgres needs --database-url (or DATABASE_URL)");
        }
        if settings.migrate {
            bail!("--migrate needs --database-url (or DATABASE_URL)");
        }
    }
    data_source(
        settings.database_url.as_deref(),
        settings.data.as_deref(),
        settings.lookup,
    )
}

/// A database if given, else the files in `data`, else those in `data/`
/// if scripts/fetch-data.sh filled it, else the built-in sample.
fn data_source(database_url: Option<&str>, data: Option<&Path>, lookup: Option<LookupMode>) -> anyhow::Result<Data> {
    if let Some(url) = database_url {
        return Ok(Data::Postgres {
            url: url.to_owned(),
            mode: lookup.unwrap_or(LookupMode::Postgres),
        });
    }
    if let Some(dir) = data {
        return Ok(Data::Files(DataFiles::in_dir(dir)?));
    }
    Ok(match DataFiles::in_dir(Path::new(DATA_DIR)) {
        Ok(files) if !files.is_empty() => Data::Files(files),
        _ => Data::Files(DataFiles::sample()),
    })
}

/// The tables a server given `database_url` or `data` would serve, held in
/// memory: what the load generator samples addresses from.
pub async fn load_tables(database_url: Option<&str>, data: Option<&Path>, timeout: Duration) -> anyhow::Result<Tables> {
    Ok(match data_source(database_url, data, Some(LookupMode::Memory))? {
        Data::Postgres { url, .. } => Tables::new(store::load_tables(&url, timeout).await?),
        Data::Files(files) => Tables::new(load_files(files, &Table::ALL).await?.tables),
    })
}

/// The lookups a server given these sources would make for `route`,
/// without a server: PostgreSQL per call, or files (`data/` or the
/// built-in sample when neither is given), reading only the tables the
/// route asks. What `resolve` answers from offline.
pub async fn open_locator(
    database_url: Option<&str>,
    data: Option<&Path>,
    mmdb: Option<&Path>,
    route: Route,
    timeout: Duration,
) -> anyhow::Result<Locator> {
    let (ranges, maxmind) = match data_source(database_url, data, Some(LookupMode::Postgres))? {
        Data::Postgres { url, .. } => {
            let config = StoreConfig {
                database_url: url,
                pool_size: 8,
                timeout,
            };
            (Ranges::Postgres(Store::new(&config, Arc::new(Metrics::new()))?), None)
        }
        Data::Files(files) => {
            let (v4, v6) = route.tables();
            let wanted: Vec<Table> = v4.into_iter().chain(v6).collect();
            let opened = open_files(files, &wanted).await?;
            (opened.ranges, opened.maxmind)
        }
    };
    let maxmind = match mmdb {
        Some(path) => Some(MaxMind::open(path)?),
        None => maxmind,
    };
    Ok(Locator::new(ranges, maxmind))
}

/// Reads `files` into indexes of the `wanted` tables on a blocking-pool thread.
async fn load_files(files: DataFiles, wanted: &[Table]) -> anyhow::Result<FileTables> {
    let origin = files.origin.clone();
    let wanted = wanted.to_vec();
    let loaded = tokio::task::spawn_blocking(move || files.load_only(&wanted))
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
        .with_context(|| format!("cannot load the tables from {origin}"))?;
    Ok(loaded)
}

/// A source of tables, opened.
struct Opened {
    ranges: Ranges,
    /// The MaxMind database among the data files, if any.
    maxmind: Option<MaxMind>,
    /// What is served, for the log.
    source: String,
    /// Keeps in-memory tables in step with their source.
    refresher: Option<Refresher>,
}

/// What keeps in-memory tables in step with their source.
enum Refresher {
    Database(Reloader),
    Files(FileWatch),
}

impl Refresher {
    async fn run(self, wake: watch::Receiver<u64>, stop: CancellationToken) {
        match self {
            Refresher::Database(reloader) => reloader.run(wake, stop).await,
            Refresher::Files(files) => files.run(wake, stop).await,
        }
    }
}

async fn open_postgres(
    url: String,
    mode: LookupMode,
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Opened> {
    if settings.migrate {
        let applied = store::migrate(&url).await.context("failed to migrate the database")?;
        info!(applied, "migrations up to date");
    }
    let described = describe_database(&url);
    Ok(match mode {
        LookupMode::Postgres => {
            let store = Store::new(
                &StoreConfig {
                    database_url: url.clone(),
                    pool_size: settings.pool_size,
                    timeout: settings.db_timeout,
                },
                metrics.clone(),
            )?;
            match tokio::time::timeout(settings.db_timeout * 5, store.table_states()).await {
                Ok(Ok(states)) => log_table_states(&states, "table in PostgreSQL"),
                Ok(Err(err)) => warn!(error = %err, "cannot read the tables; serving anyway"),
                Err(_) => warn!("reading the tables timed out; serving anyway"),
            }
            Opened {
                ranges: Ranges::Postgres(store),
                maxmind: None,
                source: format!("PostgreSQL {described}, lookups in PostgreSQL"),
                refresher: None,
            }
        }
        LookupMode::Memory => {
            let started = std::time::Instant::now();
            let loaded = store::load_tables(&url, settings.db_timeout)
                .await
                .with_context(|| format!("cannot load the tables from {described} into memory"))?;
            let tables = Arc::new(Tables::new(loaded));
            log_tables(&tables, &Table::ALL, started.elapsed());
            Opened {
                ranges: Ranges::Memory(tables.clone()),
                maxmind: None,
                source: format!("PostgreSQL {described}, tables in memory"),
                refresher: Some(Refresher::Database(Reloader {
                    database_url: url,
                    timeout: settings.db_timeout,
                    interval: settings.reload_interval,
                    tables,
                    metrics: metrics.clone(),
                })),
            }
        }
    })
}

async fn open_files(files: DataFiles, wanted: &[Table]) -> anyhow::Result<Opened> {
    let started = std::time::Instant::now();
    let source = files.origin.clone();
    let loaded = load_files(files, wanted).await?;
    let maxmind = match &loaded.mmdb {
        Some(FileSource::Path(path)) => Some(MaxMind::open(path)?),
        Some(FileSource::Builtin(bytes)) => Some(MaxMind::fixed(GeoDb::from_static(bytes, "built-in sample")?)),
        None => None,
    };
    let tables = Arc::new(Tables::new(loaded.tables));
    log_tables(&tables, wanted, started.elapsed());
    crate::index::release_free_memory();
    Ok(Opened {
        ranges: Ranges::Memory(tables),
        maxmind,
        source,
        refresher: None,
    })
}

/// Asks the running server to check for new data now (SIGHUP).
#[derive(Clone)]
pub struct ReloadHandle(Arc<watch::Sender<u64>>);

impl ReloadHandle {
    pub fn reload(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// A server that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    /// The HTTP listener, unless it is off.
    http: Option<(TcpListener, HttpLimits)>,
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
        crate::budget::map_large_blocks_apart();
        let data = choose_data(settings)?;
        let metrics = Arc::new(Metrics::new());
        let (reload, wake) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let mut background = Vec::new();

        let sample = matches!(&data, Data::Files(files) if files.is_sample());
        let Opened {
            ranges,
            maxmind,
            source,
            refresher,
        } = match data {
            Data::Postgres { url, mode } => open_postgres(url, mode, settings, &metrics).await?,
            Data::Files(files) => {
                let mut opened = open_files(files.clone(), &Table::ALL).await?;
                if let Ranges::Memory(tables) = &opened.ranges {
                    opened.refresher = Some(Refresher::Files(FileWatch {
                        files,
                        tables: tables.clone(),
                        interval: settings.reload_interval,
                        metrics: metrics.clone(),
                    }));
                }
                opened
            }
        };
        if let Some(refresher) = refresher {
            background.push(tokio::spawn(refresher.run(wake.clone(), stop.clone())));
        }
        // --mmdb wins over an mmdb among the data files.
        let maxmind = match &settings.mmdb {
            Some(path) => Some(MaxMind::open(path)?),
            None => maxmind,
        };
        if let Some(maxmind) = &maxmind {
            background.push(tokio::spawn(maxmind.clone().watch(
                settings.reload_interval,
                wake.clone(),
                stop.clone(),
                metrics.clone(),
            )));
        }

        let listener = listen(&settings.addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.addr))?;
        let addr = listener.local_addr()?;
        let http = match settings.http_addr.as_str() {
            "off" => None,
            http_addr => {
                let http_listener = listen(http_addr)
                    .await
                    .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
                info!(addr = %http_listener.local_addr()?, "HTTP API, /metrics and /readyz listening");
                let limits = HttpLimits {
                    max_connections: http_max_connections,
                    max_in_flight: settings.http_max_in_flight,
                    max_body: settings.http_max_body,
                    max_buffered_bytes: settings.http_max_buffered_bytes,
                    timeout: settings.http_timeout,
                    shutdown_timeout: settings.shutdown_timeout,
                    max_batch: settings.max_batch,
                };
                Some((http_listener, limits))
            }
        };
        match &maxmind {
            Some(maxmind) => {
                let geo = maxmind.current();
                info!(%addr, data = %source, mmdb = geo.label(), mmdb_build = %geo.describe(), "xm-ip-service listening");
            }
            None => {
                info!(%addr, data = %source, "xm-ip-service listening");
                warn!("no MaxMind database: the fallback is off (give --mmdb)");
            }
        }
        if sample {
            info!(
                "serving a small built-in sample: scripts/fetch-data.sh fetches the full data into data/, \
                 and --database-url serves tables from PostgreSQL"
            );
        }
        let locator = Locator::new(ranges, maxmind);
        Ok(Application {
            listener,
            handler: Handler::new(locator.clone(), metrics.clone()),
            limits: Limits {
                max_frame: settings.max_frame,
                max_batch: settings.max_batch,
                max_connections: settings.max_connections,
                read_timeout: settings.read_timeout,
                idle_timeout: settings.idle_timeout,
                write_timeout: settings.write_timeout,
                max_buffered_bytes: settings.max_buffered_bytes,
                max_reply_bytes: settings.max_reply_bytes,
                shutdown_timeout: settings.shutdown_timeout,
            },
            http,
            locator,
            metrics,
            reload: ReloadHandle(Arc::new(reload)),
            stop,
            background,
        })
    }

    /// The Thrift listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The HTTP listener's address, unless HTTP is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("a bound listener has an address"))
    }

    /// What SIGHUP uses to ask for a check for new data.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serves both listeners until `shutdown` completes and their
    /// in-flight requests are done.
    pub async fn run_until_stopped(self, shutdown: impl Future) {
        let stopping = CancellationToken::new();
        let thrift = server::run(self.listener, self.handler.clone(), self.limits, stopping.cancelled());
        let http = async {
            if let Some((listener, limits)) = self.http {
                http::run(listener, self.locator, self.metrics, limits, stopping.cancelled()).await;
            }
        };
        let signal = async {
            shutdown.await;
            info!("shutting down: draining connections");
            stopping.cancel();
        };
        tokio::join!(thrift, http, signal);
        self.stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.handler.close();
        info!("stopped");
    }
}

/// Thousands of clients connecting at once (a balancer failing over, a
/// load test) queue in the kernel rather than having their SYNs dropped
/// and retried a second later; the kernel caps this at somaxconn.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` (host:port, names resolved) with [`LISTEN_BACKLOG`].
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")))
}

/// One line per table: ranges, distinct places, memory and data age; a
/// warning for each empty table, whose addresses only MaxMind can answer.
fn log_tables(tables: &Tables, wanted: &[Table], took: Duration) {
    for &table in wanted {
        let snapshot = tables.snapshot(table);
        let index = &snapshot.index;
        info!(
            table = table.name(),
            ranges = index.len(),
            places = index.places(),
            mib = index.heap_bytes() / (1 << 20),
            data_age = %describe_age(snapshot.data_time),
            "table loaded into memory"
        );
        warn_if_empty(table, index.len() as u64);
    }
    info!(seconds = format!("{:.2}", took.as_secs_f64()), "tables ready");
}

/// One line per table with its rows and data age, and a warning for each
/// empty one.
fn log_table_states(states: &[TableState], message: &str) {
    for state in states {
        info!(
            table = state.table.name(),
            rows = state.rows,
            data_age = %describe_age(state.data_time),
            "{message}"
        );
        warn_if_empty(state.table, state.rows);
    }
}

fn warn_if_empty(table: Table, rows: u64) {
    if rows == 0 {
        warn!(
            table = table.name(),
            "table is empty: its addresses get MaxMind's answer or none"
        );
    }
}

/// "3h 12m 5s", or "unknown" for data loaded outside the importer.
fn describe_age(data_time: Option<std::time::SystemTime>) -> String {
    match data_time {
        Some(at) => {
            let age = at.elapsed().unwrap_or_default();
            humantime::format_duration(Duration::from_secs(age.as_secs())).to_string()
        }
        None => "unknown".to_owned(),
    }
}

/// `host:port/dbname` of a database URL, without the password.
fn describe_database(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                None => String::new(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}
