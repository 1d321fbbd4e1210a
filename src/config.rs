//! Every setting `serve` takes, declared once: each group derives
//! `clap::Args` (every option with its environment variable and default)
//! and is flattened into `serve`; the library reads the same types.
//!
//! Adding a `serve` option means adding one field to one group here.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args, FromArgMatches};

use crate::format::Format;

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub source: DataSource,
    /// GeoIP2/GeoLite2 City database; without it (and without one among
    /// the data files) the MaxMind fallback is off.
    #[arg(long, env = "XM_IP_MMDB")]
    pub mmdb: Option<PathBuf>,
    /// Hold the mmdb's IPv4 and IPv6 networks as flat tables, built on a
    /// thread after start-up and after each replacement (32 MB and 0.4 s
    /// for GeoLite2 City): a fallback finds its network there instead of
    /// walking the file's tree, a few per cent of an HTTP request, and
    /// three times faster for IPv6 (BENCHMARKS.md). `false` keeps only the
    /// tree walk.
    #[arg(long, env = "XM_IP_MMDB_RANGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub mmdb_ranges: bool,
    /// How often the in-memory tables and the mmdb file are checked for
    /// changes a notification did not announce (SIGHUP checks at once).
    #[arg(long, env = "XM_IP_RELOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    #[command(flatten)]
    pub requests: Requests,
    #[command(flatten)]
    pub thrift: Thrift,
    #[command(flatten)]
    pub http: Http,
}

impl Settings {
    /// Every setting at its default, as `serve` with no options and no
    /// environment would have it.
    pub fn defaults() -> Settings {
        without_environment(&[]).expect("the defaults are valid settings")
    }
}

/// `T` from `args` alone, as `serve` would read them with no environment:
/// how the library gets the defaults without writing them twice.
fn without_environment<T: Args + FromArgMatches>(args: &[&str]) -> Result<T, clap::Error> {
    let command = T::augment_args(clap::Command::new("serve").no_binary_name(true)).mut_args(|arg| arg.env(None));
    T::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// Where the range tables come from: one source at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// PostgreSQL, the system of record.
    Postgres(Postgres),
    /// The IP database files in a directory: .ipdb gives cn and v6, .mmdb
    /// gives en and the MaxMind fallback, cn.csv/en.csv/v6.csv their table.
    Files(PathBuf),
    /// The small sample compiled into the binary.
    Builtin,
}

/// A PostgreSQL source and how it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Postgres {
    /// A libpq-style URL; several hosts are tried in turn.
    pub url: String,
    /// Where memory mode LISTENs for imports, when `url` is a standby
    /// (which cannot LISTEN): normally the primary. `None`: `url` itself.
    pub notify_url: Option<String>,
    /// Memory mode: keep a snapshot of each table here, start from it
    /// (within a second, and while the database is away), then check it
    /// against the database.
    pub snapshot_dir: Option<PathBuf>,
    pub lookup: LookupMode,
    /// Apply pending migrations before serving.
    pub migrate: bool,
    pub pool: Pool,
}

impl Postgres {
    /// The database at `url`, read as `serve --database-url URL` reads it:
    /// every other option at its default.
    pub fn at(url: &str) -> Postgres {
        match without_environment::<DataSource>(&["--database-url", url]) {
            Ok(DataSource::Postgres(pg)) => pg,
            other => unreachable!("--database-url gives a database: {other:?}"),
        }
    }
}

/// Bounds on the connections to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Most connections held at once.
    pub size: usize,
    /// Bound on connecting, waiting for a connection and each query.
    pub timeout: Duration,
}

/// Where lookups in PostgreSQL-backed tables happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LookupMode {
    /// Every call queries PostgreSQL (concurrent calls share queries).
    Postgres,
    /// The tables are loaded into memory at start-up and kept in step.
    Memory,
}

/// The directory served when neither a database nor `--data` is given,
/// if scripts/fetch-data.sh filled it.
pub const DEFAULT_DATA_DIR: &str = "data";

impl DataSource {
    /// `data/` if it holds IP database files, else the built-in sample.
    pub fn default_here() -> DataSource {
        let dir = Path::new(DEFAULT_DATA_DIR);
        let filled = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.path().is_file() && Format::of_name(&entry.file_name().to_string_lossy()).is_some())
        });
        if filled {
            DataSource::Files(dir.to_owned())
        } else {
            DataSource::Builtin
        }
    }
}

