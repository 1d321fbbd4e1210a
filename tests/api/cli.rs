//! The `xm-ip-service` binary: migrate, serve with signals, query.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{eventually, fixture_mmdb, TestApp, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_xm-ip-service");

pub async fn run(args: &[&str]) -> (bool, String, String) {
    // Away from the checkout's data/, so that nothing depends on whether
    // scripts/fetch-data.sh has run.
    let cwd = tempfile::tempdir().unwrap();
    output(
        Command::new(BIN)
            .args(args)
            .current_dir(cwd.path())
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL"),
    )
    .await
}

/// Whether `command` succeeded, and its standard output and error.
pub async fn output(command: &mut Command) -> (bool, String, String) {
    let out = command.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn migrate_applies_once_then_reports_nothing_to_do() {
    let db = TestDb::new().await; // already migrated by the helper
                                  // At the default log level: PostgreSQL's NOTICE ("relation ... already
                                  // exists, skipping") is client chatter, not part of the INFO log.
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", &db.url])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "applied 0 migration(s); the schema is up to date");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("already exists"), "{stderr}");
}

#[tokio::test]
async fn query_prints_an_aligned_table_or_json() {
    let app = TestApp::spawn().await;
    let addr = app.addr.to_string();
    let (ok, stdout, stderr) = run(&["query", "183.62.57.1", "240e:1::1", "bogus", "--addr", &addr]).await;
    assert!(!ok, "an address without an answer fails the command: {stderr}");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(
        lines[0],
        ["IP", "SOURCE", "COUNTRY", "PROVINCE", "CITY", "DISTRICT", "CARRIER", "NETWORK", "RANGE"]
    );
    assert_eq!(
        lines[1],
        [
            "183.62.57.1",
            "cn",
            "CN 中国",
            "440000 广东",
            "440100 广州",
            "天河区",
            "电信",
            "AS4134 CHINANET-BACKBONE",
            "183.62.56.99 - 183.62.63.255"
        ]
    );
    assert_eq!(lines[2][..2], ["240e:1::1", "v6"]);
    assert_eq!(lines[3][0], "bogus");
    assert!(lines[3][1].starts_with("error 1: invalid IP"), "{stdout}");
    // Columns line up in display width, CJK included.
    let range_at = |line: &str| unicode_width::UnicodeWidthStr::width(&line[..line.find("183.62.56.99").unwrap()]);
    assert_eq!(
        range_at(stdout.lines().nth(1).unwrap()),
        stdout.lines().next().unwrap().find("RANGE").unwrap()
    );

    let (ok, stdout, _) = run(&[
        "query",
        "8.8.8.8",
        "--lang",
        "en",
        "--json",
        "--addr",
        &addr,
        "--transport",
        "buffered",
        "--protocol",
        "compact",
    ])
    .await;
    assert!(ok);
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["geoip_country_name"], "United States");
    assert_eq!(answer["geoip_source"], "maxmind");

    // Scripts can tell "some addresses unanswered" (2) from "could not ask" (1).
    let status = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.arg("query").args(args).env("RUST_LOG", "warn");
        async move { command.status().await.unwrap().code() }
    };
    assert_eq!(status(&["183.62.57.1", "--addr", &addr]).await, Some(0));
    assert_eq!(status(&["183.62.57.1", "bogus", "--addr", &addr]).await, Some(2));
    assert_eq!(
        status(&["183.62.57.1", "--addr", "127.0.0.1:1", "--timeout", "1s"]).await,
        Some(1)
    );
}

