//! The command line: `serve`, `migrate` and `query`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use unicode_width::UnicodeWidthStr;

use crate::client::{self, to_json, Protocol, Transport};
use crate::import::{self, Format, ImportOptions, LoadMethod, Outcome};
use crate::loadgen::{self, CompareOptions, LoadOptions};
use crate::startup::Settings;
use crate::store::{self, Table};
use crate::thrift::{GeoInfo, GeoRequest, TIPServiceSyncClient};

#[derive(Debug, Parser)]
#[command(
    name = "xm-ip-service",
    version,
    about = "IP geolocation over Thrift, backed by PostgreSQL and MaxMind"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "XM_IP_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Thrift server.
    Serve(Settings),
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Ask a running server where addresses are.
    Query(QueryArgs),
    /// Load an IP database file into a range table, atomically.
    Import(ImportArgs),
    /// Load a running server for a fixed time and report throughput and latency.
    Bench(LoadOptions),
    /// Send the same sampled addresses to two servers and count the answers
    /// that differ (exit status 1 if any do).
    Compare(CompareOptions),
    /// Write a range table to standard output as interchange CSV.
    Export {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, value_enum)]
        table: Table,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The table to replace.
    #[arg(long, value_enum)]
    pub table: Table,
    /// The file's format; detected from its content when omitted.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Names for mmdb sources (zh-CN, en, de, …); defaults to the table's language.
    #[arg(long)]
    pub lang: Option<String>,
    /// The language block of an ipdb file (e.g. CN); defaults to its first.
    #[arg(long)]
    pub ipdb_language: Option<String>,
    /// Reload even if this file is already the live data.
    #[arg(long)]
    pub force: bool,
    /// How rows reach PostgreSQL; `insert` exists only for the benchmark.
    #[arg(long, value_enum, default_value = "copy", hide = true)]
    pub method: LoadMethod,
    /// The ipdb, mmdb or CSV file.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// IPv4 or IPv6 addresses.
    #[arg(required = true)]
    pub ips: Vec<String>,
    /// Answer language (queryGeoInfo); without it, queryGeoInfoByIP (zh-CN).
    #[arg(long)]
    pub lang: Option<String>,
    /// Use queryI18nGeoInfoByIP (MaxMind only, English).
    #[arg(long, conflicts_with = "lang")]
    pub i18n: bool,
    #[arg(long, env = "XM_IP_QUERY_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "framed")]
    pub transport: Transport,
    #[arg(long, value_enum, default_value = "binary")]
    pub protocol: Protocol,
    /// Give up on the server after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print JSON, one object per address, instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `migrate`.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let applied = store::migrate(database_url).await.context("migration failed")?;
    println!("applied {applied} migration(s); the schema is up to date");
    Ok(())
}

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

/// Runs `bench` and prints one summary line.
pub fn bench(options: LoadOptions) -> anyhow::Result<()> {
    let report = loadgen::run(&options)?;
    if options.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    println!(
        "{:?} x{} connections x{} in flight, batch {}: {}",
        options.method,
        options.connections,
        options.pipeline,
        options.batch,
        report.summary()
    );
    Ok(())
}

/// Runs `compare`: the count of differing answers, and the first few.
pub fn compare(options: CompareOptions) -> anyhow::Result<bool> {
    let (compared, differing, shown) = loadgen::compare(&options, options.show)?;
    for difference in &shown {
        println!(
            "{:?} {}:\n  {}: {}\n  {}: {}",
            difference.method,
            difference.expected.ip.as_deref().unwrap_or_default(),
            options.addr,
            to_json(&difference.expected),
            options.against,
            to_json(&difference.got)
        );
    }
    println!("{compared} answers compared, {differing} differences");
    Ok(differing == 0)
}

/// Runs `export` to standard output.
pub async fn export(database_url: &str, table: Table) -> anyhow::Result<()> {
    let client = store::connect(database_url).await?;
    import::export(&client, table, &mut tokio::io::stdout()).await?;
    Ok(())
}

/// Runs `query`: a blocking client, so it stays out of the async runtime.
pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    let mut client = client::connect(&args.addr, args.transport, args.protocol, args.timeout)
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let ips = args.ips.clone();
    let answers = if args.i18n {
        client.query_i18n_geo_info_by_i_p(ips)
    } else if let Some(lang) = &args.lang {
        client.query_geo_info(GeoRequest::new(ips, lang.clone()))
    } else {
        client.query_geo_info_by_i_p(ips)
    }
    .with_context(|| format!("query to {} failed", args.addr))?;

    if args.json {
        for answer in &answers {
            println!("{}", to_json(answer));
        }
    } else {
        print!("{}", table(&answers));
    }
    Ok(())
}

/// A table, one row per address; widths count display columns, so CJK
/// names line up. An error row gives its number and message after the IP.
fn table(answers: &[GeoInfo]) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let pair =
        |code: &Option<String>, name: &Option<String>| format!("{} {}", text(code), text(name)).trim().to_owned();
    let header = [
        "IP", "SOURCE", "COUNTRY", "PROVINCE", "CITY", "DISTRICT", "CARRIER", "RANGE",
    ];
    let rows: Vec<Vec<String>> = answers
        .iter()
        .map(|g| match g.error_no.unwrap_or(0) {
            0 => vec![
                text(&g.ip),
                text(&g.geoip_source),
                pair(&g.geoip_country_code, &g.geoip_country_name),
                pair(&g.geoip_province_code, &g.geoip_province_name),
                pair(&g.geoip_city_code, &g.geoip_city_name),
                text(&g.geoip_district_name),
                text(&g.geoip_carrier),
                format!("{} - {}", text(&g.geoip_start_ip_str), text(&g.geoip_end_ip_str)),
            ],
            n => vec![text(&g.ip), format!("error {n}: {}", text(&g.error_msg))],
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows.iter().filter(|r| r.len() == header.len()) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.width().min(widths[i]) + 2));
            }
        }
        out.push('\n');
    }
    out
}
