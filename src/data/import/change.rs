//! What an import would change: the live ranges and the new ones merged
//! over the whole address space in one pass, linear in the number of
//! ranges. No I/O here; `load` reads the live table and stores the report.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::domain::{Place, RowKind, Table};

/// How many (old → new) transitions a report lists.
pub const TOP_TRANSITIONS: usize = 20;

/// The fields whose change the report counts: what a caller reads from an
/// answer. Codes follow from the names, so they are not counted apart.
pub const FIELDS: [&str; 5] = ["country", "province", "city", "district", "carrier"];

/// The fields counted for a network table.
pub const NETWORK_FIELDS: [&str; 2] = ["asn", "as_org"];

/// The fields a table's report counts.
fn fields_of(kind: RowKind) -> &'static [&'static str] {
    match kind {
        RowKind::Place => &FIELDS,
        RowKind::Network => &NETWORK_FIELDS,
    }
}

/// Addresses and the ranges they lie in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Addresses, saturating at 2^128 - 1.
    #[serde(serialize_with = "json_number")]
    pub addresses: u128,
    /// Ranges touched: live ranges for a change or a loss of cover, new
    /// ranges for new cover.
    pub ranges: u64,
}

/// Addresses whose answer changes in one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    #[serde(flatten)]
    pub span: Span,
}

/// One (old → new) answer change and how many addresses make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    #[serde(serialize_with = "json_number")]
    pub addresses: u128,
}

/// The difference between the live table and an import's rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeReport {
    pub table: String,
    pub live: Span,
    pub new: Span,
    /// Covered by both, and answered differently in at least one field.
    pub changed: Span,
    /// Per field of [`FIELDS`] (or [`NETWORK_FIELDS`]), in that order.
    pub changed_by_field: Vec<FieldChange>,
    /// Covered by the new rows only.
    pub newly_covered: Span,
    /// Covered by the live rows only.
    pub no_longer_covered: Span,
    /// Changed or no longer covered, as a share of the live addresses (0
    /// when the live table is empty).
    pub changed_percent: f64,
    /// The most frequent answer changes, by addresses.
    pub top_transitions: Vec<Transition>,
    /// The one line the log and the import history carry.
    pub summary: String,
}

/// A range in a sorted list: inclusive bounds (IPv4 in the low 32 bits).
pub type Entry<'a> = (u128, u128, &'a Place);

/// Compares `live` with `new`, both in address order without overlaps.
pub fn compare<'a>(
    table: Table,
    live: impl IntoIterator<Item = Entry<'a>>,
    new: impl IntoIterator<Item = Entry<'a>>,
) -> ChangeReport {
    let mut merge = Merge {
        kind: table.kind(),
        ..Merge::default()
    };
    let mut live = Cursor::new(live.into_iter());
    let mut new = Cursor::new(new.into_iter());
    let mut at: u128 = 0;
    loop {
        live.skip_before(at);
        new.skip_before(at);
        let (old, fresh) = (live.covering(at), new.covering(at));
        if old.is_none() && fresh.is_none() {
            // A gap in both: jump to whichever range starts first.
            match [live.current, new.current]
                .into_iter()
                .flatten()
                .map(|(start, ..)| start)
                .min()
            {
                Some(start) => at = start,
                None => break,
            }
            continue;
        }
        // The segment from `at` ends where either list's cover changes next.
        let end = [live.next_edge(at), new.next_edge(at)]
            .into_iter()
            .flatten()
            .min()
            .expect("a list covers `at`");
        merge.segment(old, fresh, (end - at).saturating_add(1));
        let Some(next) = end.checked_add(1) else { break };
        at = next;
    }
    merge.finish(table.name())
}

/// The rows that turn one table into another: the old ranges the new
/// rows do not hold as they are, and the new ranges the old rows do not.
/// `new = old - removed + added`, range for range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowChanges {
    pub removed: Vec<(u128, u128, Place)>,
    pub added: Vec<(u128, u128, Place)>,
}