#[tokio::test]
async fn errors_are_one_readable_line() {
    let (ok, _, stderr) = run(&["query", "8.8.8.8", "--addr", "127.0.0.1:1", "--timeout", "1s"]).await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("xm-ip-service: cannot connect to 127.0.0.1:1"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(&[
        "serve",
        "--database-url",
        "postgres://postgres@127.0.0.1/x",
        "--mmdb",
        "/nonexistent.mmdb",
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("cannot open MaxMind database /nonexistent.mmdb"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The server binary, started in `cwd` with `args` after `serve` and
/// `env`, logging JSON lines.
pub struct Served {
    child: tokio::process::Child,
    pub addr: String,
    /// Every log line up to "listening".
    startup: Vec<serde_json::Value>,
    /// Every log line after it.
    later: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Served {
    pub async fn start(cwd: &std::path::Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Served {
        Self::start_limited(cwd, args, env, None).await
    }

    /// `serve --data dir`, checking for new data only when signalled.
    async fn serving_data(dir: &std::path::Path) -> Served {
        let args = [
            "--data".as_ref(),
            dir.as_os_str(),
            "--reload-interval".as_ref(),
            "1h".as_ref(),
        ];
        Self::start(dir, &args, &[]).await
    }

    /// As [`Served::start`], with the open-file limit (soft and hard) set
    /// to `files` first.
    async fn start_limited(
        cwd: &std::path::Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
        files: Option<u64>,
    ) -> Served {
        let mut command = Command::new(BIN);
        if let Some(files) = files {
            let limit = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            // SAFETY: between fork and exec, only setrlimit runs.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            // Ephemeral ports only: tests run at once, and the default
            // HTTP port 8080 can be held by one of them.
            .args([
                "--log-format",
                "json",
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(args)
            .current_dir(cwd)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            // Tests that stop a server need not wait for balancers.
            .env("XM_IP_DRAIN_DELAY", "0s")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut startup = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let log: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("a log line that is not JSON ({err}): {line}"));
                startup.push(log.clone());
                if log["fields"]["message"] == "xm-ip-service listening" {
                    return log["fields"]["addr"].as_str().unwrap().to_owned();
                }
            }
            panic!("server exited before listening: {startup:#?}");
        })
        .await
        .unwrap();
        // Keep draining the log so the server never blocks on a full pipe.
        let later = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = later.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(log) = serde_json::from_str(&line) {
                    keep.lock().unwrap().push(log);
                }
            }
        });
        Served {
            child,
            addr,
            startup,
            later,
        }
    }

    /// Every log line so far, start-up included, whose message contains `text`.
    pub fn lines_saying(&self, text: &str) -> Vec<serde_json::Value> {
        let later = self.later.lock().unwrap();
        self.startup
            .iter()
            .chain(later.iter())
            .filter(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(text)))
            .cloned()
            .collect()
    }

    /// The start-up lines saying `message`.
    fn logged(&self, message: &str) -> Vec<&serde_json::Value> {
        self.startup
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect()
    }

    /// The HTTP listener's address, from the start-up log.
    fn http_addr(&self) -> std::net::SocketAddr {
        let listening = self.logged("HTTP API, /metrics and /readyz listening");
        listening[0]["fields"]["addr"].as_str().unwrap().parse().unwrap()
    }

    /// The server's resident memory in MB.
    fn resident_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb / 1024
    }

    async fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .unwrap()
            .success());
    }
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let db = TestDb::new().await.with_fixtures().await;
    let mmdb = fixture_mmdb();
    let cwd = tempfile::tempdir().unwrap();
    let mut server = Served::start(
        cwd.path(),
        &["--migrate".as_ref(), "--mmdb".as_ref(), mmdb.as_os_str()],
        &[("DATABASE_URL", &db.url)],
    )
    .await;
    let listening = server.logged("xm-ip-service listening");
    assert_eq!(
        listening[0]["fields"]["mmdb_build"],
        "GeoLite2-City built 2023-11-14T22:13:20Z"
    );

    let (ok, stdout, stderr) = run(&["query", "8.8.8.8", "--addr", &server.addr]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.lines().nth(1).unwrap().starts_with("8.8.8.8  maxmind  US 美国"),
        "{stdout}"
    );

    server.signal("-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn without_a_database_serve_answers_from_the_builtin_sample() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Served::start(cwd.path(), &[], &[]).await;
    let listening = server.logged("xm-ip-service listening");
    assert_eq!(listening[0]["fields"]["data"], "the built-in sample");
    let tables = server.logged("table loaded into memory");
    assert_eq!(tables.len(), 5, "cn, en, v6 and both network tables");
    for table in tables {
        assert!(table["fields"]["ranges"].as_u64().unwrap() > 1000, "{table}");
    }

    let (ok, stdout, stderr) = run(&["query", "183.62.57.1", "8.8.8.8", "240e:1::1", "--addr", &server.addr]).await;
    assert!(ok, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(
        rows[0][..5],
        ["183.62.57.1", "cn", "CN 中国", "440000 广东", "440100 广州"],
        "{stdout}"
    );
    assert_eq!(rows[0][5], "电信", "{stdout}");
    assert_eq!(rows[1][..3], ["8.8.8.8", "maxmind", "US 美国"], "{stdout}");
    assert_eq!(rows[2][..3], ["240e:1::1", "v6", "CN 中国"], "{stdout}");

    let (ok, stdout, _) = run(&["query", "183.62.57.1", "--lang", "en", "--json", "--addr", &server.addr]).await;
    assert!(ok);
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (&answer["geoip_source"], &answer["geoip_city_name"]),
        (&"en".into(), &"Guangzhou".into())
    );
}

