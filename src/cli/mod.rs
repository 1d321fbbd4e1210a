//! The command line: argument definitions in `args`, each command's body
//! in its own file. Clap stays in this layer.

mod args;
mod audit;
mod bench;
mod check;
mod export;
mod import;
mod migrate;
mod query;
mod resolve;
mod values;
mod watch;

pub use args::*;
pub use audit::audit;
pub use bench::{bench, compare};
pub use check::check;
pub use export::export;
pub use import::import;
pub use migrate::migrate;
pub use query::query;
pub use resolve::resolve;
pub use watch::watch;
