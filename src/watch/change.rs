//! Whether a name has changed: each round's answer for a name is reduced
//! to a view (resolving or failing, its addresses and where they are, the
//! expectations it breaks), and a view that differs from the confirmed one
//! becomes a change only after it has held for `confirm` rounds. No I/O.
//!
//! The rule, as the README states it:
//! - A round's view compares by the set of addresses (`compare =
//!   "addresses"`) or by the set of places they are in (`"places"`:
//!   country, province, city, carrier, AS); order never counts, so a
//!   round-robin that rotates its records is quiet either way.
//! - With `window = K`, a view holds the addresses of the last K rounds
//!   that resolved, so a pool handing out a few of its members at a time
//!   is compared as the whole pool.
//! - A different view must be seen in `confirm` rounds in a row, the same
//!   each time, before it is confirmed: a name that flaps between answers,
//!   or loses one reply, never holds a different view for long enough.
//! - Failing to resolve is a view of its own (the failure's kind aside:
//!   NXDOMAIN then SERVFAIL is still failing); recovering is confirmed the
//!   same way. Expectations compare by which are broken.
//! - The first view of a new name is confirmed at once, and reported only
//!   if it breaks an expectation; a first view that fails to resolve is
//!   confirmed like any other change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::config::{Compare, Domain, Expect};
use crate::data::import::same_place_name;
use crate::thrift::GeoInfo;

/// Where one address is, as the service answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Place {
    pub country_code: String,
    pub country: String,
    pub province: String,
    pub city: String,
    pub carrier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub as_org: String,
}

impl Place {
    /// The place an answer gives; blank where the service knows none.
    pub fn of(answer: &GeoInfo) -> Place {
        let text = |field: &Option<String>| field.clone().unwrap_or_default();
        let network = (answer.geoip_asn, text(&answer.geoip_as_org));
        if answer.error_no.unwrap_or(0) != 0 {
            return Place {
                asn: network.0,
                as_org: network.1,
                ..Place::default()
            };
        }
        Place {
            country_code: text(&answer.geoip_country_code),
            country: text(&answer.geoip_country_name),
            province: text(&answer.geoip_province_name),
            city: text(&answer.geoip_city_name),
            carrier: text(&answer.geoip_carrier),
            asn: network.0,
            as_org: network.1,
        }
    }

    /// One short phrase: "中国 广东 广州 电信 AS4134".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = [&self.country, &self.province, &self.city, &self.carrier]
            .into_iter()
            .filter(|part| !part.is_empty())
            .cloned()
            .collect();
        // Cities of city-provinces repeat the province (北京 北京).
        parts.dedup();
        if let Some(asn) = self.asn {
            parts.push(format!("AS{asn}"));
        }
        if parts.is_empty() {
            "unknown place".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Addresses and where each is, sorted by address. A name has a few, so
/// a sorted vector: a map's first node costs about 2 KiB even for one
/// entry, and a watch keeps several copies of ten thousand names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Addresses(Vec<(IpAddr, Place)>);

impl Addresses {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.binary_search_by(|(at, _)| at.cmp(ip)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Place)> {
        self.0.iter().map(|(ip, place)| (ip, place))
    }

    pub fn ips(&self) -> impl Iterator<Item = &IpAddr> {
        self.0.iter().map(|(ip, _)| ip)
    }

    pub fn places(&self) -> impl Iterator<Item = &Place> {
        self.0.iter().map(|(_, place)| place)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The last of each address wins, as in a map.
impl FromIterator<(IpAddr, Place)> for Addresses {
    fn from_iter<I: IntoIterator<Item = (IpAddr, Place)>>(pairs: I) -> Self {
        let map: BTreeMap<IpAddr, Place> = pairs.into_iter().collect();
        let mut addresses: Vec<(IpAddr, Place)> = map.into_iter().collect();
        addresses.shrink_to_fit();
        Addresses(addresses)
    }
}

/// Why a name did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// The name does not exist.
    NxDomain,
    /// The server failed (SERVFAIL).
    ServFail,
    /// The server refused.
    Refused,
    /// No reply in time, after every try.
    Timeout,
    /// The name exists but has no A or AAAA record.
    NoAddresses,
    /// Anything else (a malformed reply, an I/O error).
    Error,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NxDomain => "nxdomain",
            Failure::ServFail => "servfail",
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::NoAddresses => "noaddresses",
            Failure::Error => "error",
        }
    }
}

/// One round's answer for a name.
#[derive(Debug, Clone)]
pub enum Observation {
    Resolved {
        /// The CNAME chain from the name to the addresses' owner.
        chain: Vec<String>,
        addresses: Addresses,
    },
    Failed {
        failure: Failure,
        detail: String,
    },
}

impl Observation {
    /// "ok", or the failure's name: the round's result as the state and
    /// the metrics give it.
    pub fn result(&self) -> &'static str {
        match self {
            Observation::Resolved { .. } => "ok",
            Observation::Failed { failure, .. } => failure.as_str(),
        }
    }
}

