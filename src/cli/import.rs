//! `import`: load an IP database file into a range table.

use anyhow::Context;

use super::ImportArgs;
use crate::import::{self, ImportOptions, Outcome};
use crate::store;

/// Runs `import`: migrates, loads, and prints one summary line.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    store::migrate(&args.database_url)
        .await
        .context("failed to migrate the database")?;
    let mut client = store::connect(&args.database_url).await?;
    let options = ImportOptions {
        table: args.table,
        file: args.file.clone(),
        format: args.format,
        lang: args.lang,
        ipdb_language: args.ipdb_language,
        force: args.force,
        method: args.method,
    };
    let table = args.table.name();
    match import::import(&mut client, &options).await? {
        Outcome::AlreadyLoaded => println!(
            "{table} already holds {} (same SHA-256); nothing to do (--force reloads)",
            args.file.display()
        ),
        Outcome::Loaded { rows, merged, elapsed } => {
            let seconds = elapsed.as_secs_f64();
            println!(
                "imported {rows} rows into {table} ({merged} ranges merged) in {seconds:.1} s, {:.0} rows/s",
                rows as f64 / seconds
            );
        }
    }
    Ok(())
}
