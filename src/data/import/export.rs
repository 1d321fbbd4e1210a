//! A range table back out as interchange CSV.

use std::pin::pin;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_postgres::Client;

use super::{Family, ImportError};
use crate::domain::{RowKind, Table};

/// Writes `table` as interchange CSV (header, bounds as address text,
/// every column; the ASN CSV with a header for a network table), ordered by
/// address; returns the bytes written.
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
    let columns = match table.kind() {
        RowKind::Place => &super::csv_file::COLUMNS[2..],
        RowKind::Network => &super::asn_csv::COLUMNS[2..],
    };
    let names = columns
        .iter()
        .map(|c| format!("NULLIF({c}::text, '') AS {c}"))
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
