//! Importing ipdb, mmdb and CSV files: what lands in the tables, what is
//! refused and why, and that the live table never sees a partial load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::AsyncMessage;
use xm_ip_service::data::import::{self, Format, ImportError, ImportOptions, ImportOutcome};
use xm_ip_service::data::store::{self, Table};

use crate::helpers::{eventually, summary, TestApp, TestDb};
use crate::writers::{s, IpdbWriter, Value, Writer};

fn options(table: Table, file: &Path) -> ImportOptions {
    ImportOptions::new(table, file)
}

async fn run(db: &TestDb, options: &ImportOptions) -> Result<ImportOutcome, ImportError> {
    let mut client = store::connect(&db.url).await.unwrap();
    import::import(&mut client, options).await
}

/// Writes `bytes` to a temporary file named `name`.
fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// All rows of `table` as text, in address order.
async fn rows(db: &TestDb, table: Table) -> Vec<Vec<String>> {
    let bound = |c: &str| {
        if table == Table::V6 {
            format!("host({c})")
        } else {
            format!("host('0.0.0.0'::inet + {c})")
        }
    };
    let sql = format!(
        "SELECT {}, {}, country_name, province_name, city_name, district_name, carrier_name, \
                country_code, province_code, city_code FROM {} ORDER BY start_ip",
        bound("start_ip"),
        bound("end_ip"),
        table.name()
    );
    let client = db.client().await;
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (0..10).map(|i| row.get::<_, String>(i)).collect())
        .collect()
}

fn row(values: [&str; 10]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn fixture_ipdb() -> Vec<u8> {
    let guangzhou = ["中国", "广东", "广州", "天河区", "", "电信", "CN", "AS"];
    IpdbWriter::new()
        // Three leaves, one record's values: one row.
        .insert("183.62.56.0/25", guangzhou)
        .insert("183.62.56.128/25", guangzhou)
        .insert("183.62.57.0/24", guangzhou)
        .insert(
            "1.2.3.0/24",
            ["美国", "加利福尼亚州", "", "", "", "Yi'an, \"Quoted\" Co", "", ""],
        )
        .insert("10.0.0.0/8", ["", "", "", "", "", "", "", ""])
        .insert("240e::/20", ["中国", "北京", "北京", "", "", "中国电信", "", ""])
        .build()
}

#[tokio::test]
async fn ipdb_rows_merge_adjacent_leaves_skip_blanks_and_get_codes() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "fixture.ipdb", &fixture_ipdb());

    let outcome = run(&db, &options(Table::Cn, &path)).await.unwrap();
    assert!(
        matches!(outcome, ImportOutcome::Loaded { rows: 2, merged: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        rows(&db, Table::Cn).await,
        [
            row([
                "1.2.3.0",
                "1.2.3.255",
                "美国",
                "加利福尼亚州",
                "",
                "",
                "Yi'an, \"Quoted\" Co",
                "US",
                "",
                ""
            ]),
            row([
                "183.62.56.0",
                "183.62.57.255",
                "中国",
                "广东",
                "广州",
                "天河区",
                "电信",
                "CN",
                "440000",
                "440100"
            ]),
        ]
    );

    run(&db, &options(Table::V6, &path)).await.unwrap();
    assert_eq!(
        rows(&db, Table::V6).await,
        [row([
            "240e::",
            "240e:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            "中国",
            "北京",
            "北京",
            "",
            "中国电信",
            "CN",
            "110000",
            "110100"
        ])],
        "the IPv4 block under ::ffff:0:0/96 is not imported as IPv6"
    );
}

#[tokio::test]
async fn an_imported_ipdb_answers_through_the_service() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "fixture.ipdb", &fixture_ipdb());
    run(app.db(), &options(Table::Cn, &path)).await.unwrap();
    let answers = app.by_ip(&["183.62.57.1", "183.62.56.99"]).await;
    assert_eq!(answers[0].geoip_start_ip_str.as_deref(), Some("183.62.56.0"));
    assert_eq!(answers[0].geoip_end_ip_str.as_deref(), Some("183.62.57.255"));
    assert_eq!(answers[0].geoip_city_code.as_deref(), Some("440100"));
    assert_eq!(answers[1], {
        let mut same = answers[0].clone();
        same.ip = Some("183.62.56.99".into());
        same
    });
}

