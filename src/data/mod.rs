//! Where answers come from, and how the tables get there.
//!
//! - [`source`]: where the tables and the MaxMind database come from
//!   (PostgreSQL, files, the built-in sample, the mmdb file) and the one
//!   refresh loop that keeps them fresh.
//! - [`store`]: PostgreSQL: pool, coalesced lookups, reading whole tables,
//!   migrations, the reload channel.
//! - [`import`]: parsing ipdb, mmdb and CSV files, validating, COPY into a
//!   table, the import history and the change report; export.
//! - [`index`]: the in-memory range index and the live snapshots; no I/O.
//! - [`corrections`]: the corrections that outrank every source; no I/O.
//! - [`digest`]: the table digest that tells applied rows from edited ones.
//! - [`ranges`]: the seam the lookup rules see: PostgreSQL or the index.
//! - [`mmdb`]: the MaxMind City reader.
//! - [`starts`]: the search over sorted range starts both use.

pub mod corrections;
pub mod digest;
pub mod import;
pub mod index;
pub mod mmdb;
pub mod ranges;
pub mod source;
pub mod starts;
pub mod store;