#[tokio::test]
async fn each_empty_table_is_warned_about_at_start_up() {
    let db = TestDb::new().await;
    let cwd = tempfile::tempdir().unwrap();
    for lookup in ["postgres", "memory"] {
        let server = Served::start(
            cwd.path(),
            &["--lookup".as_ref(), lookup.as_ref()],
            &[("DATABASE_URL", &db.url)],
        )
        .await;
        let empty = server.logged("table is empty: its addresses get MaxMind's answer or none");
        let tables: Vec<&str> = empty.iter().map(|l| l["fields"]["table"].as_str().unwrap()).collect();
        assert_eq!(tables, ["ip_service_cn", "ip_service_en", "ip_service_v6"], "{lookup}");
    }
}

#[tokio::test]
async fn sighup_reopens_a_replaced_mmdb_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cn.csv"),
        "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name
1.0.0.0,1.0.0.255,中国,,,,
",
    )
    .unwrap();
    let mmdb = dir.path().join("GeoLite2-City.mmdb");
    std::fs::copy(fixture_mmdb(), &mmdb).unwrap();
    let server = Served::serving_data(dir.path()).await;
    let country =
        |stdout: &str| serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()["geoip_country_name"].clone();
    let (_, stdout, _) = run(&["query", "8.8.8.8", "--i18n", "--json", "--addr", &server.addr]).await;
    assert_eq!(country(&stdout), "United States");

    let replacement = dir.path().join("next.mmdb");
    std::fs::write(&replacement, crate::helpers::mmdb_with_country("8.8.8.0/24", "Canada")).unwrap();
    std::fs::rename(&replacement, &mmdb).unwrap();
    server.signal("-HUP").await;
    eventually(Duration::from_secs(15), "the new mmdb not served", || async {
        let (_, stdout, _) = run(&["query", "8.8.8.8", "--i18n", "--json", "--addr", &server.addr]).await;
        if country(&stdout) == "Canada" {
            Ok(())
        } else {
            Err(format!("still {stdout}"))
        }
    })
    .await;
}

/// The province `query` prints for 1.0.0.1 on the server at `addr`.
async fn province_of_1_0_0_1(addr: &str) -> String {
    let (_, stdout, _) = run(&["query", "1.0.0.1", "--json", "--addr", addr]).await;
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    answer["geoip_province_name"].as_str().unwrap().to_owned()
}

/// Waits up to 15 s for 1.0.0.1's province to become `want`.
async fn until_1_0_0_1_is_in(addr: &str, want: &str) {
    eventually(Duration::from_secs(15), "1.0.0.1's province", || async {
        let province = province_of_1_0_0_1(addr).await;
        if province == want {
            Ok(())
        } else {
            Err(format!("still {province}, not {want}"))
        }
    })
    .await
}

