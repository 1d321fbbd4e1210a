//! Getting ranges into PostgreSQL and back out: the import history, the
//! staged COPY and atomic swap, and the CSV export.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Transaction};
use tracing::info;

use super::progress::Progress;
use super::{file_name, read_ranges, ColumnLimits, Family, Format, ImportError, Range};
use crate::domain::Lang;
use crate::domain::Table;

/// The channel told about every successful swap; the payload is the table.
pub const RELOAD_CHANNEL: &str = "ip_service_reload";

/// How rows reach the staging table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMethod {
    /// Binary COPY: the way to load.
    Copy,
    /// Multi-row INSERT, 1,000 rows a statement, as the original loader
    /// did; kept only so the benchmark can compare.
    Insert,
}

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
    pub method: LoadMethod,
}

/// How an import ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The file's SHA-256 is already the live data; nothing was done.
    AlreadyLoaded,
    Loaded {
        rows: u64,
        merged: u64,
        elapsed: Duration,
    },
}

/// Imports `options.file` into its table, recording the attempt. A failure
/// at any point rolls back and leaves the live table exactly as it was.
pub async fn import(client: &mut Client, options: &ImportOptions) -> Result<Outcome, ImportError> {
    let started = Instant::now();
    let table = options.table;
    let bytes = tokio::fs::read(&options.file)
        .await
        .map_err(|source| ImportError::Read {
            path: options.file.clone(),
            source,
        })?;
    let (bytes, sha256) = tokio::task::spawn_blocking(move || {
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        (bytes, sha256)
    })
    .await
    .expect("hashing does not panic");

    // One import per table at a time; the lock dies with the session if
    // this process does.
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_key(table)])
        .await?
        .get(0);
    if !locked {
        return Err(ImportError::Busy(table.name()));
    }
    let result = import_locked(client, options, bytes, sha256).await;
    // The import's own error matters more than a failed unlock (the lock
    // goes with the session anyway).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key(table)])
        .await;
    let result = result?;
    unlocked?;
    Ok(match result {
        Some((rows, merged)) => Outcome::Loaded {
            rows,
            merged,
            elapsed: started.elapsed(),
        },
        None => Outcome::AlreadyLoaded,
    })
}

fn lock_key(table: Table) -> String {
    format!("xm-ip-service import {}", table.name())
}

/// The import proper, under the table's lock: `None` if the file is
/// already the live data.
async fn import_locked(
    client: &mut Client,
    options: &ImportOptions,
    bytes: Vec<u8>,
    sha256: String,
) -> Result<Option<(u64, u64)>, ImportError> {
    let table = options.table;
    let format = options.format.unwrap_or_else(|| Format::detect(&bytes));
    let live: Option<String> = client
        .query_opt(
            "SELECT sha256 FROM ip_service_imports WHERE table_name = $1 AND outcome = 'succeeded' \
             ORDER BY id DESC LIMIT 1",
            &[&table.name()],
        )
        .await?
        .map(|row| row.get(0));
    if live.as_deref() == Some(sha256.as_str()) && !options.force {
        return Ok(None);
    }

    // An attempt still 'running' died without finishing: we hold the lock.
    client
        .execute(
            "UPDATE ip_service_imports SET outcome = 'interrupted', finished_at = now() \
             WHERE table_name = $1 AND outcome = 'running'",
            &[&table.name()],
        )
        .await?;
    let id: i64 = client
        .query_one(
            "INSERT INTO ip_service_imports (table_name, source_file, sha256, format) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&table.name(), &file_name(&options.file), &sha256, &format.as_str()],
        )
        .await?
        .get(0);

    let result = parse_and_load(client, options, format, bytes, id).await;
    if let Err(err) = &result {
        // The import's own error matters more than failing to record it.
        let _ = client
            .execute(
                "UPDATE ip_service_imports SET outcome = 'failed', message = $2, finished_at = now() WHERE id = $1",
                &[&id, &err.to_string()],
            )
            .await;
    }
    Ok(Some(result?))
}

