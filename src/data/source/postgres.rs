//! Keeping the in-memory tables in step with PostgreSQL. An import's swap
//! sends `NOTIFY ip_service_reload, '<table>'`; this source listens, and
//! the refresh loop also compares versions on a timer, on SIGHUP and
//! whenever the listening connection comes back, so a lost notification
//! costs at most one interval. A changed table is rebuilt aside and
//! swapped in whole; a rebuild that fails leaves the old snapshot serving.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tracing::{debug, error, info, warn};

use super::refresh::{Refresh, ToCheck};
use crate::config::Postgres;
use crate::data::corrections::Corrections;
use crate::data::index::{Snapshot, Tables};
use crate::data::store::{self, StoreError, OVERRIDES, RELOAD_CHANNEL};
use crate::domain::Table;
use crate::health::{Freshness, StaleCause};
use crate::metrics::{Metrics, Reload};

/// Notifications held for the reloader; past this they are dropped and a
/// full version check stands in for them.
const NOTIFICATIONS: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The longest a whole table may take to load; the full cn table takes a
/// few seconds.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an announced import is awaited on a standby that has not yet
/// replayed it, and how often the standby is asked meanwhile.
const AWAIT_REPLAY: Duration = Duration::from_secs(60);
const REPLAY_POLL: Duration = Duration::from_millis(100);

/// How often a LISTEN host found to be a standby is probed again (it may
/// have been promoted); silently.
const STANDBY_PROBE: Duration = Duration::from_secs(300);

/// Keeps `tables` equal to the database's tables.
pub struct Reloader {
    database_url: String,
    /// Where to LISTEN: `--notify-url`, else the database itself.
    listen_url: String,
    /// Bounds connecting and each version check.
    timeout: Duration,
    tables: Arc<Tables>,
    metrics: Arc<Metrics>,
    listening: Listening,
    reconnect_at: Instant,
    backoff: Duration,
    /// Tables announced whose import the database has not replayed yet,
    /// and until when to keep asking.
    awaiting: Vec<(Table, Instant)>,
    /// The cause last logged for each kind of failure, so that retries of
    /// the same failure log nothing, and a recovery is logged once.
    failing: Failing,
    /// Where each rebuilt table's snapshot is kept, if anywhere.
    snapshot_dir: Option<PathBuf>,
}

enum Listening {
    Down,
    Up(Listener),
    /// The LISTEN host is a standby, which refuses LISTEN: freshness comes
    /// from the timer (and the host is probed again now and then).
    Standby,
}

#[derive(Default)]
struct Failing {
    listen: Option<String>,
    check: Option<String>,
    /// Said once: the LISTEN host is a standby.
    standby_said: bool,
}

/// A live LISTEN connection and the notifications it forwards.
struct Listener {
    _client: Client,
    notes: mpsc::Receiver<ToCheck>,
    /// Set when a notification could not be queued.
    overflowed: Arc<AtomicBool>,
}

/// Why no LISTEN connection could be made.
enum ListenError {
    Standby,
    Failed(StoreError),
}

