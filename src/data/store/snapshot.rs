//! Whole tables into the in-memory index: each streamed by binary COPY in
//! address order inside one read-only REPEATABLE READ transaction, which
//! also reads the table's version, so the index and its version always
//! describe the same data.

use std::net::IpAddr;
use std::pin::pin;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, CopyOutStream, GenericClient, IsolationLevel, NoTls, Transaction};

use super::StoreError;
use crate::data::index::{Builder, Snapshot, TableIndex, Version};
use crate::domain::{Family, Place, PlaceFields, Table};

/// The most ranges reserved up front from the import history's count;
/// ten times the real cn table.
const MAX_RESERVED_RANGES: usize = 16 << 20;

/// Reads `table` into an index, with the version it was read at.
pub async fn load_snapshot(client: &mut Client, table: Table) -> Result<Snapshot, StoreError> {
    let tx = consistent_read(client).await?;
    let version = version(&tx, table).await?;
    let live = live_import(&tx, table).await?;
    let data_time = live.and_then(|live| live.finished);
    // The rows the live import wrote: room for them at once (a hint only;
    // rows written by hand since still fit).
    let expected = live
        .and_then(|live| live.rows)
        .map_or(0, |rows| usize::try_from(rows).unwrap_or(0).min(MAX_RESERVED_RANGES));
    let index = match table.family() {
        Family::V4 => {
            let mut builder = Builder::with_capacity(expected);
            visit_rows(
                tx.copy_out(&copy_rows_sql(table)).await?,
                table,
                |start, end, fields| builder.push_fields(start as u32, end as u32, fields),
            )
            .await?;
            TableIndex::V4(builder.finish())
        }
        Family::V6 => {
            let mut builder = Builder::with_capacity(expected);
            let copy = tx.copy_out(&copy_rows_sql(table)).await?;
            visit_rows(copy, table, |start, end, fields| {
                builder.push_fields(start, end, fields)
            })
            .await?;
            TableIndex::V6(builder.finish())
        }
    };
    tx.commit().await?;
    Ok(Snapshot {
        index,
        version,
        data_time,
    })
}

/// `base` brought up to `table`'s version by the rows its latest import
/// kept, with how many there were: when that import replaced exactly
/// `base`'s data. `None` when it did not, or kept none, and the whole
/// table must be read.
pub async fn load_changes(
    client: &mut Client,
    table: Table,
    base: &Snapshot,
) -> Result<Option<(Snapshot, usize)>, StoreError> {
    let tx = consistent_read(client).await?;
    let version = version(&tx, table).await?;
    let Some(id) = version.import_id() else {
        return Ok(None);
    };
    let row = tx
        .query_one(
            "SELECT base_relation, base_import_id, digest FROM ip_service_imports WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(relation) = row.get::<_, Option<i64>>(0) else {
        return Ok(None);
    };
    let made_against = Version::Postgres {
        relation: relation as u32,
        import_id: row.get(1),
    };
    if made_against != base.version {
        return Ok(None);
    }
    let data_time = live_import(&tx, table).await?.and_then(|live| live.finished);
    let copy = tx
        .copy_out(&format!(
            "COPY (SELECT added, start_ip, end_ip, {} FROM ip_service_import_changes WHERE import_id = {id} \
             ORDER BY added, start_ip) TO STDOUT (FORMAT binary)",
            super::text_columns(table)
        ))
        .await?;
    let mut types = vec![Type::BOOL, Type::INET, Type::INET];
    types.extend(vec![Type::TEXT; table.columns().len()]);
    let mut rows = pin!(BinaryCopyOutStream::new(copy, &types));
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let wrong_family = |ip: IpAddr| StoreError::Invalid(format!("{ip} in the changes kept for {}", table.name()));
    while let Some(row) = rows.next().await {
        let row = row?;
        let mut bounds = [0u128; 2];
        for (i, bound) in bounds.iter_mut().enumerate() {
            *bound = match (table.family(), row.try_get::<IpAddr>(1 + i)?) {
                (Family::V4, IpAddr::V4(ip)) => u32::from(ip).into(),
                (Family::V6, IpAddr::V6(ip)) => ip.into(),
                (_, ip) => return Err(wrong_family(ip)),
            };
        }
        let place = Place::new(row_values(&row, table, 3)?);
        let list = if row.try_get(0)? { &mut added } else { &mut removed };
        list.push((bounds[0], bounds[1], place));
    }
    tx.commit().await?;
    let count = removed.len() + added.len();
    let changed = match &base.index {
        TableIndex::V4(index) => index.with_changes(&narrow(removed), &narrow(added)).map(TableIndex::V4),
        TableIndex::V6(index) => index.with_changes(&removed, &added).map(TableIndex::V6),
    };
    let index = changed.map_err(|err| StoreError::Invalid(format!("{}: {err}", table.name())))?;
    if Some(index.digest().to_i64()) != row.get::<_, Option<i64>>(2) {
        return Err(StoreError::Invalid(format!(
            "{}: the changed rows applied do not give the table the import wrote (were rows edited by hand?)",
            table.name()
        )));
    }
    let snapshot = Snapshot {
        index,
        version,
        data_time,
    };
    Ok(Some((snapshot, count)))
}

