//! The one view of an answer: the IDL's `GeoInfo` fields, listed
//! once with their ids, names and presence rules. Every output writes from
//! it: the Thrift encoder, the generated `GeoInfo`, the HTTP JSON, the
//! resolver's CSV and JSON lines, and `query --json`.
//!
//! Adding an answer field means adding it to `fields!` and to
//! [`Answer::write`], after the IDL (an optional field with a new id); the
//! README's contributor notes list the other files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::domain::{echo, Located, LookupError, Network, Outcome};

/// One field of `GeoInfo`: its IDL id and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub id: i16,
    pub name: &'static str,
}

macro_rules! fields {
    ($($constant:ident = $id:literal $name:literal;)+) => {
        $(pub const $constant: Field = Field { id: $id, name: $name };)+
        /// How many fields `GeoInfo` has.
        pub const FIELD_COUNT: usize = [$($id),+].len();
        /// Every field, in IDL order: the CSV header.
        pub const FIELDS: [Field; FIELD_COUNT] = [$($constant),+];
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
    ASN = 17 "geoip_asn";
    AS_ORG = 18 "geoip_as_org";
    CORRECTED = 19 "geoip_corrected";
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
            LookupError::NotFound(_) => ErrorNo::NotFound,
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
    fn flag(&mut self, field: Field, value: bool);
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
    /// strings as null). The optional ones only when they have a value,
    /// so that a client's `IsSet…` means something: the place's for a
    /// found address, the network's wherever the network tables know it,
    /// even for an address whose place nobody knows (error 2).
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
                    network,
                    corrected,
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
                if !place.district_name.is_empty() {
                    out.text(DISTRICT_NAME, place.district_name);
                }
                out.ip(START_IP_STR, *start);
                out.ip(END_IP_STR, *end);
                out.text(SOURCE, source.as_str());
                write_network(out, network.as_ref());
                if *corrected {
                    out.flag(CORRECTED, true);
                }
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
                if let LookupError::NotFound(network) = err {
                    write_network(out, network.as_ref());
                }
            }
        }
    }
}

/// Fields 17 and 18, when the network is known.
#[inline]
fn write_network(out: &mut impl FieldSink, network: Option<&Network>) {
    if let Some(network) = network {
        out.long(ASN, network.asn().into());
        out.text(AS_ORG, network.org());
    }
}

/// How many answers ahead of the one being written [`warm`] is asked for.
pub const WARM_AHEAD: usize = 8;

/// Asks for the text an answer's writing will read: the place's names and
/// the network's organisation, each in a table's shared text that the
/// lookup's misses have long since let go of. Writing a batch warms the
/// answer [`WARM_AHEAD`] places on, so that its misses overlap the writing
/// of those before it instead of stalling each in turn.
#[inline]
pub fn warm(outcome: &Outcome) {
    let network = match outcome {
        Ok(located) => {
            located.place.prefetch();
            located.network.as_ref()
        }
        Err(LookupError::NotFound(network)) => network.as_ref(),
        Err(_) => None,
    };
    if let Some(network) = network {
        network.prefetch();
    }
}

/// A view as a JSON object keyed by the IDL's field names, with exactly
/// the fields the view has, appended to `out`: what HTTP, `query --json`
/// and `resolve --format jsonl` print. Written straight from the view (the
/// keys need no escaping), byte for byte what serde_json writes for the
/// same object, at a third of its cost.
pub fn write_json(view: &impl View, out: &mut Vec<u8>) {
    struct Object<'a> {
        out: &'a mut Vec<u8>,
        first: bool,
    }
    impl Object<'_> {
        fn key(&mut self, field: Field) {
            self.out.push(if self.first { b'{' } else { b',' });
            self.first = false;
            self.out.push(b'"');
            self.out.extend_from_slice(field.name.as_bytes());
            self.out.extend_from_slice(b"\":");
        }
    }
    impl FieldSink for Object<'_> {
        fn text(&mut self, field: Field, value: &str) {
            self.key(field);
            json_string(self.out, value);
        }
        fn int(&mut self, field: Field, value: i32) {
            self.key(field);
            push_int(self.out, value.into());
        }
        fn long(&mut self, field: Field, value: i64) {
            self.key(field);
            push_int(self.out, value);
        }
        fn ip(&mut self, field: Field, value: IpAddr) {
            self.key(field);
            self.out.push(b'"');
            push_ip(self.out, value);
            self.out.push(b'"');
        }
        fn flag(&mut self, field: Field, value: bool) {
            self.key(field);
            self.out.extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
    let mut object = Object { out, first: true };
    view.write(&mut object);
    if object.first {
        object.out.push(b'{');
    }
    object.out.push(b'}');
}

