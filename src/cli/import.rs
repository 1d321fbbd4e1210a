//! `import`: load an IP database file, or a directory of them, into the
//! range tables, with a report of what each import changes.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use tokio_postgres::Client;

use super::args::Target;
use super::ImportArgs;
use crate::data::import::overrides::{self, CorrectionReport, OverridesImport, OverridesOutcome};
use crate::data::import::{self, ChangeReport, Format, ImportError, ImportOptions, ImportOutcome, SourceError};
use crate::data::source::{DataFiles, CORRECTIONS_FILE};
use crate::data::store::{self, Table, OVERRIDES};

/// Runs `import`: migrates, then loads (or only compares, for
/// `--dry-run`) one file, or each table a `--data` directory gives,
/// printing each change report and a summary line.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    store::migrate(&args.database_url)
        .await
        .context("failed to migrate the database")?;
    let mut client = store::connect(&args.database_url).await?;
    let Some(dir) = &args.data else {
        let file = args.file.clone().expect("clap requires it");
        return match args.table.expect("clap requires it") {
            Target::Table(table) => import_one(&mut client, &options(&args, table, file), args.json).await,
            Target::Overrides => import_corrections(&mut client, &corrections(&args, file), args.json).await,
        };
    };

    let sources = DataFiles::in_dir(dir)?.sources()?;
    let mut failed = Vec::new();
    for (table, file, format) in sources {
        if !args.json {
            println!("== {} from {}", table.name(), file.display());
        }
        let mut options = options(&args, table, file);
        options.format = Some(format);
        match import_one(&mut client, &options, args.json).await {
            Ok(()) => {}
            // An ipdb or mmdb without one address family gives that table
            // nothing, as when serving the files.
            Err(err) if gives_nothing(&err, format) => {
                println!("{}: the file holds no ranges for it; skipped", table.name());
            }
            Err(err) => {
                eprintln!("xm-ip-service: {}: {err:#}", table.name());
                failed.push(table.name());
            }
        }
    }
    // The corrections last, once the tables they correct are in.
    let file = dir.join(CORRECTIONS_FILE);
    if file.exists() {
        if !args.json {
            println!("== {OVERRIDES} from {}", file.display());
        }
        if let Err(err) = import_corrections(&mut client, &corrections(&args, file), args.json).await {
            eprintln!("xm-ip-service: {OVERRIDES}: {err:#}");
            failed.push(OVERRIDES);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "import from {} failed or was refused for {}",
            dir.display(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn options(args: &ImportArgs, table: Table, file: PathBuf) -> ImportOptions {
    ImportOptions {
        format: args.format,
        lang: args.lang.clone(),
        ipdb_language: args.ipdb_language.clone(),
        force: args.force,
        dry_run: args.dry_run,
        max_change: args.max_change,
        ..ImportOptions::new(table, file)
    }
}

fn corrections(args: &ImportArgs, file: PathBuf) -> OverridesImport {
    OverridesImport {
        file,
        force: args.force,
        dry_run: args.dry_run,
        max_change: args.max_change,
    }
}

/// An import of corrections, as [`import_one`] does a table's.
async fn import_corrections(client: &mut Client, options: &OverridesImport, json: bool) -> anyhow::Result<()> {
    let outcome = match overrides::import(client, options).await {
        Err(ImportError::TooManyCorrectionsChanged { limit, report }) => {
            print_corrections(&report, "refused", json);
            return Err(ImportError::TooManyCorrectionsChanged { limit, report }.into());
        }
        outcome => outcome?,
    };
    match outcome {
        OverridesOutcome::AlreadyLoaded => {
            let message = format!(
                "{OVERRIDES} already holds {} (same SHA-256); nothing to do (--force reloads)",
                options.file.display()
            );
            match json {
                true => println!(
                    "{}",
                    json!({ "table": OVERRIDES, "outcome": "already_loaded", "message": message })
                ),
                false => println!("{message}"),
            }
        }
        OverridesOutcome::Checked { report } => {
            print_corrections(&report, "dry_run", json);
            if !json {
                println!("dry run: {} corrections read; {OVERRIDES} is unchanged", report.new);
            }
        }
        OverridesOutcome::Loaded { elapsed, report } => {
            print_corrections(&report, "loaded", json);
            if !json {
                println!(
                    "imported {} corrections into {OVERRIDES} in {:.1} s",
                    report.new,
                    elapsed.as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

fn print_corrections(report: &CorrectionReport, outcome: &str, json: bool) {
    match json {
        true => println!(
            "{}",
            json!({ "table": OVERRIDES, "outcome": outcome, "report": report })
        ),
        false => print!("{report}"),
    }
}

fn gives_nothing(err: &anyhow::Error, format: Format) -> bool {
    format != Format::Csv
        && matches!(
            err.downcast_ref(),
            Some(ImportError::Source {
                source: SourceError::Empty,
                ..
            })
        )
}

/// One import, its report and its summary line; a refused import prints
/// the report that refused it before failing.
async fn import_one(client: &mut Client, options: &ImportOptions, json: bool) -> anyhow::Result<()> {
    let table = options.table.name();
    let outcome = match import::import(client, options).await {
        Err(ImportError::TooMuchChange { limit, report }) => {
            print_report(&report, "refused", json);
            return Err(ImportError::TooMuchChange { limit, report }.into());
        }
        outcome => outcome?,
    };
    match outcome {
        ImportOutcome::AlreadyLoaded => {
            let message = format!(
                "{table} already holds {} (same SHA-256); nothing to do (--force reloads)",
                options.file.display()
            );
            if json {
                println!(
                    "{}",
                    json!({ "table": table, "outcome": "already_loaded", "message": message })
                );
            } else {
                println!("{message}");
            }
        }
        ImportOutcome::Checked {
            rows,
            merged,
            overlapping,
            report,
        } => {
            print_report(&report, "dry_run", json);
            if !json {
                let how = how_built(merged, overlapping);
                println!("dry run: {rows} rows parsed ({how}); {table} is unchanged");
            }
        }
        ImportOutcome::Loaded {
            rows,
            merged,
            overlapping,
            elapsed,
            report,
        } => {
            print_report(&report, "loaded", json);
            if !json {
                let seconds = elapsed.as_secs_f64();
                let how = how_built(merged, overlapping);
                println!(
                    "imported {rows} rows into {table} ({how}) in {seconds:.1} s, {:.0} rows/s",
                    rows as f64 / seconds
                );
            }
        }
    }
    Ok(())
}

/// What became of the file's ranges on the way to rows.
fn how_built(merged: u64, overlapping: u64) -> String {
    match overlapping {
        0 => format!("{merged} ranges merged"),
        _ => format!("{merged} ranges merged, {overlapping} overlapping others: the smaller kept the shared addresses"),
    }
}

/// The report as a table, or as one JSON object with the outcome.
fn print_report(report: &ChangeReport, outcome: &str, json: bool) {
    if json {
        println!(
            "{}",
            json!({ "table": report.table, "outcome": outcome, "report": report })
        );
    } else {
        print!("{report}");
    }
}