/// What a name's answers come to, as compared from round to round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// None while the name resolves.
    pub failure: Option<Failure>,
    #[serde(default)]
    pub detail: String,
    /// The addresses of the window's rounds and where each is.
    pub addresses: Addresses,
    pub chain: Vec<String>,
    /// The expectations broken, each with what breaks it.
    pub broken: BTreeMap<String, String>,
}

impl View {
    fn places(&self) -> BTreeSet<&Place> {
        self.addresses.places().collect()
    }

    /// Whether two views count as the same under `compare`.
    fn same_as(&self, other: &View, compare: Compare) -> bool {
        self.failure.is_some() == other.failure.is_some()
            && self.broken.keys().eq(other.broken.keys())
            && match compare {
                Compare::Addresses => self.addresses.ips().eq(other.addresses.ips()),
                Compare::Places => self.places() == other.places(),
            }
    }
}

/// A view waiting to be confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub view: View,
    pub rounds: u32,
}

/// Everything kept about one name between rounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameState {
    pub confirmed: Option<View>,
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The last rounds' addresses that resolved, newest last (the window).
    #[serde(default)]
    pub recent: VecDeque<Addresses>,
    /// Unix seconds of the last round, and of the last that resolved.
    #[serde(default)]
    pub checked_at: Option<u64>,
    #[serde(default)]
    pub resolved_at: Option<u64>,
    /// The last round's result: "ok" or a failure's name.
    #[serde(default)]
    pub last_result: String,
    /// Unix seconds of the first round.
    #[serde(default)]
    pub first_checked: Option<u64>,
    /// Rounds that resolved, to tell a window still filling.
    #[serde(default)]
    pub resolved_rounds: u64,
}

/// What changed, with all a message needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    /// Unix seconds when it was confirmed.
    pub at: u64,
    pub kinds: Vec<ChangeKind>,
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub added: Vec<Located>,
    pub removed: Vec<Located>,
    pub places_added: Vec<Place>,
    pub places_removed: Vec<Place>,
    pub broken: BTreeMap<String, String>,
    pub restored: Vec<String>,
    pub old: Vec<Located>,
    pub new: Vec<Located>,
    pub chain: Vec<String>,
    /// Whether the routes are to hear of it (a failure of a name that need
    /// not resolve is recorded, not sent).
    pub alert: bool,
}

/// An address and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    pub ip: IpAddr,
    #[serde(flatten)]
    pub place: Place,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    AddressesChanged,
    PlacesChanged,
    ExpectationBroken,
    ExpectationRestored,
    Failing,
    Recovered,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::AddressesChanged,
        ChangeKind::PlacesChanged,
        ChangeKind::ExpectationBroken,
        ChangeKind::ExpectationRestored,
        ChangeKind::Failing,
        ChangeKind::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::AddressesChanged => "addresses_changed",
            ChangeKind::PlacesChanged => "places_changed",
            ChangeKind::ExpectationBroken => "expectation_broken",
            ChangeKind::ExpectationRestored => "expectation_restored",
            ChangeKind::Failing => "failing",
            ChangeKind::Recovered => "recovered",
        }
    }
}

