//! Integration tests: a real PostgreSQL, a real server on an ephemeral
//! port, and real Thrift clients over TCP.

#[macro_use]
mod mmdb_writer;
mod helpers;

mod cli;
mod lookup;
mod python_client;
mod resilience;
mod storage;
mod wire;
