//! The lookup rules of the three methods, through the generated client.

use crate::helpers::{expect, summary, TestApp};

#[tokio::test]
async fn china_rows_answer_from_the_cn_table_with_codes_and_range() {
    let app = TestApp::spawn().await;
    let [g] = <[_; 1]>::try_from(app.by_ip(&["183.62.57.1"]).await).unwrap();
    assert_eq!(summary(&g), expect(0, "cn", "中国", "广东", "广州"));
    assert_eq!(g.geoip_country_code.as_deref(), Some("CN"));
    assert_eq!(g.geoip_province_code.as_deref(), Some("440000"));
    assert_eq!(g.geoip_city_code.as_deref(), Some("440100"));
    assert_eq!(g.geoip_district_name.as_deref(), Some("天河区"));
    assert_eq!(g.geoip_carrier.as_deref(), Some("电信"));
    assert_eq!((g.geoip_start_ip, g.geoip_end_ip), (Some(3074308195), Some(3074310143)));
    assert_eq!(g.geoip_start_ip_str.as_deref(), Some("183.62.56.99"));
    assert_eq!(g.geoip_end_ip_str.as_deref(), Some("183.62.63.255"));
    assert_eq!(g.error_msg.as_deref(), Some(""));
}

#[tokio::test]
async fn range_bounds_are_inclusive_at_both_ends_of_the_address_space() {
    let app = TestApp::spawn().await;
    let answers = app
        .by_ip(&[
            "183.62.56.99",
            "183.62.63.255",
            "183.62.56.98",
            "183.62.64.0",
            "0.0.0.0",
            "255.255.255.255",
        ])
        .await;
    let sources: Vec<_> = answers.iter().map(|g| summary(g).1).collect();
    // Just outside the row: MaxMind's 183.62.56.0/21 still covers the one below.
    assert_eq!(sources, ["cn", "cn", "maxmind", "", "cn", "cn"]);
    assert_eq!(answers[3].error_no, Some(2));
    assert_eq!(answers[4].geoip_country_name.as_deref(), Some("保留"));
    assert_eq!(answers[5].geoip_country_name.as_deref(), Some("末尾"));
}

#[tokio::test]
async fn non_china_rows_defer_to_maxmind_in_chinese() {
    let app = TestApp::spawn().await;
    let [g] = <[_; 1]>::try_from(app.by_ip(&["8.8.8.8"]).await).unwrap();
    assert_eq!(summary(&g), expect(0, "maxmind", "美国", "加利福尼亚州", "芒廷维尤"));
    assert_eq!(g.geoip_country_code.as_deref(), Some("US"));
    assert_eq!(g.geoip_province_code.as_deref(), Some("CA"));
    assert_eq!(g.geoip_city_code.as_deref(), Some("5375480"));
    assert_eq!(g.geoip_carrier.as_deref(), Some(""));
    assert_eq!((g.geoip_start_ip, g.geoip_end_ip), (Some(134744064), Some(134744319)));
    assert_eq!(g.geoip_end_ip_str.as_deref(), Some("8.8.8.255"));
}

#[tokio::test]
async fn a_non_china_row_stands_when_maxmind_has_nothing() {
    let app = TestApp::spawn().await;
    let [g] = <[_; 1]>::try_from(app.by_ip(&["9.9.9.9"]).await).unwrap();
    assert_eq!(summary(&g), expect(0, "cn", "美国", "", ""));
    assert_eq!(g.geoip_carrier.as_deref(), Some("Quad9"));
}

#[tokio::test]
async fn hong_kong_rows_labelled_china_stay_with_the_table() {
    let app = TestApp::spawn().await;
    let [g] = <[_; 1]>::try_from(app.by_ip(&["203.0.113.9"]).await).unwrap();
    assert_eq!(summary(&g), expect(0, "cn", "中国", "香港", ""));
}

#[tokio::test]
async fn blank_rows_count_as_no_row() {
    let app = TestApp::spawn().await;
    let [g] = <[_; 1]>::try_from(app.by_ip(&["10.0.0.1"]).await).unwrap();
    assert_eq!(g.error_no, Some(2));
    assert_eq!(g.error_msg.as_deref(), Some("not found in any source"));
}

#[tokio::test]
async fn maxmind_uses_registered_country_and_ignores_records_without_a_country() {
    let app = TestApp::spawn().await;
    let answers = app.i18n(&["1.1.1.1", "5.5.5.5"]).await;
    assert_eq!(summary(&answers[0]), expect(0, "maxmind", "Australia", "", ""));
    assert_eq!(answers[0].geoip_country_code.as_deref(), Some("AU"));
    assert_eq!(answers[1].error_no, Some(2));
}

