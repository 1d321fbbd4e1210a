//! Building the server from its settings: migrations, the MaxMind
//! database, the pool and the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::mmdb::GeoDb;
use crate::server::{self, Limits};
use crate::service::Locator;
use crate::store::{self, Store, StoreConfig};
use crate::thrift::Handler;

/// Everything `serve` needs; each option can also come from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "XM_IP_ADDR", default_value = "0.0.0.0:9090")]
    pub addr: String,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/ip_service.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// GeoIP2/GeoLite2 City database; without it the MaxMind fallback is off.
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
    /// Most IPs in one request; exactly this many is accepted.
    #[arg(long, env = "XM_IP_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Largest message in bytes, framed or not.
    #[arg(long, env = "XM_IP_MAX_FRAME", default_value_t = server::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Most client connections at once; further ones wait to be accepted.
    #[arg(long, env = "XM_IP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// How long one message may take to arrive once it has started.
    #[arg(long, env = "XM_IP_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// How long in-flight requests may take to finish on SIGINT/SIGTERM.
    #[arg(long, env = "XM_IP_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// A server that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        if settings.migrate {
            let applied = store::migrate(&settings.database_url)
                .await
                .context("failed to migrate the database")?;
            info!(applied, "migrations up to date");
        }
        let geo = match &settings.mmdb {
            Some(path) => Some(GeoDb::open(path)?),
            None => None,
        };
        let store = Store::new(&StoreConfig {
            database_url: settings.database_url.clone(),
            pool_size: settings.pool_size,
            timeout: settings.db_timeout,
        })?;
        let listener = TcpListener::bind(&settings.addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.addr))?;

        let database = describe_database(&settings.database_url);
        match &geo {
            Some(geo) => info!(
                addr = %listener.local_addr()?,
                %database,
                mmdb = %geo.path().display(),
                mmdb_build = %geo.describe(),
                "xm-ip-service listening"
            ),
            None => {
                info!(addr = %listener.local_addr()?, %database, "xm-ip-service listening");
                warn!("no --mmdb given: the MaxMind fallback is off");
            }
        }
        Ok(Application {
            listener,
            handler: Handler::new(Locator::new(store, geo), settings.max_batch),
            limits: Limits {
                max_frame: settings.max_frame,
                max_connections: settings.max_connections,
                read_timeout: settings.read_timeout,
                shutdown_timeout: settings.shutdown_timeout,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes and in-flight requests are done.
    pub async fn run_until_stopped(self, shutdown: impl Future) {
        server::run(self.listener, self.handler.clone(), self.limits, shutdown).await;
        self.handler.close();
        info!("stopped");
    }
}

/// `host:port/dbname` of a database URL, without the password.
fn describe_database(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                None => String::new(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}
