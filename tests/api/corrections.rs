//! Corrections (`ip_service_overrides`): they outrank every source in
//! every mode and API, in their own language only; a partial one keeps
//! the source's other fields; they survive imports of the tables, expire
//! without an import, and come in only through the importer's checks.

use std::time::Duration;

use serde_json::Value;
use xm_ip_service::config::DataSource;
use xm_ip_service::thrift::GeoInfo;

use crate::cli::run;
use crate::helpers::{eventually, local_settings, Options, TestApp, TestDb};
use crate::http::{get, http};
use crate::memory::{away_database, with_snapshots};

/// Corrections of the fixture data: a partial one of a cn row (city and
/// its code), one of a MaxMind answer (the carrier), one where no source
/// knows the place, and one of the v6 table; each in zh-CN, some in en.
const CORRECTIONS: &str = "network,lang,country_name,city_name,city_code,carrier_name,reason,source
183.62.57.0/24,zh-CN,,深圳,440300,,CDN local-DNS findings,cdn-team
183.62.57.0/24,en,,Shenzhen,,,CDN local-DNS findings,cdn-team
8.8.8.0/24,zh-CN,,,,谷歌光纤,seen from the access network,ops
8.8.8.0/24,en,,,,Google Fiber,seen from the access network,ops
5.5.5.0/24,zh-CN,德国,,,,registry says so,ops
240e:1::/32,zh-CN,,,,联通,BGP moved,ops
";

/// `(error_no, source, country, city, city_code, carrier, corrected)`.
type Seen = (i32, String, String, String, String, String, Option<bool>);

fn seen(g: &GeoInfo) -> Seen {
    let t = |v: &Option<String>| v.clone().unwrap_or_default();
    (
        g.error_no.unwrap_or(-1),
        t(&g.geoip_source),
        t(&g.geoip_country_name),
        t(&g.geoip_city_name),
        t(&g.geoip_city_code),
        t(&g.geoip_carrier),
        g.geoip_corrected,
    )
}

fn answer(error_no: i32, source: &str, country: &str, city: &str, code: &str, carrier: &str, corrected: bool) -> Seen {
    let s = str::to_owned;
    (
        error_no,
        s(source),
        s(country),
        s(city),
        s(code),
        s(carrier),
        corrected.then_some(true),
    )
}

const PROBES: [&str; 6] = [
    "183.62.57.1",
    "183.62.56.200",
    "8.8.8.8",
    "5.5.5.5",
    "240e:1::1",
    "10.0.0.1",
];

async fn every_method_applies_the_corrections(app: &TestApp, mode: &str) {
    let zh = app.by_ip(&PROBES).await;
    let got: Vec<Seen> = zh.iter().map(seen).collect();
    assert_eq!(
        got,
        [
            // Only the city is corrected: province, district and carrier stay.
            answer(0, "cn", "中国", "深圳", "440300", "电信", true),
            // The same cn row outside the correction's range.
            answer(0, "cn", "中国", "广州", "440100", "电信", false),
            answer(0, "maxmind", "美国", "芒廷维尤", "5375480", "谷歌光纤", true),
            // No source knows the place: the correction answers it.
            answer(0, "correction", "德国", "", "", "", true),
            answer(0, "v6", "中国", "深圳", "440300", "联通", true),
            answer(2, "", "", "", "", "", false),
        ],
        "{mode}: zh-CN"
    );
    assert_eq!(zh[0].geoip_province_name.as_deref(), Some("广东"), "{mode}");
    assert_eq!(zh[0].geoip_district_name.as_deref(), Some("天河区"), "{mode}");
    assert_eq!(
        zh[3].geoip_asn,
        Some(3320),
        "{mode}: the network stays with a corrected answer"
    );
    for (ip, g) in PROBES.iter().zip(&zh) {
        let one = app.by_ip(&[ip]).await.remove(0);
        assert_eq!(&one, g, "{mode}: {ip} alone");
    }

    // English answers take only the English corrections: nothing leaks
    // from zh-CN.
    let en = app.with_lang("en", &PROBES).await;
    let got: Vec<(i32, String, String, Option<bool>)> = en
        .iter()
        .map(|g| {
            let (error_no, _, _, city, _, carrier, corrected) = seen(g);
            (error_no, city, carrier, corrected)
        })
        .collect();
    let s = str::to_owned;
    assert_eq!(
        got,
        [
            (0, s("Shenzhen"), s("China Telecom"), Some(true)),
            (0, s("Guangzhou"), s("China Telecom"), None),
            (0, s("Mountain View"), s("Google Fiber"), Some(true)),
            (2, s(""), s(""), None),
            // MaxMind's answer, without the zh-CN correction's carrier.
            (0, s(""), s(""), None),
            (2, s(""), s(""), None),
        ],
        "{mode}: en"
    );
    // MaxMind's other languages take the English corrections, as MaxMind
    // itself falls back to English names.
    for g in [
        app.with_lang("de", &["8.8.8.8"]).await.remove(0),
        app.i18n(&["8.8.8.8"]).await.remove(0),
    ] {
        assert_eq!(
            (g.geoip_carrier.as_deref(), g.geoip_corrected),
            (Some("Google Fiber"), Some(true)),
            "{mode}: {g:?}"
        );
    }
    assert_eq!(
        app.with_lang("de", &["8.8.8.8"]).await[0].geoip_country_name.as_deref(),
        Some("USA")
    );

    // HTTP: the same answers, the flag only where corrected.
    let corrected = get(http(app), "/api/ip_query?ip=183.62.57.1").await.json();
    assert_eq!(
        (&corrected["geoip_city_name"], &corrected["geoip_corrected"]),
        (&Value::from("深圳"), &Value::from(true)),
        "{mode}: {corrected}"
    );
    let plain = get(http(app), "/api/ip_query?ip=183.62.56.200").await.json();
    assert!(plain.get("geoip_corrected").is_none(), "{mode}: {plain}");
}

