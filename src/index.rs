//! The in-memory range index: each table's ranges as sorted start and end
//! arrays searched through a first-level table on the top 16 bits, each
//! range pointing at one of the table's distinct places, stored once. An
//! index is immutable; [`Tables`] swaps whole indexes in atomically, so a
//! lookup never takes a lock and a batch reads one snapshot. No I/O here:
//! `store` fills indexes from PostgreSQL and `import` from files.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::HashTable;

use crate::domain::{Family, Located, Place, Source, Table};

/// A range bound: `u32` for IPv4, `u128` for IPv6.
pub trait Key: Copy + Ord + fmt::Debug + Send + Sync + 'static {
    /// The first-level slot: the key's top 16 bits.
    fn slot(self) -> usize;
    fn ip(self) -> IpAddr;
}

impl Key for u32 {
    fn slot(self) -> usize {
        (self >> 16) as usize
    }

    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

impl Key for u128 {
    fn slot(self) -> usize {
        (self >> 112) as usize
    }

    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
}

const SLOTS: usize = 1 << 16;

/// One table's ranges. Lookups answer exactly as the PostgreSQL probe
/// does: the range with the greatest start at or below the address, if its
/// end reaches the address.
pub struct RangeIndex<K> {
    starts: Vec<K>,
    ends: Vec<K>,
    /// Each range's place, as an index into `places`.
    records: Vec<u32>,
    places: Vec<Arc<Place>>,
    /// `slots[s]`: how many ranges start below slot `s`; `SLOTS + 1` entries.
    slots: Box<[u32]>,
    source: Source,
}

impl<K: Key> RangeIndex<K> {
    /// The range holding `key`, as `(start, end, place)`.
    #[inline]
    pub fn get(&self, key: K) -> Option<(K, K, &Arc<Place>)> {
        let slot = key.slot();
        let (lo, hi) = (self.slots[slot] as usize, self.slots[slot + 1] as usize);
        // Ranges starting in earlier slots all start below `key`.
        let below = lo + self.starts[lo..hi].partition_point(|&start| start <= key);
        let i = below.checked_sub(1)?;
        (self.ends[i] >= key).then(|| (self.starts[i], self.ends[i], &self.places[self.records[i] as usize]))
    }

    /// The answer for `key`, sharing the range's place.
    #[inline]
    pub fn locate(&self, key: K) -> Option<Located> {
        self.get(key).map(|(start, end, place)| Located {
            place: place.clone(),
            start: start.ip(),
            end: end.ip(),
            source: self.source,
        })
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Distinct places held.
    pub fn places(&self) -> usize {
        self.places.len()
    }

    /// Every range in address order, for sampling and comparison.
    pub fn ranges(&self) -> impl Iterator<Item = (K, K, &Arc<Place>)> + '_ {
        (0..self.starts.len()).map(|i| (self.starts[i], self.ends[i], &self.places[self.records[i] as usize]))
    }

    /// Bytes held by the arrays and the places' text, for the start-up log.
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self
            .places
            .iter()
            .map(|p| place_fields(p).iter().map(|f| f.len()).sum::<usize>())
            .sum();
        self.starts.capacity() * 2 * std::mem::size_of::<K>()
            + self.records.capacity() * 4
            + self.slots.len() * 4
            + self.places.len() * (std::mem::size_of::<Place>() + 16)
            + text
    }
}

/// Why ranges cannot become an index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("range {start} - {end} starts after it ends")]
    Reversed { start: String, end: String },
    #[error("ranges are not in address order, or two start at {0}")]
    Unordered(String),
    #[error("more than {} ranges", u32::MAX)]
    TooMany,
}

/// A place's values in a fixed order: equal arrays, equal places.
fn place_fields(p: &Place) -> [&str; 8] {
    [
        &p.country_code,
        &p.country_name,
        &p.province_code,
        &p.province_name,
        &p.city_code,
        &p.city_name,
        &p.district_name,
        &p.carrier,
    ]
}

/// Collects ranges in address order into a [`RangeIndex`], storing each
/// distinct place once however many ranges share it.
pub struct Builder<K> {
    starts: Vec<K>,
    ends: Vec<K>,
    records: Vec<u32>,
    places: Vec<Arc<Place>>,
    distinct: HashTable<u32>,
    hasher: RandomState,
    source: Source,
}

