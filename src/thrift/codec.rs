//! Requests in, replies out, for every transport/protocol combination.
//!
//! The generated code's argument and result structs are private, and its
//! readers trust every announced length (`vec![0; len]`,
//! `Vec::with_capacity(size)`), so a hostile peer could make it allocate
//! gigabytes. Requests are therefore read by the small, bounds-checked
//! reader below, which never allocates more than the bytes it was given.
//! Replies are written with the crate's output protocols and the generated
//! `GeoInfo` writer.

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::answer;
use crate::domain::Outcome;

/// The longest method name accepted; real ones are under 40 bytes.
const MAX_NAME: usize = 256;
/// How deeply nested an unknown argument may be before it is refused.
const MAX_DEPTH: usize = 64;

/// A protocol, as detected from a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `strict` is false for old clients that omit the version word.
    Binary {
        strict: bool,
    },
    Compact,
}

/// Framed (4-byte length prefix) or unframed (buffered) messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Framed,
    Buffered,
}

/// How one connection speaks, fixed by its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub framing: Framing,
    pub protocol: Protocol,
}

/// Why bytes could not be read as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More bytes are needed; not an error yet.
    #[error("incomplete message")]
    Incomplete,
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: u64, limit: usize },
    #[error("not a Thrift message: {0}")]
    NotThrift(String),
    #[error("malformed message: {0}")]
    Malformed(String),
}

const BINARY_VERSION_1: u32 = 0x8001_0000;
const COMPACT_ID: u8 = 0x82;

/// Works out the transport and protocol from a connection's first bytes.
/// `Err(Incomplete)` asks for more bytes.
pub fn detect(head: &[u8], max_frame: usize) -> Result<Wire, WireError> {
    let Some(&first) = head.first() else {
        return Err(WireError::Incomplete);
    };
    match first {
        0x80 => {
            let second = *head.get(1).ok_or(WireError::Incomplete)?;
            if second != 0x01 {
                return Err(WireError::NotThrift(format!(
                    "unknown binary protocol version byte {second:#04x}"
                )));
            }
            return Ok(Wire {
                framing: Framing::Buffered,
                protocol: Protocol::Binary { strict: true },
            });
        }
        COMPACT_ID => {
            return Ok(Wire {
                framing: Framing::Buffered,
                protocol: Protocol::Compact,
            })
        }
        _ => {}
    }
    if head.len() < 8 {
        return Err(WireError::Incomplete);
    }
    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let next = &head[4..8];
    if next[0] == 0x80 || next[0] == COMPACT_ID || next[0] == 0x00 {
        // A frame length, then a strict binary, compact or non-strict
        // binary message (whose name length starts with a zero byte).
        if word as u64 > max_frame as u64 {
            return Err(WireError::FrameTooLarge {
                size: word as u64,
                limit: max_frame,
            });
        }
        let protocol = match next[0] {
            0x80 => Protocol::Binary { strict: true },
            COMPACT_ID => Protocol::Compact,
            _ => Protocol::Binary { strict: false },
        };
        return Ok(Wire {
            framing: Framing::Framed,
            protocol,
        });
    }
    // An unframed non-strict binary message: a short name length, then
    // the name itself, which is printable.
    if word > 0 && word as usize <= MAX_NAME && next.iter().take(word as usize).all(u8::is_ascii_graphic) {
        return Ok(Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Binary { strict: false },
        });
    }
    Err(WireError::NotThrift(format!(
        "unrecognised first bytes {:02x?}",
        &head[..8]
    )))
}

/// The arguments of the methods this service has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    QueryGeoInfoByIp {
        ips: Vec<String>,
    },
    QueryGeoInfo {
        ips: Vec<String>,
        lang: String,
    },
    QueryI18nGeoInfoByIp {
        ips: Vec<String>,
    },
    /// A method this service does not have; its arguments were skipped.
    Unknown,
}

