//! Where table rows come from: PostgreSQL on every call, or the in-memory
//! index. The lookup rules in `service` see only this seam. Every lookup
//! gives the address's network too, from the network table of its family.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::data::index::Tables;
use crate::data::store::{Store, StoreError};
use crate::domain::{Found, Table, Unavailable, V4Table};
use crate::health::{PoolState, TableState};

/// The source of range-table rows.
#[derive(Clone)]
pub enum Ranges {
    /// Each lookup is a query; concurrent callers' addresses share queries.
    Postgres(Store),
    /// The tables held in memory, filled from PostgreSQL or from files.
    Memory(Arc<Tables>),
}

impl Ranges {
    /// Each IPv4 address's row in `table` (cn or en, if the route asks
    /// one) and its network, in input order, each table read in one version.
    pub async fn lookup_v4(&self, table: Option<V4Table>, ips: &[Ipv4Addr]) -> Result<Vec<Found>, Unavailable> {
        match self {
            Ranges::Postgres(store) => store.lookup_v4(table, ips).await,
            Ranges::Memory(tables) => Ok(tables.lookup_v4(table, ips)),
        }
    }

    /// Each IPv6 address's row in the v6 table (if asked) and its network.
    pub async fn lookup_v6(&self, asks_v6: bool, ips: &[Ipv6Addr]) -> Result<Vec<Found>, Unavailable> {
        match self {
            Ranges::Postgres(store) => store.lookup_v6(asks_v6, ips).await,
            Ranges::Memory(tables) => Ok(tables.lookup_v6(asks_v6, ips)),
        }
    }

    /// One IPv4 address: a batch of one, without the batch's allocations
    /// in memory mode.
    pub async fn lookup_one_v4(&self, table: Option<V4Table>, ip: Ipv4Addr) -> Result<Found, Unavailable> {
        match self {
            Ranges::Postgres(store) => Ok(store.lookup_v4(table, &[ip]).await?.pop().unwrap_or_default()),
            Ranges::Memory(tables) => Ok(tables.lookup_one_v4(table, ip)),
        }
    }

    /// One IPv6 address.
    pub async fn lookup_one_v6(&self, asks_v6: bool, ip: Ipv6Addr) -> Result<Found, Unavailable> {
        match self {
            Ranges::Postgres(store) => Ok(store.lookup_v6(asks_v6, &[ip]).await?.pop().unwrap_or_default()),
            Ranges::Memory(tables) => Ok(tables.lookup_one_v6(asks_v6, ip)),
        }
    }

    /// Each table as served now: from the snapshots in memory, or from the
    /// database (an error if it does not answer).
    pub async fn table_states(&self) -> Result<Vec<TableState>, StoreError> {
        match self {
            Ranges::Postgres(store) => store.table_states().await,
            Ranges::Memory(tables) => Ok(Table::ALL
                .into_iter()
                .map(|table| {
                    let snapshot = tables.snapshot(table);
                    TableState {
                        table,
                        rows: snapshot.index.len() as u64,
                        data_time: snapshot.data_time,
                        freshness: tables.freshness(table),
                    }
                })
                .collect()),
        }
    }

    /// The database pool, in postgres mode.
    pub fn pool_state(&self) -> Option<PoolState> {
        match self {
            Ranges::Postgres(store) => Some(store.pool_state()),
            Ranges::Memory(_) => None,
        }
    }

    /// Releases database connections once the server has drained.
    pub fn close(&self) {
        if let Ranges::Postgres(store) = self {
            store.close();
        }
    }
}
