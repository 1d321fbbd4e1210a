//! Wire behaviour: every transport/protocol combination, non-strict binary,
//! multiplexing, unknown methods, malformed and hostile input.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier, TMessageIdentifier,
    TMessageType, TMultiplexedOutputProtocol, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel};
use thrift::{ApplicationErrorKind, Error};
use xm_ip_service::thrift::{GeoInfo, IPServiceSyncClient, TIPServiceSyncClient};
use xm_ip_service::tools::client::{self, Framing, Protocol, Wire};

use crate::helpers::{strings, summary, Options, TestApp};

const COMBINATIONS: [Wire; 4] = [
    Wire::new(Framing::Framed, Protocol::BINARY),
    Wire::new(Framing::Framed, Protocol::Compact),
    Wire::new(Framing::Buffered, Protocol::BINARY),
    Wire::new(Framing::Buffered, Protocol::Compact),
];

const SAMPLE: [&str; 5] = ["183.62.57.1", "8.8.8.8", "240e:1::1", "not-an-ip", "10.0.0.1"];

#[tokio::test]
async fn every_transport_and_protocol_gets_the_same_answers() {
    let app = TestApp::spawn().await;
    let reference = app.by_ip(&SAMPLE).await;
    assert_eq!(summary(&reference[0]).1, "cn");
    for wire in COMBINATIONS {
        let answers = app
            .with_client(wire, |c| {
                // Several calls on one connection, answered in order.
                let first = c.query_geo_info_by_i_p(strings(&SAMPLE)).unwrap();
                let second = c.query_geo_info_by_i_p(strings(&SAMPLE)).unwrap();
                assert_eq!(first, second);
                first
            })
            .await;
        assert_eq!(answers, reference, "{wire:?}");
    }
}

/// A raw connection on the crate's transports, for messages the generated
/// client would never send.
struct Raw {
    input: Box<dyn TInputProtocol + Send>,
    output: Box<dyn TOutputProtocol + Send>,
}

impl Raw {
    fn connect(app: &TestApp, wire: Wire) -> Raw {
        Raw::connect_to(app.addr, wire)
    }

