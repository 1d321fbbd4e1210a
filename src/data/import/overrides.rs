//! Corrections in and out: the corrections CSV, read and checked; its
//! import, with a report of what it changes, `--dry-run`, `--max-change`,
//! the history, one transaction that replaces the table, and NOTIFY; and
//! its export.
//!
//! The CSV has a header naming its columns, in any order:
//! - `start_ip,end_ip` (address text), or `network` (CIDR);
//! - `lang`: the answers corrected, `zh-CN` (the default) or `en`;
//! - any of the place columns: `country_code`, `country_name`,
//!   `province_code`, `province_name`, `city_code`, `city_name`,
//!   `district_name`, `carrier_name`;
//! - `reason` (required), `source`, `expires_at` (RFC 3339, or a date
//!   meaning its midnight UTC).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime};

use ipnetwork::IpNetwork;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::csv_file::record_error;
use super::{file_name, history, Codes, Format, ImportError, Origin, SourceError};
use crate::data::corrections::{self, Correction, CorrectionError};
use crate::data::store::{self, OVERRIDES, RELOAD_CHANNEL};
use crate::domain::{Lang, PlaceBuf, TableLang, PLACE_COLUMNS};

/// Every column, in the order `export` writes them.
pub const COLUMNS: [&str; 14] = [
    "start_ip",
    "end_ip",
    "lang",
    "country_code",
    "country_name",
    "province_code",
    "province_name",
    "city_code",
    "city_name",
    "district_name",
    "carrier_name",
    "reason",
    "source",
    "expires_at",
];
/// The longest `source` the table takes.
const SOURCE_WIDTH: usize = 255;
/// How many added and removed corrections a report lists.
const REPORT_LINES: usize = 20;

/// Reads a corrections CSV, each row checked, and refuses two rows of one
/// language and family that overlap, naming both.
pub fn read(bytes: &[u8]) -> Result<Vec<Correction>, SourceError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let headers = super::csv_headers(&mut reader)?;
    let at: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h.as_str(), i)).collect();
    if let Some(unknown) = headers
        .iter()
        .find(|h| *h != "network" && !COLUMNS.contains(&h.as_str()))
    {
        return Err(SourceError::NotFormat(format!(
            "unknown column {unknown:?}; a corrections CSV has network or start_ip,end_ip, then any of {}",
            COLUMNS[2..].join(",")
        )));
    }
    let by_network = match ["network", "start_ip", "end_ip"].map(|column| at.contains_key(column)) {
        [true, false, false] => true,
        [false, true, true] => false,
        _ => {
            return Err(SourceError::NotFormat(
                "the header needs either a network column or start_ip and end_ip".into(),
            ))
        }
    };
    if !at.contains_key("reason") {
        return Err(SourceError::NotFormat("the header has no reason column".into()));
    }
    let columns: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| record_error(&e, &columns))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |name: &str| at.get(name).and_then(|&i| record.get(i)).unwrap_or("").trim();
        let row = parse_row(&field, by_network).map_err(|reason| SourceError::Row {
            at: Origin::Line(line),
            reason,
        })?;
        rows.push((row, line));
    }
    if rows.is_empty() {
        return Err(SourceError::Empty);
    }
    rows.sort_by_key(|(row, _)| corrections::order(row));
    if let Some(i) = corrections::first_overlap(&rows, |(row, _)| row) {
        let describe = |(row, line): &(Correction, u64)| format!("{} (line {line})", row.describe());
        return Err(SourceError::Overlap {
            first: describe(&rows[i]),
            second: describe(&rows[i + 1]),
        });
    }
    Ok(rows.into_iter().map(|(row, _)| row).collect())
}

