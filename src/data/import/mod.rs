//! Loading IP databases into the range tables.
//!
//! A source file (`ipdb`, `mmdb` or `csv`) becomes sorted, validated
//! [`Range`]s; `load` compares them with the live table ([`change`]),
//! then COPYs them into a staging table inside one transaction, indexes it
//! and swaps it in (`swap`), so readers see the old table until the
//! commit and the new one after it, and a failure anywhere leaves the live
//! table as it was.

mod asn_csv;
pub mod change;
mod codes;
mod csv_file;
mod export;
mod history;
mod ipdb;
mod load;
mod mmdb_file;
pub mod overrides;
mod progress;
mod swap;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use change::ChangeReport;
pub use codes::{same_place_name, Codes};
pub use csv_file::COLUMNS as CSV_COLUMNS;
pub use export::export;
pub use load::{import, ImportOptions, ImportOutcome};

pub use crate::domain::Family;
use crate::domain::{range_fault, Lang, Place, RangeFault, RowKind, Table, PLACE_COLUMNS};
pub use crate::format::Format;

/// Where in the source a range came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Line(u64),
    Offset(u64),
    Network(ipnetwork::IpNetwork),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Offset(n) => write!(f, "offset {n}"),
            Origin::Network(net) => write!(f, "network {net}"),
        }
    }
}

/// One row to load: inclusive bounds (IPv4 in the low 32 bits) and names.
#[derive(Debug, Clone)]
pub struct Range {
    pub start: u128,
    pub end: u128,
    pub place: Place,
    pub origin: Origin,
}

/// Whether `next` starts right after `last` with the same values, so that
/// the two are stored as one range.
fn extends(last: &Range, next: &Range) -> bool {
    last.end.checked_add(1) == Some(next.start) && last.place == next.place
}

/// Ranges as a source yields them, with a count of merged neighbours and
/// of ranges that overlapped others (network data only, see `asn_csv`).
#[derive(Debug, Default)]
pub struct RangeBuilder {
    pub ranges: Vec<Range>,
    pub merged: usize,
    pub overlapping: usize,
}

impl RangeBuilder {
    /// Appends `range`, extending the previous one instead when it ends
    /// right before `range` and stores the same values.
    pub fn push_merging(&mut self, range: Range) {
        if let Some(last) = self.ranges.last_mut() {
            if extends(last, &range) {
                last.end = range.end;
                self.merged += 1;
                return;
            }
        }
        self.ranges.push(range);
    }
}

/// Where a source's ranges go as it reads them: collected for an import
/// ([`RangeBuilder`]), or straight into an index for file mode.
pub trait RangeSink {
    fn push(&mut self, range: Range) -> Result<(), SourceError>;
}

impl RangeSink for RangeBuilder {
    fn push(&mut self, range: Range) -> Result<(), SourceError> {
        self.push_merging(range);
        Ok(())
    }
}

/// The places a file reader has made, by value. A file's records often
/// differ in values no table keeps (qqwry's owners, MaxMind's postal
/// codes), so many records name one place; each gets the place already made
/// for its values, and a load holds one allocation per place, not one per
/// record.
#[derive(Default)]
struct SharedPlaces(hashbrown::HashSet<Place, std::collections::hash_map::RandomState>);

impl SharedPlaces {
    /// The place with `place`'s values, made before or now.
    fn share(&mut self, place: Place) -> Place {
        self.0.get_or_insert(place).clone()
    }
}

