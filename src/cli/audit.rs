//! `audit`: the live answers against observations or another IP
//! database, with a report of where they disagree and, from
//! observations, the corrections strong evidence supports.

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

use super::AuditArgs;
use crate::config::LookupMode;
use crate::data::import::{overrides, read_ranges, schema_limits, Format, RangeBuilder};
use crate::data::index::{Builder, Key, RangeIndex, Tables};
use crate::domain::{Family, Lang, Table, TableLang};
use crate::thrift::GeoInfo;
use crate::tools::audit::{read_observations, Audit, Claim, Level};
use crate::tools::live::{Answerer, LiveSource};

/// Addresses asked of the live data at once.
const BATCH: usize = 10_000;

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let lang = match Lang::parse(&args.lang) {
        Ok(Lang::ZhCn) => TableLang::ZhCn,
        Ok(Lang::En) => TableLang::En,
        _ => bail!("--lang {:?}: an audit compares zh-CN or en answers", args.lang),
    };
    let live = Answerer::open(&LiveSource {
        addr: args.addr.as_deref(),
        data: args.data.as_deref(),
        database_url: args.database_url.as_deref(),
        mmdb: args.mmdb.as_deref(),
        lang: Some(lang.as_str()),
        connections: 1,
        timeout: args.timeout,
        lookup: LookupMode::Memory,
    })
    .await?;
    let mut audit = Audit::default();
    let compared = if let Some(path) = &args.observations {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let observations = read_observations(&bytes).with_context(|| path.display().to_string())?;
        for chunk in observations.chunks(BATCH) {
            let answers = live.answer(chunk.iter().map(|o| o.ip.to_string()).collect()).await?;
            for (observation, g) in chunk.iter().zip(&answers) {
                let claim = live_claim(g);
                audit.observe(observation, claim.as_ref().map(|(c, range)| (c, *range)));
            }
        }
        format!("{} observations from {}", observations.len(), path.display())
    } else {
        let path = args.against.as_deref().expect("clap requires one");
        let other = Other::open(path, lang)?;
        let probes = match (args.sample, live.tables()) {
            (Some(n), _) => other.sample(n),
            (None, Some(tables)) => probes(&tables, lang),
            (None, None) => bail!("--against with --addr needs --sample: a server cannot list its ranges"),
        };
        for chunk in probes.chunks(BATCH) {
            let answers = live.answer(chunk.iter().map(IpAddr::to_string).collect()).await?;
            for (&ip, g) in chunk.iter().zip(&answers) {
                let claim = live_claim(g);
                audit.add(
                    ip,
                    claim.as_ref().map(|(c, range)| (c, *range)),
                    other.claim(ip).as_ref(),
                    1,
                );
            }
        }
        format!("{} probes against {}", probes.len(), path.display())
    };
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", report_json(&audit, args.top, &compared, seconds));
    } else {
        println!(
            "audit of the live {} answers: {compared} in {seconds:.1} s",
            lang.as_str()
        );
        print!("{}", audit.render(args.top));
    }
    if let Some(path) = &args.propose {
        let proposals = audit.proposals(lang, args.agreement, args.min_count);
        std::fs::write(path, overrides::to_csv(&proposals))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "{} corrections proposed in {} (at least {} observations agreeing on {}% of the weight); review, then \
             import --table overrides --dry-run",
            proposals.len(),
            path.display(),
            args.min_count.max(2),
            args.agreement
        );
    }
    Ok(())
}

/// A live answer's claim and the range it answered from.
fn live_claim(g: &GeoInfo) -> Option<(Claim, (IpAddr, IpAddr))> {
    let claim = Claim::of_answer(g)?;
    let bound = |text: &Option<String>| text.as_deref()?.parse::<IpAddr>().ok();
    Some((claim, (bound(&g.geoip_start_ip_str)?, bound(&g.geoip_end_ip_str)?)))
}

/// Each range of the live tables of `lang` at its bounds and three
/// addresses inside.
fn probes(tables: &Tables, lang: TableLang) -> Vec<IpAddr> {
    let wanted: &[Table] = match lang {
        TableLang::ZhCn => &[Table::Cn, Table::V6],
        TableLang::En => &[Table::En],
    };
    let mut out = Vec::new();
    for &table in wanted {
        let snapshot = tables.snapshot(table);
        for (start, end, _) in snapshot.index.ranges() {
            let span = end - start;
            let mut points = [start, start + span / 4, start + span / 2, start + span / 4 * 3, end];
            points.sort_unstable();
            let mut last = None;
            for point in points {
                if last != Some(point) {
                    out.push(table.family().ip(point));
                    last = Some(point);
                }
            }
        }
    }
    out
}