/// IPv4 rows, held as u128, as the v4 index's keys.
fn narrow(rows: Vec<(u128, u128, Place)>) -> Vec<(u32, u32, Place)> {
    rows.into_iter()
        .map(|(start, end, place)| (start as u32, end as u32, place))
        .collect()
}

/// A row's values from a COPY row's columns, from `first` on, in
/// [`Table::columns`] order (the place's fields a network row leaves empty).
fn row_values<'a>(row: &'a BinaryCopyOutRow, table: Table, first: usize) -> Result<PlaceFields<'a>, StoreError> {
    let mut values = [""; 8];
    for (i, value) in values.iter_mut().take(table.columns().len()).enumerate() {
        *value = row.try_get(first + i)?;
    }
    Ok(PlaceFields::from_columns(values))
}

/// A read-only transaction that sees one snapshot of the database
/// throughout, so that a table, its version and its kept changes agree.
async fn consistent_read(client: &mut Client) -> Result<Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The COPY that [`visit_rows`] reads: every row of `table` in address order.
pub fn copy_rows_sql(table: Table) -> String {
    format!(
        "COPY (SELECT start_ip, end_ip, {} FROM {} ORDER BY start_ip) TO STDOUT (FORMAT binary)",
        super::text_columns(table),
        table.name()
    )
}

/// Streams `table`'s rows in address order by binary COPY, giving each to
/// `visit` as bounds (IPv4 in the low 32 bits) and its place's fields;
/// stops at the first row `visit` refuses.
pub async fn visit_rows<E: std::fmt::Display>(
    copy: CopyOutStream,
    table: Table,
    mut visit: impl FnMut(u128, u128, PlaceFields) -> Result<(), E>,
) -> Result<(), StoreError> {
    let bound_type = match table.family() {
        Family::V4 => Type::INT8,
        Family::V6 => Type::INET,
    };
    let mut types = vec![bound_type.clone(), bound_type];
    types.extend(vec![Type::VARCHAR; table.columns().len()]);
    let mut rows = pin!(BinaryCopyOutStream::new(copy, &types));
    let bound = |row: &BinaryCopyOutRow, i: usize| -> Result<u128, StoreError> {
        match table.family() {
            Family::V4 => {
                let n: i64 = row.try_get(i)?;
                u32::try_from(n)
                    .map(u128::from)
                    .map_err(|_| StoreError::Invalid(format!("{n} in {} is not an IPv4 address", table.name())))
            }
            Family::V6 => match row.try_get::<IpAddr>(i)? {
                IpAddr::V6(v6) => Ok(u128::from(v6)),
                IpAddr::V4(v4) => Err(StoreError::Invalid(format!("{v4} in {}", table.name()))),
            },
        }
    };
    while let Some(row) = rows.next().await {
        let row = row?;
        let fields = row_values(&row, table, 2)?;
        visit(bound(&row, 0)?, bound(&row, 1)?, fields)
            .map_err(|err| StoreError::Invalid(format!("{}: {err}", table.name())))?;
    }
    Ok(())
}

/// The version of `table` now: its relation (a new one after every import's
/// swap) and its latest successful import.
pub async fn version(client: &impl GenericClient, table: Table) -> Result<Version, StoreError> {
    let row = client
        .query_one(
            "SELECT $1::text::regclass::oid::int8, \
                    (SELECT max(id) FROM ip_service_imports WHERE table_name = $1 AND outcome = 'succeeded')",
            &[&table.name()],
        )
        .await?;
    Ok(Version::Postgres {
        relation: row.get::<_, i64>(0) as u32,
        import_id: row.get(1),
    })
}

/// The summary line of the change report of the import behind `version`.
pub async fn change_summary(client: &impl GenericClient, version: Version) -> Result<Option<String>, StoreError> {
    let Some(id) = version.import_id() else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT change_report->>'summary' FROM ip_service_imports WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.and_then(|row| row.get(0)))
}

/// The import whose data a table holds.
#[derive(Debug, Clone, Copy)]
pub struct LiveImport {
    pub rows: Option<i64>,
    pub finished: Option<SystemTime>,
}

/// The latest successful import of `table`, if any.
pub async fn live_import(client: &impl GenericClient, table: Table) -> Result<Option<LiveImport>, StoreError> {
    let row = client
        .query_opt(
            "SELECT row_count, finished_at FROM ip_service_imports \
             WHERE table_name = $1 AND outcome = 'succeeded' ORDER BY id DESC LIMIT 1",
            &[&table.name()],
        )
        .await?;
    Ok(row.map(|row| LiveImport {
        rows: row.get(0),
        finished: row.get(1),
    }))
}

/// How many rows `table` holds.
pub async fn table_rows(client: &impl GenericClient, table: Table) -> Result<i64, StoreError> {
    let sql = format!("SELECT count(*) FROM {}", table.name());
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

/// A connection of its own for one long job, named so it is recognisable
/// in `pg_stat_activity`.
pub async fn connect_for(database_url: &str, timeout: Duration, purpose: &str) -> Result<Client, StoreError> {
    let mut config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Config)?;
    config.connect_timeout(timeout);
    config.application_name(format!("xm-ip-service {purpose}"));
    let (client, connection) = config.connect(NoTls).await.map_err(StoreError::Connect)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "database connection ended");
        }
    });
    Ok(client)
}
