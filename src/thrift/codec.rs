//! Requests in, replies out, for every transport/protocol combination.
//!
//! The generated code's argument and result structs are private, and its
//! readers trust every announced length (`vec![0; len]`,
//! `Vec::with_capacity(size)`), so a hostile peer could make it allocate
//! gigabytes. Requests are therefore read by the small, bounds-checked
//! `Reader`, which never allocates more than the bytes it was given,
//! once [`MessageCheck`] has found the whole message.
//! A reply of answers is written by hand, its headers and each answer's
//! bytes from the answer view (`answer`), byte-equal to what the crate's
//! output protocols and the generated writer make; exceptions are written
//! with the crate's protocols.

use std::borrow::Cow;

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::answer;
pub use super::framing::{detect, Framing, MessageCheck, MessageSpan, Wire};
pub use super::protocol::{Protocol, WireError};
use super::reader::{bad, Kind, Reader};
use crate::domain::Outcome;
use crate::inputs::Inputs;

/// The IDL's methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    QueryGeoInfoByIp,
    QueryGeoInfo,
    QueryI18nGeoInfoByIp,
}

impl Method {
    pub const ALL: [Method; 3] = [
        Method::QueryGeoInfoByIp,
        Method::QueryGeoInfo,
        Method::QueryI18nGeoInfoByIp,
    ];

    /// The name on the wire, and the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Method::QueryGeoInfoByIp => "queryGeoInfoByIP",
            Method::QueryGeoInfo => "queryGeoInfo",
            Method::QueryI18nGeoInfoByIp => "queryI18nGeoInfoByIP",
        }
    }

    /// The method `name` calls, with or without a multiplexing client's
    /// service prefix.
    pub fn parse(name: &str) -> Option<Method> {
        Method::parse_bytes(name.as_bytes())
    }

    /// [`Method::parse`] of a name not yet checked to be UTF-8 (one that
    /// is not names no method).
    pub fn parse_bytes(name: &[u8]) -> Option<Method> {
        let name = name.strip_prefix(SERVICE_PREFIX.as_bytes()).unwrap_or(name);
        Method::ALL.into_iter().find(|method| method.name().as_bytes() == name)
    }
}

/// A message's type, numbered as the Thrift spec numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Call,
    Reply,
    Exception,
    Oneway,
    Other(u8),
}

impl From<u8> for MessageType {
    fn from(wire: u8) -> MessageType {
        match wire {
            1 => MessageType::Call,
            2 => MessageType::Reply,
            3 => MessageType::Exception,
            4 => MessageType::Oneway,
            other => MessageType::Other(other),
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageType::Call => f.write_str("1"),
            MessageType::Reply => f.write_str("2"),
            MessageType::Exception => f.write_str("3"),
            MessageType::Oneway => f.write_str("4"),
            MessageType::Other(n) => write!(f, "{n}"),
        }
    }
}

/// The arguments of the methods this service has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    QueryGeoInfoByIp {
        ips: Inputs,
    },
    QueryGeoInfo {
        ips: Inputs,
        lang: String,
    },
    QueryI18nGeoInfoByIp {
        ips: Inputs,
    },
    /// A method this service does not have; its arguments were skipped.
    Unknown,
}

impl Call {
    /// The method these are the arguments of; none for an unknown one.
    pub fn method(&self) -> Option<Method> {
        match self {
            Call::QueryGeoInfoByIp { .. } => Some(Method::QueryGeoInfoByIp),
            Call::QueryGeoInfo { .. } => Some(Method::QueryGeoInfo),
            Call::QueryI18nGeoInfoByIp { .. } => Some(Method::QueryI18nGeoInfoByIp),
            Call::Unknown => None,
        }
    }

    pub fn ips(&self) -> &Inputs {
        static NONE: Inputs = Inputs::new();
        match self {
            Call::QueryGeoInfoByIp { ips } | Call::QueryGeoInfo { ips, .. } | Call::QueryI18nGeoInfoByIp { ips } => ips,
            Call::Unknown => &NONE,
        }
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method name as sent, multiplexing prefix included.
    pub name: Cow<'static, str>,
    /// The method `name` calls, if this service has it.
    pub method: Option<Method>,
    pub message_type: MessageType,
    pub seq: i32,
    /// The arguments, or why they cannot be answered.
    pub call: Result<Call, BadArgs>,
}

impl Request {
    /// A request from its header as read, and its arguments.
    pub fn new((name, message_type, seq): Header, call: Result<Call, BadArgs>) -> Request {
        Request {
            method: Method::parse(&name),
            name,
            message_type: MessageType::from(message_type),
            seq,
            call,
        }
    }
}

/// Why a request's arguments cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadArgs {
    #[error("arguments do not decode: {0}")]
    Malformed(String),
    /// Found while decoding, before anything was allocated for the list.
    #[error("batch of {size} IPs exceeds the limit of {limit} per request")]
    BatchOverLimit { size: usize, limit: usize },
}

