//! The database misbehaving: gone, hung, and back again; and shutdown.

use std::time::{Duration, Instant};

use crate::helpers::{black_hole_database, eventually, expect, summary, Options, TestApp};

#[tokio::test]
async fn a_database_that_goes_away_degrades_to_maxmind_or_error_3_and_recovers() {
    let app = TestApp::spawn().await;
    assert_eq!(summary(&app.by_ip(&["183.62.57.1"]).await[0]).1, "cn");

    app.db().cut_off().await;
    let answers = app.by_ip(&["183.62.57.1", "9.9.9.9", "240e:1::1", "bad ip"]).await;
    assert_eq!(summary(&answers[0]), expect(0, "maxmind", "中国", "广东", "广州"));
    assert_eq!(answers[1].error_no, Some(3), "{:?}", answers[1].error_msg);
    // The short reason only: no SQL, host or path reaches a client.
    assert_eq!(
        answers[1].error_msg.as_deref(),
        Some("backend unavailable: database unavailable")
    );
    assert_eq!(summary(&answers[2]), expect(0, "maxmind", "中国", "", ""));
    assert_eq!(answers[3].error_no, Some(1));

    app.db().restore().await;
    eventually(Duration::from_secs(15), "no recovery", || async {
        let g = app.by_ip(&["183.62.57.1"]).await.remove(0);
        if summary(&g).1 == "cn" {
            Ok(())
        } else {
            Err(format!("{g:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_hung_database_times_out_instead_of_hanging_the_request() {
    // Accepts connections and never says a word, like a partitioned host.
    let (url, held) = black_hole_database().await;
    let app = TestApp::spawn_with(Options::database(url, Duration::from_millis(300))).await;
    let started = Instant::now();
    let answers = app.by_ip(&["9.9.9.9", "8.8.8.8"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(answers[0].error_no, Some(3));
    assert_eq!(
        answers[0].error_msg.as_deref(),
        Some("backend unavailable: database timed out")
    );
    assert_eq!(summary(&answers[1]).1, "maxmind");
    held.abort();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    let idle = std::net::TcpStream::connect(addr).unwrap();
    assert_eq!(app.by_ip(&["183.62.57.1"]).await[0].error_no, Some(0));
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown finishes promptly");
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut &idle, &mut buf).unwrap(),
        0,
        "idle connection closed"
    );
}
