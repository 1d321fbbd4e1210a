//! The interchange CSV: a header row naming `start_ip,end_ip,country_name,
//! province_name,city_name,district_name,carrier_name` and optionally
//! `country_code,province_code,city_code`, in any order; bounds as address
//! text or integers; RFC 4180 quoting.

use std::net::IpAddr;

use super::{Codes, Family, Origin, Range, RangeBuilder, SourceError};
use crate::domain::PlaceBuf;

/// Every column, in the order `export` writes them.
pub const COLUMNS: [&str; 10] = [
    "start_ip",
    "end_ip",
    "country_name",
    "province_name",
    "city_name",
    "district_name",
    "carrier_name",
    "country_code",
    "province_code",
    "city_code",
];
const REQUIRED: usize = 7;

pub fn ranges(bytes: &[u8], family: Family, codes: &Codes) -> Result<RangeBuilder, SourceError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| SourceError::NotFormat(format!("cannot read the CSV header: {e}")))?
        .clone();
    let position: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|column| headers.iter().position(|h| h.trim() == *column))
        .collect();
    if let Some(missing) = COLUMNS[..REQUIRED].iter().zip(&position).find(|(_, at)| at.is_none()) {
        return Err(SourceError::NotFormat(format!(
            "the header has no {} column (it has: {})",
            missing.0,
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut out = RangeBuilder::default();
    for record in reader.records() {
        let record = record.map_err(|e| record_error(&e, &headers.iter().collect::<Vec<_>>()))?;
        let line = record.position().map_or(0, |p| p.line());
        let at = Origin::Line(line);
        let field = |i: usize| position[i].and_then(|p| record.get(p)).unwrap_or("").to_owned();
        let bound =
            |i: usize| parse_bound(&field(i), family).map_err(|reason| SourceError::Row { at: at.clone(), reason });
        let (start, end) = (bound(0)?, bound(1)?);
        let mut place = PlaceBuf {
            country_name: field(2),
            province_name: field(3),
            city_name: field(4),
            district_name: field(5),
            carrier: field(6),
            country_code: field(7),
            province_code: field(8),
            city_code: field(9),
        };
        codes.fill(&mut place);
        out.ranges.push(Range {
            start,
            end,
            place: place.build(),
            origin: at,
        });
    }
    Ok(out)
}

/// A row the CSV reader refuses, as one line: where, and what is wrong,
/// naming the column from `columns` where it can.
pub(super) fn record_error(e: &csv::Error, columns: &[&str]) -> SourceError {
    SourceError::Row {
        at: Origin::Line(e.position().map_or(0, |p| p.line())),
        reason: match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => {
                let column = columns.get(err.field()).unwrap_or(&"?");
                format!("{column} is not valid UTF-8")
            }
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("{len} fields where the header has {expected_len}")
            }
            _ => e.to_string(),
        },
    }
}

/// An address as text, or as an unsigned integer.
pub(super) fn parse_bound(text: &str, family: Family) -> Result<u128, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return match (ip, family) {
            (IpAddr::V4(v4), Family::V4) => Ok(u128::from(u32::from(v4))),
            (IpAddr::V6(v6), Family::V6) => Ok(u128::from(v6)),
            (IpAddr::V6(_), Family::V4) => Err(format!("IPv6 address {text} in an IPv4 table")),
            (IpAddr::V4(_), Family::V6) => Err(format!("IPv4 address {text} in an IPv6 table")),
        };
    }
    match (text.parse::<u128>(), family) {
        (Ok(n), Family::V4) if n <= u128::from(u32::MAX) => Ok(n),
        (Ok(n), Family::V4) => Err(format!("{n} is larger than any IPv4 address")),
        (Ok(n), Family::V6) => Ok(n),
        (Err(_), _) => Err(format!("{text:?} is neither an IP address nor an integer")),
    }
}
