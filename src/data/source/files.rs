//! Serving from files instead of a database: which file feeds which
//! table, read with the importer's own parsers, merge rules and
//! validation, so that file mode answers exactly as PostgreSQL would after
//! importing the same files. An `.ipdb` gives cn and v6, an `.mmdb` gives
//! en (English names) and the MaxMind fallback, and a `.csv` gives the
//! table its name says (`cn.csv`, `ip_service_v6.csv`, …).
//!
//! Corrections come from `overrides.csv`, the CSV `import --table
//! overrides` takes.
//!
//! A table whose file is replaced or rewritten is read again in the
//! background and swapped in whole; a file that does not load is logged
//! and the table keeps what it had.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::refresh::{signature, Refresh, ToCheck};
use crate::data::corrections::Corrections;
use crate::data::import::{overrides, read_streaming, schema_limits, Format, ImportError, Range, SourceError};
use crate::data::index::{Builder, Key, RangeIndex, Snapshot, TableIndex, Tables, Version};
use crate::domain::{Family, Lang, Table};
use crate::health::{Freshness, StaleCause};
use crate::metrics::{Metrics, Reload};

/// The corrections file of a data directory.
pub const CORRECTIONS_FILE: &str = "overrides.csv";

/// Whether a file is the corrections file (`overrides.csv`, or the
/// table's name), which feeds no range table.
fn is_corrections_file(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == CORRECTIONS_FILE || name == "ip_service_overrides.csv"
}

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub enum FileSource {
    Path(PathBuf),
    Builtin(&'static [u8]),
}

impl FileSource {
    fn read(&self) -> Result<Cow<'static, [u8]>, ImportError> {
        match self {
            FileSource::Path(path) => std::fs::read(path).map(Cow::Owned).map_err(|source| ImportError::Read {
                path: path.clone(),
                source,
            }),
            FileSource::Builtin(bytes) => Ok(Cow::Borrowed(bytes)),
        }
    }
}

/// One data file.
#[derive(Debug, Clone)]
struct DataFile {
    name: String,
    source: FileSource,
}

impl DataFile {
    /// The file's version as it is now, and when it was last written
    /// (none for the built-in sample, or a file that cannot be read).
    fn version(&self) -> (Version, Option<SystemTime>) {
        match &self.source {
            FileSource::Path(path) => match signature(path) {
                Ok(signature) => (
                    Version::File(signature),
                    std::fs::metadata(path).and_then(|m| m.modified()).ok(),
                ),
                Err(_) => (Version::Absent, None),
            },
            FileSource::Builtin(_) => (Version::Builtin, None),
        }
    }

    fn format(&self) -> Option<Format> {
        Format::of_name(&self.name)
    }

    fn path(&self) -> PathBuf {
        match &self.source {
            FileSource::Path(path) => path.clone(),
            FileSource::Builtin(_) => PathBuf::from(format!("<built-in sample>/{}", self.name)),
        }
    }
}

/// One data file as read, and its version just before.
struct Contents<'a> {
    name: &'a str,
    version: (Version, Option<SystemTime>),
    bytes: Cow<'static, [u8]>,
}

/// Which file feeds each table, and which is the MaxMind database.
struct Plan<'a> {
    tables: Vec<(Table, &'a DataFile)>,
    mmdb: Option<&'a DataFile>,
}

/// A set of data files: a directory's, or the built-in sample.
#[derive(Debug, Clone)]
pub struct DataFiles {
    /// Where they are, for the log: "files in DIR" or "the built-in sample".
    pub origin: String,
    /// The directory they were found in; none for the built-in sample.
    dir: Option<PathBuf>,
    files: Vec<DataFile>,
}

/// What a set of files gives: the tables, the MaxMind database if there
/// is one, and the corrections (none without a corrections file).
pub struct FileTables {
    pub tables: Vec<(Table, Snapshot)>,
    pub mmdb: Option<FileSource>,
    pub corrections: Corrections,
}

