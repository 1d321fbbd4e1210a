//! Memory mode: the index answers exactly as PostgreSQL does, follows
//! imports atomically, catches missed notifications, and keeps serving
//! when a rebuild fails.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use xm_ip_service::data::store::Table;
use xm_ip_service::thrift::GeoInfo;

use crate::helpers::{by_ip_at, eventually, strings, Options, TestApp, TestDb, OVERLAPPING_CN_VERSION};

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Places that exercise each rule: China rows, non-China rows, a row
/// labelled China only by its code, and blank rows.
const PLACES: [[&str; 8]; 6] = [
    ["中国", "广东", "广州", "天河区", "电信", "CN", "440000", "440100"],
    ["中国", "北京", "北京", "", "联通", "CN", "110000", "110100"],
    ["美国", "加利福尼亚", "", "", "Quad9", "US", "", ""],
    ["日本", "东京都", "", "", "", "JP", "", ""],
    ["", "", "", "", "", "CN", "", ""],
    ["", "", "", "", "", "", "", ""],
];

/// `n` random disjoint ranges from `base`: some adjacent, some with gaps,
/// sizes from one address to 65,536. Returns `(start, end, place)`.
fn random_ranges(rng: &mut Rng, base: u128, n: usize) -> Vec<(u128, u128, usize)> {
    let mut at = base;
    (0..n)
        .map(|_| {
            at += match rng.below(3) {
                0 => 0,
                _ => 1 + rng.below(1 << 16) as u128,
            };
            let size = match rng.below(4) {
                0 => 1,
                _ => 1 + rng.below(1 << 16) as u128,
            };
            let range = (at, at + size - 1, rng.below(PLACES.len() as u64) as usize);
            at += size;
            range
        })
        .collect()
}

async fn insert(db: &TestDb, table: &str, ranges: &[(u128, u128, usize)], v6: bool) {
    let bound = |n: u128| {
        if v6 {
            format!("'{}'", Ipv6Addr::from(n))
        } else {
            n.to_string()
        }
    };
    let values: Vec<String> = ranges
        .iter()
        .map(|&(start, end, place)| {
            let p = PLACES[place];
            format!(
                "({}, {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
                bound(start),
                bound(end),
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5],
                p[6],
                p[7]
            )
        })
        .collect();
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO {table} (start_ip, end_ip, country_name, province_name, city_name, district_name, \
             carrier_name, country_code, province_code, city_code) VALUES {}",
            values.join(",")
        ))
        .await
        .unwrap();
}

/// Every edge of every range, the ends of the address space, and random
/// addresses around the ranges.
fn probes(rng: &mut Rng, ranges: &[(u128, u128, usize)], v6: bool) -> Vec<String> {
    let text = |n: u128| {
        if v6 {
            Ipv6Addr::from(n).to_string()
        } else {
            Ipv4Addr::from(n as u32).to_string()
        }
    };
    let mut out = Vec::new();
    for &(start, end, _) in ranges {
        for n in [start.saturating_sub(1), start, start + (end - start) / 2, end, end + 1] {
            out.push(text(n));
        }
    }
    let (low, high) = (ranges[0].0, ranges[ranges.len() - 1].1);
    for _ in 0..2000 {
        out.push(text(low + u128::from(rng.next()) % (high - low)));
    }
    out
}

