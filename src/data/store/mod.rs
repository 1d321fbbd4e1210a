//! PostgreSQL: the connection pool, the coalesced batch range lookups,
//! reading whole tables into the in-memory index, and the migrations.
//! Nothing here knows about Thrift.

mod coalesce;
mod migrate;
mod overrides;
mod snapshot;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};

use crate::config;
use crate::domain::{
    Column, Family, Found, Located, Network, Place, RowKind, Source, TableLang, Unavailable, V4Table, PLACE_COLUMNS,
};
use crate::health::{Freshness, PoolState, TableState};
use crate::metrics::Metrics;
use coalesce::Coalescer;

pub use crate::domain::Table;
pub use migrate::migrate;
pub use overrides::{
    corrections_import, corrections_version, load_corrections, place_columns, CorrectionsImport, OVERRIDES,
};
pub use snapshot::{
    change_summary, connect_for, copy_rows_sql, live_import, load_changes, load_snapshot, table_rows, version,
    visit_rows, LiveImport,
};

/// The channel an import's swap NOTIFYs with the table's name, and the
/// in-memory tables LISTEN on.
pub const RELOAD_CHANNEL: &str = "ip_service_reload";

/// The batch lookup for `table`: one round trip for a whole batch, in
/// which each address probes the unique `start_ip` index backwards once
/// (`ORDER BY start_ip DESC LIMIT 1`): a bounded index descent wherever it
/// lands. A place table's lookup probes the network table of its family in
/// the same query; a network table's lookup is for routes that ask no
/// place table. Each also probes the corrections in force in the language
/// the route's answers take ([`TableLang::of_v4`]).
pub fn lookup_sql(table: Table) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|&table| {
                let (array, ip) = match table.family() {
                    Family::V4 => ("int8[]", "'0.0.0.0'::inet + q.ip"),
                    Family::V6 => ("inet[]", "q.ip"),
                };
                let probe = |table: Table, alias: &str| {
                    format!(
                        "LEFT JOIN LATERAL (SELECT * FROM {} t WHERE t.start_ip <= q.ip \
                         ORDER BY t.start_ip DESC LIMIT 1) {alias} ON {alias}.end_ip >= q.ip",
                        table.name()
                    )
                };
                // A correction of the other family never reaches the
                // address: inet orders IPv4 before IPv6.
                let lang = correction_lang(table).as_str();
                let corrections = format!(
                    "LEFT JOIN LATERAL (SELECT * FROM {OVERRIDES} o WHERE o.lang = '{lang}' AND o.start_ip <= {ip} \
                     ORDER BY o.start_ip DESC LIMIT 1) c ON c.end_ip >= {ip} \
                     AND (c.expires_at IS NULL OR c.expires_at > now())"
                );
                let correction_columns = format!("c.start_ip, c.end_ip, {}", place_columns("c."));
                let networks = Table::networks_of(table.family());
                let (columns, joins, found) = match table.kind() {
                    RowKind::Place => (
                        format!("r.start_ip, r.end_ip, {}, a.asn, a.as_org", value_columns(table, "r.")),
                        format!("{} {}", probe(table, "r"), probe(networks, "a")),
                        "r.start_ip IS NOT NULL OR a.start_ip IS NOT NULL",
                    ),
                    RowKind::Network => (
                        "a.asn, a.as_org".to_owned(),
                        probe(networks, "a"),
                        "a.start_ip IS NOT NULL",
                    ),
                };
                format!(
                    "SELECT q.ord, {columns}, {correction_columns} FROM unnest($1::{array}) WITH ORDINALITY AS q(ip, ord) \
                     {joins} {corrections} WHERE {found} OR c.start_ip IS NOT NULL"
                )
            })
            .collect()
    });
    &all[Table::ALL
        .iter()
        .position(|t| *t == table)
        .expect("every table is in ALL")]
}

/// The language of the corrections a lookup of `table` applies: the
/// table's own, or for a network table (asked by routes that ask no place
/// table) English, as [`TableLang::of_v4`] says.
fn correction_lang(table: Table) -> TableLang {
    match table {
        Table::Cn | Table::V6 => TableLang::ZhCn,
        Table::En | Table::Asn | Table::AsnV6 => TableLang::En,
    }
}

