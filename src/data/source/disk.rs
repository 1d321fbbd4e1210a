//! Snapshots of the in-memory tables on local disk (`--snapshot-dir`), so
//! that a memory-mode instance starts in a second, and starts while
//! PostgreSQL is away. A snapshot is the built index in a compact binary
//! form with its version, data time and a checksum; it is written to a
//! temporary file and renamed into place, and one that is corrupt,
//! truncated or of another format is refused, never served.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::data::corrections::Corrections;
use crate::data::import::{overrides, SourceError};
use crate::data::index::{IndexError, Key, RangeIndex, Snapshot, TableIndex, Version};
use crate::data::store::OVERRIDES;
use crate::domain::{Family, Place, Table};

const MAGIC: &[u8; 8] = b"XMIPSNAP";
/// Bumped whenever the layout below or the checksum changes: an older
/// file is refused. 2: the checksum reads eight bytes at a time.
const FORMAT: u32 = 2;

/// Why a snapshot file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: the checksum does not match (corrupt or truncated)")]
    Checksum { path: PathBuf },
    #[error("{path}: format {found}, this build reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Index { path: PathBuf, source: IndexError },
}

/// Where `table`'s snapshot lives in `dir`.
pub fn path_of(dir: &Path, table: Table) -> PathBuf {
    dir.join(format!("{}.snapshot", table.name()))
}

/// A 64-bit multiply-and-shift hash of `bytes`, eight at a time: enough to
/// catch a corrupt or truncated file, at memory speed (a byte-at-a-time
/// hash was a fifth of a start-up from snapshots).
fn checksum(bytes: &[u8]) -> u64 {
    let mix = |hash: u64, word: u64| {
        let hash = (hash ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        hash ^ (hash >> 29)
    };
    let words = bytes.chunks_exact(8);
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    let hash = words.fold(0xcbf2_9ce4_8422_2325, |hash, word| {
        mix(hash, u64::from_le_bytes(word.try_into().expect("eight bytes")))
    });
    mix(mix(hash, u64::from_le_bytes(tail)), bytes.len() as u64)
}

/// Writes `snapshot` of `table` into `dir`, made if missing: a temporary
/// file, synced, then renamed over the old one, so a reader never sees half
/// a file, and several instances may share the directory.
pub fn write(dir: &Path, table: Table, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    write_framed(
        &path_of(dir, table),
        table.name(),
        snapshot.version,
        snapshot.data_time,
        |out| match &snapshot.index {
            TableIndex::V4(index) => write_index(out, index, |k| k.to_le_bytes().to_vec()),
            TableIndex::V6(index) => write_index(out, index, |k| k.to_le_bytes().to_vec()),
        },
    )
}

/// Where the corrections' snapshot lives in `dir`.
pub fn corrections_path(dir: &Path) -> PathBuf {
    dir.join(format!("{OVERRIDES}.snapshot"))
}

/// Writes the corrections into `dir` as [`write()`] writes a table: every
/// row, expired or not, as the corrections CSV.
pub fn write_corrections(dir: &Path, corrections: &Corrections) -> Result<(), SnapshotError> {
    write_framed(
        &corrections_path(dir),
        OVERRIDES,
        corrections.version,
        corrections.data_time,
        |out| out.extend_from_slice(&overrides::to_csv(corrections.rows())),
    )
}

/// Reads the corrections' snapshot from `dir`, as they stand at `now`;
/// `Ok(None)` when there is none.
pub fn read_corrections(dir: &Path, now: SystemTime) -> Result<Option<Corrections>, SnapshotError> {
    let path = corrections_path(dir);
    let Some(framed) = read_framed(&path, OVERRIDES)? else {
        return Ok(None);
    };
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    };
    let rows = match overrides::read(framed.body()) {
        Ok(rows) => rows,
        Err(SourceError::Empty) => Vec::new(),
        Err(err) => return Err(corrupt(err.to_string())),
    };
    Corrections::new(rows, framed.version, framed.data_time, now)
        .map(Some)
        .map_err(|err| corrupt(err.to_string()))
}