    fn connect_to(addr: std::net::SocketAddr, wire: Wire) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (input, output) = client::protocols(stream, wire).unwrap();
        Raw { input, output }
    }

    /// Sends `name(1: list<elem_type> ips)` with the given element type.
    fn call(&mut self, name: &str, seq: i32, ips: &[&str], element: TType) {
        let o = &mut self.output;
        o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))
            .unwrap();
        o.write_struct_begin(&TStructIdentifier::new("args")).unwrap();
        o.write_field_begin(&TFieldIdentifier::new("ipList", TType::List, 1))
            .unwrap();
        o.write_list_begin(&TListIdentifier::new(element, ips.len() as i32))
            .unwrap();
        for ip in ips {
            match element {
                TType::String => o.write_string(ip).unwrap(),
                _ => o.write_i32(7).unwrap(),
            }
        }
        o.write_list_end().unwrap();
        o.write_field_end().unwrap();
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        o.write_message_end().unwrap();
        o.flush().unwrap();
    }

    /// Reads one reply: its header, and the answers or the exception.
    fn reply(&mut self) -> (TMessageIdentifier, Result<Vec<GeoInfo>, thrift::ApplicationError>) {
        let i = &mut self.input;
        let header = i.read_message_begin().unwrap();
        if header.message_type == TMessageType::Exception {
            let error = Error::read_application_error_from_in_protocol(i.as_mut()).unwrap();
            i.read_message_end().unwrap();
            return (header, Err(error));
        }
        i.read_struct_begin().unwrap();
        let mut answers = Vec::new();
        loop {
            let field = i.read_field_begin().unwrap();
            match (field.field_type, field.id) {
                (TType::Stop, _) => break,
                (TType::List, Some(0)) => {
                    let list = i.read_list_begin().unwrap();
                    for _ in 0..list.size {
                        answers.push(GeoInfo::read_from_in_protocol(i.as_mut()).unwrap());
                    }
                    i.read_list_end().unwrap();
                }
                (other, _) => i.skip(other).unwrap(),
            }
            i.read_field_end().unwrap();
        }
        i.read_struct_end().unwrap();
        i.read_message_end().unwrap();
        (header, Ok(answers))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn non_strict_binary_is_understood_framed_and_unframed() {
    let app = TestApp::spawn().await;
    let reference = app.by_ip(&SAMPLE).await;
    for framing in [Framing::Framed, Framing::Buffered] {
        let mut raw = Raw::connect(&app, Wire::new(framing, Protocol::Binary { strict: false }));
        let (header, answers) = blocking(move || {
            raw.call("queryGeoInfoByIP", 41, &SAMPLE, TType::String);
            raw.reply()
        })
        .await;
        assert_eq!((header.name.as_str(), header.sequence_number), ("queryGeoInfoByIP", 41));
        assert_eq!(answers.unwrap(), reference, "{framing:?}");
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = TestApp::spawn().await;
    let mut raw = Raw::connect(&app, Wire::new(Framing::Buffered, Protocol::Compact));
    let replies = blocking(move || {
        for seq in 1..=3 {
            raw.call("queryGeoInfoByIP", seq, &SAMPLE[..seq as usize], TType::String);
        }
        (0..3).map(|_| raw.reply()).collect::<Vec<_>>()
    })
    .await;
    for (n, (header, answers)) in replies.into_iter().enumerate() {
        assert_eq!(header.sequence_number, n as i32 + 1);
        assert_eq!(answers.unwrap().len(), n + 1);
    }
}

#[tokio::test]
async fn the_multiplexing_prefix_is_accepted_and_another_service_is_unknown() {
    let app = TestApp::spawn().await;
    let reference = app.by_ip(&SAMPLE).await;
    let addr = app.addr;
    let (ours, theirs) = blocking(move || {
        let connect = |service: &str| {
            let stream = TcpStream::connect(addr).unwrap();
            let (read, write) = TTcpChannel::with_stream(stream).split().unwrap();
            IPServiceSyncClient::new(
                TBinaryInputProtocol::new(TFramedReadTransport::new(read), true),
                TMultiplexedOutputProtocol::new(
                    service,
                    TBinaryOutputProtocol::new(TFramedWriteTransport::new(write), true),
                ),
            )
        };
        (
            connect("IPService").query_geo_info_by_i_p(strings(&SAMPLE)),
            connect("OtherService").query_geo_info_by_i_p(strings(&SAMPLE)),
        )
    })
    .await;
    assert_eq!(ours.unwrap(), reference);
    match theirs {
        Err(Error::Application(e)) => {
            assert_eq!(e.kind, ApplicationErrorKind::UnknownMethod);
            assert!(e.message.contains("OtherService:queryGeoInfoByIP"), "{}", e.message);
        }
        other => panic!("expected UNKNOWN_METHOD, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_method_gets_unknown_method_and_the_connection_survives() {
    let app = TestApp::spawn().await;
    for wire in COMBINATIONS {
        let mut raw = Raw::connect(&app, wire);
        let (probe, after) = blocking(move || {
            raw.call("__can__finagle__trace__v3__", 1, &["x"], TType::String);
            let probe = raw.reply();
            raw.call("queryGeoInfoByIP", 2, &["183.62.57.1"], TType::String);
            (probe, raw.reply())
        })
        .await;
        let (header, error) = probe;
        assert_eq!(header.name, "__can__finagle__trace__v3__");
        assert_eq!(header.sequence_number, 1);
        assert_eq!(error.unwrap_err().kind, ApplicationErrorKind::UnknownMethod);
        assert_eq!(after.0.sequence_number, 2);
        assert_eq!(after.1.unwrap()[0].error_no, Some(0), "{wire:?}");
    }
}

#[tokio::test]
async fn arguments_that_do_not_decode_get_protocol_error_and_framed_connections_survive() {
    let app = TestApp::spawn().await;
    for protocol in [Protocol::BINARY, Protocol::Compact] {
        let mut raw = Raw::connect(&app, Wire::new(Framing::Framed, protocol));
        let (bad, after) = blocking(move || {
            raw.call("queryGeoInfoByIP", 5, &["1", "2"], TType::I32);
            let bad = raw.reply();
            raw.call("queryGeoInfoByIP", 6, &["183.62.57.1"], TType::String);
            (bad, raw.reply())
        })
        .await;
        let error = bad.1.unwrap_err();
        assert_eq!(error.kind, ApplicationErrorKind::ProtocolError);
        assert!(error.message.contains("ipList holds I32"), "{}", error.message);
        assert_eq!(after.1.unwrap()[0].error_no, Some(0));
    }
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_naming_both_numbers() {
    let app = TestApp::spawn().await;
    let ips: Vec<String> = (0..10_001)
        .map(|i| format!("10.0.{}.{}", i / 256 % 256, i % 256))
        .collect();
    let (over, after) = app
        .with_client(Wire::new(Framing::Framed, Protocol::Compact), move |c| {
            let over = c.query_geo_info_by_i_p(ips);
            (over, c.query_geo_info_by_i_p(strings(&["183.62.57.1"])))
        })
        .await;
    match over {
        Err(Error::Application(e)) => {
            assert!(
                e.message.contains("10001") && e.message.contains("10000"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an application exception, got {other:?}"),
    }
    assert_eq!(after.unwrap()[0].error_no, Some(0), "the connection stays open");
}

/// Writes `bytes` on a fresh connection and reports whether the server
/// closed it (EOF or reset) rather than answering or waiting.
async fn server_closes_after(app: &TestApp, bytes: Vec<u8>) -> bool {
    let addr = app.addr;
    blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may close before all is written; that is the point.
        let _ = stream.write_all(&bytes);
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    })
    .await
}

#[tokio::test]
async fn garbage_and_http_are_dropped_and_the_server_carries_on() {
    let app = TestApp::spawn().await;
    assert!(server_closes_after(&app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await);
    assert!(server_closes_after(&app, vec![0xde, 0xad, 0xbe, 0xef, 0x17, 0x03, 0x03, 0x00, 0x01]).await);
    assert!(server_closes_after(&app, vec![0x80, 0x07, 0, 1, 0, 0, 0, 0]).await);
    assert_eq!(app.by_ip(&["183.62.57.1"]).await[0].error_no, Some(0));
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.max_frame = 4096;
    }))
    .await;
    // Announce 4097 bytes of a strict binary call: refused before reading it.
    let mut frame = 4097u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x80, 1, 0, 1]);
    assert!(server_closes_after(&app, frame).await);
    // The default limit refuses an announced 1.2 GB frame the same way.
    assert!(server_closes_after(&app, vec![0x47, 0x45, 0x54, 0x20, 0x80, 1, 0, 1]).await);
    // An unframed message whose every length fits but which keeps growing
    // past the limit (4000 strings of 11 bytes) is cut off too.
    let mut endless = vec![0x80, 1, 0, 1, 0, 0, 0, 16];
    endless.extend_from_slice(b"queryGeoInfoByIP");
    endless.extend_from_slice(&[0, 0, 0, 1, 15, 0, 1, 11, 0, 0, 0x0f, 0xa0]);
    for _ in 0..4000 {
        endless.extend_from_slice(&[0, 0, 0, 7]);
        endless.extend_from_slice(b"1.2.3.4");
    }
    assert!(server_closes_after(&app, endless).await);
    // The same connection limits leave a request under the limit alone.
    let ips: Vec<String> = (0..200).map(|i| format!("183.62.57.{i}")).collect();
    let answers = app
        .with_client(Wire::FRAMED_BINARY, move |c| c.query_geo_info_by_i_p(ips))
        .await
        .unwrap();
    assert_eq!(answers.len(), 200);
}

#[tokio::test]
async fn a_message_that_stalls_half_way_is_dropped_but_idle_connections_stay() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    let (stalled, idle_then_used) = blocking(move || {
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stalled.write_all(&[0, 0, 0, 40, 0x80, 1, 0, 1, 0]).unwrap();
        let mut buf = [0u8; 8];
        let stalled = match stalled.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };

        let mut idle = Raw::connect_to(addr, Wire::FRAMED_BINARY);
        std::thread::sleep(Duration::from_millis(1200));
        idle.call("queryGeoInfoByIP", 1, &["183.62.57.1"], TType::String);
        (stalled, idle.reply().1.unwrap())
    })
    .await;
    assert!(stalled, "the stalled connection is closed");
    assert_eq!(idle_then_used[0].error_no, Some(0), "an idle connection is not");
}

#[tokio::test]
async fn a_message_dripping_in_slower_than_the_read_timeout_is_dropped() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    let closed_after = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let started = std::time::Instant::now();
        // A frame of 400 bytes, one byte every 100 ms: each read is prompt,
        // the whole message is not (the test server allows 500 ms).
        stream.write_all(&[0, 0, 1, 144, 0x80, 1, 0, 1]).unwrap();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(&[0]).is_err() {
                break;
            }
        }
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        let closed = match stream.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        (closed, started.elapsed())
    })
    .await;
    assert!(closed_after.0, "the dripping connection is closed");
    assert!(
        closed_after.1 < Duration::from_secs(3),
        "closed after {:?}, not when the drip ended",
        closed_after.1
    );
}