/// The command-line form of [`DataSource`]: flags that clap checks for
/// conflicts, turned into the enum as they are parsed.
#[derive(Debug, Clone, Args)]
struct SourceFlags {
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/ip_service.
    /// Without it (and without --data) the service serves data/ if
    /// scripts/fetch-data.sh filled it, else its built-in sample.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Serve the tables from the IP database files in this directory
    /// instead of a database: .ipdb gives cn and v6, .mmdb gives en and
    /// the MaxMind fallback, cn.csv/en.csv/v6.csv give their table.
    #[arg(long, env = "XM_IP_DATA", conflicts_with = "database_url")]
    data: Option<PathBuf>,
    /// With a database: query it on every call, or hold the tables in
    /// memory and follow its imports.
    #[arg(long, env = "XM_IP_LOOKUP", value_enum)]
    lookup: Option<LookupMode>,
    /// Apply pending migrations before serving.
    #[arg(long, env = "XM_IP_MIGRATE")]
    migrate: bool,
    /// Memory mode: LISTEN for imports here (normally the primary) while
    /// the tables are read from --database-url (a standby, which cannot
    /// LISTEN); after a notification the tables are rebuilt once the
    /// standby has replayed the import.
    #[arg(long, env = "XM_IP_NOTIFY_URL", hide_env_values = true, requires = "database_url")]
    notify_url: Option<String>,
    /// Memory mode: keep a snapshot of each table in this directory (written
    /// after every load and rebuild), and start from it: serving within a
    /// second, and while the database is away, then checking it against the
    /// database. A corrupt or foreign snapshot is refused and never served.
    #[arg(long, env = "XM_IP_SNAPSHOT_DIR", requires = "database_url")]
    snapshot_dir: Option<PathBuf>,
    /// Most PostgreSQL connections held at once.
    #[arg(long, env = "XM_IP_POOL_SIZE", default_value_t = 16)]
    pool_size: usize,
    /// Bound on connecting, waiting for a connection and each query.
    #[arg(long, env = "XM_IP_DB_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    db_timeout: Duration,
}

impl SourceFlags {
    fn source(self) -> Result<DataSource, clap::Error> {
        let needs_database = |what: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{what} needs --database-url (or DATABASE_URL)"),
            )
        };
        let Some(url) = self.database_url else {
            if self.lookup == Some(LookupMode::Postgres) {
                return Err(needs_database("--lookup postgres"));
            }
            if self.migrate {
                return Err(needs_database("--migrate"));
            }
            return Ok(self.data.map_or_else(DataSource::default_here, DataSource::Files));
        };
        Ok(DataSource::Postgres(Postgres {
            url,
            notify_url: self.notify_url,
            snapshot_dir: self.snapshot_dir,
            lookup: self.lookup.unwrap_or(LookupMode::Postgres),
            migrate: self.migrate,
            pool: Pool {
                size: self.pool_size,
                timeout: self.db_timeout,
            },
        }))
    }
}

