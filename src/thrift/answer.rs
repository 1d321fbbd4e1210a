//! Where the answer view meets Thrift: each answer is appended as bytes
//! straight from the borrowed outcome, exactly as the generated `GeoInfo`
//! writer would write it through the crate's protocols (a test holds the
//! two byte-equal), but without building a `GeoInfo` (an owned string per
//! field) or making a protocol call per field; so is the reply's header.
//! Also the generated `GeoInfo` as a view, and a view as a `GeoInfo`.

use std::net::IpAddr;

use thrift::protocol::TMessageType;

use super::protocol::Protocol;
use super::reader::Kind;
use super::GeoInfo;
use crate::answer::{self, push_ip, Answer, Field, FieldSink, View};
use crate::domain::Outcome;

/// Appends the fields of one struct, in the compact protocol or the binary.
/// A field's header and its length or number are appended in one write (a
/// binary one as a fixed-size array, a compact one gathered in a [`Head`]):
/// each of a `Vec`'s pushes checks its room and stores its length again,
/// and an answer is about twenty fields.
struct Fields<'a, const COMPACT: bool> {
    out: &'a mut Vec<u8>,
    /// The compact protocol sends field ids as deltas.
    last_id: i16,
}

impl<const COMPACT: bool> Fields<'_, COMPACT> {
    /// A binary field's header and its `N` bytes of length or value.
    #[inline]
    fn binary<const N: usize>(&mut self, kind: Kind, id: i16, value: [u8; N]) {
        let mut bytes = [0u8; 11];
        bytes[0] = kind.codes().0;
        bytes[1..3].copy_from_slice(&id.to_be_bytes());
        bytes[3..3 + N].copy_from_slice(&value);
        self.out.extend_from_slice(&bytes[..3 + N]);
    }

    /// A compact field's header and its length or value as a varint.
    #[inline]
    fn compact(&mut self, kind: Kind, id: i16, varint: u64) {
        let mut head = self.compact_header(kind.codes().1, id);
        head.varint(varint);
        head.append_to(self.out);
    }

    /// A compact field header: the id as a delta where it fits.
    #[inline]
    fn compact_header(&mut self, code: u8, id: i16) -> Head {
        let mut head = Head::default();
        let delta = id - self.last_id;
        // As the crate writes it: 15 would fit, but it writes the long form.
        if (1..15).contains(&delta) {
            head.push((delta as u8) << 4 | code);
        } else {
            head.push(code);
            head.varint(zigzag(i64::from(id)));
        }
        self.last_id = id;
        head
    }

    /// A string field's header and the length `len`.
    #[inline]
    fn string_header(&mut self, id: i16, len: usize) {
        if COMPACT {
            self.compact(Kind::String, id, len as u64);
        } else {
            self.binary(Kind::String, id, (len as i32).to_be_bytes());
        }
    }

    #[inline]
    fn string(&mut self, id: i16, value: &str) {
        self.string_header(id, value.len());
        // An empty string's copy would still be a call to memcpy.
        if !value.is_empty() {
            self.out.extend_from_slice(value.as_bytes());
        }
    }

    fn i32(&mut self, id: i16, value: i32) {
        if COMPACT {
            self.compact(Kind::I32, id, zigzag(i64::from(value)));
        } else {
            self.binary(Kind::I32, id, value.to_be_bytes());
        }
    }

    fn i64(&mut self, id: i16, value: i64) {
        if COMPACT {
            self.compact(Kind::I64, id, zigzag(value));
        } else {
            self.binary(Kind::I64, id, value.to_be_bytes());
        }
    }

    /// A bool field: in the compact protocol its value is the header's
    /// type code (1 true, 2 false), in the binary a byte after it.
    fn bool(&mut self, id: i16, value: bool) {
        if COMPACT {
            self.compact_header(if value { 1 } else { 2 }, id).append_to(self.out);
        } else {
            self.binary(Kind::Bool, id, [u8::from(value)]);
        }
    }

    /// A string field holding `ip`'s text, written in place.
    fn ip(&mut self, id: i16, ip: IpAddr) {
        // The text is 3 to 39 bytes (one byte of compact length): its
        // length prefix is patched after.
        self.string_header(id, 0);
        let at = self.out.len();
        push_ip(self.out, ip);
        let len = self.out.len() - at;
        if COMPACT {
            self.out[at - 1] = len as u8;
        } else {
            self.out[at - 4..at].copy_from_slice(&(len as i32).to_be_bytes());
        }
    }

    fn stop(&mut self) {
        self.out.push(0);
    }
}