impl Reloader {
    pub fn new(pg: &Postgres, tables: Arc<Tables>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            database_url: pg.url.clone(),
            listen_url: pg.notify_url.clone().unwrap_or_else(|| pg.url.clone()),
            timeout: pg.pool.timeout,
            tables,
            metrics,
            listening: Listening::Down,
            reconnect_at: Instant::now(),
            backoff: Duration::from_secs(1),
            awaiting: Vec::new(),
            failing: Failing::default(),
            snapshot_dir: pg.snapshot_dir.clone(),
        }
    }

    /// Opens a connection that LISTENs and forwards what each notification
    /// names (a table, the corrections, or for anything else everything);
    /// refuses a standby.
    async fn open_listener(&self) -> Result<Listener, ListenError> {
        let failed = ListenError::Failed;
        let mut config =
            tokio_postgres::Config::from_str(&self.listen_url).map_err(|e| failed(StoreError::Config(e)))?;
        config
            .connect_timeout(self.timeout)
            .application_name("xm-ip-service reload listener")
            // Notice a vanished server within a minute, not hours.
            .keepalives_idle(Duration::from_secs(30));
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| failed(StoreError::Connect(e)))?;
        let (tx, notes) = mpsc::channel(NOTIFICATIONS);
        let overflowed = Arc::new(AtomicBool::new(false));
        let overflow = overflowed.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if tx.try_send(announced(note.payload())).is_err() {
                            overflow.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        debug!(error = %err, "reload listener connection failed");
                        break;
                    }
                }
            }
            // Dropping `tx` tells the reloader the listener is gone.
        });
        let listen = async {
            let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
            if row.get::<_, bool>(0) {
                return Ok(false);
            }
            client.batch_execute(&format!("LISTEN {RELOAD_CHANNEL}")).await?;
            Ok::<_, tokio_postgres::Error>(true)
        };
        match tokio::time::timeout(self.timeout, listen).await {
            Err(_) => Err(failed(StoreError::Timeout(self.timeout))),
            Ok(Err(err)) => Err(failed(StoreError::Query(err))),
            Ok(Ok(false)) => Err(ListenError::Standby),
            Ok(Ok(true)) => Ok(Listener {
                _client: client,
                notes,
                overflowed,
            }),
        }
    }

    /// Loads `table` again and swaps it in; `change` is the summary line
    /// of the import that made the new data, for the log.
    async fn rebuild(&self, table: Table, change: Option<String>) -> bool {
        let started = Instant::now();
        let base = self.tables.snapshot(table);
        match load_aside(self.database_url.clone(), self.timeout, table, Some(base)).await {
            Ok((snapshot, read)) => {
                info!(
                    table = table.name(),
                    ranges = snapshot.index.len(),
                    places = snapshot.index.places(),
                    read = %read,
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    change = change.as_deref().unwrap_or("unknown"),
                    "reloaded into memory"
                );
                if snapshot.index.is_empty() {
                    warn!(table = table.name(), "the reloaded table is empty");
                }
                self.tables.replace(table, snapshot);
                self.metrics.reloaded(Reload::Table, true);
                if let Some(dir) = &self.snapshot_dir {
                    keep_snapshot(dir, table, self.tables.snapshot(table)).await;
                }
                true
            }
            Err(err) => {
                let cause = err.cause();
                error!(
                    table = table.name(),
                    error = %cause,
                    "reload failed; still serving the previous data"
                );
                self.tables
                    .set_freshness(table, Freshness::Stale(StaleCause::DatabaseReload(cause)));
                self.metrics.reloaded(Reload::Table, false);
                false
            }
        }
    }

    /// The tables in `tables` whose version differs from their snapshot's,
    /// with the change summary of the import behind each.
    async fn changed(&self, tables: &[Table]) -> Result<Vec<(Table, Option<String>)>, StoreError> {
        let versions = async {
            let client = store::connect_for(&self.database_url, self.timeout, "reload check").await?;
            let mut changed = Vec::new();
            for &table in tables {
                let now = store::version(&client, table).await?;
                if self.tables.snapshot(table).version != now {
                    changed.push((table, store::change_summary(&client, now).await?));
                }
            }
            Ok(changed)
        };
        tokio::time::timeout(self.timeout * 2, versions)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout * 2)))
    }

    /// Reads the corrections again if a newer import replaced them, or
    /// holds the same ones without those that have expired: expiry needs
    /// no database. Returns whether the corrections were replaced.
    async fn check_corrections(&self) -> bool {
        let held = self.tables.corrections();
        let now = SystemTime::now();
        let live = async {
            let client = store::connect_for(&self.database_url, self.timeout, "corrections check").await?;
            store::corrections_import(&client).await
        };
        let live = tokio::time::timeout(self.timeout * 2, live)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout * 2)));
        match live {
            Ok(live) if store::corrections_version(live) != held.version => {
                match load_corrections(&self.database_url, self.timeout).await {
                    Ok(corrections) => {
                        info!(in_force = corrections.in_force(), "corrections reloaded into memory");
                        self.tables.replace_corrections(corrections);
                        if let Some(dir) = &self.snapshot_dir {
                            keep_corrections_snapshot(dir, self.tables.corrections()).await;
                        }
                        return true;
                    }
                    Err(err) => {
                        error!(error = %err.cause(), "corrections reload failed; still applying the previous ones")
                    }
                }
            }
            Ok(_) => {}
            Err(err) => debug!(error = %err.cause(), "cannot check the corrections for an import"),
        }
        self.tables.expire_corrections(now)
    }

    /// Forgets the announcements that `changed` answers, or that waited too long.
    fn settle_awaiting(&mut self, changed: &[(Table, Option<String>)]) {
        let now = Instant::now();
        self.awaiting.retain(|&(table, until)| {
            if changed.iter().any(|(t, _)| *t == table) {
                return false;
            }
            if now >= until {
                warn!(
                    table = table.name(),
                    waited = ?AWAIT_REPLAY,
                    "an announced import has not reached the database the tables are read from; the timer will find it"
                );
                return false;
            }
            true
        });
    }
}