/// The answers to `inputs`, asked in batches: `queryGeoInfo` with `lang`,
/// or `queryGeoInfoByIP`.
pub async fn answers(app: &TestApp, lang: Option<&str>, inputs: &[String]) -> Vec<GeoInfo> {
    let mut all = Vec::new();
    for chunk in inputs.chunks(1000) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        all.extend(match lang {
            None => app.by_ip(&chunk).await,
            Some(lang) => app.with_lang(lang, &chunk).await,
        });
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_answers_exactly_as_postgres_on_random_addresses_and_every_boundary() {
    let db = TestDb::new().await.with_fixtures().await;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Clear of the fixture rows: 11.0.0.0 up, and 2a00:: up.
    let cn = random_ranges(&mut rng, u128::from(u32::from(Ipv4Addr::new(11, 0, 0, 0))), 3000);
    let en = random_ranges(&mut rng, u128::from(u32::from(Ipv4Addr::new(11, 0, 0, 0))), 3000);
    let v6 = random_ranges(&mut rng, u128::from("2a00::".parse::<Ipv6Addr>().unwrap()), 3000);
    insert(&db, "ip_service_cn", &cn, false).await;
    insert(&db, "ip_service_en", &en, false).await;
    insert(&db, "ip_service_v6", &v6, true).await;

    let postgres = TestApp::spawn_on(db, Options::default()).await;
    let memory = postgres.spawn_beside(Options::memory()).await;

    let mut inputs = strings(&[
        "0.0.0.0",
        "0.0.0.255",
        "0.0.1.0",
        "255.255.255.255",
        "255.255.255.0",
        "255.255.254.255",
        "::",
        "::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:feff",
        "::ffff:183.62.57.1",
        "183.62.57.1",
        "8.8.8.8",
        "9.9.9.9",
        "10.0.0.1",
        "240e:1::1",
        "not an address",
        "",
    ]);
    inputs.extend(probes(&mut rng, &cn, false));
    inputs.extend(probes(&mut rng, &en, false));
    inputs.extend(probes(&mut rng, &v6, true));

    for lang in [None, Some("en")] {
        let (expected, got) = (
            answers(&postgres, lang, &inputs).await,
            answers(&memory, lang, &inputs).await,
        );
        assert_eq!(expected.len(), inputs.len());
        let found = expected.iter().filter(|g| g.error_no == Some(0)).count();
        assert!(found > 10_000, "only {found} found: the probes miss the rows");
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(want, have, "lang {lang:?}, input {:?}", inputs[i]);
        }
    }
}

/// A CSV of 2,000 adjacent /24s from 20.0.0.0, all with `carrier`.
fn csv_of(carrier: &str) -> String {
    let mut out = String::from("start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n");
    for i in 0..2000u32 {
        let start = (20u32 << 24) + i * 256;
        let ip = |v: u32| Ipv4Addr::from(v).to_string();
        out.push_str(&format!(
            "{},{},中国,广东,广州,,{carrier}\n",
            ip(start),
            ip(start + 255)
        ));
    }
    out
}

async fn import_csv(db: &TestDb, dir: &tempfile::TempDir, carrier: &str) {
    use xm_ip_service::data::import::{self, ImportOptions};
    let path = dir.path().join(format!("{carrier}.csv"));
    std::fs::write(&path, csv_of(carrier)).unwrap();
    let mut client = xm_ip_service::data::store::connect(&db.url).await.unwrap();
    let options = ImportOptions {
        force: true,
        ..ImportOptions::new(xm_ip_service::data::store::Table::Cn, path)
    };
    import::import(&mut client, &options).await.unwrap();
}

/// The carriers of one batch spread over the imported rows.
async fn carriers(addr: SocketAddr) -> Vec<String> {
    let probe: Vec<String> = (0..50u32)
        .map(|i| Ipv4Addr::from((20u32 << 24) + i * 40 * 256 + 7).to_string())
        .collect();
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    by_ip_at(addr, &probe)
        .await
        .into_iter()
        .map(|g| g.geoip_carrier.unwrap_or_default())
        .collect()
}