impl RowChanges {
    pub fn len(&self) -> usize {
        self.removed.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The [`RowChanges`] from `old` to `new`, both in address order without
/// overlaps; `None` as soon as more than `limit` rows differ.
pub fn row_changes<'a>(
    old: impl IntoIterator<Item = Entry<'a>>,
    new: impl IntoIterator<Item = Entry<'a>>,
    limit: usize,
) -> Option<RowChanges> {
    let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
    let mut changes = RowChanges::default();
    let owned = |(start, end, place): Entry<'_>| (start, end, place.clone());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return Some(changes),
            (Some(a), Some(b)) if a == b => {
                old.next();
                new.next();
                continue;
            }
            (Some(a), Some(b)) if a.0 == b.0 => {
                changes.removed.extend(old.next().map(owned));
                changes.added.extend(new.next().map(owned));
            }
            (Some(a), b) if b.is_none_or(|b| a.0 < b.0) => changes.removed.extend(old.next().map(owned)),
            _ => changes.added.extend(new.next().map(owned)),
        }
        if changes.len() > limit {
            return None;
        }
    }
}

/// A position in one sorted list: the first range not wholly before the
/// sweep.
struct Cursor<'a, I> {
    ranges: I,
    current: Option<Entry<'a>>,
    /// How many ranges have been taken from the list, `current` included;
    /// also the number of `current`, so that segments of one range count
    /// it once.
    taken: u64,
}

impl<'a, I: Iterator<Item = Entry<'a>>> Cursor<'a, I> {
    fn new(ranges: I) -> Self {
        let mut cursor = Cursor {
            ranges,
            current: None,
            taken: 0,
        };
        cursor.advance();
        cursor
    }

    fn advance(&mut self) {
        self.current = self.ranges.next();
        self.taken += self.current.is_some() as u64;
    }

    fn skip_before(&mut self, at: u128) {
        while self.current.is_some_and(|(_, end, _)| end < at) {
            self.advance();
        }
    }

    /// The range holding `at`: its number and place.
    fn covering(&self, at: u128) -> Option<(u64, &'a Place)> {
        self.current
            .filter(|&(start, ..)| start <= at)
            .map(|(.., place)| (self.taken, place))
    }

    /// The last address, from `at` on, before this list's cover changes.
    fn next_edge(&self, at: u128) -> Option<u128> {
        self.current
            .map(|(start, end, _)| if start <= at { end } else { start - 1 })
    }
}

/// The running counts. Each span remembers the last range it counted, so
/// that a range split into several segments counts once.
#[derive(Default)]
struct Merge {
    kind: RowKind,
    live: Counted,
    new: Counted,
    changed: Counted,
    by_field: [Counted; 5],
    newly_covered: Counted,
    no_longer_covered: Counted,
    transitions: HashMap<(Place, Place), u128>,
}

#[derive(Default)]
struct Counted {
    span: Span,
    last_range: u64,
}

impl Counted {
    fn add(&mut self, range: u64, addresses: u128) {
        self.span.addresses = self.span.addresses.saturating_add(addresses);
        if self.last_range != range {
            self.last_range = range;
            self.span.ranges += 1;
        }
    }
}

impl Merge {
    /// Counts a segment of `addresses` held by the live range `old` and
    /// the new range `new` (number and place), either possibly absent.
    fn segment(&mut self, old: Option<(u64, &Place)>, new: Option<(u64, &Place)>, addresses: u128) {
        match (old, new) {
            (Some((live_range, old)), Some((new_range, new))) => {
                self.live.add(live_range, addresses);
                self.new.add(new_range, addresses);
                let (old_names, new_names) = (names(old, self.kind), names(new, self.kind));
                if old_names == new_names {
                    return;
                }
                self.changed.add(live_range, addresses);
                for (i, field) in self.by_field.iter_mut().enumerate() {
                    if old_names[i] != new_names[i] {
                        field.add(live_range, addresses);
                    }
                }
                let count = self.transitions.entry((old.clone(), new.clone())).or_default();
                *count = count.saturating_add(addresses);
            }
            (Some((live_range, _)), None) => {
                self.live.add(live_range, addresses);
                self.no_longer_covered.add(live_range, addresses);
            }
            (None, Some((new_range, _))) => {
                self.new.add(new_range, addresses);
                self.newly_covered.add(new_range, addresses);
            }
            (None, None) => {}
        }
    }

