//! Where the range tables and the MaxMind database come from, and how
//! they stay fresh: PostgreSQL queried per call or held in memory
//! (`postgres`), IP database files ([`files`]), the built-in sample
//! (`builtin`, served as files are) and the mmdb file (`mmdb`). Every
//! in-memory source runs on the one refresh loop in [`refresh`]; freed
//! memory is given back after a swap there.

mod builtin;
pub mod disk;
pub mod files;
mod mmdb;
mod postgres;
pub mod refresh;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use files::{DataFiles, FileSource, FileTables, CORRECTIONS_FILE};

use crate::config::{DataSource, LookupMode, Pool, Postgres, Settings};
use crate::data::corrections::Corrections;
use crate::data::index::Tables;
use crate::data::mmdb::{GeoDb, MaxMind};
use crate::data::ranges::Ranges;
use crate::data::store::{self, Store};
use crate::domain::{RowKind, Table};
use crate::health::{Freshness, TableState};
use crate::metrics::Metrics;
use files::FileWatch;
use mmdb::MmdbFile;
use postgres::Reloader;
use refresh::Refresh;

/// The tables and the MaxMind database, open and kept fresh.
pub struct Sources {
    /// The range tables, read per call or held in memory.
    pub ranges: Ranges,
    /// The MaxMind database, if there is one.
    pub maxmind: Option<MaxMind>,
    /// What is served, for the log.
    pub described: String,
    /// The refresh loops, which end when `stop` is cancelled.
    pub refreshing: Vec<JoinHandle<()>>,
}

/// Opens what `settings` name and starts keeping it fresh: every
/// `settings.reload_interval`, whenever `wake` changes (SIGHUP), and on
/// PostgreSQL's notifications, until `stop`.
pub async fn open(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    wake: &watch::Receiver<u64>,
    stop: &CancellationToken,
) -> anyhow::Result<Sources> {
    let mut refreshing = Vec::new();
    let every = settings.reload_interval;
    let (ranges, file_mmdb, described) = match find(&settings.source)? {
        Resolved::Postgres(pg) => {
            let (ranges, described) = open_postgres(pg, metrics).await?;
            if let Ranges::Memory(tables) = &ranges {
                let reloader = Reloader::new(pg, tables.clone(), metrics.clone());
                refreshing.push(keep_fresh(reloader, every, wake, stop));
            }
            (ranges, None, described)
        }
        Resolved::Files(files) => {
            let (tables, mmdb, described) = open_files(files.clone(), &Table::ALL).await?;
            if !files.is_sample() {
                let watch = FileWatch {
                    files,
                    tables: tables.clone(),
                    metrics: metrics.clone(),
                };
                refreshing.push(keep_fresh(watch, every, wake, stop));
            }
            (Ranges::Memory(tables), mmdb, described)
        }
    };
    // --mmdb wins over an mmdb among the data files.
    let mmdb = match (&settings.mmdb, file_mmdb) {
        (Some(path), _) => Some(FileSource::Path(path.clone())),
        (None, found) => found,
    };
    let maxmind = match mmdb {
        Some(FileSource::Path(path)) => {
            let file = MmdbFile::open(&path, metrics.clone(), settings.mmdb_ranges)?;
            let maxmind = file.maxmind().clone();
            refreshing.push(keep_fresh(file, every, wake, stop));
            Some(maxmind)
        }
        Some(FileSource::Builtin(bytes)) => Some(builtin_mmdb(bytes)?.with_networks(settings.mmdb_ranges)),
        None => None,
    };
    Ok(Sources {
        ranges,
        maxmind,
        described,
        refreshing,
    })
}

fn keep_fresh(
    source: impl Refresh + 'static,
    every: Duration,
    wake: &watch::Receiver<u64>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(refresh::run(source, every, wake.clone(), stop.clone()))
}

/// A source, with a file source's files found.
enum Resolved<'a> {
    Postgres(&'a Postgres),
    /// A directory's files, or the built-in sample.
    Files(DataFiles),
}

fn find(source: &DataSource) -> anyhow::Result<Resolved<'_>> {
    Ok(match source {
        DataSource::Postgres(pg) => Resolved::Postgres(pg),
        DataSource::Files(dir) => Resolved::Files(DataFiles::in_dir(dir)?),
        DataSource::Builtin => Resolved::Files(DataFiles::sample()),
    })
}

