//! The HTTP API over real TCP: the old endpoints and their status codes,
//! batches and limits, the same answers as Thrift, `/metrics` and the
//! health checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xm_ip_service::thrift::{GeoInfo, GeoRequest, TIPServiceSyncClient};
use xm_ip_service::tools::client::Wire;

use crate::helpers::{black_hole_database, eventually, strings, Options, TestApp, OVERLAPPING_CN_VERSION};

/// A status code and a body, from one request on its own connection.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with `body` as bytes, the way a plain client would,
/// and reads the whole answer.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    if let Some(body) = body {
        // A body over the limit may be refused before it is all sent.
        let _ = stream.write_all(body).await;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Answer {
        status,
        body: body.to_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, None).await
}

pub async fn post(addr: SocketAddr, body: &str) -> Answer {
    request(addr, "POST", "/api/ip_query", Some(body.as_bytes())).await
}

pub fn http(app: &TestApp) -> SocketAddr {
    app.http_addr.expect("the test server listens for HTTP")
}

#[tokio::test]
async fn the_old_endpoints_answer_with_the_old_status_codes() {
    let app = TestApp::spawn().await;
    let addr = http(&app);

    let found = get(addr, "/api/ip_query?ip=183.62.57.1").await;
    assert_eq!(found.status, 200, "{}", found.body);
    let g = found.json();
    assert_eq!(
        (
            &g["ip"],
            &g["geoip_province_name"],
            &g["geoip_city_name"],
            &g["geoip_carrier"]
        ),
        (&json!("183.62.57.1"), &json!("广东"), &json!("广州"), &json!("电信"))
    );
    assert_eq!((&g["error_no"], &g["geoip_source"]), (&json!(0), &json!("cn")));

    // The old POST body, unchanged.
    let posted = post(addr, r#"{"ip": "183.62.57.1"}"#).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.json(), g);

    let english = get(addr, "/api/ip_query?ip=183.62.57.1&lang=en").await;
    assert_eq!(english.json()["geoip_city_name"], "Guangzhou");

    let missing = get(addr, "/api/ip_query").await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["error"].as_str().unwrap().contains("\"ip\""),
        "{}",
        missing.body
    );

    let invalid = get(addr, "/api/ip_query?ip=not-an-ip").await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["error_no"], 1);
    assert!(invalid.json()["error_msg"].as_str().unwrap().contains("not-an-ip"));

    let bad_lang = get(addr, "/api/ip_query?ip=8.8.8.8&lang=xx").await;
    assert_eq!((bad_lang.status, bad_lang.json()["error_no"].clone()), (400, json!(4)));

    // No table row and nothing in MaxMind.
    let unknown = get(addr, "/api/ip_query?ip=100.64.0.1").await;
    assert_eq!(unknown.status, 501, "{}", unknown.body);
    assert_eq!(unknown.json()["error_no"], 2);

    // Only the database knows 9.9.9.9; with it gone the backend failed.
    app.db().cut_off().await;
    let failed = get(addr, "/api/ip_query?ip=9.9.9.9").await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(failed.json()["error_no"], 3);
    app.db().restore().await;

    let nowhere = get(addr, "/nowhere").await;
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.json()["error"].is_string());
}

