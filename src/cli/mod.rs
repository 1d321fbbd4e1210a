//! The command line: argument definitions here, each command's body in
//! its own file. Clap stays in this layer.

mod bench;
mod export;
mod import;
mod migrate;
mod query;

pub use bench::{bench, compare};
pub use export::export;
pub use import::import;
pub use migrate::migrate;
pub use query::query;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::{Protocol, Transport};
use crate::import::{Format, LoadMethod};
use crate::loadgen::{CompareOptions, LoadOptions};
use crate::startup::Settings;
use crate::store::Table;

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