/// Waits until every address of the probe batch has `carrier`.
async fn until_carrier(app: &TestApp, carrier: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if carriers(app.addr).await.iter().all(|c| c == carrier) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{carrier} not served within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_switches_a_readers_answers_at_one_instant_never_mixing_old_and_new() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    import_csv(&db, &dir, "旧").await;
    let app = TestApp::spawn_on(db, Options::memory()).await;
    assert!(carriers(app.addr).await.iter().all(|c| c == "旧"));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reader = {
        let addr = app.addr;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !*stopped.borrow() {
                let batch = carriers(addr).await;
                let first = batch[0].clone();
                assert!(
                    batch.iter().all(|c| *c == first),
                    "a batch mixed old and new: {batch:?}"
                );
                if seen.last() != Some(&first) {
                    seen.push(first);
                }
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    import_csv(app.db(), &dir, "新").await;
    let took = until_carrier(&app, "新", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    assert_eq!(reader.await.unwrap(), ["旧", "新"], "answers went back after switching");
    assert!(took < Duration::from_secs(5), "new data after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_notification_was_lost_is_caught_by_the_timer() {
    let app = TestApp::spawn_with(Options::memory().with(|s| {
        s.reload_interval = Duration::from_millis(300);
    }))
    .await;
    assert_eq!(
        app.by_ip(&["183.62.57.1"]).await[0].geoip_city_name.as_deref(),
        Some("广州")
    );
    // An import as a crashed notifier would leave it: new rows and a new
    // history entry, but no NOTIFY.
    app.db()
        .client()
        .await
        .batch_execute(
            "BEGIN;
             UPDATE ip_service_cn SET city_name = '深圳' WHERE start_ip = 3074308195;
             INSERT INTO ip_service_imports (table_name, source_file, sha256, format, outcome, finished_at)
             VALUES ('ip_service_cn', 'by hand', 'x', 'csv', 'succeeded', now());
             COMMIT;",
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "not reloaded", || async {
        let g = &app.by_ip(&["183.62.57.1"]).await[0];
        if g.geoip_city_name.as_deref() == Some("深圳") {
            Ok(())
        } else {
            Err(format!("{g:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_made_while_the_listener_was_disconnected_is_loaded_when_it_returns() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    import_csv(&db, &dir, "旧").await;
    // The timer is far off: only the reconnection can notice.
    let app = TestApp::spawn_on(
        db,
        Options::memory().with(|s| {
            s.reload_interval = Duration::from_secs(3600);
        }),
    )
    .await;
    let admin = app.db().client().await;
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'xm-ip-service reload listener' AND datname = current_database()";
    eventually(Duration::from_secs(5), "no listener connected", || async {
        match admin.query_one(terminate, &[]).await.unwrap().get::<_, i64>(0) {
            0 => Err("none terminated".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    import_csv(app.db(), &dir, "新").await;
    until_carrier(&app, "新", Duration::from_secs(10)).await;
}

/// A memory-mode server that checks for new data every 200 ms, answering
/// 183.62.57.1 with the fixtures' 广州; and a client on its database.
async fn reloading_app() -> (TestApp, tokio_postgres::Client) {
    let app = TestApp::spawn_with(Options::memory().with(|s| {
        s.reload_interval = Duration::from_millis(200);
    }))
    .await;
    assert_eq!(city(&app.by_ip(&["183.62.57.1"]).await[0]), "广州");
    let client = app.db().client().await;
    (app, client)
}

fn city(g: &GeoInfo) -> String {
    g.geoip_city_name.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_that_fails_keeps_the_old_snapshot_serving_until_one_succeeds() {
    let (app, client) = reloading_app().await;
    // A new version the loader cannot read: a column it needs is gone.
    client
        .batch_execute(
            "BEGIN;
             UPDATE ip_service_cn SET city_name = '深圳' WHERE start_ip = 3074308195;
             ALTER TABLE ip_service_cn RENAME COLUMN district_name TO district;
             INSERT INTO ip_service_imports (table_name, source_file, sha256, format, outcome, finished_at)
             VALUES ('ip_service_cn', 'broken', 'x', 'csv', 'succeeded', now());
             COMMIT;
             NOTIFY ip_service_reload, 'ip_service_cn';",
        )
        .await
        .unwrap();
    // Several failed rebuilds later, the old rows still answer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let g = &app.by_ip(&["183.62.57.1", "240e:1::1"]).await;
    assert_eq!(
        (city(&g[0]), g[0].geoip_district_name.as_deref()),
        ("广州".into(), Some("天河区"))
    );
    assert_eq!(g[1].geoip_source.as_deref(), Some("v6"));

    client
        .batch_execute("ALTER TABLE ip_service_cn RENAME COLUMN district TO district_name")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "never rebuilt after the fix", || async {
        match city(&app.by_ip(&["183.62.57.1"]).await[0]) {
            city if city == "深圳" => Ok(()),
            city => Err(format!("the city is {city:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_that_overlap_are_refused_and_the_old_snapshot_keeps_serving() {
    let (app, client) = reloading_app().await;
    client
        .batch_execute(&format!(
            "{OVERLAPPING_CN_VERSION} NOTIFY ip_service_reload, 'ip_service_cn';"
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 183.62.57.1 = 3074308353: inside both rows; the old snapshot answers.
    assert_eq!(city(&app.by_ip(&["183.62.57.1"]).await[0]), "广州");
}

/// A database URL on a port where nothing listens: the database is away.
pub fn away_database() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://postgres@127.0.0.1:{port}/nowhere")
}

/// Memory mode on `url` keeping its snapshots in `dir`.
pub fn with_snapshots(url: &str, dir: &std::path::Path) -> xm_ip_service::config::Settings {
    use xm_ip_service::config::{DataSource, LookupMode, Postgres};
    let mut pg = Postgres::at(url);
    pg.lookup = LookupMode::Memory;
    pg.snapshot_dir = Some(dir.to_owned());
    crate::helpers::local_settings(DataSource::Postgres(pg))
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_mode_starts_from_its_snapshots_while_the_database_is_away() {
    let db = TestDb::new().await.with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let probe = ["183.62.57.1", "240e:1::1", "1.0.0.1"];
    let first = TestApp::start(with_snapshots(&db.url, dir.path()), None, None).await;
    let expected = first.by_ip(&probe).await;
    until_snapshots_are_written(dir.path()).await;
    first.shutdown().await;

    let away = away_database();
    let started = Instant::now();
    let second = TestApp::start(with_snapshots(&away, dir.path()), None, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(second.by_ip(&probe).await, expected);
    assert_eq!(expected[0].geoip_source.as_deref(), Some("cn"), "{:?}", expected[0]);
    // The network tables are snapshotted too.
    assert_eq!((expected[0].geoip_asn, expected[1].geoip_asn), (Some(4134), Some(4134)));

    // Without snapshots the same start is refused, as before.
    let mut none = with_snapshots(&away, dir.path());
    if let xm_ip_service::config::DataSource::Postgres(pg) = &mut none.source {
        pg.snapshot_dir = None;
    }
    assert!(xm_ip_service::serve::startup::Application::build(&none).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_written_before_the_network_tables_still_start_and_the_network_loads_after() {
    let db = TestDb::new().await.with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestApp::start(with_snapshots(&db.url, dir.path()), None, None).await;
    until_snapshots_are_written(dir.path()).await;
    first.shutdown().await;
    for table in [Table::Asn, Table::AsnV6] {
        std::fs::remove_file(xm_ip_service::data::source::disk::path_of(dir.path(), table)).unwrap();
    }

    // The database away: the place tables from their snapshots, no network.
    let away = away_database();
    let second = TestApp::start(with_snapshots(&away, dir.path()), None, None).await;
    let g = second.by_ip(&["183.62.57.1"]).await.remove(0);
    assert_eq!((g.geoip_source.as_deref(), g.geoip_asn), (Some("cn"), None));
    second.shutdown().await;

    // The database back: the first check loads the network tables.
    let mut settings = with_snapshots(&db.url, dir.path());
    settings.reload_interval = Duration::from_millis(200);
    let third = TestApp::start(settings, None, None).await;
    eventually(
        Duration::from_secs(10),
        "the network tables were never loaded",
        || async {
            match third.by_ip(&["183.62.57.1"]).await.remove(0).geoip_asn {
                Some(4134) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_snapshot_is_refused_and_the_tables_load_from_the_database() {
    let db = TestDb::new().await.with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestApp::start(with_snapshots(&db.url, dir.path()), None, None).await;
    let expected = first.by_ip(&["183.62.57.1"]).await;
    until_snapshots_are_written(dir.path()).await;
    first.shutdown().await;

    let path = xm_ip_service::data::source::disk::path_of(dir.path(), Table::Cn);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let second = TestApp::start(with_snapshots(&db.url, dir.path()), None, None).await;
    assert_eq!(second.by_ip(&["183.62.57.1"]).await, expected);
    // Loaded from the database, the snapshot is whole again.
    until_snapshots_are_written(dir.path()).await;
    assert!(xm_ip_service::data::source::disk::read(dir.path(), Table::Cn)
        .unwrap()
        .is_some());
}

/// Waits until every table's snapshot in `dir` is valid (they are written
/// in the background after a load), for at most ten seconds.
async fn until_snapshots_are_written(dir: &std::path::Path) {
    eventually(Duration::from_secs(10), "the snapshots were not written", || async {
        let unwritten: Vec<Table> = Table::ALL
            .into_iter()
            .filter(|&table| !matches!(xm_ip_service::data::source::disk::read(dir, table), Ok(Some(_))))
            .collect();
        if unwritten.is_empty() {
            Ok(())
        } else {
            Err(format!("{unwritten:?} not yet"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_edited_by_hand_since_an_instance_loaded_send_it_back_to_the_whole_table() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    import_csv(&db, &dir, "旧").await;
    let app = TestApp::spawn_on(db, Options::memory()).await;
    assert!(carriers(app.addr).await.iter().all(|c| c == "旧"));
    // By hand, the first /24 already says what the next import will: the
    // table's version does not change, and the import's changed rows do
    // not name that row, so applying them would leave it old here.
    app.db()
        .client()
        .await
        .batch_execute("UPDATE ip_service_cn SET carrier_name = '新' WHERE start_ip = 335544320")
        .await
        .unwrap();
    import_csv(app.db(), &dir, "新").await;
    // The probe batch includes 20.0.0.7, in the row edited by hand.
    until_carrier(&app, "新", Duration::from_secs(10)).await;
}
