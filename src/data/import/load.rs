//! An import from start to end: read and hash the file, take the table's
//! lock, skip a file that is already live, parse and validate, compare
//! with the live table, and swap in, or stop before touching anything for
//! a dry run or a change over the limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tracing::info;

use super::change::{self, ChangeReport};
use super::swap::{keep_changes, swap_in, KeptChanges};
use super::{file_name, history, read_ranges, ColumnLimits, Format, ImportError, RangeBuilder};
use crate::data::digest::TableDigest;
use crate::data::index::Snapshot;
use crate::data::store;
use crate::domain::{Lang, Table};

/// Changed rows are kept for instances to apply up to a quarter of the
/// new table (past that, reading the whole table costs little more), and
/// never fewer than this many.
const MIN_KEPT_CHANGES: usize = 10_000;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub table: Table,
    pub file: PathBuf,
    /// Detected from the content when `None`.
    pub format: Option<Format>,
    /// Names for mmdb sources; `None` means the table's own language.
    pub lang: Option<String>,
    /// The ipdb language block; `None` means the file's first.
    pub ipdb_language: Option<String>,
    /// Reload even if this file is already the live one.
    pub force: bool,
    /// Compute the change report and change nothing.
    pub dry_run: bool,
    /// Refuse an update that changes more than this percentage of the live
    /// table's addresses.
    pub max_change: Option<f64>,
}

impl ImportOptions {
    /// `file` into `table` with every option at its default: the format
    /// detected, the table's language, a real swap, no change limit.
    pub fn new(table: Table, file: impl Into<PathBuf>) -> ImportOptions {
        ImportOptions {
            table,
            file: file.into(),
            format: None,
            lang: None,
            ipdb_language: None,
            force: false,
            dry_run: false,
            max_change: None,
        }
    }
}

/// How an import ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    /// The file's SHA-256 is already the live data; nothing was done.
    AlreadyLoaded,
    /// A dry run: what the import would change.
    Checked {
        rows: u64,
        merged: u64,
        /// Ranges that overlapped others (the smaller kept the shared
        /// addresses, see the ASN CSV).
        overlapping: u64,
        report: ChangeReport,
    },
    Loaded {
        rows: u64,
        merged: u64,
        overlapping: u64,
        elapsed: Duration,
        report: ChangeReport,
    },
}

/// Imports `options.file` into its table, recording the attempt. A failure
/// at any point rolls back and leaves the live table exactly as it was.
pub async fn import(client: &mut Client, options: &ImportOptions) -> Result<ImportOutcome, ImportError> {
    let started = Instant::now();
    let (bytes, sha256) = read_hashed(options).await?;
    let format = options.format.unwrap_or_else(|| Format::detect(&bytes));
    if options.dry_run {
        // Reads only: no lock, no history.
        let built = parse(client, options, format, bytes).await?;
        let (report, _) = compare_with_live(client, options.table, &built).await?;
        let report = within_limit(options, report)?;
        return Ok(ImportOutcome::Checked {
            rows: built.ranges.len() as u64,
            merged: built.merged as u64,
            overlapping: built.overlapping as u64,
            report,
        });
    }

    let table = options.table;
    history::lock(client, table.name()).await?;
    let result = import_locked(client, options, format, bytes, sha256).await;
    // The import's own error matters more than a failed unlock (the lock
    // goes with the session anyway).
    let unlocked = history::unlock(client, table.name()).await;
    let result = result?;
    unlocked?;
    Ok(match result {
        Some((built, report)) => ImportOutcome::Loaded {
            rows: built.ranges.len() as u64,
            merged: built.merged as u64,
            overlapping: built.overlapping as u64,
            elapsed: started.elapsed(),
            report,
        },
        None => ImportOutcome::AlreadyLoaded,
    })
}

async fn read_hashed(options: &ImportOptions) -> Result<(Vec<u8>, String), ImportError> {
    let bytes = tokio::fs::read(&options.file)
        .await
        .map_err(|source| ImportError::Read {
            path: options.file.clone(),
            source,
        })?;
    Ok(tokio::task::spawn_blocking(move || {
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        (bytes, sha256)
    })
    .await
    .expect("hashing does not panic"))
}

