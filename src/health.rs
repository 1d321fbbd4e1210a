//! What `/readyz` and the sampled metrics report: how each table and the
//! pool stand now, and the rules for when that keeps the service from
//! answering as configured.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::domain::{RowKind, Table};

/// The state sampled when `/metrics` is scraped rather than counted as it
/// happens.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The tables, or why they cannot be read (the database is down).
    pub tables: Result<Vec<TableState>, Unreadable>,
    pub pool: Option<PoolState>,
    /// The MaxMind database's build time, if one is open.
    pub mmdb_built: Option<SystemTime>,
}

impl HealthReport {
    /// What keeps the service from answering as configured: a table that
    /// cannot be read (the database is down), or a place table that is
    /// empty. The network tables are optional: answers without them only
    /// lack the network (see [`HealthReport::notes`]).
    pub fn missing(&self) -> Vec<String> {
        match &self.tables {
            Err(err) => vec![format!("the tables cannot be read: {err}")],
            Ok(states) => states
                .iter()
                .filter(|state| state.rows == 0 && state.table.kind() == RowKind::Place)
                .map(|state| format!("table {} is empty", state.table.name()))
                .collect(),
        }
    }

    /// What a reader of `/readyz` should know that does not make it
    /// unready: an empty network table, tables served from snapshot files,
    /// or stale because their source's newer data does not load, and how
    /// old their data is.
    pub fn notes(&self) -> Vec<String> {
        let Ok(states) = &self.tables else { return Vec::new() };
        let empty_networks = states
            .iter()
            .filter(|state| state.rows == 0 && state.table.kind() == RowKind::Network)
            .map(|state| format!("table {} is empty: answers carry no network", state.table.name()));
        let freshness = states.iter().filter_map(|state| {
                let age = match state.age() {
                    Some(age) => humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
                    None => "unknown".to_owned(),
                };
                let table = state.table.name();
                match &state.freshness {
                    Freshness::Current => None,
                    Freshness::FromSnapshotFile => Some(format!(
                        "table {table} is served from its snapshot file until the database is checked; its data is {age} old"
                    )),
                    Freshness::Stale(cause) => Some(format!("table {table} is stale: {cause}; still serving data {age} old")),
                }
            });
        empty_networks.chain(freshness).collect()
    }
}

/// One range table as it is served now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub table: Table,
    pub rows: u64,
    /// When its data was produced: the live import's finish, or the data
    /// file's modification time; unknown for rows loaded outside both.
    pub data_time: Option<SystemTime>,
    /// How what is served stands against the source.
    pub freshness: Freshness,
}

impl TableState {
    pub fn age(&self) -> Option<Duration> {
        self.data_time
            .map(|at| SystemTime::now().duration_since(at).unwrap_or_default())
    }
}

/// The PostgreSQL connection pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolState {
    pub max_size: usize,
    pub open: usize,
    pub in_use: usize,
    pub waiting: usize,
}

/// How a table's snapshot stands against its source, for `/readyz` and
/// the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Freshness {
    /// What the source held when last asked.
    #[default]
    Current,
    /// Read from a snapshot file; the source not asked yet.
    FromSnapshotFile,
    /// The source holds other data, which could not be loaded.
    Stale(StaleCause),
}

/// Why a table's newer data did not load. The detail is the error's text:
/// the state is sampled and cloned, which errors are not. Both read the
/// same in `/readyz`, whose note names the table; the variant says which
/// kind of source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleCause {
    /// Reading the table's new version from PostgreSQL failed.
    #[error("its source holds other data, which does not load ({0})")]
    DatabaseReload(String),
    /// The table's rewritten data file does not parse or validate.
    #[error("its source holds other data, which does not load ({0})")]
    FileReload(String),
}

/// Why the tables' state could not be read: the data layer's error.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Unreadable(Arc<dyn std::error::Error + Send + Sync>);

impl Unreadable {
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Unreadable {
        Unreadable(Arc::new(err))
    }
}
