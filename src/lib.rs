//! xm-ip-service: where an IP address is, over Thrift.
//!
//! - [`domain`]: addresses, languages, tables and answers; no I/O.
//! - [`index`]: the in-memory range index and the live snapshots; no I/O.
//! - [`store`]: PostgreSQL: pool, coalesced lookups, loading and reloading
//!   the index, migrations.
//! - [`ranges`]: where table rows come from (PostgreSQL or the index).
//! - [`mmdb`]: the MaxMind City fallback, reopened when replaced.
//! - [`service`]: the lookup rules that combine the tables and MaxMind.
//! - [`import`]: loading ipdb, mmdb and CSV files into the tables or into
//!   the index (file mode), and export.
//! - [`thrift`]: the generated IDL types, the wire codec and the handler.
//! - [`server`]: TCP accept loop, connections, limits, graceful shutdown.
//! - [`budget`]: the byte budgets connections share (requests served
//!   smallest first, replies in arrival order), and giving memory back
//!   after a burst.
//! - [`throttle`]: one warning line per reason per interval.
//! - [`http`]: the JSON API, `/metrics` and the health checks.
//! - [`metrics`]: the Prometheus metrics.
//! - [`startup`]: settings and wiring; [`cli`] and [`client`] for the binary.
//! - [`loadgen`]: the load generator behind `bench` and `compare`.
//! - [`resolve`]: log-line parsing and the summary behind `resolve`.
//! - [`check`]: the consistency checks behind `check`.

pub mod answer;
pub mod budget;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod http;
pub mod import;
pub mod index;
pub mod loadgen;
pub mod metrics;
pub mod mmdb;
pub mod ranges;
pub mod resolve;
pub mod server;
pub mod service;
pub mod source;
pub mod startup;
pub mod store;
pub mod thrift;
pub mod throttle;
