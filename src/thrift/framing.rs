//! Where messages start and end: the framing and protocol a connection
//! speaks, and a check that a whole message has arrived, within every
//! limit, before it is parsed.

use super::protocol::{Protocol, WireError, COMPACT_ID};
use super::reader::{too_deep, Kind, Reader, MAX_DEPTH, MAX_NAME};

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

impl Wire {
    /// What clients speak unless told otherwise: framed strict binary.
    pub const FRAMED_BINARY: Wire = Wire::new(Framing::Framed, Protocol::BINARY);

    pub const fn new(framing: Framing, protocol: Protocol) -> Wire {
        Wire { framing, protocol }
    }

    /// Each transport with each protocol (binary strict when framed, as
    /// new clients send it, and non-strict when not, as old ones do): what
    /// tests and the fuzzer go through.
    pub const EACH: [Wire; 4] = [
        Wire {
            framing: Framing::Framed,
            protocol: Protocol::Binary { strict: true },
        },
        Wire {
            framing: Framing::Framed,
            protocol: Protocol::Compact,
        },
        Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Binary { strict: false },
        },
        Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Compact,
        },
    ];
}

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

/// Where one message lies in a buffer that starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSpan {
    /// Where the message proper starts: after the frame header, if framed.
    pub body: usize,
    /// Where it ends: the bytes to consume.
    pub end: usize,
}

/// Finds where the message at the start of a buffer ends, before anything
/// parses it and allocating nothing but a stack of the containers open
/// (at most `MAX_DEPTH`). A framed message's length is
/// in its header. An unframed one is walked a token at a time, resuming
/// where the last call stopped, so that a message arriving in many small
/// pieces costs time linear in its size.
#[derive(Debug)]
pub struct MessageCheck {
    wire: Wire,
    max_message: usize,
    /// Unframed: the bytes walked over so far, in the buffer as it is.
    walked: usize,
    /// Unframed: bytes of this message walked and then dropped from the
    /// buffer's start by [`MessageCheck::forget`].
    forgotten: usize,
    header_done: bool,
    /// Unframed: the containers open at `walked`, innermost last.
    open: Vec<Open>,
}

/// A container being walked over.
#[derive(Debug, Clone, Copy)]
enum Open {
    Struct {
        last_field: i16,
    },
    List {
        element: Kind,
        left: usize,
    },
    /// `left` counts keys and values.
    Map {
        key: Kind,
        value: Kind,
        left: usize,
    },
}

impl MessageCheck {
    pub fn new(wire: Wire, max_message: usize) -> MessageCheck {
        MessageCheck {
            wire,
            max_message,
            walked: 0,
            forgotten: 0,
            header_done: false,
            open: Vec::new(),
        }
    }

    /// Where the message at the start of `buf` ends, once all of it is
    /// there; `Ok(None)` asks for more bytes. Call again with the same
    /// buffer grown; after a message is found, the next call starts on the
    /// next message (the caller advances the buffer past it).
    pub fn check(&mut self, buf: &[u8]) -> Result<Option<MessageSpan>, WireError> {
        if self.wire.framing == Framing::Framed {
            let Some(size) = frame_size(buf) else {
                return Ok(None);
            };
            if size > self.max_message {
                return Err(WireError::FrameTooLarge {
                    size: size as u64,
                    limit: self.max_message,
                });
            }
            return Ok((buf.len() >= 4 + size).then_some(MessageSpan { body: 4, end: 4 + size }));
        }
        match self.walk(buf) {
            Ok(()) => {
                let end = std::mem::take(&mut self.walked);
                let size = end + std::mem::take(&mut self.forgotten);
                self.header_done = false;
                if size > self.max_message {
                    return Err(WireError::FrameTooLarge {
                        size: size as u64,
                        limit: self.max_message,
                    });
                }
                Ok(Some(MessageSpan { body: 0, end }))
            }
            // The message goes on past the end of `buf`.
            Err(WireError::Incomplete) if self.forgotten + buf.len() >= self.max_message => {
                Err(WireError::FrameTooLarge {
                    size: (self.forgotten + buf.len()) as u64,
                    limit: self.max_message,
                })
            }
            Err(WireError::Incomplete) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Unframed: lets the caller drop the bytes at the buffer's start that
    /// the walk has passed and will not read again, and returns how many;
    /// the walk goes on from the buffer's new start. For a message that is
    /// refused already, so that it is walked to its end without being held.
    pub fn forget(&mut self) -> usize {
        if self.wire.framing == Framing::Framed || !self.header_done {
            return 0;
        }
        self.forgotten += self.walked;
        std::mem::take(&mut self.walked)
    }

    /// A framed message's body as far as it has arrived, and the size its
    /// header announces; `None` for unframed messages.
    pub fn frame_so_far<'a>(&self, buf: &'a [u8]) -> Option<(&'a [u8], usize)> {
        let size = frame_size(buf).filter(|_| self.wire.framing == Framing::Framed)?;
        Some((&buf[4..buf.len().min(4 + size)], size))
    }

    /// How many more bytes the message needs at least, as far as is known.
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match (self.wire.framing, frame_size(buf)) {
            (Framing::Framed, Some(size)) => (4 + size).saturating_sub(buf.len()),
            (Framing::Framed, None) => 4 - buf.len(),
            (Framing::Buffered, _) => 1,
        }
    }

