//! The network behind an address (`geoip_asn`, `geoip_as_org`): set by
//! every method and API in both database modes, whichever source answered
//! the place or none, unset where the ASN data has nothing; and the ASN
//! tables' import with its change report.

use std::time::Duration;

use serde_json::{json, Value};
use xm_ip_service::config::DataSource;
use xm_ip_service::thrift::GeoInfo;

use crate::cli::run;
use crate::helpers::{eventually, local_settings, Options, TestApp, TestDb};
use crate::http::{get, http, post};

/// An answer's network: its AS number and organisation.
type Net<'a> = (i64, &'a str);

/// The fixture addresses, what `queryGeoInfoByIP` answers for each
/// (`error_no`), and the network every method gives it.
const EXPECTED: [(&str, i32, Option<Net>); 10] = [
    // A China row of the cn table.
    ("183.62.57.1", 0, Some((4134, "CHINANET-BACKBONE"))),
    // Abroad: MaxMind answers the place.
    ("8.8.8.8", 0, Some((15169, "Google LLC"))),
    ("240e:1::1", 0, Some((4134, "CHINANET-BACKBONE"))),
    ("2001:4860::8888", 0, Some((15169, "Google LLC"))),
    ("1.1.1.1", 0, Some((13335, "Cloudflare, Inc."))),
    // No source knows the place; the network is still told.
    ("5.5.5.5", 2, Some((3320, "Deutsche Telekom AG"))),
    // A table row outside China that MaxMind does not know.
    ("255.255.255.255", 0, Some((4_294_967_295, "The last AS"))),
    // No place and no network: neither field is set.
    ("10.0.0.1", 2, None),
    ("9.9.9.9", 0, None),
    ("not an ip", 1, None),
];

fn network(g: &GeoInfo) -> Option<Net<'_>> {
    match (g.geoip_asn, g.geoip_as_org.as_deref()) {
        (None, None) => None,
        (Some(asn), Some(org)) => Some((asn, org)),
        other => panic!("geoip_asn and geoip_as_org come together: {other:?} in {g:?}"),
    }
}