/// What is wrong with a source file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("not a valid file of this format: {0}")]
    NotFormat(String),
    #[error("{at}: {reason}")]
    Row { at: Origin, reason: String },
    #[error("ranges overlap: {first} and {second}")]
    Overlap { first: String, second: String },
    #[error("no ranges to load")]
    Empty,
    #[error("cannot be indexed: {0}")]
    Index(#[from] crate::data::index::IndexError),
    #[error("--lang: {0}")]
    Lang(#[source] crate::domain::LookupError),
    #[error("{0} loads only from the ASN CSV (start,end,asn,as_org)")]
    NetworkFormat(&'static str),
}

/// A CSV's header, each name trimmed.
pub fn csv_headers(reader: &mut csv::Reader<&[u8]>) -> Result<Vec<String>, SourceError> {
    Ok(reader
        .headers()
        .map_err(|e| SourceError::NotFormat(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect())
}

/// Why an import failed; the live table is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} ({format}): {source}")]
    Source {
        path: PathBuf,
        format: Format,
        #[source]
        source: SourceError,
    },
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
    #[error("{origin}: {reason}")]
    Files { origin: String, reason: String },
    #[error("another import into {0} is running")]
    Busy(&'static str),
    #[error(
        "refused: {:.2}% of {}'s live addresses would change, over the limit of {limit}%",
        report.changed_percent,
        report.table
    )]
    TooMuchChange { limit: f64, report: Box<ChangeReport> },
    #[error(
        "refused: {:.2}% of the live corrections would be removed or changed, over the limit of {limit}%",
        report.changed_percent
    )]
    TooManyCorrectionsChanged {
        limit: f64,
        report: Box<overrides::CorrectionReport>,
    },
    #[error("cannot read the live table to compare: {0}")]
    Live(#[source] crate::data::store::StoreError),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// The longest text each column takes (`varchar(n)`). An import reads them
/// from the live table; file mode uses [`schema_limits`].
pub type ColumnLimits = HashMap<String, usize>;

/// The column limits the migrations give every range table, so that
/// serving files refuses exactly what importing them would.
pub fn schema_limits() -> ColumnLimits {
    PLACE_COLUMNS
        .iter()
        .chain(&crate::domain::NETWORK_COLUMNS)
        .filter(|column| !column.number)
        .map(|column| (column.name.to_owned(), column.width))
        .collect()
}

/// Sorts `ranges` and refuses what the tables must never hold: a start
/// after its end, overlaps, text longer than its column, nothing at all.
pub fn validate(ranges: &mut [Range], table: Table, limits: &ColumnLimits) -> Result<(), SourceError> {
    if ranges.is_empty() {
        return Err(SourceError::Empty);
    }
    let family = table.family();
    let describe = |r: &Range| format!("{}-{} ({})", family.text(r.start), family.text(r.end), r.origin);
    for range in ranges.iter() {
        check_range(range, table, limits)?;
    }
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        if range_fault(Some((pair[0].start, pair[0].end)), pair[1].start, pair[1].end).is_some() {
            return Err(SourceError::Overlap {
                first: describe(&pair[0]),
                second: describe(&pair[1]),
            });
        }
    }
    Ok(())
}

/// Refuses a range whose start is after its end, or whose text is longer
/// than its column.
pub fn check_range(range: &Range, table: Table, limits: &ColumnLimits) -> Result<(), SourceError> {
    check_order(range, table.family())?;
    check_lengths(range, table, limits)
}

/// Refuses a range whose start is after its end.
fn check_order(range: &Range, family: Family) -> Result<(), SourceError> {
    if range_fault(None, range.start, range.end) == Some(RangeFault::Reversed) {
        return Err(SourceError::Row {
            at: range.origin.clone(),
            reason: format!(
                "start {} is after end {}",
                family.text(range.start),
                family.text(range.end)
            ),
        });
    }
    Ok(())
}

fn check_lengths(range: &Range, table: Table, limits: &ColumnLimits) -> Result<(), SourceError> {
    let values = range.place.fields().columns();
    let columns = table.columns().iter().map(|column| column.name).zip(values);
    for (column, value) in columns {
        let Some(&max) = limits.get(column) else { continue };
        let chars = value.chars().count();
        if chars > max {
            return Err(SourceError::Row {
                at: range.origin.clone(),
                reason: format!("{column} is {chars} characters, longer than the column's {max}: {value:?}"),
            });
        }
    }
    Ok(())
}

/// Parses `bytes` as `format` into validated ranges for `table`.
pub fn read_ranges(
    bytes: &[u8],
    format: Format,
    table: Table,
    lang: Lang,
    ipdb_language: Option<&str>,
    limits: &ColumnLimits,
) -> Result<RangeBuilder, SourceError> {
    let codes = Codes::get();
    let family = table.family();
    let mut built = match (table.kind(), format) {
        (RowKind::Place, Format::Ipdb) => ipdb::Ipdb::parse(bytes)?.ranges(family, ipdb_language, codes)?,
        (RowKind::Place, Format::Mmdb) => mmdb_file::ranges(bytes, family, lang, codes)?,
        (RowKind::Place, Format::Csv) => csv_file::ranges(bytes, family, codes)?,
        (RowKind::Network, Format::Csv) => asn_csv::ranges(bytes, family)?,
        (RowKind::Network, _) => return Err(SourceError::NetworkFormat(table.name())),
    };
    validate(&mut built.ranges, table, limits)?;
    Ok(built)
}

/// Reads an ipdb or mmdb as `format` and gives `emit` each range as
/// [`read_ranges`] would hold it (merged with equal neighbours, checked
/// against `limits`), in address order, as the file is walked: no list of
/// its ranges is ever held, so memory stays that of what `emit` keeps.
/// A CSV, whose rows may come in any order, goes through [`read_ranges`].
pub fn read_streaming(
    bytes: &[u8],
    format: Format,
    table: Table,
    lang: Lang,
    limits: &ColumnLimits,
    emit: &mut dyn FnMut(Range) -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    let family = table.family();
    let mut merged = Merged {
        pending: None,
        table,
        limits,
        emit,
    };
    let codes = Codes::get();
    match (table.kind(), format) {
        (RowKind::Place, Format::Ipdb) => ipdb::Ipdb::parse(bytes)?.ranges_into(family, None, codes, &mut merged)?,
        (RowKind::Place, Format::Mmdb) => mmdb_file::ranges_into(bytes, family, lang, codes, &mut merged)?,
        (_, Format::Csv) | (RowKind::Network, _) => {
            for range in read_ranges(bytes, format, table, lang, None, limits)?.ranges {
                (merged.emit)(range)?;
            }
            return Ok(());
        }
    }
    match merged.pending.take() {
        Some(last) => (merged.emit)(last),
        None => Ok(()),
    }
}

/// Merges ranges arriving in address order as [`RangeBuilder`] does,
/// checking each, and gives each merged range on once the next one starts.
struct Merged<'a> {
    pending: Option<Range>,
    table: Table,
    limits: &'a ColumnLimits,
    emit: &'a mut dyn FnMut(Range) -> Result<(), SourceError>,
}