impl Refresh for Reloader {
    /// Reloads each table whose version differs from its snapshot's, and
    /// the corrections if `which` names them.
    async fn check(&mut self, which: ToCheck) -> bool {
        let corrections = which.corrections() && self.check_corrections().await;
        let tables = which.tables();
        if tables.is_empty() {
            return corrections;
        }
        let changed = match self.changed(&tables).await {
            Ok(changed) => {
                if self.failing.check.take().is_some() {
                    info!("the tables can be checked for changes again");
                }
                changed
            }
            Err(err) => {
                let cause = err.cause();
                if self.failing.check.as_ref() != Some(&cause) {
                    warn!(error = %cause, "cannot check the tables for changes; retrying on every check");
                }
                self.failing.check = Some(cause);
                return corrections;
            }
        };
        self.settle_awaiting(&changed);
        // What did not change is what the database holds; a changed table
        // is marked by its replacement, if its rebuild succeeds.
        for table in which.tables() {
            if !changed.iter().any(|(t, _)| *t == table) {
                self.tables.set_freshness(table, Freshness::Current);
            }
        }
        let mut swapped = corrections;
        for (table, change) in changed {
            swapped |= self.rebuild(table, change).await;
        }
        swapped
    }

    async fn listen(&mut self) -> Option<ToCheck> {
        if matches!(self.listening, Listening::Up(_)) || Instant::now() < self.reconnect_at {
            return None;
        }
        let was_standby = matches!(self.listening, Listening::Standby);
        match self.open_listener().await {
            Ok(live) => {
                debug!("listening for table reloads");
                if self.failing.listen.take().is_some() || was_standby {
                    info!("listening for table reloads again");
                }
                self.listening = Listening::Up(live);
                self.backoff = Duration::from_secs(1);
                // Whatever changed while nobody listened.
                Some(ToCheck::All)
            }
            Err(ListenError::Standby) => {
                if !self.failing.standby_said {
                    info!(
                        database = %super::describe_database(&self.listen_url),
                        "the database to LISTEN on is a standby, which cannot LISTEN: new data is found by the \
                         --reload-interval timer (give --notify-url the primary to hear of imports at once)"
                    );
                    self.failing.standby_said = true;
                }
                self.listening = Listening::Standby;
                self.reconnect_at = Instant::now() + STANDBY_PROBE;
                None
            }
            Err(ListenError::Failed(err)) => {
                let cause = err.cause();
                if self.failing.listen.as_ref() != Some(&cause) {
                    warn!(error = %cause, "cannot listen for table reloads; retrying with backoff up to 30 s");
                }
                self.failing.listen = Some(cause);
                self.reconnect_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                None
            }
        }
    }