/// A few bytes of compact protocol gathered before they are appended in
/// one write: a field's header and its length or value (at most 3 bytes
/// of header and 10 of varint), or a message's header.
#[derive(Default)]
struct Head {
    bytes: [u8; 16],
    len: usize,
}

impl Head {
    #[inline]
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.push(n as u8);
    }

    #[inline]
    fn append_to(&self, out: &mut Vec<u8>) {
        answer::append_first(out, &self.bytes, self.len);
    }
}

impl<const COMPACT: bool> FieldSink for Fields<'_, COMPACT> {
    #[inline]
    fn text(&mut self, field: Field, value: &str) {
        self.string(field.id, value);
    }

    #[inline]
    fn int(&mut self, field: Field, value: i32) {
        self.i32(field.id, value);
    }

    #[inline]
    fn long(&mut self, field: Field, value: i64) {
        self.i64(field.id, value);
    }

    #[inline]
    fn ip(&mut self, field: Field, value: IpAddr) {
        Fields::ip(self, field.id, value);
    }

    #[inline]
    fn flag(&mut self, field: Field, value: bool) {
        self.bool(field.id, value);
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Bytes an answer to `input` takes as a rule, for sizing the reply
/// buffer: a real batch's answers average 230 bytes of binary protocol
/// with the network's fields (they outgrew the 192 this was, and every
/// batch reply then grew its buffer, copying it). A 1,000-answer reply's
/// buffer stays under `memory`'s 256 KiB, below which blocks come from
/// the heap rather than a fresh mapping.
pub fn size_hint(input: &str) -> usize {
    input.len() + 240
}

/// Appends a reply's message header, its result's `success` field header
/// and the header of that list of `count` answers, as the crate's
/// protocols write them (a test holds the two byte-equal), without the
/// `String`s the crate's identifiers allocate on every reply.
pub fn write_reply_header(out: &mut Vec<u8>, protocol: Protocol, name: &str, seq: i32, count: usize) {
    let reply = u8::from(TMessageType::Reply);
    let (list, answer) = (Kind::List.codes(), Kind::Struct.codes());
    match protocol {
        Protocol::Binary { strict } => {
            if strict {
                // The version, 1, and the message type.
                out.extend_from_slice(&[0x80, 0x01, 0, reply]);
            }
            out.extend_from_slice(&(name.len() as i32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            if !strict {
                out.push(reply);
            }
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&[list.0, 0, 0, answer.0]);
            out.extend_from_slice(&(count as i32).to_be_bytes());
        }
        Protocol::Compact => {
            // The protocol id, then the message type over the version, 1.
            let mut head = Head::default();
            head.push(0x82);
            head.push(reply << 5 | 1);
            // The sequence number as unsigned, not zigzagged.
            head.varint(u64::from(seq as u32));
            head.varint(name.len() as u64);
            head.append_to(out);
            out.extend_from_slice(name.as_bytes());
            // Field 0 is no delta from the struct's start: its id follows
            // its type as a zigzag varint, 0.
            let mut head = Head::default();
            head.push(list.1);
            head.push(0);
            match u8::try_from(count) {
                Ok(count @ 0..=14) => head.push(count << 4 | answer.1),
                _ => {
                    head.push(0xf0 | answer.1);
                    head.varint(count as u64);
                }
            }
            head.append_to(out);
        }
    }
}

/// Appends the answer for `input`, as [`Answer`] lists its fields.
pub fn write_answer(out: &mut Vec<u8>, protocol: Protocol, input: &str, outcome: &Outcome) {
    let answer = Answer::new(input, outcome);
    match protocol {
        Protocol::Compact => {
            let mut fields = Fields::<true> { out, last_id: 0 };
            answer.write(&mut fields);
            fields.stop();
        }
        Protocol::Binary { .. } => {
            let mut fields = Fields::<false> { out, last_id: 0 };
            answer.write(&mut fields);
            fields.stop();
        }
    }
}

/// The `GeoInfo` of an outcome, as the generated types hold it: what a
/// Thrift client decodes from the bytes `write_answer` writes.
pub fn geo_info(input: &str, outcome: &Outcome) -> GeoInfo {
    struct Filling(GeoInfo);
    impl FieldSink for Filling {
        fn text(&mut self, field: Field, value: &str) {
            *text_of_mut(&mut self.0, field) = Some(value.to_owned());
        }
        fn int(&mut self, field: Field, value: i32) {
            debug_assert_eq!(field, answer::ERROR_NO);
            self.0.error_no = Some(value);
        }
        fn long(&mut self, field: Field, value: i64) {
            *long_of_mut(&mut self.0, field) = Some(value);
        }
        fn ip(&mut self, field: Field, value: IpAddr) {
            *text_of_mut(&mut self.0, field) = Some(value.to_string());
        }
        fn flag(&mut self, field: Field, value: bool) {
            debug_assert_eq!(field, answer::CORRECTED);
            self.0.geoip_corrected = Some(value);
        }
    }
    // As the generated reader starts: 1-12 at their IDL defaults, the
    // optional 13 and later unset until the answer sets them.
    let mut filling = Filling(GeoInfo {
        geoip_district_name: None,
        geoip_start_ip_str: None,
        geoip_end_ip_str: None,
        geoip_source: None,
        geoip_asn: None,
        geoip_as_org: None,
        geoip_corrected: None,
        ..GeoInfo::default()
    });
    Answer::new(input, outcome).write(&mut filling);
    filling.0
}

/// The generated struct's string fields, by answer field: written once,
/// for reading and for filling.
macro_rules! string_fields {
    ($($field:ident => $member:ident,)+) => {
        fn text_of(g: &GeoInfo, field: Field) -> Option<&str> {
            match field {
                $(answer::$field => g.$member.as_deref(),)+
                _ => None,
            }
        }

        fn text_of_mut(g: &mut GeoInfo, field: Field) -> &mut Option<String> {
            match field {
                $(answer::$field => &mut g.$member,)+
                other => unreachable!("{other:?} is not a string field"),
            }
        }
    };
}

string_fields! {
    IP => ip,
    COUNTRY_CODE => geoip_country_code,
    COUNTRY_NAME => geoip_country_name,
    CITY_CODE => geoip_city_code,
    CITY_NAME => geoip_city_name,
    PROVINCE_CODE => geoip_province_code,
    PROVINCE_NAME => geoip_province_name,
    CARRIER => geoip_carrier,
    ERROR_MSG => error_msg,
    DISTRICT_NAME => geoip_district_name,
    START_IP_STR => geoip_start_ip_str,
    END_IP_STR => geoip_end_ip_str,
    SOURCE => geoip_source,
    AS_ORG => geoip_as_org,
}

/// The generated struct's `i64` fields, by answer field.
fn long_of_mut(g: &mut GeoInfo, field: Field) -> &mut Option<i64> {
    match field {
        answer::START_IP => &mut g.geoip_start_ip,
        answer::END_IP => &mut g.geoip_end_ip,
        answer::ASN => &mut g.geoip_asn,
        other => unreachable!("{other:?} is not an i64 field"),
    }
}

/// A `GeoInfo` a server sent, as a view: its fields that are set, in IDL
/// order. The address fields are passed on as the server wrote them.
impl View for GeoInfo {
    fn write(&self, out: &mut impl FieldSink) {
        for field in answer::FIELDS {
            match field {
                answer::ERROR_NO => {
                    if let Some(n) = self.error_no {
                        out.int(field, n);
                    }
                }
                answer::CORRECTED => {
                    if let Some(flag) = self.geoip_corrected {
                        out.flag(field, flag);
                    }
                }
                answer::START_IP | answer::END_IP | answer::ASN => {
                    let value = match field {
                        answer::START_IP => self.geoip_start_ip,
                        answer::END_IP => self.geoip_end_ip,
                        _ => self.geoip_asn,
                    };
                    if let Some(n) = value {
                        out.long(field, n);
                    }
                }
                _ => {
                    if let Some(text) = text_of(self, field) {
                        out.text(field, text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use thrift::protocol::{
        TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier, TMessageIdentifier,
        TMessageType, TOutputProtocol, TSerializable, TStructIdentifier, TType,
    };

    use super::*;
    use crate::domain::{Located, LookupError, Network, Place, Source};
    use crate::inputs::Inputs;
    use crate::thrift::codec::{encode, Framing, Reply, Wire};

    /// A whole reply as the crate's protocols and the generated writer make it.
    fn generated_reply(o: &mut dyn TOutputProtocol, seq: i32, inputs: &Inputs, outcomes: &[Outcome]) {
        let name = "queryGeoInfoByIP";
        o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seq))
            .unwrap();
        o.write_struct_begin(&TStructIdentifier::new("result")).unwrap();
        o.write_field_begin(&TFieldIdentifier::new("success", TType::List, 0))
            .unwrap();
        o.write_list_begin(&TListIdentifier::new(TType::Struct, outcomes.len() as i32))
            .unwrap();
        for (input, outcome) in inputs.iter().zip(outcomes) {
            geo_info(input, outcome).write_to_out_protocol(o).unwrap();
        }
        o.write_list_end().unwrap();
        o.write_field_end().unwrap();
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        o.write_message_end().unwrap();
    }

    fn outcomes() -> (Inputs, Vec<Outcome>) {
        let carrier = "电信".repeat(80);
        let place = Place::from_columns(["CN", "中国", "440000", "广东", "440100", "广州", "天河区", &carrier]);
        let found = |start: &str, end: &str, source| {
            Ok(Located {
                place: place.clone(),
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
                source,
                network: Some(Network::new(4_294_967_295, "AS \"name\"")),
                corrected: false,
            })
        };
        let answers = [
            ("183.62.57.1", found("183.62.56.99", "255.255.255.255", Source::Cn)),
            ("1.0.0.1", found("0.0.0.0", "10.0.100.9", Source::MaxMind)),
            (
                "240e:1::1",
                found("240e::", "240e:fff:ffff:ffff:ffff:ffff:ffff:ffff", Source::V6),
            ),
            ("nope", Err(LookupError::InvalidIp("\"nope\" is not an address".into()))),
            (
                "8.8.8.8",
                Err(LookupError::NotFound(Some(Network::new(15169, "Google LLC")))),
            ),
            ("8.8.4.4", Err(LookupError::NotFound(None))),
            ("9.9.9.9", Err(LookupError::UnsupportedLang("x".repeat(300)))),
            (
                "1.2.3.4",
                Ok(Located {
                    place: Place::from_columns(["CN", "中国", "", "", "", "", "", ""]),
                    corrected: true,
                    network: None,
                    ..found("1.2.3.0", "1.2.3.255", Source::Correction).unwrap()
                }),
            ),
            (
                "::ffff:1.2.3.4",
                found("::ffff:1.2.3.0", "::ffff:1.2.3.255", Source::V6),
            ),
        ];
        let (inputs, outcomes): (Vec<&str>, _) = answers.into_iter().unzip();
        (inputs.into_iter().collect(), outcomes)
    }

    /// In every protocol, for lists whose length fits in the compact list
    /// header and lists whose length does not, for sequence numbers of
    /// every sign and size, and a multiplexed request's name.
    #[test]
    fn replies_are_byte_for_byte_what_the_generated_writer_makes() {
        let (inputs, outcomes) = outcomes();
        for protocol in [
            Protocol::Binary { strict: true },
            Protocol::Binary { strict: false },
            Protocol::Compact,
        ] {
            for count in [0, 1, outcomes.len(), 14, 15, 1000] {
                let outcomes: Vec<Outcome> = outcomes.iter().cycle().take(count).cloned().collect();
                let inputs: Inputs = inputs.iter().cycle().take(count).collect();
                for seq in [7, 0, -1, i32::MAX, i32::MIN] {
                    let wire = Wire {
                        framing: Framing::Buffered,
                        protocol,
                    };
                    let reply = Reply::Answers {
                        inputs: &inputs,
                        outcomes: outcomes.clone(),
                    };
                    let ours = encode(wire, "GeoService:queryGeoInfoByIP", seq, &reply);
                    let mut generated = Vec::new();
                    match protocol {
                        Protocol::Compact => generated_reply(
                            &mut TCompactOutputProtocol::new(&mut generated),
                            seq,
                            &inputs,
                            &outcomes,
                        ),
                        Protocol::Binary { strict } => generated_reply(
                            &mut TBinaryOutputProtocol::new(&mut generated, strict),
                            seq,
                            &inputs,
                            &outcomes,
                        ),
                    }
                    assert_eq!(ours, generated, "{protocol:?}, {count} answers, seq {seq}");
                }
            }
        }
    }

    #[test]
    fn ipv4_text_matches_the_standard_library() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "183.62.56.99",
            "1.20.0.255",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, text.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }
}