#[tokio::test]
async fn mmdb_networks_merge_when_their_stored_values_match() {
    let db = TestDb::new().await;
    let names = |en: &str, zh: &str| map! {"en" => s(en), "zh-CN" => s(zh)};
    let de = map! {"iso_code" => s("DE"), "names" => names("Germany", "德国")};
    let berlin = |postal: &str| {
        map! {
            "country" => de.clone(),
            "subdivisions" => Value::Array(vec![map!{"iso_code" => s("BE"), "names" => names("Berlin", "柏林")}]),
            "city" => map!{"geoname_id" => Value::U32(2950159), "names" => names("Berlin, \"Mitte\" Yi'an", "柏林")},
            "postal" => map!{"code" => s(postal)},
        }
    };
    let mut writer = Writer::new();
    writer
        .insert("2.0.0.0/25", berlin("10115"))
        .insert("2.0.0.128/25", berlin("10117"))
        .insert("2.0.1.0/24", map! {"registered_country" => de.clone()})
        .insert("2.0.2.0/24", map! {"city" => map!{"names" => names("Nowhere", "无处")}})
        .insert("2a00::/16", map! {"country" => de.clone()});
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "fixture.mmdb", &writer.build(0));

    let mut english = options(Table::En, &path);
    english.format = Some(Format::Mmdb);
    english.lang = Some("en".into());
    let outcome = run(&db, &english).await.unwrap();
    assert!(
        matches!(outcome, ImportOutcome::Loaded { rows: 2, merged: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        rows(&db, Table::En).await,
        [
            row([
                "2.0.0.0",
                "2.0.0.255",
                "Germany",
                "Berlin",
                "Berlin, \"Mitte\" Yi'an",
                "",
                "",
                "DE",
                "BE",
                "2950159"
            ]),
            row(["2.0.1.0", "2.0.1.255", "Germany", "", "", "", "", "DE", "", ""]),
        ]
    );

    run(&db, &options(Table::V6, &path)).await.unwrap();
    assert_eq!(
        rows(&db, Table::V6).await,
        [row([
            "2a00::",
            "2a00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "德国",
            "",
            "",
            "",
            "",
            "DE",
            "",
            ""
        ])],
        "v6 takes names in zh-CN by default and no IPv4 networks"
    );
}

const CSV: &str = "\
start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name,country_code,province_code,city_code
1.0.1.0,1.0.3.255,中国,福建,福州,,\"电信, \"\"骨干\"\"\",CN,350000,350100
36.0.0.0,36.0.0.255,中国,安徽,Yi'an City,,,CN,340000,
8.8.8.0,8.8.8.255,美国,加利福尼亚州,山景城,,Google,US,,
";

#[tokio::test]
async fn csv_round_trips_through_import_and_export() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "cn.csv", CSV.as_bytes());
    run(&db, &options(Table::Cn, &path)).await.unwrap();

    let client = db.client().await;
    let mut exported = Vec::new();
    import::export(&client, Table::Cn, &mut exported).await.unwrap();
    assert_eq!(String::from_utf8(exported).unwrap(), CSV);
}

#[tokio::test]
async fn csv_columns_may_come_in_any_order_with_integer_bounds_and_no_codes() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = "carrier_name,end_ip,start_ip,district_name,city_name,province_name,country_name\n\
               电信,3074310143,3074308195,,广州市,广东省,中国\n";
    let path = file(&dir, "cn.csv", csv.as_bytes());
    run(&db, &options(Table::Cn, &path)).await.unwrap();
    assert_eq!(
        rows(&db, Table::Cn).await,
        [row([
            "183.62.56.99",
            "183.62.63.255",
            "中国",
            "广东省",
            "广州市",
            "",
            "电信",
            "CN",
            "440000",
            "440100"
        ])]
    );
}