/// The service name a multiplexing client may put before the method name.
const SERVICE_PREFIX: &str = "IPService:";

/// Decodes one whole message (a frame's body, or the bytes
/// [`MessageCheck`] found). A header that
/// does not decode is an error; arguments that do not decode come back in
/// `Request::call` so the peer can be told. A list of more than
/// `max_batch` addresses is skipped without allocating and reported as
/// [`BadArgs::BatchOverLimit`].
pub fn decode(message: &[u8], protocol: Protocol, max_batch: usize) -> Result<Request, WireError> {
    let mut reader = Reader::new(message, protocol, message.len());
    reader.max_batch = max_batch;
    let header = read_header(&mut reader).map_err(|e| match e {
        WireError::Incomplete => bad("the message ends inside its header"),
        other => other,
    })?;
    let call = match reader.call(Method::parse(&header.0)) {
        Ok(_) if reader.over_batch.is_some() => Err(BadArgs::BatchOverLimit {
            size: reader.over_batch.unwrap_or_default(),
            limit: max_batch,
        }),
        Ok(call) => Ok(call),
        Err(WireError::Incomplete) => Err(BadArgs::Malformed("the message ends inside the arguments".to_owned())),
        Err(err) => Err(BadArgs::Malformed(err.to_string())),
    };
    Ok(Request::new(header, call))
}

/// How many addresses a message announces, read from its first bytes
/// (`prefix`) without decoding any of them: `None` until the list's
/// header is among those bytes, and for messages without a list.
/// `size` is the whole message's, for the same length checks as
/// [`decode`] makes.
pub fn announced_batch(prefix: &[u8], protocol: Protocol, size: usize) -> Option<usize> {
    let mut reader = Reader::new(prefix, protocol, size);
    reader.prefix_only = true;
    // Every request passes here: read the name in place, uncopied.
    let (name, ..) = reader.message_header().ok()?;
    let _ = reader.call(Method::parse_bytes(name));
    reader.announced
}

/// A request refused from its first bytes alone, because its address
/// list announces more than `max_batch`, without holding the rest of it.
/// [`decode`] refuses the whole message too: for the same reason, or for
/// a malformation further on.
pub fn refuse_early(prefix: &[u8], protocol: Protocol, size: usize, max_batch: usize) -> Option<Request> {
    let announced = announced_batch(prefix, protocol, size).filter(|&n| n > max_batch)?;
    let header = decode_header(prefix, protocol).ok()?;
    let call = Err(BadArgs::BatchOverLimit {
        size: announced,
        limit: max_batch,
    });
    Some(Request::new(header, call))
}

/// The header of a message whose arguments could not be walked, so that
/// the peer can be told why before the connection closes.
pub fn decode_header(buf: &[u8], protocol: Protocol) -> Result<Header, WireError> {
    read_header(&mut Reader::new(buf, protocol, buf.len()))
}