async fn every_method_gives_the_network(app: &TestApp, mode: &str) {
    let ips: Vec<&str> = EXPECTED.iter().map(|(ip, ..)| *ip).collect();
    let by_ip = app.by_ip(&ips).await;
    for ((ip, error_no, expected), g) in EXPECTED.iter().zip(&by_ip) {
        assert_eq!((g.error_no, network(g)), (Some(*error_no), *expected), "{mode}: {ip}");
        // A batch of one takes its own path through the server.
        let one = app.by_ip(&[ip]).await.remove(0);
        assert_eq!(&one, g, "{mode}: {ip} alone");
    }
    let i18n = app.i18n(&ips).await;
    for lang in ["en", "ja"] {
        let answers = app.with_lang(lang, &ips).await;
        for (((ip, _, expected), g), i18n) in EXPECTED.iter().zip(&answers).zip(&i18n) {
            assert_eq!(network(g), *expected, "{mode}: {ip} in {lang}");
            assert_eq!(network(i18n), *expected, "{mode}: {ip} by queryI18nGeoInfoByIP");
        }
    }
    // Over HTTP, one at a time and in a batch, as the same JSON.
    let batch = post(http(app), &json!({ "ips": ips }).to_string()).await.json();
    for (i, (ip, error_no, expected)) in EXPECTED.iter().enumerate() {
        let one = get(http(app), &format!("/api/ip_query?ip={}", ip.replace(' ', "%20")))
            .await
            .json();
        assert_eq!(one, batch[i], "{mode}: {ip} over HTTP");
        assert_eq!(one["error_no"], *error_no, "{mode}: {ip}");
        match expected {
            Some((asn, org)) => assert_eq!((&one["geoip_asn"], &one["geoip_as_org"]), (&json!(asn), &json!(org))),
            None => assert!(
                one.get("geoip_asn").is_none() && one.get("geoip_as_org").is_none(),
                "{one}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_and_api_carries_the_network_in_both_database_modes() {
    let postgres = TestApp::spawn().await;
    every_method_gives_the_network(&postgres, "postgres").await;
    let memory = postgres.spawn_beside(Options::memory()).await;
    every_method_gives_the_network(&memory, "memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_network_data_answers_are_as_before_and_the_service_is_ready() {
    let app = TestApp::spawn().await;
    let client = app.db().client().await;
    client
        .batch_execute("TRUNCATE ip_service_asn, ip_service_asn_v6")
        .await
        .unwrap();
    let answers = app.by_ip(&["183.62.57.1", "1.1.1.1"]).await;
    assert_eq!(answers[0].geoip_city_name.as_deref(), Some("广州"));
    assert!(answers.iter().all(|g| network(g).is_none()), "{answers:?}");
    let ready = get(http(&app), "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready
            .body
            .contains("table ip_service_asn is empty: answers carry no network"),
        "{}",
        ready.body
    );
}

/// The ASN file as ip-location-db gives it: no header, quoted names.
const LIVE: &str = "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"
1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd
183.62.0.0,183.62.255.255,4134,CHINANET-BACKBONE
";

/// Against [`LIVE`]: 1.0.4.0/22 changes its organisation's name, a /24
/// inside 183.62.0.0/16 is announced by another AS (the inner one wins),
/// and 1.0.0.0/24 is gone.
const UPDATE: &str = "1.0.4.0,1.0.7.255,38803,Gtelecom
183.62.0.0,183.62.255.255,4134,CHINANET-BACKBONE
183.62.57.0,183.62.57.255,4809,CHINANET-CN2
";

#[tokio::test(flavor = "multi_thread")]
async fn the_asn_table_imports_with_a_change_report_and_memory_mode_follows() {
    let app = TestApp::spawn().await;
    let memory = app
        .spawn_beside(Options::memory().with(|s| s.reload_interval = Duration::from_millis(200)))
        .await;
    let url = app.db().url.clone();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, rows).unwrap();
        path.to_string_lossy().into_owned()
    };
    let import = |file: String, extra: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut args = vec!["import", "--database-url", &url, "--table", "asn", &file];
            args.extend_from_slice(extra);
            run(&args).await
        }
    };

    let (ok, stdout, stderr) = import(write("live.csv", LIVE), &[]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("imported 3 rows into ip_service_asn"), "{stdout}");

    // A dry run reports and changes nothing.
    let update = write("asn-ipv4.csv", UPDATE);
    let (ok, stdout, stderr) = import(update.clone(), &["--dry-run", "--json"]).await;
    assert!(ok, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(printed["outcome"], "dry_run", "{printed}");
    let report = &printed["report"];
    let by_field: Vec<(String, u64)> = report["changed_by_field"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["addresses"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_field, [("asn".to_owned(), 256), ("as_org".to_owned(), 1024 + 256)]);
    assert_eq!(report["no_longer_covered"]["addresses"], 256);
    let transitions: Vec<String> = report["top_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} → {}: {}",
                t["from"].as_str().unwrap(),
                t["to"].as_str().unwrap(),
                t["addresses"]
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            "AS38803 Gtelecom Pty Ltd → AS38803 Gtelecom: 1024",
            "AS4134 CHINANET-BACKBONE → AS4809 CHINANET-CN2: 256"
        ]
    );
    assert_eq!(
        app.by_ip(&["183.62.57.1"]).await[0].geoip_asn,
        Some(4134),
        "a dry run changes nothing"
    );

    // Over the change limit: refused, live data kept.
    let (ok, _, stderr) = import(update.clone(), &["--max-change", "1"]).await;
    assert!(
        !ok && stderr.contains("2.30% of ip_service_asn's live addresses would change, over the limit of 1%"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = import(update, &[]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "imported 4 rows into ip_service_asn (0 ranges merged, 1 overlapping others: the smaller kept the shared addresses)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("AS4134 CHINANET-BACKBONE → AS4809 CHINANET-CN2: 256 addresses"),
        "{stdout}"
    );

    let networks = |answers: Vec<GeoInfo>| -> Vec<Option<i64>> { answers.iter().map(|g| g.geoip_asn).collect() };
    let probes = ["183.62.56.255", "183.62.57.1", "183.62.58.0", "1.0.0.1"];
    let expected = [Some(4134), Some(4809), Some(4134), None];
    assert_eq!(networks(app.by_ip(&probes).await), expected, "postgres mode");
    // Memory mode follows by NOTIFY, applying the kept changed rows.
    eventually(Duration::from_secs(10), "memory mode never saw the import", || async {
        let got = networks(memory.by_ip(&probes).await);
        if got == expected {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;

    // The history names the table; export gives the rows back as the ASN CSV.
    let client = app.db().client().await;
    let outcomes: Vec<String> = client
        .query(
            "SELECT outcome FROM ip_service_imports WHERE table_name = 'ip_service_asn' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outcomes, ["succeeded", "refused", "succeeded"]);
    let (ok, exported, stderr) = run(&["export", "--database-url", &url, "--table", "asn"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        exported,
        "start_ip,end_ip,asn,as_org
1.0.4.0,1.0.7.255,38803,Gtelecom
183.62.0.0,183.62.56.255,4134,CHINANET-BACKBONE
183.62.57.0,183.62.57.255,4809,CHINANET-CN2
183.62.58.0,183.62.255.255,4134,CHINANET-BACKBONE
"
    );
}

#[tokio::test]
async fn bad_asn_files_are_refused_with_the_line_and_the_live_data_kept() {
    let db = TestDb::new().await.with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asn.csv");
    let file = path.to_str().unwrap();
    let import = |extra: &'static [&'static str]| {
        let mut args = vec!["import", "--database-url", &db.url, "--table", "asn", file];
        args.extend_from_slice(extra);
        async move { run(&args).await }
    };
    for (rows, expected) in [
        (
            "1.0.0.0,1.0.0.255,4294967296,Too big\n",
            "line 1: asn \"4294967296\" is not an AS number (0 to 4294967295)",
        ),
        ("1.0.0.0,1.0.0.255,13335\n", "line 1: 3 fields; an ASN row has 4"),
        (
            "1.0.0.0,1.0.0.255,1,a\n1.0.0.0,1.0.0.255,2,b\n",
            "ranges overlap: 1.0.0.0-1.0.0.255 (line 1) and 1.0.0.0-1.0.0.255 (line 2)",
        ),
        (
            &format!("1.0.0.0,1.0.0.255,1,{}\n", "x".repeat(256)),
            "as_org is 256 characters, longer than the column's 255",
        ),
        (
            "2001:db8::,2001:db8::ffff,1,a\n",
            "IPv6 address 2001:db8:: in an IPv4 table",
        ),
    ] {
        std::fs::write(&path, rows).unwrap();
        let (ok, _, stderr) = import(&[]).await;
        assert!(!ok);
        assert!(stderr.contains(expected), "{rows}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one readable line: {stderr}");
    }
    let (ok, _, stderr) = import(&["--format", "mmdb"]).await;
    assert!(
        !ok && stderr.contains("ip_service_asn loads only from the ASN CSV"),
        "{stderr}"
    );
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM ip_service_asn", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 5, "the fixture rows are untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_mode_and_the_builtin_sample_carry_the_network() {
    // The built-in sample: serve with nothing configured.
    let sample = TestApp::start(local_settings(DataSource::Builtin), None, None).await;
    let answers = sample
        .by_ip(&["183.62.57.1", "8.8.8.8", "240e:1::1", "2001:4860:4860::8888"])
        .await;
    let asns: Vec<Option<i64>> = answers.iter().map(|g| g.geoip_asn).collect();
    assert_eq!(asns, [Some(4134), Some(15169), Some(4134), Some(15169)], "{answers:?}");

    // A directory with only the ASN files and a cn.csv.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cn.csv"),
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n1.0.0.0,1.0.0.255,中国,,,,\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("asn-ipv4.csv"), LIVE).unwrap();
    std::fs::write(
        dir.path().join("asn-ipv6.csv"),
        "2400:cb00::,2400:cb00:ffff:ffff:ffff:ffff:ffff:ffff,13335,\"Cloudflare, Inc.\"\n",
    )
    .unwrap();
    let mut settings = local_settings(DataSource::Files(dir.path().to_owned()));
    settings.reload_interval = Duration::from_millis(100);
    let files = TestApp::start(settings, None, None).await;
    let answers = files.by_ip(&["1.0.0.1", "2400:cb00::1", "183.62.57.1"]).await;
    let got: Vec<_> = answers.iter().map(|g| (g.error_no, network(g))).collect();
    assert_eq!(
        got,
        [
            (Some(0), Some((13335, "Cloudflare, Inc."))),
            (Some(2), Some((13335, "Cloudflare, Inc."))),
            (Some(2), Some((4134, "CHINANET-BACKBONE"))),
        ],
        "no MaxMind file: only the cn row knows a place, and the network is told for every address"
    );
    // A rewritten ASN file is picked up.
    let next = dir.path().join("next.tmp");
    std::fs::write(&next, UPDATE).unwrap();
    std::fs::rename(&next, dir.path().join("asn-ipv4.csv")).unwrap();
    eventually(
        Duration::from_secs(10),
        "the rewritten ASN file was never served",
        || async {
            let g = files.by_ip(&["1.0.0.1", "183.62.57.1"]).await;
            match (g[0].geoip_asn, g[1].geoip_asn) {
                (None, Some(4809)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