    async fn announced(&mut self) -> Option<ToCheck> {
        let awaited = self.awaiting.first().map(|&(table, _)| table);
        let Listening::Up(live) = &mut self.listening else {
            // Still ask about what was announced, until it arrives.
            if let Some(table) = awaited {
                tokio::time::sleep(REPLAY_POLL).await;
                return Some(ToCheck::Table(table));
            }
            tokio::time::sleep_until(self.reconnect_at.into()).await;
            return None;
        };
        if live.overflowed.swap(false, Ordering::Relaxed) {
            return Some(ToCheck::All);
        }
        let replay_poll = async {
            match awaited {
                Some(table) => {
                    tokio::time::sleep(REPLAY_POLL).await;
                    table
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            table = replay_poll => Some(ToCheck::Table(table)),
            note = live.notes.recv() => match note {
                Some(ToCheck::Table(table)) => {
                    if !self.awaiting.iter().any(|(t, _)| *t == table) {
                        self.awaiting.push((table, Instant::now() + AWAIT_REPLAY));
                    }
                    Some(ToCheck::Table(table))
                }
                Some(other) => Some(other),
                None => {
                    if self.failing.listen.is_none() {
                        warn!("lost the connection listening for table reloads; reconnecting");
                        self.failing.listen = Some("the connection was lost".to_owned());
                    }
                    self.listening = Listening::Down;
                    self.reconnect_at = Instant::now();
                    None
                }
            },
        }
    }
}

/// What a notification's payload names.
fn announced(payload: &str) -> ToCheck {
    match Table::from_name(payload) {
        Some(table) => ToCheck::Table(table),
        None if payload == OVERRIDES => ToCheck::Corrections,
        None => ToCheck::All,
    }
}

/// Writes `snapshot` of `table` into `dir` on a blocking-pool thread; a
/// failure is logged, and the next start loads from PostgreSQL.
pub async fn keep_snapshot(dir: &Path, table: Table, snapshot: Arc<Snapshot>) {
    let dir = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || super::disk::write(&dir, table, &snapshot)).await;
    if let Ok(Err(err)) = written {
        warn!(error = %err, "cannot keep a snapshot of the table");
    }
}

/// Writes the corrections' snapshot into `dir`, as [`keep_snapshot`] a table's.
pub async fn keep_corrections_snapshot(dir: &Path, corrections: Arc<Corrections>) {
    let dir = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || super::disk::write_corrections(&dir, &corrections)).await;
    if let Ok(Err(err)) = written {
        warn!(error = %err, "cannot keep a snapshot of the corrections");
    }
}

/// What a load read from the database.
enum Read {
    WholeTable,
    /// The rows the import kept as changed, applied to the data it replaced.
    ChangedRows(usize),
}

impl std::fmt::Display for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::WholeTable => write!(f, "the whole table"),
            Read::ChangedRows(n) => write!(f, "the import's {n} changed rows"),
        }
    }
}

/// Loads `table` on a blocking-pool thread, so that building a large index
/// never holds up a worker that serves requests. Given the data held now
/// (`base`), it applies the import's changed rows to it when the import
/// kept them for that data, and reads the whole table otherwise.
async fn load_aside(
    database_url: String,
    timeout: Duration,
    table: Table,
    base: Option<Arc<Snapshot>>,
) -> Result<(Snapshot, Read), StoreError> {
    let runtime = tokio::runtime::Handle::current();
    let load = async move {
        let mut client = store::connect_for(&database_url, timeout, "index load").await?;
        if let Some(base) = base {
            match store::load_changes(&mut client, table, &base).await {
                Ok(Some((snapshot, rows))) => return Ok((snapshot, Read::ChangedRows(rows))),
                Ok(None) => {}
                Err(err) => warn!(
                    table = table.name(),
                    error = %err.cause(),
                    "cannot apply the import's changed rows; reading the whole table"
                ),
            }
        }
        Ok((store::load_snapshot(&mut client, table).await?, Read::WholeTable))
    };
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            tokio::time::timeout(LOAD_TIMEOUT, load)
                .await
                .map_err(|_| StoreError::Timeout(LOAD_TIMEOUT))?
        })
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Reads the corrections, as they stand now.
pub async fn load_corrections(database_url: &str, timeout: Duration) -> Result<Corrections, StoreError> {
    let load = async {
        let client = store::connect_for(database_url, timeout, "corrections load").await?;
        let (rows, live) = store::load_corrections(&client).await?;
        Corrections::new(
            rows,
            store::corrections_version(live),
            live.and_then(|(_, at)| at),
            SystemTime::now(),
        )
        .map_err(|err| StoreError::Invalid(err.to_string()))
    };
    tokio::time::timeout(LOAD_TIMEOUT, load)
        .await
        .map_err(|_| StoreError::Timeout(LOAD_TIMEOUT))?
}

/// Loads every table at once, for start-up in memory mode.
pub async fn load_tables(database_url: &str, timeout: Duration) -> Result<Vec<(Table, Snapshot)>, StoreError> {
    let loads = Table::ALL.map(|table| async move {
        let (snapshot, _) = load_aside(database_url.to_owned(), timeout, table, None).await?;
        Ok::<_, StoreError>((table, snapshot))
    });
    futures_util::future::join_all(loads).await.into_iter().collect()
}
