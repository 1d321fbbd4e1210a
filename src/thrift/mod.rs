//! The Thrift wire: the generated types, the request/reply codec, and the
//! mapping between wire calls and the service. Nothing here touches the
//! database.

mod answer;
pub mod calls;
pub mod codec;
mod framing;
#[allow(clippy::all, clippy::pedantic, dead_code)]
#[rustfmt::skip]
pub mod generated;
mod handler;
mod protocol;
mod reader;

pub use answer::geo_info;
pub use generated::{GeoInfo, GeoRequest, IPServiceSyncClient, TIPServiceSyncClient};
pub use handler::Handler;