impl NameState {
    /// Takes one round's observation; returns the change it confirms.
    pub fn observe(&mut self, domain: &Domain, observation: Observation, now: u64) -> Option<Change> {
        self.checked_at = Some(now);
        self.first_checked.get_or_insert(now);
        self.last_result = observation.result().into();
        let view = match observation {
            Observation::Resolved { chain, addresses } => {
                self.resolved_at = Some(now);
                self.resolved_rounds += 1;
                let count = addresses.len();
                self.recent.push_back(addresses);
                while self.recent.len() > domain.window as usize {
                    self.recent.pop_front();
                }
                let pooled: Addresses = self
                    .recent
                    .iter()
                    .flat_map(|round| round.iter().map(|(ip, place)| (*ip, place.clone())))
                    .collect();
                let broken = broken(&domain.expect, &pooled, count);
                View {
                    failure: None,
                    detail: String::new(),
                    addresses: pooled,
                    chain,
                    broken,
                }
            }
            Observation::Failed { failure, detail } => {
                // A failing name keeps what it last resolved to.
                let last = self.confirmed.as_ref();
                View {
                    failure: Some(failure),
                    detail,
                    addresses: last.map(|view| view.addresses.clone()).unwrap_or_default(),
                    chain: last.map(|view| view.chain.clone()).unwrap_or_default(),
                    broken: last.map(|view| view.broken.clone()).unwrap_or_default(),
                }
            }
        };

        // A new name's first view, and its window filling, make its
        // baseline: only the expectations it breaks are news.
        let learning = self.resolved_rounds <= u64::from(domain.window)
            && self.confirmed.as_ref().is_none_or(|view| view.failure.is_none());
        if view.failure.is_none() && (self.confirmed.is_none() || learning) {
            let base = View {
                broken: self
                    .confirmed
                    .as_ref()
                    .map(|view| view.broken.clone())
                    .unwrap_or_default(),
                ..empty_view()
            };
            let change = change(domain, &base, &view, now);
            self.confirmed = Some(view);
            self.pending = None;
            return (!change.kinds.is_empty()).then_some(change);
        }
        let Some(confirmed) = &mut self.confirmed else {
            return self.hold(domain, &empty_view(), view, now);
        };
        if view.same_as(confirmed, domain.compare) {
            // The same as far as alerts go; keep the latest details (the
            // addresses of a places-compared pool, a failure's kind).
            *confirmed = view;
            self.pending = None;
            return None;
        }
        let confirmed = confirmed.clone();
        self.hold(domain, &confirmed, view, now)
    }

    /// Counts a differing view's rounds; confirms it after `confirm`.
    fn hold(&mut self, domain: &Domain, confirmed: &View, view: View, now: u64) -> Option<Change> {
        let rounds = match &self.pending {
            Some(pending) if pending.view.same_as(&view, domain.compare) => pending.rounds + 1,
            _ => 1,
        };
        if rounds < domain.confirm {
            self.pending = Some(Pending { view, rounds });
            return None;
        }
        let change = change(domain, confirmed, &view, now);
        self.confirmed = Some(view);
        self.pending = None;
        Some(change)
    }
}

fn empty_view() -> View {
    View {
        failure: None,
        detail: String::new(),
        addresses: Addresses::default(),
        chain: Vec::new(),
        broken: BTreeMap::new(),
    }
}

fn located(addresses: &Addresses) -> Vec<Located> {
    located_where(addresses, |_| true)
}

/// The addresses of `these` that `those` lacks.
fn only_in(these: &Addresses, those: &Addresses) -> Vec<Located> {
    located_where(these, |ip| !those.contains(ip))
}

fn located_where(addresses: &Addresses, wanted: impl Fn(&IpAddr) -> bool) -> Vec<Located> {
    addresses
        .iter()
        .filter(|(ip, _)| wanted(ip))
        .map(|(ip, place)| Located {
            ip: *ip,
            place: place.clone(),
        })
        .collect()
}

/// The places of `these` that `those` lacks.
fn places_only_in(these: &View, those: &View) -> Vec<Place> {
    these
        .places()
        .difference(&those.places())
        .map(|place| (*place).clone())
        .collect()
}

