//! The one view of an answer: the IDL's sixteen `GeoInfo` fields, listed
//! once with their ids, names and presence rules. Every output writes from
//! it: the Thrift encoder, the generated `GeoInfo`, the HTTP JSON, the
//! resolver's CSV and JSON lines, and `query --json`.
//!
//! Adding an answer field means adding it to [`FIELDS`] and to
//! [`Answer::write`] (and, for Thrift clients, to the IDL as an optional
//! field with a new id).

use std::net::IpAddr;

use serde::ser::SerializeMap;

use crate::domain::{echo, Located, LookupError, Outcome};

/// One field of `GeoInfo`: its IDL id and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub id: i16,
    pub name: &'static str,
}

macro_rules! fields {
    ($($constant:ident = $id:literal $name:literal;)+) => {
        $(pub const $constant: Field = Field { id: $id, name: $name };)+
        /// Every field, in IDL order: the CSV header.
        pub const FIELDS: [Field; 16] = [$($constant),+];
    };
}

fields! {
    IP = 1 "ip";
    COUNTRY_CODE = 2 "geoip_country_code";
    COUNTRY_NAME = 3 "geoip_country_name";
    CITY_CODE = 4 "geoip_city_code";
    CITY_NAME = 5 "geoip_city_name";
    ERROR_NO = 6 "error_no";
    PROVINCE_CODE = 7 "geoip_province_code";
    PROVINCE_NAME = 8 "geoip_province_name";
    CARRIER = 9 "geoip_carrier";
    ERROR_MSG = 10 "error_msg";
    START_IP = 11 "geoip_start_ip";
    END_IP = 12 "geoip_end_ip";
    DISTRICT_NAME = 13 "geoip_district_name";
    START_IP_STR = 14 "geoip_start_ip_str";
    END_IP_STR = 15 "geoip_end_ip_str";
    SOURCE = 16 "geoip_source";
}

/// The wire `error_no`, as the IDL documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorNo {
    Answered = 0,
    InvalidIp = 1,
    NotFound = 2,
    Backend = 3,
    /// Also what any other number a peer sends is counted as.
    UnsupportedLang = 4,
}

impl ErrorNo {
    /// Every error number, in wire order.
    pub const ALL: [ErrorNo; 5] = [
        ErrorNo::Answered,
        ErrorNo::InvalidIp,
        ErrorNo::NotFound,
        ErrorNo::Backend,
        ErrorNo::UnsupportedLang,
    ];

    pub fn of(error: &LookupError) -> ErrorNo {
        match error {
            LookupError::InvalidIp(_) => ErrorNo::InvalidIp,
            LookupError::NotFound => ErrorNo::NotFound,
            LookupError::Backend(_) => ErrorNo::Backend,
            LookupError::UnsupportedLang(_) => ErrorNo::UnsupportedLang,
        }
    }

    /// The number a peer sent; an unknown one counts as the last.
    pub fn from_wire(n: i32) -> ErrorNo {
        usize::try_from(n)
            .ok()
            .and_then(|i| ErrorNo::ALL.get(i).copied())
            .unwrap_or(ErrorNo::UnsupportedLang)
    }

    pub fn wire(self) -> i32 {
        self as i32
    }
}

/// Where a view's fields go, one call per field present, in IDL order.
pub trait FieldSink {
    fn text(&mut self, field: Field, value: &str);
    fn int(&mut self, field: Field, value: i32);
    fn long(&mut self, field: Field, value: i64);
    /// An address, written as its text.
    fn ip(&mut self, field: Field, value: IpAddr);
}

/// Something that lists an answer's fields.
pub trait View {
    fn write(&self, out: &mut impl FieldSink);
}

/// The answer for one input, borrowed: what every output writes.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The part of the input echoed back (see [`echo`]).
    input: &'a str,
    outcome: &'a Outcome,
}

impl<'a> Answer<'a> {
    pub fn new(input: &'a str, outcome: &'a Outcome) -> Answer<'a> {
        Answer {
            input: echo(input),
            outcome,
        }
    }
}

