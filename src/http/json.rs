//! Answers as JSON objects with the IDL's `GeoInfo` field names and the
//! same values the Thrift reply carries, so that both APIs share one
//! vocabulary and one set of answers.

use serde::Serialize;

use crate::domain::{Located, Outcome};

/// One `GeoInfo`, borrowed from the input and its outcome. The optional
/// fields 13-16 are present only in answers, as on the wire.
#[derive(Serialize)]
pub struct GeoInfoJson<'a> {
    ip: &'a str,
    geoip_country_code: &'a str,
    geoip_country_name: &'a str,
    geoip_city_code: &'a str,
    geoip_city_name: &'a str,
    error_no: i32,
    geoip_province_code: &'a str,
    geoip_province_name: &'a str,
    geoip_carrier: &'a str,
    error_msg: String,
    geoip_start_ip: i64,
    geoip_end_ip: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoip_district_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoip_start_ip_str: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoip_end_ip_str: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoip_source: Option<&'static str>,
}

impl<'a> GeoInfoJson<'a> {
    pub fn new(input: &'a str, outcome: &'a Outcome) -> GeoInfoJson<'a> {
        match outcome {
            Ok(
                located @ Located {
                    place,
                    start,
                    end,
                    source,
                },
            ) => {
                let bounds = located.bounds_as_int();
                GeoInfoJson {
                    ip: input,
                    geoip_country_code: place.country_code(),
                    geoip_country_name: place.country_name(),
                    geoip_city_code: place.city_code(),
                    geoip_city_name: place.city_name(),
                    error_no: 0,
                    geoip_province_code: place.province_code(),
                    geoip_province_name: place.province_name(),
                    geoip_carrier: place.carrier(),
                    error_msg: String::new(),
                    geoip_start_ip: bounds.0,
                    geoip_end_ip: bounds.1,
                    geoip_district_name: Some(place.district_name()),
                    geoip_start_ip_str: Some(start.to_string()),
                    geoip_end_ip_str: Some(end.to_string()),
                    geoip_source: Some(source.as_str()),
                }
            }
            Err(err) => GeoInfoJson {
                ip: input,
                geoip_country_code: "",
                geoip_country_name: "",
                geoip_city_code: "",
                geoip_city_name: "",
                error_no: err.error_no(),
                geoip_province_code: "",
                geoip_province_name: "",
                geoip_carrier: "",
                error_msg: err.to_string(),
                geoip_start_ip: 0,
                geoip_end_ip: 0,
                geoip_district_name: None,
                geoip_start_ip_str: None,
                geoip_end_ip_str: None,
                geoip_source: None,
            },
        }
    }
}
