//! The load generator behind `bench`, and the answer comparison behind
//! `compare`. `bench` drives a server over many async connections, each
//! with a fixed number of requests in flight, for a fixed time; requests
//! are encoded before the clock starts and replies are only scanned, so
//! that the generator is not what limits the figures. Addresses are
//! sampled from the ranges the server serves: China, elsewhere, IPv6 and a
//! few invalid ones, in stated shares. Loopback only unless told otherwise.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use crate::config::LookupMode;
use crate::data::index::{TableIndex, Tables};
use crate::domain::Table;
use crate::thrift::calls;
use crate::thrift::codec::{Call, Framing, MessageCheck, Protocol, Wire};
use crate::thrift::{GeoInfo, GeoRequest, TIPServiceSyncClient};
use crate::tools::client;

/// The call the load makes: a method, and for queryGeoInfo its language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadCall {
    /// queryGeoInfoByIP (zh-CN)
    ByIp,
    /// queryGeoInfo with lang "en"
    English,
    /// queryI18nGeoInfoByIP (MaxMind only)
    I18n,
}

impl LoadCall {
    fn call(self, ips: Vec<String>) -> Call {
        match self {
            LoadCall::ByIp => Call::QueryGeoInfoByIp { ips: ips.into() },
            LoadCall::English => Call::QueryGeoInfo {
                ips: ips.into(),
                lang: "en".into(),
            },
            LoadCall::I18n => Call::QueryI18nGeoInfoByIp { ips: ips.into() },
        }
    }
}

/// Where the sampled addresses come from, and in what shares.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleOptions {
    /// Sample from the tables of this database (default: data/ if
    /// scripts/fetch-data.sh filled it, else the built-in sample).
    #[arg(long)]
    pub sample_database_url: Option<String>,
    /// Sample from the IP database files in this directory.
    #[arg(long, conflicts_with = "sample_database_url")]
    pub sample_data: Option<PathBuf>,
    /// Share of addresses in Chinese ranges of the cn table, 0 to 100.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub china_percent: u8,
    /// Share of IPv6 addresses (from the v6 table's ranges).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub ipv6_percent: u8,
    /// Share of invalid inputs (error 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub invalid_percent: u8,
    /// Seed of the address sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// IPs per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// How long to send; the run stops by itself.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "by-ip")]
    pub method: LoadCall,
    #[arg(long, value_enum, default_value = "framed")]
    pub transport: Framing,
    #[arg(long, value_enum, default_value = "binary")]
    pub protocol: Protocol,
    /// Read this process's CPU time before and after, and report the
    /// server's CPU per lookup.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Permit a target outside the loopback network.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the result as one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sample: SampleOptions,
}

/// Distinct requests each connection cycles through.
const REQUESTS_PER_CONNECTION: usize = 32;
/// Largest reply accepted.
const MAX_REPLY: usize = 64 << 20;

/// What a run, or one connection of it, measured.
#[derive(Debug)]
pub struct Tally {
    pub requests: u64,
    /// Answers by `error_no`.
    pub by_error: [u64; 5],
    /// Requests answered with an exception instead.
    pub exceptions: u64,
    /// Request latency in microseconds, from the first send of a request.
    pub latency: Histogram<u64>,
    /// Connections the server closed that were opened again.
    pub reconnects: u64,
    /// Requests sent again because their connection closed before the reply.
    pub resent: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            by_error: [0; 5],
            exceptions: 0,
            reconnects: 0,
            resent: 0,
            // 1 µs to 60 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (mine, theirs) in self.by_error.iter_mut().zip(other.by_error) {
            *mine += theirs;
        }
        self.exceptions += other.exceptions;
        self.reconnects += other.reconnects;
        self.resent += other.resent;
        self.latency.add(&other.latency).expect("same histogram bounds");
    }

    pub fn lookups(&self) -> u64 {
        self.by_error.iter().sum()
    }

    /// Answers that say a backend failed (error 3), and refused requests.
    pub fn failed(&self) -> u64 {
        self.by_error[3] + self.exceptions
    }
}

