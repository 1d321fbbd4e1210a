//! What the binary's commands other than `serve` are built from.
//!
//! - [`client`]: a Thrift client over either transport and protocol.
//! - [`loadgen`]: `bench` and `compare`.
//! - [`resolve`]: log-line parsing and the summary of `resolve`.
//! - [`check`]: a table's consistency.
//! - [`audit`]: comparing the live answers with another source.
//! - [`live`]: what answers addresses for `resolve`, `audit` and `watch`:
//!   a running server, or the lookups themselves on files or PostgreSQL.

pub mod audit;
pub mod check;
pub mod client;
pub mod live;
pub mod loadgen;
pub mod resolve;
