//! The running service.
//!
//! - [`accept`]: the accept loop both listeners share, and the connection cap.
//! - [`startup`]: `Application`: build from [`crate::config::Settings`],
//!   ports, run until stopped.
//! - [`thrift_server`]: the Thrift accept loop, connections, limits, drain.
//! - [`http`]: the JSON API, `/metrics` and the health checks.
//! - [`workers`]: one runtime per core for the HTTP connections, and the
//!   batch lane.
//! - [`budget`]: the byte budgets connections share.
//! - [`throttle`]: one warning line per reason per interval.

pub mod accept;
pub mod budget;
pub mod http;
pub mod startup;
pub mod thrift_server;
pub mod throttle;
pub mod workers;
