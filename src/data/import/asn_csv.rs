//! The network tables' CSV: `start,end,asn,as_org` per row, bounds as
//! address text or integers, as ip-location-db's `asn-ipv4.csv`,
//! `asn-ipv6.csv` and their `-num` variants give it, with no header; or
//! with the header `start_ip,end_ip,asn,as_org` that `export` writes.
//!
//! Routing data overlaps: a more specific announcement sits inside or
//! across a wider one (the IPv4 file has one of each). The smaller range
//! wins the shared addresses and the other is cut around it; the count is
//! reported. The same range given twice, with no rule to pick one, is
//! refused, naming both.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::csv_file::{parse_bound, record_error};
use super::{check_order, Family, Origin, Range, RangeBuilder, SourceError};
use crate::domain::{Place, MAX_ASN};

/// The header `export` writes.
pub const COLUMNS: [&str; 4] = ["start_ip", "end_ip", "asn", "as_org"];

pub fn ranges(bytes: &[u8], family: Family) -> Result<RangeBuilder, SourceError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| record_error(&e, &COLUMNS))?;
        let at = Origin::Line(record.position().map_or(0, |p| p.line()));
        let row = |reason: String| SourceError::Row { at: at.clone(), reason };
        if record.len() != COLUMNS.len() {
            return Err(row(format!(
                "{} fields; an ASN row has 4: start, end, asn, as_org",
                record.len()
            )));
        }
        if i == 0 && record.get(0).is_some_and(|first| first.trim() == COLUMNS[0]) {
            continue;
        }
        let start = parse_bound(&record[0], family).map_err(row)?;
        let end = parse_bound(&record[1], family).map_err(row)?;
        let asn = record[2]
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&asn| asn <= u64::from(MAX_ASN))
            .ok_or_else(|| row(format!("asn {:?} is not an AS number (0 to {MAX_ASN})", &record[2])))?;
        let place = Place::from_columns([&asn.to_string(), record[3].trim(), "", "", "", "", "", ""]);
        rows.push(Range {
            start,
            end,
            place,
            origin: at,
        });
    }
    smallest_wins(rows, family)
}

/// `rows` in address order with no overlaps: where ranges overlap, the
/// smallest (the most specific announcement) keeps the shared addresses,
/// and the others are cut around it. A sweep over the starts and ends,
/// the ranges covering the current point held by size.
fn smallest_wins(mut rows: Vec<Range>, family: Family) -> Result<RangeBuilder, SourceError> {
    // The sweep needs every range in order; `validate` would refuse a
    // reversed one anyway.
    for row in &rows {
        check_order(row, family)?;
    }
    rows.sort_by_key(|r| (r.start, r.end));
    if let Some(pair) = rows
        .windows(2)
        .find(|p| (p[0].start, p[0].end) == (p[1].start, p[1].end))
    {
        // The same range twice: no rule picks one.
        return Err(SourceError::Overlap {
            first: describe(&pair[0], family),
            second: describe(&pair[1], family),
        });
    }
    let mut out = RangeBuilder::default();
    // Covering the current point, smallest first (ties: the later start).
    let mut covering: BTreeSet<(u128, Reverse<usize>)> = BTreeSet::new();
    let mut ends: BinaryHeap<Reverse<(u128, usize)>> = BinaryHeap::new();
    let mut next = 0;
    let mut at = 0u128;
    loop {
        if covering.is_empty() {
            let Some(row) = rows.get(next) else { break };
            at = row.start;
        }
        while let Some(row) = rows.get(next).filter(|row| row.start == at) {
            if !covering.is_empty() {
                out.overlapping += 1;
            }
            covering.insert((row.end - row.start, Reverse(next)));
            ends.push(Reverse((row.end, next)));
            next += 1;
        }
        let Reverse((first_end, _)) = *ends.peek().expect("a range covers `at`");
        let end = match rows.get(next) {
            Some(row) if row.start - 1 < first_end => row.start - 1,
            _ => first_end,
        };
        let &(_, Reverse(winner)) = covering.first().expect("a range covers `at`");
        out.push_merging(piece(&rows[winner], at, end));
        while let Some(&Reverse((range_end, i))) = ends.peek() {
            if range_end != end {
                break;
            }
            ends.pop();
            covering.remove(&(rows[i].end - rows[i].start, Reverse(i)));
        }
        match end.checked_add(1) {
            Some(after) => at = after,
            None => break,
        }
    }
    Ok(out)
}

