//! The lookup rules: which table answers which language and family, when
//! MaxMind is asked instead, and what a failure turns into. Knows neither
//! Thrift nor SQL, nor whether the tables are in PostgreSQL or in memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::warn;

use crate::data::mmdb::{GeoDb, MaxMind, MmdbError};
use crate::data::ranges::Ranges;
pub use crate::domain::TableLang;
use crate::domain::{Addr, Found, Lang, Located, LookupError, Network, Outcome, Table, Unavailable, V4Table};
use crate::health::{HealthReport, Unreadable};

/// How many answers are decided between yields to the runtime, so that a
/// 10,000-address batch of MaxMind lookups does not hold a worker thread
/// while other connections wait.
const DECIDE_CHUNK: usize = 256;

/// Where a method's answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The range tables, with MaxMind behind them for addresses outside China.
    Tables(TableLang),
    /// MaxMind only, names in the given language.
    MaxMindOnly(Lang),
}

impl Route {
    /// The route for a request's language: `queryGeoInfo`'s for `lang`, or
    /// without one `queryGeoInfoByIP`'s (zh-CN tables). Thrift, HTTP and
    /// `resolve` all take it from here.
    pub fn for_request(lang: Option<&str>) -> Result<Route, LookupError> {
        match lang {
            None => Ok(Route::Tables(TableLang::ZhCn)),
            Some(lang) => Lang::parse(lang).map(Route::for_lang),
        }
    }

    fn for_lang(lang: Lang) -> Route {
        match lang {
            Lang::ZhCn => Route::Tables(TableLang::ZhCn),
            Lang::En => Route::Tables(TableLang::En),
            other => Route::MaxMindOnly(other),
        }
    }

    /// The tables this route reads: its place tables, and the network
    /// tables, which every route reads.
    pub fn tables(self) -> &'static [Table] {
        match self {
            Route::Tables(TableLang::ZhCn) => &[Table::Cn, Table::V6, Table::Asn, Table::AsnV6],
            Route::Tables(TableLang::En) => &[Table::En, Table::Asn, Table::AsnV6],
            Route::MaxMindOnly(_) => &[Table::Asn, Table::AsnV6],
        }
    }

    /// The table asked for IPv4 addresses, if any.
    fn v4_table(self) -> Option<V4Table> {
        match self {
            Route::Tables(TableLang::ZhCn) => Some(V4Table::Cn),
            Route::Tables(TableLang::En) => Some(V4Table::En),
            Route::MaxMindOnly(_) => None,
        }
    }

    /// Whether IPv6 addresses are looked up in the v6 table.
    fn asks_v6(self) -> bool {
        self.tables().contains(&Table::V6)
    }

    /// The language of MaxMind's answers.
    fn lang(self) -> Lang {
        match self {
            Route::Tables(TableLang::ZhCn) => Lang::ZhCn,
            Route::Tables(TableLang::En) => Lang::En,
            Route::MaxMindOnly(lang) => lang,
        }
    }
}

/// What the range tables said about one address.
#[derive(Debug)]
enum TableAnswer {
    /// The route asks no table for this family.
    NotAsked,
    Row(Located),
    /// No row, or a row whose names are all empty.
    NoRow,
    /// The table could not be read.
    Failed(Unavailable),
}

/// What MaxMind said about one address.
enum MaxMindAnswer {
    /// No MaxMind database is configured.
    Off,
    Found(Located),
    NoAnswer,
    Failed,
}

/// The addresses of `chunk` whose answers the tables will leave to
/// MaxMind, in order; each family's rows are in the order of its
/// addresses, the next ones those of `chunk`.
fn leaves_to_maxmind(chunk: &[Result<Addr, LookupError>], rows4: &FamilyRows, rows6: &FamilyRows) -> Vec<IpAddr> {
    let (mut ahead4, mut ahead6) = (0, 0);
    let mut fallbacks = Vec::new();
    for addr in chunk.iter().flatten() {
        let (rows, ahead) = match addr {
            Addr::V4(_) => (rows4, &mut ahead4),
            Addr::V6(_) => (rows6, &mut ahead6),
        };
        if rows.leaves_to_maxmind(*ahead) {
            fallbacks.push(addr.ip());
        }
        *ahead += 1;
    }
    fallbacks
}

/// MaxMind's answer for one address.
fn lookup_maxmind(geo: Option<&GeoDb>, addr: Addr, lang: Lang) -> MaxMindAnswer {
    match geo {
        Some(geo) => MaxMindAnswer::of(geo.lookup(addr.ip(), lang), addr.ip()),
        None => MaxMindAnswer::Off,
    }
}

