//! The audit's parts that know no I/O: what each side says about an
//! address ([`Claim`]), whether two claims agree at each level, the tally
//! of agreement and of the disagreements, and the corrections that strong
//! evidence supports.
//!
//! Agreement is by codes where both sides have codes of one scheme (ISO
//! 3166-1 for countries, six-digit GB/T 2260 for provinces and cities), so
//! that 广东 and 广东省 agree; otherwise by names, without the suffixes
//! official names carry (省, 市, 自治区, …), case aside. Carriers agree
//! when their names do without a leading 中国 (电信 and 中国电信 agree).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde::Serialize;

use crate::data::corrections::{ip_number, Correction};
use crate::data::import::{csv_headers, same_place_name, Codes, Origin, SourceError};
use crate::domain::{Family, Place, PlaceBuf, TableLang};
use crate::thrift::GeoInfo;

/// What one source says about an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    pub country_code: String,
    pub country: String,
    pub province_code: String,
    pub province: String,
    pub city_code: String,
    pub city: String,
    pub carrier: String,
}

impl Claim {
    /// A live answer's claim; none for an address it could not place.
    pub fn of_answer(g: &GeoInfo) -> Option<Claim> {
        if g.error_no != Some(0) {
            return None;
        }
        let t = |v: &Option<String>| v.clone().unwrap_or_default();
        Some(Claim {
            country_code: t(&g.geoip_country_code),
            country: t(&g.geoip_country_name),
            province_code: t(&g.geoip_province_code),
            province: t(&g.geoip_province_name),
            city_code: t(&g.geoip_city_code),
            city: t(&g.geoip_city_name),
            carrier: t(&g.geoip_carrier),
        })
    }

    /// A database row's claim.
    pub fn of_place(place: &Place) -> Claim {
        let f = place.fields();
        Claim {
            country_code: f.country_code.into(),
            country: f.country_name.into(),
            province_code: f.province_code.into(),
            province: f.province_name.into(),
            city_code: f.city_code.into(),
            city: f.city_name.into(),
            carrier: f.carrier.into(),
        }
    }

    /// Names only (an observation): the codes the dictionaries give them.
    fn with_codes(self) -> Claim {
        let mut place = PlaceBuf {
            country_code: self.country_code,
            country_name: self.country,
            province_code: self.province_code,
            province_name: self.province,
            city_code: self.city_code,
            city_name: self.city,
            carrier: self.carrier,
            ..PlaceBuf::default()
        };
        Codes::get().fill(&mut place);
        Claim {
            country_code: place.country_code,
            country: place.country_name,
            province_code: place.province_code,
            province: place.province_name,
            city_code: place.city_code,
            city: place.city_name,
            carrier: place.carrier,
        }
    }
}

/// The levels an audit compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Country,
    Province,
    City,
    Carrier,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Country, Level::Province, Level::City, Level::Carrier];

    pub fn name(self) -> &'static str {
        match self {
            Level::Country => "country",
            Level::Province => "province",
            Level::City => "city",
            Level::Carrier => "carrier",
        }
    }

    /// The claim's name at this level (its code where it has no name).
    pub fn value(self, claim: &Claim) -> &str {
        let (code, name) = self.parts(claim);
        if name.is_empty() {
            code
        } else {
            name
        }
    }

    fn parts(self, claim: &Claim) -> (&str, &str) {
        match self {
            Level::Country => (&claim.country_code, &claim.country),
            Level::Province => (&claim.province_code, &claim.province),
            Level::City => (&claim.city_code, &claim.city),
            Level::Carrier => ("", &claim.carrier),
        }
    }

    /// Whether `live` agrees with `other` here; `None` where `other` says
    /// nothing at this level, which is no evidence either way.
    pub fn agrees(self, live: &Claim, other: &Claim) -> Option<bool> {
        let ((live_code, live_name), (other_code, other_name)) = (self.parts(live), self.parts(other));
        if other_code.is_empty() && other_name.is_empty() {
            return None;
        }
        let same_scheme = match self {
            Level::Country => true,
            Level::Province | Level::City => is_gbt2260(live_code) && is_gbt2260(other_code),
            Level::Carrier => false,
        };
        if same_scheme && !live_code.is_empty() && !other_code.is_empty() {
            return Some(live_code.eq_ignore_ascii_case(other_code));
        }
        Some(match self {
            Level::Carrier => carrier_key(live_name) == carrier_key(other_name),
            _ => !live_name.is_empty() && same_place_name(live_name, other_name),
        })
    }
}

