//! `export`: a range table as interchange CSV on standard output, or the
//! corrections as their import takes them.

use super::args::Target;
use crate::data::import::{self, overrides};
use crate::data::store;

/// Runs `export` to standard output.
pub async fn export(database_url: &str, target: Target) -> anyhow::Result<()> {
    let client = store::connect(database_url).await?;
    let mut out = tokio::io::stdout();
    match target {
        Target::Table(table) => import::export(&client, table, &mut out).await?,
        Target::Overrides => overrides::export(&client, &mut out).await?,
    };
    Ok(())
}