    /// Walks from `walked` to the message's end. Each token (a field
    /// header with its value or container header, a list element, a
    /// container's end) is committed only once all of it is there.
    fn walk(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut r = Reader::new(buf, self.wire.protocol, self.max_message);
        r.pos = self.walked;
        if !self.header_done {
            r.message_header()?;
            self.open.clear();
            self.open.push(Open::Struct { last_field: 0 });
            self.header_done = true;
            self.walked = r.pos;
        }
        let compact = self.wire.protocol == Protocol::Compact;
        while let Some(&top) = self.open.last() {
            let (kind, field) = match top {
                Open::Struct { last_field } => match r.field_header(last_field)? {
                    Some((kind, id)) => (kind, Some(id)),
                    None => {
                        self.open.pop();
                        self.walked = r.pos;
                        continue;
                    }
                },
                Open::List { left: 0, .. } | Open::Map { left: 0, .. } => {
                    self.open.pop();
                    continue;
                }
                Open::List { element, .. } => (element, None),
                Open::Map { key, value, left } => (if left % 2 == 0 { key } else { value }, None),
            };
            let opened = match kind {
                Kind::Struct => Some(Open::Struct { last_field: 0 }),
                Kind::List | Kind::Set => {
                    let (element, left) = r.list_begin()?;
                    Some(Open::List { element, left })
                }
                Kind::Map => {
                    let (key, value, size) = r.map_begin()?;
                    Some(Open::Map {
                        key,
                        value,
                        left: size * 2,
                    })
                }
                // A compact bool field carries its value in its header.
                Kind::Bool if compact && field.is_some() => None,
                scalar => {
                    r.skip_scalar(scalar)?;
                    None
                }
            };
            // All of the token is here: commit it.
            match (self.open.last_mut(), field) {
                (Some(Open::Struct { last_field }), Some(id)) => *last_field = id,
                (Some(Open::List { left, .. } | Open::Map { left, .. }), _) => *left -= 1,
                _ => {}
            }
            if let Some(open) = opened {
                if self.open.len() > MAX_DEPTH {
                    return Err(too_deep());
                }
                self.open.push(open);
            }
            self.walked = r.pos;
        }
        Ok(())
    }
}