fn is_gbt2260(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

fn carrier_key(name: &str) -> String {
    let name = name.trim();
    name.strip_prefix("中国").unwrap_or(name).to_lowercase()
}

/// One observation: an address, what was seen there, how many users or
/// queries stand behind it, and who saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ip: IpAddr,
    pub claim: Claim,
    pub count: u64,
    pub source: String,
}

/// Reads an observations CSV: a header naming `ip` and any of `country`,
/// `province`, `city`, `carrier` (or their `_name` forms), `count` and
/// `source`; refuses a bad row with its line.
pub fn read_observations(bytes: &[u8]) -> Result<Vec<Observation>, SourceError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let headers = csv_headers(&mut reader)?;
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let ip_at = column(&["ip"]).ok_or_else(|| SourceError::NotFormat("the header has no ip column".into()))?;
    let at = [
        column(&["country", "country_name"]),
        column(&["province", "province_name"]),
        column(&["city", "city_name"]),
        column(&["carrier", "carrier_name"]),
        column(&["count"]),
        column(&["source"]),
    ];
    if at[..4].iter().all(Option::is_none) {
        return Err(SourceError::NotFormat(
            "the header names none of country, province, city, carrier: nothing to compare".into(),
        ));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| SourceError::Row {
            at: Origin::Line(e.position().map_or(0, |p| p.line())),
            reason: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let row_error = |reason: String| SourceError::Row {
            at: Origin::Line(line),
            reason,
        };
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim().to_owned();
        let ip_text = field(Some(ip_at));
        let ip = match ip_text.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            Ok(ip) => ip,
            Err(_) => return Err(row_error(format!("ip {ip_text:?} is not an IP address"))),
        };
        let count = match field(at[4]).as_str() {
            "" => 1,
            text => text
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| row_error(format!("count {text:?} is not a positive whole number")))?,
        };
        let claim = Claim {
            country: field(at[0]),
            province: field(at[1]),
            city: field(at[2]),
            carrier: field(at[3]),
            ..Claim::default()
        }
        .with_codes();
        out.push(Observation {
            ip,
            claim,
            count,
            source: field(at[5]),
        });
    }
    if out.is_empty() {
        return Err(SourceError::Empty);
    }
    Ok(out)
}

/// Agreement at one level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Agreement {
    pub compared: u64,
    pub agreed: u64,
    pub weight: u64,
    pub weight_agreed: u64,
}

impl Agreement {
    fn add(&mut self, agreed: bool, weight: u64) {
        self.compared += 1;
        self.weight += weight;
        if agreed {
            self.agreed += 1;
            self.weight_agreed += weight;
        }
    }

    pub fn percent(&self) -> f64 {
        percent(self.agreed, self.compared)
    }

    pub fn weighted_percent(&self) -> f64 {
        percent(self.weight_agreed, self.weight)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 100.0,
        n => part as f64 * 100.0 / n as f64,
    }
}

/// Addresses where the sides disagree alike: a range, merged across
/// neighbouring live ranges, what each side says and how much stands
/// behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub start: IpAddr,
    pub end: IpAddr,
    pub level: Level,
    pub live: String,
    pub other: String,
    pub count: u64,
    pub weight: u64,
}