/// Imports `csv` into a table already holding `CSV`, expects it refused
/// with a message containing `expected`, and checks nothing changed.
async fn assert_refused(table: Table, csv: &[u8], format: Option<Format>, expected: &str) {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let good = match table {
        Table::V6 => "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n\
                      240e::,240e::ff,中国,北京,北京,,电信\n"
            .to_owned(),
        _ => CSV.to_owned(),
    };
    run(&db, &options(table, &file(&dir, "good.csv", good.as_bytes())))
        .await
        .unwrap();
    let before = rows(&db, table).await;

    let mut bad = options(table, &file(&dir, "bad.csv", csv));
    bad.format = format;
    let err = run(&db, &bad).await.unwrap_err().to_string();
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
    assert!(err.contains("bad.csv"), "names the file: {err}");
    assert_eq!(rows(&db, table).await, before, "the live table is untouched");

    let history: (String, String) = db
        .client()
        .await
        .query_one(
            "SELECT outcome, message FROM ip_service_imports ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(history.0, "failed");
    assert!(history.1.contains(expected), "{history:?}");
}

const HEADER: &str = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n";

#[tokio::test]
async fn a_start_after_its_end_is_refused_with_its_line() {
    let csv = format!("{HEADER}1.2.3.0,1.2.3.255,a,,,,\n1.2.4.9,1.2.4.0,b,,,,\n");
    assert_refused(
        Table::Cn,
        csv.as_bytes(),
        None,
        "line 3: start 1.2.4.9 is after end 1.2.4.0",
    )
    .await;
}

#[tokio::test]
async fn overlapping_ranges_are_refused_naming_both() {
    let csv = format!("{HEADER}1.2.3.0,1.2.3.255,a,,,,\n5.0.0.0,5.0.0.1,c,,,,\n1.2.3.128,1.2.4.0,b,,,,\n");
    assert_refused(
        Table::Cn,
        csv.as_bytes(),
        None,
        "ranges overlap: 1.2.3.0-1.2.3.255 (line 2) and 1.2.3.128-1.2.4.0 (line 4)",
    )
    .await;
}

#[tokio::test]
async fn addresses_of_the_wrong_family_are_refused() {
    let v6_in_v4 = format!("{HEADER}240e::1,240e::2,a,,,,\n");
    assert_refused(
        Table::Cn,
        v6_in_v4.as_bytes(),
        None,
        "line 2: IPv6 address 240e::1 in an IPv4 table",
    )
    .await;
    let v4_in_v6 = format!("{HEADER}1.2.3.4,1.2.3.5,a,,,,\n");
    assert_refused(
        Table::V6,
        v4_in_v6.as_bytes(),
        None,
        "line 2: IPv4 address 1.2.3.4 in an IPv6 table",
    )
    .await;
}

#[tokio::test]
async fn an_empty_source_is_refused() {
    assert_refused(Table::Cn, HEADER.as_bytes(), None, "no ranges to load").await;
}

#[tokio::test]
async fn a_file_that_is_not_its_claimed_format_is_refused() {
    let csv = format!("{HEADER}1.2.3.0,1.2.3.255,a,,,,\n");
    assert_refused(
        Table::Cn,
        csv.as_bytes(),
        Some(Format::Ipdb),
        "not a valid file of this format",
    )
    .await;
    assert_refused(
        Table::Cn,
        csv.as_bytes(),
        Some(Format::Mmdb),
        "not a valid file of this format",
    )
    .await;
    assert_refused(
        Table::Cn,
        b"hello,world\n1,2\n",
        None,
        "the header has no start_ip column",
    )
    .await;
    let short_row = format!("{HEADER}1.2.3.0,1.2.3.255,a\n");
    assert_refused(
        Table::Cn,
        short_row.as_bytes(),
        None,
        "line 2: 3 fields where the header has 7",
    )
    .await;
}

#[tokio::test]
async fn names_longer_than_their_column_are_refused_not_cut() {
    let long = "长".repeat(256);
    let csv = format!("{HEADER}1.2.3.0,1.2.3.255,a,,,,{long}\n");
    assert_refused(
        Table::Cn,
        csv.as_bytes(),
        None,
        "line 2: carrier_name is 256 characters, longer than the column's 255",
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_with_its_line() {
    let mut csv = format!("{HEADER}1.2.3.0,1.2.3.255,a,,,,\n").into_bytes();
    csv.extend_from_slice(b"1.2.4.0,1.2.4.255,\xff\xfe,,,,\n");
    assert_refused(Table::Cn, &csv, None, "line 3: country_name is not valid UTF-8").await;
}

#[tokio::test]
async fn the_same_file_again_is_a_no_op_unless_forced() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "cn.csv", CSV.as_bytes());
    assert!(matches!(
        run(&db, &options(Table::Cn, &path)).await.unwrap(),
        ImportOutcome::Loaded { rows: 3, .. }
    ));
    assert_eq!(
        run(&db, &options(Table::Cn, &path)).await.unwrap(),
        ImportOutcome::AlreadyLoaded
    );
    let mut forced = options(Table::Cn, &path);
    forced.force = true;
    assert!(matches!(
        run(&db, &forced).await.unwrap(),
        ImportOutcome::Loaded { rows: 3, .. }
    ));

    let history: Vec<(String, String, String, i64)> = db
        .client()
        .await
        .query(
            "SELECT table_name, source_file, format, row_count FROM ip_service_imports ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let loaded = ("ip_service_cn".to_owned(), "cn.csv".to_owned(), "csv".to_owned(), 3);
    assert_eq!(history, [loaded.clone(), loaded], "the no-op is not recorded as a load");
}

#[tokio::test]
async fn a_successful_swap_notifies_the_reload_channel() {
    let db = TestDb::new().await;
    let (client, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(n) = message {
                let _ = sender.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", xm_ip_service::data::store::RELOAD_CHANNEL))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    run(&db, &options(Table::Cn, &file(&dir, "cn.csv", CSV.as_bytes())))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("ip_service_reload".to_owned(), "ip_service_cn".to_owned()));
}

/// A CSV of `n` adjacent /24s starting at 20.0.0.0, all with carrier `carrier`.
fn big_csv(n: u32, carrier: &str) -> String {
    let mut out = String::from(HEADER);
    for i in 0..n {
        let start = (20u32 << 24) + i * 256;
        let ip = |v: u32| std::net::Ipv4Addr::from(v).to_string();
        out.push_str(&format!(
            "{},{},中国,广东,广州,,{carrier}\n",
            ip(start),
            ip(start + 255)
        ));
    }
    out
}

#[tokio::test]
async fn readers_during_an_import_see_the_old_or_the_new_data_never_nothing() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let old = file(&dir, "old.csv", big_csv(100_000, "电信").as_bytes());
    let new = file(&dir, "new.csv", big_csv(100_000, "联通").as_bytes());
    run(app.db(), &options(Table::Cn, &old)).await.unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let addr = app.addr;
    let reader = tokio::spawn(async move {
        let probe = ["20.0.0.1", "20.1.134.160", "21.134.159.255"];
        let (mut old_seen, mut new_seen) = (0, 0);
        while !*stopped.borrow() {
            let answers = tokio::task::spawn_blocking(move || {
                use xm_ip_service::thrift::TIPServiceSyncClient;
                let mut c = xm_ip_service::tools::client::connect(
                    &addr.to_string(),
                    xm_ip_service::tools::client::Wire::FRAMED_BINARY,
                    Duration::from_secs(10),
                )
                .unwrap();
                c.query_geo_info_by_i_p(probe.iter().map(|s| s.to_string()).collect())
                    .unwrap()
            })
            .await
            .unwrap();
            for g in &answers {
                assert_eq!(summary(g).1, "cn", "a reader saw no row: {g:?}");
                match g.geoip_carrier.as_deref() {
                    Some("电信") => old_seen += 1,
                    Some("联通") => new_seen += 1,
                    other => panic!("unexpected carrier {other:?}"),
                }
            }
        }
        (old_seen, new_seen)
    });
    for (path, force) in [(&new, false), (&old, true), (&new, true)] {
        let mut next = options(Table::Cn, path);
        next.force = force;
        run(app.db(), &next).await.unwrap();
    }
    stop.send(true).unwrap();
    let (old_seen, new_seen) = reader.await.unwrap();
    assert!(old_seen > 0 && new_seen > 0, "old {old_seen}, new {new_seen}");
}

#[tokio::test]
async fn an_import_killed_half_way_leaves_the_old_table_answering() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    run(&db, &options(Table::Cn, &file(&dir, "cn.csv", CSV.as_bytes())))
        .await
        .unwrap();
    let before = rows(&db, Table::Cn).await;
    let big = file(&dir, "big.csv", big_csv(400_000, "联通").as_bytes());

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xm-ip-service"))
        .args(["import", "--table", "cn"])
        .arg(&big)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let watcher = db.client().await;
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND query LIKE 'COPY ip_service_cn_staging%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while watcher.query_one(copying, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the import never reached COPY");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().await.unwrap();

    // The server notices the dead client and rolls its transaction back.
    let gone = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    eventually(
        Duration::from_secs(30),
        "the killed import's session is still there",
        || async {
            match watcher.query_one(gone, &[]).await.unwrap().get::<_, i64>(0) {
                0 => Ok(()),
                sessions => Err(format!("{sessions} sessions")),
            }
        },
    )
    .await;
    assert_eq!(rows(&db, Table::Cn).await, before);
    let staging: i64 = watcher
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%staging%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(staging, 0, "no staging table is left behind");

    // The next import records the dead attempt as interrupted, and loads.
    let outcome = run(&db, &options(Table::Cn, &big)).await.unwrap();
    assert!(matches!(outcome, ImportOutcome::Loaded { rows: 400_000, .. }));
    let outcomes: Vec<String> = watcher
        .query("SELECT outcome FROM ip_service_imports ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outcomes, ["succeeded", "interrupted", "succeeded"]);
}

#[tokio::test]
async fn grants_on_the_live_table_survive_the_swap() {
    let db = TestDb::new().await;
    let role = format!("{}_reader", db.name);
    let client = db.client().await;
    client
        .batch_execute(&format!("CREATE ROLE {role}; GRANT SELECT ON ip_service_cn TO {role}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let imported = run(&db, &options(Table::Cn, &file(&dir, "cn.csv", CSV.as_bytes()))).await;
    let can_read: bool = client
        .query_one("SELECT has_table_privilege($1, 'ip_service_cn', 'SELECT')", &[&role])
        .await
        .unwrap()
        .get(0);
    // Roles belong to the cluster, not the test database: always remove it.
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
    imported.unwrap();
    assert!(can_read, "the reader role lost SELECT in the swap");
}

#[tokio::test]
async fn an_unsupported_lang_for_an_mmdb_is_reported_as_the_lang_not_as_the_file() {
    let db = TestDb::new().await;
    let mmdb = crate::helpers::fixture_mmdb();
    let options = ImportOptions {
        lang: Some("xx".to_owned()),
        ..options(Table::En, &mmdb)
    };
    let err = run(&db, &options).await.unwrap_err().to_string();
    assert!(err.contains("--lang: "), "{err}");
    assert!(!err.contains("not a valid file"), "{err}");
}