#[tokio::test]
async fn batches_answer_in_order_within_the_limits() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.requests.max_batch = 3;
    }))
    .await;
    let addr = http(&app);

    let batch = post(addr, r#"{"ips": ["8.8.8.8", "bad", "183.62.57.1"], "lang": "en"}"#).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let answers = batch.json();
    let summary: Vec<(Value, Value, Value)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["ip"].clone(), g["error_no"].clone(), g["geoip_country_name"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("8.8.8.8"), json!(0), json!("United States")),
            (json!("bad"), json!(1), json!("")),
            (json!("183.62.57.1"), json!(0), json!("China")),
        ]
    );
    // An error item carries none of the optional answer fields.
    assert!(answers[1].get("geoip_source").is_none());

    let over = post(addr, r#"{"ips": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]}"#).await;
    assert_eq!(over.status, 413);
    let message = over.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains('4') && message.contains('3'), "{message}");

    let empty = post(addr, r#"{"ips": []}"#).await;
    assert_eq!((empty.status, empty.json()), (200, json!([])));

    let not_json = post(addr, "ip=1.2.3.4").await;
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"].as_str().unwrap().contains("JSON"));

    let wrong_type = post(addr, r#"{"ips": [1, 2]}"#).await;
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.body);

    let both = post(addr, r#"{"ip": "1.1.1.1", "ips": ["1.1.1.1"]}"#).await;
    assert_eq!(both.status, 400);

    let neither = post(addr, r#"{"lang": "en"}"#).await;
    assert_eq!(neither.status, 400);

    // Over the 1 MiB body limit.
    let huge = format!(r#"{{"ips": ["{}"]}}"#, "1".repeat(2 << 20));
    let oversized = post(addr, &huge).await;
    assert_eq!(oversized.status, 413, "{}", oversized.body);
    assert!(oversized.json()["error"].is_string());
}

/// A Thrift `GeoInfo` as the HTTP API spells it.
fn as_json(g: &GeoInfo) -> Value {
    let mut object = json!({
        "ip": g.ip,
        "geoip_country_code": g.geoip_country_code,
        "geoip_country_name": g.geoip_country_name,
        "geoip_city_code": g.geoip_city_code,
        "geoip_city_name": g.geoip_city_name,
        "error_no": g.error_no,
        "geoip_province_code": g.geoip_province_code,
        "geoip_province_name": g.geoip_province_name,
        "geoip_carrier": g.geoip_carrier,
        "error_msg": g.error_msg,
        "geoip_start_ip": g.geoip_start_ip,
        "geoip_end_ip": g.geoip_end_ip,
    });
    let optional = [
        ("geoip_district_name", &g.geoip_district_name),
        ("geoip_start_ip_str", &g.geoip_start_ip_str),
        ("geoip_end_ip_str", &g.geoip_end_ip_str),
        ("geoip_source", &g.geoip_source),
        ("geoip_as_org", &g.geoip_as_org),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            object[name] = json!(value);
        }
    }
    if let Some(asn) = g.geoip_asn {
        object["geoip_asn"] = json!(asn);
    }
    object
}

#[tokio::test]
async fn an_optional_field_without_a_value_is_left_out_of_the_json() {
    let app = TestApp::spawn().await;
    let china = get(http(&app), "/api/ip_query?ip=183.62.57.1").await.json();
    assert_eq!(china["geoip_district_name"], "天河区");
    let abroad = get(http(&app), "/api/ip_query?ip=8.8.8.8").await.json();
    assert_eq!(abroad["geoip_source"], "maxmind");
    assert!(abroad.get("geoip_district_name").is_none(), "{abroad}");
    // Fields 1-12 stay, empty: old clients require them.
    assert_eq!(abroad["geoip_carrier"], "");
}

#[tokio::test]
async fn http_and_thrift_give_the_same_answers_on_the_fixtures() {
    let app = TestApp::spawn().await;
    let ips = [
        "183.62.57.1",
        "8.8.8.8",
        "9.9.9.9",
        "10.0.0.1",
        "1.1.1.1",
        "5.5.5.5",
        "203.0.113.1",
        "0.0.0.1",
        "255.255.255.255",
        "240e:1::1",
        "2001:4860::8888",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::1",
        "",
        "1.2.3",
        "example.com",
    ];
    for lang in ["zh-CN", "en", "de", "ja", "xx"] {
        let request = GeoRequest::new(strings(&ips), lang.to_owned());
        let thrift = app
            .with_client(Wire::FRAMED_BINARY, move |c| c.query_geo_info(request))
            .await
            .expect("queryGeoInfo");
        let body = json!({"ips": ips, "lang": lang}).to_string();
        let over_http = post(http(&app), &body).await;
        assert_eq!(over_http.status, 200, "{}", over_http.body);
        let expected: Vec<Value> = thrift.iter().map(as_json).collect();
        assert_eq!(over_http.json(), Value::Array(expected), "lang {lang}");
    }
    // And one at a time, without a lang, as queryGeoInfoByIP answers.
    let thrift = app.by_ip(&ips).await;
    for (ip, g) in ips.iter().zip(&thrift) {
        let one = post(http(&app), &json!({ "ip": ip }).to_string()).await;
        assert_eq!(one.json(), as_json(g), "{ip}");
    }
}

/// The samples of a text exposition, by series (`name{labels}`).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let bare = name.split('{').next().unwrap();
        assert!(
            bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        series.insert(name.to_owned(), value);
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    series
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let answer = get(http(app), "/metrics").await;
    assert_eq!(answer.status, 200);
    parse_metrics(&answer.body)
}

#[tokio::test]
async fn metrics_parse_and_count_known_calls() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.requests.max_batch = 5;
    }))
    .await;
    // Two Thrift calls on two connections: 3 table answers, 1 MaxMind, 2 invalid.
    app.by_ip(&["183.62.57.1", "240e:1::1", "bad"]).await;
    app.by_ip(&["183.62.57.1", "1.1.1.1", "1.2.3"]).await;
    // One HTTP answer, one not found, one batch over the limit.
    get(http(&app), "/api/ip_query?ip=183.62.57.1").await;
    get(http(&app), "/api/ip_query?ip=100.64.0.1").await;
    post(
        http(&app),
        r#"{"ips": ["1.1.1.1", "1.1.1.1", "1.1.1.1", "1.1.1.1", "1.1.1.1", "1.1.1.1"]}"#,
    )
    .await;

    let m = scrape(&app).await;
    let at = |series: &str| {
        m.get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in {m:#?}"))
    };
    assert_eq!(
        at(r#"xm_ip_requests_total{api="thrift",method="queryGeoInfoByIP",outcome="ok"}"#),
        2.0
    );
    assert_eq!(at(r#"xm_ip_answers_total{api="thrift",error_no="0"}"#), 4.0);
    assert_eq!(at(r#"xm_ip_answers_total{api="thrift",error_no="1"}"#), 2.0);
    assert_eq!(
        at(r#"xm_ip_requests_total{api="http",method="ip_query",outcome="200"}"#),
        1.0
    );
    assert_eq!(
        at(r#"xm_ip_requests_total{api="http",method="ip_query",outcome="501"}"#),
        1.0
    );
    assert_eq!(
        at(r#"xm_ip_requests_total{api="http",method="ip_query_batch",outcome="413"}"#),
        1.0
    );
    assert_eq!(at(r#"xm_ip_answers_total{api="http",error_no="2"}"#), 1.0);
    assert_eq!(at(r#"xm_ip_rejected_total{api="http",reason="batch_over_limit"}"#), 1.0);
    // 183.62.57.1 three times from cn, 240e:1::1 from v6, 1.1.1.1 from MaxMind.
    assert_eq!(at(r#"xm_ip_lookups_total{source="cn"}"#), 3.0);
    assert_eq!(at(r#"xm_ip_lookups_total{source="v6"}"#), 1.0);
    assert_eq!(at(r#"xm_ip_lookups_total{source="maxmind"}"#), 1.0);
    assert_eq!(at(r#"xm_ip_lookups_total{source="not_found"}"#), 1.0);
    assert_eq!(at(r#"xm_ip_batch_size_count{api="thrift"}"#), 2.0);
    assert_eq!(at(r#"xm_ip_batch_size_sum{api="thrift"}"#), 6.0);
    assert_eq!(
        at(r#"xm_ip_request_duration_seconds_count{api="thrift",method="queryGeoInfoByIP"}"#),
        2.0
    );
    assert_eq!(at(r#"xm_ip_connections_accepted_total{api="thrift"}"#), 2.0);
    assert_eq!(at(r#"xm_ip_table_rows{table="ip_service_cn"}"#), 7.0);
    assert_eq!(at(r#"xm_ip_table_rows{table="ip_service_v6"}"#), 3.0);
    assert_eq!(at("xm_ip_mmdb_build_epoch_seconds"), 1_700_000_000.0);
    assert_eq!(at("xm_ip_db_pool_max_connections"), 4.0);
    assert!(at(r#"xm_ip_db_query_duration_seconds_count{table="ip_service_cn"}"#) >= 1.0);

    app.by_ip(&["1.1.1.1"]).await;
    let after = scrape(&app).await;
    assert_eq!(
        after[r#"xm_ip_requests_total{api="thrift",method="queryGeoInfoByIP",outcome="ok"}"#], 3.0,
        "the counter moves by exactly one call"
    );
    assert_eq!(
        after[r#"xm_ip_requests_total{api="http",method="metrics",outcome="200"}"#],
        1.0
    );
}

#[tokio::test]
async fn readyz_follows_the_database_in_postgres_mode() {
    let app = TestApp::spawn().await;
    let addr = http(&app);
    let health = get(addr, "/healthz").await;
    assert_eq!((health.status, health.json()["status"].clone()), (200, json!("ok")));
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    app.db().cut_off().await;
    let gone = get(addr, "/readyz").await;
    assert_eq!(gone.status, 503, "{}", gone.body);
    let missing = gone.json()["missing"][0].as_str().unwrap().to_owned();
    assert!(missing.contains("cannot be read"), "{missing}");
    // Alive all the same.
    assert_eq!(get(addr, "/healthz").await.status, 200);

    app.db().restore().await;
    eventually(Duration::from_secs(15), "not ready again", || async {
        let answer = get(addr, "/readyz").await;
        if answer.status == 200 {
            Ok(())
        } else {
            Err(answer.body)
        }
    })
    .await;
}

#[tokio::test]
async fn readyz_names_an_empty_table_in_memory_mode() {
    let db = crate::helpers::TestDb::new().await.with_fixtures().await;
    db.client()
        .await
        .batch_execute("DELETE FROM ip_service_en")
        .await
        .unwrap();
    let app = TestApp::spawn_on(db, Options::memory()).await;
    let answer = get(http(&app), "/readyz").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["missing"], json!(["table ip_service_en is empty"]));
}

#[tokio::test]
async fn the_openapi_description_lists_the_endpoints() {
    let app = TestApp::spawn().await;
    let answer = get(http(&app), "/api/openapi.json").await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/ip_query",
        "/metrics",
        "/healthz",
        "/readyz",
        "/v1/watch",
        "/v1/watch/{name}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    let mut fields: Vec<&str> = doc["components"]["schemas"]["GeoInfo"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut idl: Vec<&str> = xm_ip_service::answer::FIELDS.iter().map(|f| f.name).collect();
    fields.sort_unstable();
    idl.sort_unstable();
    assert_eq!(fields, idl, "every GeoInfo field of the IDL");
}

#[tokio::test]
async fn thrift_connections_over_the_cap_are_closed_at_once_and_counted() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.thrift.max_connections = 2;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // Both are accepted (and so counted) before the third arrives.
    open_thrift_connections_reach(&app, 2.0, "the two connections were not accepted").await;
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let m = scrape(&app).await;
    assert_eq!(m[r#"xm_ip_connections_refused_total{api="thrift"}"#], 1.0);

    // A slot frees when a client leaves.
    drop(held.pop());
    open_thrift_connections_reach(&app, 1.0, "the closed connection still counts as open").await;
    assert_eq!(app.by_ip(&["183.62.57.1"]).await[0].error_no, Some(0));
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed_after_the_request_timeout() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.http.timeout = Duration::from_secs(1);
    }))
    .await;
    let mut stream = TcpStream::connect(http(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("an idle keep-alive connection left open for 5 s")
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before it was idle"
    );
}

/// A connection that sends a POST announcing `length` bytes of body and
/// then only the first 95% of it, and holds.
async fn slow_body(addr: SocketAddr, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("POST /api/ip_query HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let part = vec![b' '; length * 95 / 100];
    // A body the server is not reading yet fills the socket buffers; that
    // is part of the attack, not a failure.
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&part)).await;
    stream
}

/// The status line's code of what the server sends back on `stream`.
async fn status_of(mut stream: TcpStream) -> u16 {
    let mut raw = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&raw[..n]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_body_budget_wait_then_get_503_while_small_requests_are_answered() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.http.max_buffered_bytes = 256 << 10;
        s.http.timeout = Duration::from_secs(1);
    }))
    .await;
    let addr = http(&app);
    // Two of these hold 200 KiB of the 256 KiB budget; two wait.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_body(addr, 100 << 10).await);
    }

    // A whole body of 100 KiB does not fit beside them either.
    let padded = format!("{{\"ip\": \"183.62.57.1\"}}{}", " ".repeat(100 << 10));
    let started = Instant::now();
    let waited = post(addr, &padded).await;
    assert_eq!(waited.status, 503, "{}", waited.body);
    assert!(waited.body.contains("did not complete"), "{}", waited.body);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Small bodies and GETs fit, and are answered at once.
    let started = Instant::now();
    let small = post(addr, r#"{"ip": "183.62.57.1"}"#).await;
    assert_eq!(small.status, 200, "{}", small.body);
    assert_eq!(get(addr, "/api/ip_query?ip=183.62.57.1").await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    for stream in slow {
        assert_eq!(
            status_of(stream).await,
            503,
            "a slow body is answered 503 after the timeout"
        );
    }
}

#[tokio::test]
async fn http_echoes_an_over_long_input_as_thrift_does_and_query_json_prints_the_http_object() {
    let app = TestApp::spawn().await;
    let long_ascii = "1".repeat(100);
    let long_wide = "中".repeat(30);
    let ips = [
        "183.62.57.1",
        "8.8.8.8",
        "240e:1::1",
        "10.0.0.1",
        "1.2.3",
        long_ascii.as_str(),
        long_wide.as_str(),
    ];
    let thrift = app.by_ip(&ips).await;
    let addr = app.addr.to_string();
    let mut args = vec!["query", "--json", "--addr", addr.as_str()];
    args.extend(ips);
    let (_, stdout, stderr) = crate::cli::run(&args).await;
    let printed: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}; {stderr}")))
        .collect();
    assert_eq!(printed.len(), ips.len(), "{stdout}{stderr}");
    for ((ip, g), printed) in ips.iter().zip(&thrift).zip(&printed) {
        let over_http = post(http(&app), &json!({ "ip": ip }).to_string()).await.json();
        assert_eq!(
            over_http["ip"].as_str(),
            g.ip.as_deref(),
            "{ip}: HTTP echoes as Thrift does"
        );
        assert_eq!(&over_http, printed, "{ip}: query --json prints the HTTP object");
        assert_eq!(over_http, as_json(g), "{ip}");
    }
    assert_eq!(thrift[5].ip.as_deref().unwrap().len(), 64);
    assert_eq!(thrift[6].ip.as_deref().unwrap(), "中".repeat(21));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_whose_new_data_does_not_load_is_reported_stale_while_its_old_data_serves() {
    let app = TestApp::spawn_with(Options::memory().with(|s| {
        s.reload_interval = Duration::from_millis(200);
    }))
    .await;
    let client = app.db().client().await;
    let stale_gauge = r#"xm_ip_table_stale{table="ip_service_cn"} "#;
    let metric = |body: &str| {
        body.lines()
            .find_map(|line| line.strip_prefix(stale_gauge))
            .map(str::to_owned)
    };
    assert_eq!(metric(&get(http(&app), "/metrics").await.body).as_deref(), Some("0"));
    // A new version whose rows the index refuses.
    client.batch_execute(OVERLAPPING_CN_VERSION).await.unwrap();
    let readyz = || async { get(http(&app), "/readyz").await };
    let answer = eventually(Duration::from_secs(10), "never reported stale", || async {
        let answer = readyz().await;
        if answer.body.contains("stale") {
            Ok(answer)
        } else {
            Err(answer.body)
        }
    })
    .await;
    assert_eq!(answer.status, 200, "still ready: it serves the old data");
    let notes = answer.json()["notes"].clone();
    let note = notes[0].as_str().unwrap_or_default();
    assert!(
        note.starts_with("table ip_service_cn is stale") && note.contains("ranges overlap"),
        "{notes}"
    );
    assert_eq!(metric(&get(http(&app), "/metrics").await.body).as_deref(), Some("1"));

    // Once the row is gone and the data loads, the table is current again.
    client
        .batch_execute(
            "DELETE FROM ip_service_cn WHERE start_ip = 3074308352;
             INSERT INTO ip_service_imports (table_name, source_file, sha256, format, outcome, finished_at)
             VALUES ('ip_service_cn', 'mended', 'y', 'csv', 'succeeded', now());",
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "still stale", || async {
        let answer = readyz().await;
        if answer.body.contains("stale") {
            Err(answer.body)
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(metric(&get(http(&app), "/metrics").await.body).as_deref(), Some("0"));
}

/// Waits, for at most five seconds, until /metrics counts `open` Thrift
/// connections.
async fn open_thrift_connections_reach(app: &TestApp, open: f64, what: &str) {
    eventually(Duration::from_secs(5), what, || async {
        match scrape(app).await.get(r#"xm_ip_connections_open{api="thrift"}"#) {
            Some(&now) if now == open => Ok(()),
            now => Err(format!("{now:?} open")),
        }
    })
    .await
}

/// The same query with its key percent-encoded, which the short path
/// leaves to the router.
fn the_long_way(path: &str) -> String {
    path.replacen("ip=", "i%70=", 1)
}

#[tokio::test]
async fn the_short_path_for_a_single_get_answers_exactly_as_the_router_does() {
    let app = TestApp::spawn().await;
    let addr = http(&app);
    for path in [
        "/api/ip_query?ip=183.62.57.1",
        "/api/ip_query?ip=183.62.57.1&lang=en",
        "/api/ip_query?lang=ja&ip=1.1.1.1",
        "/api/ip_query?ip=240e:1::1",
        "/api/ip_query?ip=100.64.0.1",
        "/api/ip_query?ip=not-an-ip",
        "/api/ip_query?ip=",
        "/api/ip_query?ip=8.8.8.8&lang=xx",
        "/api/ip_query?other=1&ip=1.1.1.1&&",
    ] {
        let (short, long) = (get(addr, path).await, get(addr, &the_long_way(path)).await);
        assert_eq!((short.status, &short.body), (long.status, &long.body), "{path}");
    }
    // What the short path leaves to the router gets the router's errors.
    let twice = get(addr, "/api/ip_query?ip=1.1.1.1&ip=8.8.8.8").await;
    assert_eq!(twice.status, 400);
    assert!(twice.json()["error"].as_str().unwrap().contains("duplicate field"));

    let m = scrape(&app).await;
    assert_eq!(
        m[r#"xm_ip_requests_total{api="http",method="ip_query",outcome="200"}"#], 10.0,
        "both paths count their requests: {m:#?}"
    );
    assert_eq!(m[r#"xm_ip_answers_total{api="http",error_no="1"}"#], 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_get_keeps_the_deadline_and_the_in_flight_cap() {
    // The only lookup waits on a database that never answers (for longer
    // than the request may take).
    let (url, held) = black_hole_database().await;
    let app = TestApp::spawn_with(Options::database(url, Duration::from_secs(4)).with(|s| {
        s.http.timeout = Duration::from_secs(1);
        s.http.max_in_flight = 1;
    }))
    .await;
    let addr = http(&app);
    let started = Instant::now();
    let stuck = tokio::spawn(get(addr, "/api/ip_query?ip=9.9.9.9"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/api/ip_query?ip=9.9.9.9", &the_long_way("/api/ip_query?ip=9.9.9.9")] {
        let shed = get(addr, path).await;
        assert_eq!(shed.status, 503, "{path}: {}", shed.body);
        assert!(
            shed.json()["error"].as_str().unwrap().contains("in flight"),
            "{}",
            shed.body
        );
    }
    let stuck = stuck.await.unwrap();
    assert_eq!(stuck.status, 503, "{}", stuck.body);
    assert!(
        stuck.json()["error"].as_str().unwrap().contains("within 1s"),
        "{}",
        stuck.body
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    held.abort();
}

/// Every response in `raw`, in order: status and body, by Content-Length.
fn responses(raw: &[u8]) -> Vec<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some((head, after)) = rest.split_once("\r\n\r\n") {
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        out.push((status, after[..length].to_owned()));
        rest = &after[length..];
    }
    out
}

async fn pipelined(addr: SocketAddr, requests: &str) -> Vec<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("every answer within 10 s")
        .expect("read the answers");
    responses(&raw)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_both_paths_and_before_an_error_closes() {
    let app = TestApp::spawn().await;
    let addr = http(&app);
    let body = r#"{"ip": "1.1.1.1"}"#;
    let requests = [
        "GET /api/ip_query?ip=183.62.57.1 HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        format!(
            "POST /api/ip_query HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        "GET /api/ip_query?ip=bad HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        "GET /api/ip_query?i%70=240e:1::1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_owned(),
    ];
    let answers = pipelined(addr, &requests.concat()).await;
    let summary: Vec<(u16, Value)> = answers
        .iter()
        .map(|(status, body)| {
            let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            (*status, json.get("ip").or(json.get("status")).cloned().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (200, json!("183.62.57.1")),
            (200, json!("1.1.1.1")),
            (200, json!("ok")),
            (400, json!("bad")),
            (200, json!("240e:1::1")),
        ]
    );

    // Answers given before a request that does not parse still arrive.
    let answers = pipelined(
        addr,
        "GET /api/ip_query?ip=183.62.57.1 HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE \x01\x02\r\n\r\n",
    )
    .await;
    assert_eq!(answers.first().map(|a| a.0), Some(200), "{answers:?}");
    assert!(answers[0].1.contains("广州"), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_taking_replies_is_closed_after_the_request_timeout() {
    let app = TestApp::spawn_with(Options::default().with(|s| {
        s.http.timeout = Duration::from_secs(1);
    }))
    .await;
    let addr = http(&app);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    // Pipelined requests, and never a read: the replies back up.
    let requests = "GET /api/ip_query?ip=183.62.57.1 HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2_000);
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            let write = stream.write_all(requests.as_bytes());
            if !matches!(
                tokio::time::timeout(Duration::from_millis(500), write).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        stream
    });
    let closed = r#"xm_ip_connections_closed_total{api="http",reason="slow_reader"}"#;
    eventually(Duration::from_secs(10), "the stuck connection stayed open", || async {
        match scrape(&app).await.get(closed) {
            Some(&1.0) => Ok(()),
            seen => Err(format!("{closed} is {seen:?}")),
        }
    })
    .await;
    drop(writer.await.unwrap());
}
