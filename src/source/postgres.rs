//! Keeping the in-memory tables in step with PostgreSQL. An import's swap
//! sends `NOTIFY ip_service_reload, '<table>'`; this source listens, and
//! the refresh loop also compares versions on a timer, on SIGHUP and
//! whenever the listening connection comes back, so a lost notification
//! costs at most one interval. A changed table is rebuilt aside and
//! swapped in whole; a rebuild that fails leaves the old snapshot serving.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tracing::{debug, error, info, warn};

use super::refresh::{Refresh, Which};
use crate::domain::Table;
use crate::index::{Snapshot, Tables};
use crate::metrics::{Metrics, Reload};
use crate::store::{self, StoreError, RELOAD_CHANNEL};

/// Notifications held for the reloader; past this they are dropped and a
/// full version check stands in for them.
const NOTIFICATIONS: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The longest a whole table may take to load; the full cn table takes a
/// few seconds.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Keeps `tables` equal to the database's tables.
pub struct Reloader {
    database_url: String,
    /// Bounds connecting and each version check.
    timeout: Duration,
    tables: Arc<Tables>,
    metrics: Arc<Metrics>,
    listener: Option<Listener>,
    reconnect_at: Instant,
    backoff: Duration,
}

/// A live LISTEN connection and the notifications it forwards.
struct Listener {
    _client: Client,
    notes: mpsc::Receiver<Option<Table>>,
    /// Set when a notification could not be queued.
    overflowed: Arc<AtomicBool>,
}

impl Reloader {
    pub fn new(database_url: String, timeout: Duration, tables: Arc<Tables>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            database_url,
            timeout,
            tables,
            metrics,
            listener: None,
            reconnect_at: Instant::now(),
            backoff: Duration::from_secs(1),
        }
    }

    /// Opens a connection that LISTENs and forwards each notification's
    /// table (`None` for a payload naming no table).
    async fn open_listener(&self) -> Result<Listener, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&self.database_url).map_err(StoreError::Config)?;
        config
            .connect_timeout(self.timeout)
            .application_name("xm-ip-service reload listener")
            // Notice a vanished server within a minute, not hours.
            .keepalives_idle(Duration::from_secs(30));
        let (client, mut connection) = config.connect(NoTls).await.map_err(StoreError::Connect)?;
        let (tx, notes) = mpsc::channel(NOTIFICATIONS);
        let overflowed = Arc::new(AtomicBool::new(false));
        let overflow = overflowed.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if tx.try_send(Table::from_name(note.payload())).is_err() {
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
        tokio::time::timeout(self.timeout, client.batch_execute(&format!("LISTEN {RELOAD_CHANNEL}")))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(Listener {
            _client: client,
            notes,
            overflowed,
        })
    }

    /// Loads `table` again and swaps it in; `change` is the summary line
    /// of the import that made the new data, for the log.
    async fn rebuild(&self, table: Table, change: Option<String>) -> bool {
        let started = Instant::now();
        match load_aside(self.database_url.clone(), self.timeout, table).await {
            Ok(snapshot) => {
                info!(
                    table = table.name(),
                    ranges = snapshot.index.len(),
                    places = snapshot.index.places(),
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    change = change.as_deref().unwrap_or("unknown"),
                    "reloaded into memory"
                );
                if snapshot.index.is_empty() {
                    warn!(table = table.name(), "the reloaded table is empty");
                }
                self.tables.replace(table, snapshot);
                self.metrics.reloaded(Reload::Table, true);
                true
            }
            Err(err) => {
                error!(
                    table = table.name(),
                    error = %err,
                    "reload failed; still serving the previous data"
                );
                self.metrics.reloaded(Reload::Table, false);
                false
            }
        }
    }
}

impl Refresh for Reloader {
    /// Reloads each table whose version differs from its snapshot's.
    async fn check(&mut self, which: Which) -> bool {
        let versions = async {
            let client = store::connect_for(&self.database_url, self.timeout, "reload check").await?;
            let mut changed = Vec::new();
            for table in which.tables() {
                let now = store::version(&client, table).await?;
                if self.tables.snapshot(table).version != now {
                    changed.push((table, store::change_summary(&client, now).await?));
                }
            }
            Ok::<_, StoreError>(changed)
        };
        let versions = match tokio::time::timeout(self.timeout * 2, versions).await {
            Ok(Ok(versions)) => versions,
            Ok(Err(err)) => {
                warn!(error = %err, "cannot check the tables for changes");
                return false;
            }
            Err(_) => {
                warn!(timeout = ?self.timeout * 2, "checking the tables for changes timed out");
                return false;
            }
        };
        let mut swapped = false;
        for (table, change) in versions {
            swapped |= self.rebuild(table, change).await;
        }
        swapped
    }

    async fn listen(&mut self) -> Option<Which> {
        if self.listener.is_some() || Instant::now() < self.reconnect_at {
            return None;
        }
        match self.open_listener().await {
            Ok(live) => {
                debug!("listening for table reloads");
                self.listener = Some(live);
                self.backoff = Duration::from_secs(1);
                // Whatever changed while nobody listened.
                Some(Which::All)
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?self.backoff, "cannot listen for table reloads");
                self.reconnect_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                None
            }
        }
    }

    async fn announced(&mut self) -> Option<Which> {
        let Some(live) = &mut self.listener else {
            tokio::time::sleep_until(self.reconnect_at.into()).await;
            return None;
        };
        if live.overflowed.swap(false, Ordering::Relaxed) {
            return Some(Which::All);
        }
        match live.notes.recv().await {
            Some(Some(table)) => Some(Which::Table(table)),
            Some(None) => Some(Which::All),
            None => {
                warn!("lost the connection listening for table reloads; reconnecting");
                self.listener = None;
                self.reconnect_at = Instant::now();
                None
            }
        }
    }
}

/// Loads `table` on a blocking-pool thread, so that building a large index
/// never holds up a worker that serves requests.
async fn load_aside(database_url: String, timeout: Duration, table: Table) -> Result<Snapshot, StoreError> {
    let runtime = tokio::runtime::Handle::current();
    let load = async move {
        let mut client = store::connect_for(&database_url, timeout, "index load").await?;
        store::load_snapshot(&mut client, table).await
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

/// Loads the three tables at once, for start-up in memory mode.
pub async fn load_tables(database_url: &str, timeout: Duration) -> Result<Vec<(Table, Snapshot)>, StoreError> {
    let loads = Table::ALL.map(|table| load_aside(database_url.to_owned(), timeout, table));
    let [cn, en, v6] = loads;
    let (cn, en, v6) = tokio::join!(cn, en, v6);
    Ok(vec![(Table::Cn, cn?), (Table::En, en?), (Table::V6, v6?)])
}
