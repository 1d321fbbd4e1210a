//! A load generator: many connections, each a blocking client in its own
//! thread sending batches back to back for a fixed time, with latency
//! recorded in an HDR histogram. Loopback only unless told otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use crate::client::{self, Protocol, Transport};
use crate::thrift::{GeoRequest, TIPServiceSyncClient};

/// Which method the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// queryGeoInfoByIP (zh-CN)
    ByIp,
    /// queryGeoInfo with lang "en"
    English,
    /// queryI18nGeoInfoByIP (MaxMind only)
    I18n,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// Concurrent connections, one thread each.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// IPs per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// How long to send; the run stops by itself.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "by-ip")]
    pub method: Method,
    /// Share of IPv6 addresses in each batch, 0 to 100.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub ipv6_percent: u8,
    #[arg(long, value_enum, default_value = "framed")]
    pub transport: Transport,
    #[arg(long, value_enum, default_value = "binary")]
    pub protocol: Protocol,
    /// Permit a target outside the loopback network.
    #[arg(long)]
    pub allow_remote: bool,
}

/// What a run, or one connection of it, measured.
#[derive(Debug)]
pub struct Tally {
    pub requests: u64,
    pub lookups: u64,
    /// Answers with error 3: a backend failed.
    pub failed_lookups: u64,
    /// Request latency in microseconds.
    pub latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            lookups: 0,
            failed_lookups: 0,
            // 1 µs to 60 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.lookups += other.lookups;
        self.failed_lookups += other.failed_lookups;
        self.latency.add(&other.latency).expect("same histogram bounds");
    }
}

/// A whole run.
#[derive(Debug)]
pub struct Report {
    pub tally: Tally,
    pub elapsed: Duration,
}

impl Report {
    pub fn summary(&self) -> String {
        let (t, seconds) = (&self.tally, self.elapsed.as_secs_f64());
        let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{} requests, {} lookups in {seconds:.1} s: {:.0} requests/s, {:.0} lookups/s; \
             latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; {} lookups failed",
            t.requests,
            t.lookups,
            t.requests as f64 / seconds,
            t.lookups as f64 / seconds,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            t.latency.max() as f64 / 1000.0,
            t.failed_lookups,
        )
    }
}

/// Runs the load and reports; blocks for `options.duration`.
pub fn run(options: &LoadOptions) -> anyhow::Result<Report> {
    let target = options
        .addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", options.addr))?
        .next()
        .with_context(|| format!("{} resolves to nothing", options.addr))?;
    if !target.ip().is_loopback() && !options.allow_remote {
        bail!("{target} is not a loopback address; pass --allow-remote to load another host");
    }
    let started = Instant::now();
    let deadline = started + options.duration;
    let workers: Vec<_> = (0..options.connections)
        .map(|worker| {
            let options = options.clone();
            std::thread::spawn(move || drive(&options, worker as u64, deadline))
        })
        .collect();
    let mut tally = Tally::new();
    for worker in workers {
        tally.add(&worker.join().expect("a load worker panicked")?);
    }
    Ok(Report {
        tally,
        elapsed: started.elapsed(),
    })
}

/// One connection's loop.
fn drive(options: &LoadOptions, worker: u64, deadline: Instant) -> anyhow::Result<Tally> {
    let mut client = client::connect(
        &options.addr,
        options.transport,
        options.protocol,
        Duration::from_secs(30),
    )
    .with_context(|| format!("cannot connect to {}", options.addr))?;
    let mut addresses = Addresses::new(worker, options.ipv6_percent);
    let mut report = Tally::new();
    while Instant::now() < deadline {
        let batch: Vec<String> = (0..options.batch).map(|_| addresses.next().to_string()).collect();
        let sent = Instant::now();
        let answers = match options.method {
            Method::ByIp => client.query_geo_info_by_i_p(batch),
            Method::English => client.query_geo_info(GeoRequest::new(batch, "en".to_owned())),
            Method::I18n => client.query_i18n_geo_info_by_i_p(batch),
        }
        .context("request failed")?;
        let took = sent.elapsed().as_micros().max(1) as u64;
        report.latency.saturating_record(took);
        report.requests += 1;
        report.lookups += answers.len() as u64;
        // Not found (2) is an answer; a backend failure (3) is not.
        report.failed_lookups += answers.iter().filter(|g| g.error_no == Some(3)).count() as u64;
    }
    Ok(report)
}

/// Pseudo-random public-looking addresses (xorshift), reproducible per worker.
struct Addresses {
    state: u64,
    ipv6_percent: u64,
}

impl Addresses {
    fn new(worker: u64, ipv6_percent: u8) -> Self {
        Addresses {
            state: 0x9e37_79b9_7f4a_7c15 ^ (worker + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            ipv6_percent: u64::from(ipv6_percent),
        }
    }

    fn step(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn next(&mut self) -> IpAddr {
        let pick = self.step();
        if pick % 100 < self.ipv6_percent {
            // Inside 2000::/3, where allocated IPv6 space is.
            let high = (0x2000_u128 | u128::from(self.step() as u16 & 0x1fff)) << 112;
            IpAddr::V6(Ipv6Addr::from(high | u128::from(self.step()) << 48))
        } else {
            IpAddr::V4(Ipv4Addr::from((pick >> 32) as u32))
        }
    }
}