/// A message's method name, type and sequence number.
pub type Header = (Cow<'static, str>, u8, i32);

/// The header at the reader's position. A name that is exactly one of
/// this service's methods is that method's own, not a copy: the copy was
/// one of a single call's few allocations.
fn read_header(reader: &mut Reader) -> Result<Header, WireError> {
    let (name, message_type, seq) = reader.message_header()?;
    let name = match Method::parse_bytes(name) {
        Some(method) if method.name().as_bytes() == name => Cow::Borrowed(method.name()),
        _ => Cow::Owned(String::from_utf8(name.to_vec()).map_err(|_| bad("method name is not UTF-8"))?),
    };
    Ok((name, message_type, seq))
}

impl Reader<'_> {
    /// The arguments of `method`; skipped for a method this service lacks.
    fn call(&mut self, method: Option<Method>) -> Result<Call, WireError> {
        match method {
            Some(Method::QueryGeoInfoByIp) => self.ip_list_args().map(|ips| Call::QueryGeoInfoByIp { ips }),
            Some(Method::QueryI18nGeoInfoByIp) => self.ip_list_args().map(|ips| Call::QueryI18nGeoInfoByIp { ips }),
            Some(Method::QueryGeoInfo) => self.geo_request_args(),
            None => self.skip(Kind::Struct, 0).map(|()| Call::Unknown),
        }
    }

    /// `(1: list<string> ipList)`; an unset list is an empty batch.
    fn ip_list_args(&mut self) -> Result<Inputs, WireError> {
        let mut ips = Inputs::default();
        self.fields(|r, kind, id| {
            if (id, kind) != (1, Kind::List) {
                return Ok(false);
            }
            ips = r.string_list()?;
            Ok(true)
        })?;
        Ok(ips)
    }

    /// `(1: GeoRequest req)`, where `GeoRequest { 1: list<string> ipList, 2: string lang }`.
    fn geo_request_args(&mut self) -> Result<Call, WireError> {
        let (mut ips, mut lang) = (Inputs::default(), String::new());
        self.fields(|r, kind, id| {
            if (id, kind) != (1, Kind::Struct) {
                return Ok(false);
            }
            r.fields(|r, kind, id| {
                match (id, kind) {
                    (1, Kind::List) => ips = r.string_list()?,
                    (2, Kind::String) => lang = r.string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            Ok(true)
        })?;
        Ok(Call::QueryGeoInfo { ips, lang })
    }
}

/// What goes back for one request.
pub enum Reply<'a> {
    /// One answer per input, in input order.
    Answers {
        inputs: &'a Inputs,
        outcomes: Vec<Outcome>,
    },
    Exception(ApplicationError),
}

/// Encodes a reply to `request_name` in the connection's wire format, frame
/// header included. The name goes back without any multiplexing prefix, as
/// Apache Thrift's multiplexed processors send it and its clients check it.
pub fn encode(wire: Wire, request_name: &str, seq: i32, reply: &Reply<'_>) -> Vec<u8> {
    let name = request_name.rsplit_once(':').map_or(request_name, |(_, method)| method);
    match reply {
        Reply::Answers { inputs, outcomes } => {
            let size = 64 + name.len() + inputs.iter().map(answer::size_hint).sum::<usize>();
            let mut out = frame_start(wire, size);
            answer::write_reply_header(&mut out, wire.protocol, name, seq, outcomes.len());
            for (i, (input, outcome)) in inputs.iter().zip(outcomes).enumerate() {
                if let Some(ahead) = outcomes.get(i + crate::answer::WARM_AHEAD) {
                    crate::answer::warm(ahead);
                }
                answer::write_answer(&mut out, wire.protocol, input, outcome);
            }
            // The result struct's field stop; list, field, struct and
            // message ends write nothing in either protocol.
            out.push(0);
            frame_end(wire, out)
        }
        Reply::Exception(error) => message(wire, |o| {
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Exception, seq))?;
            thrift::Error::write_application_error_to_out_protocol(error, o)?;
            o.write_message_end()?;
            o.flush()
        }),
    }
}

/// One message in `wire`'s protocol, frame header included.
pub(super) fn message(wire: Wire, write: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>) -> Vec<u8> {
    let mut out = frame_start(wire, 256);
    with_protocol(&mut out, wire.protocol, write);
    frame_end(wire, out)
}

