//! Peers that hold resources: one that never reads its replies, one that
//! idles forever, and a request still running when shutdown times out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use xm_ip_service::thrift::calls;
use xm_ip_service::thrift::codec::{Call, Wire};
use xm_ip_service::thrift::TIPServiceSyncClient;

use crate::helpers::{black_hole_database, summary, Options, TestApp};

/// Reads until the server closes the connection (EOF or reset), giving up
/// after `within`; returns the bytes read and whether it was closed.
fn read_until_closed(mut socket: &TcpStream, within: Duration) -> (usize, bool) {
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + within;
    let (mut total, mut buf) = (0, vec![0u8; 1 << 16]);
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (total, true), // reset
        }
    }
    (total, false)
}

/// A connection on which a thread writes `requests` requests of
/// `addresses` addresses each, reading nothing; the thread gives up when
/// a write blocks for 5 s.
fn pipeline(app: &TestApp, addresses: usize, requests: usize) -> (TcpStream, std::thread::JoinHandle<()>) {
    let ips = vec!["183.62.57.1".to_owned(); addresses];
    let request = calls::encode_call(Wire::FRAMED_BINARY, 1, &Call::QueryGeoInfoByIp { ips: ips.into() });
    let socket = TcpStream::connect(app.addr).unwrap();
    let writer = socket.try_clone().unwrap();
    let pipelining = std::thread::spawn(move || {
        writer.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..requests {
            if (&writer).write_all(&request).is_err() {
                break;
            }
        }
    });
    (socket, pipelining)
}