impl<K: Key> Builder<K> {
    pub fn new(source: Source) -> Builder<K> {
        Builder {
            starts: Vec::new(),
            ends: Vec::new(),
            records: Vec::new(),
            places: Vec::new(),
            distinct: HashTable::new(),
            hasher: RandomState::new(),
            source,
        }
    }

    /// Appends a range with `place`'s values; its text is copied only if
    /// no range before had the same.
    pub fn push_place(&mut self, start: K, end: K, place: &Place) -> Result<(), IndexError> {
        self.push_fields(start, end, place_fields(place))
    }

    /// Appends a range whose place is given field by field (in the order
    /// country code and name, province code and name, city code and name,
    /// district, carrier); the text is copied only for a place not seen yet.
    pub fn push_fields(&mut self, start: K, end: K, fields: [&str; 8]) -> Result<(), IndexError> {
        let hash = self.hasher.hash_one(fields);
        let places = &self.places;
        let id = match self
            .distinct
            .find(hash, |&id| place_fields(&places[id as usize]) == fields)
        {
            Some(&id) => id,
            None => {
                let [country_code, country_name, province_code, province_name, city_code, city_name, district, carrier] =
                    fields.map(str::to_owned);
                self.intern_new(
                    hash,
                    Arc::new(Place {
                        country_code,
                        country_name,
                        province_code,
                        province_name,
                        city_code,
                        city_name,
                        district_name: district,
                        carrier,
                    }),
                )?
            }
        };
        self.push_id(start, end, id)
    }

    fn intern_new(&mut self, hash: u64, place: Arc<Place>) -> Result<u32, IndexError> {
        let id = u32::try_from(self.places.len()).map_err(|_| IndexError::TooMany)?;
        self.places.push(place);
        let places = &self.places;
        let hasher = &self.hasher;
        self.distinct
            .insert_unique(hash, id, |&id| hasher.hash_one(place_fields(&places[id as usize])));
        Ok(id)
    }

    fn push_id(&mut self, start: K, end: K, id: u32) -> Result<(), IndexError> {
        if start > end {
            return Err(IndexError::Reversed {
                start: start.ip().to_string(),
                end: end.ip().to_string(),
            });
        }
        if self.starts.last().is_some_and(|&last| last >= start) {
            return Err(IndexError::Unordered(start.ip().to_string()));
        }
        if self.starts.len() == u32::MAX as usize {
            return Err(IndexError::TooMany);
        }
        self.starts.push(start);
        self.ends.push(end);
        self.records.push(id);
        Ok(())
    }

    pub fn finish(mut self) -> RangeIndex<K> {
        self.starts.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.records.shrink_to_fit();
        self.places.shrink_to_fit();
        let mut slots = vec![0u32; SLOTS + 1];
        // slots[s] = ranges whose slot is below s.
        for start in &self.starts {
            slots[start.slot() + 1] += 1;
        }
        for s in 1..=SLOTS {
            slots[s] += slots[s - 1];
        }
        RangeIndex {
            starts: self.starts,
            ends: self.ends,
            records: self.records,
            places: self.places,
            slots: slots.into_boxed_slice(),
            source: self.source,
        }
    }
}

/// One table's index, of the table's family.
pub enum TableIndex {
    V4(RangeIndex<u32>),
    V6(RangeIndex<u128>),
}