/// A whole run.
#[derive(Debug)]
pub struct Report {
    pub tally: Tally,
    pub elapsed: Duration,
    /// The server's CPU time during the run, if its pid was given.
    pub server_cpu: Option<Duration>,
    /// The load generator's own CPU time during the run.
    pub own_cpu: Option<Duration>,
}

impl Report {
    /// The figures as JSON, for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let (t, seconds) = (&self.tally, self.elapsed.as_secs_f64());
        let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
        let per_lookup = |cpu: Option<Duration>| cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / t.lookups().max(1) as f64);
        serde_json::json!({
            "requests": t.requests,
            "lookups": t.lookups(),
            "seconds": seconds,
            "requests_per_second": t.requests as f64 / seconds,
            "lookups_per_second": t.lookups() as f64 / seconds,
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999), "max": t.latency.max() as f64 / 1000.0},
            "server_cpu_seconds": self.server_cpu.map(|c| c.as_secs_f64()),
            "server_cpu_us_per_lookup": per_lookup(self.server_cpu),
            "load_generator_cpu_us_per_lookup": per_lookup(self.own_cpu),
            "answers_by_error_no": t.by_error,
            "failed": t.failed(),
            "reconnects": t.reconnects,
            "resent": t.resent,
        })
    }

    pub fn summary(&self) -> String {
        let (t, seconds) = (&self.tally, self.elapsed.as_secs_f64());
        let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
        let lookups = t.lookups();
        let cpu = |label: &str, cpu: Option<Duration>| match cpu {
            Some(cpu) if lookups > 0 => format!(
                "; {label} CPU {:.2} s ({:.0}%), {:.3} µs per lookup",
                cpu.as_secs_f64(),
                100.0 * cpu.as_secs_f64() / seconds,
                cpu.as_secs_f64() * 1e6 / lookups as f64
            ),
            _ => String::new(),
        };
        format!(
            "{} requests, {} lookups in {seconds:.1} s: {:.0} requests/s, {:.0} lookups/s; \
             latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}{}{}; \
             {} reconnects, {} requests resent; answers by error_no {:?}; {} lookups failed",
            t.requests,
            lookups,
            t.requests as f64 / seconds,
            lookups as f64 / seconds,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            t.latency.max() as f64 / 1000.0,
            cpu("server", self.server_cpu),
            cpu("load generator", self.own_cpu),
            t.reconnects,
            t.resent,
            t.by_error,
            t.failed(),
        )
    }
}

/// The target's address, refused unless it is on loopback or allowed.
fn target(addr: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let target = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    if !target.ip().is_loopback() && !allow_remote {
        bail!("{target} is not a loopback address; pass --allow-remote to load another host");
    }
    Ok(target)
}

/// Runs the load and reports; blocks for `options.duration` after the
/// sampled ranges are loaded.
pub fn run(options: &LoadOptions) -> anyhow::Result<Report> {
    let target = target(&options.addr, options.allow_remote)?;
    if options.connections == 0 || options.pipeline == 0 || options.batch == 0 {
        bail!("--connections, --pipeline and --batch must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut sampler = Sampler::load(&options.sample).await?;
        let wire = Wire::new(options.transport, options.protocol);
        let requests: Vec<Arc<Vec<Vec<u8>>>> = (0..options.connections)
            .map(|_| {
                let encoded = (0..REQUESTS_PER_CONNECTION)
                    .map(|seq| calls::encode_call(wire, seq as i32, &options.method.call(sampler.batch(options.batch))))
                    .collect();
                Arc::new(encoded)
            })
            .collect();
        let server_before = options.server_pid.map(cpu_time).transpose()?;
        let own_before = cpu_time(std::process::id()).ok();
        let started = Instant::now();
        let deadline = started + options.duration;
        let connections: Vec<_> = requests
            .into_iter()
            .map(|requests| tokio::spawn(drive(target, wire, options.pipeline, requests, deadline)))
            .collect();
        let mut tally = Tally::new();
        for connection in connections {
            tally.add(&connection.await.context("a load connection panicked")??);
        }
        let elapsed = started.elapsed();
        let server_cpu = match (options.server_pid, server_before) {
            (Some(pid), Some(before)) => Some(cpu_time(pid)?.saturating_sub(before)),
            _ => None,
        };
        let own_cpu = own_before.and_then(|before| Some(cpu_time(std::process::id()).ok()?.saturating_sub(before)));
        Ok(Report {
            tally,
            elapsed,
            server_cpu,
            own_cpu,
        })
    })
}