/// One row, or why it is refused.
fn parse_row<'a>(field: &impl Fn(&str) -> &'a str, by_network: bool) -> Result<Correction, String> {
    let (start, end) = if by_network {
        let network: IpNetwork = field("network")
            .parse()
            .map_err(|e| format!("network {:?}: {e}", field("network")))?;
        (network.network(), network.broadcast())
    } else {
        let bound = |name: &str| {
            field(name)
                .parse::<IpAddr>()
                .map_err(|_| format!("{name} {:?} is not an IP address", field(name)))
        };
        (bound("start_ip")?, bound("end_ip")?)
    };
    if start.is_ipv4() != end.is_ipv4() {
        return Err(format!("start_ip {start} and end_ip {end} are of different families"));
    }
    if corrections::ip_number(start) > corrections::ip_number(end) {
        return Err(format!("start {start} is after end {end}"));
    }
    let lang = match field("lang") {
        "" => TableLang::ZhCn,
        text => match Lang::parse(text) {
            Ok(Lang::ZhCn) => TableLang::ZhCn,
            Ok(Lang::En) => TableLang::En,
            _ => {
                return Err(format!(
                    "lang {text:?}: corrections are written in zh-CN or en (answers in MaxMind's other \
                     languages take the en ones)"
                ))
            }
        },
    };
    let mut place = PlaceBuf {
        country_code: field("country_code").to_owned(),
        country_name: field("country_name").to_owned(),
        province_code: field("province_code").to_owned(),
        province_name: field("province_name").to_owned(),
        city_code: field("city_code").to_owned(),
        city_name: field("city_name").to_owned(),
        district_name: field("district_name").to_owned(),
        carrier: field("carrier_name").to_owned(),
    };
    let codes = Codes::get();
    if !place.country_code.is_empty() && !codes.is_country_code(&place.country_code) {
        return Err(format!(
            "country_code {:?} is not an ISO 3166-1 alpha-2 code",
            place.country_code
        ));
    }
    codes.fill(&mut place);
    if place.country_name.is_empty() && place.country_code.is_empty() {
        // A province or city corrected alone: its GB/T 2260 code if the
        // dictionary knows it as Chinese, so that code and name agree.
        let mut chinese = PlaceBuf {
            country_name: "中国".into(),
            ..place.clone()
        };
        codes.fill(&mut chinese);
        place.province_code = chinese.province_code;
        place.city_code = chinese.city_code;
    }
    let place = place.build();
    for (column, value) in PLACE_COLUMNS.iter().zip(place.fields().columns()) {
        check_width(column.name, value, column.width)?;
    }
    let reason = field("reason");
    if reason.is_empty() {
        return Err("reason is empty: say why the answer is corrected".into());
    }
    let source = field("source");
    check_width("source", source, SOURCE_WIDTH)?;
    let correction = Correction {
        start,
        end,
        lang,
        place,
        reason: reason.to_owned(),
        source: source.to_owned(),
        created_at: None,
        expires_at: expires_at(field("expires_at"))?,
    };
    if !correction.corrects_something() {
        return Err(format!(
            "{} corrects nothing: every place column is empty",
            correction.describe()
        ));
    }
    Ok(correction)
}

fn check_width(column: &str, value: &str, width: usize) -> Result<(), String> {
    let chars = value.chars().count();
    match chars > width {
        true => Err(format!(
            "{column} is {chars} characters, longer than the column's {width}: {value:?}"
        )),
        false => Ok(()),
    }
}

/// `expires_at`: empty for never, RFC 3339, or a date (its midnight UTC).
fn expires_at(text: &str) -> Result<Option<SystemTime>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let full = match text.len() {
        10 => format!("{text}T00:00:00Z"),
        _ => text.to_owned(),
    };
    humantime::parse_rfc3339_weak(&full)
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map(Some)
        .map_err(|_| format!("expires_at {text:?} is neither a date (2027-01-31) nor an RFC 3339 time"))
}

/// What an import of corrections changes: corrections added, removed
/// (a changed one is both), and kept as they were.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrectionReport {
    pub table: &'static str,
    pub live: usize,
    pub new: usize,
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
    /// Of the live corrections, the share removed or changed.
    pub changed_percent: f64,
    /// Up to `REPORT_LINES` of each, as `+ range (lang) column=value …: reason`.
    pub added_rows: Vec<String>,
    pub removed_rows: Vec<String>,
}

