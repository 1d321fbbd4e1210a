//! xm-ip-service: where an IP address is, over Thrift and HTTP.
//!
//! Three wings around a small core, and the one file to change for each
//! kind of change:
//!
//! - The core, shared by all:
//!   - [`config`]: every `serve` setting, declared once (clap + environment
//!     + default). **A setting** is one field there.
//!   - [`domain`]: addresses, languages, tables, places
//!     ([`domain::PlaceFields`]), the tables' columns
//!     ([`domain::PLACE_COLUMNS`]) and the rule for a valid range
//!     ([`domain::range_fault`]); no I/O. **A validation rule** for a range
//!     or a column goes there.
//!   - [`format`](mod@format): the data files' formats (ipdb, mmdb, CSV), by name and
//!     by content.
//!   - [`answer`]: the one view of an answer, its nineteen fields and the
//!     error numbers, that every output writes from. **An answer field** is
//!     one line in `FIELDS` and one in `Answer::write`.
//!   - [`inputs`]: a request's input texts, in one buffer.
//!   - [`ip_text`]: an address's text read exactly as std reads it, faster.
//!   - [`service`]: the lookup rules that combine the tables and MaxMind.
//!   - [`metrics`]: the Prometheus metrics. **A metric** is a field and a
//!     recording method there.
//!   - [`health`]: how the tables and the pool stand, and the readiness
//!     rules `/readyz` and the sampled metrics report.
//!   - [`memory`]: glibc's allocator tuned and trimmed; huge-page arrays.
//!   - [`thrift`]: the wire: the generated IDL types, the protocols, framing, the bounded
//!     reader, the codec, the answer encoder and the handler.
//! - [`data`]: where the answers come from: sources, PostgreSQL, imports,
//!   the in-memory index and the MaxMind reader. **A data source** is a
//!   variant of [`config::DataSource`] and a submodule of [`data::source`].
//! - [`serve`]: the running service: start-up, the Thrift and HTTP
//!   listeners, the per-core runtimes, the byte budgets.
//! - [`tools`] and [`cli`]: the binary's other commands (`query`,
//!   `resolve`, `bench`, `compare`, `check`, `import`, `export`, `audit`).
//! - [`watch`]: the domain watch (`watch`): resolving names on a schedule,
//!   confirming changes, keeping state, alerting.

pub mod answer;
pub mod cli;
pub mod config;
pub mod data;
pub mod domain;
pub mod format;
pub mod health;
pub mod inputs;
pub mod ip_text;
pub mod memory;
pub mod metrics;
pub mod serve;
pub mod service;
pub mod thrift;
pub mod tools;
pub mod watch;