/// Parses, validates and swaps the new rows in. The history row `id`
/// becomes 'succeeded' in the swap's own transaction, so a reader that sees
/// the new table also sees the import that made it.
async fn parse_and_load(
    client: &mut Client,
    options: &ImportOptions,
    format: Format,
    bytes: Vec<u8>,
    id: i64,
) -> Result<(u64, u64), ImportError> {
    let family = options.table.family();
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
        read_ranges(&bytes, format, family, lang, ipdb_language.as_deref(), &limits)
    })
    .await
    .expect("parsing does not panic")
    .map_err(source_error)?;
    info!(
        table = options.table.name(),
        ranges = built.ranges.len(),
        merged = built.merged,
        "parsed and validated"
    );
    let rows = built.ranges.len() as i64;
    let tx = client.transaction().await?;
    swap_in(&tx, options.table, &built.ranges, options.method).await?;
    tx.execute(
        "UPDATE ip_service_imports SET outcome = 'succeeded', row_count = $2, finished_at = now() WHERE id = $1",
        &[&id, &rows],
    )
    .await?;
    tx.commit().await?;
    Ok((rows as u64, built.merged as u64))
}

/// The language of mmdb names for this import: `--lang`, else the table's own.
fn mmdb_lang(options: &ImportOptions) -> Result<Lang, super::SourceError> {
    match options.lang.as_deref().map(Lang::parse) {
        None => Ok(Lang::of_table(options.table)),
        Some(lang) => lang.map_err(|err| super::SourceError::NotFormat(err.to_string())),
    }
}

/// Builds the new table beside the live one and swaps it in, all inside
/// `tx`: readers keep the old rows until the commit.
async fn swap_in(tx: &Transaction<'_>, table: Table, ranges: &[Range], method: LoadMethod) -> Result<(), ImportError> {
    let live = table.name();
    let staging = format!("{live}_staging");
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {staging};
         CREATE TABLE {staging} (LIKE {live} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         ALTER TABLE {staging} ALTER COLUMN id DROP DEFAULT;"
    ))
    .await?;

    let mut progress = Progress::new(live, ranges.len() as u64);
    match method {
        LoadMethod::Copy => copy_rows(tx, &staging, table.family(), ranges, &mut progress).await?,
        LoadMethod::Insert => insert_rows(tx, &staging, table.family(), ranges, &mut progress).await?,
    }
    progress.finish();

    copy_privileges(tx, live, &staging).await?;

    // Index after loading (faster than maintaining it row by row), then swap.
    tx.batch_execute(&format!(
        "ALTER TABLE {staging} ADD CONSTRAINT {staging}_pkey PRIMARY KEY (id);
         CREATE UNIQUE INDEX {staging}_start_ip ON {staging} (start_ip);
         CREATE SEQUENCE {staging}_id_seq OWNED BY {staging}.id;
         SELECT setval('{staging}_id_seq', {rows});
         ALTER TABLE {staging} ALTER COLUMN id SET DEFAULT nextval('{staging}_id_seq');
         ANALYZE {staging};
         DROP TABLE {live};
         ALTER TABLE {staging} RENAME TO {live};
         ALTER INDEX {staging}_pkey RENAME TO {live}_pkey;
         ALTER INDEX {staging}_start_ip RENAME TO {live}_start_ip;
         ALTER SEQUENCE {staging}_id_seq RENAME TO {live}_id_seq;
         NOTIFY {RELOAD_CHANNEL}, '{live}';",
        rows = ranges.len().max(1),
    ))
    .await?;
    Ok(())
}

/// Gives `staging` the live table's owner and grants, so that roles the
/// service reads with keep their access after the swap.
async fn copy_privileges(tx: &Transaction<'_>, live: &str, staging: &str) -> Result<(), ImportError> {
    let statements = tx
        .query(
            "SELECT format('GRANT %s ON %I TO %s%s', a.privilege_type, $2::text, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a \
             WHERE c.oid = $1::text::regclass AND a.grantee <> c.relowner \
             UNION ALL \
             SELECT format('ALTER TABLE %I OWNER TO %I', $2::text, pg_get_userbyid(c.relowner)) \
             FROM pg_class c WHERE c.oid = $1::text::regclass AND pg_get_userbyid(c.relowner) <> current_user",
            &[&live, &staging],
        )
        .await?;
    for statement in statements {
        tx.batch_execute(statement.get::<_, &str>(0)).await?;
    }
    Ok(())
}

const INSERT_COLUMNS: &str = "id, start_ip, end_ip, country_name, province_name, city_name, district_name, \
                              carrier_name, country_code, province_code, city_code";

/// A range bound as the table stores it: int8 for IPv4, inet for IPv6.
#[derive(Debug)]
struct Bound(Family, u128);