impl MaxMindAnswer {
    fn of(answer: Result<Option<Located>, MmdbError>, ip: IpAddr) -> MaxMindAnswer {
        match answer {
            Ok(Some(answer)) => MaxMindAnswer::Found(answer),
            Ok(None) => MaxMindAnswer::NoAnswer,
            Err(err) => {
                warn!(error = %err, %ip, "MaxMind lookup failed");
                MaxMindAnswer::Failed
            }
        }
    }
}

/// The service: the range tables and the optional MaxMind database.
#[derive(Clone)]
pub struct Locator {
    ranges: Ranges,
    maxmind: Option<MaxMind>,
}

impl Locator {
    pub fn new(ranges: Ranges, maxmind: Option<MaxMind>) -> Locator {
        Locator { ranges, maxmind }
    }

    pub fn close(&self) {
        self.ranges.close();
    }

    /// The state of the data behind the answers, for readiness and metrics.
    pub async fn sample(&self) -> HealthReport {
        HealthReport {
            tables: self.ranges.table_states().await.map_err(Unreadable::new),
            pool: self.ranges.pool_state(),
            mmdb_built: self.maxmind.as_ref().map(|m| m.current().built()),
        }
    }

    /// Answers every input, in order, one outcome each.
    pub async fn locate<'a>(&self, mut inputs: impl ExactSizeIterator<Item = &'a str>, route: Route) -> Vec<Outcome> {
        if inputs.len() == 1 {
            let input = inputs.next().expect("one input");
            return vec![self.locate_one(input, route).await];
        }
        let parsed: Vec<Result<Addr, LookupError>> = inputs.map(Addr::parse).collect();
        let (mut rows4, mut rows6) = self.ask_tables(&parsed, route).await;
        let geo = self.maxmind.as_ref().map(MaxMind::current);
        let mut outcomes = Vec::with_capacity(parsed.len());
        for (n, chunk) in parsed.chunks(DECIDE_CHUNK).enumerate() {
            if n > 0 {
                tokio::task::yield_now().await;
            }
            // MaxMind's answers for the addresses the tables will not place
            // in China, searched together.
            let mut maxmind = match &geo {
                Some(geo) => {
                    let fallbacks = leaves_to_maxmind(chunk, &rows4, &rows6);
                    geo.lookup_all(&fallbacks, route.lang()).into_iter().zip(fallbacks)
                }
                None => Vec::new().into_iter().zip(Vec::new()),
            }
            .peekable();
            for addr in chunk {
                outcomes.push(addr.clone().and_then(|addr| {
                    let (table, beside) = match addr {
                        Addr::V4(_) => rows4.next(),
                        Addr::V6(_) => rows6.next(),
                    };
                    decide(table, beside, || match maxmind.next_if(|(_, ip)| *ip == addr.ip()) {
                        Some((answer, ip)) => MaxMindAnswer::of(answer, ip),
                        None => {
                            // Never so far: an address not foreseen is asked on its own.
                            debug_assert!(geo.is_none(), "MaxMind asked for {addr:?} unforeseen");
                            lookup_maxmind(geo.as_deref(), addr, route.lang())
                        }
                    })
                }));
            }
        }
        outcomes
    }

    /// One input's answer: what [`Locator::locate`] gives for a batch of
    /// one, without the batch's allocations (the common HTTP and Thrift
    /// call).
    pub async fn locate_one(&self, input: &str, route: Route) -> Outcome {
        let addr = Addr::parse(input)?;
        let (table, beside) = match addr {
            Addr::V4(ip) => {
                let table = route.v4_table();
                TableAnswer::of(self.ranges.lookup_one_v4(table, ip).await, table.is_some())
            }
            Addr::V6(ip) => TableAnswer::of(self.ranges.lookup_one_v6(route.asks_v6(), ip).await, route.asks_v6()),
        };
        let geo = self.maxmind.as_ref().map(MaxMind::current);
        decide(table, beside, || lookup_maxmind(geo.as_deref(), addr, route.lang()))
    }

    /// One lookup per family the batch holds, both at once: the place
    /// table the route asks and the network table, for each address of
    /// the family, in input order.
    async fn ask_tables(&self, parsed: &[Result<Addr, LookupError>], route: Route) -> (FamilyRows, FamilyRows) {
        let (table_v4, asks_v6) = (route.v4_table(), route.asks_v6());
        let mut v4 = Vec::<Ipv4Addr>::new();
        let mut v6 = Vec::<Ipv6Addr>::new();
        for addr in parsed.iter().flatten() {
            match addr {
                Addr::V4(ip) => v4.push(*ip),
                Addr::V6(ip) => v6.push(*ip),
            }
        }
        let (rows4, rows6) = tokio::join!(
            async {
                match v4.is_empty() {
                    true => Ok(Vec::new()),
                    false => self.ranges.lookup_v4(table_v4, &v4).await,
                }
            },
            async {
                match v6.is_empty() {
                    true => Ok(Vec::new()),
                    false => self.ranges.lookup_v6(asks_v6, &v6).await,
                }
            }
        );
        (
            FamilyRows::new(rows4, table_v4.is_some()),
            FamilyRows::new(rows6, asks_v6),
        )
    }
}

