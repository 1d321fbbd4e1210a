//! Corrections (`ip_service_overrides`): ranges whose answers the
//! library's owners have corrected. A correction outranks every source:
//! its values replace an answer's, in answers of the language it is
//! written in, and an empty value keeps what the source says. They are
//! held apart from the range tables, so that no import of those touches
//! them. No I/O here: `import::overrides` reads and stores them, `store`
//! and the sources load them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::data::index::{Builder, IndexError, RangeIndex, Version};
use crate::domain::{Family, Place, TableLang};

/// One correction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub start: IpAddr,
    pub end: IpAddr,
    /// The language of the answers it corrects.
    pub lang: TableLang,
    /// The corrected values, in `PLACE_COLUMNS` order; empty ones correct
    /// nothing.
    pub place: Place,
    /// Why: required, so that a correction can be judged later.
    pub reason: String,
    /// Who or what observed it.
    pub source: String,
    /// When it was stored; `None` for one read from a file.
    pub created_at: Option<SystemTime>,
    /// When it stops applying; `None` for never.
    pub expires_at: Option<SystemTime>,
}

impl Correction {
    pub fn family(&self) -> Family {
        match self.start {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn in_force(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// Whether it corrects anything: a value in any column.
    pub fn corrects_something(&self) -> bool {
        self.place.fields().columns().iter().any(|value| !value.is_empty())
    }

    /// Whether `other` says the same: every field but when it was stored.
    pub fn says_the_same(&self, other: &Correction) -> bool {
        let Correction {
            created_at: _,
            start,
            end,
            lang,
            place,
            reason,
            source,
            expires_at,
        } = self;
        (start, end, lang, place, reason, source, expires_at)
            == (
                &other.start,
                &other.end,
                &other.lang,
                &other.place,
                &other.reason,
                &other.source,
                &other.expires_at,
            )
    }

    /// The correction's range and language, for messages.
    pub fn describe(&self) -> String {
        format!("{} - {} ({})", self.start, self.end, self.lang.as_str())
    }
}

/// The order corrections are held and checked in: by language, family
/// and start.
pub fn order(row: &Correction) -> (TableLang, Family, u128) {
    (row.lang, row.family(), ip_number(row.start))
}

/// In `rows` sorted by [`order`], the first of two neighbours of one
/// language and family that overlap.
pub fn first_overlap<T>(rows: &[T], row: impl Fn(&T) -> &Correction) -> Option<usize> {
    rows.windows(2).position(|pair| {
        let (a, b) = (row(&pair[0]), row(&pair[1]));
        a.lang == b.lang && a.family() == b.family() && ip_number(b.start) <= ip_number(a.end)
    })
}

/// Why corrections cannot be held.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorrectionError {
    #[error("corrections overlap: {first} and {second}")]
    Overlap { first: String, second: String },
    #[error("{0}")]
    Index(#[from] IndexError),
}

/// The corrections in force at one moment, searchable by language and
/// family, with every row kept, expired or not, so that the next
/// moment's are built without the source.
pub struct Corrections {
    rows: Arc<[Correction]>,
    /// By [`TableLang`]: the corrections in force, `None` where there are none.
    v4: [Option<RangeIndex<u32>>; 2],
    v6: [Option<RangeIndex<u128>>; 2],
    /// When the soonest correction in force expires.
    next_expiry: Option<SystemTime>,
    /// What they were read from.
    pub version: Version,
    /// When they were produced (the import's finish, the file's time).
    pub data_time: Option<SystemTime>,
}

impl Corrections {
    /// No corrections.
    pub fn none() -> Corrections {
        Corrections {
            rows: Arc::from(Vec::new()),
            v4: [None, None],
            v6: [None, None],
            next_expiry: None,
            version: Version::Absent,
            data_time: None,
        }
    }

    /// `rows` as they stand at `now`: refuses two of one language and
    /// family that overlap, naming both.
    pub fn new(
        mut rows: Vec<Correction>,
        version: Version,
        data_time: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Corrections, CorrectionError> {
        rows.sort_by_key(order);
        if let Some(i) = first_overlap(&rows, |row| row) {
            return Err(CorrectionError::Overlap {
                first: rows[i].describe(),
                second: rows[i + 1].describe(),
            });
        }
        Corrections::at(Arc::from(rows), version, data_time, now)
    }

    /// Sorted, non-overlapping `rows` as they stand at `now`.
    fn at(
        rows: Arc<[Correction]>,
        version: Version,
        data_time: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Corrections, CorrectionError> {
        let mut v4 = [Builder::<u32>::default(), Builder::default()];
        let mut v6 = [Builder::<u128>::default(), Builder::default()];
        let mut next_expiry: Option<SystemTime> = None;
        for row in rows.iter().filter(|row| row.in_force(now)) {
            let lang = row.lang as usize;
            match (row.start, row.end) {
                (IpAddr::V4(start), IpAddr::V4(end)) => v4[lang].push_place(start.into(), end.into(), &row.place)?,
                (IpAddr::V6(start), IpAddr::V6(end)) => v6[lang].push_place(start.into(), end.into(), &row.place)?,
                _ => {
                    return Err(IndexError::Reversed {
                        start: row.start.to_string(),
                        end: row.end.to_string(),
                    }
                    .into())
                }
            }
            if let Some(at) = row.expires_at {
                next_expiry = Some(next_expiry.map_or(at, |soonest| soonest.min(at)));
            }
        }
        Ok(Corrections {
            rows,
            v4: v4.map(held),
            v6: v6.map(held),
            next_expiry,
            version,
            data_time,
        })
    }

    /// Whether a correction in force has expired by `now`.
    pub fn has_expired(&self, now: SystemTime) -> bool {
        self.next_expiry.is_some_and(|at| at <= now)
    }

    /// The same rows as they stand at `now`.
    pub fn rebuilt(&self, now: SystemTime) -> Corrections {
        Corrections::at(self.rows.clone(), self.version, self.data_time, now)
            .expect("rows that were held once are held again")
    }

    /// The IPv4 corrections in force for answers in `lang`.
    #[inline]
    pub fn v4(&self, lang: TableLang) -> Option<&RangeIndex<u32>> {
        self.v4[lang as usize].as_ref()
    }

    /// The IPv6 corrections in force for answers in `lang`.
    #[inline]
    pub fn v6(&self, lang: TableLang) -> Option<&RangeIndex<u128>> {
        self.v6[lang as usize].as_ref()
    }

    /// Every row, expired or not, by language, family and address.
    pub fn rows(&self) -> &[Correction] {
        &self.rows
    }

    /// How many are in force.
    pub fn in_force(&self) -> usize {
        let len = |i: Option<&RangeIndex<u32>>| i.map_or(0, RangeIndex::len);
        let len6 = |i: Option<&RangeIndex<u128>>| i.map_or(0, RangeIndex::len);
        TableLang::ALL
            .into_iter()
            .map(|lang| len(self.v4(lang)) + len6(self.v6(lang)))
            .sum()
    }
}

/// The index a builder makes, unless it holds nothing.
fn held<K: crate::data::index::Key>(builder: Builder<K>) -> Option<RangeIndex<K>> {
    let index = builder.finish();
    (!index.is_empty()).then_some(index)
}

/// An address as a number, IPv4 in the low 32 bits.
pub fn ip_number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::Source;

    fn row(start: &str, end: &str, lang: TableLang, city: &str, expires_at: Option<SystemTime>) -> Correction {
        Correction {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            lang,
            place: Place::from_columns(["", "", "", "", "", city, "", ""]),
            reason: "seen".into(),
            source: String::new(),
            created_at: None,
            expires_at,
        }
    }

    #[test]
    fn each_language_and_family_is_searched_apart() {
        let now = SystemTime::now();
        let corrections = Corrections::new(
            vec![
                row("1.2.3.0", "1.2.3.255", TableLang::En, "Shenzhen", None),
                row("1.2.3.0", "1.2.3.255", TableLang::ZhCn, "深圳", None),
                row("240e::", "240e::ff", TableLang::ZhCn, "广州", None),
            ],
            Version::Absent,
            None,
            now,
        )
        .unwrap();
        let city = |found: Option<crate::domain::Located>| found.map(|l| l.place.city_name().to_owned());
        let zh = corrections.v4(TableLang::ZhCn).unwrap();
        assert_eq!(
            city(zh.locate(u32::from_be_bytes([1, 2, 3, 9]), Source::Correction)).as_deref(),
            Some("深圳")
        );
        assert_eq!(zh.locate(u32::from_be_bytes([1, 2, 4, 0]), Source::Correction), None);
        let en = corrections.v4(TableLang::En).unwrap();
        assert_eq!(
            city(en.locate(u32::from_be_bytes([1, 2, 3, 9]), Source::Correction)).as_deref(),
            Some("Shenzhen")
        );
        assert!(corrections.v6(TableLang::En).is_none());
        assert_eq!(corrections.v6(TableLang::ZhCn).unwrap().len(), 1);
        assert_eq!(corrections.in_force(), 3);
    }

    #[test]
    fn overlaps_within_a_language_are_refused_naming_both() {
        let err = Corrections::new(
            vec![
                row("1.2.3.0", "1.2.3.255", TableLang::ZhCn, "a", None),
                row("1.2.3.128", "1.2.4.0", TableLang::ZhCn, "b", None),
            ],
            Version::Absent,
            None,
            SystemTime::now(),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "corrections overlap: 1.2.3.0 - 1.2.3.255 (zh-CN) and 1.2.3.128 - 1.2.4.0 (zh-CN)"
        );
    }

    #[test]
    fn an_expired_correction_stops_applying_when_rebuilt() {
        let now = SystemTime::now();
        let soon = now + Duration::from_secs(60);
        let corrections = Corrections::new(
            vec![
                row("1.2.3.0", "1.2.3.255", TableLang::ZhCn, "a", Some(soon)),
                row("5.0.0.0", "5.0.0.0", TableLang::ZhCn, "b", Some(now)),
            ],
            Version::Absent,
            None,
            now,
        )
        .unwrap();
        assert_eq!(corrections.in_force(), 1, "one expired at now");
        assert!(!corrections.has_expired(now));
        assert!(corrections.has_expired(soon));
        let later = corrections.rebuilt(soon);
        assert_eq!(later.in_force(), 0);
        assert_eq!(later.rows().len(), 2, "every row is kept");
        assert!(later.v4(TableLang::ZhCn).is_none());
    }
}