    fn finish(self, table: &str) -> ChangeReport {
        // Places that differ only in codes share a label: add them up.
        let mut by_label: HashMap<(String, String), u128> = HashMap::new();
        for ((old, new), addresses) in self.transitions {
            let count = by_label
                .entry((label(&old, self.kind), label(&new, self.kind)))
                .or_default();
            *count = count.saturating_add(addresses);
        }
        let mut top_transitions: Vec<Transition> = by_label
            .into_iter()
            .map(|((from, to), addresses)| Transition { from, to, addresses })
            .collect();
        top_transitions.sort_by(|a, b| {
            b.addresses
                .cmp(&a.addresses)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        top_transitions.truncate(TOP_TRANSITIONS);

        let live = self.live.span;
        let changed = self.changed.span;
        let no_longer_covered = self.no_longer_covered.span;
        let changed_percent = if live.addresses == 0 {
            0.0
        } else {
            changed.addresses.saturating_add(no_longer_covered.addresses) as f64 / live.addresses as f64 * 100.0
        };
        let mut report = ChangeReport {
            table: table.to_owned(),
            live,
            new: self.new.span,
            changed,
            changed_by_field: fields_of(self.kind)
                .iter()
                .copied()
                .zip(self.by_field)
                .map(|(field, counted)| FieldChange {
                    field,
                    span: counted.span,
                })
                .collect(),
            newly_covered: self.newly_covered.span,
            no_longer_covered,
            changed_percent,
            top_transitions,
            summary: String::new(),
        };
        report.summary = report.summary_line();
        report
    }
}

impl ChangeReport {
    fn summary_line(&self) -> String {
        format!(
            "{}: {:.2}% of the live addresses change: {} changed in {} live ranges, {} no longer covered, {} newly covered ({} live ranges, {} new)",
            self.table,
            self.changed_percent,
            grouped(self.changed.addresses),
            grouped(self.changed.ranges as u128),
            grouped(self.no_longer_covered.addresses),
            grouped(self.newly_covered.addresses),
            grouped(self.live.ranges as u128),
            grouped(self.new.ranges as u128),
        )
    }
}

impl fmt::Display for ChangeReport {
    /// The readable report: totals, changes by field, top transitions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, what: &str, span: &Span| {
            writeln!(
                f,
                "  {what:<20} {:>42} {:>12}",
                grouped(span.addresses),
                grouped(span.ranges as u128)
            )
        };
        writeln!(f, "change report for {}", self.table)?;
        writeln!(f, "  {:<20} {:>42} {:>12}", "", "addresses", "ranges")?;
        row(f, "live", &self.live)?;
        row(f, "new", &self.new)?;
        row(f, "changed", &self.changed)?;
        for change in &self.changed_by_field {
            row(f, &format!("  {}", change.field), &change.span)?;
        }
        row(f, "newly covered", &self.newly_covered)?;
        row(f, "no longer covered", &self.no_longer_covered)?;
        writeln!(f, "  {:.2}% of the live addresses change", self.changed_percent)?;
        if !self.top_transitions.is_empty() {
            writeln!(f, "top {} changes (old → new):", self.top_transitions.len())?;
            for t in &self.top_transitions {
                writeln!(f, "  {} → {}: {} addresses", t.from, t.to, grouped(t.addresses))?;
            }
        }
        Ok(())
    }
}

/// An address count as a JSON number: exact up to 2^64, beyond that (IPv6
/// only) the nearest double, since JSON readers hold no larger integers.
fn json_number<S: serde::Serializer>(n: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    match u64::try_from(*n) {
        Ok(n) => serializer.serialize_u64(n),
        Err(_) => serializer.serialize_f64(*n as f64),
    }
}

