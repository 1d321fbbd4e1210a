//! `xm-ip-service resolve`: each input shape, the same rows from a server,
//! from PostgreSQL and from files, bad lines in the output, the summary,
//! and one clear line for a missing file or an unreachable server.

use std::path::Path;

use xm_ip_service::data::import::{self, ImportOptions};
use xm_ip_service::data::store::Table;

use crate::cli::run;
use crate::helpers::{fixture_mmdb, Options, TestApp, TestDb};

/// Plain lines in every shape the resolver takes an address from.
const PLAIN: &str = "183.62.57.1
8.8.8.8:53
[240e:1::1]:53
240e:1::1#53
  9.9.9.9
not-an-address

183.62.57.1
";

/// A BIND query log (print-category yes): the client is field 6.
const BIND: &str = "\
04-Dec-2026 04:00:00.000 queries: client @0x7f3a5c000 183.62.57.1#53124 (a.example): query: a.example IN A +E(0) (10.0.0.53)
04-Dec-2026 04:00:00.001 queries: client @0x7f3a5c001 2001:4860::8888#2881 (b.example): query: b.example IN AAAA + (10.0.0.53)
04-Dec-2026 04:00:00.002 queries: client @0x7f3a5c002 999.1.1.1#53 (c.example): query: c.example IN A + (10.0.0.53)
a short line
";

/// The fixture tables as the importer would load them from files: the
/// cn and v6 fixtures exported to CSV, imported into a fresh database and
/// also left in `dir` (with the fixture mmdb) for file mode.
async fn database_and_files(dir: &Path) -> TestDb {
    let fixtures = TestDb::new().await.with_fixtures().await;
    let db = TestDb::new().await;
    let mut client = db.client().await;
    for (table, name) in [
        (Table::Cn, "cn.csv"),
        (Table::V6, "v6.csv"),
        (Table::Asn, "asn.csv"),
        (Table::AsnV6, "asn_v6.csv"),
    ] {
        let path = dir.join(name);
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        import::export(&fixtures.client().await, table, &mut file)
            .await
            .unwrap();
        import::import(&mut client, &ImportOptions::new(table, path))
            .await
            .unwrap();
    }
    db
}

