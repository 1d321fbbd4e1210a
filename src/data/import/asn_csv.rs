//! The network tables' CSV: `start,end,asn,as_org` per row, bounds as
//! address text or integers, as ip-location-db's `asn-ipv4.csv`,
//! `asn-ipv6.csv` and their `-num` variants give it, with no header; or
//! with the header `start_ip,end_ip,asn,as_org` that `export` writes.
//!
//! Routing data nests: a more specific announcement sits inside a wider
//! one (one such range in the IPv4 file). The more specific wins: the wider
//! range is cut around it, and the count is reported. Ranges that overlap
//! without one holding the other are refused, naming both.

use super::csv_file::{parse_bound, record_error};
use super::{Family, Origin, Range, RangeBuilder, SourceError};
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
    innermost_wins(rows, family)
}

/// `rows` in address order with no overlaps: a range inside another is
/// kept whole and the one around it cut around it. Partial overlaps and
/// reversed ranges are left for `validate` to refuse.
fn innermost_wins(mut rows: Vec<Range>, family: Family) -> Result<RangeBuilder, SourceError> {
    // Wider first among ranges starting together, so that the one around
    // comes before the one it holds.
    rows.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out = RangeBuilder::default();
    // The ranges holding the current one, outermost first, each with where
    // its next uncut piece starts (none while a range inside it is open).
    let mut open: Vec<(Range, Option<u128>)> = Vec::new();
    for row in rows {
        if row.start > row.end {
            out.push_merging(row);
            continue;
        }
        close_while(&mut open, &mut out, |around| around.end < row.start);
        if let Some((around, next)) = open.last_mut() {
            if row.end > around.end || (row.start == around.start && row.end == around.end) {
                return Err(SourceError::Overlap {
                    first: describe(around, family),
                    second: describe(&row, family),
                });
            }
            if let Some(from) = next.filter(|&from| from < row.start) {
                out.push_merging(piece(around, from, row.start - 1));
            }
            *next = None;
            out.nested += 1;
        }
        let next = Some(row.start);
        open.push((row, next));
    }
    close_while(&mut open, &mut out, |_| true);
    Ok(out)
}

/// Ends the innermost open ranges while `done` says so: each gives its
/// last piece, and the range around it resumes after it.
fn close_while(open: &mut Vec<(Range, Option<u128>)>, out: &mut RangeBuilder, done: impl Fn(&Range) -> bool) {
    while let Some((range, next)) = open.last() {
        if !done(range) {
            break;
        }
        if let Some(from) = next.filter(|&from| from <= range.end) {
            out.push_merging(piece(range, from, range.end));
        }
        let resume = range.end.checked_add(1);
        open.pop();
        if let Some((_, next)) = open.last_mut() {
            *next = resume;
        }
    }
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
        assert_eq!(built.nested, 3);
        // Up to the top of the address space.
        let top = read("4294967040,4294967295,1,a\n4294967295,4294967295,2,b\n").unwrap();
        assert_eq!(top.last().unwrap().0, 4294967295);
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn partial_overlaps_bad_numbers_and_short_rows_are_refused() {
        for (csv, expected) in [
            (
                "0,99,1,a\n50,150,2,b\n",
                "ranges overlap: 0.0.0.0-0.0.0.99 (line 1) and 0.0.0.50-0.0.0.150 (line 2)",
            ),
            ("0,99,1,a\n0,99,2,b\n", "ranges overlap"),
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
