//! The lookup rules: which table answers which language and family, when
//! MaxMind is asked instead, and what a failure turns into. Knows neither
//! Thrift nor SQL.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use tracing::warn;

use crate::domain::{Addr, Lang, Located, LookupError, Outcome};
use crate::mmdb::GeoDb;
use crate::store::{Store, StoreError, Table};

/// Batches with more MaxMind lookups than this run on the blocking pool so
/// that a 10,000-address batch does not stall the runtime's workers.
const INLINE_MAXMIND_LOOKUPS: usize = 64;

/// Where a method's answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The range tables for `Lang::ZhCn` or `Lang::En`, with MaxMind behind
    /// them for addresses outside China.
    Tables(Lang),
    /// MaxMind only, names in the given mmdb language.
    MaxMindOnly(&'static str),
}

impl Route {
    /// The route for `queryGeoInfo`'s `lang`.
    pub fn for_lang(lang: Lang) -> Route {
        match lang {
            Lang::MaxMindOnly(key) => Route::MaxMindOnly(key),
            tables => Route::Tables(tables),
        }
    }

    /// The table for each family, the mmdb language, and the country name
    /// that keeps a table's answer from being handed to MaxMind.
    fn plan(self) -> Plan {
        match self {
            Route::Tables(Lang::En) => Plan {
                v4: Some(Table::En),
                v6: None,
                mmdb_lang: "en",
                china: "China",
            },
            Route::Tables(_) => Plan {
                v4: Some(Table::Cn),
                v6: Some(Table::V6),
                mmdb_lang: "zh-CN",
                china: "中国",
            },
            Route::MaxMindOnly(key) => Plan {
                v4: None,
                v6: None,
                mmdb_lang: key,
                china: "",
            },
        }
    }
}

struct Plan {
    v4: Option<Table>,
    v6: Option<Table>,
    mmdb_lang: &'static str,
    china: &'static str,
}

/// What the tables said for one address: not asked, a row or none, or the
/// database failed (with the short reason the client sees).
type TableAnswer = Option<Result<Option<Located>, Arc<str>>>;

/// The service: the tables and the optional MaxMind database.
#[derive(Clone)]
pub struct Locator {
    store: Store,
    geo: Option<Arc<GeoDb>>,
}

impl Locator {
    pub fn new(store: Store, geo: Option<GeoDb>) -> Locator {
        Locator {
            store,
            geo: geo.map(Arc::new),
        }
    }

    pub fn close(&self) {
        self.store.close();
    }

    /// Answers every input, in order, one outcome each.
    pub async fn locate(&self, inputs: &[String], route: Route) -> Vec<Outcome> {
        let plan = route.plan();
        let parsed: Vec<Result<Addr, LookupError>> = inputs.iter().map(|s| Addr::parse(s)).collect();
        let tables = self.ask_tables(&parsed, &plan).await;

        // Every valid address may need MaxMind (China rows will not).
        let maxmind_lookups = parsed.iter().filter(|p| p.is_ok()).count();
        let geo = self.geo.clone();
        let decide = move || decide_all(parsed, tables, geo.as_deref(), &plan);
        if maxmind_lookups <= INLINE_MAXMIND_LOOKUPS {
            decide()
        } else {
            match tokio::task::spawn_blocking(decide).await {
                Ok(outcomes) => outcomes,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    }

    /// One round trip per table the batch touches, both families at once.
    async fn ask_tables(&self, parsed: &[Result<Addr, LookupError>], plan: &Plan) -> Vec<TableAnswer> {
        let mut v4 = (Vec::<usize>::new(), Vec::<Ipv4Addr>::new());
        let mut v6 = (Vec::<usize>::new(), Vec::<Ipv6Addr>::new());
        for (i, addr) in parsed.iter().enumerate() {
            match addr {
                Ok(Addr::V4(ip)) if plan.v4.is_some() => {
                    v4.0.push(i);
                    v4.1.push(*ip);
                }
                Ok(Addr::V6(ip)) if plan.v6.is_some() => {
                    v6.0.push(i);
                    v6.1.push(*ip);
                }
                _ => {}
            }
        }
        let (rows4, rows6) = tokio::join!(
            async {
                match plan.v4 {
                    Some(table) if !v4.1.is_empty() => self.store.lookup_v4(table, &v4.1).await,
                    _ => Ok(Vec::new()),
                }
            },
            async {
                match plan.v6 {
                    Some(_) if !v6.1.is_empty() => self.store.lookup_v6(&v6.1).await,
                    _ => Ok(Vec::new()),
                }
            }
        );
        let mut answers: Vec<TableAnswer> = vec![None; parsed.len()];
        scatter(&mut answers, &v4.0, rows4);
        scatter(&mut answers, &v6.0, rows6);
        answers
    }
}

/// Puts one table's batch result back at the inputs' positions.
fn scatter(answers: &mut [TableAnswer], positions: &[usize], rows: Result<Vec<Option<Located>>, StoreError>) {
    match rows {
        Ok(rows) => {
            for (&i, row) in positions.iter().zip(rows) {
                answers[i] = Some(Ok(row.filter(|r| !r.place.is_blank())));
            }
        }
        Err(err) => {
            // Logged once per batch with its cause; each item carries the short form.
            warn!(error = %err, items = positions.len(), "range table lookup failed");
            let reason: Arc<str> = Arc::from(err.to_string());
            for &i in positions {
                answers[i] = Some(Err(reason.clone()));
            }
        }
    }
}

fn decide_all(
    parsed: Vec<Result<Addr, LookupError>>,
    tables: Vec<TableAnswer>,
    geo: Option<&GeoDb>,
    plan: &Plan,
) -> Vec<Outcome> {
    parsed
        .into_iter()
        .zip(tables)
        .map(|(addr, table)| decide(addr?, table, geo, plan))
        .collect()
}

/// The China rule and the fallback order for one address.
fn decide(addr: Addr, table: TableAnswer, geo: Option<&GeoDb>, plan: &Plan) -> Outcome {
    let table = match table {
        Some(Ok(Some(row))) if row.place.country_name == plan.china => return Ok(row),
        other => other,
    };
    let maxmind = match geo {
        None => Err(None),
        Some(geo) => geo.lookup(addr.ip(), plan.mmdb_lang).map_err(|err| {
            warn!(error = %err, ip = %addr.ip(), "MaxMind lookup failed");
            Some(err.to_string())
        }),
    };
    match (table, maxmind) {
        (_, Ok(Some(answer))) => Ok(answer),
        (Some(Ok(Some(row))), _) => Ok(row),
        (Some(Err(db)), _) => Err(LookupError::Backend(db.to_string())),
        (_, Err(Some(mmdb))) => Err(LookupError::Backend(mmdb)),
        // The table was asked and has no row; MaxMind has none or is off.
        (Some(Ok(None)), _) | (None, Ok(None)) => Err(LookupError::NotFound),
        (None, Err(None)) => Err(LookupError::Backend("no MaxMind database configured".into())),
    }
}