impl CorrectionReport {
    fn compare(live: &[Correction], new: &[Correction]) -> CorrectionReport {
        let (live_by_start, new_by_start) = (by_start(live), by_start(new));
        let held = |row: &Correction, by_start: &HashMap<(TableLang, IpAddr), &Correction>| {
            by_start
                .get(&(row.lang, row.start))
                .is_some_and(|other| other.says_the_same(row))
        };
        let added: Vec<&Correction> = new.iter().filter(|n| !held(n, &live_by_start)).collect();
        let removed: Vec<&Correction> = live.iter().filter(|l| !held(l, &new_by_start)).collect();
        let lines = |rows: &[&Correction], sign: char| rows.iter().take(REPORT_LINES).map(|r| line(r, sign)).collect();
        CorrectionReport {
            table: OVERRIDES,
            live: live.len(),
            new: new.len(),
            added: added.len(),
            removed: removed.len(),
            kept: new.len() - added.len(),
            changed_percent: match live.len() {
                0 => 0.0,
                n => removed.len() as f64 * 100.0 / n as f64,
            },
            added_rows: lines(&added, '+'),
            removed_rows: lines(&removed, '-'),
        }
    }
}

/// Corrections by language and start: within a language, no two start
/// at one address.
fn by_start(rows: &[Correction]) -> HashMap<(TableLang, IpAddr), &Correction> {
    rows.iter().map(|row| ((row.lang, row.start), row)).collect()
}

/// One correction as a report line.
fn line(row: &Correction, sign: char) -> String {
    let values: Vec<String> = PLACE_COLUMNS
        .iter()
        .zip(row.place.fields().columns())
        .filter(|(_, value)| !value.is_empty())
        .map(|(column, value)| format!("{}={value}", column.name))
        .collect();
    let expires = match row.expires_at {
        Some(at) => format!(", until {}", humantime::format_rfc3339_seconds(at)),
        None => String::new(),
    };
    format!(
        "{sign} {} {}: {}{expires}",
        row.describe(),
        values.join(" "),
        row.reason
    )
}

impl fmt::Display for CorrectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} corrections live, {} in the file: {} added, {} removed, {} kept ({:.2}% of the live ones removed or changed)",
            self.table, self.live, self.new, self.added, self.removed, self.kept, self.changed_percent
        )?;
        for row in self.added_rows.iter().chain(&self.removed_rows) {
            writeln!(f, "  {row}")?;
        }
        let unlisted = (self.added - self.added_rows.len()) + (self.removed - self.removed_rows.len());
        if unlisted > 0 {
            writeln!(f, "  … and {unlisted} more")?;
        }
        Ok(())
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct OverridesImport {
    pub file: PathBuf,
    pub force: bool,
    pub dry_run: bool,
    /// Refuse an import that removes or changes more than this percentage
    /// of the live corrections.
    pub max_change: Option<f64>,
}

/// How an import of corrections ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum OverridesOutcome {
    /// The file's SHA-256 is already the live data; nothing was done.
    AlreadyLoaded,
    Checked {
        report: CorrectionReport,
    },
    Loaded {
        elapsed: Duration,
        report: CorrectionReport,
    },
}

/// Replaces the corrections with the file's, recording the attempt; a
/// failure at any point leaves the live corrections exactly as they were.
pub async fn import(client: &mut Client, options: &OverridesImport) -> Result<OverridesOutcome, ImportError> {
    let started = Instant::now();
    let bytes = tokio::fs::read(&options.file)
        .await
        .map_err(|source| ImportError::Read {
            path: options.file.clone(),
            source,
        })?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let rows = read(&bytes).map_err(|source| ImportError::Source {
        path: options.file.clone(),
        format: Format::Csv,
        source,
    })?;
    if options.dry_run {
        let report = within_limit(options, compare_with_live(client, &rows).await?)?;
        return Ok(OverridesOutcome::Checked { report });
    }
    history::lock(client, OVERRIDES).await?;
    let result = import_locked(client, options, rows, &sha256).await;
    let unlocked = history::unlock(client, OVERRIDES).await;
    let result = result?;
    unlocked?;
    Ok(match result {
        Some(report) => OverridesOutcome::Loaded {
            elapsed: started.elapsed(),
            report,
        },
        None => OverridesOutcome::AlreadyLoaded,
    })
}

async fn import_locked(
    client: &mut Client,
    options: &OverridesImport,
    rows: Vec<Correction>,
    sha256: &str,
) -> Result<Option<CorrectionReport>, ImportError> {
    if history::live_sha256(client, OVERRIDES).await?.as_deref() == Some(sha256) && !options.force {
        return Ok(None);
    }
    let id = history::begin(client, OVERRIDES, &file_name(&options.file), sha256, Format::Csv).await?;
    let result = replace(client, options, rows, id).await;
    if let Err(err) = &result {
        let _ = history::fail(client, id, err).await;
    }
    result.map(Some)
}

