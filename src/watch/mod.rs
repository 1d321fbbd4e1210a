//! `watch`: resolve a list of names on a schedule, locate their addresses
//! with the service's own lookups, and alert when the addresses, where
//! they are, or the expectations they meet change.
//!
//! - [`config`]: the TOML file, checked key by key.
//! - [`dns`]: A and AAAA through the configured nameservers.
//! - [`change`]: the rule that turns rounds into confirmed changes; no I/O.

pub mod alert;
pub mod change;
pub mod config;
pub mod dns;
pub mod message;
pub mod runner;
pub mod state;
pub mod status;

pub use config::WatchConfig;
pub use runner::Watcher;
pub use state::StateStore;
