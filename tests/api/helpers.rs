//! Shared test plumbing: a database per test, fixture rows, a fixture
//! MaxMind database, a server on an ephemeral port, and clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use xm_ip_service::config::{DataSource, LookupMode, Postgres, Settings};
use xm_ip_service::serve::startup::Application;
use xm_ip_service::thrift::{GeoInfo, GeoRequest, TIPServiceSyncClient};
use xm_ip_service::tools::client::{self, Client, Wire};

use crate::writers::{s, Value, Writer};

/// The server's database URL for the admin database; tests create their
/// own databases beside it.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin);
    format!("{base}/{database}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A uniquely named, migrated database, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "xm_ip_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        connect(&admin_url())
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = url_for(&name);
        xm_ip_service::data::store::migrate(&url)
            .await
            .expect("migrate test database");
        TestDb { name, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Loads the fixture ranges the tests below rely on.
    pub async fn with_fixtures(self) -> TestDb {
        self.client()
            .await
            .batch_execute(FIXTURE_ROWS)
            .await
            .expect("load fixtures");
        self
    }

    /// Stops new connections and ends existing ones: the database "goes away".
    pub async fn cut_off(&self) {
        let admin = connect(&admin_url()).await;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
                self.name
            ))
            .await
            .expect("cut off the test database");
    }

    pub async fn restore(&self) {
        connect(&admin_url())
            .await
            .batch_execute(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", self.name))
            .await
            .expect("restore the test database");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a fresh thread may block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                connect(&admin_url())
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Ranges chosen to exercise each rule: China rows, non-China rows that
/// MaxMind does and does not know, a blank row, and both ends of the space.
const FIXTURE_ROWS: &str = "
INSERT INTO ip_service_cn (start_ip, end_ip, country_name, province_name, city_name, district_name, carrier_name,
                           country_code, province_code, city_code) VALUES
  (0, 255, '保留', '', '', '', '', '', '', ''),
  (3074308195, 3074310143, '中国', '广东', '广州', '天河区', '电信', 'CN', '440000', '440100'),
  (134744064, 134744319, '美国', '加利福尼亚', '', '', '', 'US', '', ''),
  (151587072, 151587327, '美国', '', '', '', 'Quad9', 'US', '', ''),
  (167772160, 167772415, '', '', '', '', '', '', '', ''),
  (3405803776, 3405804031, '中国', '香港', '', '', '', 'HK', '810000', ''),
  (4294967040, 4294967295, '末尾', '', '', '', '', '', '', '');
INSERT INTO ip_service_en (start_ip, end_ip, country_name, province_name, city_name, district_name, carrier_name,
                           country_code, province_code, city_code) VALUES
  (3074308195, 3074310143, 'China', 'Guangdong', 'Guangzhou', 'Tianhe', 'China Telecom', 'CN', 'GD', '1809858'),
  (134744064, 134744319, 'United States', 'California', '', '', '', 'US', 'CA', '');
INSERT INTO ip_service_v6 (start_ip, end_ip, country_name, province_name, city_name, district_name, carrier_name,
                           country_code, province_code, city_code) VALUES
  ('240e::', '240e:fff:ffff:ffff:ffff:ffff:ffff:ffff', '中国', '广东', '深圳', '', '电信', 'CN', '440000', '440300'),
  ('2001:4860::', '2001:4860:ffff:ffff:ffff:ffff:ffff:ffff', '美国', '', '', '', '', 'US', '', ''),
  ('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '末尾', '', '', '', '', '', '', '');
INSERT INTO ip_service_asn (start_ip, end_ip, asn, as_org) VALUES
  (3074293760, 3074359295, 4134, 'CHINANET-BACKBONE'),  -- 183.62.0.0/16: a China row's
  (134744064, 134744319, 15169, 'Google LLC'),          -- 8.8.8.0/24: a row MaxMind answers
  (16843008, 16843263, 13335, 'Cloudflare, Inc.'),      -- 1.1.1.0/24: MaxMind's registered country
  (84215040, 84215295, 3320, 'Deutsche Telekom AG'),    -- 5.5.5.0/24: no source knows the place
  (4294967040, 4294967295, 4294967295, 'The last AS');  -- the largest AS number
INSERT INTO ip_service_asn_v6 (start_ip, end_ip, asn, as_org) VALUES
  ('240e::', '240e:fff:ffff:ffff:ffff:ffff:ffff:ffff', 4134, 'CHINANET-BACKBONE'),
  ('2001:4860::', '2001:4860:ffff:ffff:ffff:ffff:ffff:ffff', 15169, 'Google LLC');
";

fn names(en: &str, zh: &str) -> Value {
    map! {"en" => s(en), "zh-CN" => s(zh)}
}

/// A City database for the fixture networks, written to a temporary file.
pub fn fixture_mmdb() -> tempfile::TempPath {
    let us = map! {"iso_code" => s("US"), "geoname_id" => Value::U32(6252001),
    "names" => map!{"en" => s("United States"), "zh-CN" => s("美国"), "de" => s("USA")}};
    let cn = map! {"iso_code" => s("CN"), "geoname_id" => Value::U32(1814991), "names" => names("China", "中国")};
    let mut writer = Writer::new();
    writer
        .insert(
            "8.8.8.0/24",
            map! {
                "country" => us.clone(),
                "registered_country" => us.clone(),
                "subdivisions" => Value::Array(vec![map!{"iso_code" => s("CA"), "names" => names("California", "加利福尼亚州")}]),
                "city" => map!{"geoname_id" => Value::U32(5375480), "names" => names("Mountain View", "芒廷维尤")},
            },
        )
        .insert(
            "1.1.1.0/24",
            map! {"registered_country" => map!{"iso_code" => s("AU"), "names" => names("Australia", "澳大利亚")}},
        )
        .insert("5.5.5.0/24", map! {"city" => map!{"names" => names("Nowhere", "无处")}})
        .insert(
            "183.62.56.0/21",
            map! {
                "country" => cn.clone(),
                "subdivisions" => Value::Array(vec![map!{"iso_code" => s("GD"), "names" => names("Guangdong", "广东")}]),
                "city" => map!{"geoname_id" => Value::U32(1809858), "names" => names("Guangzhou", "广州")},
            },
        )
        .insert("2001:4860::/32", map! {"country" => us.clone()})
        .insert("240e::/20", map! {"country" => cn});
    let path = tempfile::Builder::new()
        .suffix(".mmdb")
        .tempfile()
        .unwrap()
        .into_temp_path();
    std::fs::write(&path, writer.build(1_700_000_000)).unwrap();
    path
}

/// A City database where `network` is in `country` and nothing else is.
pub fn mmdb_with_country(network: &str, country: &str) -> Vec<u8> {
    let area = map! {"iso_code" => s("XX"), "names" => map!{"en" => s(country), "zh-CN" => s(country)}};
    let mut writer = Writer::new();
    writer.insert(network, map! {"country" => area});
    writer.build(1_800_000_000)
}

/// A running server on an ephemeral port, stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The HTTP listener, if the settings turned it on.
    pub http_addr: Option<SocketAddr>,
    db: Option<TestDb>,
    _mmdb: Option<tempfile::TempPath>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// What to start a test server with.
pub struct Options {
    pub mmdb: bool,
    /// Point the server somewhere other than its fixture database.
    pub database_url: Option<String>,
    pub lookup: LookupMode,
    pub db_timeout: Duration,
    /// Changes to the server's settings, made in order (see [`Options::with`]).
    pub changes: Vec<SettingsChange>,
}

/// One change to a test server's settings.
pub type SettingsChange = Box<dyn FnOnce(&mut Settings) + Send>;

impl Default for Options {
    fn default() -> Self {
        Options {
            mmdb: true,
            database_url: None,
            lookup: LookupMode::Postgres,
            db_timeout: Duration::from_secs(2),
            changes: Vec::new(),
        }
    }
}

impl Options {
    /// The fixture tables held in memory.
    pub fn memory() -> Options {
        Options {
            lookup: LookupMode::Memory,
            ..Options::default()
        }
    }

    /// A server on the database at `url` (for example one that never
    /// answers) rather than its fixtures, waiting `db_timeout` for it.
    pub fn database(url: String, db_timeout: Duration) -> Options {
        Options {
            database_url: Some(url),
            db_timeout,
            ..Options::default()
        }
    }

    /// These options, with `change` made to the server's settings after
    /// the test defaults (`spawn_at`).
    pub fn with(mut self, change: impl FnOnce(&mut Settings) + Send + 'static) -> Options {
        self.changes.push(Box::new(change));
        self
    }
}

/// The defaults, serving `source` on a free loopback port, without HTTP.
pub fn local_settings(source: DataSource) -> Settings {
    let mut settings = Settings::defaults();
    settings.source = source;
    settings.thrift.addr = "127.0.0.1:0".parse().unwrap();
    settings.http.addr = None;
    settings.requests.drain_delay = Duration::ZERO;
    settings
}

impl TestApp {
    /// Fixture database and fixture mmdb.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let db = TestDb::new().await.with_fixtures().await;
        Self::spawn_on(db, options).await
    }

    /// A server on `db` as it is.
    pub async fn spawn_on(db: TestDb, options: Options) -> TestApp {
        let url = db.url.clone();
        Self::spawn_at(&url, Some(db), options).await
    }

    /// Another server on this one's database.
    pub async fn spawn_beside(&self, options: Options) -> TestApp {
        Self::spawn_at(&self.db().url, None, options).await
    }

    async fn spawn_at(url: &str, db: Option<TestDb>, options: Options) -> TestApp {
        let mmdb = options.mmdb.then(fixture_mmdb);
        let mut pg = Postgres::at(&options.database_url.unwrap_or_else(|| url.to_owned()));
        pg.lookup = options.lookup;
        pg.pool.size = 4;
        pg.pool.timeout = options.db_timeout;
        let mut settings = local_settings(DataSource::Postgres(pg));
        settings.mmdb = mmdb.as_ref().map(|p| p.to_path_buf());
        // What tests expect beyond `serve`'s defaults: small caps, quick
        // timeouts, and HTTP on a free port.
        settings.requests.shutdown_timeout = Duration::from_secs(5);
        settings.thrift.max_connections = 64;
        settings.thrift.read_timeout = Duration::from_millis(500);
        settings.http.addr = Some("127.0.0.1:0".parse().unwrap());
        settings.http.max_connections = Some(256);
        for change in options.changes {
            change(&mut settings);
        }
        Self::start(settings, db, mmdb).await
    }

    /// A server built from `settings`, keeping `db` and `mmdb` alive with it.
    pub async fn start(settings: Settings, db: Option<TestDb>, mmdb: Option<tempfile::TempPath>) -> TestApp {
        let app = Application::build(&settings).await.expect("build the server");
        let addr = app.local_addr();
        let http_addr = app.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            http_addr,
            db,
            _mmdb: mmdb,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The server's database.
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("a server with a database")
    }

    /// Asks the server to stop and waits until it has.
    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.take().unwrap().await.unwrap();
    }

    /// Runs `f` with a generated Rust client speaking `wire`.
    pub async fn with_client<T: Send + 'static>(
        &self,
        wire: Wire,
        f: impl FnOnce(&mut Client) -> T + Send + 'static,
    ) -> T {
        let addr = self.addr.to_string();
        tokio::task::spawn_blocking(move || {
            let mut client = client::connect(&addr, wire, Duration::from_secs(10)).expect("connect");
            f(&mut client)
        })
        .await
        .unwrap()
    }

    pub async fn by_ip(&self, ips: &[&str]) -> Vec<GeoInfo> {
        by_ip_at(self.addr, ips).await
    }

    pub async fn with_lang(&self, lang: &str, ips: &[&str]) -> Vec<GeoInfo> {
        let request = GeoRequest::new(strings(ips), lang.to_owned());
        self.with_client(Wire::FRAMED_BINARY, move |c| c.query_geo_info(request))
            .await
            .expect("queryGeoInfo")
    }

    pub async fn i18n(&self, ips: &[&str]) -> Vec<GeoInfo> {
        let ips = strings(ips);
        self.with_client(Wire::FRAMED_BINARY, move |c| c.query_i18n_geo_info_by_i_p(ips))
            .await
            .expect("queryI18nGeoInfoByIP")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `queryGeoInfoByIP` on the server at `addr`, over a new connection.
pub async fn by_ip_at(addr: SocketAddr, ips: &[&str]) -> Vec<GeoInfo> {
    let ips = strings(ips);
    tokio::task::spawn_blocking(move || {
        let mut client =
            client::connect(&addr.to_string(), Wire::FRAMED_BINARY, Duration::from_secs(10)).expect("connect");
        client.query_geo_info_by_i_p(ips)
    })
    .await
    .unwrap()
    .expect("queryGeoInfoByIP")
}

pub fn strings(ips: &[&str]) -> Vec<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

/// `(error_no, source, country, province, city)` of an answer, for compact asserts.
pub fn summary(g: &GeoInfo) -> (i32, String, String, String, String) {
    let t = |v: &Option<String>| v.clone().unwrap_or_default();
    (
        g.error_no.unwrap(),
        t(&g.geoip_source),
        t(&g.geoip_country_name),
        t(&g.geoip_province_name),
        t(&g.geoip_city_name),
    )
}

pub fn expect(
    error_no: i32,
    source: &str,
    country: &str,
    province: &str,
    city: &str,
) -> (i32, String, String, String, String) {
    (error_no, source.into(), country.into(), province.into(), city.into())
}

/// A database URL whose server accepts connections and never says a word,
/// like a partitioned host; the listener lives as long as the handle.
pub async fn black_hole_database() -> (String, JoinHandle<()>) {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            open.push(socket);
        }
    });
    (format!("postgres://postgres@127.0.0.1:{port}/nowhere"), held)
}

/// A new version of `ip_service_cn` written outside the importer, whose
/// rows the index refuses: a row inside 183.62.56.99-183.62.63.255, which
/// the backward probe would answer for instead of the wide row.
pub const OVERLAPPING_CN_VERSION: &str = "BEGIN;
     INSERT INTO ip_service_cn (start_ip, end_ip, country_name, province_name, city_name)
     VALUES (3074308352, 3074308607, '中国', '广东', '深圳');
     INSERT INTO ip_service_imports (table_name, source_file, sha256, format, outcome, finished_at)
     VALUES ('ip_service_cn', 'overlapping', 'x', 'csv', 'succeeded', now());
     COMMIT;";

/// Asks `check` every 50 ms until it gives `Ok`, and returns that. If
/// nothing does within `within`, panics with `what` and the last `Err`:
/// what was seen instead.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(seen) => assert!(tokio::time::Instant::now() < deadline, "{what}: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