#[tokio::test]
async fn ipv6_uses_the_v6_table_and_the_same_china_rule() {
    let app = TestApp::spawn().await;
    let answers = app
        .by_ip(&[
            "240e:1::1",
            "2001:4860:4860::8888",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ])
        .await;
    assert_eq!(summary(&answers[0]), expect(0, "v6", "中国", "广东", "深圳"));
    assert_eq!(answers[0].geoip_city_code.as_deref(), Some("440300"));
    assert_eq!((answers[0].geoip_start_ip, answers[0].geoip_end_ip), (Some(0), Some(0)));
    assert_eq!(answers[0].geoip_start_ip_str.as_deref(), Some("240e::"));
    assert_eq!(
        answers[0].geoip_end_ip_str.as_deref(),
        Some("240e:fff:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(summary(&answers[1]), expect(0, "maxmind", "美国", "", ""));
    assert_eq!(answers[1].geoip_start_ip_str.as_deref(), Some("2001:4860::"));
    assert_eq!(summary(&answers[2]), expect(0, "v6", "末尾", "", ""));
}

#[tokio::test]
async fn mapped_ipv6_is_answered_exactly_as_ipv4() {
    let app = TestApp::spawn().await;
    let answers = app
        .by_ip(&["183.62.57.1", "::ffff:183.62.57.1", "::FFFF:b73e:3901"])
        .await;
    for g in &answers[1..] {
        let mut same = g.clone();
        same.ip = answers[0].ip.clone();
        assert_eq!(same, answers[0]);
    }
    assert_eq!(answers[2].ip.as_deref(), Some("::FFFF:b73e:3901"));
}

#[tokio::test]
async fn english_uses_the_en_table_then_maxmind() {
    let app = TestApp::spawn().await;
    let answers = app.with_lang("en", &["183.62.57.1", "8.8.8.8", "240e:1::1"]).await;
    assert_eq!(summary(&answers[0]), expect(0, "en", "China", "Guangdong", "Guangzhou"));
    assert_eq!(answers[0].geoip_carrier.as_deref(), Some("China Telecom"));
    assert_eq!(
        summary(&answers[1]),
        expect(0, "maxmind", "United States", "California", "Mountain View")
    );
    // IPv6 in English comes from MaxMind only.
    assert_eq!(summary(&answers[2]), expect(0, "maxmind", "China", "", ""));
}

#[tokio::test]
async fn other_languages_come_from_maxmind_with_english_fallback() {
    let app = TestApp::spawn().await;
    let answers = app.with_lang("DE", &["8.8.8.8", "183.62.57.1"]).await;
    // German country name, English city where German is missing.
    assert_eq!(
        summary(&answers[0]),
        expect(0, "maxmind", "USA", "California", "Mountain View")
    );
    assert_eq!(
        summary(&answers[1]),
        expect(0, "maxmind", "China", "Guangdong", "Guangzhou")
    );
}

#[tokio::test]
async fn zh_aliases_and_empty_lang_mean_chinese() {
    let app = TestApp::spawn().await;
    for lang in ["", "zh", "zh_CN", "cn", "ZH-cn"] {
        let [g] = <[_; 1]>::try_from(app.with_lang(lang, &["183.62.57.1"]).await).unwrap();
        assert_eq!(summary(&g), expect(0, "cn", "中国", "广东", "广州"), "lang {lang:?}");
    }
}

#[tokio::test]
async fn unsupported_lang_is_error_4_on_every_item() {
    let app = TestApp::spawn().await;
    let answers = app.with_lang("tlh", &["8.8.8.8", "nonsense"]).await;
    assert_eq!(answers.len(), 2);
    for g in &answers {
        assert_eq!(g.error_no, Some(4));
        assert!(g
            .error_msg
            .as_deref()
            .unwrap()
            .contains("zh-CN, en, de, es, fr, ja, pt-BR, ru"));
    }
    assert_eq!(answers[1].ip.as_deref(), Some("nonsense"));
}

#[tokio::test]
async fn i18n_is_maxmind_only_even_for_china() {
    let app = TestApp::spawn().await;
    let answers = app.i18n(&["183.62.57.1", "9.9.9.9"]).await;
    assert_eq!(
        summary(&answers[0]),
        expect(0, "maxmind", "China", "Guangdong", "Guangzhou")
    );
    assert_eq!(answers[0].geoip_start_ip_str.as_deref(), Some("183.62.56.0"));
    // The cn table knows 9.9.9.9; MaxMind does not, and only MaxMind is asked.
    assert_eq!(answers[1].error_no, Some(2));
}

#[tokio::test]
async fn invalid_items_fail_alone_in_input_order() {
    let app = TestApp::spawn().await;
    let long = "9".repeat(5000);
    let inputs = [
        " 183.62.57.1 ",
        "",
        "localhost",
        "1.2.3.0/24",
        "1.2.3.4:80",
        "256.1.1.1",
        "010.1.1.1",
        "fe80::1%eth0",
        &long,
        "183.62.57.1",
    ];
    let answers = app.by_ip(&inputs).await;
    assert_eq!(answers.len(), inputs.len());
    for (g, input) in answers.iter().zip(inputs) {
        // An input longer than any address is echoed in its first 64 bytes.
        let echoed = &input[..input.len().min(64)];
        assert_eq!(g.ip.as_deref(), Some(echoed), "echoes the input");
    }
    assert_eq!(answers[0].error_no, Some(0));
    assert_eq!(answers[9].error_no, Some(0));
    for g in &answers[1..9] {
        assert_eq!(g.error_no, Some(1), "{:?}", g.ip);
        assert!(g.error_msg.as_deref().unwrap().starts_with("invalid IP"));
        assert_eq!(g.geoip_country_name.as_deref(), Some(""), "fields 1-12 are always sent");
        assert_eq!(g.geoip_source, None);
    }
}

#[tokio::test]
async fn empty_batches_and_duplicates() {
    let app = TestApp::spawn().await;
    assert!(app.by_ip(&[]).await.is_empty());
    let answers = app.by_ip(&["8.8.8.8", "8.8.8.8", "8.8.8.8"]).await;
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|g| g == &answers[0]));
}

