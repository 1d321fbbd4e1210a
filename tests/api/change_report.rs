//! The change report: what an import changes against the live table, the
//! dry run that changes nothing, and the `--max-change` guard.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use xm_ip_service::data::import::{self, ImportError, ImportOptions, ImportOutcome};
use xm_ip_service::data::store::{self, Table};

use crate::cli::{output, run};
use crate::helpers::TestDb;

const HEADER: &str = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n";

/// 1,024 addresses in three ranges.
const LIVE: &str = "1.0.0.0,1.0.0.255,中国,广东,广州,,电信
1.0.1.0,1.0.1.255,中国,北京,北京,,联通
1.0.2.0,1.0.3.255,中国,上海,上海,,移动
";

/// Against [`LIVE`]: 128 addresses move city, 256 change carrier, 256 lose
/// cover and 256 gain it, so (384 + 256) / 1,024 = 62.5% change.
const UPDATE: &str = "1.0.0.0,1.0.0.127,中国,广东,广州,,电信
1.0.0.128,1.0.0.255,中国,广东,深圳,,电信
1.0.1.0,1.0.1.255,中国,北京,北京,,电信
1.0.2.0,1.0.2.255,中国,上海,上海,,移动
1.0.4.0,1.0.4.255,中国,天津,天津,,联通
";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn csv(&self, name: &str, rows: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{HEADER}{rows}")).unwrap();
        path
    }
}

fn options(file: PathBuf) -> ImportOptions {
    ImportOptions::new(Table::Cn, file)
}

async fn import(db: &TestDb, options: &ImportOptions) -> Result<ImportOutcome, ImportError> {
    let mut client = store::connect(&db.url).await.unwrap();
    import::import(&mut client, options).await
}

