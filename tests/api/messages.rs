//! Messages that are framed well enough to read but wrong inside: lists
//! that lie about their size, arguments that cannot be walked, oneway calls
//! and message types a server never takes. Written byte by byte, since no
//! real client sends them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use xm_ip_service::thrift::calls::{self, ReplySummary};
use xm_ip_service::thrift::codec::{Call, Framing, MessageCheck, Protocol, Wire};

use crate::helpers::{Options, TestApp};

/// A connection that writes raw bytes and reads whole replies.
struct Peer {
    socket: TcpStream,
    wire: Wire,
    buf: BytesMut,
    check: MessageCheck,
}

impl Peer {
    fn connect(app: &TestApp, wire: Wire) -> Peer {
        let socket = TcpStream::connect(app.addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Peer {
            socket,
            wire,
            buf: BytesMut::new(),
            check: MessageCheck::new(wire, 16_384_000),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).unwrap();
    }

    /// The next reply, or `None` if the server closed the connection first.
    fn reply(&mut self) -> Option<ReplySummary> {
        loop {
            if let Some(found) = self.check.check(&self.buf).unwrap() {
                let summary = calls::scan_reply(&self.buf[found.body..found.end], self.wire.protocol).unwrap();
                self.buf.advance(found.end);
                return Some(summary);
            }
            let mut chunk = [0u8; 65536];
            match self.socket.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(err) => panic!("no reply and no close within 5 s: {err}"),
            }
        }
    }

    fn exception(&mut self) -> String {
        let reply = self.reply().expect("a reply before the connection closes");
        match reply.exception {
            Some(text) => text,
            None => panic!("expected an exception, got answers {:?}", reply.by_error),
        }
    }

    /// Answers by error number, for a reply that is not an exception.
    fn answers(&mut self) -> [u64; 5] {
        let reply = self.reply().expect("a reply before the connection closes");
        assert_eq!(reply.exception, None);
        reply.by_error
    }
}

fn call(wire: Wire, ips: &[&str]) -> Vec<u8> {
    let ips = ips.iter().map(|ip| ip.to_string()).collect();
    calls::encode_call(wire, 1, &Call::QueryGeoInfoByIp { ips })
}

/// Where the message header ends, the arguments' first field header
/// starting there: `queryGeoInfoByIP` with sequence number 1.
fn args_at(wire: Wire) -> usize {
    let frame = if wire.framing == Framing::Framed { 4 } else { 0 };
    frame
        + match wire.protocol {
            Protocol::Binary { .. } => 4 + 4 + 16 + 4,
            Protocol::Compact => 1 + 1 + 1 + 1 + 16,
        }
}

