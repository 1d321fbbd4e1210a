//! Every command's arguments. `serve`'s settings, `bench`'s and
//! `compare`'s options are the library's own types, which derive
//! `clap::Args`; the other commands' arguments are declared here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use super::values::Target;
use crate::config::Settings;
use crate::data::import::Format;
use crate::data::store::Table;
use crate::tools::client::{Framing, Protocol};
use crate::tools::loadgen::{CompareOptions, LoadOptions};

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
    /// Ask a running server where addresses are. Exit status 0 when every
    /// address was answered, 2 when some got an error (invalid, not found,
    /// backend), 1 when the server could not be asked.
    Query(QueryArgs),
    /// Locate every address in files or log lines, in bulk: through a
    /// server (--addr), or offline from files (--data) or PostgreSQL
    /// (--database-url). Prints one CSV or JSON row per input, then a summary.
    Resolve(ResolveArgs),
    /// Load an IP database file into a range table, atomically.
    Import(ImportArgs),
    /// Compare the live answers with observations or another IP database
    /// and report where they disagree; --propose writes the corrections
    /// the observations support, for review and `import --table overrides`.
    Audit(AuditArgs),
    /// Resolve a list of names on a schedule, locate their addresses, and
    /// alert when the addresses, where they are, or what is expected of
    /// them change. With --once: one round, then exit status 0 when
    /// nothing changed, 3 when something did, 1 on error.
    Watch(WatchArgs),
    /// Load a running server for a fixed time and report throughput and latency.
    Bench(LoadOptions),
    /// Send the same sampled addresses to two servers and count the answers
    /// that differ (exit status 1 if any do).
    Compare(CompareOptions),
    /// Check the range tables for what the importer would refuse:
    /// overlapping or reversed ranges, rows without names, country codes
    /// not in ISO 3166-1, GB/T 2260 codes that do not match their names.
    /// One line per problem; exit status 1 if there is any.
    Check {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The tables to check (repeatable); all of them by default.
        #[arg(long)]
        table: Vec<Table>,
    },
    /// Write a range table to standard output as interchange CSV, or the
    /// corrections as the CSV `import --table overrides` takes.
    Export {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, value_enum)]
        table: Target,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The table to replace: a range table, or the corrections
    /// (`overrides`, from a corrections CSV; see docs/importing.md).
    #[arg(long, value_enum, required_unless_present = "data")]
    pub table: Option<Target>,
    /// The ipdb, mmdb or CSV file.
    #[arg(required_unless_present = "data")]
    pub file: Option<PathBuf>,
    /// Import every table the files in this directory give, chosen as
    /// `serve --data` chooses them (.ipdb: cn and v6, .mmdb: en, cn.csv …);
    /// carries on past a failed table and exits non-zero if any failed.
    #[arg(long, conflicts_with_all = ["table", "file", "format", "lang", "ipdb_language"])]
    pub data: Option<PathBuf>,
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
    /// Report what the import would change (against the live table) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse to swap in an update that changes more than this percentage
    /// of the live table's addresses (changed or no longer covered).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    pub max_change: Option<f64>,
    /// Print the change report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `watch --once`'s exit status when it confirmed a change.
pub const CHANGED: i32 = 3;

/// `query`'s exit status when the server answered but not every address
/// was found: distinct from 1, "could not ask".
pub const SOME_UNANSWERED: i32 = 2;

fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
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
    pub transport: Framing,
    #[arg(long, value_enum, default_value = "binary")]
    pub protocol: Protocol,
    /// Give up on the server after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print JSON, one object per address, instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// Files to read, one address per line or log lines (see --field);
    /// standard input when none are given, or for "-".
    pub files: Vec<PathBuf>,
    /// Take the address from this whitespace-separated field (1-based) of
    /// each line, without a #port or :port suffix (BIND: `client @0x… 1.2.3.4#53`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub field: Option<u16>,
    /// Resolve and print each distinct address once, in order of first sight.
    #[arg(long)]
    pub unique: bool,
    /// Ask this running server over Thrift.
    #[arg(long, conflicts_with_all = ["data", "database_url"])]
    pub addr: Option<String>,
    /// Answer offline from the IP database files in this directory, as
    /// `serve --data` does.
    #[arg(long, conflicts_with = "database_url")]
    pub data: Option<PathBuf>,
    /// Answer offline from the tables in this PostgreSQL database.
    #[arg(long)]
    pub database_url: Option<String>,
    /// GeoIP2/GeoLite2 City database for the MaxMind fallback offline.
    #[arg(long, conflicts_with = "addr")]
    pub mmdb: Option<PathBuf>,
    /// Answer language, as queryGeoInfo's lang; without it, queryGeoInfoByIP (zh-CN).
    #[arg(long)]
    pub lang: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ResolveFormat,
    /// Write the rows here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// How many of the most frequent countries, provinces and carriers the
    /// summary lists.
    #[arg(long, default_value_t = 10)]
    pub summary: usize,
    /// Batches in flight at once (connections to the server).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Addresses per request; at most the server's --max-batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Give up on the server or the database after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("other").required(true).args(["observations", "against"])))]