/// The live rows as (start, carrier, city), and the import history as
/// (outcome, the stored report's changed_percent).
async fn state(db: &TestDb) -> (Vec<(i64, String, String)>, Vec<(String, Option<f64>)>) {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT start_ip, carrier_name, city_name FROM ip_service_cn ORDER BY start_ip",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let history = client
        .query(
            "SELECT outcome, (change_report->>'changed_percent')::float8 FROM ip_service_imports ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (rows, history)
}

#[tokio::test]
async fn an_update_reports_changes_by_field_cover_and_transitions_and_stores_it() {
    let db = TestDb::new().await;
    let files = Files::new();
    let ImportOutcome::Loaded { report: first, .. } = import(&db, &options(files.csv("v1.csv", LIVE))).await.unwrap()
    else {
        panic!("not loaded")
    };
    assert_eq!(
        (first.newly_covered.addresses, first.changed_percent),
        (1024, 0.0),
        "an empty table"
    );

    let ImportOutcome::Loaded { report, .. } = import(&db, &options(files.csv("v2.csv", UPDATE))).await.unwrap() else {
        panic!("not loaded")
    };
    assert_eq!((report.live.addresses, report.live.ranges), (1024, 3));
    assert_eq!((report.new.addresses, report.new.ranges), (1024, 5));
    assert_eq!((report.changed.addresses, report.changed.ranges), (384, 2));
    let by_field: Vec<(&str, u128, u64)> = report
        .changed_by_field
        .iter()
        .map(|c| (c.field, c.span.addresses, c.span.ranges))
        .collect();
    assert_eq!(
        by_field,
        [
            ("country", 0, 0),
            ("province", 0, 0),
            ("city", 128, 1),
            ("district", 0, 0),
            ("carrier", 256, 1)
        ]
    );
    assert_eq!(
        (report.no_longer_covered.addresses, report.no_longer_covered.ranges),
        (256, 1)
    );
    assert_eq!((report.newly_covered.addresses, report.newly_covered.ranges), (256, 1));
    assert_eq!(report.changed_percent, 62.5);
    let transitions: Vec<(&str, &str, u128)> = report
        .top_transitions
        .iter()
        .map(|t| (t.from.as_str(), t.to.as_str(), t.addresses))
        .collect();
    assert_eq!(
        transitions,
        [
            ("中国/北京/北京/联通", "中国/北京/北京/电信", 256),
            ("中国/广东/广州/电信", "中国/广东/深圳/电信", 128)
        ]
    );

    let (_, history) = state(&db).await;
    assert_eq!(
        history,
        [
            ("succeeded".to_owned(), Some(0.0)),
            ("succeeded".to_owned(), Some(62.5))
        ]
    );
    let stored: String = db
        .client()
        .await
        .query_one(
            "SELECT change_report->>'summary' FROM ip_service_imports ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, report.summary);
}

#[tokio::test]
async fn a_dry_run_reports_and_changes_nothing() {
    let db = TestDb::new().await;
    let files = Files::new();
    import(&db, &options(files.csv("v1.csv", LIVE))).await.unwrap();
    let before = state(&db).await;

    let mut dry = options(files.csv("v2.csv", UPDATE));
    dry.dry_run = true;
    let ImportOutcome::Checked { rows, report, .. } = import(&db, &dry).await.unwrap() else {
        panic!("not a dry run")
    };
    assert_eq!((rows, report.changed_percent), (5, 62.5));
    assert_eq!(state(&db).await, before, "same rows, no history row");
}

#[tokio::test]
async fn max_change_refuses_a_large_update_and_records_why() {
    let db = TestDb::new().await;
    let files = Files::new();
    import(&db, &options(files.csv("v1.csv", LIVE))).await.unwrap();
    let (live_rows, _) = state(&db).await;

    let mut guarded = options(files.csv("v2.csv", UPDATE));
    guarded.max_change = Some(50.0);
    let err = import(&db, &guarded).await.unwrap_err();
    assert!(matches!(err, ImportError::TooMuchChange { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "refused: 62.50% of ip_service_cn's live addresses would change, over the limit of 50%"
    );
    let (rows, history) = state(&db).await;
    assert_eq!(rows, live_rows, "the live table is untouched");
    assert_eq!(history[1], ("refused".to_owned(), Some(62.5)), "kept with its report");

    guarded.max_change = Some(70.0);
    assert!(matches!(
        import(&db, &guarded).await.unwrap(),
        ImportOutcome::Loaded { .. }
    ));
    assert_eq!(state(&db).await.0.len(), 5);
}

async fn cli_import(db: &TestDb, path: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["import", "--table", "cn", "--database-url", &db.url];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    run(&args).await
}

#[tokio::test]
async fn the_cli_prints_the_report_as_a_table_or_json_and_fails_when_refused() {
    let db = TestDb::new().await;
    let files = Files::new();
    let (v1, v2) = (files.csv("v1.csv", LIVE), files.csv("v2.csv", UPDATE));
    let (ok, _, stderr) = cli_import(&db, &v1, &[]).await;
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = cli_import(&db, &v2, &["--dry-run"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("中国/北京/北京/联通 → 中国/北京/北京/电信: 256 addresses"),
        "{stdout}"
    );
    assert!(stdout.contains("62.50% of the live addresses change"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ip_service_cn is unchanged"), "{stdout}");

    let (ok, stdout, stderr) = cli_import(&db, &v2, &["--dry-run", "--json"]).await;
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["outcome"], "dry_run");
    assert_eq!(json["report"]["changed"]["addresses"], 384);
    assert_eq!(json["report"]["top_transitions"][1]["to"], "中国/广东/深圳/电信");

    let (ok, stdout, stderr) = cli_import(&db, &v2, &["--max-change", "10%"]).await;
    assert!(!ok);
    assert!(stdout.contains("change report for ip_service_cn"), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "xm-ip-service: refused: 62.50% of ip_service_cn's live addresses would change, over the limit of 10%"
    );

    let (ok, _, stderr) = cli_import(&db, &v2, &["--max-change", "150"]).await;
    assert!(!ok);
    assert!(stderr.contains("\"150\" is not a percentage from 0 to 100"), "{stderr}");
}

/// Runs scripts/refresh.sh with `args` against `db`, with this build's binary.
async fn refresh(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/refresh.sh");
    output(
        tokio::process::Command::new("bash")
            .arg(script)
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("XM_IP_BIN", env!("CARGO_BIN_EXE_xm-ip-service"))
            .env("RUST_LOG", "warn"),
    )
    .await
}

#[tokio::test]
async fn the_refresh_job_imports_what_changed_and_fails_on_a_refused_update() {
    let db = TestDb::new().await;
    let source = Files::new();
    let dir = source.dir.path().to_str().unwrap();
    let installed = tempfile::tempdir().unwrap();
    let install = installed.path().to_str().unwrap();
    source.csv("cn.csv", LIVE);

    let (ok, stdout, stderr) = refresh(&db, &["--from", dir, "--install", install]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("imported 3 rows into ip_service_cn"), "{stdout}");
    assert!(stdout.contains("refresh: installed the files in"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(installed.path().join("cn.csv")).unwrap(),
        format!("{HEADER}{LIVE}")
    );

    let (ok, stdout, _) = refresh(&db, &["--from", dir]).await;
    assert!(ok);
    assert!(
        stdout.contains("ip_service_cn already holds"),
        "unchanged is a no-op: {stdout}"
    );

    // 62.5% would change: over the job's default limit of 20%.
    source.csv("cn.csv", UPDATE);
    let (ok, stdout, stderr) = refresh(&db, &["--from", dir, "--install", install]).await;
    assert!(!ok);
    assert!(stdout.contains("62.50% of the live addresses change"), "{stdout}");
    assert!(
        stderr.contains("refused: 62.50% of ip_service_cn's live addresses would change"),
        "{stderr}"
    );
    assert!(stderr.contains("refresh: FAILED"), "{stderr}");
    assert_eq!(state(&db).await.0.len(), 3, "the live table is untouched");
    assert_eq!(
        std::fs::read_to_string(installed.path().join("cn.csv")).unwrap(),
        format!("{HEADER}{LIVE}"),
        "nothing installed after a failure"
    );

    let (ok, stdout, stderr) = refresh(&db, &["--from", dir, "--max-change", "70"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(state(&db).await.0.len(), 5);

    let (ok, _, stderr) = refresh(&db, &["--from", "/nonexistent"]).await;
    assert!(!ok);
    assert_eq!(stderr.trim(), "refresh: /nonexistent is not a directory");
}

/// Loads `source` into cn, then an edited copy of it over it (some ranges
/// with another province or carrier, some removed), then `source` again:
/// the last import's report must give back exactly the edits, counted
/// here from the exported rows.
pub async fn reloading_after_an_edited_copy_reports_exactly_the_edits(source: &Path) {
    let db = TestDb::new().await;
    let mut loaded = options(source.to_owned());
    import(&db, &loaded).await.unwrap();
    let mut exported = Vec::new();
    import::export(&db.client().await, Table::Cn, &mut exported)
        .await
        .unwrap();

    let mut reader = csv::Reader::from_reader(exported.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (start, end, province, carrier) = (
        column("start_ip"),
        column("end_ip"),
        column("province_name"),
        column("carrier_name"),
    );
    let size = |row: &csv::StringRecord| {
        let ip = |i: usize| u32::from(row[i].parse::<std::net::Ipv4Addr>().unwrap()) as u128;
        ip(end) - ip(start) + 1
    };
    let (mut provinces, mut carriers, mut removed) = ((0u128, 0u64), (0u128, 0u64), (0u128, 0u64));
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&headers).unwrap();
    for (i, row) in reader.records().enumerate() {
        let mut row: Vec<String> = row.unwrap().iter().map(str::to_owned).collect();
        let record = csv::StringRecord::from(row.clone());
        match i % 50 {
            7 => {
                provinces = (provinces.0 + size(&record), provinces.1 + 1);
                row[province] = "测试省".to_owned();
            }
            23 => {
                carriers = (carriers.0 + size(&record), carriers.1 + 1);
                row[carrier] = "测试运营商".to_owned();
            }
            41 => {
                removed = (removed.0 + size(&record), removed.1 + 1);
                continue;
            }
            _ => {}
        }
        writer.write_record(&row).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.csv");
    std::fs::write(&edited, writer.into_inner().unwrap()).unwrap();
    let ImportOutcome::Loaded { rows: edited_rows, .. } = import(&db, &options(edited)).await.unwrap() else {
        panic!("the edited copy did not load")
    };

    loaded.force = true;
    let ImportOutcome::Loaded { rows, report, .. } = import(&db, &loaded).await.unwrap() else {
        panic!("not loaded")
    };
    assert!(
        provinces.1 > 0 && carriers.1 > 0 && removed.1 > 0,
        "the source is too small to edit"
    );
    assert_eq!((report.live.ranges, report.new.ranges), (edited_rows, rows));
    let by_field: HashMap<&str, (u128, u64)> = report
        .changed_by_field
        .iter()
        .map(|c| (c.field, (c.span.addresses, c.span.ranges)))
        .collect();
    assert_eq!(by_field["province"], provinces);
    assert_eq!(by_field["carrier"], carriers);
    assert_eq!(
        (by_field["country"], by_field["city"], by_field["district"]),
        ((0, 0), (0, 0), (0, 0))
    );
    assert_eq!(
        (report.changed.addresses, report.changed.ranges),
        (provinces.0 + carriers.0, provinces.1 + carriers.1)
    );
    assert_eq!((report.newly_covered.addresses, report.newly_covered.ranges), removed);
    assert_eq!(report.no_longer_covered, Default::default());
    assert_eq!(report.new.addresses, report.live.addresses + removed.0);
    let share = (provinces.0 + carriers.0) as f64 / report.live.addresses as f64 * 100.0;
    assert!((report.changed_percent - share).abs() < 1e-9);
    // Every transition comes from an edited place, and they are sorted.
    assert!(report
        .top_transitions
        .iter()
        .all(|t| t.from.contains("测试省") || t.from.contains("测试运营商")));
    assert!(report
        .top_transitions
        .windows(2)
        .all(|w| w[0].addresses >= w[1].addresses));
    let printed = report.to_string();
    assert!(printed.contains(&grouped(provinces.0 + carriers.0)), "{printed}");
}

fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn reloading_the_sample_after_an_edited_copy_reports_exactly_the_edits() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/cn.csv");
    reloading_after_an_edited_copy_reports_exactly_the_edits(&sample).await;
}

/// A snapshot's ranges, to compare two whole.
fn ranges(snapshot: &xm_ip_service::data::index::Snapshot) -> Vec<(u128, u128, xm_ip_service::domain::Place)> {
    snapshot
        .index
        .ranges()
        .map(|(start, end, place)| (start, end, place.clone()))
        .collect()
}

async fn kept_rows(db: &TestDb) -> i64 {
    let client = db.client().await;
    let row = client
        .query_one("SELECT count(*) FROM ip_service_import_changes", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn an_import_keeps_its_changed_rows_for_the_data_it_replaced_and_applying_them_gives_the_whole_table() {
    let db = TestDb::new().await;
    let files = Files::new();
    import(&db, &options(files.csv("v1.csv", LIVE))).await.unwrap();
    let mut client = store::connect(&db.url).await.unwrap();
    let v1 = store::load_snapshot(&mut client, Table::Cn).await.unwrap();

    import(&db, &options(files.csv("v2.csv", UPDATE))).await.unwrap();
    let (applied, rows) = store::load_changes(&mut client, Table::Cn, &v1)
        .await
        .unwrap()
        .expect("the update kept its changed rows for v1");
    // Three live ranges go; five new ones come.
    assert_eq!(rows, 8);
    let v2 = store::load_snapshot(&mut client, Table::Cn).await.unwrap();
    assert_eq!(applied.version, v2.version);
    assert_eq!(ranges(&applied), ranges(&v2));
    assert_eq!(applied.index.places(), v2.index.places());
    assert!(
        store::load_changes(&mut client, Table::Cn, &v2)
            .await
            .unwrap()
            .is_none(),
        "the changes fit only the data they were made against"
    );

    // The next import's rows replace them: v1 no longer fits, v2 does.
    import(&db, &options(files.csv("v3.csv", LIVE))).await.unwrap();
    assert_eq!(kept_rows(&db).await, 8);
    assert!(store::load_changes(&mut client, Table::Cn, &v1)
        .await
        .unwrap()
        .is_none());
    let (applied, _) = store::load_changes(&mut client, Table::Cn, &v2).await.unwrap().unwrap();
    assert_eq!(ranges(&applied), ranges(&v1));
}

#[tokio::test]
async fn an_import_that_changes_most_rows_keeps_none_and_the_whole_table_is_read() {
    let db = TestDb::new().await;
    let files = Files::new();
    // 12,000 /24s, then the same with another carrier: 24,000 changed rows,
    // more than a quarter of the table and more than 10,000.
    let rows = |carrier: &str| -> String {
        (0..12_000u32)
            .map(|i| {
                let (a, b) = (10 + i / 256, i % 256);
                format!("{a}.{b}.0.0,{a}.{b}.0.255,中国,广东,广州,,{carrier}\n")
            })
            .collect()
    };
    import(&db, &options(files.csv("v1.csv", &rows("电信")))).await.unwrap();
    let mut client = store::connect(&db.url).await.unwrap();
    let v1 = store::load_snapshot(&mut client, Table::Cn).await.unwrap();
    import(&db, &options(files.csv("v2.csv", &rows("联通")))).await.unwrap();
    assert_eq!(kept_rows(&db).await, 0);
    assert!(store::load_changes(&mut client, Table::Cn, &v1)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn changed_rows_are_refused_for_data_edited_by_hand_since_it_was_read() {
    let db = TestDb::new().await;
    let files = Files::new();
    import(&db, &options(files.csv("v1.csv", LIVE))).await.unwrap();
    let mut client = store::connect(&db.url).await.unwrap();
    let v1 = store::load_snapshot(&mut client, Table::Cn).await.unwrap();
    // A row edited by hand to what the update holds: the table's version
    // does not change, and the update's changes do not name the row.
    client
        .batch_execute("UPDATE ip_service_cn SET carrier_name = '电信' WHERE start_ip = 16777472")
        .await
        .unwrap();
    import(&db, &options(files.csv("v2.csv", UPDATE))).await.unwrap();
    let Err(refused) = store::load_changes(&mut client, Table::Cn, &v1).await else {
        panic!("changes applied to data that lacks a row");
    };
    assert!(refused.to_string().contains("edited by hand"), "{refused}");
}