impl DataFiles {
    /// The `.ipdb`, `.mmdb` and `.csv` files directly in `dir`.
    pub fn in_dir(dir: &Path) -> Result<DataFiles, ImportError> {
        let read_error = |source| ImportError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if !path.is_file() {
                continue;
            }
            let file = DataFile {
                name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                source: FileSource::Path(path),
            };
            if file.format().is_some() {
                files.push(file);
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(DataFiles {
            origin: format!("files in {}", dir.display()),
            dir: Some(dir.to_owned()),
            files,
        })
    }

    /// The files as they are now: the directory read again, since a file
    /// may have been added, renamed or removed.
    pub fn rescanned(&self) -> Result<DataFiles, ImportError> {
        match &self.dir {
            Some(dir) => DataFiles::in_dir(dir),
            None => Ok(self.clone()),
        }
    }

    /// The sample compiled into the binary (`source::builtin`).
    pub fn sample() -> DataFiles {
        DataFiles {
            origin: "the built-in sample".to_owned(),
            dir: None,
            files: super::builtin::SAMPLE
                .iter()
                .map(|&(name, bytes)| DataFile {
                    name: name.to_owned(),
                    source: FileSource::Builtin(bytes),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether these are the built-in sample's files.
    pub fn is_sample(&self) -> bool {
        self.files.iter().all(|f| matches!(f.source, FileSource::Builtin(_)))
    }

    /// Which file feeds each table, and which is the MaxMind database.
    fn plan(&self) -> Result<Plan<'_>, ImportError> {
        let mut tables: Vec<(Table, &DataFile)> = Vec::new();
        let mut mmdb: Option<&DataFile> = None;
        for file in &self.files {
            match file.format() {
                Some(Format::Ipdb) => {
                    self.claim(Table::Cn, file, &mut tables)?;
                    self.claim(Table::V6, file, &mut tables)?;
                }
                Some(Format::Mmdb) => {
                    if let Some(other) = mmdb {
                        return Err(self.conflict(format!("two MaxMind databases, {} and {}", other.name, file.name)));
                    }
                    mmdb = Some(file);
                    self.claim(Table::En, file, &mut tables)?;
                }
                Some(Format::Csv) if is_corrections_file(&file.name) => {}
                Some(Format::Csv) => {
                    let stem = Path::new(&file.name).file_stem().unwrap_or_default().to_string_lossy();
                    let table = table_of_csv(&stem).ok_or_else(|| {
                        self.conflict(format!(
                            "cannot tell which table {} is for: name it cn.csv, en.csv, v6.csv, asn.csv or asn_v6.csv",
                            file.name
                        ))
                    })?;
                    self.claim(table, file, &mut tables)?;
                }
                None => {}
            }
        }
        if tables.is_empty() {
            return Err(self.conflict("no .ipdb, .mmdb or .csv files".to_owned()));
        }
        Ok(Plan { tables, mmdb })
    }

    /// Records that `file` fills `table`, unless another file already does.
    fn claim<'a>(
        &self,
        table: Table,
        file: &'a DataFile,
        tables: &mut Vec<(Table, &'a DataFile)>,
    ) -> Result<(), ImportError> {
        if let Some((_, other)) = tables.iter().find(|(t, _)| *t == table) {
            return Err(self.conflict(format!(
                "both {} and {} would fill {}",
                other.name,
                file.name,
                table.name()
            )));
        }
        tables.push((table, file));
        Ok(())
    }

    fn conflict(&self, reason: String) -> ImportError {
        ImportError::Files {
            origin: self.origin.clone(),
            reason,
        }
    }

    /// The file that feeds each table, in [`Table::ALL`] order: what
    /// `import --data` loads, by the same rules as serving the files.
    pub fn sources(&self) -> Result<Vec<(Table, PathBuf, Format)>, ImportError> {
        let mut sources: Vec<_> = self
            .plan()?
            .tables
            .into_iter()
            .map(|(table, file)| {
                let format = file.format().expect("only files of a known format are planned");
                (table, file.path(), format)
            })
            .collect();
        sources.sort_by_key(|(table, ..)| Table::ALL.iter().position(|t| t == table));
        Ok(sources)
    }

    /// Reads every table the files give, in parallel, into indexes. A table
    /// no file gives is left out (and so served empty).
    pub fn load(&self) -> Result<FileTables, ImportError> {
        self.load_only(&Table::ALL)
    }

    /// The tables whose file is not the version `loaded` says the table
    /// was read from: replaced, rewritten or renamed. A table no file
    /// gives is not among them: it keeps what it has.
    pub fn changed(&self, loaded: impl Fn(Table) -> Version) -> Result<Vec<Table>, ImportError> {
        Ok(self
            .plan()?
            .tables
            .iter()
            .filter(|(table, file)| {
                let (now, _) = file.version();
                now != Version::Absent && loaded(*table) != now
            })
            .map(|&(table, _)| table)
            .collect())
    }

    /// As [`DataFiles::load`], but only the tables in `wanted`; the others
    /// are left out (and so served empty).
    pub fn load_only(&self, wanted: &[Table]) -> Result<FileTables, ImportError> {
        let Plan { tables: mut plan, mmdb } = self.plan()?;
        plan.retain(|(table, _)| wanted.contains(table));
        // Read each file once, however many tables it feeds, noting its
        // version before reading it: a file rewritten meanwhile is then
        // seen as changed again.
        let mut contents: Vec<Contents> = Vec::new();
        for (_, file) in &plan {
            if !contents.iter().any(|read| read.name == file.name) {
                let version = file.version();
                contents.push(Contents {
                    name: &file.name,
                    version,
                    bytes: file.source.read()?,
                });
            }
        }
        let content_of = |file: &DataFile| {
            let read = contents.iter().find(|read| read.name == file.name).expect("read above");
            (read.version, &read.bytes)
        };
        let tables = std::thread::scope(|scope| {
            let jobs: Vec<_> = plan
                .iter()
                .map(|&(table, file)| {
                    let (version, bytes) = content_of(file);
                    scope.spawn(move || (table, version, load_table(table, file, bytes)))
                })
                .collect();
            jobs.into_iter()
                .map(|job| {
                    let (table, (version, data_time), result) =
                        job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    result.map(|index| {
                        let snapshot = Snapshot {
                            index,
                            version,
                            data_time,
                        };
                        (table, snapshot)
                    })
                })
                .collect::<Result<Vec<_>, ImportError>>()
        })?;
        Ok(FileTables {
            tables,
            mmdb: mmdb.map(|file| file.source.clone()),
            corrections: self.corrections(SystemTime::now())?,
        })
    }

    fn corrections_file(&self) -> Option<&DataFile> {
        self.files.iter().find(|file| is_corrections_file(&file.name))
    }

    /// The version of the corrections file (absent without one).
    fn corrections_version(&self) -> Version {
        self.corrections_file().map_or(Version::Absent, |file| file.version().0)
    }

    /// The corrections the files give, as they stand at `now`: checked as
    /// `import --table overrides` checks them; none without a file.
    pub fn corrections(&self, now: SystemTime) -> Result<Corrections, ImportError> {
        let Some(file) = self.corrections_file() else {
            return Ok(Corrections::none());
        };
        let (version, data_time) = file.version();
        let bytes = file.source.read()?;
        let source_error = |source| ImportError::Source {
            path: file.path(),
            format: Format::Csv,
            source,
        };
        let rows = overrides::read(&bytes).map_err(source_error)?;
        Corrections::new(rows, version, data_time, now).map_err(|err| source_error(err.into()))
    }
}

/// The table a CSV named `stem` (its name without `.csv`) feeds: the
/// table's name, with or without `ip_service_`, in any case; or the names
/// ip-location-db gives its ASN files (`asn-ipv4`, `asn-ipv6`).
fn table_of_csv(stem: &str) -> Option<Table> {
    let stem = stem.to_ascii_lowercase();
    match stem.as_str() {
        "asn-ipv4" => return Some(Table::Asn),
        "asn-ipv6" => return Some(Table::AsnV6),
        _ => {}
    }
    Table::ALL.into_iter().find(|t| {
        let short = t.name().trim_start_matches("ip_service_");
        stem == t.name() || stem == short
    })
}

/// Keeps `tables` equal to what `files` give.
pub struct FileWatch {
    pub files: DataFiles,
    pub tables: Arc<Tables>,
    pub metrics: Arc<Metrics>,
}

impl Refresh for FileWatch {
    /// Reads again the tables whose file changed since it was loaded, and
    /// the corrections if their file did or one of them has expired. The
    /// directory is read again each time: a file may have been added,
    /// renamed or removed, so everything is checked whatever `_which` says.
    async fn check(&mut self, _which: ToCheck) -> bool {
        let files = match self.files.rescanned() {
            Ok(files) => files,
            Err(err) => {
                warn!(error = %err, "the data files cannot be read; the tables keep their data");
                return false;
            }
        };
        let corrections = self.check_corrections(&files);
        let changed = match files.changed(|table| self.tables.snapshot(table).version) {
            Ok(changed) if changed.is_empty() => return corrections,
            Ok(changed) => changed,
            Err(err) => {
                warn!(error = %err, "the data files cannot be read; the tables keep their data");
                return corrections;
            }
        };
        let wanted = changed.clone();
        // Parsing and indexing take seconds of CPU: keep them off the workers.
        let Ok(loaded) = tokio::task::spawn_blocking(move || files.load_only(&wanted)).await else {
            return corrections;
        };
        match loaded {
            Ok(loaded) => {
                for (table, snapshot) in loaded.tables {
                    info!(
                        ?table,
                        ranges = snapshot.index.len(),
                        "table reloaded from its rewritten file"
                    );
                    self.tables.replace(table, snapshot);
                    self.metrics.reloaded(Reload::Table, true);
                }
                true
            }
            Err(err) => {
                warn!(tables = ?changed, error = %err, "a rewritten data file does not load; its tables keep their data");
                for &table in &changed {
                    self.tables
                        .set_freshness(table, Freshness::Stale(StaleCause::FileReload(err.to_string())));
                }
                self.metrics.reloaded(Reload::Table, false);
                corrections
            }
        }
    }
}

impl FileWatch {
    /// Reads the corrections file of `files` (the directory as it is now)
    /// again if it changed (or came, or went), or holds the same ones
    /// without those that have expired. Returns whether the corrections
    /// were replaced.
    fn check_corrections(&self, files: &DataFiles) -> bool {
        let held = self.tables.corrections();
        let now = SystemTime::now();
        if files.corrections_version() == held.version {
            return self.tables.expire_corrections(now);
        }
        match files.corrections(now) {
            Ok(corrections) => {
                info!(
                    in_force = corrections.in_force(),
                    "corrections reloaded from their file"
                );
                self.tables.replace_corrections(corrections);
                true
            }
            Err(err) => {
                warn!(error = %err, "the corrections file does not load; the corrections in force stay");
                false
            }
        }
    }
}

/// One table from one file, parsed and validated as `import` does, each
/// range going into the index as it is read.
fn load_table(table: Table, file: &DataFile, bytes: &[u8]) -> Result<TableIndex, ImportError> {
    let format = file.format().expect("only files of a known format are planned");
    let source_error = |source| ImportError::Source {
        path: file.path(),
        format,
        source,
    };
    // An ipdb or mmdb without one family gives that table nothing; a CSV
    // without rows is refused, as `import` refuses it.
    match table.family() {
        Family::V4 => read_index(bytes, format, table, |n| n as u32).map(TableIndex::V4),
        Family::V6 => read_index(bytes, format, table, |n| n).map(TableIndex::V6),
    }
    .map_err(source_error)
}

/// `bytes` read as `format` straight into an index of `table`.
fn read_index<K: Key>(
    bytes: &[u8],
    format: Format,
    table: Table,
    key: impl Fn(u128) -> K,
) -> Result<RangeIndex<K>, SourceError> {
    let mut builder = Builder::default();
    let mut emit = |range: Range| {
        builder
            .push_place(key(range.start), key(range.end), &range.place)
            .map_err(SourceError::Index)
    };
    read_streaming(bytes, format, table, Lang::of_table(table), &schema_limits(), &mut emit)?;
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> (tempfile::TempDir, DataFiles) {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let files = DataFiles::in_dir(dir.path()).unwrap();
        (dir, files)
    }

    fn planned(files: &DataFiles) -> Result<Vec<(Table, String)>, String> {
        files
            .plan()
            .map(|plan| plan.tables.into_iter().map(|(t, f)| (t, f.name.clone())).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_of_file_feeds_its_tables() {
        let (_dir, files) = dir_with(&["qqwry.ipdb", "GeoLite2-City.mmdb", "README.md"]);
        assert_eq!(
            planned(&files).unwrap(),
            [
                (Table::En, "GeoLite2-City.mmdb".to_owned()),
                (Table::Cn, "qqwry.ipdb".to_owned()),
                (Table::V6, "qqwry.ipdb".to_owned())
            ]
        );
        let (_dir, files) = dir_with(&["ip_service_en.csv", "CN.csv"]);
        assert_eq!(
            planned(&files).unwrap(),
            [
                (Table::Cn, "CN.csv".to_owned()),
                (Table::En, "ip_service_en.csv".to_owned())
            ]
        );
        let (_dir, files) = dir_with(&["asn-ipv4.csv", "asn-ipv6.csv", "qqwry.ipdb"]);
        assert_eq!(
            planned(&files).unwrap(),
            [
                (Table::Asn, "asn-ipv4.csv".to_owned()),
                (Table::AsnV6, "asn-ipv6.csv".to_owned()),
                (Table::Cn, "qqwry.ipdb".to_owned()),
                (Table::V6, "qqwry.ipdb".to_owned())
            ]
        );
        let (_dir, files) = dir_with(&["ip_service_asn.csv", "ASN_V6.csv"]);
        assert_eq!(
            planned(&files).unwrap(),
            [
                (Table::AsnV6, "ASN_V6.csv".to_owned()),
                (Table::Asn, "ip_service_asn.csv".to_owned())
            ]
        );
    }

    #[test]
    fn two_files_for_one_table_or_an_unnamed_csv_are_refused() {
        let (_dir, files) = dir_with(&["a.ipdb", "cn.csv"]);
        assert!(planned(&files)
            .unwrap_err()
            .contains("both a.ipdb and cn.csv would fill ip_service_cn"));
        let (_dir, files) = dir_with(&["ranges.csv"]);
        assert!(planned(&files)
            .unwrap_err()
            .contains("cannot tell which table ranges.csv is for"));
        let (_dir, files) = dir_with(&["a.mmdb", "b.mmdb"]);
        assert!(planned(&files).unwrap_err().contains("two MaxMind databases"));
        let (_dir, files) = dir_with(&["notes.txt"]);
        assert!(planned(&files).unwrap_err().contains("no .ipdb, .mmdb or .csv files"));
    }

    #[test]
    fn the_builtin_sample_loads_every_table() {
        let loaded = DataFiles::sample().load().unwrap();
        assert_eq!(loaded.tables.len(), Table::ALL.len());
        for (table, snapshot) in &loaded.tables {
            assert!(!snapshot.index.is_empty(), "{table:?}");
        }
        assert!(matches!(loaded.mmdb, Some(FileSource::Builtin(_))));
    }
}