/// Compares, then replaces the live corrections in one transaction that
/// also marks history row `id` succeeded and tells memory-mode instances.
/// A correction that stays as it was keeps its `created_at`.
async fn replace(
    client: &mut Client,
    options: &OverridesImport,
    mut rows: Vec<Correction>,
    id: i64,
) -> Result<CorrectionReport, ImportError> {
    let tx = client.transaction().await?;
    tx.execute(&format!("LOCK TABLE {OVERRIDES} IN EXCLUSIVE MODE"), &[])
        .await?;
    let (live, _) = store::load_corrections(&tx).await.map_err(ImportError::Live)?;
    let report = within_limit(options, CorrectionReport::compare(&live, &rows))?;
    let live_by_start = by_start(&live);
    for row in &mut rows {
        let kept = live_by_start
            .get(&(row.lang, row.start))
            .filter(|l| l.says_the_same(row));
        row.created_at = kept.and_then(|l| l.created_at);
    }
    tx.execute(&format!("DELETE FROM {OVERRIDES}"), &[]).await?;
    copy_in(&tx, &rows).await?;
    history::succeed(&tx, id, rows.len() as i64, &report).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&RELOAD_CHANNEL, &OVERRIDES])
        .await?;
    tx.commit().await?;
    Ok(report)
}

