//! The client side of the wire, for the load generator and the tests:
//! calls out, and replies summarised without building a `GeoInfo` per
//! answer.

use thrift::protocol::{
    TFieldIdentifier, TListIdentifier, TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

use super::codec::{message, Call, MessageType, Method, Protocol, Wire, WireError};
use super::reader::{bad, Kind, Reader};
use crate::answer::{ErrorNo, ERROR_NO};
use crate::inputs::Inputs;

/// Encodes a call to the method `call` stands for, frame header included.
pub fn encode_call(wire: Wire, seq: i32, call: &Call) -> Vec<u8> {
    message(wire, |o| write_call(o, seq, call))
}

fn write_call(o: &mut dyn TOutputProtocol, seq: i32, call: &Call) -> thrift::Result<()> {
    let list = |o: &mut dyn TOutputProtocol, ips: &Inputs| {
        o.write_field_begin(&TFieldIdentifier::new("ipList", TType::List, 1))?;
        o.write_list_begin(&TListIdentifier::new(TType::String, ips.len() as i32))?;
        for ip in ips.iter() {
            o.write_string(ip)?;
        }
        o.write_list_end()?;
        o.write_field_end()
    };
    let name = call.method().map_or("unknownMethod", Method::name);
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

/// Summarises one whole reply message (found by a [`MessageCheck`](super::codec::MessageCheck)).
pub fn scan_reply(message: &[u8], protocol: Protocol) -> Result<ReplySummary, WireError> {
    let mut reader = Reader::new(message, protocol, message.len());
    let (_, message_type, _) = reader.message_header()?;
    let mut summary = ReplySummary::default();
    match MessageType::from(message_type) {
        MessageType::Reply => reader.fields(|r, kind, id| {
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
                    if (id, kind) != (ERROR_NO.id, Kind::I32) {
                        return Ok(false);
                    }
                    error_no = r.i32()?;
                    Ok(true)
                })?;
                summary.by_error[ErrorNo::from_wire(error_no) as usize] += 1;
            }
            Ok(true)
        })?,
        MessageType::Exception => {
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
    Ok(summary)
}
