//! Every command's arguments, and their conversion into the library's
//! types at this edge: clap stays in this layer.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::{Protocol, Transport};
use crate::import::{Format, LoadMethod};
use crate::loadgen::{CompareOptions, LoadOptions, Method, SampleOptions};
use crate::server;
use crate::startup::{LookupMode, Settings};
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
    Serve(ServeArgs),
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
    /// Load a running server for a fixed time and report throughput and latency.
    Bench(BenchArgs),
    /// Send the same sampled addresses to two servers and count the answers
    /// that differ (exit status 1 if any do).
    Compare(CompareArgs),
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
    #[arg(long, value_enum, required_unless_present = "data")]
    pub table: Option<Table>,
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
    /// How rows reach PostgreSQL; `insert` exists only for the benchmark.
    #[arg(long, value_enum, default_value = "copy", hide = true)]
    pub method: LoadMethod,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolveFormat {
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Everything `serve` needs; each option can also come from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for Thrift.
    #[arg(long, env = "XM_IP_ADDR", default_value = "0.0.0.0:9090")]
    pub addr: String,
    /// Address for the HTTP API, /metrics and the health checks, or "off".
    #[arg(long, env = "XM_IP_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/ip_service.
    /// Without it (and without --data) the service serves data/ if
    /// scripts/fetch-data.sh filled it, else its built-in sample.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Serve the tables from the IP database files in this directory
    /// instead of a database: .ipdb gives cn and v6, .mmdb gives en and
    /// the MaxMind fallback, cn.csv/en.csv/v6.csv give their table.
    #[arg(long, env = "XM_IP_DATA", conflicts_with = "database_url")]
    pub data: Option<PathBuf>,
    /// With a database: query it on every call, or hold the tables in
    /// memory and follow its imports.
    #[arg(long, env = "XM_IP_LOOKUP", value_enum)]
    pub lookup: Option<LookupMode>,
    /// GeoIP2/GeoLite2 City database; without it (and without one among
    /// the data files) the MaxMind fallback is off.
    #[arg(long, env = "XM_IP_MMDB")]
    pub mmdb: Option<PathBuf>,
    /// Apply pending migrations before serving.
    #[arg(long, env = "XM_IP_MIGRATE")]
    pub migrate: bool,
    /// Most PostgreSQL connections held at once.
    #[arg(long, env = "XM_IP_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// Bound on connecting, waiting for a connection and each query.
    #[arg(long, env = "XM_IP_DB_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,
    /// How often the in-memory tables and the mmdb file are checked for
    /// changes a notification did not announce (SIGHUP checks at once).
    #[arg(long, env = "XM_IP_RELOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// Most IPs in one request; exactly this many is accepted.
    #[arg(long, env = "XM_IP_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Largest message in bytes, framed or not.
    #[arg(long, env = "XM_IP_MAX_FRAME", default_value_t = server::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Most Thrift connections at once; further ones are closed at once.
    #[arg(long, env = "XM_IP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most HTTP connections at once; further ones are closed at once
    /// [default: 10000, or what the open-file limit leaves beside
    /// --max-connections, if that is less].
    #[arg(long, env = "XM_IP_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Most HTTP requests handled at once; further ones get 503 at once.
    #[arg(long, env = "XM_IP_HTTP_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub http_max_in_flight: usize,
    /// Largest HTTP request body in bytes.
    #[arg(long, env = "XM_IP_HTTP_MAX_BODY", default_value_t = 1 << 20)]
    pub http_max_body: usize,
    /// Request body bytes all HTTP requests together may hold; a body
    /// waits for room, and gets 503 after --http-timeout.
    #[arg(long, env = "XM_IP_HTTP_MAX_BUFFERED_BYTES", default_value_t = 128 << 20)]
    pub http_max_buffered_bytes: usize,
    /// How long an HTTP request may take, headers, body and answer.
    #[arg(long, env = "XM_IP_HTTP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_timeout: Duration,
    /// How long one message may take to arrive once it has started.
    #[arg(long, env = "XM_IP_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// How long a Thrift connection may send nothing between messages
    /// before it is closed; 0 means forever.
    #[arg(long, env = "XM_IP_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long writing one reply may take: a peer that stops reading is
    /// closed then.
    #[arg(long, env = "XM_IP_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Request bytes all Thrift connections together may hold in buffers
    /// beyond a 16 KiB read-ahead each; a large message waits for budget.
    #[arg(long, env = "XM_IP_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    pub max_buffered_bytes: usize,
    /// Bytes all Thrift connections together may hold for large replies
    /// (answers being built, replies being written) and for replies a
    /// peer has stopped reading; a large request waits for budget.
    #[arg(long, env = "XM_IP_MAX_REPLY_BYTES", default_value_t = 64 << 20)]
    pub max_reply_bytes: usize,
    /// How long in-flight requests may take to finish on SIGINT/SIGTERM.
    #[arg(long, env = "XM_IP_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Where the sampled addresses come from, and in what shares.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// Sample from the tables of this database (default: data/ if
    /// scripts/fetch-data.sh filled it, else the built-in sample).
    #[arg(long)]
    pub sample_database_url: Option<String>,
    /// Sample from the IP database files in this directory.
    #[arg(long, conflicts_with = "sample_database_url")]
    pub sample_data: Option<PathBuf>,
    /// Share of addresses in Chinese ranges of the cn table, 0 to 100.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub china_percent: u8,
    /// Share of IPv6 addresses (from the v6 table's ranges).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub ipv6_percent: u8,
    /// Share of invalid inputs (error 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub invalid_percent: u8,
    /// Seed of the address sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// IPs per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// How long to send; the run stops by itself.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "by-ip")]
    pub method: Method,
    #[arg(long, value_enum, default_value = "framed")]
    pub transport: Transport,
    #[arg(long, value_enum, default_value = "binary")]
    pub protocol: Protocol,
    /// Read this process's CPU time before and after, and report the
    /// server's CPU per lookup.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Permit a target outside the loopback network.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the result as one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sample: SampleArgs,
}

