//! xm-ip-service: where an IP address is, over Thrift and HTTP.
//!
//! The module map, and the one file to change for each kind of change:
//!
//! - [`config`]: every `serve` setting, declared once (clap + environment +
//!   default). **A setting** is one field there.
//! - [`domain`]: addresses, languages, tables, places ([`domain::PlaceFields`]),
//!   the tables' columns ([`domain::PLACE_COLUMNS`]) and the rule for a valid
//!   range ([`domain::range_fault`]); no I/O. **A validation rule** for a
//!   range or a column goes there.
//! - [`answer`]: the one view of an answer, its sixteen fields and the
//!   error numbers, that every output writes from. **An answer field** is
//!   one line in `FIELDS` and one in `Answer::write`.
//! - [`source`]: where the tables and the MaxMind database come from
//!   (PostgreSQL, files, the built-in sample, the mmdb file) and the one
//!   refresh loop that keeps them fresh. **A data source** is a variant of
//!   [`config::DataSource`] and a submodule there.
//! - [`metrics`]: the Prometheus metrics. **A metric** is a field and a
//!   recording method there.
//! - [`index`]: the in-memory range index and the live snapshots; no I/O.
//! - [`store`]: PostgreSQL: pool, coalesced lookups, reading whole tables,
//!   migrations, the reload channel.
//! - [`ranges`]: the seam the lookup rules see: PostgreSQL or the index.
//! - [`mmdb`]: the MaxMind City reader.
//! - [`service`]: the lookup rules that combine the tables and MaxMind.
//! - [`import`]: parsing ipdb, mmdb and CSV files, validating, COPY into a
//!   table, the import history and the change report; export.
//! - [`thrift`]: the generated IDL types, framing, the bounded reader, the
//!   codec, the answer encoder and the handler.
//! - [`server`]: the Thrift accept loop, connections, limits, drain.
//! - [`http`]: the JSON API, `/metrics` and the health checks.
//! - [`budget`]: the byte budgets connections share, and giving memory back.
//! - [`throttle`]: one warning line per reason per interval.
//! - [`workers`]: one runtime per core for the HTTP connections.
//! - [`startup`]: `Application`: build from [`config::Settings`], ports, run
//!   until stopped.
//! - [`cli`], [`client`], [`loadgen`] (`bench`, `compare`), [`resolve`]
//!   (log-line parsing and the summary), [`check`] (table consistency): the
//!   binary's commands.

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
pub mod workers;
