//! The bulk resolver's parts that know no I/O: taking the address out of
//! a log line, and summing up what the answers say.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::answer::ErrorNo;
use crate::thrift::GeoInfo;

/// The address text in `line`: the whole line trimmed, or its `field`-th
/// whitespace-separated field (1-based), without a port suffix. `None`
/// when the line has no such field.
pub fn address_in(line: &str, field: Option<usize>) -> Option<&str> {
    let text = match field {
        None => line.trim(),
        Some(n) => line.split_whitespace().nth(n.checked_sub(1)?)?,
    };
    Some(strip_port(text))
}

/// `1.2.3.4#53` (BIND), `1.2.3.4:53` and `[2001:db8::1]:53` without the
/// port; anything else as it is. A bare IPv6 address keeps its colons.
fn strip_port(text: &str) -> &str {
    if let Some(inside) = text.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        return inside.0;
    }
    if let Some((address, _)) = text.split_once('#') {
        return address;
    }
    match text.split_once(':') {
        Some((address, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => address,
        _ => text,
    }
}

/// Counts over the answers: how many of each outcome, and the most
/// frequent countries, provinces, carriers and AS organisations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub answers: u64,
    pub found: u64,
    pub invalid: u64,
    pub not_found: u64,
    /// Backend failures and unsupported languages.
    pub failed: u64,
    pub countries: HashMap<String, u64>,
    /// `country/province`, for answers that name a province.
    pub provinces: HashMap<String, u64>,
    pub carriers: HashMap<String, u64>,
    /// Every answer that names a network, found or not (error 2).
    pub as_orgs: HashMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, g: &GeoInfo) {
        self.answers += 1;
        if let (Some(_), Some(org)) = (g.geoip_asn, &g.geoip_as_org) {
            if !org.is_empty() {
                count(&mut self.as_orgs, org);
            }
        }
        match ErrorNo::from_wire(g.error_no.unwrap_or(0)) {
            ErrorNo::Answered => {
                self.found += 1;
                let country = g.geoip_country_name.as_deref().unwrap_or_default();
                let province = g.geoip_province_name.as_deref().unwrap_or_default();
                let carrier = g.geoip_carrier.as_deref().unwrap_or_default();
                if !province.is_empty() {
                    count(&mut self.provinces, &format!("{country}/{province}"));
                }
                if !carrier.is_empty() {
                    count(&mut self.carriers, carrier);
                }
                count(&mut self.countries, country);
            }
            ErrorNo::InvalidIp => self.invalid += 1,
            ErrorNo::NotFound => self.not_found += 1,
            ErrorNo::Backend | ErrorNo::UnsupportedLang => self.failed += 1,
        }
    }

    /// A readable report with the `top` most frequent of each kind.
    pub fn render(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} answers: {} found, {} invalid, {} not found, {} failed",
            self.answers, self.found, self.invalid, self.not_found, self.failed
        );
        for (title, counts) in [
            ("countries", &self.countries),
            ("provinces", &self.provinces),
            ("carriers", &self.carriers),
            ("AS organisations", &self.as_orgs),
        ] {
            let _ = writeln!(out, "top {top} {title} of {}:", counts.len());
            for (name, count) in most_frequent(counts, top) {
                let name = if name.is_empty() { "(no name)" } else { name };
                let _ = writeln!(out, "  {count:>10}  {name}");
            }
        }
        out
    }
}

/// One more of `key`; a key is copied only the first time it is seen.
fn count(counts: &mut HashMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

/// The `top` largest counts, ties by name.
pub fn most_frequent(counts: &HashMap<String, u64>, top: usize) -> Vec<(&str, u64)> {
    let mut sorted: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    sorted.truncate(top);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_out_of_each_line_shape() {
        let bind = "04-Dec-2026 04:00:00.123 queries: client @0x7f3a 1.2.3.4#53124 (example.com): query: example.com IN A +E(0) (10.0.0.53)";
        assert_eq!(address_in(bind, Some(6)), Some("1.2.3.4"));
        assert_eq!(address_in("  8.8.8.8 \n", None), Some("8.8.8.8"));
        assert_eq!(address_in("1.2.3.4:53", None), Some("1.2.3.4"));
        assert_eq!(address_in("[2001:db8::1]:53", None), Some("2001:db8::1"));
        assert_eq!(address_in("2001:db8::1#53", None), Some("2001:db8::1"));
        assert_eq!(address_in("2001:db8::1", None), Some("2001:db8::1"));
        assert_eq!(address_in("::1", None), Some("::1"));
        assert_eq!(address_in("a b", Some(3)), None);
        assert_eq!(address_in("a b", Some(0)), None);
        assert_eq!(address_in("host:http", None), Some("host:http"));
    }

    #[test]
    fn the_summary_counts_outcomes_and_ranks_names() {
        let answer = |country: &str, province: &str, carrier: &str| GeoInfo {
            error_no: Some(0),
            geoip_country_name: Some(country.into()),
            geoip_province_name: Some(province.into()),
            geoip_carrier: Some(carrier.into()),
            geoip_asn: (carrier == "电信").then_some(4134),
            geoip_as_org: (carrier == "电信").then(|| "CHINANET".into()),
            ..Default::default()
        };
        let error = |n| GeoInfo {
            error_no: Some(n),
            ..Default::default()
        };
        let mut summary = Summary::default();
        for g in [
            answer("中国", "广东", "电信"),
            answer("中国", "广东", "联通"),
            answer("中国", "北京", "电信"),
            answer("美国", "", ""),
            error(1),
            GeoInfo {
                geoip_asn: Some(15169),
                geoip_as_org: Some("Google LLC".into()),
                ..error(2)
            },
            error(3),
        ] {
            summary.add(&g);
        }
        assert_eq!(
            (
                summary.answers,
                summary.found,
                summary.invalid,
                summary.not_found,
                summary.failed
            ),
            (7, 4, 1, 1, 1)
        );
        assert_eq!(most_frequent(&summary.countries, 1), [("中国", 3)]);
        assert_eq!(
            most_frequent(&summary.provinces, 5),
            [("中国/广东", 2), ("中国/北京", 1)]
        );
        assert_eq!(most_frequent(&summary.carriers, 5), [("电信", 2), ("联通", 1)]);
        assert_eq!(most_frequent(&summary.as_orgs, 5), [("CHINANET", 2), ("Google LLC", 1)]);
        assert!(summary.render(2).contains("top 2 AS organisations of 2:"));
        assert!(summary.render(2).contains("top 2 countries of 2:"));
    }
}