/// What `compare` asks of two servers.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The server whose answers are taken as right.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// The server checked against it.
    #[arg(long)]
    pub against: String,
    /// Addresses to compare, per method.
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Methods to compare (repeatable).
    #[arg(long, value_enum, default_values_t = [Method::ByIp, Method::English])]
    pub method: Vec<Method>,
    /// Differences to print in full.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub sample: SampleArgs,
}

impl From<ServeArgs> for Settings {
    fn from(args: ServeArgs) -> Settings {
        Settings {
            addr: args.addr,
            http_addr: args.http_addr,
            database_url: args.database_url,
            data: args.data,
            lookup: args.lookup,
            mmdb: args.mmdb,
            migrate: args.migrate,
            pool_size: args.pool_size,
            db_timeout: args.db_timeout,
            reload_interval: args.reload_interval,
            max_batch: args.max_batch,
            max_frame: args.max_frame,
            max_connections: args.max_connections,
            http_max_connections: args.http_max_connections,
            http_max_in_flight: args.http_max_in_flight,
            http_max_body: args.http_max_body,
            http_max_buffered_bytes: args.http_max_buffered_bytes,
            http_timeout: args.http_timeout,
            read_timeout: args.read_timeout,
            idle_timeout: args.idle_timeout,
            write_timeout: args.write_timeout,
            max_buffered_bytes: args.max_buffered_bytes,
            max_reply_bytes: args.max_reply_bytes,
            shutdown_timeout: args.shutdown_timeout,
        }
    }
}

impl From<SampleArgs> for SampleOptions {
    fn from(args: SampleArgs) -> SampleOptions {
        SampleOptions {
            sample_database_url: args.sample_database_url,
            sample_data: args.sample_data,
            china_percent: args.china_percent,
            ipv6_percent: args.ipv6_percent,
            invalid_percent: args.invalid_percent,
            seed: args.seed,
        }
    }
}

impl From<BenchArgs> for LoadOptions {
    fn from(args: BenchArgs) -> LoadOptions {
        LoadOptions {
            addr: args.addr,
            connections: args.connections,
            pipeline: args.pipeline,
            batch: args.batch,
            duration: args.duration,
            method: args.method,
            transport: args.transport,
            protocol: args.protocol,
            server_pid: args.server_pid,
            allow_remote: args.allow_remote,
            json: args.json,
            sample: args.sample.into(),
        }
    }
}

impl From<CompareArgs> for CompareOptions {
    fn from(args: CompareArgs) -> CompareOptions {
        CompareOptions {
            addr: args.addr,
            against: args.against,
            count: args.count,
            batch: args.batch,
            method: args.method,
            show: args.show,
            allow_remote: args.allow_remote,
            sample: args.sample.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The command line's defaults are the library's, so that a server
    /// built in a test is the server `serve` runs.
    #[test]
    fn serve_defaults_are_the_library_defaults() {
        let Command::Serve(args) = Cli::try_parse_from(["xm-ip-service", "serve", "--http-addr", "off"])
            .unwrap()
            .command
        else {
            panic!("not serve")
        };
        let mut settings = Settings::from(args);
        // The test's own environment may name a database.
        settings.database_url = None;
        assert_eq!(format!("{settings:?}"), format!("{:?}", Settings::new("0.0.0.0:9090")));
    }

    #[test]
    fn library_enums_read_as_before() {
        let cli = Cli::try_parse_from(["xm-ip-service", "export", "--database-url", "x", "--table", "v6"]).unwrap();
        assert!(matches!(cli.command, Command::Export { table: Table::V6, .. }));
        let err = Cli::try_parse_from(["xm-ip-service", "export", "--database-url", "x", "--table", "v4"]).unwrap_err();
        assert!(err.to_string().contains("[possible values: cn, en, v6]"), "{err}");
    }
}