/// The import proper, under the table's lock: `None` if the file is
/// already the live data.
async fn import_locked(
    client: &mut Client,
    options: &ImportOptions,
    format: Format,
    bytes: Vec<u8>,
    sha256: String,
) -> Result<Option<(RangeBuilder, ChangeReport)>, ImportError> {
    let table = options.table;
    if history::live_sha256(client, table.name()).await?.as_deref() == Some(sha256.as_str()) && !options.force {
        return Ok(None);
    }
    let id = history::begin(client, table.name(), &file_name(&options.file), &sha256, format).await?;
    let result = parse_and_swap(client, options, format, bytes, id).await;
    if let Err(err) = &result {
        // The import's own error matters more than failing to record it.
        let _ = history::fail(client, id, err).await;
    }
    result.map(Some)
}

/// Parses, validates, compares and swaps the new rows in, marking the
/// history row `id` succeeded in the swap's own transaction.
async fn parse_and_swap(
    client: &mut Client,
    options: &ImportOptions,
    format: Format,
    bytes: Vec<u8>,
    id: i64,
) -> Result<(RangeBuilder, ChangeReport), ImportError> {
    let built = parse(client, options, format, bytes).await?;
    let (report, live) = compare_with_live(client, options.table, &built).await?;
    let report = within_limit(options, report)?;
    let changes = changes_to_keep(&live, &built);
    let tx = client.transaction().await?;
    swap_in(&tx, options.table, &built.ranges).await?;
    keep_changes(&tx, options.table, id, changes.as_ref()).await?;
    history::succeed(&tx, id, built.ranges.len() as i64, &report).await?;
    tx.commit().await?;
    Ok((built, report))
}

/// The file's ranges, validated against the live table's column limits.
async fn parse(
    client: &Client,
    options: &ImportOptions,
    format: Format,
    bytes: Vec<u8>,
) -> Result<RangeBuilder, ImportError> {
    let table = options.table;
    let ipdb_language = options.ipdb_language.clone();
    let source_error = |source| ImportError::Source {
        path: options.file.clone(),
        format,
        source,
    };
    let lang = mmdb_lang(options).map_err(source_error)?;
    let limits: ColumnLimits = client
        .query(
            "SELECT column_name::text, character_maximum_length FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND character_maximum_length IS NOT NULL",
            &[&options.table.name()],
        )
        .await?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1) as usize))
        .collect();
    let built = tokio::task::spawn_blocking(move || {
        read_ranges(&bytes, format, table, lang, ipdb_language.as_deref(), &limits)
    })
    .await
    .expect("parsing does not panic")
    .map_err(source_error)?;
    info!(
        table = options.table.name(),
        ranges = built.ranges.len(),
        merged = built.merged,
        overlapping = built.overlapping,
        "parsed and validated"
    );
    Ok(built)
}

/// Reads the live table and reports what `built` would change in it; the
/// live data comes back too, for [`changes_to_keep`].
async fn compare_with_live(
    client: &mut Client,
    table: Table,
    built: &RangeBuilder,
) -> Result<(ChangeReport, Snapshot), ImportError> {
    let live = store::load_snapshot(client, table).await.map_err(ImportError::Live)?;
    let report = change::compare(table, live.index.ranges(), new_ranges(built));
    info!(table = table.name(), "{}", report.summary);
    Ok((report, live))
}

/// The rows `built` changes in `live`, with what memory-mode instances
/// need to apply them, unless they are many.
fn changes_to_keep(live: &Snapshot, built: &RangeBuilder) -> Option<KeptChanges> {
    let limit = (built.ranges.len() / 4).max(MIN_KEPT_CHANGES);
    let rows = change::row_changes(live.index.ranges(), new_ranges(built), limit)?;
    Some(KeptChanges {
        base: live.version,
        rows,
        digest: TableDigest::of(new_ranges(built)),
    })
}

fn new_ranges(built: &RangeBuilder) -> impl Iterator<Item = change::Entry<'_>> {
    built.ranges.iter().map(|r| (r.start, r.end, &r.place))
}

/// `report`, unless it changes more than `--max-change` allows.
fn within_limit(options: &ImportOptions, report: ChangeReport) -> Result<ChangeReport, ImportError> {
    match options.max_change {
        Some(limit) if report.changed_percent > limit => Err(ImportError::TooMuchChange {
            limit,
            report: Box::new(report),
        }),
        _ => Ok(report),
    }
}

/// The language of mmdb names for this import: `--lang`, else the table's own.
fn mmdb_lang(options: &ImportOptions) -> Result<Lang, super::SourceError> {
    match options.lang.as_deref().map(Lang::parse) {
        None => Ok(Lang::of_table(options.table)),
        Some(lang) => lang.map_err(super::SourceError::Lang),
    }
}
