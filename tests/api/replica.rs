//! A primary and its streaming standby, as throwaway clusters made in the
//! test (`initdb`, `pg_basebackup -R`), with memory-mode servers reading
//! the standby: a standby is detected and not LISTENed on, and
//! `--notify-url` on the primary brings an import to them at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xm_ip_service::data::import::{self, ImportOptions};
use xm_ip_service::data::store::{self, Table};

use crate::cli::Served;
use crate::helpers::{by_ip_at, eventually};

/// A PostgreSQL binary of the newest installed version.
fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .flatten()
        .map(|version| version.path().join("bin").join(name))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

/// `program` run as the postgres user when this is root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A cluster in a temporary directory, on its own port and socket
/// directory, stopped and removed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn new_dir() -> (tempfile::TempDir, u16) {
        let dir = tempfile::tempdir().unwrap();
        run({
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(dir.path());
            chown
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (dir, port)
    }

    fn primary() -> Cluster {
        let (dir, port) = Cluster::new_dir();
        let mut initdb = as_postgres(&pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-A", "trust"]);
        run(initdb);
        let cluster = Cluster { dir, port };
        cluster.start();
        cluster
    }

    fn standby_of(primary: &Cluster) -> Cluster {
        let (dir, port) = Cluster::new_dir();
        let mut backup = as_postgres(&pg_bin("pg_basebackup"));
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .args(["-R", "-c", "fast", "-X", "stream"]);
        run(backup);
        let cluster = Cluster { dir, port };
        cluster.start();
        cluster
    }

    fn start(&self) {
        let mut start = as_postgres(&pg_bin("pg_ctl"));
        start
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start");
        run(start);
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = as_postgres(&pg_bin("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();
    }
}

const CSV_HEADER: &str = "start_ip,end_ip,country_name,province_name,city_name,district_name,carrier_name\n";

/// Imports a cn table whose one range has `carrier`.
async fn import_carrier(url: &str, dir: &Path, carrier: &str) {
    let path = dir.join(format!("{carrier}.csv"));
    std::fs::write(
        &path,
        format!("{CSV_HEADER}1.0.0.0,1.0.0.255,中国,北京,北京,,{carrier}\n"),
    )
    .unwrap();
    let mut client = store::connect(url).await.unwrap();
    let options = ImportOptions {
        force: true,
        ..ImportOptions::new(Table::Cn, path)
    };
    import::import(&mut client, &options).await.unwrap();
}

/// A primary holding a migrated, empty database `ip`, and its URL.
async fn primary_with_ip_database() -> (Cluster, String) {
    let primary = Cluster::primary();
    let admin = primary.url("postgres");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("CREATE DATABASE ip").await.unwrap();
    let url = primary.url("ip");
    store::migrate(&url).await.unwrap();
    (primary, url)
}

async fn carrier_at(addr: &str) -> String {
    let answer = by_ip_at(addr.parse().unwrap(), &["1.0.0.1"]).await;
    answer[0].geoip_carrier.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_standby_the_reloader_does_not_listen_and_notify_url_brings_imports_at_once() {
    let files = tempfile::tempdir().unwrap();
    let (primary, primary_url) = primary_with_ip_database().await;
    import_carrier(&primary_url, files.path(), "旧").await;
    let standby = Cluster::standby_of(&primary);
    let standby_url = standby.url("ip");

    let cwd = tempfile::tempdir().unwrap();
    let memory = |extra: Vec<String>| {
        let mut args = vec![
            "--database-url".to_owned(),
            standby_url.clone(),
            "--lookup".to_owned(),
            "memory".to_owned(),
            "--reload-interval".to_owned(),
            "1h".to_owned(),
        ];
        args.extend(extra);
        args
    };
    let start = |args: Vec<String>| {
        let cwd = cwd.path().to_owned();
        async move {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            Served::start(&cwd, &args, &[]).await
        }
    };
    let timer_only = start(memory(Vec::new())).await;
    let notified = start(memory(vec!["--notify-url".to_owned(), primary_url.clone()])).await;
    assert_eq!(carrier_at(&timer_only.addr).await, "旧");
    assert_eq!(carrier_at(&notified.addr).await, "旧");

    // An import on the primary reaches the notified instance once the
    // standby has replayed it, within seconds; the other waits for its timer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let committed = Instant::now();
    import_carrier(&primary_url, files.path(), "新").await;
    let within = Duration::from_secs(5).saturating_sub(committed.elapsed());
    eventually(within, "the notified instance did not pick up the import", || async {
        match carrier_at(&notified.addr).await {
            carrier if carrier == "新" => Ok(()),
            carrier => Err(format!("it answers {carrier:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(carrier_at(&timer_only.addr).await, "旧", "a standby cannot notify");

    // One line says why, once; nothing warns about LISTEN failing.
    let standby_lines = timer_only.lines_saying("is a standby, which cannot LISTEN");
    assert_eq!(standby_lines.len(), 1, "{standby_lines:#?}");
    assert_eq!(standby_lines[0]["level"], "INFO");
    assert!(timer_only.lines_saying("cannot listen").is_empty());
    assert!(notified.lines_saying("is a standby").is_empty());
    assert!(notified.lines_saying("cannot listen").is_empty());
}

impl Cluster {
    /// Stops the server at once, as a crash would.
    fn kill(&self) {
        let mut stop = as_postgres(&pg_bin("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"]);
        run(stop);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_mode_on_a_multi_host_url_keeps_answering_when_the_first_host_dies() {
    let files = tempfile::tempdir().unwrap();
    let (primary, primary_url) = primary_with_ip_database().await;
    import_carrier(&primary_url, files.path(), "电信").await;
    let standby = Cluster::standby_of(&primary);

    // The standby first, then the primary: reads go to the first that answers.
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ip",
        standby.port, primary.port
    );
    let cwd = tempfile::tempdir().unwrap();
    let args = [
        "--database-url",
        url.as_str(),
        "--lookup",
        "postgres",
        "--pool-size",
        "4",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let server = Served::start(cwd.path(), &args, &[]).await;
    for _ in 0..20 {
        assert_eq!(carrier_at(&server.addr).await, "电信");
    }

    // Callers keep asking while the first host dies under them: the
    // lookups in flight on its connections are retried on fresh ones.
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let callers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let ips: Vec<String> = (0..200).map(|i| format!("1.0.0.{}", i % 256)).collect();
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                let (mut answered, mut failed) = (0, Vec::new());
                while Instant::now() < until {
                    for g in by_ip_at(addr, &ips).await {
                        match g.error_no {
                            Some(0) => answered += 1,
                            _ => failed.push(g.error_msg.unwrap_or_default()),
                        }
                    }
                }
                (answered, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    standby.kill();
    let mut answered = 0;
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(failed.is_empty(), "{} lookups failed: {:?}", failed.len(), &failed[..1]);
        answered += ok;
    }
    assert!(answered > 1000, "only {answered} lookups were made");
    assert_eq!(carrier_at(&server.addr).await, "电信");
}