/// The tally of an audit.
#[derive(Debug, Default)]
pub struct Audit {
    /// Probes or observations compared, and their weight.
    pub compared: u64,
    pub weight: u64,
    /// Those the live data could not place (error 2 or worse).
    pub unplaced: u64,
    /// Those the other source could not place (a database without a row).
    pub other_unplaced: u64,
    levels: [Agreement; 4],
    /// By live range and level, what disagrees.
    disagreements: HashMap<DisagreementKey, (u64, u64)>,
    /// Agreement at every level, by the live province and by carrier.
    by_province: HashMap<String, Agreement>,
    by_carrier: HashMap<String, Agreement>,
    /// Per block of addresses (IPv4 /24, IPv6 /48) within a live range,
    /// the evidence for proposals.
    blocks: HashMap<Block, Evidence>,
}

/// A live range (start, end, family), a level, and what each side says.
type DisagreementKey = (u128, u128, Family, Level, String, String);

/// A /24 (or /48) within one live range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Block {
    family: Family,
    start: u128,
    end: u128,
}

/// A correction proposed for a run of blocks: the value per level, why,
/// and who observed it.
struct Proposal {
    block: Block,
    values: [Option<String>; 4],
    reasons: Vec<String>,
    sources: Vec<String>,
}

/// What observations in one block say, against the live claim there.
#[derive(Debug, Default)]
struct Evidence {
    live: Claim,
    /// By level: each value seen with its weight and observations, and
    /// the totals.
    seen: [BTreeMap<String, (u64, u64)>; 4],
    totals: [(u64, u64); 4],
    sources: Vec<String>,
}

impl Audit {
    /// Compares one probe or observation at `ip`: the live answer, which
    /// covers `live_range`, against `other`; `weight` stands behind it.
    pub fn add(
        &mut self,
        ip: IpAddr,
        live: Option<(&Claim, (IpAddr, IpAddr))>,
        other: Option<&Claim>,
        weight: u64,
    ) -> Option<()> {
        self.compared += 1;
        self.weight += weight;
        let Some(other) = other else {
            self.other_unplaced += 1;
            return None;
        };
        let Some((live, (start, end))) = live else {
            self.unplaced += 1;
            return None;
        };
        let family = family_of(ip);
        let (start, end) = (ip_number(start), ip_number(end));
        let mut all_agree = true;
        for level in Level::ALL {
            let Some(agreed) = level.agrees(live, other) else {
                continue;
            };
            self.levels[level as usize].add(agreed, weight);
            all_agree &= agreed;
            if !agreed {
                let key = (
                    start,
                    end,
                    family,
                    level,
                    level.value(live).to_owned(),
                    level.value(other).to_owned(),
                );
                let tally = self.disagreements.entry(key).or_default();
                tally.0 += 1;
                tally.1 += weight;
            }
        }
        self.by_province
            .entry(format!("{} {}", live.country, live.province).trim().to_owned())
            .or_default()
            .add(all_agree, weight);
        self.by_carrier
            .entry(live.carrier.clone())
            .or_default()
            .add(all_agree, weight);
        Some(())
    }

    /// [`Audit::add`] for an observation, keeping its evidence for proposals.
    pub fn observe(&mut self, observation: &Observation, live: Option<(&Claim, (IpAddr, IpAddr))>) {
        if self
            .add(observation.ip, live, Some(&observation.claim), observation.count)
            .is_none()
        {
            return;
        }
        let (live, (start, end)) = live.expect("added");
        let family = family_of(observation.ip);
        let bits = match family {
            Family::V4 => 8,
            Family::V6 => 80,
        };
        let ip = ip_number(observation.ip);
        let block_start = (ip >> bits << bits).max(ip_number(start));
        let block_end = (ip | ((1u128 << bits) - 1)).min(ip_number(end));
        let evidence = self
            .blocks
            .entry(Block {
                family,
                start: block_start,
                end: block_end,
            })
            .or_insert_with(|| Evidence {
                live: live.clone(),
                ..Evidence::default()
            });
        for level in Level::ALL {
            let value = level.value(&observation.claim);
            if value.is_empty() {
                continue;
            }
            let seen = evidence.seen[level as usize].entry(value.to_owned()).or_default();
            seen.0 += observation.count;
            seen.1 += 1;
            let total = &mut evidence.totals[level as usize];
            total.0 += observation.count;
            total.1 += 1;
        }
        if !observation.source.is_empty() && !evidence.sources.contains(&observation.source) {
            evidence.sources.push(observation.source.clone());
        }
    }

