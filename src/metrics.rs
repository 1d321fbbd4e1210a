//! The service's Prometheus metrics. Each server has its own registry, so
//! that servers sharing a process (as in the tests) count apart. Every
//! label value comes from a fixed set: never an address, a method name a
//! client sent, or any other caller's string.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::answer::ErrorNo;
use crate::domain::{Outcome, Source, Table};
use crate::health::{Freshness, HealthReport};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Thrift,
    Http,
}

impl Api {
    const ALL: [Api; 2] = [Api::Thrift, Api::Http];

    fn as_str(self) -> &'static str {
        match self {
            Api::Thrift => "thrift",
            Api::Http => "http",
        }
    }
}

/// Why a request or a connection's input was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A frame or body over the size limit.
    Oversized,
    /// Bytes that are not the protocol, or arguments that do not decode.
    Garbage,
    /// A message that did not arrive, or a request that did not finish, in time.
    Timeout,
    BatchOverLimit,
    UnknownMethod,
    /// A well-formed request that lacks or misnames what it needs.
    BadRequest,
    /// Too many requests in flight at once.
    Overloaded,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::Oversized => "oversized",
            Rejection::Garbage => "garbage",
            Rejection::Timeout => "timeout",
            Rejection::BatchOverLimit => "batch_over_limit",
            Rejection::UnknownMethod => "unknown_method",
            Rejection::BadRequest => "bad_request",
            Rejection::Overloaded => "overloaded",
        }
    }
}

/// What happened to a large reply's request for room in a reply budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBudgetEvent {
    /// Others held the room, so the request waited for it.
    Waited,
    /// No room came before the request's deadline: refused (503, or a
    /// Thrift exception).
    Refused,
    /// Its peer stopped reading while others waited, so the reply gave its
    /// room up and the connection closed.
    GaveWay,
}

impl ReplyBudgetEvent {
    fn as_str(self) -> &'static str {
        match self {
            ReplyBudgetEvent::Waited => "waited",
            ReplyBudgetEvent::Refused => "refused",
            ReplyBudgetEvent::GaveWay => "gave_way",
        }
    }
}

/// Why a connection ended, as `xm_ip_connections_closed_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// HTTP: the peer or the keep-alive timeout ended it between requests.
    Completed,
    PeerClosed,
    Shutdown,
    IoError,
    Oversized,
    NotThrift,
    Malformed,
    /// A message did not arrive whole within its timeout.
    SlowMessage,
    Idle,
    /// A reply was not taken within its timeout, or gave its room up (HTTP).
    SlowReader,
    /// Thrift: the reply gave its room in the reply budget to others.
    GaveWayReply,
    /// Thrift: a stalled message gave its room in the request budget to others.
    GaveWayRequest,
    /// An unframed message did not walk; the stream was lost.
    Unsynchronised,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Completed => "completed",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::Oversized => "oversized",
            CloseReason::NotThrift => "not_thrift",
            CloseReason::Malformed => "malformed",
            CloseReason::SlowMessage => "slow_message",
            CloseReason::Idle => "idle",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::GaveWayReply => "gave_way_reply",
            CloseReason::GaveWayRequest => "gave_way_request",
            CloseReason::Unsynchronised => "unsynchronised",
        }
    }
}

/// What is reloaded in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// An in-memory table, rebuilt from PostgreSQL.
    Table,
    /// The MaxMind database file, reopened.
    Mmdb,
}

impl Reload {
    fn as_str(self) -> &'static str {
        match self {
            Reload::Table => "table",
            Reload::Mmdb => "mmdb",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    api: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnswerLabels {
    api: &'static str,
    error_no: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    api: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReplyBudgetLabels {
    api: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 6 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.5, 14,
    ))
}

fn batch_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    ])
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    answers: Family<AnswerLabels, Counter>,
    batch_size: Family<ApiLabel, Histogram, fn() -> Histogram>,
    lookups: Family<SourceLabel, Counter>,
    connections_open: Family<ApiLabel, Gauge>,
    connections_accepted: Family<ApiLabel, Counter>,
    connections_refused: Family<ApiLabel, Counter>,
    connections_closed: Family<RejectLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    reply_budget: Family<ReplyBudgetLabels, Counter>,
    pool_max: Gauge,
    pool_open: Gauge,
    pool_in_use: Gauge,
    pool_waiting: Gauge,
    query_latency: Family<TableLabel, Histogram, fn() -> Histogram>,
    table_rows: Family<TableLabel, Gauge>,
    table_stale: Family<TableLabel, Gauge>,
    table_age: Family<TableLabel, FloatGauge>,
    reloads: Family<ReloadLabels, Counter>,
    last_reload: Family<KindLabel, FloatGauge>,
    mmdb_built: Gauge,
    draining: Gauge,
    /// The series every answer touches: by [`Api`] (`api as usize`, the
    /// order of [`Api::ALL`]) and by source.
    items: [ItemSeries; 2],
    by_source: [Counter; NOT_FOUND + 1],
}

