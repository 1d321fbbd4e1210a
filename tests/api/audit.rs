//! `audit`: the live answers against observations and against another
//! database; it finds planted disagreements and proposes only the
//! well-supported corrections, which then import.

use crate::cli::run;
use crate::helpers::TestApp;

/// Observations of 183.62.57.0/24 agreeing with each other on 河北 联通
/// (one dissenting), one lone observation of 183.62.58.1 with a large
/// count, an even split in 183.62.59.0/24, and agreement in 183.62.60.0/24.
fn observations() -> String {
    let mut csv = String::from("ip,country,province,city,carrier,count,source\n");
    for i in 1..=7 {
        csv.push_str(&format!("183.62.57.{i},中国,河北省,,中国联通,10,cdn-ldns\n"));
    }
    csv.push_str("183.62.57.8,中国,广东,,电信,10,cdn-ldns\n");
    csv.push_str("183.62.58.1,中国,河南,,,1000,cdn-ldns\n");
    for (i, province) in ["湖南", "湖北", "湖南", "湖北", "湖南", "湖北"].iter().enumerate() {
        csv.push_str(&format!("183.62.59.{i},中国,{province},,,10,other\n"));
    }
    for i in 1..=10 {
        csv.push_str(&format!("183.62.60.{i},中国,广东省,广州市,电信,5,cdn-ldns\n"));
    }
    csv
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_finds_planted_disagreements_and_proposes_only_well_supported_corrections() {
    let app = TestApp::spawn().await;
    let url = app.db().url.clone();
    let dir = tempfile::tempdir().unwrap();
    let observed = dir.path().join("observations.csv");
    std::fs::write(&observed, observations()).unwrap();
    let proposed = dir.path().join("proposed.csv");
    let (ok, stdout, stderr) = run(&[
        "audit",
        "--database-url",
        &url,
        "--observations",
        observed.to_str().unwrap(),
        "--propose",
        proposed.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stderr}");
    // 25 observations; provinces: 1 + 10 agree (the 河北 ones, the 河南
    // one and the split ones disagree).
    assert!(stdout.contains("25 observations from"), "{stdout}");
    let province: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("province"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(province[..3], ["province", "25", "11"], "{stdout}");
    assert!(
        stdout.contains("province: live \"广东\", other \"河北省\" (7 seen, weight 70)"),
        "{stdout}"
    );
    assert!(stderr.contains("1 corrections proposed"), "{stderr}");
    let proposal = std::fs::read_to_string(&proposed).unwrap();
    let rows: Vec<&str> = proposal.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{proposal}");
    assert!(
        rows[0].starts_with("183.62.57.0,183.62.57.255,zh-CN,,,,河北省,,,,中国联通,\"audit: 7 of 8 observations"),
        "{}",
        rows[0]
    );
    assert!(rows[0].ends_with(",cdn-ldns,"), "{}", rows[0]);

    // The review loop: a dry run, then the import; the answer changes.
    let file = proposed.to_str().unwrap();
    let (ok, stdout, stderr) = run(&[
        "import",
        "--database-url",
        &url,
        "--table",
        "overrides",
        file,
        "--dry-run",
    ])
    .await;
    assert!(ok && stdout.contains("1 added"), "{stdout} {stderr}");
    let (ok, _, stderr) = run(&["import", "--database-url", &url, "--table", "overrides", file]).await;
    assert!(ok, "{stderr}");
    let g = app.by_ip(&["183.62.57.1"]).await.remove(0);
    assert_eq!(
        (
            g.geoip_province_name.as_deref(),
            g.geoip_province_code.as_deref(),
            g.geoip_carrier.as_deref(),
            g.geoip_corrected
        ),
        (Some("河北省"), Some("130000"), Some("中国联通"), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_against_another_database_probes_every_live_range() {
    let app = TestApp::spawn().await;
    let url = app.db().url.clone();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.csv");
    std::fs::write(
        &other,
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n\
         183.62.0.0,183.62.57.255,中国,广东省,广州市,,电信\n\
         183.62.58.0,183.62.255.255,中国,广东省,深圳市,,电信\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(&[
        "audit",
        "--database-url",
        &url,
        "--against",
        other.to_str().unwrap(),
        "--json",
    ])
    .await;
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Every range of the cn and v6 tables, each at five points.
    assert_eq!(report["compared"], 50, "{report}");
    // The cn row 183.62.56.99 - 183.62.63.255 is probed at its bounds and
    // three addresses inside: the other database's 广州 covers only the
    // first.
    assert_eq!(report["levels"]["province"]["agreed"], 5, "{report}");
    let city = &report["levels"]["city"];
    assert_eq!(
        (city["compared"].as_u64(), city["agreed"].as_u64()),
        (Some(5), Some(1)),
        "{report}"
    );
    assert_eq!(report["disagreements"][0]["count"], 4, "{report}");
    let first = &report["disagreements"][0];
    assert_eq!(
        (&first["level"], &first["live"], &first["other"]),
        (
            &serde_json::json!("city"),
            &serde_json::json!("广州"),
            &serde_json::json!("深圳市")
        ),
        "{report}"
    );
}