#[tokio::test]
async fn without_mmdb_tables_still_answer_and_maxmind_only_calls_say_why() {
    use crate::helpers::Options;
    let app = TestApp::spawn_with(Options {
        mmdb: false,
        ..Options::default()
    })
    .await;
    let answers = app.by_ip(&["183.62.57.1", "8.8.8.8", "1.1.1.1"]).await;
    assert_eq!(summary(&answers[0]), expect(0, "cn", "中国", "广东", "广州"));
    // The table's non-China row stands in for MaxMind.
    assert_eq!(summary(&answers[1]), expect(0, "cn", "美国", "加利福尼亚", ""));
    assert_eq!(answers[2].error_no, Some(2));
    let [g] = <[_; 1]>::try_from(app.i18n(&["8.8.8.8"]).await).unwrap();
    assert_eq!(g.error_no, Some(3));
    assert!(g
        .error_msg
        .as_deref()
        .unwrap()
        .contains("no MaxMind database configured"));
}

#[tokio::test]
async fn a_full_batch_of_ten_thousand_is_answered_in_order() {
    let app = TestApp::spawn().await;
    let ips: Vec<String> = (0..10_000u32)
        .map(|i| std::net::Ipv4Addr::from(3074308195 + (i % 1949)).to_string())
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let answers = app.by_ip(&refs).await;
    assert_eq!(answers.len(), 10_000);
    for (g, ip) in answers.iter().zip(&ips) {
        assert_eq!(g.ip.as_ref(), Some(ip));
        assert_eq!(g.error_no, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_callers_sharing_queries_each_get_exactly_their_own_answers() {
    let app = TestApp::spawn().await;
    let pool = [
        "183.62.57.1",
        "183.62.56.98",
        "8.8.8.8",
        "9.9.9.9",
        "10.0.0.1",
        "203.0.113.9",
        "255.255.255.255",
        "0.0.0.0",
        "240e:1::1",
        "2001:4860::1",
        "not an address",
        "",
        "1.1.1.1",
    ];
    // Each address asked alone is the reference.
    let mut alone = std::collections::HashMap::new();
    for ip in pool {
        alone.insert(ip, app.by_ip(&[ip]).await.remove(0));
    }
    let alone = std::sync::Arc::new(alone);
    let callers: Vec<_> = (0..32usize)
        .map(|caller| {
            let alone = alone.clone();
            let addr = app.addr;
            tokio::spawn(async move {
                for round in 0..10 {
                    // A different list for every caller and round.
                    let ips: Vec<&str> = (0..1 + (caller + round) % 9)
                        .map(|k| pool[(caller * 7 + round * 3 + k * 5) % pool.len()])
                        .collect();
                    let answers = crate::helpers::by_ip_at(addr, &ips).await;
                    assert_eq!(answers.len(), ips.len());
                    for (answer, ip) in answers.iter().zip(&ips) {
                        assert_eq!(answer, &alone[ip], "caller {caller}, round {round}");
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
}