async fn copy_in(tx: &tokio_postgres::Transaction<'_>, rows: &[Correction]) -> Result<(), ImportError> {
    let columns = format!(
        "start_ip, end_ip, lang, {}, reason, source, created_at, expires_at",
        store::place_columns("")
    );
    let sink = tx
        .copy_in(&format!("COPY {OVERRIDES} ({columns}) FROM STDIN (FORMAT binary)"))
        .await?;
    let mut types = vec![Type::INET, Type::INET, Type::TEXT];
    types.extend(PLACE_COLUMNS.iter().map(|_| Type::VARCHAR));
    types.extend([Type::TEXT, Type::VARCHAR, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ]);
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let now = SystemTime::now();
    for row in rows {
        let lang = row.lang.as_str();
        let values = row.place.fields().columns();
        let created_at = row.created_at.unwrap_or(now);
        let mut cells: Vec<&(dyn ToSql + Sync)> = vec![&row.start, &row.end, &lang];
        cells.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
        cells.extend([
            &row.reason as &(dyn ToSql + Sync),
            &row.source,
            &created_at,
            &row.expires_at,
        ]);
        writer.as_mut().write(&cells).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn compare_with_live(client: &Client, rows: &[Correction]) -> Result<CorrectionReport, ImportError> {
    let (live, _) = store::load_corrections(client).await.map_err(ImportError::Live)?;
    Ok(CorrectionReport::compare(&live, rows))
}

fn within_limit(options: &OverridesImport, report: CorrectionReport) -> Result<CorrectionReport, ImportError> {
    match options.max_change {
        Some(limit) if report.changed_percent > limit => Err(ImportError::TooManyCorrectionsChanged {
            limit,
            report: Box::new(report),
        }),
        _ => Ok(report),
    }
}

/// Writes the corrections as the CSV [`read`] takes, by language and
/// address, expired ones too; returns the bytes written.
pub async fn export(client: &Client, out: &mut (dyn AsyncWrite + Unpin + Send)) -> Result<u64, ImportError> {
    let (rows, _) = store::load_corrections(client).await.map_err(ImportError::Live)?;
    let bytes = to_csv(&rows);
    out.write_all(&bytes).await.map_err(ImportError::Write)?;
    out.flush().await.map_err(ImportError::Write)?;
    Ok(bytes.len() as u64)
}

/// `rows` as the CSV [`read`] takes, with a header; just the header for none.
pub fn to_csv(rows: &[Correction]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut write = |record: &[&str]| writer.write_record(record).expect("writing to memory");
    write(&COLUMNS);
    for row in rows {
        let (start, end) = (row.start.to_string(), row.end.to_string());
        let expires_at = row
            .expires_at
            .map(|at| humantime::format_rfc3339_seconds(at).to_string())
            .unwrap_or_default();
        let mut record = vec![start.as_str(), &end, row.lang.as_str()];
        record.extend(row.place.fields().columns());
        record.extend([row.reason.as_str(), &row.source, &expires_at]);
        write(&record);
    }
    writer.into_inner().expect("writing to memory")
}

/// The corrections file of a data directory, for file mode.
pub fn read_file(path: &Path) -> Result<Vec<Correction>, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    read(&bytes).map_err(|source| ImportError::Source {
        path: path.to_owned(),
        format: Format::Csv,
        source,
    })
}

impl From<CorrectionError> for SourceError {
    fn from(err: CorrectionError) -> SourceError {
        match err {
            CorrectionError::Overlap { first, second } => SourceError::Overlap { first, second },
            CorrectionError::Index(err) => SourceError::Index(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(csv: &str) -> String {
        read(csv.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_partial_correction_by_network_or_range_reads_back() {
        let rows = read(
            "network,lang,carrier_name,reason,source,expires_at\n\
             1.2.3.0/24,,联通,CDN findings,cdn-team,2027-01-31\n\
             240e::/120,en,China Unicom,CDN findings,,\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        let (v4, v6) = (&rows[0], &rows[1]);
        assert_eq!(
            (v4.start.to_string(), v4.end.to_string()),
            ("1.2.3.0".into(), "1.2.3.255".into())
        );
        assert_eq!(v4.lang, TableLang::ZhCn);
        assert_eq!(v4.place.fields().columns(), ["", "", "", "", "", "", "", "联通"]);
        assert_eq!(
            v4.expires_at,
            Some(humantime::parse_rfc3339("2027-01-31T00:00:00Z").unwrap())
        );
        assert_eq!(v6.lang, TableLang::En);
        assert_eq!(v6.end.to_string(), "240e::ff");
        let by_range =
            read("start_ip,end_ip,country_name,province_name,reason\n1.2.3.0,1.2.3.9,中国,广东省,x\n".as_bytes())
                .unwrap();
        // Codes come from the names, as for every import.
        assert_eq!(
            by_range[0].place.fields().columns()[..4],
            ["CN", "中国", "440000", "广东省"]
        );
    }

    #[test]
    fn bad_rows_are_refused_with_their_line() {
        let head = "start_ip,end_ip,lang,country_code,city_name,reason\n";
        for (row, says) in [
            (
                "1.2.3.0,1.2.3.9,,,,why",
                "line 2: 1.2.3.0 - 1.2.3.9 (zh-CN) corrects nothing",
            ),
            (
                "1.2.3.0,1.2.3.9,,XX,,why",
                "line 2: country_code \"XX\" is not an ISO 3166-1 alpha-2 code",
            ),
            ("1.2.3.0,1.2.3.9,,,深圳,", "line 2: reason is empty"),
            (
                "1.2.3.9,1.2.3.0,,,深圳,why",
                "line 2: start 1.2.3.9 is after end 1.2.3.0",
            ),
            ("1.2.3.0,::1,,,深圳,why", "different families"),
            ("1.2.3.0,1.2.3.9,de,,深圳,why", "corrections are written in zh-CN or en"),
            ("1.2.3.0,1.2.3.9,,,,", "line 2"),
        ] {
            let err = refused(&format!("{head}{row}\n"));
            assert!(err.contains(says), "{row}: {err}");
        }
        let long = "深".repeat(101);
        assert!(refused(&format!("{head}1.2.3.0,1.2.3.9,,,{long},why\n")).contains("city_name is 101 characters"));
        assert!(refused("network,carrier,reason\n1.2.3.0/24,x,y\n").contains("unknown column \"carrier\""));
        assert!(refused("network,carrier_name\n1.2.3.0/24,x\n").contains("no reason column"));
        assert!(refused("network,carrier_name,reason\n").contains("no ranges"));
    }

    #[test]
    fn overlapping_corrections_of_one_language_are_refused_naming_both() {
        let err = refused(
            "network,lang,carrier_name,reason\n1.2.3.0/24,zh-CN,a,x\n1.2.0.0/16,en,b,x\n1.2.3.128/25,zh-CN,c,x\n",
        );
        assert_eq!(
            err,
            "ranges overlap: 1.2.3.0 - 1.2.3.255 (zh-CN) (line 2) and 1.2.3.128 - 1.2.3.255 (zh-CN) (line 4)"
        );
    }
}