/// How long a connection may be refused (a server restarting) before the
/// load gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(10);

/// One load connection until `deadline`: a writer keeps `pipeline`
/// requests in flight, a reader matches replies to them in order. When the
/// server closes the connection (a restart, a balancer moving it), it is
/// opened again and the requests that got no reply are sent again:
/// lookups are idempotent.
async fn drive(
    target: SocketAddr,
    wire: Wire,
    pipeline: usize,
    requests: Arc<Vec<Vec<u8>>>,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    let mut next = 0;
    let mut unanswered: Vec<(usize, Instant)> = Vec::new();
    loop {
        let stream = connect(target).await?;
        tally.resent += unanswered.len() as u64;
        match session(
            stream, wire, pipeline, &requests, deadline, next, unanswered, &mut tally,
        )
        .await?
        {
            Session::Done => return Ok(tally),
            Session::Closed {
                next: at,
                unanswered: left,
            } => {
                tally.reconnects += 1;
                next = at;
                unanswered = left;
                if unanswered.is_empty() && Instant::now() >= deadline {
                    return Ok(tally);
                }
            }
        }
    }
}

/// A connection to `target`, retried while it is refused, for up to
/// [`RECONNECT_FOR`].
async fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let giving_up = Instant::now() + RECONNECT_FOR;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(err)) if Instant::now() < giving_up => {
                tracing::debug!(error = %err, "reconnecting");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(err)) => return Err(err).with_context(|| format!("cannot connect to {target}")),
            Err(_) => bail!("connecting to {target} timed out"),
        }
    }
}

/// How a connection's session ended.
enum Session {
    /// The deadline passed and every request sent was answered.
    Done,
    /// The server closed the connection; `unanswered` were sent (their
    /// index and first send) and got no reply; `next` is the next request.
    Closed {
        next: usize,
        unanswered: Vec<(usize, Instant)>,
    },
}