#[tokio::test]
async fn serve_data_reads_a_rewritten_file_again_and_keeps_its_tables_when_the_file_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let header = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n";
    let write = |name: &str, row: &str| {
        let next = dir.path().join("next.tmp");
        std::fs::write(&next, format!("{header}{row}\n")).unwrap();
        std::fs::rename(&next, dir.path().join(name)).unwrap();
    };
    write("cn.csv", "1.0.0.0,1.0.0.255,中国,北京,北京,,");
    let server = Served::serving_data(dir.path()).await;
    assert_eq!(province_of_1_0_0_1(&server.addr).await, "北京");

    // A file that does not load: the table keeps what it had.
    write("cn.csv", "1.0.0.0,not an address,中国,广东,广州,,");
    server.signal("-HUP").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(province_of_1_0_0_1(&server.addr).await, "北京");

    write("cn.csv", "1.0.0.0,1.0.0.255,中国,广东,广州,,");
    server.signal("-HUP").await;
    until_1_0_0_1_is_in(&server.addr, "广东").await;

    // The table's file under another name: the directory is read again.
    write("ip_service_cn.csv", "1.0.0.0,1.0.0.255,中国,上海,上海,,");
    std::fs::remove_file(dir.path().join("cn.csv")).unwrap();
    server.signal("-HUP").await;
    until_1_0_0_1_is_in(&server.addr, "上海").await;
}