impl TableIndex {
    /// An index with no ranges for `table`.
    pub fn empty(table: Table) -> TableIndex {
        match table.family() {
            Family::V4 => TableIndex::V4(Builder::new(table.source()).finish()),
            Family::V6 => TableIndex::V6(Builder::new(table.source()).finish()),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            TableIndex::V4(_) => Family::V4,
            TableIndex::V6(_) => Family::V6,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TableIndex::V4(index) => index.len(),
            TableIndex::V6(index) => index.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn places(&self) -> usize {
        match self {
            TableIndex::V4(index) => index.places(),
            TableIndex::V6(index) => index.places(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            TableIndex::V4(index) => index.heap_bytes(),
            TableIndex::V6(index) => index.heap_bytes(),
        }
    }
}

/// What a [`Tables`] slot holds: the index and what it was built from,
/// so that a reload can tell whether the source has changed since.
pub struct Snapshot {
    pub index: TableIndex,
    pub version: Version,
}

/// Identifies the data an index was built from: the PostgreSQL table's
/// relation and its latest import, or nothing for files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    pub relation: u32,
    pub import_id: Option<i64>,
}

/// The three live indexes. Readers load a table's current snapshot without
/// a lock; a reload builds a new index aside and swaps it in whole.
pub struct Tables {
    slots: [ArcSwap<Snapshot>; 3],
}

fn slot_of(table: Table) -> usize {
    match table {
        Table::Cn => 0,
        Table::En => 1,
        Table::V6 => 2,
    }
}

impl Tables {
    /// Tables holding `snapshots`, one per table; a missing one is empty.
    pub fn new(mut snapshots: Vec<(Table, Snapshot)>) -> Tables {
        let mut take = |table: Table| {
            let at = snapshots.iter().position(|(t, _)| *t == table);
            let snapshot = at.map(|i| snapshots.swap_remove(i).1).unwrap_or_else(|| Snapshot {
                index: TableIndex::empty(table),
                version: Version::default(),
            });
            assert_eq!(
                snapshot.index.family(),
                table.family(),
                "{table:?} index of the wrong family"
            );
            ArcSwap::from_pointee(snapshot)
        };
        Tables {
            slots: [take(Table::Cn), take(Table::En), take(Table::V6)],
        }
    }

    /// The current snapshot of `table`.
    pub fn snapshot(&self, table: Table) -> Arc<Snapshot> {
        self.slots[slot_of(table)].load_full()
    }

    /// Makes `snapshot` the one lookups of `table` see from now on;
    /// lookups already running finish on the old one.
    pub fn replace(&self, table: Table, snapshot: Snapshot) {
        assert_eq!(
            snapshot.index.family(),
            table.family(),
            "{table:?} index of the wrong family"
        );
        self.slots[slot_of(table)].store(Arc::new(snapshot));
    }

    /// Each IPv4 address's row in `table` (cn or en), all from one snapshot.
    pub fn lookup_v4(&self, table: Table, ips: &[Ipv4Addr]) -> Vec<Option<Located>> {
        let snapshot = self.slots[slot_of(table)].load();
        match &snapshot.index {
            TableIndex::V4(index) => ips.iter().map(|ip| index.locate(u32::from(*ip))).collect(),
            TableIndex::V6(_) => vec![None; ips.len()],
        }
    }

    /// Each IPv6 address's row in the v6 table, all from one snapshot.
    pub fn lookup_v6(&self, ips: &[Ipv6Addr]) -> Vec<Option<Located>> {
        let snapshot = self.slots[slot_of(Table::V6)].load();
        match &snapshot.index {
            TableIndex::V6(index) => ips.iter().map(|ip| index.locate(u128::from(*ip))).collect(),
            TableIndex::V4(_) => vec![None; ips.len()],
        }
    }
}

/// Gives freed heap pages back to the operating system. Parsing files or
/// replacing an index frees hundreds of megabytes in many small pieces,
/// which glibc's allocator would otherwise keep.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str) -> [&str; 8] {
        ["", name, "", "", "", "", "", ""]
    }

    fn index(ranges: &[(u32, u32, &str)]) -> RangeIndex<u32> {
        let mut builder = Builder::new(Source::Cn);
        for &(start, end, name) in ranges {
            builder.push_fields(start, end, fields(name)).unwrap();
        }
        builder.finish()
    }

    fn name_at(index: &RangeIndex<u32>, key: u32) -> Option<&str> {
        index.get(key).map(|(_, _, p)| p.country_name.as_str())
    }

