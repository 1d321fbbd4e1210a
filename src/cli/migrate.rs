//! `migrate`: apply pending migrations.

use anyhow::Context;

use crate::data::store;

/// Runs `migrate`.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let applied = store::migrate(database_url).await.context("migration failed")?;
    println!("applied {applied} migration(s); the schema is up to date");
    Ok(())
}
