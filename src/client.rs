//! A blocking Thrift client over the generated code, for `query` and tests.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol, TInputProtocol,
    TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport, TIoChannel,
    TTcpChannel,
};

use crate::thrift::{GeoInfo, IPServiceSyncClient};

/// How a client frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Framed,
    Buffered,
}

/// How a client encodes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

pub type Client = IPServiceSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// Connects to `addr` speaking `transport` and `protocol`; every read and
/// write gives up after `timeout`.
pub fn connect(addr: &str, transport: Transport, protocol: Protocol, timeout: Duration) -> std::io::Result<Client> {
    let socket = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to nothing")))?;
    let stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let (input, output) = protocols(stream, transport, protocol, true)?;
    Ok(IPServiceSyncClient::new(input, output))
}

/// The input and output protocols over `stream`. `strict` chooses the
/// binary protocol's version word; clients send it unless very old.
pub fn protocols(
    stream: TcpStream,
    transport: Transport,
    protocol: Protocol,
    strict: bool,
) -> std::io::Result<(Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>)> {
    let (read, write) = TTcpChannel::with_stream(stream)
        .split()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (read, write): (Box<dyn std::io::Read + Send>, Box<dyn std::io::Write + Send>) = match transport {
        Transport::Framed => (
            Box::new(TFramedReadTransport::new(read)),
            Box::new(TFramedWriteTransport::new(write)),
        ),
        Transport::Buffered => (
            Box::new(TBufferedReadTransport::new(read)),
            Box::new(TBufferedWriteTransport::new(write)),
        ),
    };
    Ok(match protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(read, strict)),
            Box::new(TBinaryOutputProtocol::new(write, strict)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(read)),
            Box::new(TCompactOutputProtocol::new(write)),
        ),
    })
}

/// A `GeoInfo` as JSON, keyed by the IDL's field names, with the fields
/// the server set: the object the HTTP API gives for the same answer.
pub fn to_json(g: &GeoInfo) -> serde_json::Value {
    serde_json::to_value(crate::answer::Json(g)).expect("a GeoInfo is valid JSON")
}
