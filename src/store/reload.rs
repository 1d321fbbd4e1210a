//! Keeping the in-memory tables in step with PostgreSQL. An import's swap
//! sends `NOTIFY ip_service_reload, '<table>'`; the reloader listens, and
//! also compares versions on a timer, on SIGHUP and whenever the listening
//! connection comes back, so a lost notification costs at most one
//! interval. A changed table is rebuilt aside and swapped in whole; a
//! rebuild that fails leaves the old snapshot serving.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::snapshot::{change_summary, connect_for, load_aside, version};
use super::StoreError;
use crate::domain::Table;
use crate::import::RELOAD_CHANNEL;
use crate::index::Tables;
use crate::metrics::{Metrics, Reload};

/// Notifications held for the reloader; past this they are dropped and a
/// full version check stands in for them.
const NOTIFICATIONS: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps `tables` equal to the database's tables.
pub struct Reloader {
    pub database_url: String,
    /// Bounds connecting and each version check.
    pub timeout: Duration,
    /// How often versions are compared even without a notification.
    pub interval: Duration,
    pub tables: Arc<Tables>,
    pub metrics: Arc<Metrics>,
}

/// A live LISTEN connection and the notifications it forwards.
struct Listener {
    _client: Client,
    notes: mpsc::Receiver<Option<Table>>,
    /// Set when a notification could not be queued.
    overflowed: Arc<AtomicBool>,
}

impl Reloader {
    /// Runs until `stop` is cancelled. `wake` changes on SIGHUP.
    pub async fn run(self, mut wake: watch::Receiver<u64>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut listener: Option<Listener> = None;
        let mut reconnect_at = Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            if listener.is_none() && Instant::now() >= reconnect_at {
                match self.listen().await {
                    Ok(live) => {
                        debug!("listening for table reloads");
                        listener = Some(live);
                        backoff = Duration::from_secs(1);
                        // Whatever changed while nobody listened.
                        self.check(&Table::ALL, &stop).await;
                    }
                    Err(err) => {
                        warn!(error = %err, retry_in = ?backoff, "cannot listen for table reloads");
                        reconnect_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let reconnect = tokio::time::sleep_until(reconnect_at.into());
            tokio::select! {
                () = stop.cancelled() => return,
                note = next_note(&mut listener) => match note {
                    Some(Some(table)) => self.check(&[table], &stop).await,
                    Some(None) => self.check(&Table::ALL, &stop).await,
                    None => {
                        warn!("lost the connection listening for table reloads; reconnecting");
                        listener = None;
                        reconnect_at = Instant::now();
                    }
                },
                _ = ticks.tick() => self.check(&Table::ALL, &stop).await,
                changed = wake.changed() => match changed {
                    Ok(()) => self.check(&Table::ALL, &stop).await,
                    Err(_) => return,
                },
                () = reconnect, if listener.is_none() => {}
            }
            if listener
                .as_ref()
                .is_some_and(|l| l.overflowed.swap(false, Ordering::Relaxed))
            {
                self.check(&Table::ALL, &stop).await;
            }
        }
    }

    /// Opens a connection that LISTENs and forwards each notification's
    /// table (`None` for a payload naming no table).
    async fn listen(&self) -> Result<Listener, StoreError> {
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

    /// Reloads each of `tables` whose version differs from its snapshot's.
    async fn check(&self, tables: &[Table], stop: &CancellationToken) {
        let versions = async {
            let client = connect_for(&self.database_url, self.timeout, "reload check").await?;
            let mut changed = Vec::new();
            for &table in tables {
                let now = version(&client, table).await?;
                if self.tables.snapshot(table).version != now {
                    changed.push((table, change_summary(&client, now).await?));
                }
            }
            Ok::<_, StoreError>(changed)
        };
        let versions = match tokio::time::timeout(self.timeout * 2, versions).await {
            Ok(Ok(versions)) => versions,
            Ok(Err(err)) => return warn!(error = %err, "cannot check the tables for changes"),
            Err(_) => return warn!(timeout = ?self.timeout * 2, "checking the tables for changes timed out"),
        };
        for (table, change) in versions {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.rebuild(table, change) => {}
            }
        }
    }

    /// Loads `table` again and swaps it in; `change` is the summary line
    /// of the import that made the new data, for the log.
    async fn rebuild(&self, table: Table, change: Option<String>) {
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
                crate::index::release_free_memory();
                self.metrics.reloaded(Reload::Table, true);
            }
            Err(err) => {
                error!(
                    table = table.name(),
                    error = %err,
                    "reload failed; still serving the previous data"
                );
                self.metrics.reloaded(Reload::Table, false);
            }
        }
    }
}

/// The next notification, or `None` once the listener is gone; pending
/// forever without a listener.
async fn next_note(listener: &mut Option<Listener>) -> Option<Option<Table>> {
    match listener {
        Some(live) => live.notes.recv().await,
        None => std::future::pending().await,
    }
}
