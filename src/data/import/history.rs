//! The import history in `ip_service_imports`, and the per-table lock
//! that keeps two imports of one table from interleaving.

use tokio_postgres::{Client, GenericClient};

use super::{Format, ImportError};
use serde::Serialize;

/// Takes `table`'s import lock, or says another import holds it. The lock
/// dies with the session if this process does.
pub async fn lock(client: &Client, table: &'static str) -> Result<(), ImportError> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_key(table)])
        .await?
        .get(0);
    if locked {
        Ok(())
    } else {
        Err(ImportError::Busy(table))
    }
}

pub async fn unlock(client: &Client, table: &str) -> Result<(), ImportError> {
    client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key(table)])
        .await?;
    Ok(())
}

fn lock_key(table: &str) -> String {
    format!("xm-ip-service import {table}")
}

/// The SHA-256 of the file `table` was last loaded from.
pub async fn live_sha256(client: &Client, table: &str) -> Result<Option<String>, ImportError> {
    Ok(client
        .query_opt(
            "SELECT sha256 FROM ip_service_imports WHERE table_name = $1 AND outcome = 'succeeded' \
             ORDER BY id DESC LIMIT 1",
            &[&table],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Records a new attempt as 'running' and returns its id. Under the lock,
/// an attempt still 'running' died without finishing: it becomes
/// 'interrupted'.
pub async fn begin(
    client: &Client,
    table: &str,
    source_file: &str,
    sha256: &str,
    format: Format,
) -> Result<i64, ImportError> {
    client
        .execute(
            "UPDATE ip_service_imports SET outcome = 'interrupted', finished_at = now() \
             WHERE table_name = $1 AND outcome = 'running'",
            &[&table],
        )
        .await?;
    Ok(client
        .query_one(
            "INSERT INTO ip_service_imports (table_name, source_file, sha256, format) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&table, &source_file, &sha256, &format.as_str()],
        )
        .await?
        .get(0))
}

/// Marks attempt `id` succeeded; called in the swap's transaction, so a
/// reader that sees the new table also sees the import that made it.
pub async fn succeed(
    client: &impl GenericClient,
    id: i64,
    rows: i64,
    report: &impl Serialize,
) -> Result<(), ImportError> {
    client
        .execute(
            "UPDATE ip_service_imports SET outcome = 'succeeded', row_count = $2, change_report = $3, \
             finished_at = now() WHERE id = $1",
            &[&id, &rows, &report_json(report)],
        )
        .await?;
    Ok(())
}

/// Marks attempt `id` failed, or refused when the change was over the
/// limit, keeping the report that refused it.
pub async fn fail(client: &Client, id: i64, err: &ImportError) -> Result<(), ImportError> {
    let (outcome, report) = match err {
        ImportError::TooMuchChange { report, .. } => ("refused", Some(report_json(report))),
        ImportError::TooManyCorrectionsChanged { report, .. } => ("refused", Some(report_json(report))),
        _ => ("failed", None),
    };
    client
        .execute(
            "UPDATE ip_service_imports SET outcome = $2, message = $3, change_report = $4, finished_at = now() \
             WHERE id = $1",
            &[&id, &outcome, &err.to_string(), &report],
        )
        .await?;
    Ok(())
}

fn report_json(report: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(report).expect("a report is plain data")
}
