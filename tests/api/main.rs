//! Integration tests: a real PostgreSQL, a real server on an ephemeral
//! port, and real Thrift clients over TCP.

#[macro_use]
mod writers;
mod helpers;

mod audit;
mod change_report;
mod cli;
mod corrections;
mod files;
mod hostile;
mod http;
mod import;
mod lookup;
mod memory;
mod messages;
mod networks;
mod python_client;
mod real_data;
mod replica;
mod resilience;
mod resolve;
mod storage;
mod watch;
mod watch_peers;
mod wire;
