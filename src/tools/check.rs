//! Consistency checks over a range table's rows, in address order: what
//! the importer refuses, found in rows written by any other means. No I/O
//! here; `cli::check` streams the rows in.

use crate::data::corrections::{ip_number, Correction};
use crate::data::import::Codes;
use crate::domain::{range_fault, Place, PlaceBuf, PlaceFields, RangeFault, RowKind, Table};

/// Checks rows one at a time, remembering only the previous range.
pub struct Checker {
    table: Table,
    previous: Option<(u128, u128)>,
    /// One line per problem, the first [`MAX_LISTED`].
    pub problems: Vec<String>,
    /// Problems found, listed or not.
    pub found: u64,
    pub rows: u64,
}

/// Problems kept as lines; a table broken throughout is counted, not
/// listed whole.
pub const MAX_LISTED: usize = 1000;

impl Checker {
    pub fn new(table: Table) -> Checker {
        Checker {
            table,
            previous: None,
            problems: Vec::new(),
            found: 0,
            rows: 0,
        }
    }

    /// Checks the next row.
    pub fn row(&mut self, start: u128, end: u128, fields: PlaceFields) {
        self.rows += 1;
        let family = self.table.family();
        let range = format!("{} - {}", family.text(start), family.text(end));
        let mut fault = range_fault(self.previous, start, end);
        if fault == Some(RangeFault::Reversed) {
            self.problem(&range, "starts after it ends".to_owned());
            // Whether it also starts inside the range before it.
            fault = range_fault(self.previous, start, start);
        }
        if let (Some(RangeFault::Unordered | RangeFault::Overlaps), Some((p_start, p_end))) = (fault, self.previous) {
            let previous = format!("{} - {}", family.text(p_start), family.text(p_end));
            self.problem(&range, format!("overlaps {previous}"));
        }
        self.previous = Some((start, end.max(start)));
        if self.table.kind() == RowKind::Network {
            // The table's CHECK holds the AS number; an empty organisation
            // is allowed (the data has none for some).
            return;
        }

        let PlaceFields {
            country_code,
            country_name,
            province_code,
            province_name,
            city_code,
            city_name,
            ..
        } = fields;
        if fields.is_blank() {
            self.problem(&range, "every name is empty".to_owned());
        }
        let codes = Codes::get();
        if !country_code.is_empty() && !codes.is_country_code(country_code) {
            self.problem(
                &range,
                format!("country code {country_code:?} is not ISO 3166-1 alpha-2"),
            );
        }
        // The codes the names give, filled in as the importer does.
        let mut expected = PlaceBuf {
            country_code: country_code.to_owned(),
            country_name: country_name.to_owned(),
            province_name: province_name.to_owned(),
            city_name: city_name.to_owned(),
            ..PlaceBuf::default()
        };
        codes.fill(&mut expected);
        for (what, stored, expected, name) in [
            ("province", province_code, &expected.province_code, province_name),
            ("city", city_code, &expected.city_code, city_name),
        ] {
            if !stored.is_empty() && !expected.is_empty() && stored != expected {
                self.problem(
                    &range,
                    format!("{what} code {stored} does not match {name:?} (GB/T 2260 {expected})"),
                );
            }
        }
    }

    fn problem(&mut self, range: &str, what: String) {
        self.found += 1;
        if self.problems.len() >= MAX_LISTED {
            return;
        }
        self.problems.push(format!("{} {range}: {what}", self.table.name()));
    }
}

/// Whether `correction` says nothing its source does not: `rows` (the
/// source table's rows overlapping it, in address order) cover its whole
/// range, each with every value the correction gives. Such a correction
/// can go.
pub fn agrees_with_source(correction: &Correction, rows: &[(u128, u128, Place)]) -> bool {
    let (start, end) = (ip_number(correction.start), ip_number(correction.end));
    let wanted = correction.place.fields().columns();
    let mut next = start;
    for (row_start, row_end, place) in rows {
        if *row_start > next {
            return false;
        }
        let values = place.fields().columns();
        if wanted
            .iter()
            .zip(values)
            .any(|(want, have)| !want.is_empty() && *want != have)
        {
            return false;
        }
        if *row_end >= end {
            return true;
        }
        next = row_end + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correction_agrees_only_where_the_source_says_the_same_throughout() {
        let correction = Correction {
            start: "0.0.0.10".parse().unwrap(),
            end: "0.0.0.19".parse().unwrap(),
            lang: crate::domain::TableLang::ZhCn,
            place: Place::from_columns(["", "", "", "", "", "深圳", "", ""]),
            reason: "x".into(),
            source: String::new(),
            created_at: None,
            expires_at: None,
        };
        let row = |start, end, city| {
            (
                start,
                end,
                Place::from_columns(["CN", "中国", "", "广东", "", city, "", ""]),
            )
        };
        assert!(agrees_with_source(
            &correction,
            &[row(0, 14, "深圳"), row(15, 30, "深圳")]
        ));
        assert!(!agrees_with_source(
            &correction,
            &[row(0, 14, "深圳"), row(15, 30, "广州")]
        ));
        assert!(
            !agrees_with_source(&correction, &[row(0, 14, "深圳"), row(16, 30, "深圳")]),
            "a gap"
        );
        assert!(!agrees_with_source(&correction, &[row(0, 14, "深圳")]), "not covered");
        assert!(!agrees_with_source(&correction, &[]));
    }

    fn fields<'a>(codes: [&'a str; 3], names: [&'a str; 5]) -> PlaceFields<'a> {
        let [cc, pc, ci] = codes;
        let [country, province, city, district, carrier] = names;
        PlaceFields::from_columns([cc, country, pc, province, ci, city, district, carrier])
    }

    #[test]
    fn each_kind_of_problem_is_one_line_and_good_rows_none() {
        let mut check = Checker::new(Table::Cn);
        check.row(
            0,
            9,
            fields(["CN", "440000", "440100"], ["中国", "广东", "广州", "", "电信"]),
        );
        check.row(10, 19, fields(["US", "", ""], ["美国", "", "", "", ""]));
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        check.row(15, 30, fields(["", "", ""], ["", "", "", "", ""]));
        check.row(40, 35, fields(["XX", "", ""], ["某国", "", "", "", ""]));
        check.row(
            50,
            60,
            fields(["CN", "110000", "440300"], ["中国", "广东", "深圳", "", ""]),
        );
        assert_eq!(
            check.problems,
            [
                "ip_service_cn 0.0.0.15 - 0.0.0.30: overlaps 0.0.0.10 - 0.0.0.19",
                "ip_service_cn 0.0.0.15 - 0.0.0.30: every name is empty",
                "ip_service_cn 0.0.0.40 - 0.0.0.35: starts after it ends",
                "ip_service_cn 0.0.0.40 - 0.0.0.35: country code \"XX\" is not ISO 3166-1 alpha-2",
                "ip_service_cn 0.0.0.50 - 0.0.0.60: province code 110000 does not match \"广东\" (GB/T 2260 440000)",
            ]
        );
        assert_eq!((check.rows, check.found), (5, 5));
    }
}