    pub fn level(&self, level: Level) -> Agreement {
        self.levels[level as usize]
    }

    /// The disagreements, neighbouring live ranges that disagree alike
    /// merged, by weight then count, largest first.
    pub fn disagreements(&self) -> Vec<Disagreement> {
        let mut keys: Vec<_> = self.disagreements.iter().collect();
        keys.sort_by(|a, b| {
            (a.0 .3, &a.0 .4, &a.0 .5, a.0 .2, a.0 .0).cmp(&(b.0 .3, &b.0 .4, &b.0 .5, b.0 .2, b.0 .0))
        });
        let mut merged: Vec<(u128, u128, Family, Disagreement)> = Vec::new();
        for ((start, end, family, level, live, other), (count, weight)) in keys {
            if let Some((_, last_end, last_family, last)) = merged.last_mut() {
                let alike =
                    *last_family == *family && last.level == *level && last.live == *live && last.other == *other;
                if alike && last_end.checked_add(1) == Some(*start) {
                    *last_end = *end;
                    last.end = family.ip(*end);
                    last.count += count;
                    last.weight += weight;
                    continue;
                }
            }
            merged.push((
                *start,
                *end,
                *family,
                Disagreement {
                    start: family.ip(*start),
                    end: family.ip(*end),
                    level: *level,
                    live: live.clone(),
                    other: other.clone(),
                    count: *count,
                    weight: *weight,
                },
            ));
        }
        let mut out: Vec<Disagreement> = merged.into_iter().map(|(.., d)| d).collect();
        out.sort_by_key(|d| std::cmp::Reverse((d.weight, d.count)));
        out
    }

