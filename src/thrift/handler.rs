//! Turns a decoded request into a reply: method dispatch, batch limit,
//! and the one place where answers become `GeoInfo`s.

use thrift::ApplicationErrorKind;
use tracing::{debug, instrument};

use super::codec::{exception, Call, Reply, Request};
use super::generated::GeoInfo;
use crate::domain::{Lang, Located, Outcome};
use crate::service::{Locator, Route};

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
    pub async fn respond(&self, request: &Request) -> Option<Reply> {
        if request.message_type != CALL && request.message_type != ONEWAY {
            return Some(exception(
                ApplicationErrorKind::InvalidMessageType,
                format!("message type {} is not a call", request.message_type),
            ));
        }
        let reply = self.reply(request).await;
        (request.message_type == CALL).then_some(reply)
    }

    async fn reply(&self, request: &Request) -> Reply {
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
            Call::QueryGeoInfoByIp { .. } => Route::Tables(Lang::ZhCn),
            Call::QueryI18nGeoInfoByIp { .. } => Route::MaxMindOnly("en"),
            Call::QueryGeoInfo { lang, .. } => match Lang::parse(lang) {
                Ok(lang) => Route::for_lang(lang),
                Err(err) => {
                    let outcome: Outcome = Err(err);
                    return Reply::Answers(ips.iter().map(|ip| geo_info(ip, &outcome)).collect());
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
        Reply::Answers(
            ips.iter()
                .zip(&outcomes)
                .map(|(ip, outcome)| geo_info(ip, outcome))
                .collect(),
        )
    }
}

/// The wire form of one answer. Fields 1-12 are always present (old Java
/// clients read absent strings as null); 13-16 only for a found address.
pub fn geo_info(input: &str, outcome: &Outcome) -> GeoInfo {
    let text = |s: &str| Some(s.to_owned());
    match outcome {
        Ok(Located {
            place,
            start,
            end,
            source,
        }) => {
            let as_int = |ip: &std::net::IpAddr| match ip {
                std::net::IpAddr::V4(v4) => i64::from(u32::from(*v4)),
                std::net::IpAddr::V6(_) => 0,
            };
            GeoInfo {
                ip: text(input),
                geoip_country_code: text(&place.country_code),
                geoip_country_name: text(&place.country_name),
                geoip_city_code: text(&place.city_code),
                geoip_city_name: text(&place.city_name),
                error_no: Some(0),
                geoip_province_code: text(&place.province_code),
                geoip_province_name: text(&place.province_name),
                geoip_carrier: text(&place.carrier),
                error_msg: text(""),
                geoip_start_ip: Some(as_int(start)),
                geoip_end_ip: Some(as_int(end)),
                geoip_district_name: text(&place.district_name),
                geoip_start_ip_str: Some(start.to_string()),
                geoip_end_ip_str: Some(end.to_string()),
                geoip_source: text(source.as_str()),
            }
        }
        Err(err) => GeoInfo {
            ip: text(input),
            geoip_country_code: text(""),
            geoip_country_name: text(""),
            geoip_city_code: text(""),
            geoip_city_name: text(""),
            error_no: Some(err.error_no()),
            geoip_province_code: text(""),
            geoip_province_name: text(""),
            geoip_carrier: text(""),
            error_msg: Some(err.to_string()),
            geoip_start_ip: Some(0),
            geoip_end_ip: Some(0),
            geoip_district_name: None,
            geoip_start_ip_str: None,
            geoip_end_ip_str: None,
            geoip_source: None,
        },
    }
}