#[tokio::test]
async fn conflicting_or_missing_data_is_one_readable_line() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    for (args, expected) in [
        (vec!["serve", "--data", dir], "no .ipdb, .mmdb or .csv files"),
        (vec!["serve", "--data", "/nonexistent"], "cannot read /nonexistent"),
    ] {
        let (ok, _, stderr) = run(&args).await;
        assert!(!ok, "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Refused by the argument parser, which adds its usage line.
    for (args, expected) in [
        (
            vec!["serve", "--data", dir, "--database-url", "postgres://x@127.0.0.1/x"],
            "cannot be used with",
        ),
        (
            vec!["serve", "--lookup", "postgres"],
            "--lookup postgres needs --database-url",
        ),
    ] {
        let (ok, _, stderr) = run(&args).await;
        assert!(!ok, "{args:?}");
        assert!(stderr.lines().next().unwrap().contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn conflicting_sources_from_flags_and_the_environment_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let url = "postgres://x@127.0.0.1/x";
    for (args, env) in [
        (vec!["serve", "--data", dir], ("DATABASE_URL", url)),
        (vec!["serve", "--database-url", url], ("XM_IP_DATA", dir)),
    ] {
        let (ok, _, stderr) = output(Command::new(BIN).args(&args).env(env.0, env.1)).await;
        assert!(!ok, "{args:?} with {env:?}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("--data") && first.contains("--database-url") && first.contains("cannot be used with"),
            "{args:?} with {env:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn import_prints_a_summary_then_a_no_op_and_export_writes_csv() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name,country_code,province_code,city_code\n\
               183.62.56.99,183.62.63.255,中国,广东,广州,,电信,CN,440000,440100\n";
    let path = dir.path().join("cn.csv");
    std::fs::write(&path, csv).unwrap();
    let path = path.to_str().unwrap();

    let (ok, stdout, stderr) = run(&["import", "--table", "cn", "--database-url", &db.url, path]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("change report for ip_service_cn\n"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("imported 1 rows into ip_service_cn (0 ranges merged) in "),
        "{stdout}"
    );
    let (ok, stdout, _) = run(&["import", "--table", "cn", "--database-url", &db.url, path]).await;
    assert!(ok);
    assert!(stdout.contains("already holds"), "{stdout}");

    let (ok, stdout, _) = run(&["export", "--table", "cn", "--database-url", &db.url]).await;
    assert!(ok);
    assert_eq!(stdout, csv);

    let (ok, _, stderr) = run(&["import", "--table", "v6", "--database-url", &db.url, path]).await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 2: IPv4 address 183.62.56.99 in an IPv6 table"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bench_loads_a_loopback_server_for_a_fixed_time_and_refuses_other_hosts() {
    let app = TestApp::spawn().await;
    let addr = app.addr.to_string();
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) = run(&[
        "bench",
        "--addr",
        &addr,
        "--duration",
        "1s",
        "--connections",
        "2",
        "--batch",
        "20",
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "it stops by itself");
    assert!(
        stdout.starts_with("ByIp x2 connections x1 in flight, batch 20: "),
        "{stdout}"
    );
    assert!(stdout.contains("lookups/s") && stdout.contains("p99"), "{stdout}");
    assert!(stdout.trim_end().ends_with(" 0 lookups failed"), "{stdout}");

    // Refused before any connection is made.
    let (ok, _, stderr) = run(&["bench", "--addr", "192.0.2.1:9090", "--duration", "1s"]).await;
    assert!(!ok);
    assert!(stderr.contains("is not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn check_finds_rows_the_importer_would_refuse() {
    let db = TestDb::new().await.with_fixtures().await;
    // The fixtures hold one blank row on purpose (lookups skip it).
    let (ok, stdout, stderr) = run(&["check", "--database-url", &db.url]).await;
    assert!(!ok);
    assert_eq!(stdout, "ip_service_cn 10.0.0.0 - 10.0.0.255: every name is empty\n");
    assert!(stderr.contains("ip_service_v6: 3 rows, 0 problems"), "{stderr}");
    let (ok, _, _) = run(&["check", "--database-url", &db.url, "--table", "v6", "--table", "en"]).await;
    assert!(ok, "the other tables are clean");

    db.client()
        .await
        .batch_execute(
            "INSERT INTO ip_service_cn (start_ip, end_ip, country_code, country_name, province_code, province_name)
             VALUES (3074308352, 3074308607, 'CN', '中国', '110000', '广东'),
                    (3221225472, 3221225727, 'QQ', '某国', '', '')",
        )
        .await
        .unwrap();
    let (ok, stdout, _) = run(&["check", "--database-url", &db.url, "--table", "cn"]).await;
    assert!(!ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ip_service_cn 183.62.57.0 - 183.62.57.255: overlaps 183.62.56.99 - ")),
        "{stdout}"
    );
    assert!(
        lines.contains(&"ip_service_cn 183.62.57.0 - 183.62.57.255: province code 110000 does not match \"广东\" (GB/T 2260 440000)"),
        "{stdout}"
    );
    assert!(
        lines.contains(&"ip_service_cn 192.0.0.0 - 192.0.0.255: country code \"QQ\" is not ISO 3166-1 alpha-2"),
        "{stdout}"
    );
}

#[tokio::test]
async fn without_an_http_cap_serve_takes_what_the_open_file_limit_leaves() {
    let cwd = tempfile::tempdir().unwrap();
    let served = Served::start_limited(
        cwd.path(),
        &["--max-connections".as_ref(), "100".as_ref()],
        &[],
        Some(512),
    )
    .await;
    let lowered = served.logged("HTTP connection cap lowered to fit the open-file limit");
    assert_eq!(lowered.len(), 1, "{:#?}", served.startup);
    // 512 files, less 100 Thrift connections and 256 for everything else.
    assert_eq!(lowered[0]["fields"]["cap"], 156);
}

#[tokio::test]
async fn serve_refuses_a_connection_cap_the_open_file_limit_cannot_hold() {
    let cwd = tempfile::tempdir().unwrap();
    // `ulimit -n` lowers the hard limit too, so the server cannot raise it.
    let script = format!(
        "ulimit -n 512 && exec {BIN} serve --addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
         --max-connections 1000 --http-max-connections 100"
    );
    let (ok, stdout, stderr) = output(
        Command::new("bash")
            .args(["-c", &script])
            .current_dir(cwd.path())
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL"),
    )
    .await;
    assert!(!ok);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim(),
        "xm-ip-service: --max-connections 1000 and --http-max-connections 100 need about 1356 open files, \
         but the limit is 512 (raise it with ulimit -n or LimitNOFILE, or lower the caps)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_a_burst_of_slow_http_bodies_is_given_back_after_it() {
    use tokio::io::AsyncWriteExt;

    let cwd = tempfile::tempdir().unwrap();
    let args = ["--http-max-buffered-bytes".as_ref(), "134217728".as_ref()];
    let server = Served::start(cwd.path(), &args, &[]).await;
    let http = server.http_addr();
    let idle = server.resident_mb();

    // 150 bodies of 1 MiB, each sent up to 95% and then held: a 128 MiB
    // body budget lets about 128 of them be read.
    let part = std::sync::Arc::new(vec![b' '; (1 << 20) * 95 / 100]);
    let senders: Vec<_> = (0..150)
        .map(|_| {
            let part = part.clone();
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
                let head = "POST /api/ip_query HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n";
                stream.write_all(head.as_bytes()).await.unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&part)).await;
                stream
            })
        })
        .collect();
    let mut held = Vec::new();
    for sender in senders {
        held.push(sender.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = server.resident_mb();
    assert!(
        peak > idle + 80,
        "the burst was not held: idle {idle} MB, then {peak} MB"
    );
    drop(held);

    eventually(Duration::from_secs(10), "the memory was not given back", || async {
        let after = server.resident_mb();
        if after <= idle + 50 {
            Ok(())
        } else {
            Err(format!("idle {idle} MB, {peak} MB during the burst, still {after} MB"))
        }
    })
    .await;
}

/// A connection that POSTs `body` to `/api/ip_query`, to be closed after
/// its reply, and has read nothing yet.
async fn post_and_never_read(http: std::net::SocketAddr, body: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /api/ip_query HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// A metric's value in a `/metrics` text, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_replies_to_clients_that_never_read_hold_no_more_than_the_reply_budget() {
    let cwd = tempfile::tempdir().unwrap();
    let args = ["--http-max-reply-bytes".as_ref(), "16777216".as_ref()];
    let server = Served::start(cwd.path(), &args, &[]).await;
    let http = server.http_addr();
    let idle = server.resident_mb();

    // 120 clients each ask for 5,000 answers (a 1.7 MB reply) and never
    // read: about 200 MB of replies if each were held until its client read.
    let body =
        std::sync::Arc::new(serde_json::to_vec(&serde_json::json!({ "ips": vec!["183.62.57.1"; 5_000] })).unwrap());
    let clients: Vec<_> = (0..120)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move { post_and_never_read(http, &body).await })
        })
        .collect();
    let mut held = Vec::new();
    for client in clients {
        held.push(client.await.unwrap());
    }

    // Until every one was answered or refused, the server's peak memory,
    // and a single address asked meanwhile: small replies never wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut peak, gave_way);
    peak = server.resident_mb();
    loop {
        let asked = std::time::Instant::now();
        let (status, _) = http_get(http, "/api/ip_query?ip=183.62.57.1").await;
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a single address took {:?}",
            asked.elapsed()
        );
        peak = peak.max(server.resident_mb());
        let (_, text) = http_get(http, "/metrics").await;
        // Answered, refused for want of reply room, or (on a box busy with
        // other tests) given up on by the request timeout: each one ended.
        let ended = metric(
            &text,
            r#"xm_ip_requests_total{api="http",method="ip_query_batch",outcome="200"}"#,
        ) + metric(&text, r#"xm_ip_reply_budget_total{api="http",outcome="refused"}"#)
            + metric(&text, r#"xm_ip_rejected_total{api="http",reason="timeout"}"#);
        if ended >= 120.0 {
            gave_way = metric(&text, r#"xm_ip_reply_budget_total{api="http",outcome="gave_way"}"#);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batches were not all answered: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak < idle + 100,
        "idle {idle} MB, {peak} MB while 120 replies of 1.7 MB went unread"
    );
    assert!(gave_way > 0.0, "no stalled reply gave its room up");

    // A client that reads still gets its batch.
    let mut reader = post_and_never_read(http, &body).await;
    let mut reply = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut reply)
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{}", &reply[..reply.len().min(300)]);
    assert_eq!(reply.matches(r#""error_no":0"#).count(), 5_000);
    drop(held);
}

/// The status and body of `GET path` on `addr`, on a connection of its own.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn on_sigterm_readyz_turns_503_at_once_and_the_listeners_serve_through_the_drain_delay() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = Served::start(cwd.path(), &["--drain-delay".as_ref(), "2s".as_ref()], &[]).await;
    let http = server.http_addr();
    assert_eq!(http_get(http, "/readyz").await.0, 200);

    server.signal("-TERM").await;
    let signalled = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Still accepting and answering on both listeners meanwhile.
    let (ok, stdout, stderr) = run(&["query", "183.62.57.1", "--addr", &server.addr]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("183.62.57.1"), "{stdout}");
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the checks took the whole delay"
    );

    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits after the drain delay")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the drain delay"
    );
}

/// A server of the built-in sample on a port chosen here, so that it can
/// be started again on the same one; and its settings.
async fn sample_server_on_a_port_of_its_own() -> (TestApp, xm_ip_service::config::Settings) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = crate::helpers::local_settings(xm_ip_service::config::DataSource::Builtin);
    settings.thrift.addr = format!("127.0.0.1:{port}").parse().unwrap();
    (TestApp::start(settings.clone(), None, None).await, settings)
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reconnects_and_resends_through_a_server_restart_without_a_failure() {
    let (first, settings) = sample_server_on_a_port_of_its_own().await;
    let port = settings.thrift.addr.port();

    let cwd = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "bench",
        "--addr",
        &addr,
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--batch",
        "20",
        "--duration",
        "4s",
        "--json",
    ];
    let bench = Command::new(BIN)
        .args(args)
        .current_dir(cwd.path())
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output();
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        first.shutdown().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestApp::start(settings, None, None).await
    };
    let (bench, _second) = tokio::join!(bench, restart);
    let bench = bench.unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    println!("{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["reconnects"].as_u64().unwrap() >= 4,
        "every connection came back: {report}"
    );
    assert!(report["requests"].as_u64().unwrap() > 100, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconnecting_client_answers_across_a_server_restart() {
    use xm_ip_service::thrift::TIPServiceSyncClient;
    use xm_ip_service::tools::client::{Reconnecting, Wire};
    let (first, settings) = sample_server_on_a_port_of_its_own().await;
    let port = settings.thrift.addr.port();
    let addr = format!("127.0.0.1:{port}");
    let ask = |client: Reconnecting| {
        tokio::task::spawn_blocking(move || {
            let mut client = client;
            let answer = client.call(|c| c.query_geo_info_by_i_p(vec!["183.62.57.1".to_owned()]));
            (client, answer)
        })
    };
    let client = Reconnecting::connect(&addr, Wire::FRAMED_BINARY, Duration::from_secs(5)).unwrap();
    let (client, before) = ask(client).await.unwrap();
    let before = before.unwrap();

    first.shutdown().await;
    let _second = TestApp::start(settings, None, None).await;
    let (_, after) = ask(client).await.unwrap();
    assert_eq!(after.expect("answered on a new connection"), before);
}

/// Waits up to 15 s for `n` log lines saying `text`.
async fn until_logged(server: &Served, text: &str, n: usize) {
    eventually(
        Duration::from_secs(15),
        &format!("not logged {n} times: {text}"),
        || async {
            match server.lines_saying(text).len() {
                logged if logged >= n => Ok(()),
                logged => Err(format!("{logged} times")),
            }
        },
    )
    .await
}

#[tokio::test]
async fn mmdb_ranges_answer_as_the_tree_walk_and_are_built_again_for_a_replaced_file() {
    let cwd = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("city.mmdb");
    std::fs::copy(fixture_mmdb(), &mmdb).unwrap();
    let server = Served::start(
        cwd.path(),
        &[
            "--mmdb".as_ref(),
            mmdb.as_os_str(),
            "--mmdb-ranges".as_ref(),
            "true".as_ref(),
        ],
        &[],
    )
    .await;
    let held = "MaxMind networks held as tables";
    until_logged(&server, held, 1).await;
    // Each field as the tree walk gives it (serve_answers_and_exits_cleanly_on_sigterm),
    // the network's bounds included, in zh-CN and English.
    let (ok, stdout, stderr) = run(&["query", "8.8.8.8", "--addr", &server.addr]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.lines().nth(1).unwrap().starts_with("8.8.8.8  maxmind  US 美国"),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["query", "8.8.8.8", "--i18n", "--json", "--addr", &server.addr]).await;
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (&answer["geoip_country_name"], &answer["geoip_city_name"]),
        (&"United States".into(), &"Mountain View".into())
    );
    assert_eq!(
        (&answer["geoip_start_ip_str"], &answer["geoip_end_ip_str"]),
        (&"8.8.8.0".into(), &"8.8.8.255".into())
    );

    let replacement = dir.path().join("next.mmdb");
    std::fs::write(&replacement, crate::helpers::mmdb_with_country("8.8.8.0/24", "Canada")).unwrap();
    std::fs::rename(&replacement, &mmdb).unwrap();
    server.signal("-HUP").await;
    until_logged(&server, held, 2).await;
    let (_, stdout, _) = run(&["query", "8.8.8.8", "--i18n", "--json", "--addr", &server.addr]).await;
    assert!(stdout.contains("Canada"), "{stdout}");
}
