//! PostgreSQL: the connection pool, the batch range lookups and the
//! migrations. Nothing here knows about Thrift.

mod migrate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use crate::domain::{Located, Place, Source};

pub use migrate::migrate;

/// The range tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    /// IPv4, Chinese names.
    Cn,
    /// IPv4, English names.
    En,
    /// IPv6, Chinese names.
    V6,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Cn => "ip_service_cn",
            Table::En => "ip_service_en",
            Table::V6 => "ip_service_v6",
        }
    }

    fn source(self) -> Source {
        match self {
            Table::Cn => Source::Cn,
            Table::En => Source::En,
            Table::V6 => Source::V6,
        }
    }

    /// The batch lookup: one round trip for a whole batch, in which each
    /// address probes the unique `start_ip` index backwards once (`ORDER BY
    /// start_ip DESC LIMIT 1`): a bounded index descent wherever it lands.
    pub fn lookup_sql(self) -> &'static str {
        macro_rules! lookup_sql {
            ($table:literal, $array:literal) => {
                concat!(
                    "SELECT q.ord, r.start_ip, r.end_ip, r.country_code, r.country_name, ",
                    "r.province_code, r.province_name, r.city_code, r.city_name, ",
                    "r.district_name, r.carrier_name ",
                    "FROM unnest($1::",
                    $array,
                    ") WITH ORDINALITY AS q(ip, ord) ",
                    "CROSS JOIN LATERAL (SELECT * FROM ",
                    $table,
                    " t ",
                    "WHERE t.start_ip <= q.ip ORDER BY t.start_ip DESC LIMIT 1) r ",
                    "WHERE r.end_ip >= q.ip"
                )
            };
        }
        match self {
            Table::Cn => lookup_sql!("ip_service_cn", "int8[]"),
            Table::En => lookup_sql!("ip_service_en", "int8[]"),
            Table::V6 => lookup_sql!("ip_service_v6", "inet[]"),
        }
    }
}

/// Why a lookup could not be answered by the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
}

/// How to reach PostgreSQL and how long to wait for it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database_url: String,
    pub pool_size: usize,
    /// Bounds connecting, waiting for a pooled connection and each query,
    /// so that a hung database turns into an error, not a hung request.
    pub timeout: Duration,
}

/// A pool of connections and the lookups run on them.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    timeout: Duration,
}

impl Store {
    /// Builds the pool. Connections are made on first use, so the service
    /// starts (and answers from MaxMind) even while the database is down.
    pub fn new(config: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&config.database_url).map_err(StoreError::Config)?;
        pg.connect_timeout(config.timeout);
        // The server enforces the same bound, so an abandoned query does not
        // keep running after the client gave up on it.
        pg.options(format!("-c statement_timeout={}", config.timeout.as_millis()));
        if pg.get_application_name().is_none() {
            pg.application_name("xm-ip-service");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime and timeouts are set, which is all build() checks");
        Ok(Store {
            pool,
            timeout: config.timeout,
        })
    }

    /// Closes the pool: idle connections are dropped, no new ones are made.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Finds the row for each IPv4 address in the IPv4 `table` (cn or en),
    /// in input order.
    pub async fn lookup_v4(&self, table: Table, ips: &[Ipv4Addr]) -> Result<Vec<Option<Located>>, StoreError> {
        debug_assert_ne!(table, Table::V6);
        let keys: Vec<i64> = ips.iter().map(|ip| i64::from(u32::from(*ip))).collect();
        let rows = self.query(table, &keys).await?;
        // The table's CHECK keeps IPv4 bounds within 0..=u32::MAX.
        let bound = |row: &Row, i| Ok(IpAddr::V4(Ipv4Addr::from(row.try_get::<_, i64>(i)? as u32)));
        in_input_order(rows, ips.len(), table.source(), bound)
    }

    /// Finds the row for each IPv6 address in `ip_service_v6`, in input order.
    pub async fn lookup_v6(&self, ips: &[Ipv6Addr]) -> Result<Vec<Option<Located>>, StoreError> {
        let keys: Vec<IpAddr> = ips.iter().map(|ip| IpAddr::V6(*ip)).collect();
        let rows = self.query(Table::V6, &keys).await?;
        in_input_order(rows, ips.len(), Source::V6, |row, i| row.try_get(i))
    }

    async fn query<T>(&self, table: Table, keys: &[T]) -> Result<Vec<Row>, StoreError>
    where
        T: tokio_postgres::types::ToSql + Sync,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let work = async {
            let client = self.pool.get().await.map_err(|err| match err {
                deadpool_postgres::PoolError::Timeout(_) => StoreError::Timeout(self.timeout),
                other => other.into(),
            })?;
            let statement = client.prepare_cached(table.lookup_sql()).await?;
            Ok::<_, StoreError>(client.query(&statement, &[&keys]).await?)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }
}

/// A single connection outside the pool, for migrations and imports.
pub async fn connect(database_url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Config)?;
    let (client, connection) = config.connect(NoTls).await.map_err(StoreError::Connect)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "database connection ended");
        }
    });
    Ok(client)
}

/// Places each found row at its input's position (the query's ordinal).
fn in_input_order(
    rows: Vec<Row>,
    inputs: usize,
    source: Source,
    bound: impl Fn(&Row, usize) -> Result<IpAddr, tokio_postgres::Error>,
) -> Result<Vec<Option<Located>>, StoreError> {
    let mut out = vec![None; inputs];
    for row in rows {
        let ordinal: i64 = row.try_get(0)?;
        out[ordinal as usize - 1] = Some(Located {
            start: bound(&row, 1)?,
            end: bound(&row, 2)?,
            place: place(&row)?,
            source,
        });
    }
    Ok(out)
}

fn place(row: &Row) -> Result<Place, tokio_postgres::Error> {
    Ok(Place {
        country_code: row.try_get(3)?,
        country_name: row.try_get(4)?,
        province_code: row.try_get(5)?,
        province_name: row.try_get(6)?,
        city_code: row.try_get(7)?,
        city_name: row.try_get(8)?,
        district_name: row.try_get(9)?,
        carrier: row.try_get(10)?,
    })
}