/// The size a frame header at the start of `buf` announces, once all four
/// bytes are there.
fn frame_size(buf: &[u8]) -> Option<usize> {
    let header: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thrift::calls::encode_call;
    use crate::thrift::codec::Call;

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

    fn call(wire: Wire, ips: usize) -> Vec<u8> {
        let ips = (0..ips)
            .map(|i| format!("10.0.{}.{}", i / 256 % 256, i % 256))
            .collect();
        let lang = "en".to_owned();
        encode_call(wire, 7, &Call::QueryGeoInfo { ips, lang })
    }

    #[test]
    fn finds_each_message_of_a_stream_fed_a_byte_at_a_time() {
        for wire in Wire::EACH {
            let (first, second) = (call(wire, 3), call(wire, 0));
            let stream = [first.clone(), second.clone()].concat();
            let mut check = MessageCheck::new(wire, LIMIT);
            let mut found = Vec::new();
            let mut start = 0;
            for end in 1..=stream.len() {
                if let Some(at) = check.check(&stream[start..end]).unwrap() {
                    found.push(at.end);
                    start += at.end;
                }
            }
            assert_eq!(found, [first.len(), second.len()], "{wire:?}");
        }
    }

    #[test]
    fn walks_nested_containers_of_every_kind_and_refuses_deeper_than_the_limit() {
        // An unknown method's arguments: a struct holding a map<i32, list<bool>>,
        // a set<double>, a bool field and a uuid.
        let nested: &[u8] = &[
            0x82, 0x21, 7, 1, b'x', // header: call, seq 7, name "x"
            0x1c, // field 1: struct
            0x1b, 2, 0x59, 2, 0x21, 1, 0x12, 0, // field 1: map<i32, list<bool>> {1: [true], 2: [false]}
            0x1a, 0x17, 0, 0, 0, 0, 0, 0, 0, 0,    // field 2: set<double> of one
            0x11, // field 3: bool true, in its header
            0x1d, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, // field 4: uuid
            0,  // end of the inner struct
            0,  // end of the arguments
        ];
        let wire = Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Compact,
        };
        let mut stream = nested.to_vec();
        stream.push(0x82);
        let found = MessageCheck::new(wire, LIMIT).check(&stream).unwrap();
        assert_eq!(
            found,
            Some(MessageSpan {
                body: 0,
                end: nested.len()
            })
        );

        let mut deep = nested[..5].to_vec();
        deep.extend(std::iter::repeat_n(0x1c, MAX_DEPTH + 1));
        let err = MessageCheck::new(wire, LIMIT).check(&deep).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("malformed message: values nested deeper than {MAX_DEPTH}")
        );
    }

    #[test]
    fn an_unframed_message_is_cut_off_at_the_limit_and_a_frame_at_its_header() {
        for wire in Wire::EACH {
            let message = call(wire, 100);
            let limit = message.len() - 10;
            let mut check = MessageCheck::new(wire, limit);
            let err = check.check(&message).unwrap_err();
            assert!(matches!(err, WireError::FrameTooLarge { .. }), "{wire:?}: {err}");
            if wire.framing == Framing::Framed {
                let err = MessageCheck::new(wire, limit).check(&message[..4]).unwrap_err();
                assert!(matches!(err, WireError::FrameTooLarge { .. }));
            }
        }
    }

    #[test]
    fn an_unframed_message_walked_in_pieces_and_forgotten_as_it_goes_ends_where_it_ends_whole() {
        for wire in Wire::EACH.into_iter().filter(|w| w.framing == Framing::Buffered) {
            let message = call(wire, 1_000);
            let mut stream = message.clone();
            stream.extend_from_slice(&message[..7]); // the next message's start
            let (mut check, mut buf, mut dropped) = (MessageCheck::new(wire, LIMIT), Vec::new(), 0);
            let mut found = None;
            for piece in stream.chunks(100) {
                buf.extend_from_slice(piece);
                found = check.check(&buf).unwrap();
                if found.is_some() {
                    break;
                }
                let forgotten = check.forget();
                buf.drain(..forgotten);
                dropped += forgotten;
                assert!(buf.len() < 200, "{wire:?}: {} bytes held", buf.len());
            }
            let found = found.expect("the message's end");
            assert_eq!(dropped + found.end, message.len(), "{wire:?}");

            // Forgetting does not hide a message over the limit.
            let mut check = MessageCheck::new(wire, message.len() - 1);
            let (mut buf, mut refused) = (Vec::new(), None);
            for piece in stream.chunks(100) {
                buf.extend_from_slice(piece);
                match check.check(&buf) {
                    Ok(None) => buf.drain(..check.forget()).for_each(drop),
                    Ok(Some(found)) => panic!("{wire:?}: found {found:?} over the limit"),
                    Err(err) => {
                        refused = Some(err);
                        break;
                    }
                }
            }
            let err = refused.expect("refused");
            assert!(matches!(err, WireError::FrameTooLarge { .. }), "{wire:?}: {err}");
        }
    }

    #[test]
    fn a_large_unframed_message_in_small_pieces_costs_about_what_it_costs_whole() {
        // Walking from the start again at every piece would make this
        // hundreds of times slower than one walk.
        let wire = Wire {
            framing: Framing::Buffered,
            protocol: Protocol::Compact,
        };
        let message = call(wire, 300_000); // about 4 MB
        let whole = std::time::Instant::now();
        let found = MessageCheck::new(wire, LIMIT).check(&message).unwrap();
        let whole = whole.elapsed();
        assert_eq!(found.map(|f| f.end), Some(message.len()));

        let pieces = std::time::Instant::now();
        let mut check = MessageCheck::new(wire, LIMIT);
        let mut found = None;
        for end in (1460..message.len()).step_by(1460).chain([message.len()]) {
            found = check.check(&message[..end]).unwrap();
        }
        let pieces = pieces.elapsed();
        assert_eq!(found.map(|f| f.end), Some(message.len()));
        assert!(
            pieces < whole * 20 + std::time::Duration::from_millis(50),
            "whole {whole:?}, in 1,460-byte pieces {pieces:?}"
        );
    }
}