/// Where the message type is kept.
fn set_message_type(message: &mut [u8], wire: Wire, message_type: u8) {
    let frame = if wire.framing == Framing::Framed { 4 } else { 0 };
    match wire.protocol {
        Protocol::Binary { .. } => message[frame + 3] = message_type,
        Protocol::Compact => message[frame + 1] = (message_type << 5) | 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_lists_that_lie_about_their_size_are_refused_and_the_connection_carries_on() {
    let app = TestApp::spawn().await;
    let wire = Wire::new(Framing::Framed, Protocol::Compact);
    let mut peer = Peer::connect(&app, wire);

    // A list header announcing 2^40 strings, in a 30-byte frame.
    let mut huge = call(wire, &[]);
    let at = args_at(wire) + 1; // after the field header
    huge.truncate(at);
    huge.extend_from_slice(&[0xf8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0]);
    let size = (huge.len() - 4) as u32;
    huge[..4].copy_from_slice(&size.to_be_bytes());
    peer.send(&huge);
    let refused = peer.exception();
    assert!(
        refused.contains(&format!(
            "list size 1099511627776 exceeds the {size}-byte message limit"
        )),
        "{refused}"
    );

    // Three million empty strings, one byte each: refused whole at the
    // batch limit, before a string is made.
    let mut tiny = call(wire, &[]);
    tiny.truncate(at);
    tiny.push(0xf8);
    let mut n: u32 = 3_000_000;
    while n >= 0x80 {
        tiny.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    tiny.push(n as u8);
    tiny.extend(std::iter::repeat_n(0u8, 3_000_000));
    tiny.push(0); // end of arguments
    let size = (tiny.len() - 4) as u32;
    tiny[..4].copy_from_slice(&size.to_be_bytes());
    peer.send(&tiny);
    assert_eq!(
        peer.exception(),
        "batch of 3000000 IPs exceeds the limit of 10000 per request"
    );

    peer.send(&call(wire, &["183.62.57.1"]));
    assert_eq!(peer.answers(), [1, 0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unframed_arguments_of_the_wrong_type_are_refused_and_the_stream_stays_in_step() {
    let app = TestApp::spawn().await;
    for protocol in [Protocol::BINARY, Protocol::Compact] {
        let wire = Wire::new(Framing::Buffered, protocol);
        let mut peer = Peer::connect(&app, wire);
        // ipList as a list<i32> of 1 and 2: valid Thrift, wrong arguments.
        let mut wrong = call(wire, &[]);
        let list = args_at(wire) + if protocol == Protocol::BINARY { 3 } else { 1 };
        wrong.truncate(list);
        if protocol == Protocol::BINARY {
            wrong.extend_from_slice(&[8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        } else {
            wrong.extend_from_slice(&[0x25, 2, 4]); // zigzag varints
        }
        wrong.push(0); // end of arguments
        peer.send(&wrong);
        let refused = peer.exception();
        assert!(refused.contains("ipList holds I32"), "{protocol:?}: {refused}");
        peer.send(&call(wire, &["183.62.57.1", "240e:1::1"]));
        assert_eq!(peer.answers(), [2, 0, 0, 0, 0], "{protocol:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unframed_arguments_that_cannot_be_walked_get_an_exception_then_the_connection_closes() {
    let app = TestApp::spawn().await;
    for (protocol, bad_type) in [(Protocol::BINARY, 99), (Protocol::Compact, 0x1e)] {
        let wire = Wire::new(Framing::Buffered, protocol);
        let mut peer = Peer::connect(&app, wire);
        let mut message = call(wire, &["183.62.57.1"]);
        message[args_at(wire)] = bad_type;
        peer.send(&message);
        let refused = peer.exception();
        assert!(refused.contains("unknown"), "{protocol:?}: {refused}");
        assert_eq!(
            peer.reply(),
            None,
            "{protocol:?}: the stream's next message cannot be found"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_get_no_reply_and_other_message_types_are_refused() {
    let app = TestApp::spawn().await;
    for framing in [Framing::Framed, Framing::Buffered] {
        for protocol in [Protocol::BINARY, Protocol::Compact] {
            let wire = Wire::new(framing, protocol);
            let mut peer = Peer::connect(&app, wire);
            let mut oneway = call(wire, &["183.62.57.1", "183.62.57.2", "183.62.57.3"]);
            set_message_type(&mut oneway, wire, 4);
            let mut reply = call(wire, &["183.62.57.1"]);
            set_message_type(&mut reply, wire, 2);
            peer.send(&[oneway, reply, call(wire, &["183.62.57.1", "240e:1::1"])].concat());
            // The oneway call's three answers never come back.
            assert_eq!(peer.exception(), "message type 2 is not a call", "{wire:?}");
            assert_eq!(peer.answers(), [2, 0, 0, 0, 0], "{wire:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_batch_limit_is_refused_from_its_first_bytes_and_the_rest_is_dropped() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.requests.max_batch = 100;
    }))
    .await;
    let ips: Vec<&str> = vec!["10.0.0.1"; 20_000];
    for wire in Wire::EACH {
        let frame = call(wire, &ips);
        let mut peer = Peer::connect(&app, wire);
        // Only the first kilobyte: the refusal must not wait for the rest.
        peer.send(&frame[..1024]);
        let refusal = peer.exception();
        assert!(refusal.contains("20000") && refusal.contains("100"), "{refusal}");
        for piece in frame[1024..].chunks(50_000) {
            peer.send(piece);
        }
        // The rest was read and dropped: the next call is in step.
        peer.send(&call(wire, &["183.62.57.1"]));
        assert_eq!(peer.answers(), [1, 0, 0, 0, 0], "{wire:?}");
    }
}
