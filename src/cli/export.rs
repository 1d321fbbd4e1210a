//! `export`: a range table as interchange CSV on standard output.

use crate::data::import;
use crate::data::store::{self, Table};

/// Runs `export` to standard output.
pub async fn export(database_url: &str, table: Table) -> anyhow::Result<()> {
    let client = store::connect(database_url).await?;
    import::export(&client, table, &mut tokio::io::stdout()).await?;
    Ok(())
}