/// A buffer for one message, with room for the frame header if framed.
fn frame_start(wire: Wire, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 4);
    if wire.framing == Framing::Framed {
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// Fills in the frame header, if framed.
fn frame_end(wire: Wire, mut out: Vec<u8>) -> Vec<u8> {
    if wire.framing == Framing::Framed {
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
    }
    out
}

/// Appends what `write` writes through `protocol`'s output protocol.
fn with_protocol(
    out: &mut Vec<u8>,
    protocol: Protocol,
    write: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
) {
    let written = match protocol {
        Protocol::Binary { strict } => write(&mut TBinaryOutputProtocol::new(out, strict)),
        Protocol::Compact => write(&mut TCompactOutputProtocol::new(out)),
    };
    // Writing to a Vec cannot fail.
    written.expect("encoding into memory");
}

/// A `TApplicationException` of `kind`.
pub fn exception(kind: ApplicationErrorKind, message: impl Into<String>) -> Reply<'static> {
    Reply::Exception(ApplicationError::new(kind, message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thrift::calls::{encode_call, scan_reply};
    use crate::thrift::reader::MAX_DEPTH;

    const LIMIT: usize = 16_384_000;

    /// The whole message at the start of `stream`, as the server finds it.
    fn first_message(stream: &[u8], wire: Wire) -> &[u8] {
        let found = MessageCheck::new(wire, LIMIT)
            .check(stream)
            .unwrap()
            .expect("a whole message");
        &stream[found.body..found.end]
    }

    #[test]
    fn a_huge_announced_list_is_refused_not_allocated() {
        // A strict binary call whose ipList claims 2^31-1 strings.
        let mut msg = vec![0x80, 1, 0, 1, 0, 0, 0, 16];
        msg.extend_from_slice(b"queryGeoInfoByIP");
        msg.extend_from_slice(&[0, 0, 0, 7, 15, 0, 1, 11, 0x7f, 0xff, 0xff, 0xff]);
        let request = decode(&msg, Protocol::Binary { strict: true }, usize::MAX).unwrap();
        let err = request.call.unwrap_err().to_string();
        assert!(
            err.contains("list size 2147483647 exceeds the 36-byte message limit"),
            "{err}"
        );
    }

    #[test]
    fn a_method_name_is_kept_as_sent_and_one_not_utf8_is_refused() {
        let call = |name: &[u8]| {
            let mut msg = vec![0x80, 1, 0, 1, 0, 0, 0, name.len() as u8];
            msg.extend_from_slice(name);
            msg.extend_from_slice(&[0, 0, 0, 7, 0]);
            msg
        };
        let protocol = Protocol::Binary { strict: true };
        for name in [
            "queryGeoInfoByIP",
            "IPService:queryGeoInfo",
            "GeoService:queryGeoInfo",
            "nope",
        ] {
            let request = decode(&call(name.as_bytes()), protocol, 10).unwrap();
            assert_eq!((&*request.name, request.seq), (name, 7));
            // This service's own names are not copied.
            assert_eq!(matches!(request.name, Cow::Borrowed(_)), name == "queryGeoInfoByIP");
        }
        let err = decode(&call(b"query\xff"), protocol, 10).unwrap_err();
        assert!(err.to_string().contains("method name is not UTF-8"), "{err}");
    }

    /// A compact call with an unknown argument, field -1, of structs
    /// nested `depth` deep, each holding the next as field 7 and then an
    /// i32 as field 9, then the address list, field 1. Fields 9 and 1 are
    /// sent as deltas, from 7 and from -1: read right only if a struct's
    /// last field id comes back when the struct inside it ends.
    fn nested_call(depth: usize) -> Vec<u8> {
        use thrift::protocol::{TFieldIdentifier, TListIdentifier, TStructIdentifier, TType};
        let mut msg = Vec::new();
        let mut o = TCompactOutputProtocol::new(&mut msg);
        let field = |id| TFieldIdentifier::new("f", TType::Struct, id);
        o.write_message_begin(&TMessageIdentifier::new("queryGeoInfoByIP", TMessageType::Call, 3))
            .unwrap();
        o.write_struct_begin(&TStructIdentifier::new("args")).unwrap();
        o.write_field_begin(&field(-1)).unwrap();
        for _ in 1..depth {
            o.write_struct_begin(&TStructIdentifier::new("s")).unwrap();
            o.write_field_begin(&field(7)).unwrap();
        }
        o.write_struct_begin(&TStructIdentifier::new("s")).unwrap();
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        for _ in 1..depth {
            o.write_field_end().unwrap();
            o.write_field_begin(&TFieldIdentifier::new("n", TType::I32, 9)).unwrap();
            o.write_i32(-1).unwrap();
            o.write_field_end().unwrap();
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
        }
        o.write_field_end().unwrap();
        o.write_field_begin(&TFieldIdentifier::new("ipList", TType::List, 1))
            .unwrap();
        o.write_list_begin(&TListIdentifier::new(TType::String, 1)).unwrap();
        o.write_string("1.2.3.4").unwrap();
        o.write_list_end().unwrap();
        o.write_field_end().unwrap();
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        o.write_message_end().unwrap();
        msg
    }

    #[test]
    fn unknown_arguments_nested_up_to_the_limit_are_skipped_and_deeper_ones_refused() {
        for depth in [1, 2, MAX_DEPTH] {
            let request = decode(&nested_call(depth), Protocol::Compact, 10).unwrap();
            let Ok(Call::QueryGeoInfoByIp { ips }) = request.call else {
                panic!("depth {depth}: {:?}", request.call);
            };
            assert_eq!(ips.iter().collect::<Vec<_>>(), ["1.2.3.4"], "depth {depth}");
        }
        let request = decode(&nested_call(MAX_DEPTH + 1), Protocol::Compact, 10).unwrap();
        let err = request.call.unwrap_err().to_string();
        assert!(err.contains(&format!("nested deeper than {MAX_DEPTH}")), "{err}");
    }

    #[test]
    fn a_list_over_the_batch_limit_is_walked_over_and_refused_whole() {
        let ips: Inputs = ["1.1.1.1", "", "2.2.2.2"].into_iter().collect();
        let msg = encode_call(
            Wire::new(Framing::Buffered, Protocol::Compact),
            9,
            &Call::QueryGeoInfoByIp { ips: ips.clone() },
        );
        let request = decode(&msg, Protocol::Compact, 2).unwrap();
        assert_eq!(request.call, Err(BadArgs::BatchOverLimit { size: 3, limit: 2 }));
        let request = decode(&msg, Protocol::Compact, 3).unwrap();
        assert_eq!(request.call, Ok(Call::QueryGeoInfoByIp { ips }));
    }

    #[test]
    fn a_list_over_the_limit_is_refused_from_the_first_bytes_as_it_would_be_whole() {
        let ips: Inputs = (0..20).map(|i| format!("10.0.0.{i}")).collect();
        let calls = [
            Call::QueryGeoInfoByIp { ips: ips.clone() },
            Call::QueryI18nGeoInfoByIp { ips: ips.clone() },
            Call::QueryGeoInfo {
                ips: ips.clone(),
                lang: "en".into(),
            },
        ];
        for wire in Wire::EACH {
            for call in &calls {
                let stream = encode_call(wire, 5, call);
                let message = first_message(&stream, wire);
                let whole = decode(message, wire.protocol, 10).unwrap();
                // The list header ends before the first address does.
                let first = message.windows(8).position(|w| w == b"10.0.0.0").unwrap();
                for cut in 0..first {
                    let early = refuse_early(&message[..cut], wire.protocol, message.len(), 10);
                    if let Some(early) = early {
                        assert_eq!(early, whole, "{wire:?} {call:?} cut at {cut}");
                    }
                }
                let early = refuse_early(&message[..first], wire.protocol, message.len(), 10);
                assert_eq!(early.as_ref(), Some(&whole), "{wire:?} {call:?}");
                assert_eq!(
                    announced_batch(&message[..first], wire.protocol, message.len()),
                    Some(20)
                );
                assert_eq!(refuse_early(&message[..first], wire.protocol, message.len(), 20), None);
            }
        }
    }

    #[test]
    fn calls_decode_as_sent_and_replies_are_summarised() {
        let ips: Inputs = ["1.2.3.4", "nope"].into_iter().collect();
        let outcomes = vec![
            Err(crate::domain::LookupError::NotFound(None)),
            Err(crate::domain::LookupError::InvalidIp("nope".into())),
        ];
        for framing in [Framing::Framed, Framing::Buffered] {
            for protocol in [Protocol::Binary { strict: true }, Protocol::Compact] {
                let wire = Wire::new(framing, protocol);
                let call = Call::QueryGeoInfo {
                    ips: ips.clone(),
                    lang: "en".into(),
                };
                let bytes = encode_call(wire, 9, &call);
                let request = decode(first_message(&bytes, wire), protocol, usize::MAX).unwrap();
                assert_eq!((&*request.name, request.seq), ("queryGeoInfo", 9));
                assert_eq!(request.call, Ok(call));

                let reply = encode(
                    wire,
                    "queryGeoInfo",
                    9,
                    &Reply::Answers {
                        inputs: &ips,
                        outcomes: outcomes.clone(),
                    },
                );
                let summary = scan_reply(first_message(&reply, wire), protocol).unwrap();
                assert_eq!(summary.by_error, [0, 1, 1, 0, 0]);
                let refused = encode(wire, "x", 1, &exception(ApplicationErrorKind::UnknownMethod, "no such"));
                let summary = scan_reply(first_message(&refused, wire), protocol).unwrap();
                assert_eq!(summary.exception.as_deref(), Some("no such"));
            }
        }
    }

    #[test]
    fn a_reply_to_long_invalid_inputs_is_smaller_than_the_request() {
        let wire = Wire::FRAMED_BINARY;
        let ips: Inputs = std::iter::repeat_n("x".repeat(1_630), 10_000).collect();
        let request = encode_call(wire, 1, &Call::QueryGeoInfoByIp { ips: ips.clone() });
        assert!(
            request.len() <= crate::config::DEFAULT_MAX_FRAME + 4,
            "the request itself fits the limit"
        );
        let outcomes: Vec<_> = ips
            .iter()
            .map(|ip| crate::domain::Addr::parse(ip).map(|_| unreachable!()))
            .collect();
        let reply = encode(wire, "queryGeoInfoByIP", 1, &Reply::Answers { inputs: &ips, outcomes });
        assert!(reply.len() < request.len() / 4, "{} bytes", reply.len());
    }
}