/// The tables `source` gives, held in memory: what the load generator
/// samples addresses from.
pub async fn load_tables(source: &DataSource) -> anyhow::Result<Tables> {
    Ok(match find(source)? {
        Resolved::Postgres(pg) => Tables::new(postgres::load_tables(&pg.url, pg.pool.timeout).await?),
        Resolved::Files(files) => Tables::new(load_files(files, &Table::ALL).await?.tables),
    })
}

/// What a server on `source` would answer from, without a server:
/// PostgreSQL per call (or its tables and corrections read into memory
/// first, as `source` says), or files read for only `tables`. What
/// `resolve` and `audit` answer from offline.
pub async fn open_offline(
    source: &DataSource,
    mmdb: Option<&Path>,
    tables: &[Table],
) -> anyhow::Result<(Ranges, Option<MaxMind>)> {
    let (ranges, file_mmdb) = match find(source)? {
        Resolved::Postgres(pg) if pg.lookup == LookupMode::Memory => {
            let tables = Tables::new(postgres::load_tables(&pg.url, pg.pool.timeout).await?);
            tables.replace_corrections(postgres::load_corrections(&pg.url, pg.pool.timeout).await?);
            (Ranges::Memory(Arc::new(tables)), None)
        }
        Resolved::Postgres(pg) => (
            Ranges::Postgres(Store::new(&pg.url, pg.pool, Arc::new(Metrics::new()))?),
            None,
        ),
        Resolved::Files(files) => {
            let (tables, mmdb, _) = open_files(files, tables).await?;
            (Ranges::Memory(tables), mmdb)
        }
    };
    let maxmind = match (mmdb, file_mmdb) {
        (Some(path), _) => Some(MaxMind::open(path)?),
        (None, Some(FileSource::Path(path))) => Some(MaxMind::open(&path)?),
        (None, Some(FileSource::Builtin(bytes))) => Some(builtin_mmdb(bytes)?),
        (None, None) => None,
    };
    Ok((ranges, maxmind))
}

/// The source an offline tool names: the database at `url` if given
/// (read as `lookup` says), else `data`'s files, else what `serve` would
/// serve with neither.
pub fn offline(url: Option<&str>, data: Option<&Path>, lookup: LookupMode, timeout: Duration) -> DataSource {
    match (url, data) {
        (Some(url), _) => DataSource::Postgres(Postgres {
            url: url.to_owned(),
            notify_url: None,
            snapshot_dir: None,
            lookup,
            migrate: false,
            pool: Pool { size: 8, timeout },
        }),
        (None, Some(dir)) => DataSource::Files(dir.to_owned()),
        (None, None) => DataSource::default_here(),
    }
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

async fn open_postgres(pg: &Postgres, metrics: &Arc<Metrics>) -> anyhow::Result<(Ranges, String)> {
    if pg.migrate {
        let applied = store::migrate(&pg.url)
            .await
            .context("failed to migrate the database")?;
        info!(applied, "migrations up to date");
    }
    let described = describe_database(&pg.url);
    Ok(match pg.lookup {
        LookupMode::Postgres => {
            let store = Store::new(&pg.url, pg.pool, metrics.clone())?;
            match tokio::time::timeout(pg.pool.timeout * 5, store.table_states()).await {
                Ok(Ok(states)) => log_table_states(&states, "table in PostgreSQL"),
                Ok(Err(err)) => warn!(error = %err, "cannot read the tables; serving anyway"),
                Err(_) => warn!("reading the tables timed out; serving anyway"),
            }
            (
                Ranges::Postgres(store),
                format!("PostgreSQL {described}, lookups in PostgreSQL"),
            )
        }
        LookupMode::Memory => {
            let started = Instant::now();
            if let Some(dir) = &pg.snapshot_dir {
                if let Some(snapshots) = read_snapshots(dir).await {
                    let tables = Arc::new(Tables::new(snapshots));
                    tables.replace_corrections(read_corrections_snapshot(dir).await);
                    for table in Table::ALL {
                        tables.set_freshness(table, Freshness::FromSnapshotFile);
                    }
                    log_tables(&tables, &Table::ALL, started.elapsed());
                    let described = format!(
                        "PostgreSQL {described}, tables in memory from the snapshots in {} until checked",
                        dir.display()
                    );
                    return Ok((Ranges::Memory(tables), described));
                }
            }
            let loaded = postgres::load_tables(&pg.url, pg.pool.timeout)
                .await
                .with_context(|| format!("cannot load the tables from {described} into memory"))?;
            let tables = Arc::new(Tables::new(loaded));
            let corrections = postgres::load_corrections(&pg.url, pg.pool.timeout)
                .await
                .with_context(|| format!("cannot load the corrections from {described}"))?;
            tables.replace_corrections(corrections);
            log_tables(&tables, &Table::ALL, started.elapsed());
            if let Some(dir) = pg.snapshot_dir.clone() {
                // Written in the background: serving need not wait for the disk.
                let tables = tables.clone();
                tokio::spawn(async move {
                    for table in Table::ALL {
                        postgres::keep_snapshot(&dir, table, tables.snapshot(table)).await;
                    }
                    postgres::keep_corrections_snapshot(&dir, tables.corrections()).await;
                });
            }
            (
                Ranges::Memory(tables),
                format!("PostgreSQL {described}, tables in memory"),
            )
        }
    })
}

/// The MaxMind database compiled into the binary with the sample.
fn builtin_mmdb(bytes: &'static [u8]) -> anyhow::Result<MaxMind> {
    Ok(MaxMind::new(GeoDb::from_static(bytes, "built-in sample")?))
}

/// Every table's snapshot from `dir`, if all are there and valid; a
/// refused one is logged (once, with why) and none is used. A network
/// table without one (a directory written before there were network
/// tables) starts empty and is loaded by the first check, so that an
/// upgraded instance still starts while the database is away.
async fn read_snapshots(dir: &Path) -> Option<Vec<(Table, crate::data::index::Snapshot)>> {
    let dir = dir.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let mut snapshots = Vec::new();
        for table in Table::ALL {
            match disk::read(&dir, table) {
                Ok(Some(snapshot)) => snapshots.push((table, snapshot)),
                Ok(None) if table.kind() == RowKind::Network => {
                    info!(table = table.name(), dir = %dir.display(), "no snapshot yet: the network table starts empty");
                }
                Ok(None) => {
                    info!(table = table.name(), dir = %dir.display(), "no snapshot yet: loading from PostgreSQL");
                    return None;
                }
                Err(err) => {
                    warn!(error = %err, "snapshot refused: loading from PostgreSQL");
                    return None;
                }
            }
        }
        Some(snapshots)
    });
    read.await.ok().flatten()
}