async fn import_corrections(url: &str, csv: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrides.csv");
    std::fs::write(&path, csv).unwrap();
    let mut args = vec![
        "import",
        "--database-url",
        url,
        "--table",
        "overrides",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn corrections_change_every_method_and_api_in_both_database_modes_and_memory_mode_follows_by_notify() {
    let postgres = TestApp::spawn().await;
    // Only NOTIFY can tell this one in time.
    let memory = postgres
        .spawn_beside(Options::memory().with(|s| s.reload_interval = Duration::from_secs(3600)))
        .await;
    let url = postgres.db().url.clone();
    assert_eq!(memory.by_ip(&["183.62.57.1"]).await[0].geoip_corrected, None);

    let (ok, stdout, stderr) = import_corrections(&url, CORRECTIONS, &[]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("0 corrections live, 6 in the file: 6 added, 0 removed, 0 kept"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("+ 183.62.57.0 - 183.62.57.255 (zh-CN) city_code=440300 city_name=深圳: CDN local-DNS findings"),
        "{stdout}"
    );
    every_method_applies_the_corrections(&postgres, "postgres").await;
    eventually(
        Duration::from_secs(10),
        "memory mode never heard of the corrections",
        || async {
            match memory.by_ip(&["183.62.57.1"]).await[0].geoip_corrected {
                Some(true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    every_method_applies_the_corrections(&memory, "memory").await;

    // The same file again is a no-op; export gives back what import takes.
    let (ok, stdout, _) = import_corrections(&url, CORRECTIONS, &[]).await;
    assert!(ok && stdout.contains("already holds"), "{stdout}");
    let (ok, exported, stderr) = run(&["export", "--database-url", &url, "--table", "overrides"]).await;
    assert!(ok, "{stderr}");
    assert!(
        exported.starts_with(
            "start_ip,end_ip,lang,country_code,country_name,province_code,province_name,city_code,city_name,\
             district_name,carrier_name,reason,source,expires_at\n"
        ),
        "{exported}"
    );
    assert!(exported.contains("\n8.8.8.0,8.8.8.255,en,,,,,,,,Google Fiber,seen from the access network,ops,\n"));
    let (ok, stdout, stderr) = import_corrections(&url, &exported, &["--dry-run"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("0 added, 0 removed, 6 kept"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrections_survive_imports_of_the_tables_they_correct() {
    let app = TestApp::spawn().await;
    let memory = app
        .spawn_beside(Options::memory().with(|s| s.reload_interval = Duration::from_millis(200)))
        .await;
    let url = app.db().url.clone();
    let (ok, _, stderr) = import_corrections(&url, CORRECTIONS, &[]).await;
    assert!(ok, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let cn = dir.path().join("cn.csv");
    std::fs::write(
        &cn,
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n\
         183.62.0.0,183.62.255.255,中国,广东,佛山,,移动\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["import", "--database-url", &url, "--table", "cn", cn.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    let expected = |g: &GeoInfo| (g.geoip_city_name.clone(), g.geoip_carrier.clone(), g.geoip_corrected);
    let want = (Some("深圳".to_owned()), Some("移动".to_owned()), Some(true));
    assert_eq!(expected(&app.by_ip(&["183.62.57.1"]).await[0]), want, "postgres");
    eventually(
        Duration::from_secs(10),
        "memory mode never served the new cn table",
        || async {
            let g = memory.by_ip(&["183.62.57.1", "183.62.58.1"]).await;
            match (expected(&g[0]), g[1].geoip_city_name.as_deref()) {
                (got, Some("佛山")) if got == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_correction_stops_applying_without_an_import() {
    let app = TestApp::spawn().await;
    let memory = app
        .spawn_beside(Options::memory().with(|s| s.reload_interval = Duration::from_millis(200)))
        .await;
    let url = app.db().url.clone();
    let soon = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(8));
    let csv = format!(
        "network,city_name,reason,expires_at\n183.62.57.0/24,深圳,until the move,{soon}\n183.62.56.0/24,佛山,for good,\n"
    );
    let (ok, _, stderr) = import_corrections(&url, &csv, &[]).await;
    assert!(ok, "{stderr}");
    let cities = |answers: Vec<GeoInfo>| -> Vec<String> {
        answers
            .iter()
            .map(|g| g.geoip_city_name.clone().unwrap_or_default())
            .collect()
    };
    let probes = ["183.62.57.1", "183.62.56.200"];
    eventually(Duration::from_secs(10), "the corrections never applied", || async {
        let (p, m) = (cities(app.by_ip(&probes).await), cities(memory.by_ip(&probes).await));
        match (p == ["深圳", "佛山"], m == ["深圳", "佛山"]) {
            (true, true) => Ok(()),
            _ => Err(format!("{p:?} {m:?}")),
        }
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the expired correction still applies",
        || async {
            let (p, m) = (cities(app.by_ip(&probes).await), cities(memory.by_ip(&probes).await));
            match (p == ["广州", "佛山"], m == ["广州", "佛山"]) {
                (true, true) => Ok(()),
                _ => Err(format!("{p:?} {m:?}")),
            }
        },
    )
    .await;
    assert_eq!(app.by_ip(&["183.62.57.1"]).await[0].geoip_corrected, None);
}

#[tokio::test]
async fn bad_corrections_are_refused_with_one_line_and_the_live_ones_kept() {
    let app = TestApp::spawn().await;
    let url = app.db().url.clone();
    let (ok, _, stderr) = import_corrections(&url, CORRECTIONS, &[]).await;
    assert!(ok, "{stderr}");
    for (csv, says) in [
        (
            "network,lang,carrier_name,reason\n1.2.3.0/24,zh-CN,a,x\n1.2.3.128/25,zh-CN,b,x\n",
            "ranges overlap: 1.2.3.0 - 1.2.3.255 (zh-CN) (line 2) and 1.2.3.128 - 1.2.3.255 (zh-CN) (line 3)",
        ),
        (
            "network,carrier_name,reason\n1.2.3.0/24,,x\n",
            "line 2: 1.2.3.0 - 1.2.3.255 (zh-CN) corrects nothing",
        ),
        (
            "network,country_code,reason\n1.2.3.0/24,ZZ,x\n",
            "line 2: country_code \"ZZ\" is not an ISO 3166-1 alpha-2 code",
        ),
        ("network,carrier,reason\n1.2.3.0/24,x,y\n", "unknown column \"carrier\""),
    ] {
        let (ok, _, stderr) = import_corrections(&url, csv, &[]).await;
        assert!(!ok && stderr.contains(says), "{csv}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one readable line: {stderr}");
    }
    // Removing most of the live ones is over a limit of 50%.
    let (ok, stdout, stderr) = import_corrections(
        &url,
        "network,carrier_name,reason\n9.9.9.0/24,x,y\n",
        &["--max-change", "50"],
    )
    .await;
    assert!(
        !ok && stderr.contains("100.00% of the live corrections would be removed or changed, over the limit of 50%"),
        "{stdout} {stderr}"
    );
    assert_eq!(
        app.by_ip(&["183.62.57.1"]).await[0].geoip_city_name.as_deref(),
        Some("深圳")
    );
    let outcomes: Vec<String> = app
        .db()
        .client()
        .await
        .query(
            "SELECT outcome FROM ip_service_imports WHERE table_name = 'ip_service_overrides' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outcomes, ["succeeded", "refused"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_mode_applies_overrides_csv_and_follows_its_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cn.csv"),
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n\
         183.62.0.0,183.62.255.255,中国,广东,广州,,电信\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("overrides.csv"), CORRECTIONS).unwrap();
    let mut settings = local_settings(DataSource::Files(dir.path().to_owned()));
    settings.reload_interval = Duration::from_millis(100);
    settings.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let files = TestApp::start(settings, None, None).await;
    let g = files.by_ip(&["183.62.57.1", "183.62.56.1", "5.5.5.5"]).await;
    let got: Vec<Seen> = g.iter().map(seen).collect();
    assert_eq!(
        got,
        [
            answer(0, "cn", "中国", "深圳", "440300", "电信", true),
            answer(0, "cn", "中国", "广州", "440100", "电信", false),
            answer(0, "correction", "德国", "", "", "", true),
        ]
    );
    // The other APIs: one address over HTTP, and English answers.
    let one = get(http(&files), "/api/ip_query?ip=183.62.57.1").await.json();
    assert_eq!(
        (&one["geoip_city_name"], &one["geoip_corrected"]),
        (&Value::from("深圳"), &Value::from(true)),
        "{one}"
    );
    // No en table and no MaxMind here: the English correction alone answers.
    let en = files.with_lang("en", &["183.62.57.1"]).await.remove(0);
    assert_eq!(seen(&en), answer(0, "correction", "", "Shenzhen", "", "", true));
    let next = dir.path().join("next.tmp");
    std::fs::write(&next, "network,carrier_name,reason\n183.62.56.0/24,联通,moved\n").unwrap();
    std::fs::rename(&next, dir.path().join("overrides.csv")).unwrap();
    eventually(
        Duration::from_secs(10),
        "the rewritten corrections were never served",
        || async {
            let g = files.by_ip(&["183.62.57.1", "183.62.56.1"]).await;
            match (g[0].geoip_corrected, g[1].geoip_carrier.as_deref()) {
                (None, Some("联通")) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_mode_keeps_the_corrections_in_its_snapshots() {
    let db = TestDb::new().await.with_fixtures().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ip_service_overrides (start_ip, end_ip, lang, city_name, reason) \
             VALUES ('183.62.57.0', '183.62.57.255', 'zh-CN', '深圳', 'a test')",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = TestApp::start(with_snapshots(&db.url, dir.path()), None, None).await;
    let expected = first.by_ip(&["183.62.57.1"]).await;
    assert_eq!(expected[0].geoip_city_name.as_deref(), Some("深圳"));
    let path = xm_ip_service::data::source::disk::corrections_path(dir.path());
    eventually(
        Duration::from_secs(10),
        "the corrections' snapshot was not written",
        || async {
            match xm_ip_service::data::source::disk::read_corrections(dir.path(), std::time::SystemTime::now()) {
                Ok(Some(c)) if c.in_force() == 1 => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.map(|c| c.in_force())))),
            }
        },
    )
    .await;
    first.shutdown().await;
    assert!(path.exists());

    let second = TestApp::start(with_snapshots(&away_database(), dir.path()), None, None).await;
    assert_eq!(second.by_ip(&["183.62.57.1"]).await, expected, "the database away");
}

#[tokio::test]
async fn check_names_the_corrections_the_table_now_agrees_with() {
    let app = TestApp::spawn().await;
    let url = app.db().url.clone();
    let csv = "network,lang,city_name,carrier_name,reason
183.62.57.0/24,zh-CN,广州,电信,the table was wrong
183.62.58.0/24,zh-CN,深圳,,still wrong
183.62.57.0/24,en,Guangzhou,,the table was wrong
240e::/24,zh-CN,深圳,,the table was wrong
";
    let (ok, _, stderr) = import_corrections(&url, csv, &[]).await;
    assert!(ok, "{stderr}");
    let (_, stdout, stderr) = run(&["check", "--database-url", &url]).await;
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ip_service_overrides"))
        .collect();
    assert_eq!(
        lines,
        [
            "ip_service_overrides 183.62.57.0 - 183.62.57.255 (en): ip_service_en now says the same throughout; the correction can go",
            "ip_service_overrides 183.62.57.0 - 183.62.57.255 (zh-CN): ip_service_cn now says the same throughout; the correction can go",
            "ip_service_overrides 240e:: - 240e:ff:ffff:ffff:ffff:ffff:ffff:ffff (zh-CN): ip_service_v6 now says the same throughout; the correction can go",
        ],
        "{stdout}"
    );
    assert!(
        stderr.contains("ip_service_overrides: 4 corrections in force, 3 agreeing with the table underneath"),
        "{stderr}"
    );
}