/// A view's JSON object as bytes.
pub fn json(view: &impl View) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_json(view, &mut out);
    out
}

/// `value` as a JSON string, escaped as serde_json escapes it: `"`, `\`
/// and control characters; everything else as it is.
fn json_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// Appends `ip`'s text as `Display` writes it, without `fmt`.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => push_ipv6(out, v6),
    }
}

/// Appends an IPv6 address's text in RFC 5952's short form as `Display`
/// writes it: groups in lowercase hex without leading zeros, the longest
/// run of two or more zero groups (the first of equal runs) as `::`, and a
/// mapped IPv4 address as `::ffff:a.b.c.d`.
fn push_ipv6(out: &mut Vec<u8>, ip: Ipv6Addr) {
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        return push_ipv4(out, v4);
    }
    let groups = ip.segments();
    // (first group, groups) of the longest run of zeros, and of the current one.
    let (mut longest, mut run) = ((0, 0), (0, 0));
    for (i, &group) in groups.iter().enumerate() {
        if group != 0 {
            run.1 = 0;
            continue;
        }
        if run.1 == 0 {
            run.0 = i;
        }
        run.1 += 1;
        if run.1 > longest.1 {
            longest = run;
        }
    }
    // Gathered here, at most 39 bytes, and appended at once: a push per
    // digit checked the buffer's room.
    let mut text = [0u8; 40];
    let mut len = 0;
    let push_groups = |text: &mut [u8; 40], len: &mut usize, groups: &[u16]| {
        for (i, &group) in groups.iter().enumerate() {
            if i > 0 {
                text[*len] = b':';
                *len += 1;
            }
            let digits = (4 - group.leading_zeros() as usize / 4).max(1);
            for digit in (0..digits).rev() {
                text[*len] = b"0123456789abcdef"[usize::from(group >> (4 * digit) & 0xf)];
                *len += 1;
            }
        }
    };
    if longest.1 > 1 {
        push_groups(&mut text, &mut len, &groups[..longest.0]);
        text[len..len + 2].copy_from_slice(b"::");
        len += 2;
        push_groups(&mut text, &mut len, &groups[longest.0 + longest.1..]);
    } else {
        push_groups(&mut text, &mut len, &groups);
    }
    append_first(out, &text, len);
}

/// Appends an IPv4 address's dotted text, without `fmt`: each octet's
/// digits come from a table, and the whole text is copied once.
pub(crate) fn push_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    const DIGITS: [([u8; 3], u8); 256] = {
        let mut table = [([0u8; 3], 0u8); 256];
        let mut n = 0;
        while n < 256 {
            let (h, t, o) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
            table[n] = match n {
                0..=9 => ([b'0' + o, 0, 0], 1),
                10..=99 => ([b'0' + t, b'0' + o, 0], 2),
                _ => ([b'0' + h, b'0' + t, b'0' + o], 3),
            };
            n += 1;
        }
        table
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let (digits, count) = DIGITS[usize::from(octet)];
        text[len..len + 3].copy_from_slice(&digits);
        len += usize::from(count);
    }
    append_first(out, &text, len);
}

/// Appends the first `len` of `bytes`, a short text gathered on the stack:
/// all of them, then cut, because a copy of fixed size is a few moves,
/// where one of `len` bytes is a call to memcpy.
#[inline]
pub(crate) fn append_first<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let at = out.len();
    out.extend_from_slice(bytes);
    out.truncate(at + len);
}

/// Appends `n`'s decimal digits, without `fmt`.
fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut left = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (left % 10) as u8;
        left /= 10;
        if left == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// A view as one CSV record of all [`FIELDS`], an absent field empty.