fn piece(range: &Range, start: u128, end: u128) -> Range {
    Range {
        start,
        end,
        ..range.clone()
    }
}

fn describe(range: &Range, family: Family) -> String {
    format!(
        "{}-{} ({})",
        family.text(range.start),
        family.text(range.end),
        range.origin
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(csv: &str) -> Result<Vec<(u128, u128, String)>, String> {
        let built = ranges(csv.as_bytes(), Family::V4).map_err(|e| e.to_string())?;
        Ok(built
            .ranges
            .iter()
            .map(|r| {
                let [asn, org, ..] = r.place.fields().columns();
                (r.start, r.end, format!("{asn} {org}"))
            })
            .collect())
    }

    #[test]
    fn reads_both_bound_forms_quoted_names_and_an_export_header() {
        let rows = read("1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n16778240,16779263,38803,Gtelecom\n").unwrap();
        assert_eq!(
            rows,
            [
                (16777216, 16777471, "13335 Cloudflare, Inc.".to_owned()),
                (16778240, 16779263, "38803 Gtelecom".to_owned())
            ]
        );
        assert_eq!(
            read("start_ip,end_ip,asn,as_org\n0.0.0.1,0.0.0.1,4294967295,X\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_smaller_of_overlapping_ranges_wins_the_shared_addresses() {
        // As in the real IPv4 file: a wide range and a smaller one across its end.
        let rows = read("0,999,749,wide\n900,1099,721,small\n").unwrap();
        assert_eq!(
            rows,
            [(0, 899, "749 wide".to_owned()), (900, 1099, "721 small".to_owned())]
        );
        let rows = read("900,1099,721,wide\n1000,1009,1,small\n").unwrap();
        assert_eq!(
            rows,
            [
                (900, 999, "721 wide".to_owned()),
                (1000, 1009, "1 small".to_owned()),
                (1010, 1099, "721 wide".to_owned())
            ]
        );
    }

    #[test]
    fn a_range_inside_another_wins_and_cuts_it() {
        // 0-99 AS1 holds 10-19 AS2 (which holds 12-12 AS3) and 50-99 AS4.
        let rows = read("0,99,1,a\n10,19,2,b\n12,12,3,c\n50,99,4,d\n200,300,5,e\n").unwrap();
        let bounds: Vec<(u128, u128, &str)> = rows.iter().map(|(s, e, n)| (*s, *e, &n[..1])).collect();
        assert_eq!(
            bounds,
            [
                (0, 9, "1"),
                (10, 11, "2"),
                (12, 12, "3"),
                (13, 19, "2"),
                (20, 49, "1"),
                (50, 99, "4"),
                (200, 300, "5")
            ]
        );
        let built = ranges(b"0,99,1,a\n10,19,2,b\n12,12,3,c\n50,99,4,d\n", Family::V4).unwrap();
        assert_eq!(built.overlapping, 3);
        // Up to the top of the address space.
        let top = read("4294967040,4294967295,1,a\n4294967295,4294967295,2,b\n").unwrap();
        assert_eq!(top.last().unwrap().0, 4294967295);
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn repeated_or_reversed_ranges_bad_numbers_and_short_rows_are_refused() {
        for (csv, expected) in [
            (
                "0,99,1,a\n0,99,2,b\n",
                "ranges overlap: 0.0.0.0-0.0.0.99 (line 1) and 0.0.0.0-0.0.0.99 (line 2)",
            ),
            ("9,0,1,a\n", "line 1: start 0.0.0.9 is after end 0.0.0.0"),
            ("0,9,4294967296,a\n", "line 1: asn \"4294967296\" is not an AS number"),
            ("0,9,-1,a\n", "is not an AS number"),
            ("0,9,AS13335,a\n", "is not an AS number"),
            ("0,9,1\n", "line 1: 3 fields; an ASN row has 4"),
            ("::1,::2,1,a\n", "IPv6 address ::1 in an IPv4 table"),
        ] {
            let err = read(csv).unwrap_err();
            assert!(err.contains(expected), "{csv:?}: {err}");
        }
    }
}