/// Sends `resend` first, then requests from `next` on, until `deadline`.
#[allow(clippy::too_many_arguments)]
async fn session(
    stream: TcpStream,
    wire: Wire,
    pipeline: usize,
    requests: &Arc<Vec<Vec<u8>>>,
    deadline: Instant,
    next: usize,
    resend: Vec<(usize, Instant)>,
    tally: &mut Tally,
) -> anyhow::Result<Session> {
    let (mut read, mut write) = stream.into_split();
    let slots = Arc::new(Semaphore::new(pipeline));
    // Each request written: its index and when it was first sent.
    let (sent, mut in_flight) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (written_to, mut written) = tokio::sync::watch::channel(next);
    let writer = {
        let (slots, requests) = (slots.clone(), requests.clone());
        tokio::spawn(async move {
            let fresh = (next..).map(|i| (i % requests.len(), None));
            let queue = resend.into_iter().map(|(i, at)| (i, Some(at))).chain(fresh);
            for (index, first_sent) in queue {
                slots.acquire().await.expect("never closed").forget();
                if first_sent.is_none() && Instant::now() >= deadline {
                    break;
                }
                let _ = sent.send((index, first_sent.unwrap_or_else(Instant::now)));
                if first_sent.is_none() {
                    let _ = written_to.send((index + 1) % requests.len());
                }
                if write.write_all(&requests[index]).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut check = MessageCheck::new(wire, MAX_REPLY);
    // Replies to every request sent; the channel closes when the writer stops.
    while let Some((index, sent_at)) = in_flight.recv().await {
        let found = loop {
            match check.check(&buf) {
                Ok(Some(found)) => break found,
                Ok(None) => {
                    buf.reserve(64 * 1024);
                    let read = tokio::time::timeout(Duration::from_secs(30), read.read_buf(&mut buf))
                        .await
                        .context("no reply within 30 s")?;
                    if matches!(read, Ok(0) | Err(_)) {
                        // Closed by the server: what was sent and not
                        // answered goes again on a new connection.
                        writer.abort();
                        let mut unanswered = vec![(index, sent_at)];
                        while let Ok(more) = in_flight.try_recv() {
                            unanswered.push(more);
                        }
                        let next = *written.borrow_and_update();
                        return Ok(Session::Closed { next, unanswered });
                    }
                }
                Err(err) => bail!("unreadable reply: {err}"),
            }
        };
        let summary = calls::scan_reply(&buf[found.body..found.end], wire.protocol)
            .map_err(|err| anyhow::anyhow!("unreadable reply: {err}"))?;
        buf.advance(found.end);
        tally
            .latency
            .saturating_record(sent_at.elapsed().as_micros().max(1) as u64);
        tally.requests += 1;
        for (mine, got) in tally.by_error.iter_mut().zip(summary.by_error) {
            *mine += got;
        }
        tally.exceptions += u64::from(summary.exception.is_some());
        slots.add_permits(1);
    }
    writer.await.context("the writer panicked")?;
    Ok(Session::Done)
}

/// A process's user plus system CPU time, from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let field = |n: usize| -> anyhow::Result<u64> {
        rest.split_whitespace()
            .nth(n)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unreadable /proc/{pid}/stat"))
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// Addresses drawn from loaded ranges: a random range of the chosen kind,
/// then a random address in it.
pub struct Sampler {
    /// Ranges as `(start, end)`; IPv4 in the low 32 bits.
    china: Vec<(u128, u128)>,
    elsewhere: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
    china_percent: u64,
    ipv6_percent: u64,
    invalid_percent: u64,
    state: u64,
}

/// Inputs a server must refuse one by one (error 1).
const INVALID: [&str; 6] = ["999.1.1.1", "localhost", "1.2.3.0/24", "", "2001:db8::g", "1.2.3.4:80"];

impl Sampler {
    /// Loads the ranges `options` name and counts them by kind.
    pub async fn load(options: &SampleOptions) -> anyhow::Result<Sampler> {
        let source = crate::data::source::offline(
            options.sample_database_url.as_deref(),
            options.sample_data.as_deref(),
            LookupMode::Memory,
            Duration::from_secs(10),
        );
        let tables = crate::data::source::load_tables(&source)
            .await
            .context("cannot load the ranges to sample addresses from")?;
        Ok(Sampler::new(&tables, options))
    }

    pub fn new(tables: &Tables, options: &SampleOptions) -> Sampler {
        let (mut china, mut elsewhere, mut v6) = (Vec::new(), Vec::new(), Vec::new());
        if let TableIndex::V4(cn) = &tables.snapshot(Table::Cn).index {
            for (start, end, place) in cn.ranges().filter(|(_, _, p)| !p.is_blank()) {
                let range = (u128::from(start), u128::from(end));
                if place.is_china() {
                    china.push(range);
                } else {
                    elsewhere.push(range);
                }
            }
        }
        if let TableIndex::V6(index) = &tables.snapshot(Table::V6).index {
            v6.extend(index.ranges().filter(|(_, _, p)| !p.is_blank()).map(|(s, e, _)| (s, e)));
        }
        Sampler {
            china,
            elsewhere,
            v6,
            china_percent: u64::from(options.china_percent),
            ipv6_percent: u64::from(options.ipv6_percent),
            invalid_percent: u64::from(options.invalid_percent),
            state: 0x9e37_79b9_7f4a_7c15 ^ options.seed.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        }
    }

    fn step(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The next input: an address, or now and then an invalid one.
    pub fn input(&mut self) -> String {
        let (roll, pick, offset) = (
            self.step() % 100,
            self.step(),
            u128::from(self.step()) << 64 | u128::from(self.step()),
        );
        let choose = |ranges: &[(u128, u128)]| match ranges.len() {
            0 => None,
            n => Some(ranges[(pick % n as u64) as usize]),
        };
        if roll < self.invalid_percent {
            return INVALID[(pick % INVALID.len() as u64) as usize].to_owned();
        }
        if roll < self.invalid_percent + self.ipv6_percent {
            let n = match choose(&self.v6) {
                Some((start, end)) => within(start, end, offset),
                // No IPv6 ranges loaded: somewhere in 2400::/8.
                None => 0x24_u128 << 120 | offset >> 8,
            };
            return Ipv6Addr::from(n).to_string();
        }
        let ranges = if roll < self.invalid_percent + self.ipv6_percent + self.china_percent {
            &self.china
        } else {
            &self.elsewhere
        };
        let n = match choose(ranges) {
            Some((start, end)) => within(start, end, offset),
            None => offset & u128::from(u32::MAX),
        };
        Ipv4Addr::from(n as u32).to_string()
    }

    pub fn batch(&mut self, size: usize) -> Vec<String> {
        (0..size).map(|_| self.input()).collect()
    }
}

/// The point `offset` lands on in `start..=end`.
fn within(start: u128, end: u128, offset: u128) -> u128 {
    match (end - start).checked_add(1) {
        Some(span) => start + offset % span,
        None => offset,
    }
}

/// What `compare` asks of two servers.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareOptions {
    /// The server whose answers are taken as right.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// The server checked against it.
    #[arg(long)]
    pub against: String,
    /// Addresses to compare, per method.
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Methods to compare (repeatable).
    #[arg(long, value_enum, default_values_t = [LoadCall::ByIp, LoadCall::English])]
    pub method: Vec<LoadCall>,
    /// Differences to print in full.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub sample: SampleOptions,
}

/// One answer that differs.
#[derive(Debug)]
pub struct Difference {
    pub method: LoadCall,
    pub expected: GeoInfo,
    pub got: GeoInfo,
}

/// What [`compare`] found.
pub struct Comparison {
    pub compared: u64,
    /// Answers the first server marked corrected: how much of the
    /// comparison the corrections took part in.
    pub corrected: u64,
    pub differing: u64,
    /// The first differences, in full.
    pub shown: Vec<Difference>,
}

/// Sends the same sampled addresses to both servers and counts the
/// answers compared and those that differ (at most `keep` in full).
pub fn compare(options: &CompareOptions, keep: usize) -> anyhow::Result<Comparison> {
    let targets = [
        target(&options.addr, options.allow_remote)?,
        target(&options.against, options.allow_remote)?,
    ];
    let mut sampler = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(Sampler::load(&options.sample))?;
    let mut clients = targets
        .iter()
        .map(|t| {
            client::connect(&t.to_string(), Wire::FRAMED_BINARY, Duration::from_secs(60))
                .with_context(|| format!("cannot connect to {t}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut compared, mut corrected, mut differing, mut kept) = (0, 0, 0, Vec::new());
    for &method in &options.method {
        let mut left = options.count;
        while left > 0 {
            let ips = sampler.batch(left.min(options.batch.max(1)));
            left -= ips.len();
            let mut answers = Vec::new();
            for (client, target) in clients.iter_mut().zip(&targets) {
                let ips = ips.clone();
                let answer = match method {
                    LoadCall::ByIp => client.query_geo_info_by_i_p(ips),
                    LoadCall::English => client.query_geo_info(GeoRequest::new(ips, "en".to_owned())),
                    LoadCall::I18n => client.query_i18n_geo_info_by_i_p(ips),
                };
                answers.push(answer.with_context(|| format!("{method:?} to {target} failed"))?);
            }
            let got = answers.pop().expect("two servers");
            let expected = answers.pop().expect("two servers");
            if expected.len() != got.len() {
                bail!(
                    "{} answers from one server, {} from the other",
                    expected.len(),
                    got.len()
                );
            }
            compared += expected.len() as u64;
            corrected += expected.iter().filter(|g| g.geoip_corrected == Some(true)).count() as u64;
            for (expected, got) in expected.into_iter().zip(got) {
                if expected != got {
                    differing += 1;
                    if kept.len() < keep {
                        kept.push(Difference { method, expected, got });
                    }
                }
            }
        }
    }
    Ok(Comparison {
        compared,
        corrected,
        differing,
        shown: kept,
    })
}