#[tokio::test]
async fn every_mode_gives_the_same_rows_for_every_input_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_and_files(dir.path()).await;
    let mmdb = fixture_mmdb();
    std::fs::copy(&mmdb, dir.path().join("City.mmdb")).unwrap();
    let plain = dir.path().join("plain.txt");
    let bind = dir.path().join("query.log");
    std::fs::write(&plain, PLAIN).unwrap();
    std::fs::write(&bind, BIND).unwrap();
    let (plain, bind) = (plain.to_str().unwrap(), bind.to_str().unwrap());

    let app = TestApp::spawn_on(db, Options::default()).await;
    let server = app.addr.to_string();
    let db_url = app.db().url.clone();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for name in ["cn.csv", "v6.csv", "asn.csv", "asn_v6.csv", "City.mmdb"] {
        std::fs::rename(dir.path().join(name), data.join(name)).unwrap();
    }
    let data = data.to_str().unwrap().to_owned();
    let mmdb_path = mmdb.to_str().unwrap().to_owned();
    let modes: [Vec<&str>; 3] = [
        vec!["--addr", &server],
        vec!["--database-url", &db_url, "--mmdb", &mmdb_path],
        vec!["--data", &data],
    ];

    let mut outputs = Vec::new();
    for mode in &modes {
        let mut args = vec!["resolve", plain];
        args.extend(mode);
        let (ok, plain_rows, stderr) = run(&args).await;
        assert!(ok, "{mode:?}: {stderr}");
        let mut args = vec!["resolve", "--field", "6", "--format", "jsonl", bind];
        args.extend(mode);
        let (ok, bind_rows, stderr) = run(&args).await;
        assert!(ok, "{mode:?}: {stderr}");
        outputs.push((plain_rows, bind_rows));
    }
    assert_eq!(outputs[0], outputs[1], "server and PostgreSQL");
    assert_eq!(outputs[0], outputs[2], "server and files");

    let (plain_rows, bind_rows) = &outputs[0];
    let mut csv = csv::Reader::from_reader(plain_rows.as_bytes());
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    // ip, error_no, province, source, asn: one row per input line, in order.
    let brief: Vec<(&str, &str, &str, &str, &str)> =
        rows.iter().map(|r| (&r[0], &r[5], &r[7], &r[15], &r[16])).collect();
    assert_eq!(
        brief,
        [
            ("183.62.57.1", "0", "广东", "cn", "4134"),
            ("8.8.8.8", "0", "加利福尼亚州", "maxmind", "15169"),
            ("240e:1::1", "0", "广东", "v6", "4134"),
            ("240e:1::1", "0", "广东", "v6", "4134"),
            ("9.9.9.9", "0", "", "cn", ""),
            ("not-an-address", "1", "", "", ""),
            ("", "1", "", "", ""),
            ("183.62.57.1", "0", "广东", "cn", "4134"),
        ]
    );
    let headers = csv.headers().unwrap();
    assert_eq!(
        (&headers[15], &headers[16], &headers[17]),
        ("geoip_source", "geoip_asn", "geoip_as_org")
    );
    assert_eq!(&rows[1][17], "Google LLC");

    let bind: Vec<serde_json::Value> = bind_rows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let brief: Vec<(String, i64)> = bind
        .iter()
        .map(|g| (g["ip"].as_str().unwrap().to_owned(), g["error_no"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        brief,
        [
            ("183.62.57.1".into(), 0),
            ("2001:4860::8888".into(), 0),
            ("999.1.1.1".into(), 1),
            ("".into(), 1),
        ]
    );
    assert_eq!(bind[3]["error_msg"], "invalid IP: line 4 has no field 6");
    assert_eq!(
        (&bind[1]["geoip_asn"], &bind[1]["geoip_as_org"]),
        (&15169.into(), &"Google LLC".into())
    );
    assert!(bind[2].get("geoip_asn").is_none(), "{}", bind[2]);
}

#[tokio::test]
async fn unique_and_the_summary_count_what_the_answers_say() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(
        &input,
        "183.62.57.1\n183.62.57.1\n240e:1::1\n8.8.8.8\n100.64.0.1\nbad\nbad\n",
    )
    .unwrap();
    let output = dir.path().join("out.csv");
    let server = app.addr.to_string();
    let (ok, stdout, stderr) = run(&[
        "resolve",
        "--unique",
        "--summary",
        "2",
        "--addr",
        &server,
        "-o",
        output.to_str().unwrap(),
        input.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty(), "rows go to --output: {stdout}");
    let rows = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        rows.lines().count(),
        1 + 5,
        "a header and each distinct input once:\n{rows}"
    );
    assert!(stderr.contains("7 lines read, 5 resolved"), "{stderr}");
    assert!(
        stderr.contains("5 answers: 3 found, 1 invalid, 1 not found, 0 failed"),
        "{stderr}"
    );
    // 183.62.57.1 and 240e:1::1 are 中国/广东; 8.8.8.8 is 美国/加利福尼亚.
    assert!(
        stderr.contains("top 2 countries of 2:\n           2  中国\n           1  美国\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("top 2 provinces of 2:\n           2  中国/广东\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("top 2 carriers of 1:\n           2  电信\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("top 2 AS organisations of 2:\n           2  CHINANET-BACKBONE\n           1  Google LLC\n"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_file_or_an_unreachable_server_is_one_line_and_a_failure() {
    let (ok, stdout, stderr) = run(&["resolve", "/nonexistent/dns.log", "--data", "."]).await;
    assert!(!ok);
    assert!(stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot open /nonexistent/dns.log"), "{stderr}");

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "1.2.3.4\n").unwrap();
    let (ok, _, stderr) = run(&["resolve", "--addr", &addr, input.to_str().unwrap()]).await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot connect to {addr}")), "{stderr}");
}