    /// Agreement by the live province (or by carrier), the largest first.
    pub fn breakdown(&self, by_carrier: bool) -> Vec<(String, Agreement)> {
        let map = if by_carrier {
            &self.by_carrier
        } else {
            &self.by_province
        };
        let mut out: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|a, b| (b.1.weight, &a.0).cmp(&(a.1.weight, &b.0)));
        out
    }

    /// The corrections the observations support in `lang`: per block, a
    /// level where observations that agree with each other on a value the
    /// live data does not give hold at least `agreement` percent of the
    /// weight giving that level, and number at least `min_count` (never
    /// fewer than two). Neighbouring blocks proposing alike are merged.
    pub fn proposals(&self, lang: TableLang, agreement: f64, min_count: u64) -> Vec<Correction> {
        let min_count = min_count.max(2);
        let mut blocks: Vec<(&Block, &Evidence)> = self.blocks.iter().collect();
        blocks.sort_by_key(|(block, _)| **block);
        let mut out: Vec<Proposal> = Vec::new();
        for (block, evidence) in blocks {
            let mut values: [Option<String>; 4] = Default::default();
            let mut reasons = Vec::new();
            for level in Level::ALL {
                let (total_weight, total_count) = evidence.totals[level as usize];
                let Some((value, &(weight, count))) = evidence.seen[level as usize]
                    .iter()
                    .max_by_key(|(value, (weight, count))| (*weight, *count, std::cmp::Reverse(*value)))
                else {
                    continue;
                };
                let strong = count >= min_count && weight as f64 * 100.0 >= agreement * total_weight as f64;
                let claim = claim_at(level, value);
                if !strong || level.agrees(&evidence.live, &claim) != Some(false) {
                    continue;
                }
                reasons.push(format!(
                    "{count} of {total_count} observations (weight {weight} of {total_weight}) say {} {value}, the live data {:?}",
                    level.name(),
                    level.value(&evidence.live)
                ));
                values[level as usize] = Some(value.clone());
            }
            if reasons.is_empty() {
                continue;
            }
            if let Some(last) = out.last_mut() {
                let next_to = last.block.family == block.family && last.block.end.checked_add(1) == Some(block.start);
                if next_to && last.values == values {
                    last.block.end = block.end;
                    if last.reasons.len() < 3 {
                        last.reasons.extend(reasons);
                    }
                    for source in &evidence.sources {
                        if !last.sources.contains(source) {
                            last.sources.push(source.clone());
                        }
                    }
                    continue;
                }
            }
            out.push(Proposal {
                block: *block,
                values,
                reasons,
                sources: evidence.sources.clone(),
            });
        }
        out.into_iter()
            .map(
                |Proposal {
                     block,
                     values,
                     reasons,
                     sources,
                 }| {
                    let value = |level: Level| values[level as usize].as_deref().unwrap_or("");
                    Correction {
                        start: block.family.ip(block.start),
                        end: block.family.ip(block.end),
                        lang,
                        place: Place::from_columns([
                            "",
                            value(Level::Country),
                            "",
                            value(Level::Province),
                            "",
                            value(Level::City),
                            "",
                            value(Level::Carrier),
                        ]),
                        reason: format!("audit: {}", reasons.join("; ")),
                        source: match sources.is_empty() {
                            true => "audit".to_owned(),
                            false => sources.into_iter().take(3).collect::<Vec<_>>().join(" "),
                        },
                        created_at: None,
                        expires_at: None,
                    }
                },
            )
            .collect()
    }

    /// The report as text: agreement per level, the `top` largest
    /// disagreements, and the breakdowns.
    pub fn render(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} compared (weight {}); the live data placed none of {}, the other source none of {}",
            self.compared, self.weight, self.unplaced, self.other_unplaced
        );
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>8} {:>10}",
            "level", "compared", "agreed", "agree%", "weighted%"
        );
        for level in Level::ALL {
            let a = self.level(level);
            let _ = writeln!(
                out,
                "{:<10} {:>10} {:>10} {:>7.2}% {:>9.2}%",
                level.name(),
                a.compared,
                a.agreed,
                a.percent(),
                a.weighted_percent()
            );
        }
        let disagreements = self.disagreements();
        let _ = writeln!(out, "disagreements: {} ranges, the largest first", disagreements.len());
        for d in disagreements.iter().take(top) {
            let _ = writeln!(out, "  {d}");
        }
        for (title, by_carrier) in [("by live province", false), ("by live carrier", true)] {
            let _ = writeln!(out, "{title} (all levels agreeing):");
            for (name, a) in self.breakdown(by_carrier).iter().take(top) {
                let name = if name.is_empty() { "(none)" } else { name };
                let _ = writeln!(
                    out,
                    "  {name}: {:.2}% of {} ({:.2}% by weight)",
                    a.percent(),
                    a.compared,
                    a.weighted_percent()
                );
            }
        }
        out
    }
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} - {} {}: live {:?}, other {:?} ({} seen, weight {})",
            self.start,
            self.end,
            self.level.name(),
            self.live,
            self.other,
            self.count,
            self.weight
        )
    }
}