    #[test]
    fn finds_the_range_holding_an_address_and_nothing_in_gaps() {
        let index = index(&[
            (0, 9, "a"),
            (20, 0x0001_0005, "b"),
            (0x0003_0000, 0x0003_0000, "c"),
            (u32::MAX - 1, u32::MAX, "d"),
        ]);
        for (key, want) in [
            (0, Some("a")),
            (9, Some("a")),
            (10, None),
            (19, None),
            (20, Some("b")),
            // Across a slot boundary: the range started in an earlier slot.
            (0x0001_0000, Some("b")),
            (0x0001_0005, Some("b")),
            (0x0001_0006, None),
            (0x0002_ffff, None),
            (0x0003_0000, Some("c")),
            (0x0003_0001, None),
            (u32::MAX - 2, None),
            (u32::MAX, Some("d")),
        ] {
            assert_eq!(name_at(&index, key), want, "key {key:#x}");
        }
        assert_eq!(index.get(0x0001_0000).map(|(s, e, _)| (s, e)), Some((20, 0x0001_0005)));
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let index = index(&[]);
        assert_eq!(name_at(&index, 0), None);
        assert_eq!(name_at(&index, u32::MAX), None);
        let v6: RangeIndex<u128> = Builder::new(Source::V6).finish();
        assert!(v6.get(u128::MAX).is_none());
    }

    #[test]
    fn overlapping_rows_answer_as_the_database_probe_does() {
        // The greatest start at or below the address decides, then its end.
        let index = index(&[(0, 100, "wide"), (10, 20, "inner")]);
        assert_eq!(name_at(&index, 5), Some("wide"));
        assert_eq!(name_at(&index, 15), Some("inner"));
        assert_eq!(name_at(&index, 50), None);
    }

    #[test]
    fn equal_places_are_stored_once() {
        let index = index(&[(0, 1, "a"), (5, 6, "b"), (8, 9, "a")]);
        assert_eq!((index.len(), index.places()), (3, 2));
        let (_, _, first) = index.get(0).unwrap();
        let (_, _, last) = index.get(9).unwrap();
        assert!(Arc::ptr_eq(first, last));
    }

    #[test]
    fn unordered_duplicate_and_reversed_ranges_are_refused() {
        let mut builder = Builder::new(Source::Cn);
        builder.push_fields(10u32, 20, fields("a")).unwrap();
        assert_eq!(
            builder.push_fields(10, 30, fields("b")),
            Err(IndexError::Unordered("0.0.0.10".into()))
        );
        assert_eq!(
            builder.push_fields(5, 6, fields("b")),
            Err(IndexError::Unordered("0.0.0.5".into()))
        );
        assert!(matches!(
            builder.push_fields(40, 30, fields("b")),
            Err(IndexError::Reversed { .. })
        ));
    }

    #[test]
    fn ipv6_keys_use_their_top_bits() {
        let mut builder = Builder::new(Source::V6);
        let start = u128::from("240e::".parse::<Ipv6Addr>().unwrap());
        let end = u128::from("240e:fff:ffff:ffff:ffff:ffff:ffff:ffff".parse::<Ipv6Addr>().unwrap());
        builder.push_fields(start, end, fields("cn")).unwrap();
        builder.push_fields(u128::MAX, u128::MAX, fields("last")).unwrap();
        let index = builder.finish();
        let found = index.locate(start + 12345).unwrap();
        assert_eq!(found.place.country_name, "cn");
        assert_eq!(found.start.to_string(), "240e::");
        assert!(index.get(end + 1).is_none());
        assert!(index.get(0).is_none());
        assert_eq!(index.get(u128::MAX).unwrap().2.country_name, "last");
    }

    #[test]
    fn a_batch_reads_one_snapshot_and_a_replacement_is_seen_next() {
        let snapshot = |name: &str| Snapshot {
            index: TableIndex::V4(index(&[(0, u32::MAX, name)])),
            version: Version::default(),
        };
        let tables = Tables::new(vec![(Table::Cn, snapshot("old"))]);
        let ip = Ipv4Addr::new(1, 2, 3, 4);
        let name = |tables: &Tables| {
            tables.lookup_v4(Table::Cn, &[ip])[0]
                .as_ref()
                .unwrap()
                .place
                .country_name
                .clone()
        };
        assert_eq!(name(&tables), "old");
        let held = tables.snapshot(Table::Cn);
        tables.replace(Table::Cn, snapshot("new"));
        assert_eq!(name(&tables), "new");
        // A reader holding the old snapshot still sees it whole.
        assert!(matches!(&held.index, TableIndex::V4(i) if i.get(7).unwrap().2.country_name == "old"));
        assert!(tables.lookup_v4(Table::En, &[ip])[0].is_none());
        assert!(tables.lookup_v6(&[Ipv6Addr::LOCALHOST])[0].is_none());
    }
}
