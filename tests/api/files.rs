//! File mode (`serve --data DIR`): the same answers as PostgreSQL loaded
//! from the same files (in both database modes), and a MaxMind file
//! replaced under load.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use xm_ip_service::config::{DataSource, Postgres, Settings};
use xm_ip_service::data::import::{self, ImportOptions};
use xm_ip_service::data::store::{self, Table};

use xm_ip_service::thrift::GeoInfo;

use crate::helpers::{eventually, local_settings, mmdb_with_country, strings, TestApp, TestDb};
use crate::memory::{answers, Rng};
use crate::writers::{s, IpdbWriter, Value, Writer};

/// Records in qqwry's field order; a blank one and one needing CSV quoting.
const IPDB_RECORDS: [[&str; 8]; 6] = [
    ["中国", "广东", "广州", "天河区", "", "电信", "CN", "AS"],
    ["中国", "北京", "北京", "", "", "联通", "", ""],
    ["中国", "香港", "", "", "", "", "", ""],
    ["美国", "加利福尼亚州", "", "", "", "Yi'an, \"Quoted\" Co", "", ""],
    ["日本", "", "", "", "", "", "", ""],
    ["", "", "", "", "", "", "", ""],
];

/// Random disjoint networks: /16s in 20.0.0.0/8, /24s in 30.0.0.0/8 (some
/// adjacent, so that equal neighbours merge) and /32s in 2400::/8.
fn networks(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..64u64 {
        if rng.below(3) > 0 {
            out.push(format!("20.{i}.0.0/16"));
        }
    }
    for i in 0..600u64 {
        if rng.below(2) > 0 {
            out.push(format!("30.{}.{}.0/24", i / 256, i % 256));
        }
    }
    for i in 0..200u64 {
        if rng.below(2) > 0 {
            out.push(format!("24{:02x}:{i:x}::/32", rng.below(256)));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn country(name: &str, code: &str) -> Value {
    map! {"iso_code" => s(code), "geoname_id" => Value::U32(7), "names" => map!{"en" => s(name), "zh-CN" => s(&format!("{name}（中）")), "de" => s(&format!("{name} (de)"))}}
}

/// An ipdb, a City mmdb and the ASN CSVs over random networks; the ASN
/// data also has a /24 inside some /16s, with an AS of its own, which the
/// probes return (the inner one wins).
fn write_files(dir: &Path) -> Vec<String> {
    let mut rng = Rng(0xfeed_beef_1234_5678);
    let mut networks = networks(&mut rng);
    let mut asn = (String::new(), String::new());
    for (i, network) in networks.iter().enumerate() {
        if rng.below(4) == 0 {
            continue;
        }
        let net: ipnetwork::IpNetwork = network.parse().unwrap();
        let org = if i % 5 == 0 {
            format!("\"Org {i}, Inc.\"")
        } else {
            format!("Org {i}")
        };
        let row = format!(
            "{},{},{},{org}\n",
            net.network(),
            net.broadcast(),
            64_512 + i as u64 * 70_001
        );
        match net {
            ipnetwork::IpNetwork::V4(_) => asn.0.push_str(&row),
            ipnetwork::IpNetwork::V6(_) => asn.1.push_str(&row),
        }
    }
    let inner: Vec<String> = networks
        .iter()
        .filter(|n| n.starts_with("20.") && rng.below(2) == 0)
        .map(|n| n.replace(".0.0/16", ".5.0/24"))
        .collect();
    for network in &inner {
        let net: ipnetwork::IpNetwork = network.parse().unwrap();
        asn.0
            .push_str(&format!("{},{},4294967295,Inner\n", net.network(), net.broadcast()));
    }
    std::fs::write(dir.join("asn-ipv4.csv"), asn.0).unwrap();
    std::fs::write(dir.join("asn-ipv6.csv"), asn.1).unwrap();
    let mut ipdb = IpdbWriter::new();
    let mut mmdb = Writer::new();
    let countries = [("China", "CN"), ("United States", "US"), ("Japan", "JP")];
    for network in &networks {
        ipdb.insert(network, IPDB_RECORDS[rng.below(IPDB_RECORDS.len() as u64) as usize]);
        if rng.below(3) > 0 {
            let (name, code) = countries[rng.below(3) as usize];
            let subdivision =
                map! {"iso_code" => s("GD"), "names" => map!{"en" => s("Guangdong"), "zh-CN" => s("广东")}};
            let record = match rng.below(3) {
                0 => map! {"country" => country(name, code)},
                1 => map! {"registered_country" => country(name, code)},
                _ => map! {"country" => country(name, code), "subdivisions" => Value::Array(vec![subdivision]),
                "city" => map!{"geoname_id" => Value::U32(1809858), "names" => map!{"en" => s("Guangzhou")}}},
            };
            mmdb.insert(network, record);
        }
    }
    std::fs::write(dir.join("ranges.ipdb"), ipdb.build()).unwrap();
    std::fs::write(dir.join("GeoLite2-City.mmdb"), mmdb.build(1_700_000_000)).unwrap();
    networks.extend(inner);
    networks
}

/// The first and last address of each network, their outside neighbours,
/// and a few invalid inputs.
fn probes(networks: &[String]) -> Vec<String> {
    let mut out = strings(&["0.0.0.0", "255.255.255.255", "::", "not an address", "::ffff:20.1.0.1"]);
    for network in networks {
        let net: ipnetwork::IpNetwork = network.parse().unwrap();
        let (first, last) = (net.network(), net.broadcast());
        out.push(first.to_string());
        out.push(last.to_string());
        match (first, last) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                out.push(std::net::Ipv4Addr::from(u32::from(a).wrapping_sub(1)).to_string());
                out.push(std::net::Ipv4Addr::from(u32::from(b).wrapping_add(1)).to_string());
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
                out.push(std::net::Ipv6Addr::from(u128::from(a).wrapping_sub(1)).to_string());
                out.push(std::net::Ipv6Addr::from(u128::from(b).wrapping_add(1)).to_string());
            }
            _ => unreachable!(),
        }
    }
    out
}

async fn import_all(db: &TestDb, dir: &Path) {
    let mut client = store::connect(&db.url).await.unwrap();
    for (table, file, lang) in [
        (Table::Cn, "ranges.ipdb", None),
        (Table::V6, "ranges.ipdb", None),
        (Table::En, "GeoLite2-City.mmdb", Some("en".to_owned())),
        (Table::Asn, "asn-ipv4.csv", None),
        (Table::AsnV6, "asn-ipv6.csv", None),
    ] {
        let options = ImportOptions {
            lang,
            ..ImportOptions::new(table, dir.join(file))
        };
        import::import(&mut client, &options).await.unwrap();
    }
}

fn file_mode(dir: &Path) -> Settings {
    let mut settings = local_settings(DataSource::Files(dir.to_owned()));
    settings.thrift.max_connections = 64;
    settings
}

#[tokio::test(flavor = "multi_thread")]
async fn file_mode_answers_as_the_database_loaded_from_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let networks = write_files(dir.path());
    let db = TestDb::new().await;
    import_all(&db, dir.path()).await;
    let from_db = Settings {
        mmdb: Some(dir.path().join("GeoLite2-City.mmdb")),
        ..local_settings(DataSource::Postgres(Postgres::at(&db.url)))
    };
    let mut memory = Postgres::at(&db.url);
    memory.lookup = xm_ip_service::config::LookupMode::Memory;
    let from_memory = Settings {
        source: DataSource::Postgres(memory),
        ..from_db.clone()
    };
    let from_db = TestApp::start(from_db, Some(db), None).await;
    let from_memory = TestApp::start(from_memory, None, None).await;
    let from_files = TestApp::start(file_mode(dir.path()), None, None).await;

    let inputs = probes(&networks);
    for lang in ["zh-CN", "en", "de"] {
        let expected = answers(&from_db, Some(lang), &inputs).await;
        assert_eq!(expected.len(), inputs.len());
        let networks: BTreeSet<_> = expected.iter().filter_map(|g| g.geoip_as_org.as_deref()).collect();
        assert!(
            networks.len() > 100 && networks.contains("Inner"),
            "{lang}: {networks:?}"
        );
        assert!(networks.iter().any(|org| org.contains(", Inc.")));
        assert_eq!(
            answers(&from_memory, Some(lang), &inputs).await,
            expected,
            "memory mode, lang {lang}"
        );
        let got = answers(&from_files, Some(lang), &inputs).await;
        let sources: BTreeSet<_> = expected.iter().filter_map(|g| g.geoip_source.as_deref()).collect();
        let wanted: &[&str] = match lang {
            "zh-CN" => &["cn", "v6", "maxmind"],
            "en" => &["en", "maxmind"],
            _ => &["maxmind"],
        };
        assert_eq!(sources, wanted.iter().copied().collect(), "{lang}");
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(want, have, "lang {lang}, input {:?}", inputs[i]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_mmdb_is_picked_up_under_load_without_a_failed_lookup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cn.csv"),
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n1.0.0.0,1.0.0.255,中国,,,,\n",
    )
    .unwrap();
    let mmdb = dir.path().join("GeoLite2-City.mmdb");
    let replace = |bytes: &[u8]| {
        let next = dir.path().join("next.mmdb.tmp");
        std::fs::write(&next, bytes).unwrap();
        std::fs::rename(&next, &mmdb).unwrap();
    };
    replace(&mmdb_with_country("8.8.8.0/24", "Before"));
    let app = TestApp::start(
        Settings {
            reload_interval: Duration::from_millis(100),
            ..file_mode(dir.path())
        },
        None,
        None,
    )
    .await;

    // Each reader asks until it has been answered by the last file, so
    // that a reader thread the scheduler kept waiting still sees it.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let addr = app.addr.to_string();
            tokio::task::spawn_blocking(move || {
                use xm_ip_service::thrift::TIPServiceSyncClient;
                let mut client = xm_ip_service::tools::client::connect(
                    &addr,
                    xm_ip_service::tools::client::Wire::FRAMED_BINARY,
                    Duration::from_secs(10),
                )
                .unwrap();
                let mut seen: Vec<String> = Vec::new();
                let started = Instant::now();
                while seen.last().map(String::as_str) != Some("Again") {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "never answered by the last file: {seen:?}"
                    );
                    let g = client
                        .query_i18n_geo_info_by_i_p(strings(&["8.8.8.8"]))
                        .unwrap()
                        .remove(0);
                    assert_eq!(g.error_no, Some(0), "a lookup failed during a replacement: {g:?}");
                    let country = g.geoip_country_name.unwrap();
                    if seen.last() != Some(&country) {
                        seen.push(country);
                    }
                }
                seen
            })
        })
        .collect();
    let until = |country: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            while app.i18n(&["8.8.8.8"]).await[0].geoip_country_name.as_deref() != Some(country) {
                assert!(started.elapsed() < Duration::from_secs(15), "{country} never served");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    replace(&mmdb_with_country("8.8.8.0/24", "After"));
    until("After").await;
    // A broken file keeps the open one answering.
    replace(b"not a MaxMind database");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.i18n(&["8.8.8.8"]).await[0].geoip_country_name.as_deref(),
        Some("After")
    );
    replace(&mmdb_with_country("8.8.8.0/24", "Again"));
    until("Again").await;
    for reader in readers {
        let seen = reader.await.unwrap();
        assert!(
            matches!(seen.as_slice(), [.., last] if last == "Again") && !seen.contains(&"not".to_owned()),
            "{seen:?}"
        );
        let order = ["Before", "After", "Again"];
        let positions: Vec<usize> = seen
            .iter()
            .map(|c| order.iter().position(|o| o == c).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "answers went back: {seen:?}");
    }
}

