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

pub use crate::thrift::codec::{Framing, Protocol, Wire};
use crate::thrift::{GeoInfo, IPServiceSyncClient};

pub type Client = IPServiceSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// Connects to `addr` speaking `wire`; every read and write gives up after
/// `timeout`.
pub fn connect(addr: &str, wire: Wire, timeout: Duration) -> std::io::Result<Client> {
    let socket = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to nothing")))?;
    let stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let (input, output) = protocols(stream, wire)?;
    Ok(IPServiceSyncClient::new(input, output))
}

/// How long a refused connection is retried (a server restarting) before
/// a call gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(10);

/// A client that opens its connection again when the server closed it,
/// and sends the call again: lookups are idempotent, so a rolling restart
/// costs a retry, not an error.
pub struct Reconnecting {
    addr: String,
    wire: Wire,
    timeout: Duration,
    client: Client,
}

impl Reconnecting {
    pub fn connect(addr: &str, wire: Wire, timeout: Duration) -> std::io::Result<Self> {
        Ok(Reconnecting {
            client: connect(addr, wire, timeout)?,
            addr: addr.to_owned(),
            wire,
            timeout,
        })
    }

    /// `call` on the connection; if the connection failed (not the call:
    /// an exception the server sent is returned as it is), once more on a
    /// new one, whose connect is retried while refused.
    pub fn call<T>(&mut self, call: impl Fn(&mut Client) -> thrift::Result<T>) -> thrift::Result<T> {
        match call(&mut self.client) {
            Err(thrift::Error::Transport(err)) => {
                tracing::debug!(error = %err, addr = %self.addr, "the connection failed; reconnecting");
                let giving_up = std::time::Instant::now() + RECONNECT_FOR;
                self.client = loop {
                    match connect(&self.addr, self.wire, self.timeout) {
                        Ok(client) => break client,
                        Err(_) if std::time::Instant::now() < giving_up => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(err) => return Err(thrift::Error::from(err)),
                    }
                };
                call(&mut self.client)
            }
            done => done,
        }
    }
}

/// The input and output protocols over `stream`, speaking `wire`.
pub fn protocols(
    stream: TcpStream,
    wire: Wire,
) -> std::io::Result<(Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>)> {
    let (read, write) = TTcpChannel::with_stream(stream)
        .split()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (read, write): (Box<dyn std::io::Read + Send>, Box<dyn std::io::Write + Send>) = match wire.framing {
        Framing::Framed => (
            Box::new(TFramedReadTransport::new(read)),
            Box::new(TFramedWriteTransport::new(write)),
        ),
        Framing::Buffered => (
            Box::new(TBufferedReadTransport::new(read)),
            Box::new(TBufferedWriteTransport::new(write)),
        ),
    };
    Ok(match wire.protocol {
        Protocol::Binary { strict } => (
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
    serde_json::from_slice(&crate::answer::json(g)).expect("a GeoInfo is valid JSON")
}