pub fn csv_record(view: &impl View) -> [String; FIELD_COUNT] {
    struct Record([String; FIELD_COUNT]);
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
        fn flag(&mut self, field: Field, value: bool) {
            self.set(field, value.to_string());
        }
    }
    let mut record = Record(std::array::from_fn(|_| String::new()));
    view.write(&mut record);
    record.0
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::domain::{Place, Source};

    proptest::proptest! {
        /// IPv6 text as `Display` writes it, for groups that are often
        /// zero (runs of zeros of every length and place), mapped IPv4
        /// addresses and any other.
        #[test]
        fn ipv6_text_is_what_display_writes(
            groups in proptest::array::uniform8(proptest::prop_oneof![
                proptest::strategy::Just(0u16),
                proptest::strategy::Just(0xffff),
                proptest::num::u16::ANY,
                0u16..0x100,
            ]),
        ) {
            for ip in [Ipv6Addr::from(groups), Ipv4Addr::from(u32::from(groups[6]) << 16 | u32::from(groups[7])).to_ipv6_mapped()] {
                let mut out = Vec::new();
                push_ip(&mut out, IpAddr::V6(ip));
                proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
            }
        }
    }

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
    fn numbers_are_written_as_the_standard_library_writes_them() {
        for n in [0, 1, -1, 9, 10, 4_294_967_295, i64::from(i32::MIN), i64::MIN, i64::MAX] {
            let mut ours = Vec::new();
            push_int(&mut ours, n);
            assert_eq!(String::from_utf8(ours).unwrap(), n.to_string());
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("é中国\u{2028}\u{10ffff}\"\\");
        for value in [every.as_str(), "", "plain", "\"", "a\\b", "\u{7f}x\u{1f}"] {
            let mut ours = Vec::new();
            json_string(&mut ours, value);
            assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(value).unwrap());
        }
    }

    #[test]
    fn json_has_the_optional_fields_only_with_a_value_and_echoes_64_bytes() {
        let found: Outcome = Ok(Located {
            place: Place::from_columns(["CN", "中国", "", "", "", "", "", ""]),
            start: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 0)),
            end: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 255)),
            source: Source::Cn,
            network: None,
            corrected: false,
        });
        let to_value = |answer: &Answer| serde_json::from_slice::<serde_json::Value>(&json(answer)).unwrap();
        let json = to_value(&Answer::new("1.0.0.1", &found));
        assert_eq!(json.as_object().unwrap().len(), 15, "no district: left out");
        assert!(json.get("geoip_district_name").is_none());
        assert_eq!(json["geoip_start_ip_str"], "1.0.0.0");
        assert_eq!(json["geoip_end_ip"], 16777471);
        let with_district: Outcome = Ok(Located {
            place: Place::from_columns(["CN", "中国", "", "", "", "", "天河区", ""]),
            start: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 0)),
            end: IpAddr::V4(Ipv4Addr::new(1, 0, 0, 255)),
            source: Source::Cn,
            network: Some(Network::new(4134, "CHINANET-BACKBONE")),
            corrected: false,
        });
        let json = to_value(&Answer::new("1.0.0.1", &with_district));
        assert_eq!(json.as_object().unwrap().len(), 18);
        assert_eq!(json["geoip_district_name"], "天河区");
        assert_eq!(
            (&json["geoip_asn"], &json["geoip_as_org"]),
            (&4134.into(), &"CHINANET-BACKBONE".into())
        );

        let unplaced: Outcome = Err(LookupError::NotFound(Some(Network::new(4_294_967_295, "Top"))));
        let json = to_value(&Answer::new("1.0.0.1", &unplaced));
        assert_eq!(json.as_object().unwrap().len(), 14, "the 12 fields and the network");
        assert_eq!(
            (&json["error_no"], &json["geoip_asn"]),
            (&2.into(), &4_294_967_295u32.into())
        );
        assert!(json.get("geoip_source").is_none());

        let long = "x".repeat(100);
        let invalid: Outcome = Err(LookupError::InvalidIp(long.clone()));
        let json = to_value(&Answer::new(&long, &invalid));
        assert_eq!(json.as_object().unwrap().len(), 12);
        assert_eq!(json["ip"].as_str().unwrap().len(), 64);
        assert_eq!(json["error_no"], 1);
        assert!(json.get("geoip_source").is_none());
        assert_eq!(csv_record(&Answer::new(&long, &invalid))[5], "1");
    }
}
