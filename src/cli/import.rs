//! `import`: load an IP database file into a range table, with a report
//! of what it changes.

use anyhow::Context;
use serde_json::json;

use super::ImportArgs;
use crate::import::{self, ChangeReport, ImportError, ImportOptions, Outcome};
use crate::store;

/// Runs `import`: migrates, loads (or only compares, for `--dry-run`),
/// prints the change report and one summary line.
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
        dry_run: args.dry_run,
        max_change: args.max_change,
    };
    let table = args.table.name();
    let outcome = match import::import(&mut client, &options).await {
        Err(ImportError::TooMuchChange { limit, report }) => {
            print_report(&report, "refused", args.json);
            return Err(ImportError::TooMuchChange { limit, report }.into());
        }
        outcome => outcome?,
    };
    match outcome {
        Outcome::AlreadyLoaded => {
            let message = format!(
                "{table} already holds {} (same SHA-256); nothing to do (--force reloads)",
                args.file.display()
            );
            if args.json {
                println!("{}", json!({ "outcome": "already_loaded", "message": message }));
            } else {
                println!("{message}");
            }
        }
        Outcome::Checked { rows, merged, report } => {
            print_report(&report, "dry_run", args.json);
            if !args.json {
                println!("dry run: {rows} rows parsed ({merged} ranges merged); {table} is unchanged");
            }
        }
        Outcome::Loaded {
            rows,
            merged,
            elapsed,
            report,
        } => {
            print_report(&report, "loaded", args.json);
            if !args.json {
                let seconds = elapsed.as_secs_f64();
                println!(
                    "imported {rows} rows into {table} ({merged} ranges merged) in {seconds:.1} s, {:.0} rows/s",
                    rows as f64 / seconds
                );
            }
        }
    }
    Ok(())
}

/// The report as a table, or as one JSON object with the outcome.
fn print_report(report: &ChangeReport, outcome: &str, json: bool) {
    if json {
        println!("{}", json!({ "outcome": outcome, "report": report }));
    } else {
        print!("{report}");
    }
}