/// `table`'s value columns, in [`Table::columns`] order, each after
/// `prefix`.
pub fn value_columns(table: Table, prefix: &str) -> String {
    table
        .columns()
        .iter()
        .map(|column| format!("{prefix}{}", column.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `table`'s value columns as [`value_columns`] lists them, a number
/// cast to text: what COPY reads into a row's values.
pub fn text_columns(table: Table) -> String {
    table
        .columns()
        .iter()
        .map(|column| match column.number {
            true => format!("{}::text", column.name),
            false => column.name.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The binary COPY types of `table`'s value columns: `text` (`TEXT` or
/// `VARCHAR`, as the target declares it) or `INT8` for a number.
pub fn copy_types(table: Table, text: Type) -> Vec<Type> {
    table
        .columns()
        .iter()
        .map(|column| if column.number { Type::INT8 } else { text.clone() })
        .collect()
}

/// One value of a row for a binary COPY into `column`: its text, or for a
/// number column the number the text spells (the importer has checked it).
#[derive(Debug)]
pub struct Cell<'a> {
    pub column: Column,
    pub value: &'a str,
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.column.number {
            true => self.value.parse::<i64>()?.to_sql(ty, out),
            false => self.value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A row's values as [`Cell`]s of `table`'s columns.
pub fn cells(table: Table, place: &Place) -> Vec<Cell<'_>> {
    table
        .columns()
        .iter()
        .zip(place.fields().columns())
        .map(|(&column, value)| Cell { column, value })
        .collect()
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
    #[error("cannot be held in memory: {0}")]
    Invalid(String),
}

impl StoreError {
    /// The whole cause on one line, for the log: every error in the chain
    /// (skipping one whose text an outer one already holds), and the
    /// server's own message and SQLSTATE where PostgreSQL refused.
    pub fn cause(&self) -> String {
        let mut line = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = next {
            let db = err
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(|e| e.as_db_error());
            let text = match db {
                Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                None => err.to_string(),
            };
            if !line.contains(&text) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&text);
            }
            // The server's message is the whole cause.
            next = if db.is_some() { None } else { err.source() };
        }
        line
    }

    /// Whether the connection, not the query, failed: the server closed it
    /// or ended the session. Worth one retry on a fresh connection.
    pub fn is_connection_lost(&self) -> bool {
        let io = |err: &tokio_postgres::Error| {
            std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
        };
        matches!(self, StoreError::Query(err) if err.is_closed() || session_ended(err) || io(err))
    }

    /// What a client is told; the whole error goes to the log, once.
    pub fn unavailable(&self) -> Unavailable {
        match self {
            StoreError::Timeout(_) => Unavailable::DatabaseTimeout,
            StoreError::Query(err) if !err.is_closed() && !session_ended(err) => Unavailable::DatabaseQuery,
            StoreError::Invalid(_) => Unavailable::DatabaseRows,
            _ => Unavailable::Database,
        }
    }
}

/// Whether the server ended the session (SQLSTATE class 08, or 57P:
/// shut down, restarting, terminated): unavailability, not a bad query.
fn session_ended(err: &tokio_postgres::Error) -> bool {
    err.code()
        .is_some_and(|state| state.code().starts_with("08") || state.code().starts_with("57P"))
}

/// Queries of one table that run at once; callers arriving meanwhile wait
/// and share the next one. Two keep both of PostgreSQL's cores busy on a
/// small box without one table's load starving the pool.
const QUERIES_IN_FLIGHT: usize = 2;
/// The most addresses one coalesced query carries.
const MAX_KEYS_PER_QUERY: usize = 20_000;
/// Callers that may queue for one table before more are held back.
const QUEUE: usize = 4096;

/// A pool of connections and the coalesced lookups run on them.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    timeout: Duration,
    cn: Coalescer<i64>,
    en: Coalescer<i64>,
    v6: Coalescer<IpAddr>,
    asn: Coalescer<i64>,
    asn_v6: Coalescer<IpAddr>,
}

impl Store {
    /// Builds the pool and starts each table's coalescing task. Connections
    /// are made on first use, so the service starts (and answers from
    /// MaxMind) even while the database is down.
    /// A pool on `database_url`; `bounds.timeout` bounds connecting,
    /// waiting for a pooled connection and each query, so that a hung
    /// database turns into an error, not a hung request.
    pub fn new(database_url: &str, bounds: config::Pool, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Config)?;
        pg.connect_timeout(bounds.timeout);
        // The server enforces the same bound, so an abandoned query does not
        // keep running after the client gave up on it.
        pg.options(format!("-c statement_timeout={}", bounds.timeout.as_millis()));
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
            .max_size(bounds.size)
            .wait_timeout(Some(bounds.timeout))
            .create_timeout(Some(bounds.timeout))
            .recycle_timeout(Some(bounds.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime and timeouts are set, which is all build() checks");
        let limits = coalesce::Limits {
            in_flight: QUERIES_IN_FLIGHT,
            max_keys: MAX_KEYS_PER_QUERY,
            queue: QUEUE,
            // Waiting for a turn and the query itself, each bounded by the timeout.
            timeout: bounds.timeout * 2,
        };
        Ok(Store {
            cn: coalescer(&pool, limits, bounds.timeout, Table::Cn, metrics.clone()),
            en: coalescer(&pool, limits, bounds.timeout, Table::En, metrics.clone()),
            v6: coalescer(&pool, limits, bounds.timeout, Table::V6, metrics.clone()),
            asn: coalescer(&pool, limits, bounds.timeout, Table::Asn, metrics.clone()),
            asn_v6: coalescer(&pool, limits, bounds.timeout, Table::AsnV6, metrics),
            timeout: bounds.timeout,
            pool,
        })
    }

    /// The pool's connections now.
    pub fn pool_state(&self) -> PoolState {
        let status = self.pool.status();
        PoolState {
            max_size: status.max_size,
            open: status.size,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }

    /// Each table's row count and data time. The live import's record gives
    /// both without scanning; a table loaded outside the importer is counted.
    pub async fn table_states(&self) -> Result<Vec<TableState>, StoreError> {
        let work = async {
            let client = self.pool.get().await?;
            let mut states = Vec::new();
            for table in Table::ALL {
                let live = live_import(&**client, table).await?;
                let rows = match live.as_ref().and_then(|l| l.rows) {
                    Some(rows) => rows,
                    None => table_rows(&**client, table).await?,
                };
                states.push(TableState {
                    table,
                    rows: u64::try_from(rows).unwrap_or(0),
                    data_time: live.and_then(|l| l.finished),
                    freshness: Freshness::Current,
                });
            }
            Ok(states)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Closes the pool: idle connections are dropped, no new ones are made.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Finds the row for each IPv4 address in `table` (if the route asks
    /// one) and its network, in input order.
    pub async fn lookup_v4(&self, table: Option<V4Table>, ips: &[Ipv4Addr]) -> Result<Vec<Found>, Unavailable> {
        let keys: Vec<i64> = ips.iter().map(|ip| i64::from(u32::from(*ip))).collect();
        match table {
            Some(V4Table::Cn) => self.cn.lookup(keys).await,
            Some(V4Table::En) => self.en.lookup(keys).await,
            None => self.asn.lookup(keys).await,
        }
    }

    /// Finds the row for each IPv6 address in `ip_service_v6` (if asked)
    /// and its network, in input order.
    pub async fn lookup_v6(&self, asks_v6: bool, ips: &[Ipv6Addr]) -> Result<Vec<Found>, Unavailable> {
        let keys = ips.iter().map(|ip| IpAddr::V6(*ip)).collect();
        match asks_v6 {
            true => self.v6.lookup(keys).await,
            false => self.asn_v6.lookup(keys).await,
        }
    }
}

/// The coalescing task of `table`, querying on `pool`.
fn coalescer<K>(
    pool: &Pool,
    limits: coalesce::Limits,
    timeout: Duration,
    table: Table,
    metrics: Arc<Metrics>,
) -> Coalescer<K>
where
    K: tokio_postgres::types::ToSql + Ord + Sync + Send + 'static,
{
    let pool = pool.clone();
    Coalescer::start(limits, move |keys| {
        let (pool, metrics) = (pool.clone(), metrics.clone());
        async move {
            let started = std::time::Instant::now();
            let rows = lookup_rows(pool, timeout, table, keys).await;
            metrics.query_took(table, started.elapsed());
            rows
        }
    })
}

/// Runs the batch lookup of `table` for `keys` on a pooled connection: the
/// row holding each key, in key order. The query gets each distinct key
/// once, in address order, so its probes walk the index and the table
/// (loaded in address order) forwards rather than at random.
async fn lookup_rows<K>(pool: Pool, timeout: Duration, table: Table, keys: Vec<K>) -> Result<Vec<Found>, StoreError>
where
    K: tokio_postgres::types::ToSql + Ord + Sync + Send,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
    let mut distinct: Vec<&K> = Vec::with_capacity(keys.len());
    // Each input's position among the distinct keys.
    let mut position = vec![0; keys.len()];
    for &i in &order {
        if distinct.last() != Some(&&keys[i]) {
            distinct.push(&keys[i]);
        }
        position[i] = distinct.len() - 1;
    }
    let attempt = || async {
        let client = pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Timeout(_) => StoreError::Timeout(timeout),
            other => other.into(),
        })?;
        let statement = client.prepare_cached(lookup_sql(table)).await?;
        Ok::<_, StoreError>(client.query(&statement, &[&distinct]).await?)
    };
    // A pooled connection whose server went away fails at once; the pool
    // drops it, and a fresh one (the next host of a multi-host URL, if the
    // first is gone) answers the same lookups: they are read-only.
    let work = async {
        match attempt().await {
            Err(err) if err.is_connection_lost() => {
                tracing::debug!(error = %err.cause(), "lookup retried on a fresh connection");
                attempt().await
            }
            done => done,
        }
    };
    let rows = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| StoreError::Timeout(timeout))??;
    let found = match table.family() {
        // The tables' CHECK keeps IPv4 bounds within 0..=u32::MAX.
        Family::V4 => in_input_order(rows, distinct.len(), table, |row, i| {
            Ok(row
                .try_get::<_, Option<i64>>(i)?
                .map(|n| IpAddr::V4(Ipv4Addr::from(n as u32))))
        })?,
        Family::V6 => in_input_order(rows, distinct.len(), table, |row, i| row.try_get(i))?,
    };
    Ok(position.into_iter().map(|at| found[at].clone()).collect())
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
    table: Table,
    bound: impl Fn(&Row, usize) -> Result<Option<IpAddr>, tokio_postgres::Error>,
) -> Result<Vec<Found>, StoreError> {
    let mut out = vec![Found::default(); inputs];
    for row in rows {
        let ordinal: i64 = row.try_get(0)?;
        let found = &mut out[ordinal as usize - 1];
        let network_at = match table.source() {
            Some(source) => {
                if let (Some(start), Some(end)) = (bound(&row, 1)?, bound(&row, 2)?) {
                    found.place = Some(Located {
                        start,
                        end,
                        place: place(&row, 3)?,
                        source,
                        network: None,
                        corrected: false,
                    });
                }
                3 + PLACE_COLUMNS.len()
            }
            None => 1,
        };
        found.network = network(&row, network_at)?;
        found.correction = correction(&row, network_at + 2)?.map(Box::new);
    }
    Ok(out)
}

/// The correction in a lookup row's columns from `at` (its bounds, then
/// its values), if one is in force for the address.
fn correction(row: &Row, at: usize) -> Result<Option<Located>, StoreError> {
    let (Some(start), Some(end)) = (
        row.try_get::<_, Option<IpAddr>>(at)?,
        row.try_get::<_, Option<IpAddr>>(at + 1)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Located {
        place: place(row, at + 2)?,
        start,
        end,
        source: Source::Correction,
        network: None,
        corrected: false,
    }))
}

/// The place in a lookup row's columns from `at`, in [`PLACE_COLUMNS`]
/// order.
fn place(row: &Row, at: usize) -> Result<Place, tokio_postgres::Error> {
    let mut values = [""; 8];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.try_get::<_, Option<&str>>(at + i)?.unwrap_or("");
    }
    Ok(Place::from_columns(values))
}

/// The network in a lookup row's columns `at` (asn) and `at + 1` (as_org),
/// if the network table had a row.
fn network(row: &Row, at: usize) -> Result<Option<Network>, StoreError> {
    let Some(asn) = row.try_get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    let asn = u32::try_from(asn).map_err(|_| StoreError::Invalid(format!("AS number {asn} out of range")))?;
    let org: &str = row.try_get(at + 1)?;
    Ok(Some(Network::new(asn, org)))
}
