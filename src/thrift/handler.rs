//! Turns a decoded request into a reply: method dispatch and the batch
//! limit.

use thrift::ApplicationErrorKind;
use tracing::{debug, instrument};

use super::codec::{exception, Call, Reply, Request};
use crate::domain::{Lang, Outcome};
use crate::service::{Locator, Route, TableLang};

const CALL: u8 = 1;
const ONEWAY: u8 = 4;

/// Answers requests for one server; cheap to share between connections.
#[derive(Clone)]
pub struct Handler {
    locator: Locator,
    max_batch: usize,
}

impl Handler {
    pub fn new(locator: Locator, max_batch: usize) -> Handler {
        Handler { locator, max_batch }
    }

    /// Releases the database pool once the server has drained.
    pub fn close(&self) {
        self.locator.close();
    }

    /// The reply to `request`, or `None` for a oneway message.
    #[instrument(level = "debug", skip_all, fields(method = %request.name, seq = request.seq))]
    pub async fn respond<'r>(&self, request: &'r Request) -> Option<Reply<'r>> {
        if request.message_type != CALL && request.message_type != ONEWAY {
            return Some(exception(
                ApplicationErrorKind::InvalidMessageType,
                format!("message type {} is not a call", request.message_type),
            ));
        }
        let reply = self.reply(request).await;
        (request.message_type == CALL).then_some(reply)
    }

    async fn reply<'r>(&self, request: &'r Request) -> Reply<'r> {
        let call = match &request.call {
            Ok(call) => call,
            Err(reason) => {
                return exception(
                    ApplicationErrorKind::ProtocolError,
                    format!("{}: arguments do not decode: {reason}", request.name),
                )
            }
        };
        let ips = call.ips();
        if ips.len() > self.max_batch {
            return exception(
                ApplicationErrorKind::ProtocolError,
                format!(
                    "batch of {} IPs exceeds the limit of {} per request",
                    ips.len(),
                    self.max_batch
                ),
            );
        }
        let route = match call {
            Call::QueryGeoInfoByIp { .. } => Route::Tables(TableLang::ZhCn),
            Call::QueryI18nGeoInfoByIp { .. } => Route::MaxMindOnly(Lang::En),
            Call::QueryGeoInfo { lang, .. } => match Lang::parse(lang) {
                Ok(lang) => Route::for_lang(lang),
                Err(err) => {
                    let outcomes: Vec<Outcome> = vec![Err(err); ips.len()];
                    return Reply::Answers { inputs: ips, outcomes };
                }
            },
            Call::Unknown => {
                return exception(
                    ApplicationErrorKind::UnknownMethod,
                    format!("unknown method {}", request.name),
                )
            }
        };
        debug!(ips = ips.len(), ?route, "lookup");
        let outcomes = self.locator.locate(ips, route).await;
        Reply::Answers { inputs: ips, outcomes }
    }
}