impl View for Answer<'_> {
    /// Fields 1-12 are always present (old Java clients read absent
    /// strings as null); 13-16 only for a found address.
    #[inline]
    fn write(&self, out: &mut impl FieldSink) {
        out.text(IP, self.input);
        match self.outcome {
            Ok(
                located @ Located {
                    place,
                    start,
                    end,
                    source,
                },
            ) => {
                let (start_int, end_int) = located.bounds_as_int();
                let place = place.fields();
                out.text(COUNTRY_CODE, place.country_code);
                out.text(COUNTRY_NAME, place.country_name);
                out.text(CITY_CODE, place.city_code);
                out.text(CITY_NAME, place.city_name);
                out.int(ERROR_NO, ErrorNo::Answered.wire());
                out.text(PROVINCE_CODE, place.province_code);
                out.text(PROVINCE_NAME, place.province_name);
                out.text(CARRIER, place.carrier);
                out.text(ERROR_MSG, "");
                out.long(START_IP, start_int);
                out.long(END_IP, end_int);
                out.text(DISTRICT_NAME, place.district_name);
                out.ip(START_IP_STR, *start);
                out.ip(END_IP_STR, *end);
                out.text(SOURCE, source.as_str());
            }
            Err(err) => {
                for field in [COUNTRY_CODE, COUNTRY_NAME, CITY_CODE, CITY_NAME] {
                    out.text(field, "");
                }
                out.int(ERROR_NO, ErrorNo::of(err).wire());
                for field in [PROVINCE_CODE, PROVINCE_NAME, CARRIER] {
                    out.text(field, "");
                }
                out.text(ERROR_MSG, &err.to_string());
                out.long(START_IP, 0);
                out.long(END_IP, 0);
            }
        }
    }
}

/// A view as a JSON object keyed by the IDL's field names, with exactly
/// the fields the view has: what HTTP, `query --json` and `resolve
/// --format jsonl` print.
pub struct Json<'a, V>(pub &'a V);

impl<V: View> serde::Serialize for Json<'_, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Map<M: SerializeMap> {
            map: M,
            error: Option<M::Error>,
        }
        impl<M: SerializeMap> Map<M> {
            fn entry(&mut self, field: Field, value: &(impl serde::Serialize + ?Sized)) {
                if self.error.is_none() {
                    self.error = self.map.serialize_entry(field.name, value).err();
                }
            }
        }
        impl<M: SerializeMap> FieldSink for Map<M> {
            fn text(&mut self, field: Field, value: &str) {
                self.entry(field, value);
            }
            fn int(&mut self, field: Field, value: i32) {
                self.entry(field, &value);
            }
            fn long(&mut self, field: Field, value: i64) {
                self.entry(field, &value);
            }
            fn ip(&mut self, field: Field, value: IpAddr) {
                // Serialised as its text, from a buffer on the stack.
                self.entry(field, &value);
            }
        }
        let mut map = Map {
            map: serializer.serialize_map(None)?,
            error: None,
        };
        self.0.write(&mut map);
        match map.error {
            Some(err) => Err(err),
            None => map.map.end(),
        }
    }
}

/// A view as one CSV record of all sixteen [`FIELDS`], an absent field
/// empty.
pub fn csv_record(view: &impl View) -> [String; 16] {
    struct Record([String; 16]);
    impl Record {
        fn set(&mut self, field: Field, value: String) {
            self.0[field.id as usize - 1] = value;
        }
    }
    impl FieldSink for Record {
        fn text(&mut self, field: Field, value: &str) {
            self.set(field, value.to_owned());
        }
        fn int(&mut self, field: Field, value: i32) {
            self.set(field, value.to_string());
        }
        fn long(&mut self, field: Field, value: i64) {
            self.set(field, value.to_string());
        }
        fn ip(&mut self, field: Field, value: IpAddr) {
            self.set(field, value.to_string());
        }
    }
    let mut record = Record(Default::default());
    view.write(&mut record);
    record.0
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::domain::{Place, Source};

    #[test]
    fn the_fields_are_numbered_in_order() {
        for (i, field) in FIELDS.iter().enumerate() {
            assert_eq!(field.id as usize, i + 1, "{field:?}");
        }
    }

    #[test]
    fn error_numbers_read_back_and_unknown_ones_count_as_the_last() {
        for error_no in ErrorNo::ALL {
            assert_eq!(ErrorNo::from_wire(error_no.wire()), error_no);
        }
        assert_eq!(ErrorNo::from_wire(-1), ErrorNo::UnsupportedLang);
        assert_eq!(ErrorNo::from_wire(99), ErrorNo::UnsupportedLang);
    }

    #[test]
    fn json_has_fields_13_to_16_only_for_a_found_address_and_echoes_64_bytes() {
        let found: Outcome = Ok(Located {
            place: Place::from_columns(["CN", "中国", "", "", "", "", "", ""]),
            start: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 0)),
            end: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 255)),
            source: Source::Cn,
        });
        let json = serde_json::to_value(Json(&Answer::new("1.0.0.1", &found))).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 16);
        assert_eq!(json["geoip_start_ip_str"], "1.0.0.0");
        assert_eq!(json["geoip_end_ip"], 16777471);

        let long = "x".repeat(100);
        let invalid: Outcome = Err(LookupError::InvalidIp(long.clone()));
        let json = serde_json::to_value(Json(&Answer::new(&long, &invalid))).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 12);
        assert_eq!(json["ip"].as_str().unwrap().len(), 64);
        assert_eq!(json["error_no"], 1);
        assert!(json.get("geoip_source").is_none());
        assert_eq!(csv_record(&Answer::new(&long, &invalid))[5], "1");
    }
}
