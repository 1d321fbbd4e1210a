//! The one place where answers become `GeoInfo`s on the wire. Each answer
//! is written field by field from the borrowed outcome, exactly as the
//! generated `GeoInfo` writer would write it, but without building a
//! `GeoInfo` (sixteen owned strings, and field names the binary and
//! compact protocols never send) for every address.

use std::fmt::Write as _;
use std::net::IpAddr;

use thrift::protocol::{TFieldIdentifier, TOutputProtocol, TStructIdentifier, TType};

use crate::domain::{Located, Outcome};

fn field(o: &mut dyn TOutputProtocol, kind: TType, id: i16) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier {
        name: None,
        field_type: kind,
        id: Some(id),
    })
}

fn string(o: &mut dyn TOutputProtocol, id: i16, value: &str) -> thrift::Result<()> {
    field(o, TType::String, id)?;
    o.write_string(value)?;
    o.write_field_end()
}

fn int(o: &mut dyn TOutputProtocol, id: i16, kind: TType, value: i64) -> thrift::Result<()> {
    field(o, kind, id)?;
    match kind {
        TType::I32 => o.write_i32(value as i32)?,
        _ => o.write_i64(value)?,
    }
    o.write_field_end()
}

/// Writes the answer for `input`. Fields 1-12 are always present (old Java
/// clients read absent strings as null); 13-16 only for a found address.
pub fn write_answer(o: &mut dyn TOutputProtocol, input: &str, outcome: &Outcome) -> thrift::Result<()> {
    o.write_struct_begin(&TStructIdentifier { name: String::new() })?;
    string(o, 1, input)?;
    match outcome {
        Ok(Located {
            place,
            start,
            end,
            source,
        }) => {
            string(o, 2, &place.country_code)?;
            string(o, 3, &place.country_name)?;
            string(o, 4, &place.city_code)?;
            string(o, 5, &place.city_name)?;
            int(o, 6, TType::I32, 0)?;
            string(o, 7, &place.province_code)?;
            string(o, 8, &place.province_name)?;
            string(o, 9, &place.carrier)?;
            string(o, 10, "")?;
            int(o, 11, TType::I64, as_int(start))?;
            int(o, 12, TType::I64, as_int(end))?;
            string(o, 13, &place.district_name)?;
            string(o, 14, IpText::of(*start).as_str())?;
            string(o, 15, IpText::of(*end).as_str())?;
            string(o, 16, source.as_str())?;
        }
        Err(err) => {
            for id in [2, 3, 4, 5] {
                string(o, id, "")?;
            }
            int(o, 6, TType::I32, i64::from(err.error_no()))?;
            for id in [7, 8, 9] {
                string(o, id, "")?;
            }
            string(o, 10, &err.to_string())?;
            int(o, 11, TType::I64, 0)?;
            int(o, 12, TType::I64, 0)?;
        }
    }
    o.write_field_stop()?;
    o.write_struct_end()
}

/// `geoip_start_ip`/`geoip_end_ip`: an IPv4 address as a number; IPv6 has
/// no 64-bit form and is 0.
fn as_int(ip: &IpAddr) -> i64 {
    match ip {
        IpAddr::V4(v4) => i64::from(u32::from(*v4)),
        IpAddr::V6(_) => 0,
    }
}

/// An address's text on the stack: the longest, IPv6 with an embedded
/// IPv4 tail, is 45 bytes.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn of(ip: IpAddr) -> IpText {
        let mut text = IpText { buf: [0; 48], len: 0 };
        write!(text, "{ip}").expect("an address's text fits in 48 bytes");
        text
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("only ASCII is written")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use thrift::protocol::{TBinaryOutputProtocol, TCompactOutputProtocol, TSerializable};

    use super::*;
    use crate::domain::{LookupError, Place, Source};
    use crate::thrift::GeoInfo;

    /// The `GeoInfo` the generated writer would be given for an outcome.
    fn geo_info(input: &str, outcome: &Outcome) -> GeoInfo {
        let text = |s: &str| Some(s.to_owned());
        match outcome {
            Ok(found) => GeoInfo {
                ip: text(input),
                geoip_country_code: text(&found.place.country_code),
                geoip_country_name: text(&found.place.country_name),
                geoip_city_code: text(&found.place.city_code),
                geoip_city_name: text(&found.place.city_name),
                error_no: Some(0),
                geoip_province_code: text(&found.place.province_code),
                geoip_province_name: text(&found.place.province_name),
                geoip_carrier: text(&found.place.carrier),
                error_msg: text(""),
                geoip_start_ip: Some(as_int(&found.start)),
                geoip_end_ip: Some(as_int(&found.end)),
                geoip_district_name: text(&found.place.district_name),
                geoip_start_ip_str: Some(found.start.to_string()),
                geoip_end_ip_str: Some(found.end.to_string()),
                geoip_source: text(found.source.as_str()),
            },
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

    fn outcomes() -> Vec<(&'static str, Outcome)> {
        let place = Arc::new(Place {
            country_code: "CN".into(),
            country_name: "中国".into(),
            province_code: "440000".into(),
            province_name: "广东".into(),
            city_code: "440100".into(),
            city_name: "广州".into(),
            district_name: "天河区".into(),
            carrier: "电信".into(),
        });
        vec![
            (
                "183.62.57.1",
                Ok(Located {
                    place: place.clone(),
                    start: "183.62.56.99".parse().unwrap(),
                    end: "255.255.255.255".parse().unwrap(),
                    source: Source::Cn,
                }),
            ),
            (
                "240e:1::1",
                Ok(Located {
                    place,
                    start: "240e::".parse().unwrap(),
                    end: "240e:fff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
                    source: Source::V6,
                }),
            ),
            ("nope", Err(LookupError::InvalidIp("\"nope\" is not an address".into()))),
            ("8.8.8.8", Err(LookupError::NotFound)),
        ]
    }

    #[test]
    fn answers_are_written_byte_for_byte_as_the_generated_writer_writes_them() {
        for (input, outcome) in outcomes() {
            for compact in [false, true] {
                let (mut ours, mut generated) = (Vec::new(), Vec::new());
                if compact {
                    write_answer(&mut TCompactOutputProtocol::new(&mut ours), input, &outcome).unwrap();
                    geo_info(input, &outcome)
                        .write_to_out_protocol(&mut TCompactOutputProtocol::new(&mut generated))
                        .unwrap();
                } else {
                    write_answer(&mut TBinaryOutputProtocol::new(&mut ours, true), input, &outcome).unwrap();
                    geo_info(input, &outcome)
                        .write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut generated, true))
                        .unwrap();
                }
                assert_eq!(ours, generated, "{input}, compact: {compact}");
            }
        }
    }

    #[test]
    fn the_longest_address_text_fits() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(IpText::of(ip).as_str(), ip.to_string());
        let mapped: IpAddr = "::ffff:255.255.255.255".parse().unwrap();
        assert_eq!(IpText::of(mapped).as_str(), mapped.to_string());
    }
}
