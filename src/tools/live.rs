//! What answers addresses for the offline tools (`resolve`, `audit`, `watch`): a
//! running server over Thrift, or the lookups themselves on files or
//! PostgreSQL, exactly as a server on them would answer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::LookupMode;
use crate::data::index::Tables;
use crate::data::ranges::Ranges;
use crate::data::source;
use crate::service::{Locator, Route};
use crate::thrift::{geo_info, GeoInfo, GeoRequest, TIPServiceSyncClient};
use crate::tools::client::{self, Wire};

/// Where the live answers come from, as the command line names it.
pub struct LiveSource<'a> {
    /// A running server.
    pub addr: Option<&'a str>,
    /// Data files, as `serve --data` reads them.
    pub data: Option<&'a Path>,
    pub database_url: Option<&'a str>,
    pub mmdb: Option<&'a Path>,
    /// queryGeoInfo's lang; none for queryGeoInfoByIP (zh-CN).
    pub lang: Option<&'a str>,
    /// Batches a server answers at once (one connection each).
    pub connections: usize,
    pub timeout: Duration,
    /// PostgreSQL per lookup, or its tables read into memory first.
    pub lookup: LookupMode,
}

/// What answers the addresses: a running server or the lookups themselves.
#[derive(Clone)]
pub enum Answerer {
    /// A running server: a pool of blocking Thrift clients, one per
    /// connection, each used by one batch at a time.
    Server {
        addr: String,
        clients: Arc<Mutex<Vec<client::Reconnecting>>>,
        lang: Option<String>,
    },
    /// The lookups themselves, from files or PostgreSQL.
    Local(Arc<Local>),
}

/// The lookups a server would make, made here.
pub struct Local {
    locator: Locator,
    route: Route,
    ranges: Ranges,
}

impl Answerer {
    pub async fn open(live: &LiveSource<'_>) -> anyhow::Result<Answerer> {
        if let Some(addr) = live.addr {
            let mut clients = Vec::new();
            for _ in 0..live.connections.max(1) {
                clients.push(
                    client::Reconnecting::connect(addr, Wire::FRAMED_BINARY, live.timeout)
                        .with_context(|| format!("cannot connect to {addr}"))?,
                );
            }
            return Ok(Answerer::Server {
                addr: addr.to_owned(),
                clients: Arc::new(Mutex::new(clients)),
                lang: live.lang.map(str::to_owned),
            });
        }
        let route = Route::for_request(live.lang).map_err(|err| anyhow::anyhow!("--lang: {err}"))?;
        let source = source::offline(live.database_url, live.data, live.lookup, live.timeout);
        let (ranges, maxmind) = source::open_offline(&source, live.mmdb, route.tables()).await?;
        let locator = Locator::new(ranges.clone(), maxmind);
        Ok(Answerer::Local(Arc::new(Local { locator, route, ranges })))
    }

    /// The tables held in memory, where the lookups are local and hold them.
    pub fn tables(&self) -> Option<Arc<Tables>> {
        match self {
            Answerer::Local(local) => match &local.ranges {
                Ranges::Memory(tables) => Some(tables.clone()),
                Ranges::Postgres(_) => None,
            },
            Answerer::Server { .. } => None,
        }
    }

    /// The answers for `addresses`, in order, on a task of their own so
    /// that batches proceed in parallel (one per connection to a server).
    pub async fn answer(&self, addresses: Vec<String>) -> anyhow::Result<Vec<GeoInfo>> {
        let count = addresses.len();
        let answers = match self.clone() {
            Answerer::Server { addr, clients, lang } => {
                tokio::task::spawn_blocking(move || {
                    let mut client = clients
                        .lock()
                        .expect("not poisoned")
                        .pop()
                        .expect("one client per batch in flight");
                    let answered = client.call(|client| match &lang {
                        Some(lang) => client.query_geo_info(GeoRequest::new(addresses.clone(), lang.clone())),
                        None => client.query_geo_info_by_i_p(addresses.clone()),
                    });
                    clients.lock().expect("not poisoned").push(client);
                    answered.with_context(|| format!("query to {addr} failed"))
                })
                .await??
            }
            Answerer::Local(local) => {
                tokio::spawn(async move {
                    let outcomes = local
                        .locator
                        .locate(addresses.iter().map(String::as_str), local.route)
                        .await;
                    addresses
                        .iter()
                        .zip(&outcomes)
                        .map(|(address, outcome)| geo_info(address, outcome))
                        .collect::<Vec<_>>()
                })
                .await?
            }
        };
        if answers.len() != count {
            bail!("{} answers for {count} addresses", answers.len());
        }
        Ok(answers)
    }
}