/// The change from `old` to `new`.
fn change(domain: &Domain, old: &View, new: &View, now: u64) -> Change {
    let mut kinds = Vec::new();
    match (old.failure, new.failure) {
        (None, Some(_)) => kinds.push(ChangeKind::Failing),
        (Some(_), None) => kinds.push(ChangeKind::Recovered),
        _ => {}
    }
    // A failing view keeps its last addresses; nothing was added or removed.
    let resolving = new.failure.is_none();
    let (added, removed, places_added, places_removed) = if resolving {
        (
            only_in(&new.addresses, &old.addresses),
            only_in(&old.addresses, &new.addresses),
            places_only_in(new, old),
            places_only_in(old, new),
        )
    } else {
        Default::default()
    };
    // A first view is a baseline, not a change of addresses.
    let baseline = old.addresses.is_empty() && old.failure.is_none() && old.chain.is_empty();
    if !baseline && (!added.is_empty() || !removed.is_empty()) {
        kinds.push(ChangeKind::AddressesChanged);
    }
    if !baseline && (!places_added.is_empty() || !places_removed.is_empty()) {
        kinds.push(ChangeKind::PlacesChanged);
    }
    let broken: BTreeMap<String, String> = new
        .broken
        .iter()
        .filter(|(key, _)| !old.broken.contains_key(*key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let restored: Vec<String> = old
        .broken
        .keys()
        .filter(|key| !new.broken.contains_key(*key))
        .cloned()
        .collect();
    if !broken.is_empty() {
        kinds.push(ChangeKind::ExpectationBroken);
    }
    if !restored.is_empty() {
        kinds.push(ChangeKind::ExpectationRestored);
    }
    let resolution_only = kinds
        .iter()
        .all(|kind| matches!(kind, ChangeKind::Failing | ChangeKind::Recovered));
    Change {
        name: domain.name.clone(),
        at: now,
        alert: domain.expect.must_resolve || !resolution_only,
        kinds,
        failure: new.failure,
        detail: new.detail.clone(),
        added,
        removed,
        places_added,
        places_removed,
        broken,
        restored,
        old: located(&old.addresses),
        new: if resolving { located(&new.addresses) } else { Vec::new() },
        chain: new.chain.clone(),
    }
}

/// The expectations `addresses` break, each with the addresses that break
/// it. `count` is the round's own number of addresses.
pub fn broken(expect: &Expect, addresses: &Addresses, count: usize) -> BTreeMap<String, String> {
    let mut broken = BTreeMap::new();
    let mut check = |key: &str, allowed: &[String], field: fn(&Place) -> Vec<&str>, same: fn(&str, &str) -> bool| {
        if allowed.is_empty() {
            return;
        }
        let outside: Vec<String> = addresses
            .iter()
            .filter(|(_, place)| {
                !field(place)
                    .iter()
                    .any(|value| allowed.iter().any(|want| same(value, want)))
            })
            .map(|(ip, place)| format!("{ip} ({})", place.describe()))
            .collect();
        if !outside.is_empty() {
            broken.insert(
                key.to_owned(),
                format!("{} outside {key} [{}]", outside.join(", "), allowed.join(", ")),
            );
        }
    };
    check(
        "countries",
        &expect.countries,
        |place| vec![place.country_code.as_str(), place.country.as_str()],
        |value, want| !value.is_empty() && value.eq_ignore_ascii_case(want),
    );
    check(
        "provinces",
        &expect.provinces,
        |place| vec![place.province.as_str()],
        |value, want| !value.is_empty() && same_place_name(value, want),
    );
    check(
        "carriers",
        &expect.carriers,
        |place| vec![place.carrier.as_str(), place.as_org.as_str()],
        // 电信 allows 中国电信; an AS organisation counts as a carrier.
        |value, want| !value.is_empty() && (value.contains(want) || value.eq_ignore_ascii_case(want)),
    );
    if !expect.networks.is_empty() {
        let outside: Vec<String> = addresses
            .ips()
            .filter(|ip| !expect.networks.iter().any(|network| network.contains(**ip)))
            .map(IpAddr::to_string)
            .collect();
        if !outside.is_empty() {
            let networks: Vec<String> = expect.networks.iter().map(ToString::to_string).collect();
            broken.insert(
                "networks".to_owned(),
                format!("{} outside networks [{}]", outside.join(", "), networks.join(", ")),
            );
        }
    }
    if let Some(min) = expect.min_addresses {
        if count < min {
            broken.insert(
                "min_addresses".to_owned(),
                format!("{count} addresses, fewer than {min}"),
            );
        }
    }
    if let Some(max) = expect.max_addresses {
        if count > max {
            broken.insert(
                "max_addresses".to_owned(),
                format!("{count} addresses, more than {max}"),
            );
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn domain(compare: Compare, window: u32) -> Domain {
        Domain {
            name: "www.example.com".into(),
            interval: Duration::from_secs(60),
            confirm: 2,
            compare,
            window,
            routes: Vec::new(),
            expect: Expect::default(),
        }
    }

    fn place(province: &str, carrier: &str) -> Place {
        Place {
            country_code: "CN".into(),
            country: "中国".into(),
            province: province.into(),
            city: province.into(),
            carrier: carrier.into(),
            ..Place::default()
        }
    }

    fn resolved(addresses: &[(&str, Place)]) -> Observation {
        Observation::Resolved {
            chain: vec!["www.example.com".into()],
            addresses: addresses
                .iter()
                .map(|(ip, place)| (ip.parse().unwrap(), place.clone()))
                .collect(),
        }
    }

    fn failed(failure: Failure) -> Observation {
        Observation::Failed {
            failure,
            detail: String::new(),
        }
    }

    #[test]
    fn a_new_address_is_reported_once_after_confirmation() {
        let domain = domain(Compare::Addresses, 1);
        let gd = place("广东", "电信");
        let mut state = NameState::default();
        assert_eq!(
            state.observe(&domain, resolved(&[("1.1.1.1", gd.clone())]), 1),
            None,
            "a baseline is quiet"
        );
        let hb = place("河北", "联通");
        assert_eq!(
            state.observe(&domain, resolved(&[("2.2.2.2", hb.clone())]), 2),
            None,
            "one round is not enough"
        );
        let change = state
            .observe(&domain, resolved(&[("2.2.2.2", hb.clone())]), 3)
            .expect("confirmed");
        assert_eq!(change.kinds, [ChangeKind::AddressesChanged, ChangeKind::PlacesChanged]);
        assert_eq!(change.added[0].ip.to_string(), "2.2.2.2");
        assert_eq!(change.removed[0].ip.to_string(), "1.1.1.1");
        assert_eq!(change.places_added, std::slice::from_ref(&hb));
        assert_eq!(change.places_removed, [gd]);
        assert_eq!(
            state.observe(&domain, resolved(&[("2.2.2.2", hb)]), 4),
            None,
            "and only once"
        );
    }

    #[test]
    fn flapping_and_reordering_never_alert() {
        let domain = domain(Compare::Addresses, 1);
        let p = place("广东", "电信");
        let a = resolved(&[("1.1.1.1", p.clone()), ("1.1.1.2", p.clone())]);
        let b = resolved(&[("1.1.1.3", p.clone())]);
        let c = resolved(&[("1.1.1.4", p.clone())]);
        let mut state = NameState::default();
        state.observe(&domain, a.clone(), 0);
        for round in 1..30 {
            let observation = match round % 3 {
                0 => a.clone(),
                1 => b.clone(),
                _ => c.clone(),
            };
            assert_eq!(state.observe(&domain, observation, round), None, "round {round}");
        }
        assert_eq!(
            state.observe(&domain, failed(Failure::Timeout), 40),
            None,
            "one lost reply"
        );
        assert_eq!(state.observe(&domain, a, 41), None);
    }

    #[test]
    fn a_pool_rotating_within_its_places_is_quiet_when_compared_by_place() {
        let domain = domain(Compare::Places, 1);
        let p = place("广东", "电信");
        let mut state = NameState::default();
        for round in 0..20u64 {
            let ip = format!("1.1.1.{}", round % 7);
            assert_eq!(state.observe(&domain, resolved(&[(&ip, p.clone())]), round), None);
        }
        let abroad = Place {
            country_code: "US".into(),
            country: "美国".into(),
            ..Place::default()
        };
        state.observe(&domain, resolved(&[("8.8.8.8", abroad.clone())]), 30);
        let change = state
            .observe(&domain, resolved(&[("8.8.4.4", abroad.clone())]), 31)
            .expect("a new place");
        assert_eq!(change.kinds, [ChangeKind::AddressesChanged, ChangeKind::PlacesChanged]);
        assert_eq!(change.places_added, [abroad]);
    }

    #[test]
    fn a_window_compares_a_pool_as_a_whole() {
        let domain = domain(Compare::Addresses, 3);
        let p = place("广东", "电信");
        let mut state = NameState::default();
        let rounds = ["1.1.1.1", "1.1.1.2", "1.1.1.3"];
        for (round, ip) in rounds.iter().enumerate() {
            state.observe(&domain, resolved(&[(ip, p.clone())]), round as u64);
        }
        // The confirmed view grew as the window filled; from now on the
        // same three rotate without a change.
        let before = state.confirmed.clone();
        for round in 3..30u64 {
            assert_eq!(
                state.observe(&domain, resolved(&[(rounds[round as usize % 3], p.clone())]), round),
                None
            );
        }
        assert_eq!(state.confirmed.unwrap().addresses.len(), 3);
        assert!(before.is_some());
    }

    #[test]
    fn failing_alerts_after_confirmation_and_recovery_too() {
        let domain = domain(Compare::Addresses, 1);
        let p = place("广东", "电信");
        let mut state = NameState::default();
        state.observe(&domain, resolved(&[("1.1.1.1", p.clone())]), 0);
        assert_eq!(state.observe(&domain, failed(Failure::NxDomain), 1), None);
        let change = state
            .observe(&domain, failed(Failure::ServFail), 2)
            .expect("failing, whatever the kind");
        assert_eq!(change.kinds, [ChangeKind::Failing]);
        assert_eq!(change.failure, Some(Failure::ServFail));
        assert!(change.alert);
        assert_eq!(state.observe(&domain, failed(Failure::NxDomain), 3), None);
        assert_eq!(state.observe(&domain, resolved(&[("1.1.1.1", p.clone())]), 4), None);
        let change = state
            .observe(&domain, resolved(&[("1.1.1.1", p)]), 5)
            .expect("recovered");
        assert_eq!(change.kinds, [ChangeKind::Recovered]);
        assert!(change.added.is_empty() && change.removed.is_empty());
    }

    #[test]
    fn a_name_that_need_not_resolve_records_failure_without_alerting() {
        let mut domain = domain(Compare::Addresses, 1);
        domain.expect.must_resolve = false;
        let mut state = NameState::default();
        state.observe(&domain, resolved(&[("1.1.1.1", place("广东", "电信"))]), 0);
        state.observe(&domain, failed(Failure::NxDomain), 1);
        let change = state.observe(&domain, failed(Failure::NxDomain), 2).unwrap();
        assert!(!change.alert);
    }

    #[test]
    fn expectations_name_what_breaks_them() {
        let mut domain = domain(Compare::Addresses, 1);
        domain.expect.countries = vec!["CN".into()];
        domain.expect.carriers = vec!["电信".into()];
        domain.expect.provinces = vec!["广东省".into()];
        domain.expect.max_addresses = Some(1);
        let mut state = NameState::default();
        // Within expectations: 中国电信 is a 电信, 广东 is 广东省.
        assert_eq!(
            state.observe(&domain, resolved(&[("1.1.1.1", place("广东", "中国电信"))]), 0),
            None
        );
        let abroad = Place {
            country_code: "US".into(),
            country: "美国".into(),
            ..Place::default()
        };
        let two = resolved(&[("1.1.1.1", place("广东", "电信")), ("8.8.8.8", abroad)]);
        state.observe(&domain, two.clone(), 1);
        let change = state.observe(&domain, two, 2).unwrap();
        assert!(change.kinds.contains(&ChangeKind::ExpectationBroken));
        let keys: Vec<&str> = change.broken.keys().map(String::as_str).collect();
        assert_eq!(keys, ["carriers", "countries", "max_addresses", "provinces"]);
        assert!(
            change.broken["countries"].starts_with("8.8.8.8 (美国)"),
            "{}",
            change.broken["countries"]
        );
        assert_eq!(change.broken["max_addresses"], "2 addresses, more than 1");
    }

    #[test]
    fn a_first_view_that_breaks_an_expectation_is_reported_at_once() {
        let mut domain = domain(Compare::Addresses, 1);
        domain.expect.networks = vec!["10.0.0.0/8".parse().unwrap()];
        let mut state = NameState::default();
        let change = state
            .observe(&domain, resolved(&[("1.1.1.1", place("广东", "电信"))]), 0)
            .unwrap();
        assert_eq!(change.kinds, [ChangeKind::ExpectationBroken]);
        assert!(change.added.len() == 1 && change.old.is_empty());
    }

    #[test]
    fn a_state_survives_serialisation() {
        let domain = domain(Compare::Addresses, 2);
        let mut state = NameState::default();
        state.observe(&domain, resolved(&[("2001:db8::1", place("广东", "电信"))]), 0);
        state.observe(&domain, resolved(&[("1.1.1.1", place("广东", "电信"))]), 1);
        let text = serde_json::to_string(&state).unwrap();
        let back: NameState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
    }
}