/// The corrections' snapshot in `dir`, as they stand now; none (until the
/// first check reads them) if there is none or it is refused.
async fn read_corrections_snapshot(dir: &Path) -> Corrections {
    let dir = dir.to_owned();
    let read = tokio::task::spawn_blocking(move || disk::read_corrections(&dir, std::time::SystemTime::now()));
    match read.await {
        Ok(Ok(Some(corrections))) => corrections,
        Ok(Ok(None)) => {
            info!("no snapshot of the corrections yet: none apply until the first check");
            Corrections::none()
        }
        Ok(Err(err)) => {
            warn!(error = %err, "corrections snapshot refused: none apply until the first check");
            Corrections::none()
        }
        Err(_) => Corrections::none(),
    }
}

/// The `wanted` tables from `files`, the mmdb among them, and what they
/// are, for the log.
async fn open_files(files: DataFiles, wanted: &[Table]) -> anyhow::Result<(Arc<Tables>, Option<FileSource>, String)> {
    let started = Instant::now();
    let described = files.origin.clone();
    let loaded = load_files(files, wanted).await?;
    let tables = Arc::new(Tables::new(loaded.tables));
    tables.replace_corrections(loaded.corrections);
    log_tables(&tables, wanted, started.elapsed());
    crate::memory::release_free_memory();
    Ok((tables, loaded.mmdb, described))
}

/// One line per table: ranges, distinct places, memory and data age; a
/// warning for each empty table, whose addresses only MaxMind can answer;
/// then the corrections held.
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
    let corrections = tables.corrections();
    info!(
        in_force = corrections.in_force(),
        expired = corrections.rows().len() - corrections.in_force(),
        "corrections loaded into memory"
    );
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
    match (rows, table.kind()) {
        (0, RowKind::Place) => warn!(
            table = table.name(),
            "table is empty: its addresses get MaxMind's answer or none"
        ),
        (0, RowKind::Network) => warn!(table = table.name(), "network table is empty: answers carry no network"),
        _ => {}
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
