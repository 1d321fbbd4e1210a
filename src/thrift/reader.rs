//! A bounds-checked reader of Thrift values, shared by the framing check
//! and the request decoder: every length is checked against the bytes
//! that are really there before anything is allocated.

use super::protocol::{Protocol, WireError, BINARY_VERSION_1, COMPACT_ID};
use crate::inputs::Inputs;

/// The longest method name accepted; real ones are under 40 bytes.
pub const MAX_NAME: usize = 256;
/// How deeply nested an unknown argument may be before it is refused.
pub const MAX_DEPTH: usize = 64;
/// The most structs a reader has open at once: the arguments, and those
/// nested in them up to `MAX_DEPTH`.
const MAX_OPEN: usize = MAX_DEPTH + 2;

/// Thrift value kinds, shared by both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
    /// Bytes a scalar takes in the binary protocol (and, except for
    /// integers, in the compact one). Containers and strings vary: 0.
    fn fixed_size(self) -> usize {
        match self {
            Kind::Bool | Kind::Byte => 1,
            Kind::I16 => 2,
            Kind::I32 => 4,
            Kind::I64 | Kind::Double => 8,
            Kind::Uuid => 16,
            Kind::String | Kind::Struct | Kind::Map | Kind::Set | Kind::List => 0,
        }
    }

    const ALL: [Kind; 12] = [
        Kind::Bool,
        Kind::Byte,
        Kind::I16,
        Kind::I32,
        Kind::I64,
        Kind::Double,
        Kind::String,
        Kind::Struct,
        Kind::Map,
        Kind::Set,
        Kind::List,
        Kind::Uuid,
    ];

    /// The kind's type id in the binary protocol and in the compact one:
    /// the one table both the reader and the answer writer use.
    #[inline]
    pub const fn codes(self) -> (u8, u8) {
        match self {
            Kind::Bool => (2, 1),
            Kind::Byte => (3, 3),
            Kind::Double => (4, 7),
            Kind::I16 => (6, 4),
            Kind::I32 => (8, 5),
            Kind::I64 => (10, 6),
            Kind::String => (11, 8),
            Kind::Struct => (12, 12),
            Kind::Map => (13, 11),
            Kind::Set => (14, 10),
            Kind::List => (15, 9),
            Kind::Uuid => (16, 13),
        }
    }

    pub fn from_binary(code: u8) -> Result<Kind, WireError> {
        Kind::of_code(code, "binary", |(binary, _)| binary)
    }

    pub fn from_compact(code: u8) -> Result<Kind, WireError> {
        // A compact bool field carries its value in its type id: 1 true, 2 false.
        if code == 2 {
            return Ok(Kind::Bool);
        }
        Kind::of_code(code, "compact", |(_, compact)| compact)
    }

    /// The kind whose `protocol` type id (`pick` of [`Kind::codes`]) is `code`.
    fn of_code(code: u8, protocol: &str, pick: fn((u8, u8)) -> u8) -> Result<Kind, WireError> {
        Kind::ALL
            .into_iter()
            .find(|kind| pick(kind.codes()) == code)
            .ok_or_else(|| bad(format!("unknown {protocol} type id {code}")))
    }
}

pub fn too_deep() -> WireError {
    bad(format!("values nested deeper than {MAX_DEPTH}"))
}

pub fn bad(reason: impl Into<String>) -> WireError {
    WireError::Malformed(reason.into())
}

