//! xm-ip-service: where an IP address is, over Thrift.
//!
//! - [`domain`]: addresses, languages and answers; no I/O.
//! - [`store`]: the PostgreSQL range tables, pool and migrations.
//! - [`mmdb`]: the MaxMind City fallback.
//! - [`service`]: the lookup rules that combine the two.
//! - [`import`]: loading ipdb, mmdb and CSV files into the tables, and export.
//! - [`thrift`]: the generated IDL types, the wire codec and the handler.
//! - [`server`]: TCP accept loop, connections, limits, graceful shutdown.
//! - [`startup`]: settings and wiring; [`cli`] and [`client`] for the binary.
//! - [`loadgen`]: the load generator behind `bench`.

pub mod cli;
pub mod client;
pub mod domain;
pub mod import;
pub mod loadgen;
pub mod mmdb;
pub mod server;
pub mod service;
pub mod startup;
pub mod store;
pub mod thrift;