impl Call {
    pub fn ips(&self) -> &[String] {
        match self {
            Call::QueryGeoInfoByIp { ips } | Call::QueryGeoInfo { ips, .. } | Call::QueryI18nGeoInfoByIp { ips } => ips,
            Call::Unknown => &[],
        }
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method name as sent, multiplexing prefix included.
    pub name: String,
    pub message_type: u8,
    pub seq: i32,
    /// The arguments, or why they cannot be answered.
    pub call: Result<Call, BadArgs>,
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

/// Decodes one message from the start of `buf`, returning it and how many
/// bytes it took. `whole` says `buf` is exactly one message (a frame);
/// otherwise it is the start of a stream and the message may be up to
/// `max_message` bytes long. A header that does not decode is an error;
/// arguments that do not decode come back in `Request::call` so the peer
/// can be told, but then the byte count is unknown (`None`) unless `whole`.
/// A list of more than `max_batch` addresses is skipped without
/// allocating and reported as [`BadArgs::BatchOverLimit`].
pub fn decode(
    buf: &[u8],
    protocol: Protocol,
    whole: bool,
    max_message: usize,
    max_batch: usize,
) -> Result<(Request, Option<usize>), WireError> {
    let limit = if whole { buf.len() } else { max_message };
    let mut reader = Reader::new(buf, protocol, limit);
    reader.max_batch = max_batch;
    let (name, message_type, seq) = reader.message_begin().map_err(|e| match e {
        WireError::Incomplete if whole => bad("the frame ends inside the message header"),
        other => other,
    })?;
    let method = name.strip_prefix(SERVICE_PREFIX).unwrap_or(&name);
    let call = match method {
        "queryGeoInfoByIP" => reader.ip_list_args().map(|ips| Call::QueryGeoInfoByIp { ips }),
        "queryI18nGeoInfoByIP" => reader.ip_list_args().map(|ips| Call::QueryI18nGeoInfoByIp { ips }),
        "queryGeoInfo" => reader.geo_request_args(),
        _ => reader.skip(Kind::Struct, 0).map(|()| Call::Unknown),
    };
    let call = match call {
        Ok(_) if reader.over_batch.is_some() => Err(BadArgs::BatchOverLimit {
            size: reader.over_batch.unwrap_or_default(),
            limit: max_batch,
        }),
        Ok(call) => Ok(call),
        Err(WireError::Incomplete) if !whole => return Err(WireError::Incomplete),
        Err(WireError::Incomplete) => Err(BadArgs::Malformed("the frame ends inside the arguments".to_owned())),
        Err(err) => Err(BadArgs::Malformed(err.to_string())),
    };
    let consumed = match (&call, whole) {
        (_, true) => Some(buf.len()),
        // An over-long list was walked over whole: the end is known.
        (Ok(_) | Err(BadArgs::BatchOverLimit { .. }), false) => Some(reader.pos),
        (Err(BadArgs::Malformed(_)), false) => None,
    };
    let request = Request {
        name,
        message_type,
        seq,
        call,
    };
    Ok((request, consumed))
}

/// Thrift value kinds, shared by both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    String,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl Kind {
    fn from_binary(code: u8) -> Result<Kind, WireError> {
        Ok(match code {
            2 => Kind::Bool,
            3 => Kind::Byte,
            4 => Kind::Double,
            6 => Kind::I16,
            8 => Kind::I32,
            10 => Kind::I64,
            11 => Kind::String,
            12 => Kind::Struct,
            13 => Kind::Map,
            14 => Kind::Set,
            15 => Kind::List,
            16 => Kind::Uuid,
            other => return Err(bad(format!("unknown binary type id {other}"))),
        })
    }

    fn from_compact(code: u8) -> Result<Kind, WireError> {
        Ok(match code {
            1 | 2 => Kind::Bool,
            3 => Kind::Byte,
            4 => Kind::I16,
            5 => Kind::I32,
            6 => Kind::I64,
            7 => Kind::Double,
            8 => Kind::String,
            9 => Kind::List,
            10 => Kind::Set,
            11 => Kind::Map,
            12 => Kind::Struct,
            13 => Kind::Uuid,
            other => return Err(bad(format!("unknown compact type id {other}"))),
        })
    }
}

fn bad(reason: impl Into<String>) -> WireError {
    WireError::Malformed(reason.into())
}

/// A bounds-checked reader over one buffer: every length is checked
/// against the bytes that are really there before anything is allocated.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The most bytes the whole message may have, received or not.
    limit: usize,
    protocol: Protocol,
    /// Compact protocol: the previous field id of each open struct.
    last_field: Vec<i16>,
    /// Compact protocol: a bool field's value travels in its header.
    pending_bool: bool,
    /// The longest address list decoded into strings.
    max_batch: usize,
    /// The size of a list that was longer, and so skipped.
    over_batch: Option<usize>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], protocol: Protocol, limit: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            limit,
            protocol,
            last_field: Vec::new(),
            pending_bool: false,
            max_batch: usize::MAX,
            over_batch: None,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Incomplete);
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn be_i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn zigzag(&mut self) -> Result<i64, WireError> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        match self.protocol {
            Protocol::Binary { .. } => self.be_i32(),
            Protocol::Compact => Ok(self.zigzag()? as i32),
        }
    }

    /// A length or count, refused if the message could never hold it
    /// (every element takes at least one byte).
    fn length(&mut self, what: &str) -> Result<usize, WireError> {
        let n = match self.protocol {
            Protocol::Binary { .. } => {
                let n = self.be_i32()?;
                if n < 0 {
                    return Err(bad(format!("negative {what} {n}")));
                }
                n as u64
            }
            Protocol::Compact => self.varint()?,
        };
        if n > self.limit as u64 {
            return Err(bad(format!("{what} {n} exceeds the {}-byte message limit", self.limit)));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.length("string length")?;
        self.take(n)
    }

    /// Strings are decoded leniently: an address with invalid UTF-8 is one
    /// bad item (error 1), not a reason to refuse the whole batch.
    fn string(&mut self) -> Result<String, WireError> {
        let bytes = self.bytes()?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    fn message_begin(&mut self) -> Result<(String, u8, i32), WireError> {
        match self.protocol {
            Protocol::Binary { strict: true } => {
                let word = self.be_i32()? as u32;
                if word & 0xffff_0000 != BINARY_VERSION_1 {
                    return Err(bad(format!("bad binary message version {word:#010x}")));
                }
                let name = self.name()?;
                let seq = self.be_i32()?;
                Ok((name, (word & 0xff) as u8, seq))
            }
            Protocol::Binary { strict: false } => {
                let name = self.name()?;
                let message_type = self.byte()?;
                let seq = self.be_i32()?;
                Ok((name, message_type, seq))
            }
            Protocol::Compact => {
                if self.byte()? != COMPACT_ID {
                    return Err(bad("bad compact protocol id"));
                }
                let version_and_type = self.byte()?;
                if version_and_type & 0x1f != 1 {
                    return Err(bad(format!("bad compact version {}", version_and_type & 0x1f)));
                }
                let seq = self.varint()? as u32 as i32;
                let name = self.name()?;
                Ok((name, version_and_type >> 5, seq))
            }
        }
    }

    fn name(&mut self) -> Result<String, WireError> {
        let n = self.length("method name length")?;
        if n > MAX_NAME {
            return Err(bad(format!("method name of {n} bytes")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("method name is not UTF-8"))
    }

    fn struct_begin(&mut self) {
        self.last_field.push(0);
    }

    fn struct_end(&mut self) {
        self.last_field.pop();
    }

    /// The next field's kind and id, or `None` at the struct's end.
    fn field_begin(&mut self) -> Result<Option<(Kind, i16)>, WireError> {
        let header = self.byte()?;
        if header == 0 {
            return Ok(None);
        }
        match self.protocol {
            Protocol::Binary { .. } => {
                let kind = Kind::from_binary(header)?;
                let b = self.take(2)?;
                Ok(Some((kind, i16::from_be_bytes([b[0], b[1]]))))
            }
            Protocol::Compact => {
                let kind = Kind::from_compact(header & 0x0f)?;
                let delta = i16::from(header >> 4);
                let last = self.last_field.last().copied().unwrap_or(0);
                let id = if delta == 0 {
                    self.zigzag()? as i16
                } else {
                    last.wrapping_add(delta)
                };
                if let Some(top) = self.last_field.last_mut() {
                    *top = id;
                }
                if kind == Kind::Bool {
                    self.pending_bool = true;
                }
                Ok(Some((kind, id)))
            }
        }
    }

    fn list_begin(&mut self) -> Result<(Kind, usize), WireError> {
        match self.protocol {
            Protocol::Binary { .. } => {
                let kind = Kind::from_binary(self.byte()?)?;
                Ok((kind, self.length("list size")?))
            }
            Protocol::Compact => {
                let header = self.byte()?;
                let kind = Kind::from_compact(header & 0x0f)?;
                let size = match header >> 4 {
                    15 => self.length("list size")?,
                    short => usize::from(short),
                };
                Ok((kind, size))
            }
        }
    }

    /// Skips one value of `kind`, however nested, up to `MAX_DEPTH`.
    fn skip(&mut self, kind: Kind, depth: usize) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("values nested deeper than {MAX_DEPTH}")));
        }
        let compact = self.protocol == Protocol::Compact;
        match kind {
            Kind::Bool if compact && self.pending_bool => self.pending_bool = false,
            Kind::Bool | Kind::Byte => {
                self.take(1)?;
            }
            Kind::I16 | Kind::I32 | Kind::I64 if compact => {
                self.varint()?;
            }
            Kind::I16 => {
                self.take(2)?;
            }
            Kind::I32 => {
                self.take(4)?;
            }
            Kind::I64 | Kind::Double => {
                self.take(8)?;
            }
            Kind::Uuid => {
                self.take(16)?;
            }
            Kind::String => {
                self.bytes()?;
            }
            Kind::Struct => {
                self.struct_begin();
                while let Some((field, _)) = self.field_begin()? {
                    self.skip(field, depth + 1)?;
                }
                self.struct_end();
            }
            Kind::List | Kind::Set => {
                let (element, size) = self.list_begin()?;
                for _ in 0..size {
                    self.skip(element, depth + 1)?;
                }
            }
            Kind::Map => {
                let (key, value, size) = self.map_begin()?;
                for _ in 0..size {
                    self.skip(key, depth + 1)?;
                    self.skip(value, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn map_begin(&mut self) -> Result<(Kind, Kind, usize), WireError> {
        match self.protocol {
            Protocol::Binary { .. } => {
                let key = Kind::from_binary(self.byte()?)?;
                let value = Kind::from_binary(self.byte()?)?;
                Ok((key, value, self.length("map size")?))
            }
            Protocol::Compact => {
                let size = self.length("map size")?;
                if size == 0 {
                    return Ok((Kind::Byte, Kind::Byte, 0));
                }
                let types = self.byte()?;
                Ok((Kind::from_compact(types >> 4)?, Kind::from_compact(types & 0x0f)?, size))
            }
        }
    }

    fn string_list(&mut self) -> Result<Vec<String>, WireError> {
        let (kind, size) = self.list_begin()?;
        if kind != Kind::String {
            return Err(bad(format!("ipList holds {kind:?}, not strings")));
        }
        if size > self.max_batch {
            // Walked over, never allocated: the request is refused whole.
            for _ in 0..size {
                self.skip(Kind::String, 1)?;
            }
            self.over_batch = Some(size);
            return Ok(Vec::new());
        }
        // Reserve only for what has arrived, not for what was announced.
        let mut out = Vec::with_capacity(size.min(self.remaining()));
        for _ in 0..size {
            out.push(self.string()?);
        }
        Ok(out)
    }

    /// Visits each field of a struct, skipping those `visit` declines.
    fn fields(
        &mut self,
        mut visit: impl FnMut(&mut Self, Kind, i16) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        self.struct_begin();
        while let Some((kind, id)) = self.field_begin()? {
            if !visit(self, kind, id)? {
                self.skip(kind, 1)?;
            }
        }
        self.struct_end();
        Ok(())
    }

    /// `(1: list<string> ipList)`; an unset list is an empty batch.
    fn ip_list_args(&mut self) -> Result<Vec<String>, WireError> {
        let mut ips = Vec::new();
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
        let (mut ips, mut lang) = (Vec::new(), String::new());
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
        inputs: &'a [String],
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
            let size = 64 + name.len() + inputs.iter().map(|input| answer::size_hint(input)).sum::<usize>();
            let mut out = frame_start(wire, size);
            with_protocol(&mut out, wire.protocol, |o| {
                o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seq))?;
                o.write_struct_begin(&TStructIdentifier::new(""))?;
                o.write_field_begin(&TFieldIdentifier::new("success", TType::List, 0))?;
                o.write_list_begin(&TListIdentifier::new(TType::Struct, outcomes.len() as i32))
            });
            for (input, outcome) in inputs.iter().zip(outcomes) {
                answer::write_answer(&mut out, wire.protocol, crate::domain::echo(input), outcome);
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
fn message(wire: Wire, write: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>) -> Vec<u8> {
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

// The client side, for the load generator: calls out, replies summarised
// without building a `GeoInfo` per answer.

/// Encodes a call to the method `call` stands for, frame header included.
pub fn encode_call(wire: Wire, seq: i32, call: &Call) -> Vec<u8> {
    message(wire, |o| write_call(o, seq, call))
}

fn write_call(o: &mut dyn TOutputProtocol, seq: i32, call: &Call) -> thrift::Result<()> {
    let list = |o: &mut dyn TOutputProtocol, ips: &[String]| {
        o.write_field_begin(&TFieldIdentifier::new("ipList", TType::List, 1))?;
        o.write_list_begin(&TListIdentifier::new(TType::String, ips.len() as i32))?;
        for ip in ips {
            o.write_string(ip)?;
        }
        o.write_list_end()?;
        o.write_field_end()
    };
    let name = match call {
        Call::QueryGeoInfoByIp { .. } => "queryGeoInfoByIP",
        Call::QueryI18nGeoInfoByIp { .. } => "queryI18nGeoInfoByIP",
        Call::QueryGeoInfo { .. } => "queryGeoInfo",
        Call::Unknown => "unknownMethod",
    };
    o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))?;
    o.write_struct_begin(&TStructIdentifier::new(format!("{name}_args")))?;
    match call {
        Call::QueryGeoInfoByIp { ips } | Call::QueryI18nGeoInfoByIp { ips } => list(o, ips)?,
        Call::QueryGeoInfo { ips, lang } => {
            o.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, 1))?;
            o.write_struct_begin(&TStructIdentifier::new("GeoRequest"))?;
            list(o, ips)?;
            o.write_field_begin(&TFieldIdentifier::new("lang", TType::String, 2))?;
            o.write_string(lang)?;
            o.write_field_end()?;
            o.write_field_stop()?;
            o.write_struct_end()?;
            o.write_field_end()?;
        }
        Call::Unknown => {}
    }
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_message_end()?;
    o.flush()
}

/// What one reply held, as far as a load generator cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplySummary {
    /// Answers, by `error_no` (0 to 4; others count as 4).
    pub by_error: [u64; 5],
    /// The message of a `TApplicationException` instead of answers.
    pub exception: Option<String>,
}

impl ReplySummary {
    pub fn answers(&self) -> u64 {
        self.by_error.iter().sum()
    }
}

/// Reads the reply at the start of `buf`: its summary and its length in
/// bytes. `Err(Incomplete)` asks for more bytes.
pub fn scan_reply(buf: &[u8], wire: Wire, max_message: usize) -> Result<(ReplySummary, usize), WireError> {
    let (message, whole, offset) = match wire.framing {
        Framing::Framed => {
            let header = buf.get(..4).ok_or(WireError::Incomplete)?;
            let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if size > max_message {
                return Err(WireError::FrameTooLarge {
                    size: size as u64,
                    limit: max_message,
                });
            }
            (buf.get(4..4 + size).ok_or(WireError::Incomplete)?, true, 4)
        }
        Framing::Buffered => (buf, false, 0),
    };
    let mut reader = Reader::new(message, wire.protocol, if whole { message.len() } else { max_message });
    let (_, message_type, _) = reader.message_begin()?;
    let mut summary = ReplySummary::default();
    match message_type {
        2 => reader.fields(|r, kind, id| {
            if (id, kind) != (0, Kind::List) {
                return Ok(false);
            }
            let (element, size) = r.list_begin()?;
            for _ in 0..size {
                if element != Kind::Struct {
                    r.skip(element, 1)?;
                    continue;
                }
                let mut error_no = 0;
                r.fields(|r, kind, id| {
                    if (id, kind) != (6, Kind::I32) {
                        return Ok(false);
                    }
                    error_no = r.i32()?;
                    Ok(true)
                })?;
                summary.by_error[error_no.clamp(0, 4) as usize] += 1;
            }
            Ok(true)
        })?,
        3 => {
            let mut text = String::new();
            reader.fields(|r, kind, id| {
                if (id, kind) != (1, Kind::String) {
                    return Ok(false);
                }
                text = r.string()?;
                Ok(true)
            })?;
            summary.exception = Some(text);
        }
        other => return Err(bad(format!("message type {other} is not a reply"))),
    }
    Ok((summary, offset + if whole { message.len() } else { reader.pos }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16_384_000;

    fn wire(framing: Framing, protocol: Protocol) -> Wire {
        Wire { framing, protocol }
    }

    #[test]
    fn detects_each_transport_and_protocol() {
        let strict = Protocol::Binary { strict: true };
        let loose = Protocol::Binary { strict: false };
        assert_eq!(detect(&[0x80, 1, 0, 1], LIMIT), Ok(wire(Framing::Buffered, strict)));
        assert_eq!(
            detect(&[0x82, 0x21], LIMIT),
            Ok(wire(Framing::Buffered, Protocol::Compact))
        );
        assert_eq!(
            detect(&[0, 0, 0, 40, 0x80, 1, 0, 1], LIMIT),
            Ok(wire(Framing::Framed, strict))
        );
        assert_eq!(
            detect(&[0, 0, 0, 40, 0x82, 0x21, 0, 5], LIMIT),
            Ok(wire(Framing::Framed, Protocol::Compact))
        );
        assert_eq!(
            detect(&[0, 0, 0, 40, 0, 0, 0, 12], LIMIT),
            Ok(wire(Framing::Framed, loose))
        );
        assert_eq!(detect(b"\0\0\0\x0cqueryGeo", LIMIT), Ok(wire(Framing::Buffered, loose)));
    }

    #[test]
    fn waits_for_enough_bytes_to_decide() {
        assert_eq!(detect(&[], LIMIT), Err(WireError::Incomplete));
        assert_eq!(detect(&[0x80], LIMIT), Err(WireError::Incomplete));
        assert_eq!(detect(&[0, 0, 0, 40, 0x80], LIMIT), Err(WireError::Incomplete));
    }

    #[test]
    fn refuses_http_and_oversized_frames_without_reading_them() {
        assert!(matches!(
            detect(b"GET / HTTP/1.1\r\n", LIMIT),
            Err(WireError::NotThrift(_))
        ));
        assert_eq!(
            detect(&[0x01, 0, 0, 0, 0x80, 1, 0, 1], LIMIT),
            Err(WireError::FrameTooLarge {
                size: 0x0100_0000,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn a_huge_announced_list_is_refused_not_allocated() {
        // A strict binary call whose ipList claims 2^31-1 strings.
        let mut msg = vec![0x80, 1, 0, 1, 0, 0, 0, 16];
        msg.extend_from_slice(b"queryGeoInfoByIP");
        msg.extend_from_slice(&[0, 0, 0, 7, 15, 0, 1, 11, 0x7f, 0xff, 0xff, 0xff]);
        let (request, _) = decode(&msg, Protocol::Binary { strict: true }, true, LIMIT, usize::MAX).unwrap();
        let err = request.call.unwrap_err().to_string();
        assert!(
            err.contains("list size 2147483647 exceeds the 36-byte message limit"),
            "{err}"
        );
    }

    #[test]
    fn a_list_over_the_batch_limit_is_walked_over_and_refused_whole() {
        let wire = Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Compact,
        };
        let ips: Vec<String> = ["1.1.1.1", "", "2.2.2.2"].map(String::from).to_vec();
        let mut msg = encode_call(wire, 9, &Call::QueryGeoInfoByIp { ips: ips.clone() });
        let len = msg.len();
        msg.extend_from_slice(b"next message");
        let (request, used) = decode(&msg, Protocol::Compact, false, LIMIT, 2).unwrap();
        assert_eq!(request.call, Err(BadArgs::BatchOverLimit { size: 3, limit: 2 }));
        assert_eq!(used, Some(len), "the stream stays in step");
        let (request, _) = decode(&msg, Protocol::Compact, false, LIMIT, 3).unwrap();
        assert_eq!(request.call, Ok(Call::QueryGeoInfoByIp { ips }));
    }

    #[test]
    fn calls_decode_as_sent_and_replies_are_summarised() {
        let ips = vec!["1.2.3.4".to_owned(), "nope".to_owned()];
        let outcomes = vec![
            Err(crate::domain::LookupError::NotFound),
            Err(crate::domain::LookupError::InvalidIp("nope".into())),
        ];
        for framing in [Framing::Framed, Framing::Buffered] {
            for protocol in [Protocol::Binary { strict: true }, Protocol::Compact] {
                let wire = wire(framing, protocol);
                let call = Call::QueryGeoInfo {
                    ips: ips.clone(),
                    lang: "en".into(),
                };
                let bytes = encode_call(wire, 9, &call);
                let body = if framing == Framing::Framed {
                    &bytes[4..]
                } else {
                    &bytes[..]
                };
                let (request, _) = decode(body, protocol, framing == Framing::Framed, LIMIT, usize::MAX).unwrap();
                assert_eq!((request.name.as_str(), request.seq), ("queryGeoInfo", 9));
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
                let mut stream = reply.clone();
                stream.extend_from_slice(&reply[..3]);
                let (summary, used) = scan_reply(&stream, wire, LIMIT).unwrap();
                assert_eq!((summary.by_error, used), ([0, 1, 1, 0, 0], reply.len()));
                assert_eq!(
                    scan_reply(&reply[..reply.len() - 1], wire, LIMIT),
                    Err(WireError::Incomplete)
                );
                let refused = encode(wire, "x", 1, &exception(ApplicationErrorKind::UnknownMethod, "no such"));
                let (summary, _) = scan_reply(&refused, wire, LIMIT).unwrap();
                assert_eq!(summary.exception.as_deref(), Some("no such"));
            }
        }
    }

    #[test]
    fn a_reply_to_long_invalid_inputs_is_smaller_than_the_request() {
        let wire = wire(Framing::Framed, Protocol::Binary { strict: true });
        let ips = vec!["x".repeat(1_630); 10_000];
        let request = encode_call(wire, 1, &Call::QueryGeoInfoByIp { ips: ips.clone() });
        assert!(
            request.len() <= crate::server::DEFAULT_MAX_FRAME + 4,
            "the request itself fits the limit"
        );
        let outcomes: Vec<_> = ips
            .iter()
            .map(|ip| crate::domain::Addr::parse(ip).map(|_| unreachable!()))
            .collect();
        let reply = encode(wire, "queryGeoInfoByIP", 1, &Reply::Answers { inputs: &ips, outcomes });
        assert!(reply.len() < request.len() / 4, "{} bytes", reply.len());
    }

    #[test]
    fn a_partial_unframed_message_asks_for_more() {
        let reply = encode(
            wire(Framing::Buffered, Protocol::Compact),
            "queryGeoInfoByIP",
            7,
            &Reply::Answers {
                inputs: &[],
                outcomes: Vec::new(),
            },
        );
        // A reply is not a call, but the header decodes the same way.
        let (request, used) = decode(&reply, Protocol::Compact, false, LIMIT, usize::MAX).unwrap();
        assert_eq!(
            (request.name.as_str(), request.seq, used),
            ("queryGeoInfoByIP", 7, Some(reply.len()))
        );
        assert_eq!(
            decode(&reply[..reply.len() - 1], Protocol::Compact, false, LIMIT, usize::MAX),
            Err(WireError::Incomplete)
        );
    }
}