/// Pipelines 20 requests of 10,000 addresses (about 30 MB of replies, far
/// more than the sockets' buffers hold) without reading for 1.5 s, checks
/// that everyone else is answered meanwhile, then reads until the server
/// closes: the bytes read, and whether it closed.
async fn pipeline_without_reading(app: &TestApp) -> (usize, bool) {
    let (socket, pipelining) = pipeline(app, 10_000, 20);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(summary(&app.by_ip(&["183.62.57.1"]).await[0]).1, "cn");
    let read_and_closed = tokio::task::spawn_blocking(move || read_until_closed(&socket, Duration::from_secs(10)))
        .await
        .unwrap();
    pipelining.join().unwrap();
    read_and_closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_replies_is_closed_after_the_write_timeout() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.write_timeout = Duration::from_millis(300);
    }))
    .await;
    let (read, closed) = pipeline_without_reading(&app).await;
    assert!(closed, "the server never closed a peer that does not read");
    assert!(
        read < 20 * 1_000_000,
        "it stopped before sending every reply ({read} bytes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stopped_reading_gives_way_to_a_reader_waiting_for_the_reply_budget() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.write_timeout = Duration::from_secs(60);
        // Room for one stalled 1,000-address reply, not for it and a second.
        s.thrift.max_reply_bytes = 600 << 10;
    }))
    .await;
    let (socket, pipelining) = pipeline(&app, 1_000, 200);
    // Long enough for the peer's socket to fill and its reply to stall.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let answers = app.by_ip(&["183.62.57.1"; 1_000]).await;
    assert_eq!(answers.len(), 1_000);
    assert!(answers.iter().all(|g| g.error_no == Some(0)));
    let (_, closed) = tokio::task::spawn_blocking(move || read_until_closed(&socket, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(closed, "the stalled peer kept its budget while a reader waited");
    pipelining.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_call_that_gets_no_reply_room_within_the_write_timeout_is_refused_with_an_exception() {
    // A database that never answers keeps the first call, and the reply
    // room it holds, for the whole 4 s database timeout: it writes nothing
    // meanwhile, so it has nothing to give way for.
    let (url, _held) = black_hole_database().await;
    let app = TestApp::spawn_with(Options::database(url, Duration::from_secs(4)).with(|s| {
        s.thrift.write_timeout = Duration::from_millis(500);
        // Room for one 1,000-address reply, not for two.
        s.thrift.max_reply_bytes = 600 << 10;
    }))
    .await;
    let (_first, _) = pipeline(&app, 1_000, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let refused = app
        .with_client(Wire::FRAMED_BINARY, |client| {
            client.query_geo_info_by_i_p(vec!["9.9.9.9".to_owned(); 1_000])
        })
        .await;
    match refused {
        Err(thrift::Error::Application(e)) => {
            assert_eq!(e.kind, thrift::ApplicationErrorKind::InternalError);
            assert!(
                e.message.contains("no room for this reply within 500ms"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an exception, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.idle_timeout = Duration::from_millis(400);
    }))
    .await;
    let idle = TcpStream::connect(app.addr).unwrap();
    let busy = app
        .with_client(Wire::FRAMED_BINARY, |client| {
            let mut answered = 0;
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(150));
                if client.query_geo_info_by_i_p(vec!["183.62.57.1".into()]).is_ok() {
                    answered += 1;
                }
            }
            answered
        })
        .await;
    assert_eq!(busy, 8, "calls 150 ms apart keep a connection open");
    let (_, closed) = tokio::task::spawn_blocking(move || read_until_closed(&idle, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(closed, "the idle connection stayed open");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_aborts_a_request_still_running_when_its_timeout_expires() {
    // A database that accepts connections and never answers keeps the
    // request running for the whole 6 s database timeout.
    let (url, held) = black_hole_database().await;
    let app = TestApp::spawn_with(Options::database(url, Duration::from_secs(6)).with(|s| {
        s.requests.shutdown_timeout = Duration::from_millis(300);
    }))
    .await;
    let socket = TcpStream::connect(app.addr).unwrap();
    let request = calls::encode_call(
        Wire::FRAMED_BINARY,
        1,
        &Call::QueryGeoInfoByIp {
            ips: vec!["9.9.9.9".to_owned()].into(),
        },
    );
    (&socket).write_all(&request).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown ends soon after its timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let (read, closed) = tokio::task::spawn_blocking(move || read_until_closed(&socket, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(
        closed && read == 0,
        "the aborted request's connection closes without a reply"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_a_running_request_send_its_whole_reply_then_closes_at_the_boundary() {
    // The request runs for the 1 s database timeout, well inside the
    // shutdown timeout, and is answered with error 3.
    let (url, held) = black_hole_database().await;
    let app = TestApp::spawn_with(Options::database(url, Duration::from_secs(1)).with(|s| {
        s.requests.shutdown_timeout = Duration::from_secs(10);
    }))
    .await;
    let socket = TcpStream::connect(app.addr).unwrap();
    let call = Call::QueryGeoInfoByIp {
        ips: vec!["9.9.9.9".to_owned()].into(),
    };
    (&socket)
        .write_all(&calls::encode_call(Wire::FRAMED_BINARY, 1, &call))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reader = std::thread::spawn(move || {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        let closed = (&socket).read_to_end(&mut reply).is_ok();
        (reply, closed)
    });
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown ends once the request is answered");
    let (reply, closed) = reader.join().unwrap();
    assert!(closed, "the connection closes after the reply");
    let frame = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    assert_eq!(reply.len(), 4 + frame, "exactly one whole reply, then the close");
    let summary = calls::scan_reply(&reply[4..], Wire::FRAMED_BINARY.protocol).unwrap();
    assert_eq!(summary.by_error[3], 1, "answered: the database timed out");
    held.abort();
}

#[tokio::test]
async fn an_input_longer_than_any_address_is_echoed_only_in_part() {
    let app = TestApp::spawn().await;
    let long = format!("{}中", "1".repeat(63)) + &"x".repeat(2_000);
    let answers = app.by_ip(&[&long, "183.62.57.1"]).await;
    assert_eq!(answers[0].error_no, Some(1));
    assert_eq!(
        answers[0].ip.as_deref(),
        Some("1".repeat(63).as_str()),
        "cut at a character boundary"
    );
    assert_eq!(
        answers[0].error_msg.as_deref(),
        Some("invalid IP: address text is 2066 bytes, longer than any IP address (ip echoes its first 64)")
    );
    assert_eq!(answers[1].ip.as_deref(), Some("183.62.57.1"));
}

/// A framed `queryGeoInfoByIP` of `strings` inputs of 1,700 bytes each.
fn large_request(strings: usize) -> Vec<u8> {
    let ips = vec!["x".repeat(1_700); strings];
    calls::encode_call(Wire::FRAMED_BINARY, 1, &Call::QueryGeoInfoByIp { ips: ips.into() })
}

/// Connections that each send the first 90% of `request` and then hold,
/// sending nothing more; the server sees them as slow senders.
fn slow_senders(app: &TestApp, request: &[u8], count: usize) -> Vec<TcpStream> {
    let part = request[..request.len() * 9 / 10].to_vec();
    (0..count)
        .map(|_| {
            let socket = TcpStream::connect(app.addr).unwrap();
            let writer = socket.try_clone().unwrap();
            let part = part.clone();
            std::thread::spawn(move || {
                // A sender the server does not read from yet blocks here
                // until the server reads or closes it.
                writer.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = (&writer).write_all(&part);
            });
            socket
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_call_is_answered_at_once_while_slow_senders_hold_the_whole_request_budget() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.max_buffered_bytes = 1 << 20;
        s.thrift.read_timeout = Duration::from_secs(30);
    }))
    .await;
    // Each announces about 500 KiB: two could not hold the budget at once,
    // so one holds it and five wait.
    let _senders = slow_senders(&app, &large_request(300), 6);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let answer = app.by_ip(&["183.62.57.1"]).await;
        took.push(started.elapsed());
        assert_eq!(summary(&answer[0]).1, "cn");
    }
    took.sort();
    assert!(took[2] < Duration::from_millis(100), "small calls waited: {took:?}");
    assert!(took[4] < Duration::from_secs(1), "a small call waited: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sender_gives_way_to_a_waiting_call_before_larger_waiters_are_served() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.max_buffered_bytes = 1 << 20;
        s.thrift.read_timeout = Duration::from_secs(30);
    }))
    .await;
    // About 999 KiB each: the first holds nearly the whole budget, the
    // other three wait for nearly all of it.
    let request = large_request(600);
    let mut senders = slow_senders(&app, &request, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    senders.extend(slow_senders(&app, &request, 3));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // About 30 KB, more than the read-ahead and than the budget left.
    let started = Instant::now();
    let answers = app.by_ip(&["183.62.57.1"; 2_000]).await;
    let took = started.elapsed();
    assert_eq!(answers.len(), 2_000);
    assert!(answers.iter().all(|g| g.error_no == Some(0)));
    // The holder gives way after a second of silence; served in arrival
    // order, each of the three larger waiters would hold it a second more.
    assert!(took < Duration::from_secs(3), "the call waited {took:?}");
    let first = senders.swap_remove(0);
    let (_, closed) = tokio::task::spawn_blocking(move || read_until_closed(&first, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(closed, "the stalled sender kept its budget while a call waited");
}