pub struct AuditArgs {
    /// Observations to compare with: a CSV with a header naming ip and any
    /// of country, province, city, carrier (names), count (the users or
    /// queries behind the row; 1 if absent) and source.
    #[arg(long)]
    pub observations: Option<PathBuf>,
    /// Another IP database to compare with: an .ipdb, an .mmdb (names in
    /// --lang) or a range CSV. Every range of the live table is probed at
    /// its bounds and three addresses inside, unless --sample is given.
    #[arg(long, conflicts_with = "observations")]
    pub against: Option<PathBuf>,
    /// With --against: probe this many addresses instead, each at random
    /// in a random range of the other database.
    #[arg(long, requires = "against")]
    pub sample: Option<usize>,
    /// Ask this running server for the live answers (with --against, only
    /// with --sample: a server cannot list its ranges).
    #[arg(long, conflicts_with_all = ["data", "database_url"])]
    pub addr: Option<String>,
    /// The live data: the IP database files in this directory, as `serve --data` reads them.
    #[arg(long, conflicts_with = "database_url")]
    pub data: Option<PathBuf>,
    /// The live data: this PostgreSQL database's tables and corrections, read into memory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// GeoIP2/GeoLite2 City database for the live answers' MaxMind fallback.
    #[arg(long, conflicts_with = "addr")]
    pub mmdb: Option<PathBuf>,
    /// The language of the live answers compared, and of the corrections
    /// proposed: zh-CN or en.
    #[arg(long, default_value = "zh-CN")]
    pub lang: String,
    /// Write the corrections the observations support here, in the
    /// corrections CSV, with reason and source filled in.
    #[arg(long, requires = "observations")]
    pub propose: Option<PathBuf>,
    /// A proposal needs the observations agreeing on it to hold at least
    /// this percentage of the weight of those giving that level.
    #[arg(long, default_value_t = 80.0, value_parser = percent)]
    pub agreement: f64,
    /// ... and to number at least this many (never fewer than 2).
    #[arg(long, default_value_t = 5)]
    pub min_count: u64,
    /// How many disagreements and breakdown rows the report lists.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Give up on the server or the database after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveFormat {
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn library_enums_read_as_before() {
        let cli = Cli::try_parse_from(["xm-ip-service", "export", "--database-url", "x", "--table", "v6"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Export {
                table: Target::Table(Table::V6),
                ..
            }
        ));
        let err = Cli::try_parse_from(["xm-ip-service", "export", "--database-url", "x", "--table", "v4"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("[possible values: cn, en, v6, asn, asn-v6, overrides]"),
            "{err}"
        );
    }
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The watch's config file (TOML; see the README's "Watching domains").
    #[arg(long, env = "XM_WATCH_CONFIG")]
    pub config: PathBuf,
    /// One round of every name, then exit (for cron).
    #[arg(long)]
    pub once: bool,
    /// With --once, print the changes as JSON, one object a line.
    #[arg(long, requires = "once")]
    pub json: bool,
    /// Locate addresses through this running server over Thrift.
    #[arg(long, conflicts_with = "data")]
    pub addr: Option<String>,
    /// Locate addresses from the IP database files in this directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep the watch's state here (tables watch_names, watch_events), and
    /// locate addresses from its tables unless --addr or --data is given.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// GeoIP2/GeoLite2 City database for the MaxMind fallback offline.
    #[arg(long, conflicts_with = "addr")]
    pub mmdb: Option<PathBuf>,
    /// Keep the watch's state in this file when no database is given.
    #[arg(long, env = "XM_WATCH_STATE", default_value = "watch-state.json")]
    pub state: PathBuf,
    /// Serve /metrics and /v1/watch (each name's state and latest events)
    /// here, e.g. 127.0.0.1:9465.
    #[arg(long, env = "XM_WATCH_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Give up on the server or the database after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}