impl ToSql for Bound {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Family::V4 => (self.1 as i64).to_sql(ty, out),
            Family::V6 => self.0.ip(self.1).to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <IpAddr as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// One row's values in `INSERT_COLUMNS` order, from its place's fields
/// (`Place::fields` order).
fn row_params<'a>(id: &'a i64, bounds: &'a (Bound, Bound), fields: &'a [&'a str; 8]) -> [&'a (dyn ToSql + Sync); 11] {
    let [country_code, country_name, province_code, province_name, city_code, city_name, district, carrier] = fields;
    [
        id,
        &bounds.0,
        &bounds.1,
        country_name,
        province_name,
        city_name,
        district,
        carrier,
        country_code,
        province_code,
        city_code,
    ]
}

async fn copy_rows(
    tx: &Transaction<'_>,
    staging: &str,
    family: Family,
    ranges: &[Range],
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let bound = if family == Family::V4 { Type::INT8 } else { Type::INET };
    let mut types = vec![Type::INT8, bound.clone(), bound];
    types.extend([Type::VARCHAR; 8]);
    let sink = tx
        .copy_in(&format!("COPY {staging} ({INSERT_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for (chunk_index, chunk) in ranges.chunks(10_000).enumerate() {
        for (i, range) in chunk.iter().enumerate() {
            let id = (chunk_index * 10_000 + i + 1) as i64;
            let bounds = (Bound(family, range.start), Bound(family, range.end));
            writer
                .as_mut()
                .write(&row_params(&id, &bounds, &range.place.fields()))
                .await?;
        }
        progress.add(chunk.len() as u64);
    }
    writer.finish().await?;
    Ok(())
}

async fn insert_rows(
    tx: &Transaction<'_>,
    staging: &str,
    family: Family,
    ranges: &[Range],
    progress: &mut Progress,
) -> Result<(), ImportError> {
    const ROWS_PER_STATEMENT: usize = 1_000;
    for (chunk_index, chunk) in ranges.chunks(ROWS_PER_STATEMENT).enumerate() {
        let ids: Vec<i64> = (0..chunk.len())
            .map(|i| (chunk_index * ROWS_PER_STATEMENT + i + 1) as i64)
            .collect();
        let bounds: Vec<(Bound, Bound)> = chunk
            .iter()
            .map(|r| (Bound(family, r.start), Bound(family, r.end)))
            .collect();
        let fields: Vec<[&str; 8]> = chunk.iter().map(|r| r.place.fields()).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 11);
        let mut tuples = Vec::with_capacity(chunk.len());
        for i in 0..chunk.len() {
            let row = row_params(&ids[i], &bounds[i], &fields[i]);
            let placeholders: Vec<String> = (1..=row.len()).map(|k| format!("${}", params.len() + k)).collect();
            tuples.push(format!("({})", placeholders.join(",")));
            params.extend_from_slice(&row);
        }
        let sql = format!("INSERT INTO {staging} ({INSERT_COLUMNS}) VALUES {}", tuples.join(","));
        tx.execute(&sql, &params).await?;
        progress.add(chunk.len() as u64);
    }
    Ok(())
}

/// Writes `table` as interchange CSV (header, bounds as address text,
/// every column), ordered by address; returns the bytes written.
pub async fn export(
    client: &Client,
    table: Table,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<u64, ImportError> {
    let bound = |column: &str| match table.family() {
        Family::V4 => format!("host('0.0.0.0'::inet + {column}) AS {column}"),
        Family::V6 => format!("host({column}) AS {column}"),
    };
    // Empty names become NULL, which `NULL ''` writes as an empty field:
    // PostgreSQL would otherwise quote empty strings as "".
    let names = super::csv_file::COLUMNS[2..]
        .iter()
        .map(|c| format!("NULLIF({c}, '') AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "COPY (SELECT {}, {}, {names} FROM {} ORDER BY start_ip) TO STDOUT (FORMAT csv, HEADER, NULL '')",
        bound("start_ip"),
        bound("end_ip"),
        table.name()
    );
    let mut stream = pin!(client.copy_out(&sql).await?);
    let mut written = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await.map_err(ImportError::Write)?;
        written += chunk.len() as u64;
    }
    out.flush().await.map_err(ImportError::Write)?;
    Ok(written)
}
