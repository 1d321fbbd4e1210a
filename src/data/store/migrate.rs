//! Schema migrations: plain SQL files under `migrations/`, embedded at
//! build time and applied in order by refinery, which records them in
//! `refinery_schema_history` so a second run is a no-op.

use super::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Any fixed number works; it only has to be the same for every instance.
const MIGRATION_LOCK: i64 = 0x0078_6970_736d_6967; // "xipsmig"

/// Applies pending migrations and returns how many were applied. Several
/// instances started with `--migrate` at once take turns on an advisory lock.
pub async fn migrate(database_url: &str) -> Result<usize, StoreError> {
    let mut client = super::connect(database_url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(report?.applied_migrations().len())
}