/// One family's lookup results, taken in the order of its addresses.
struct FamilyRows {
    found: Result<std::vec::IntoIter<Found>, Unavailable>,
    /// Whether the route asks a place table for this family.
    asked: bool,
}

impl FamilyRows {
    fn new(found: Result<Vec<Found>, Unavailable>, asked: bool) -> FamilyRows {
        FamilyRows {
            found: found.map(Vec::into_iter),
            asked,
        }
    }

    /// Whether the answer `ahead` rows from the next is left to MaxMind,
    /// as [`place`] will decide: all but a row in China.
    fn leaves_to_maxmind(&self, ahead: usize) -> bool {
        let row_in_china = |found: &Found| {
            found
                .place
                .as_ref()
                .is_some_and(|row| !row.place.is_blank() && row.place.is_china())
        };
        match &self.found {
            Ok(rows) => !(self.asked && rows.as_slice().get(ahead).is_some_and(row_in_china)),
            Err(_) => true,
        }
    }

    /// The next address's table answer, network and correction.
    fn next(&mut self) -> (TableAnswer, Beside) {
        let found = match &mut self.found {
            Ok(rows) => Ok(rows.next().unwrap_or_default()),
            Err(reason) => Err(*reason),
        };
        TableAnswer::of(found, self.asked)
    }
}

/// What the tables know of an address besides its place: the network
/// announcing it and the correction in force for it.
#[derive(Debug, Default)]
struct Beside {
    network: Option<Network>,
    correction: Option<Box<Located>>,
}

impl TableAnswer {
    /// What one lookup says: the place table's answer (if `asked`; a row
    /// with no names is no row), the network and the correction. A failed
    /// lookup of a route that asks no place table costs only those.
    fn of(found: Result<Found, Unavailable>, asked: bool) -> (TableAnswer, Beside) {
        let Found {
            place,
            network,
            correction,
        } = match found {
            Ok(found) => found,
            Err(reason) if asked => return (TableAnswer::Failed(reason), Beside::default()),
            Err(_) => return (TableAnswer::NotAsked, Beside::default()),
        };
        let table = match place {
            _ if !asked => TableAnswer::NotAsked,
            Some(row) if !row.place.is_blank() => TableAnswer::Row(row),
            _ => TableAnswer::NoRow,
        };
        (table, Beside { network, correction })
    }
}

/// One address's outcome: where it is, by [`place`], with the network
/// the tables know, which an address of unknown place carries too; then
/// the correction, which outranks every source: its values replace the
/// answer's, or make the answer where no source knew the place.
fn decide(table: TableAnswer, beside: Beside, maxmind: impl FnOnce() -> MaxMindAnswer) -> Outcome {
    let Beside { network, correction } = beside;
    let outcome = match place(table, maxmind) {
        Ok(located) => Ok(Located { network, ..located }),
        Err(LookupError::NotFound(_)) => Err(LookupError::NotFound(network)),
        Err(other) => Err(other),
    };
    match (outcome, correction) {
        (Ok(located), Some(correction)) => Ok(located.corrected_by(&correction.place)),
        (Err(LookupError::NotFound(network)), Some(correction)) => Ok(Located {
            network,
            corrected: true,
            ..*correction
        }),
        (outcome, _) => outcome,
    }
}

/// The China rule and the fallback order for one address; `maxmind` is
/// asked only where the table's answer is not in China.
fn place(table: TableAnswer, maxmind: impl FnOnce() -> MaxMindAnswer) -> Outcome {
    let table = match table {
        TableAnswer::Row(row) if row.place.is_china() => return Ok(row),
        other => other,
    };
    match (table, maxmind()) {
        (_, MaxMindAnswer::Found(answer)) => Ok(answer),
        (TableAnswer::Row(row), _) => Ok(row),
        (TableAnswer::Failed(reason), _) => Err(LookupError::Backend(reason)),
        (_, MaxMindAnswer::Failed) => Err(LookupError::Backend(Unavailable::MaxMind)),
        (TableAnswer::NoRow, _) | (TableAnswer::NotAsked, MaxMindAnswer::NoAnswer) => Err(LookupError::NotFound(None)),
        (TableAnswer::NotAsked, MaxMindAnswer::Off) => Err(LookupError::Backend(Unavailable::NoMaxMind)),
    }
}
