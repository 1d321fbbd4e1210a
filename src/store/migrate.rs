//! Schema migrations: plain SQL files under `migrations/`, embedded at
//! build time and applied in order by refinery, which records them in
//! `refinery_schema_history` so a second run is a no-op.

use std::str::FromStr;

use tokio_postgres::NoTls;

use super::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Any fixed number works; it only has to be the same for every instance.
const MIGRATION_LOCK: i64 = 0x0078_6970_736d_6967; // "xipsmig"

/// Applies pending migrations and returns how many were applied. Several
/// instances started with `--migrate` at once take turns on an advisory lock.
pub async fn migrate(database_url: &str) -> Result<usize, StoreError> {
    let config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Config)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(StoreError::Connect)?;
    let connection = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    drop(client);
    let _ = connection.await;
    Ok(report?.applied_migrations().len())
}