/// A bounds-checked reader over one buffer: every length is checked
/// against the bytes that are really there before anything is allocated.
pub struct Reader<'a> {
    buf: &'a [u8],
    pub pos: usize,
    /// The most bytes the whole message may have, received or not.
    limit: usize,
    protocol: Protocol,
    /// Compact protocol: the previous field id of each open struct, the
    /// first `open` of them (on the stack: a `Vec` here was two of a
    /// single call's eight allocations).
    last_field: [i16; MAX_OPEN],
    open: usize,
    /// Compact protocol: a bool field's value travels in its header.
    pending_bool: bool,
    /// The longest address list decoded into strings.
    pub max_batch: usize,
    /// The size of a list that was longer, and so skipped.
    pub over_batch: Option<usize>,
    /// The size the address list announced, once its header is read.
    pub announced: Option<usize>,
    /// The buffer is a message's first bytes, read only for what they
    /// say: stop at the address list's header, decoding none of it.
    pub prefix_only: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], protocol: Protocol, limit: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            limit,
            protocol,
            last_field: [0; MAX_OPEN],
            open: 0,
            pending_bool: false,
            max_batch: usize::MAX,
            over_batch: None,
            announced: None,
            prefix_only: false,
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Incomplete);
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn be_i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
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

    pub fn zigzag(&mut self) -> Result<i64, WireError> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        match self.protocol {
            Protocol::Binary { .. } => self.be_i32(),
            Protocol::Compact => Ok(self.zigzag()? as i32),
        }
    }

    /// A length or count, refused if the message could never hold it
    /// (every element takes at least one byte).
    pub fn length(&mut self, what: &str) -> Result<usize, WireError> {
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

    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.length("string length")?;
        self.take(n)
    }

    /// Strings are decoded leniently: an address with invalid UTF-8 is one
    /// bad item (error 1), not a reason to refuse the whole batch.
    pub fn string(&mut self) -> Result<String, WireError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    /// The message header: name, type and sequence number, the name not
    /// yet copied.
    pub fn message_header(&mut self) -> Result<(&'a [u8], u8, i32), WireError> {
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

    fn name(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.length("method name length")?;
        if n > MAX_NAME {
            return Err(bad(format!("method name of {n} bytes")));
        }
        self.take(n)
    }

    pub fn struct_begin(&mut self) -> Result<(), WireError> {
        let top = self.last_field.get_mut(self.open).ok_or_else(too_deep)?;
        *top = 0;
        self.open += 1;
        Ok(())
    }

    pub fn struct_end(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    /// The next field's kind and id, or `None` at the struct's end.
    pub fn field_begin(&mut self) -> Result<Option<(Kind, i16)>, WireError> {
        let top = self.open.checked_sub(1);
        let last = top.map_or(0, |i| self.last_field[i]);
        let field = self.field_header(last)?;
        if let Some((kind, id)) = field {
            if let Some(i) = top {
                self.last_field[i] = id;
            }
            self.pending_bool = self.protocol == Protocol::Compact && kind == Kind::Bool;
        }
        Ok(field)
    }

    /// A field header after the field numbered `last` (the compact
    /// protocol sends ids as deltas), or `None` for the struct's end. In
    /// the compact protocol a bool field's value is in its header.
    pub fn field_header(&mut self, last: i16) -> Result<Option<(Kind, i16)>, WireError> {
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
                let id = if delta == 0 {
                    self.zigzag()? as i16
                } else {
                    last.wrapping_add(delta)
                };
                Ok(Some((kind, id)))
            }
        }
    }

    pub fn list_begin(&mut self) -> Result<(Kind, usize), WireError> {
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
    pub fn skip(&mut self, kind: Kind, depth: usize) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        match kind {
            Kind::Bool if self.pending_bool => self.pending_bool = false,
            Kind::Struct => {
                self.struct_begin()?;
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
            scalar => self.skip_scalar(scalar)?,
        }
        Ok(())
    }

    /// Skips a value that is not a container.
    pub fn skip_scalar(&mut self, kind: Kind) -> Result<(), WireError> {
        let compact = self.protocol == Protocol::Compact;
        match kind {
            Kind::I16 | Kind::I32 | Kind::I64 if compact => {
                self.varint()?;
            }
            Kind::String => {
                self.bytes()?;
            }
            _ => {
                self.take(kind.fixed_size())?;
            }
        }
        Ok(())
    }

    pub fn map_begin(&mut self) -> Result<(Kind, Kind, usize), WireError> {
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

    /// A list of strings, into one buffer, each as leniently as [`Reader::string`].
    pub fn string_list(&mut self) -> Result<Inputs, WireError> {
        let (kind, size) = self.list_begin()?;
        if kind != Kind::String {
            return Err(bad(format!("ipList holds {kind:?}, not strings")));
        }
        self.announced = Some(size);
        if self.prefix_only {
            return Err(WireError::Incomplete);
        }
        if size > self.max_batch {
            // Walked over, never allocated: the request is refused whole.
            for _ in 0..size {
                self.skip(Kind::String, 1)?;
            }
            self.over_batch = Some(size);
            return Ok(Inputs::default());
        }
        if size == 1 {
            return Ok(Inputs::one_from_bytes(self.bytes()?.to_vec()));
        }
        // Reserve only for what has arrived, not for what was announced.
        let mut bytes = Vec::with_capacity(self.remaining());
        let mut ends = Vec::with_capacity(size.min(self.remaining()));
        for _ in 0..size {
            bytes.extend_from_slice(self.bytes()?);
            // Within the message, so far below 4 GiB.
            ends.push(bytes.len() as u32);
        }
        Ok(Inputs::from_bytes(bytes, ends))
    }

    /// Visits each field of a struct, skipping those `visit` declines.
    pub fn fields(
        &mut self,
        mut visit: impl FnMut(&mut Self, Kind, i16) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        self.struct_begin()?;
        while let Some((kind, id)) = self.field_begin()? {
            if !visit(self, kind, id)? {
                self.skip(kind, 1)?;
            }
        }
        self.struct_end();
        Ok(())
    }
}