/// Replaces `path` the way operators do: a new file renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Asks `ask` until it gives `want`, for at most ten seconds.
async fn until_answer<F, Fut>(what: &str, want: &str, mut ask: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    eventually(Duration::from_secs(10), what, || {
        let asked = ask();
        async move {
            let got = asked.await;
            if got == want {
                Ok(())
            } else {
                Err(format!("still {got:?}, not {want:?}"))
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_loop_picks_up_a_replaced_data_file_a_replaced_mmdb_and_a_reimported_table() {
    const CSV_HEADER: &str = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n";
    let dir = tempfile::tempdir().unwrap();
    let cn_csv = dir.path().join("cn.csv");
    let mmdb = dir.path().join("GeoLite2-City.mmdb");
    replace_file(
        &cn_csv,
        format!("{CSV_HEADER}1.0.0.0,1.0.0.255,中国,北京,北京,,\n").as_bytes(),
    );
    replace_file(&mmdb, &mmdb_with_country("8.8.8.0/24", "Before"));

    let db = TestDb::new().await;
    let imports = tempfile::tempdir().unwrap();
    let import_carrier = |carrier: &'static str| {
        let url = db.url.clone();
        let path = imports.path().join(format!("{carrier}.csv"));
        async move {
            std::fs::write(
                &path,
                format!("{CSV_HEADER}20.0.0.0,20.0.0.255,中国,广东,广州,,{carrier}\n"),
            )
            .unwrap();
            let mut client = store::connect(&url).await.unwrap();
            let options = ImportOptions {
                force: true,
                ..ImportOptions::new(Table::Cn, path)
            };
            import::import(&mut client, &options).await.unwrap();
        }
    };
    import_carrier("旧").await;

    let refreshed = |source| Settings {
        reload_interval: Duration::from_millis(100),
        mmdb: Some(mmdb.clone()),
        ..local_settings(source)
    };
    let files = TestApp::start(refreshed(DataSource::Files(dir.path().to_owned())), None, None).await;
    let mut pg = Postgres::at(&db.url);
    pg.lookup = xm_ip_service::config::LookupMode::Memory;
    let memory = TestApp::start(refreshed(DataSource::Postgres(pg)), None, None).await;
    let field = |app: &TestApp, ip: &'static str, read: fn(GeoInfo) -> Option<String>| {
        let addr = app.addr;
        async move { read(crate::helpers::by_ip_at(addr, &[ip]).await.remove(0)).unwrap_or_default() }
    };
    let province = |app| field(app, "1.0.0.1", |g| g.geoip_province_name);
    let carrier = |app| field(app, "20.0.0.7", |g| g.geoip_carrier);
    let country = |app| field(app, "8.8.8.8", |g| g.geoip_country_name);
    assert_eq!(province(&files).await, "北京");
    assert_eq!(carrier(&memory).await, "旧");
    assert_eq!(country(&files).await, "Before");
    assert_eq!(country(&memory).await, "Before");

    replace_file(
        &cn_csv,
        format!("{CSV_HEADER}1.0.0.0,1.0.0.255,中国,广东,广州,,\n").as_bytes(),
    );
    replace_file(&mmdb, &mmdb_with_country("8.8.8.0/24", "After"));
    import_carrier("新").await;

    until_answer("file mode, replaced cn.csv", "广东", || province(&files)).await;
    until_answer("file mode, replaced mmdb", "After", || country(&files)).await;
    until_answer("memory mode, re-imported cn", "新", || carrier(&memory)).await;
    until_answer("memory mode, replaced mmdb", "After", || country(&memory)).await;
    files.shutdown().await;
    memory.shutdown().await;
    drop(db);
}