impl FromArgMatches for DataSource {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        SourceFlags::from_arg_matches(matches)?.source()
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for DataSource {
    fn augment_args(command: clap::Command) -> clap::Command {
        SourceFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        SourceFlags::augment_args_for_update(command)
    }
}

/// Bounds every listener shares.
#[derive(Debug, Clone, Args)]
pub struct Requests {
    /// Most IPs in one request; exactly this many is accepted.
    #[arg(long, env = "XM_IP_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// How long in-flight requests may take to finish on SIGINT/SIGTERM.
    #[arg(long, env = "XM_IP_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// On SIGINT/SIGTERM, how long /readyz answers 503 while the listeners
    /// stay open, so that a balancer's health check takes the instance out
    /// before it stops accepting.
    #[arg(long, env = "XM_IP_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
}

/// The Thrift listener and the limits that protect it from its peers.
#[derive(Debug, Clone, Args)]
pub struct Thrift {
    /// Address to listen on for Thrift.
    #[arg(long = "addr", id = "addr", value_name = "ADDR", env = "XM_IP_ADDR", default_value = "0.0.0.0:9090", value_parser = socket_addr)]
    pub addr: SocketAddr,
    /// Largest message in bytes, framed or not.
    #[arg(long, env = "XM_IP_MAX_FRAME", default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Most Thrift connections at once; further ones are closed at once.
    #[arg(long, env = "XM_IP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
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
}

/// The Thrift spec's default MaxFrameSize.
pub const DEFAULT_MAX_FRAME: usize = 16_384_000;

/// A listener that may be off; an alias so that clap reads it as one
/// value ("off" or an address), not as an optional flag.
type MaybeListener = Option<SocketAddr>;

/// The HTTP listener (JSON API, /metrics, health checks) and its limits.
#[derive(Debug, Clone, Args)]
pub struct Http {
    /// Address for the HTTP API, /metrics and the health checks, or "off".
    #[arg(long = "http-addr", id = "http_addr",
        value_name = "HTTP_ADDR", env = "XM_IP_HTTP_ADDR", default_value = "0.0.0.0:8080", value_parser = socket_addr_or_off)]
    pub addr: MaybeListener,
    /// Most HTTP connections at once; further ones are closed at once
    /// [default: 10000, or what the open-file limit leaves beside
    /// --max-connections, if that is less].
    #[arg(
        long = "http-max-connections",
        id = "http_max_connections",
        value_name = "HTTP_MAX_CONNECTIONS",
        env = "XM_IP_HTTP_MAX_CONNECTIONS"
    )]
    pub max_connections: Option<usize>,
    /// Most HTTP requests handled at once; further ones get 503 at once.
    #[arg(
        long = "http-max-in-flight",
        id = "http_max_in_flight",
        value_name = "HTTP_MAX_IN_FLIGHT",
        env = "XM_IP_HTTP_MAX_IN_FLIGHT",
        default_value_t = 1024
    )]
    pub max_in_flight: usize,
    /// Largest HTTP request body in bytes.
    #[arg(long = "http-max-body", id = "http_max_body",
        value_name = "HTTP_MAX_BODY", env = "XM_IP_HTTP_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Request body bytes all HTTP requests together may hold; a body
    /// waits for room, and gets 503 after --http-timeout.
    #[arg(
        long = "http-max-buffered-bytes",
        id = "http_max_buffered_bytes",
        value_name = "HTTP_MAX_BUFFERED_BYTES",
        env = "XM_IP_HTTP_MAX_BUFFERED_BYTES",
        default_value_t = 64 << 20
    )]
    pub max_buffered_bytes: usize,
    /// Bytes all HTTP connections together may hold for large replies
    /// (answers being built, replies being written); a large batch waits
    /// for room, and gets 503 after --http-timeout.
    #[arg(
        long = "http-max-reply-bytes",
        id = "http_max_reply_bytes",
        value_name = "HTTP_MAX_REPLY_BYTES",
        env = "XM_IP_HTTP_MAX_REPLY_BYTES",
        default_value_t = 64 << 20
    )]
    pub max_reply_bytes: usize,
    /// How long an HTTP request may take, headers, body and answer.
    #[arg(long = "http-timeout", id = "http_timeout",
        value_name = "HTTP_TIMEOUT", env = "XM_IP_HTTP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The HTTP connection cap when none is given, if the open-file limit
/// has room for it.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 10_000;

/// `host:port`, a name resolved to its first address.
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|err| format!("{text:?} is not host:port: {err}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// An address, or "off" for no listener.
fn socket_addr_or_off(text: &str) -> Result<MaybeListener, String> {
    match text {
        "off" => Ok(None),
        _ => socket_addr(text).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        without_environment(args)
    }

    #[test]
    fn off_turns_the_http_listener_off_and_an_address_turns_it_on() {
        assert_eq!(parse(&["--http-addr", "off"]).unwrap().http.addr, None);
        let on = parse(&["--http-addr", "127.0.0.1:8081"]).unwrap();
        assert_eq!(on.http.addr, Some("127.0.0.1:8081".parse().unwrap()));
        let err = parse(&["--http-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("is not host:port"), "{err}");
    }

    #[test]
    fn a_database_url_gives_a_postgres_source_with_its_pool() {
        let settings = parse(&[
            "--database-url",
            "postgres://h/db",
            "--lookup",
            "memory",
            "--pool-size",
            "3",
        ])
        .unwrap();
        let DataSource::Postgres(pg) = settings.source else {
            panic!("{:?}", settings.source)
        };
        assert_eq!(pg.lookup, LookupMode::Memory);
        assert_eq!(pg.pool.size, 3);
        assert!(!pg.migrate);
    }

    #[test]
    fn lookup_postgres_or_migrate_without_a_database_is_refused() {
        for args in [&["--lookup", "postgres"][..], &["--migrate"]] {
            let err = parse(args).unwrap_err();
            assert!(err.to_string().contains("needs --database-url"), "{err}");
        }
    }

    #[test]
    fn a_database_at_a_url_has_the_default_pool() {
        let pg = Postgres::at("postgres://h/db");
        assert_eq!(
            pg.pool,
            Pool {
                size: 16,
                timeout: Duration::from_secs(2)
            }
        );
        assert_eq!(pg.lookup, LookupMode::Postgres);
    }

    #[test]
    fn the_defaults_read_no_environment() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.thrift.addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(defaults.http.addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert!(!matches!(defaults.source, DataSource::Postgres(_)));
        assert_eq!(defaults.thrift.max_frame, DEFAULT_MAX_FRAME);
    }
}