/// The other database, read as `import` would read it into the tables of
/// the audited language.
struct Other {
    v4: Option<RangeIndex<u32>>,
    v6: Option<RangeIndex<u128>>,
}

impl Other {
    fn open(path: &Path, lang: TableLang) -> anyhow::Result<Other> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let format = Format::detect(&bytes);
        let (v4_table, names) = match lang {
            TableLang::ZhCn => (Table::Cn, Lang::ZhCn),
            TableLang::En => (Table::En, Lang::En),
        };
        let limits = schema_limits();
        // A file may hold one family only (a CSV, an ipdb without IPv6).
        let read = |table: Table| read_ranges(&bytes, format, table, names, None, &limits);
        let (v4, v6) = match (read(v4_table), read(Table::V6)) {
            (Err(err), Err(_)) => bail!("{} ({format}): {err}", path.display()),
            (v4, v6) => (v4.ok(), v6.ok()),
        };
        Ok(Other {
            v4: v4.map(|built| index(&built, |n| n as u32)),
            v6: v6.map(|built| index(&built, |n| n)),
        })
    }

    /// What the other database says about `ip`: its row's claim, if its
    /// row names anything.
    fn claim(&self, ip: IpAddr) -> Option<Claim> {
        let place = match ip {
            IpAddr::V4(v4) => self.v4.as_ref()?.get(u32::from(v4)).map(|(_, _, p)| p.clone()),
            IpAddr::V6(v6) => self.v6.as_ref()?.get(u128::from(v6)).map(|(_, _, p)| p.clone()),
        }?;
        (!place.is_blank()).then(|| Claim::of_place(&place))
    }

    /// `n` addresses, each at random in a random range.
    fn sample(&self, n: usize) -> Vec<IpAddr> {
        let ranges: Vec<(u128, u128, Family)> = self
            .v4
            .iter()
            .flat_map(|i| i.ranges().map(|(s, e, _)| (u128::from(s), u128::from(e), Family::V4)))
            .chain(
                self.v6
                    .iter()
                    .flat_map(|i| i.ranges().map(|(s, e, _)| (s, e, Family::V6))),
            )
            .collect();
        if ranges.is_empty() {
            return Vec::new();
        }
        // A fixed seed: the same file gives the same probes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x
        };
        (0..n)
            .map(|_| {
                let (start, end, family) = ranges[(next() % ranges.len() as u64) as usize];
                let wide = (u128::from(next()) << 64) | u128::from(next());
                let offset = wide % (end - start).saturating_add(1).max(1);
                family.ip(start + offset)
            })
            .collect()
    }
}

/// An index of ranges `read_ranges` gave (sorted, validated).
fn index<K: Key>(built: &RangeBuilder, key: impl Fn(u128) -> K) -> RangeIndex<K> {
    let mut builder = Builder::with_capacity(built.ranges.len());
    for range in &built.ranges {
        builder
            .push_place(key(range.start), key(range.end), &range.place)
            .expect("read_ranges validated them");
    }
    builder.finish()
}

/// The report as one JSON object.
fn report_json(audit: &Audit, top: usize, compared: &str, seconds: f64) -> serde_json::Value {
    let levels: serde_json::Map<String, serde_json::Value> = Level::ALL
        .into_iter()
        .map(|level| {
            let a = audit.level(level);
            (
                level.name().to_owned(),
                json!({
                    "compared": a.compared,
                    "agreed": a.agreed,
                    "agree_percent": a.percent(),
                    "weight": a.weight,
                    "weight_agreed": a.weight_agreed,
                    "weighted_agree_percent": a.weighted_percent(),
                }),
            )
        })
        .collect();
    let disagreements = audit.disagreements();
    let breakdown = |by_carrier: bool| -> Vec<serde_json::Value> {
        audit
            .breakdown(by_carrier)
            .into_iter()
            .take(top)
            .map(|(name, a)| json!({ "name": name, "compared": a.compared, "agree_percent": a.percent(), "weighted_agree_percent": a.weighted_percent() }))
            .collect()
    };
    json!({
        "compared": audit.compared,
        "what": compared,
        "weight": audit.weight,
        "live_unplaced": audit.unplaced,
        "other_unplaced": audit.other_unplaced,
        "seconds": seconds,
        "levels": levels,
        "disagreement_ranges": disagreements.len(),
        "disagreements": disagreements.iter().take(top).collect::<Vec<_>>(),
        "by_province": breakdown(false),
        "by_carrier": breakdown(true),
    })
}