/// A claim of `value` at `level` alone, codes filled, for comparing.
fn claim_at(level: Level, value: &str) -> Claim {
    let mut claim = Claim::default();
    match level {
        Level::Country => claim.country = value.to_owned(),
        Level::Province => claim.province = value.to_owned(),
        Level::City => claim.city = value.to_owned(),
        Level::Carrier => claim.carrier = value.to_owned(),
    }
    // A province or city code needs the country to be filled.
    if matches!(level, Level::Province | Level::City) {
        return claim;
    }
    claim.with_codes()
}

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(country: &str, province: &str, city: &str, carrier: &str) -> Claim {
        Claim {
            country: country.into(),
            province: province.into(),
            city: city.into(),
            carrier: carrier.into(),
            ..Claim::default()
        }
        .with_codes()
    }

    #[test]
    fn claims_agree_by_codes_or_by_names_without_suffixes() {
        let live = claim("中国", "广东", "广州", "电信");
        let other = claim("中国", "广东省", "广州市", "中国电信");
        for level in Level::ALL {
            assert_eq!(level.agrees(&live, &other), Some(true), "{level:?}");
        }
        let elsewhere = claim("中国", "河北", "", "联通");
        assert_eq!(Level::Province.agrees(&live, &elsewhere), Some(false));
        assert_eq!(
            Level::City.agrees(&live, &elsewhere),
            None,
            "no city observed: no evidence"
        );
        assert_eq!(Level::Carrier.agrees(&live, &elsewhere), Some(false));
        // MaxMind's ISO subdivision code against a GB/T 2260 code: by name.
        let maxmind = Claim {
            province_code: "GD".into(),
            ..claim("中国", "广东", "", "")
        };
        assert_eq!(Level::Province.agrees(&maxmind, &other), Some(true));
        assert_eq!(
            Level::Country.agrees(&claim("美国", "", "", ""), &claim("United States", "", "", "")),
            Some(true)
        );
    }

    fn observation(ip: &str, province: &str, count: u64) -> Observation {
        Observation {
            ip: ip.parse().unwrap(),
            claim: claim("中国", province, "", ""),
            count,
            source: "cdn".into(),
        }
    }

    #[test]
    fn only_well_supported_disagreements_are_proposed() {
        let live = claim("中国", "广东", "广州", "电信");
        let range = ("1.2.0.0".parse().unwrap(), "1.2.255.255".parse().unwrap());
        let mut audit = Audit::default();
        // 1.2.3.0/24: five agree on 河北, one says 广东.
        for (i, province) in ["河北", "河北", "河北", "河北", "河北", "广东"].iter().enumerate() {
            audit.observe(&observation(&format!("1.2.3.{i}"), province, 10), Some((&live, range)));
        }
        // 1.2.4.0/24: a lone observation.
        audit.observe(&observation("1.2.4.1", "河南", 1000), Some((&live, range)));
        // 1.2.5.0/24: split evenly.
        for (i, province) in ["河南", "湖南", "河南", "湖南"].iter().enumerate() {
            audit.observe(&observation(&format!("1.2.5.{i}"), province, 10), Some((&live, range)));
        }
        let proposals = audit.proposals(TableLang::ZhCn, 80.0, 3);
        assert_eq!(proposals.len(), 1, "{proposals:?}");
        let p = &proposals[0];
        assert_eq!(
            (p.start.to_string(), p.end.to_string()),
            ("1.2.3.0".into(), "1.2.3.255".into())
        );
        assert_eq!(p.place.province_name(), "河北");
        assert_eq!(p.place.country_name(), "", "the country agrees: not proposed");
        assert_eq!(
            p.reason,
            "audit: 5 of 6 observations (weight 50 of 60) say province 河北, the live data \"广东\""
        );
        assert_eq!(p.source, "cdn");
        let province = audit.level(Level::Province);
        assert_eq!((province.compared, province.agreed), (11, 1));
        assert_eq!(audit.level(Level::Country).percent(), 100.0);
    }

    #[test]
    fn neighbours_disagreeing_alike_are_one_range() {
        let live = claim("中国", "广东", "", "");
        let other = claim("中国", "河北", "", "");
        let mut audit = Audit::default();
        let at = |s: &str| s.parse::<IpAddr>().unwrap();
        audit.add(
            at("1.0.0.1"),
            Some((&live, (at("1.0.0.0"), at("1.0.0.255")))),
            Some(&other),
            1,
        );
        audit.add(
            at("1.0.1.1"),
            Some((&live, (at("1.0.1.0"), at("1.0.1.255")))),
            Some(&other),
            1,
        );
        audit.add(
            at("1.0.3.1"),
            Some((&live, (at("1.0.3.0"), at("1.0.3.255")))),
            Some(&other),
            1,
        );
        let d = audit.disagreements();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].to_string(),
            "1.0.0.0 - 1.0.1.255 province: live \"广东\", other \"河北\" (2 seen, weight 2)"
        );
    }
}