/// Writes `name`'s version, data time and the body `body` writes, with the
/// magic, the format and a checksum, atomically to `path`.
fn write_framed(
    path: &Path,
    name: &str,
    version: Version,
    data_time: Option<SystemTime>,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<(), SnapshotError> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    let name = name.as_bytes();
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    match version {
        Version::Postgres { relation, import_id } => {
            out.push(1);
            out.extend_from_slice(&relation.to_le_bytes());
            out.extend_from_slice(&import_id.unwrap_or(-1).to_le_bytes());
        }
        // Only PostgreSQL's tables are snapshotted; anything else is
        // written as unknown, so the first check rebuilds it.
        _ => out.push(0),
    }
    match data_time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(since) => {
            out.push(1);
            out.extend_from_slice(&since.as_secs().to_le_bytes());
            out.extend_from_slice(&since.subsec_nanos().to_le_bytes());
        }
        None => out.push(0),
    }
    body(&mut out);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());

    // A name of its own, so that instances sharing the directory never
    // write into each other's temporary file; the rename is atomic.
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let temporary = path.with_extension(format!("snapshot.{}-{unique}.tmp", std::process::id()));
    let written = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(SnapshotError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

fn write_index<K: Key>(out: &mut Vec<u8>, index: &RangeIndex<K>, key: impl Fn(K) -> Vec<u8>) {
    let (places, ranges) = index.parts();
    out.extend_from_slice(&(places.len() as u32).to_le_bytes());
    for place in places {
        for value in place.fields().columns() {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for (start, end, place) in ranges {
        out.extend_from_slice(&key(start));
        out.extend_from_slice(&key(end));
        out.extend_from_slice(&place.to_le_bytes());
    }
}

/// Reads `table`'s snapshot from `dir`; `Ok(None)` when there is none.
pub fn read(dir: &Path, table: Table) -> Result<Option<Snapshot>, SnapshotError> {
    let path = path_of(dir, table);
    let Some(framed) = read_framed(&path, table.name())? else {
        return Ok(None);
    };
    let body = framed.body();
    let mut r = Cursor { bytes: body, at: 0 };
    let index = match table.family() {
        Family::V4 => TableIndex::V4(
            read_index(&mut r, |b| u32::from_le_bytes(b.try_into().expect("four bytes"))).map_err(|e| e.at(&path))?,
        ),
        Family::V6 => TableIndex::V6(
            read_index(&mut r, |b| u128::from_le_bytes(b.try_into().expect("sixteen bytes")))
                .map_err(|e| e.at(&path))?,
        ),
    };
    if r.at != body.len() {
        return Err(SnapshotError::Corrupt {
            path,
            reason: "bytes after the last range".to_owned(),
        });
    }
    Ok(Some(Snapshot {
        index,
        version: framed.version,
        data_time: framed.data_time,
    }))
}

/// What [`write_framed`] wrote to `path` for `name`: the version, the data
/// time and the body, checked; `Ok(None)` when there is no file.
fn read_framed(path: &Path, name: &str) -> Result<Option<Framed>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < MAGIC.len() + 4 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a snapshot file"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(SnapshotError::Checksum { path: path.to_owned() });
    }
    let mut r = Cursor {
        bytes: body,
        at: MAGIC.len(),
    };
    let truncated = || corrupt("truncated");
    let format = r.u32().ok_or_else(truncated)?;
    if format != FORMAT {
        return Err(SnapshotError::Format {
            path: path.to_owned(),
            found: format,
        });
    }
    let name_len = r.take(1).ok_or_else(truncated)?[0] as usize;
    if r.take(name_len).ok_or_else(truncated)? != name.as_bytes() {
        return Err(corrupt("the snapshot of another table"));
    }
    let version = match r.take(1).ok_or_else(truncated)?[0] {
        1 => {
            let relation = r.u32().ok_or_else(truncated)?;
            let import_id = r.i64().ok_or_else(truncated)?;
            Version::Postgres {
                relation,
                import_id: (import_id >= 0).then_some(import_id),
            }
        }
        _ => Version::Absent,
    };
    let data_time = match r.take(1).ok_or_else(truncated)?[0] {
        1 => {
            let secs = r.u64().ok_or_else(truncated)?;
            let nanos = r.u32().ok_or_else(truncated)?;
            Some(UNIX_EPOCH + Duration::new(secs, nanos))
        }
        _ => None,
    };
    let body = r.at..body.len();
    Ok(Some(Framed {
        version,
        data_time,
        bytes,
        body,
    }))
}

/// A snapshot file read and checked: its header, and where its body is.
struct Framed {
    version: Version,
    data_time: Option<SystemTime>,
    bytes: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl Framed {
    fn body(&self) -> &[u8] {
        &self.bytes[self.body.clone()]
    }
}

/// Why an index could not be read back, before the path is known.
enum ReadError {
    Truncated,
    Text,
    Index(IndexError),
}

impl ReadError {
    fn at(self, path: &Path) -> SnapshotError {
        let path = path.to_owned();
        match self {
            ReadError::Truncated => SnapshotError::Corrupt {
                path,
                reason: "truncated".to_owned(),
            },
            ReadError::Text => SnapshotError::Corrupt {
                path,
                reason: "a place's text is not UTF-8".to_owned(),
            },
            ReadError::Index(source) => SnapshotError::Index { path, source },
        }
    }
}

/// Reads an index whose keys `key` decodes from `size_of::<K>()` bytes.
fn read_index<K: Key>(r: &mut Cursor<'_>, key: impl Fn(&[u8]) -> K) -> Result<RangeIndex<K>, ReadError> {
    let width = std::mem::size_of::<K>();
    let places_len = r.u32().ok_or(ReadError::Truncated)? as usize;
    // Every place takes at least its eight lengths: a count the file
    // cannot hold is refused before anything is allocated for it.
    if places_len > r.left() / 32 {
        return Err(ReadError::Truncated);
    }
    let mut places = Vec::with_capacity(places_len);
    for _ in 0..places_len {
        let mut values = [""; 8];
        for value in &mut values {
            let len = r.u32().ok_or(ReadError::Truncated)? as usize;
            *value = std::str::from_utf8(r.take(len).ok_or(ReadError::Truncated)?).map_err(|_| ReadError::Text)?;
        }
        places.push(Place::from_columns(values));
    }
    let ranges_len = r.u64().ok_or(ReadError::Truncated)? as usize;
    let entry = 2 * width + 4;
    if ranges_len > r.left() / entry {
        return Err(ReadError::Truncated);
    }
    // Decoded as the index takes them: no list of them is held first.
    let ranges = r
        .take(ranges_len * entry)
        .ok_or(ReadError::Truncated)?
        .chunks_exact(entry)
        .map(|at| {
            let place = u32::from_le_bytes(at[2 * width..].try_into().expect("four bytes"));
            (key(&at[..width]), key(&at[width..2 * width]), place)
        });
    RangeIndex::from_parts(places, ranges).map_err(ReadError::Index)
}

/// Reads little-endian values from a byte slice, never past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::index::Builder;
    use crate::domain::{PlaceFields, Source};

    fn snapshot() -> Snapshot {
        let mut builder = Builder::<u32>::default();
        for i in 0..100u32 {
            let name = format!("省{}", i % 7);
            let fields = PlaceFields {
                country_code: "CN",
                country_name: "中国",
                province_name: &name,
                ..PlaceFields::default()
            };
            builder.push_fields(i * 10, i * 10 + 5, fields).unwrap();
        }
        Snapshot {
            index: TableIndex::V4(builder.finish()),
            version: Version::Postgres {
                relation: 4242,
                import_id: Some(7),
            },
            data_time: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = snapshot();
        write(dir.path(), Table::Cn, &written).unwrap();
        let back = read(dir.path(), Table::Cn).unwrap().unwrap();
        assert_eq!(back.version, written.version);
        assert_eq!(back.data_time, written.data_time);
        let (TableIndex::V4(a), TableIndex::V4(b)) = (&written.index, &back.index) else {
            panic!("families")
        };
        assert_eq!((a.len(), a.places()), (b.len(), b.places()));
        for key in [0, 3, 5, 6, 990, 995, 996] {
            assert_eq!(a.locate(key, Source::Cn), b.locate(key, Source::Cn), "{key}");
        }
        assert!(read(dir.path(), Table::En).unwrap().is_none(), "no file, no snapshot");
    }

    #[test]
    fn the_snapshot_directory_is_made_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet");
        write(&missing, Table::Cn, &snapshot()).unwrap();
        assert!(read(&missing, Table::Cn).unwrap().is_some());
    }

    #[test]
    fn a_corrupt_truncated_or_foreign_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Table::Cn, &snapshot()).unwrap();
        let path = path_of(dir.path(), Table::Cn);
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            read(dir.path(), Table::Cn),
            Err(SnapshotError::Checksum { .. })
        ));

        std::fs::write(&path, &good[..good.len() - 100]).unwrap();
        assert!(matches!(
            read(dir.path(), Table::Cn),
            Err(SnapshotError::Checksum { .. })
        ));

        // Another format version, with a checksum that matches.
        let mut other = good[..good.len() - 8].to_vec();
        other[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        let sum = checksum(&other);
        other.extend_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &other).unwrap();
        assert!(matches!(read(dir.path(), Table::Cn), Err(SnapshotError::Format { found, .. }) if found == FORMAT + 1));

        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            read(dir.path(), Table::Cn),
            Err(SnapshotError::Corrupt { .. })
        ));

        std::fs::write(path_of(dir.path(), Table::En), &good).unwrap();
        assert!(
            matches!(read(dir.path(), Table::En), Err(SnapshotError::Corrupt { .. })),
            "cn's file as en"
        );
    }
}