impl RangeSink for Merged<'_> {
    fn push(&mut self, range: Range) -> Result<(), SourceError> {
        check_range(&range, self.table, self.limits)?;
        match &mut self.pending {
            Some(last) if extends(last, &range) => {
                last.end = range.end;
                Ok(())
            }
            pending => match pending.replace(range) {
                Some(done) => (self.emit)(done),
                None => Ok(()),
            },
        }
    }
}

/// The file name recorded in the import history.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise, with a plausible header now and then.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        let mut out: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        if seed.is_multiple_of(3) && len > 40 {
            let meta = br#"{"node_count":2,"languages":{"CN":0},"fields":["country_name"]}"#;
            out.splice(..4, (meta.len() as u32).to_be_bytes());
            out.splice(4..4, meta.iter().copied());
        }
        out
    }

    #[test]
    fn garbage_in_any_format_is_an_error_never_a_panic() {
        let limits = ColumnLimits::new();
        for seed in 0..300 {
            let bytes = noise(seed, (seed as usize * 37) % 2000);
            for format in [Format::Ipdb, Format::Mmdb, Format::Csv] {
                for table in Table::ALL {
                    // Ok is possible only for CSV noise that happens to parse.
                    let _ = read_ranges(&bytes, format, table, Lang::En, None, &limits);
                }
            }
        }
    }

    #[test]
    fn streaming_gives_the_ranges_an_import_holds() {
        let sample = include_bytes!("../../../data/sample/GeoLite2-City-sample.mmdb");
        let limits = schema_limits();
        for family in [Table::En, Table::V6] {
            let held = read_ranges(sample, Format::Mmdb, family, Lang::En, None, &limits).unwrap();
            let mut streamed = Vec::new();
            read_streaming(sample, Format::Mmdb, family, Lang::En, &limits, &mut |range| {
                streamed.push(range);
                Ok(())
            })
            .unwrap();
            let bounds = |ranges: &[Range]| -> Vec<(u128, u128, Place)> {
                ranges.iter().map(|r| (r.start, r.end, r.place.clone())).collect()
            };
            assert!(held.merged > 0, "the sample has neighbours to merge");
            assert_eq!(bounds(&streamed), bounds(&held.ranges), "{family:?}");
        }
    }

    #[test]
    fn formats_are_recognised_by_content() {
        assert_eq!(Format::detect(b"start_ip,end_ip\n"), Format::Csv);
        let mut ipdb = 2u32.to_be_bytes().to_vec();
        ipdb.extend_from_slice(b"{}");
        ipdb.extend_from_slice(&[0; 8]);
        assert_eq!(Format::detect(&ipdb), Format::Ipdb);
        let mut mmdb = vec![0; 100];
        mmdb.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        assert_eq!(Format::detect(&mmdb), Format::Mmdb);
    }
}