/// `65536` as `65,536`.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row's fields the report counts ([`fields_of`] its kind), the rest
/// empty.
fn names(place: &Place, kind: RowKind) -> [&str; 5] {
    match kind {
        RowKind::Place => [
            place.country_name(),
            place.province_name(),
            place.city_name(),
            place.district_name(),
            place.carrier(),
        ],
        // A network row's values are its first two.
        RowKind::Network => {
            let [asn, org, ..] = place.fields().columns();
            [asn, org, "", "", ""]
        }
    }
}

/// `中国/广东/广州/电信`: the place's non-empty names, or `AS13335
/// Cloudflare, Inc.`; `(nothing)` when it names nothing.
fn label(place: &Place, kind: RowKind) -> String {
    if kind == RowKind::Network {
        let [asn, org, ..] = names(place, kind);
        return format!("AS{asn} {org}");
    }
    let parts: Vec<&str> = names(place, kind).into_iter().filter(|s| !s.is_empty()).collect();
    if parts.is_empty() {
        "(nothing)".to_owned()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(province: &str, city: &str, carrier: &str) -> Place {
        Place::from_columns(["CN", "中国", "", province, "", city, "", carrier])
    }

    fn entries(list: &[(u128, u128, Place)]) -> Vec<Entry<'_>> {
        list.iter().map(|(s, e, p)| (*s, *e, p)).collect()
    }

    #[test]
    fn row_changes_are_the_rows_not_held_alike_and_stop_past_the_limit() {
        let gz = place("广东", "广州", "电信");
        let sz = place("广东", "深圳", "电信");
        let bj = place("北京", "", "联通");
        let old = [(0, 255, gz.clone()), (300, 400, bj.clone()), (500, 600, sz.clone())];
        let new = [
            (0, 127, gz.clone()),
            (128, 255, sz.clone()),
            (300, 400, bj.clone()),
            (700, 800, bj.clone()),
        ];
        let changes = row_changes(entries(&old), entries(&new), 10).unwrap();
        assert_eq!(changes.removed, [(0, 255, gz.clone()), (500, 600, sz.clone())]);
        assert_eq!(changes.added, [(0, 127, gz), (128, 255, sz), (700, 800, bj)]);
        assert_eq!(
            row_changes(entries(&old), entries(&old), 0),
            Some(RowChanges::default())
        );
        assert_eq!(row_changes(entries(&old), entries(&new), 4), None);
        assert!(row_changes(entries(&old), entries(&new), 5).is_some());
    }

    #[test]
    fn identical_lists_change_nothing() {
        let list = [
            (0, 255, place("广东", "广州", "电信")),
            (300, 400, place("北京", "", "联通")),
        ];
        let report = compare(Table::Cn, entries(&list), entries(&list));
        assert_eq!(
            report.live,
            Span {
                addresses: 357,
                ranges: 2
            }
        );
        assert_eq!(report.new, report.live);
        assert_eq!(report.changed, Span::default());
        assert_eq!(report.changed_percent, 0.0);
        assert!(report.top_transitions.is_empty());
    }

    #[test]
    fn a_split_range_counts_changed_addresses_fields_and_transitions() {
        let gz = place("广东", "广州", "电信");
        let sz = place("广东", "深圳", "电信");
        let live = [(0, 255, gz.clone())];
        let new = [(0, 127, gz.clone()), (128, 191, sz.clone()), (192, 255, sz)];
        let report = compare(Table::Cn, entries(&live), entries(&new));
        assert_eq!(
            report.changed,
            Span {
                addresses: 128,
                ranges: 1
            }
        );
        let by_field: HashMap<_, _> = report.changed_by_field.iter().map(|c| (c.field, c.span)).collect();
        assert_eq!(
            by_field["city"],
            Span {
                addresses: 128,
                ranges: 1
            }
        );
        assert_eq!(by_field["province"], Span::default());
        assert_eq!(by_field["carrier"], Span::default());
        assert_eq!(report.new.ranges, 3);
        assert_eq!(report.changed_percent, 50.0);
        assert_eq!(
            report.top_transitions,
            [Transition {
                from: "中国/广东/广州/电信".into(),
                to: "中国/广东/深圳/电信".into(),
                addresses: 128
            }]
        );
        assert!(report
            .summary
            .starts_with("ip_service_cn: 50.00% of the live addresses change: 128 changed in 1 live ranges"));
        assert!(report
            .to_string()
            .contains("中国/广东/广州/电信 → 中国/广东/深圳/电信: 128 addresses"));
    }

    #[test]
    fn cover_gained_and_lost_at_either_end() {
        let a = place("北京", "", "联通");
        let live = [(10, 19, a.clone()), (40, 49, a.clone())];
        let new = [(15, 24, a.clone()), (40, 49, a)];
        let report = compare(Table::Cn, entries(&live), entries(&new));
        assert_eq!(
            report.no_longer_covered,
            Span {
                addresses: 5,
                ranges: 1
            }
        );
        assert_eq!(
            report.newly_covered,
            Span {
                addresses: 5,
                ranges: 1
            }
        );
        assert_eq!(report.changed, Span::default());
        assert_eq!(report.changed_percent, 25.0);
    }

    #[test]
    fn the_top_of_the_address_space_ends_the_sweep() {
        let (a, b) = (place("上海", "", "电信"), place("上海", "", "移动"));
        let live = [(0, u128::MAX, a)];
        let new = [(u128::MAX - 9, u128::MAX, b)];
        let report = compare(Table::Cn, entries(&live), entries(&new));
        assert_eq!(report.live.addresses, u128::MAX, "saturates");
        assert_eq!(report.changed.addresses, 10);
        assert_eq!(report.no_longer_covered.addresses, u128::MAX - 9, "2^128 - 10");
    }

    #[test]
    fn an_empty_live_table_is_all_new_cover() {
        let new = [(5, 9, place("上海", "", ""))];
        let report = compare(Table::Cn, [], entries(&new));
        assert_eq!(
            report.newly_covered,
            Span {
                addresses: 5,
                ranges: 1
            }
        );
        assert_eq!(report.changed_percent, 0.0);
    }

    /// Random disjoint lists over a small space, checked address by address.
    #[test]
    fn agrees_with_counting_every_address() {
        let places = [
            place("a", "", ""),
            place("b", "", ""),
            place("a", "x", ""),
            place("a", "", "y"),
        ];
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let mut lists: [Vec<(u128, u128, Place)>; 2] = Default::default();
            for list in &mut lists {
                let mut at = next(4) as u128;
                while at < 64 {
                    let end = (at + next(8) as u128).min(63);
                    if next(4) > 0 {
                        list.push((at, end, places[next(4) as usize].clone()));
                    }
                    at = end + 1 + next(3) as u128;
                }
            }
            let report = compare(Table::Cn, entries(&lists[0]), entries(&lists[1]));
            let at = |list: &[(u128, u128, Place)], ip| list.iter().position(|(s, e, _)| *s <= ip && ip <= *e);
            let (mut changed, mut lost, mut gained, mut live) = (0, 0, 0, 0);
            let mut changed_ranges = std::collections::HashSet::new();
            for ip in 0..64 {
                match (at(&lists[0], ip), at(&lists[1], ip)) {
                    (Some(o), Some(n)) => {
                        live += 1;
                        if names(&lists[0][o].2, RowKind::Place) != names(&lists[1][n].2, RowKind::Place) {
                            changed += 1;
                            changed_ranges.insert(o);
                        }
                    }
                    (Some(_), None) => (live, lost) = (live + 1, lost + 1),
                    (None, Some(_)) => gained += 1,
                    (None, None) => {}
                }
            }
            assert_eq!(
                report.live,
                Span {
                    addresses: live,
                    ranges: lists[0].len() as u64
                }
            );
            assert_eq!(report.new.ranges, lists[1].len() as u64);
            assert_eq!(
                report.changed,
                Span {
                    addresses: changed,
                    ranges: changed_ranges.len() as u64
                }
            );
            assert_eq!(
                (report.no_longer_covered.addresses, report.newly_covered.addresses),
                (lost, gained)
            );
            let transitions: u128 = report.top_transitions.iter().map(|t| t.addresses).sum();
            assert_eq!(transitions, changed, "fewer than 20 kinds here, so all are listed");
        }
    }
}