/// The per-address series of one API, resolved once: a family lookup
/// hashes the labels under a lock, on the path of every request.
struct ItemSeries {
    batch_size: Histogram,
    /// By error number.
    answers: [Counter; ErrorNo::ALL.len()],
}

/// Where [`Metrics::by_source`] counts the addresses no source knew; each
/// source counts at `source as usize`.
const NOT_FOUND: usize = Source::ALL.len();
/// The `error_no` labels of `xm_ip_answers_total`, by number.
const ERRORS: [&str; ErrorNo::ALL.len()] = ["0", "1", "2", "3", "4"];

/// One method's requests with one outcome, resolved once for a caller
/// that counts many of them.
#[derive(Clone)]
pub struct RequestSeries {
    count: Counter,
    latency: Histogram,
}

impl RequestSeries {
    pub fn record(&self, took: Duration) {
        self.count.inc();
        self.latency.observe(took.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("xm_ip");
        let answers = Family::<AnswerLabels, Counter>::default();
        let batch_size = Family::<ApiLabel, Histogram, fn() -> Histogram>::new_with_constructor(batch_histogram);
        let lookups = Family::<SourceLabel, Counter>::default();
        let items = Api::ALL.map(|api| {
            let api = api.as_str();
            ItemSeries {
                batch_size: batch_size.get_or_create(&ApiLabel { api }).clone(),
                answers: ERRORS.map(|error_no| answers.get_or_create(&AnswerLabels { api, error_no }).clone()),
            }
        });
        let by_source = std::array::from_fn(|i| {
            let source = Source::ALL.get(i).map_or("not_found", |source| source.as_str());
            lookups.get_or_create(&SourceLabel { source }).clone()
        });
        let metrics = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            answers,
            batch_size,
            lookups,
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
            rejected: Family::default(),
            reply_budget: Family::default(),
            pool_max: Gauge::default(),
            pool_open: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_waiting: Gauge::default(),
            query_latency: Family::new_with_constructor(latency_histogram),
            table_rows: Family::default(),
            table_stale: Family::default(),
            table_age: Family::default(),
            reloads: Family::default(),
            last_reload: Family::default(),
            mmdb_built: Gauge::default(),
            draining: Gauge::default(),
            items,
            by_source,
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by API, method and outcome",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer a request, by API and method",
            m.latency.clone(),
        );
        r.register("answers", "Per-address answers, by API and error_no", m.answers.clone());
        r.register("batch_size", "Addresses per request", m.batch_size.clone());
        r.register(
            "lookups",
            "Per-address answers by the source that gave them (not_found: none did)",
            m.lookups.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed at once because the connection cap was reached",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_closed",
            "Client connections ended, by why they ended",
            m.connections_closed.clone(),
        );
        r.register(
            "rejected",
            "Requests and frames rejected, by reason",
            m.rejected.clone(),
        );
        r.register(
            "reply_budget",
            "Large replies that waited for room in the reply budget, were refused for want of it, or gave it up \
             because their peer stopped reading",
            m.reply_budget.clone(),
        );
        r.register(
            "db_pool_max_connections",
            "PostgreSQL pool size limit",
            m.pool_max.clone(),
        );
        r.register(
            "db_pool_connections",
            "PostgreSQL connections open",
            m.pool_open.clone(),
        );
        r.register("db_pool_in_use", "PostgreSQL connections in use", m.pool_in_use.clone());
        r.register(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection",
            m.pool_waiting.clone(),
        );
        r.register(
            "db_query_duration_seconds",
            "PostgreSQL lookup query time, by table",
            m.query_latency.clone(),
        );
        r.register("table_rows", "Ranges in each table as served", m.table_rows.clone());
        r.register(
            "table_stale",
            "1 while a table's source holds other data that does not load, so older data is served",
            m.table_stale.clone(),
        );
        r.register(
            "table_data_age_seconds",
            "Age of each table's data: since its live import finished, or its file was written",
            m.table_age.clone(),
        );
        r.register(
            "reloads",
            "Background reloads of a table or the mmdb file, by result",
            m.reloads.clone(),
        );
        r.register(
            "last_reload_timestamp_seconds",
            "Unix time of the last successful reload",
            m.last_reload.clone(),
        );
        r.register(
            "mmdb_build_epoch_seconds",
            "Build time of the MaxMind database in use (Unix time)",
            m.mmdb_built.clone(),
        );
        r.register(
            "draining",
            "1 from SIGTERM on: /readyz answers 503 while the listeners stay open for the drain delay",
            m.draining.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Shutdown has begun: readiness turns false so that balancers stop
    /// sending new connections before the listeners close.
    pub fn start_draining(&self) {
        self.draining.set(1);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get() == 1
    }

    /// A request answered with per-address outcomes.
    pub fn answered(&self, api: Api, method: &'static str, outcomes: &[Outcome], took: Duration) {
        self.request(api, method, "ok", took);
        self.answered_items(api, outcomes);
    }

    /// The per-address outcomes of one request: its size, each answer's
    /// error number and source.
    pub fn answered_items(&self, api: Api, outcomes: &[Outcome]) {
        let series = &self.items[api as usize];
        series.batch_size.observe(outcomes.len() as f64);
        // Counted locally first: one shared increment per label, not per address.
        let mut by_error = [0u64; ErrorNo::ALL.len()];
        let mut by_source = [0u64; NOT_FOUND + 1];
        for outcome in outcomes {
            match outcome {
                Ok(located) => {
                    by_error[ErrorNo::Answered as usize] += 1;
                    by_source[located.source as usize] += 1;
                }
                Err(err) => {
                    let no = ErrorNo::of(err);
                    by_error[no as usize] += 1;
                    if no == ErrorNo::NotFound {
                        by_source[NOT_FOUND] += 1;
                    }
                }
            }
        }
        let counts = series.answers.iter().zip(by_error);
        for (counter, count) in counts.chain(self.by_source.iter().zip(by_source)) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
    }

    /// A request that ended with `outcome` ("ok", "exception", or an HTTP
    /// status code).
    pub fn request(&self, api: Api, method: &'static str, outcome: &'static str, took: Duration) {
        let api = api.as_str();
        self.requests
            .get_or_create(&RequestLabels { api, method, outcome })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { api, method })
            .observe(took.as_secs_f64());
    }

    /// The series [`Metrics::request`] counts `method`'s requests with
    /// `outcome` in.
    pub fn request_series(&self, api: Api, method: &'static str, outcome: &'static str) -> RequestSeries {
        let api = api.as_str();
        RequestSeries {
            count: self
                .requests
                .get_or_create(&RequestLabels { api, method, outcome })
                .clone(),
            latency: self.latency.get_or_create(&MethodLabels { api, method }).clone(),
        }
    }

    pub fn rejected(&self, api: Api, reason: Rejection) {
        self.rejected
            .get_or_create(&RejectLabels {
                api: api.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn reply_budget(&self, api: Api, event: ReplyBudgetEvent) {
        self.reply_budget
            .get_or_create(&ReplyBudgetLabels {
                api: api.as_str(),
                outcome: event.as_str(),
            })
            .inc();
    }

    /// A connection accepted; the guard counts it open until dropped.
    pub fn connection_opened(&self, api: Api) -> OpenConnection {
        let label = ApiLabel { api: api.as_str() };
        self.connections_accepted.get_or_create(&label).inc();
        let open = self.connections_open.get_or_create_owned(&label);
        open.inc();
        OpenConnection(open)
    }

    /// A connection ended, for `reason`.
    pub fn connection_closed(&self, api: Api, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&RejectLabels {
                api: api.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn connection_refused(&self, api: Api) {
        self.connections_refused
            .get_or_create(&ApiLabel { api: api.as_str() })
            .inc();
    }

    pub fn query_took(&self, table: Table, took: Duration) {
        self.query_latency
            .get_or_create(&TableLabel { table: table.name() })
            .observe(took.as_secs_f64());
    }

    pub fn reloaded(&self, kind: Reload, ok: bool) {
        let kind = kind.as_str();
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { kind, result }).inc();
        if ok {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_reload
                .get_or_create(&KindLabel { kind })
                .set(now.as_secs_f64());
        }
    }

    /// The text exposition, after taking in the sampled state.
    pub fn render(&self, sampled: &HealthReport) -> String {
        for state in sampled.tables.iter().flatten() {
            let label = TableLabel {
                table: state.table.name(),
            };
            self.table_rows
                .get_or_create(&label)
                .set(i64::try_from(state.rows).unwrap_or(i64::MAX));
            if let Some(age) = state.age() {
                self.table_age.get_or_create(&label).set(age.as_secs_f64());
            }
            let stale = matches!(state.freshness, Freshness::Stale(_));
            self.table_stale.get_or_create(&label).set(i64::from(stale));
        }
        if let Some(pool) = sampled.pool {
            let gauge = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
            gauge(&self.pool_max, pool.max_size);
            gauge(&self.pool_open, pool.open);
            gauge(&self.pool_in_use, pool.in_use);
            gauge(&self.pool_waiting, pool.waiting);
        }
        if let Some(built) = sampled.mmdb_built {
            let epoch = built.duration_since(UNIX_EPOCH).unwrap_or_default();
            self.mmdb_built.set(epoch.as_secs() as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Counts a connection as open while it lives.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
