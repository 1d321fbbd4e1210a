//! Turns a decoded request into a reply: method dispatch, and an
//! exception for arguments that cannot be answered (the batch limit is
//! applied by the decoder).

use std::sync::Arc;
use std::time::Instant;

use thrift::ApplicationErrorKind;
use tracing::{debug, instrument};

use super::codec::{exception, BadArgs, Call, MessageType, Method, Reply, Request};
use crate::domain::{Lang, Outcome};
use crate::metrics::{Api, Metrics, Rejection, RequestSeries};
use crate::service::{Locator, Route, TableLang};

/// Answers requests for one server; cheap to share between connections.
#[derive(Clone)]
pub struct Handler {
    locator: Locator,
    metrics: Arc<Metrics>,
    /// Each method's series of answered requests, found once: finding a
    /// series by its labels hashes them, a tenth of a single call's
    /// instructions.
    answered: Arc<[RequestSeries; Method::ALL.len()]>,
}

impl Handler {
    pub fn new(locator: Locator, metrics: Arc<Metrics>) -> Handler {
        // Indexed by the method's discriminant, which `ALL` lists in order.
        debug_assert!(Method::ALL.iter().enumerate().all(|(i, &method)| method as usize == i));
        let answered = Arc::new(Method::ALL.map(|method| metrics.request_series(Api::Thrift, method.name(), "ok")));
        Handler {
            locator,
            metrics,
            answered,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Releases the database pool once the server has drained.
    pub fn close(&self) {
        self.locator.close();
    }

    /// The reply to `request`, or `None` for a oneway message.
    #[instrument(level = "debug", skip_all, fields(method = %request.name, seq = request.seq))]
    pub async fn respond<'r>(&self, request: &'r Request) -> Option<Reply<'r>> {
        let started = Instant::now();
        // The metrics label: one of the IDL's methods, or "unknown", so
        // that a client cannot invent label values.
        let method = request.method.map_or("unknown", Method::name);
        if !matches!(request.message_type, MessageType::Call | MessageType::Oneway) {
            self.rejected(method, Rejection::Garbage, started);
            return Some(exception(
                ApplicationErrorKind::InvalidMessageType,
                format!("message type {} is not a call", request.message_type),
            ));
        }
        let reply = self.reply(request, method, started).await;
        (request.message_type == MessageType::Call).then_some(reply)
    }

    fn rejected(&self, method: &'static str, reason: Rejection, started: Instant) {
        self.metrics.rejected(Api::Thrift, reason);
        self.metrics
            .request(Api::Thrift, method, "exception", started.elapsed());
    }

    async fn reply<'r>(&self, request: &'r Request, method: &'static str, started: Instant) -> Reply<'r> {
        let call = match &request.call {
            Ok(call) => call,
            Err(err) => {
                let reason = match err {
                    BadArgs::BatchOverLimit { .. } => Rejection::BatchOverLimit,
                    BadArgs::Malformed(_) => Rejection::Garbage,
                };
                self.rejected(method, reason, started);
                let message = match err {
                    BadArgs::Malformed(_) => format!("{}: {err}", request.name),
                    BadArgs::BatchOverLimit { .. } => err.to_string(),
                };
                return exception(ApplicationErrorKind::ProtocolError, message);
            }
        };
        let ips = call.ips();
        let route = match call {
            Call::QueryGeoInfoByIp { .. } => Route::Tables(TableLang::ZhCn),
            Call::QueryI18nGeoInfoByIp { .. } => Route::MaxMindOnly(Lang::En),
            Call::QueryGeoInfo { lang, .. } => match Route::for_request(Some(lang)) {
                Ok(route) => route,
                Err(err) => {
                    let outcomes: Vec<Outcome> = vec![Err(err); ips.len()];
                    self.metrics.answered(Api::Thrift, method, &outcomes, started.elapsed());
                    return Reply::Answers { inputs: ips, outcomes };
                }
            },
            Call::Unknown => {
                self.rejected(method, Rejection::UnknownMethod, started);
                return exception(
                    ApplicationErrorKind::UnknownMethod,
                    format!("unknown method {}", request.name),
                );
            }
        };
        debug!(ips = ips.len(), ?route, "lookup");
        let outcomes = self.locator.locate(ips.iter(), route).await;
        match request.method {
            Some(known) => self.answered[known as usize].record(started.elapsed()),
            None => self.metrics.request(Api::Thrift, method, "ok", started.elapsed()),
        }
        self.metrics.answered_items(Api::Thrift, &outcomes);
        Reply::Answers { inputs: ips, outcomes }
    }
}
