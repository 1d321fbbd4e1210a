//! The in-memory range index: each table's ranges in address order,
//! searched as [`crate::data::starts`] says, each range pointing at one of
//! the table's distinct places, stored once. An
//! index is immutable; [`Tables`] swaps whole indexes in atomically, so a
//! lookup never takes a lock and a batch reads one snapshot. No I/O here:
//! `store` fills indexes from PostgreSQL and `import` from files.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hashbrown::HashTable;

use crate::data::corrections::Corrections;
use crate::data::digest::{place_digest, TableDigest};
use crate::data::starts::Starts;
use crate::domain::{
    range_fault, Family, Found, Located, Network, Place, PlaceFields, RangeFault, Source, Table, TableLang, V4Table,
};
use crate::health::Freshness;
use crate::memory::{prefetch, Growing, HugePages};

/// A range bound: `u32` for IPv4, `u128` for IPv6.
pub trait Key: Copy + Ord + fmt::Debug + Send + Sync + Into<u128> + 'static {
    /// How many bits a crowded slot's second-level table splits on.
    const SUB_BITS: u32;
    const FAMILY: Family;
    /// Whether a bucket's starts are searched in their low 16 bits:
    /// every start of a bucket shares the bits above them.
    const LOW_KEYS: bool;
    const MIN: Self;
    const MAX: Self;
    /// The key one below; `self` is above [`Key::MIN`].
    fn before(self) -> Self;
    /// The key one above; `self` is below [`Key::MAX`].
    fn after(self) -> Self;
    /// The first-level slot: the key's top 16 bits.
    fn slot(self) -> usize;
    /// The second-level slot: the `SUB_BITS` after the top 16.
    fn sub_slot(self) -> usize;
    /// The low 16 bits, when [`Key::LOW_KEYS`].
    fn low(self) -> u16;
    /// The key's top `Coverage::BITS` bits.
    fn coverage_bit(self) -> usize;
    fn ip(self) -> IpAddr;
    /// The index of a table of this key's family.
    fn index_of(table: &TableIndex) -> Option<&RangeIndex<Self>>;
    /// The corrections of this key's family for answers in `lang`.
    fn corrections_of(corrections: &Corrections, lang: TableLang) -> Option<&RangeIndex<Self>>;
}

impl Key for u32 {
    /// /24s: a /16 of many small ranges splits by its /24s.
    const SUB_BITS: u32 = 8;
    const FAMILY: Family = Family::V4;
    const LOW_KEYS: bool = true;
    const MIN: u32 = u32::MIN;
    const MAX: u32 = u32::MAX;

    fn before(self) -> u32 {
        self - 1
    }

    fn after(self) -> u32 {
        self + 1
    }

    fn slot(self) -> usize {
        (self >> 16) as usize
    }

    fn sub_slot(self) -> usize {
        (self >> 8) as usize & 0xff
    }

    fn low(self) -> u16 {
        self as u16
    }

    fn coverage_bit(self) -> usize {
        (self >> (32 - Coverage::BITS)) as usize
    }

    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }

    fn index_of(table: &TableIndex) -> Option<&RangeIndex<u32>> {
        match table {
            TableIndex::V4(index) => Some(index),
            TableIndex::V6(_) => None,
        }
    }

    fn corrections_of(corrections: &Corrections, lang: TableLang) -> Option<&RangeIndex<u32>> {
        corrections.v4(lang)
    }
}

impl Key for u128 {
    /// /28s: allocated IPv6 space crowds into a few /16s (2a01::/16 holds a
    /// quarter of qqwry's ranges), which registries hand out by /29 to /32.
    const SUB_BITS: u32 = 12;
    const FAMILY: Family = Family::V6;
    const LOW_KEYS: bool = false;
    const MIN: u128 = u128::MIN;
    const MAX: u128 = u128::MAX;

    fn before(self) -> u128 {
        self - 1
    }

    fn after(self) -> u128 {
        self + 1
    }

    fn slot(self) -> usize {
        (self >> 112) as usize
    }

    fn sub_slot(self) -> usize {
        (self >> 100) as usize & 0xfff
    }

    /// Unused: IPv6 buckets are searched in their full starts.
    fn low(self) -> u16 {
        self as u16
    }

    fn coverage_bit(self) -> usize {
        (self >> (128 - Coverage::BITS)) as usize
    }

    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }

    fn index_of(table: &TableIndex) -> Option<&RangeIndex<u128>> {
        match table {
            TableIndex::V6(index) => Some(index),
            TableIndex::V4(_) => None,
        }
    }

    fn corrections_of(corrections: &Corrections, lang: TableLang) -> Option<&RangeIndex<u128>> {
        corrections.v6(lang)
    }
}

/// One table's ranges. Lookups answer exactly as the PostgreSQL probe
/// does: the range with the greatest start at or below the address, if its
/// end reaches the address.
pub struct RangeIndex<K> {
    /// In address order. A range's start, end and place sit together, so
    /// the search and the end check read the same few cache lines.
    entries: HugePages<Entry<K>>,
    /// Each distinct place once; entries point into it.
    places: Vec<Place>,
    /// For a network table, where each entry's place lies, in 8-byte
    /// steps from the first place's [`Place::address`] (0 when too far):
    /// the place is asked for as soon as its entry is, not after `places`
    /// says which it is: one dependent miss less for the network's search,
    /// which a lookup adds to the place table's (4 bytes a range; empty for
    /// the place tables, where it would cost 16 MB).
    near: HugePages<i32>,
    first_place: usize,
    /// The search over the entries' starts.
    starts: Starts<K>,
    /// For a sparse index, where its ranges are at all.
    coverage: Option<Coverage>,
}

/// A slot of more ranges than this gets a second-level table.
const CROWDED: u32 = 48;

/// Indexes of at most this many ranges (the corrections, small tables)
/// carry a [`Coverage`]: an address far from all of them then costs one
/// bit's read, not the directory's and the entries' misses.
const SPARSE: usize = 1 << 16;

/// Which blocks of addresses (IPv4 /20s; for IPv6 the top 20 bits) hold
/// any address of a sparse index's ranges: 128 KiB.
struct Coverage(Box<[u64]>);

impl Coverage {
    const BITS: u32 = 20;

    fn new<K: Key>(entries: &[Entry<K>]) -> Coverage {
        let mut words = vec![0u64; (1 << Self::BITS) / 64];
        for entry in entries {
            let (mut bit, last) = (entry.start.coverage_bit(), entry.end.coverage_bit());
            while bit <= last {
                if bit % 64 == 0 && bit + 63 <= last {
                    words[bit / 64] = u64::MAX;
                    bit += 64;
                } else {
                    words[bit / 64] |= 1 << (bit % 64);
                    bit += 1;
                }
            }
        }
        Coverage(words.into_boxed_slice())
    }

    /// Whether `key` may be in a range; `false` means it is in none.
    #[inline]
    fn may_hold<K: Key>(&self, key: K) -> bool {
        let bit = key.coverage_bit();
        self.0[bit / 64] >> (bit % 64) & 1 == 1
    }
}

#[derive(Clone, Copy)]
struct Entry<K> {
    start: K,
    end: K,
    place: u32,
}

impl<K: Key> RangeIndex<K> {
    /// The range holding `key`, as `(start, end, place)`.
    #[inline]
    pub fn get(&self, key: K) -> Option<(K, K, &Place)> {
        self.find(key).map(|i| self.range_at(i))
    }

    fn range_at(&self, i: usize) -> (K, K, &Place) {
        let entry = &self.entries[i];
        (entry.start, entry.end, &self.places[entry.place as usize])
    }

    /// The answer for `key` from a place table, sharing the range's place.
    #[inline]
    pub fn locate(&self, key: K, source: Source) -> Option<Located> {
        self.find(key).map(|i| self.answer(i, source))
    }

    /// The network holding `key`, in a network table.
    #[inline]
    pub fn network(&self, key: K) -> Option<Network> {
        self.find(key).and_then(|i| self.network_at(i))
    }

    /// [`RangeIndex::get`] for each of `keys`, searched together.
    pub fn get_all<'a>(&'a self, keys: &[K], mut each: impl FnMut(Option<(K, K, &'a Place)>)) {
        search_together([Some(self), None], keys, |[found, _]| {
            each(found.map(|i| self.range_at(i)))
        });
    }

    /// [`RangeIndex::locate`] for each of `keys`.
    pub fn locate_all(&self, keys: &[K], source: Source) -> Vec<Option<Located>> {
        let mut out = Vec::with_capacity(keys.len());
        search_together([Some(self), None], keys, |[found, _]| {
            out.push(found.map(|i| self.answer(i, source)))
        });
        out
    }

    /// The entry holding `key`.
    #[inline]
    fn find(&self, key: K) -> Option<usize> {
        let bucket = self.start_search(key)?;
        let i = self.rank(key, bucket)?;
        self.holds(key, i).then_some(i)
    }

    /// A search's first step: the bucket of entries it looks at (none in
    /// an empty index, or far from a sparse index's ranges), asked for.
    #[inline]
    fn start_search(&self, key: K) -> Option<(usize, usize)> {
        if self.entries.is_empty() {
            return None;
        }
        if let Some(coverage) = &self.coverage {
            if !coverage.may_hold(key) {
                return None;
            }
        }
        let (lo, hi) = self.starts.bucket(key);
        if !K::LOW_KEYS {
            prefetch(self.entries.as_ptr().wrapping_add((lo + hi) / 2));
        }
        Some((lo, hi))
    }

    /// A search's second step: the last entry starting at or below `key`
    /// (in its bucket, or before it), asked for.
    #[inline]
    fn rank(&self, key: K, (lo, hi): (usize, usize)) -> Option<usize> {
        let below = self.starts.rank(key, (lo, hi), || {
            self.entries[lo..hi].partition_point(|e| e.start <= key)
        });
        let i = below.checked_sub(1)?;
        prefetch(&self.entries[i]);
        if let Some(near) = self.near.get(i) {
            prefetch(near);
        }
        Some(i)
    }

    /// A search's end: whether entry `i`, the last starting at or below
    /// `key`, reaches it.
    #[inline]
    fn holds(&self, key: K, i: usize) -> bool {
        self.entries[i].end >= key
    }

    /// The row values of entry `i`.
    #[inline]
    fn row(&self, i: usize) -> &Place {
        &self.places[self.entries[i].place as usize]
    }

    fn answer(&self, i: usize, source: Source) -> Located {
        let entry = &self.entries[i];
        Located {
            place: self.places[entry.place as usize].clone(),
            start: entry.start.ip(),
            end: entry.end.ip(),
            source,
            network: None,
            corrected: false,
        }
    }

    /// Asks for entry `i`'s place, where a network table knows it lies.
    #[inline]
    fn prefetch_place(&self, i: usize) {
        if let Some(&near) = self.near.get(i) {
            Place::prefetch_at(self.first_place.wrapping_add_signed(near as isize * 8));
        }
    }

    fn network_at(&self, i: usize) -> Option<Network> {
        Network::from_row(self.row(i))
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct places held.
    pub fn places(&self) -> usize {
        self.places.len()
    }

    /// The index as its parts: each distinct place once, and each range
    /// as (start, end, the place's number): what a snapshot file holds.
    pub fn parts(&self) -> (&[Place], impl Iterator<Item = (K, K, u32)> + '_) {
        (&self.places, self.entries.iter().map(|e| (e.start, e.end, e.place)))
    }

    /// An index from [`RangeIndex::parts`], each range checked as
    /// [`Builder`] checks it.
    pub fn from_parts(
        places: Vec<Place>,
        ranges: impl Iterator<Item = (K, K, u32)>,
    ) -> Result<RangeIndex<K>, IndexError> {
        let mut builder = Builder::with_capacity(ranges.size_hint().0);
        builder.places = places;
        for (start, end, place) in ranges {
            if place as usize >= builder.places.len() {
                return Err(IndexError::NoSuchPlace(place));
            }
            builder.push_id(start, end, place)?;
        }
        Ok(builder.finish())
    }

    /// This index with `removed` taken out and `added` put in, each in
    /// address order: what building the changed table from scratch gives,
    /// places numbered alike, without reading the unchanged ranges again.
    /// Refuses a removed range this index does not hold as it is.
    pub fn with_changes(
        &self,
        removed: &[(K, K, Place)],
        added: &[(K, K, Place)],
    ) -> Result<RangeIndex<K>, IndexError> {
        let not_held = |(start, end, _): &(K, K, Place)| {
            IndexError::ChangesDoNotFit(format!("{} - {} is not a range of the table", start.ip(), end.ip()))
        };
        let mut builder = Builder::with_capacity(self.len() + added.len());
        // Each old place's number in the new index, once it has one.
        let mut renumbered = vec![None; self.places.len()];
        let (mut removed, mut added) = (removed.iter().peekable(), added.iter().peekable());
        for entry in self.entries.iter() {
            while let Some((start, end, place)) = added.next_if(|(start, ..)| *start < entry.start) {
                builder.push_place(*start, *end, place)?;
            }
            let place = &self.places[entry.place as usize];
            match removed.next_if(|(start, ..)| *start <= entry.start) {
                Some(gone) if (gone.0, gone.1, &gone.2) == (entry.start, entry.end, place) => continue,
                Some(gone) => return Err(not_held(gone)),
                None => {}
            }
            let id = match renumbered[entry.place as usize] {
                Some(id) => id,
                None => *renumbered[entry.place as usize].insert(builder.intern(place)?),
            };
            builder.push_id(entry.start, entry.end, id)?;
        }
        for (start, end, place) in added {
            builder.push_place(*start, *end, place)?;
        }
        match removed.next() {
            Some(gone) => Err(not_held(gone)),
            None => Ok(builder.finish()),
        }
    }

    /// [`TableDigest::of`] the ranges, each place's text hashed once.
    pub fn digest(&self) -> TableDigest {
        let places: Vec<u64> = self.places.iter().map(place_digest).collect();
        let mut digest = TableDigest::default();
        for entry in self.entries.iter() {
            digest.add(entry.start.into(), entry.end.into(), places[entry.place as usize]);
        }
        digest
    }

    /// Every range in address order, for sampling and comparison.
    pub fn ranges(&self) -> impl Iterator<Item = (K, K, &Place)> + '_ {
        self.entries
            .iter()
            .map(|e| (e.start, e.end, &self.places[e.place as usize]))
    }

    /// Bytes held by the arrays and the places, for the start-up log.
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.places.iter().map(Place::heap_bytes).sum();
        self.entries.len() * std::mem::size_of::<Entry<K>>()
            + self.near.len() * std::mem::size_of::<i32>()
            + self.starts.heap_bytes()
            + self.coverage.as_ref().map_or(0, |c| c.0.len() * 8)
            + self.places.capacity() * std::mem::size_of::<Place>()
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
    /// The backward probe would answer such rows wrongly, so an index
    /// refuses them and the server keeps its previous snapshot.
    #[error("ranges overlap: {first} and {second}")]
    Overlap { first: String, second: String },
    #[error("more than {} ranges", u32::MAX)]
    TooMany,
    #[error("a range points at place {0}, which does not exist")]
    NoSuchPlace(u32),
    #[error("the changes do not fit the data they were made against: {0}")]
    ChangesDoNotFit(String),
}

/// Collects ranges in address order into a [`RangeIndex`], storing each
/// distinct place once however many ranges share it.
pub struct Builder<K> {
    entries: Growing<Entry<K>>,
    places: Vec<Place>,
    distinct: HashTable<u32>,
    hasher: RandomState,
}

impl<K: Key> Default for Builder<K> {
    fn default() -> Builder<K> {
        Builder {
            entries: Growing::default(),
            places: Vec::new(),
            distinct: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Key> Builder<K> {
    /// A builder with room for `ranges` ranges, when their number is known
    /// (more still fit): the entries then never move as they arrive.
    pub fn with_capacity(ranges: usize) -> Builder<K> {
        let mut builder = Builder::default();
        builder.entries.reserve(ranges);
        builder
    }

    /// Appends a range with `place`'s values; a place no range before had
    /// is shared, not copied.
    pub fn push_place(&mut self, start: K, end: K, place: &Place) -> Result<(), IndexError> {
        let id = self.intern(place)?;
        self.push_id(start, end, id)
    }

    /// Appends a range whose place is given field by field; the text is
    /// copied only for a place not seen yet.
    pub fn push_fields(&mut self, start: K, end: K, fields: PlaceFields) -> Result<(), IndexError> {
        let id = match self.find_place(fields) {
            (_, Some(id)) => id,
            (hash, None) => self.intern_new(hash, Place::new(fields))?,
        };
        self.push_id(start, end, id)
    }

    /// The number of `place`, which is shared, not copied, if new.
    fn intern(&mut self, place: &Place) -> Result<u32, IndexError> {
        match self.find_place(place.fields()) {
            (_, Some(id)) => Ok(id),
            (hash, None) => self.intern_new(hash, place.clone()),
        }
    }

    /// The hash of `fields`, and the number of the place holding them if
    /// one does already.
    fn find_place(&self, fields: PlaceFields) -> (u64, Option<u32>) {
        let hash = self.hasher.hash_one(fields);
        let found = self
            .distinct
            .find(hash, |&id| self.places[id as usize].fields() == fields);
        (hash, found.copied())
    }

    fn intern_new(&mut self, hash: u64, place: Place) -> Result<u32, IndexError> {
        let id = u32::try_from(self.places.len()).map_err(|_| IndexError::TooMany)?;
        self.places.push(place);
        let places = &self.places;
        let hasher = &self.hasher;
        self.distinct
            .insert_unique(hash, id, |&id| hasher.hash_one(places[id as usize].fields()));
        Ok(id)
    }

    fn push_id(&mut self, start: K, end: K, id: u32) -> Result<(), IndexError> {
        let last = self.entries.as_slice().last();
        match range_fault(last.map(|l| (l.start.into(), l.end.into())), start.into(), end.into()) {
            None => {}
            Some(RangeFault::Reversed) => {
                return Err(IndexError::Reversed {
                    start: start.ip().to_string(),
                    end: end.ip().to_string(),
                })
            }
            Some(RangeFault::Unordered) => return Err(IndexError::Unordered(start.ip().to_string())),
            Some(RangeFault::Overlaps) => {
                let last = last.expect("an overlap has a range before it");
                return Err(IndexError::Overlap {
                    first: format!("{} - {}", last.start.ip(), last.end.ip()),
                    second: format!("{} - {}", start.ip(), end.ip()),
                });
            }
        }
        if self.entries.len() == u32::MAX as usize {
            return Err(IndexError::TooMany);
        }
        self.entries.push(Entry { start, end, place: id });
        Ok(())
    }

    pub fn finish(mut self) -> RangeIndex<K> {
        self.places.shrink_to_fit();
        let entries = self.entries.finish();
        let first_place = self.places.first().map_or(0, Place::address);
        let mut near = Growing::default();
        if !self.places.is_empty() && self.places.iter().all(Place::is_network) {
            near.reserve(entries.len());
            for entry in entries.iter() {
                let at = self.places[entry.place as usize].address();
                near.push(i32::try_from((at as isize - first_place as isize) >> 3).unwrap_or(0));
            }
        }
        RangeIndex {
            starts: Starts::new(entries.len(), |i| entries[i].start, CROWDED),
            coverage: (!entries.is_empty() && entries.len() <= SPARSE).then(|| Coverage::new(&entries)),
            entries,
            near: near.finish(),
            first_place,
            places: self.places,
        }
    }
}

/// Searches `indexes` (`None` for one not asked) for each of
/// `keys`, giving `each` the entry each index holds for each key, in key
/// order. Lookups are memory-bound, so keys go in chunks, and each step of
/// a chunk's searches is started for all of them before the next: the
/// bucket asked for, the entry its search lands on asked for, whether that
/// entry holds the key and its row asked for (a network table's place too:
/// it knows where that lies), the row's shared text asked for, then the
/// results. The keys' and the indexes' misses overlap.
pub fn search_together<K: Key, const N: usize>(
    indexes: [Option<&RangeIndex<K>>; N],
    keys: &[K],
    mut each: impl FnMut([Option<usize>; N]),
) {
    const CHUNK: usize = 16;
    let mut buckets = [[None; N]; CHUNK];
    let mut found = [[None; N]; CHUNK];
    for chunk in keys.chunks(CHUNK) {
        let (buckets, found) = (&mut buckets[..chunk.len()], &mut found[..chunk.len()]);
        for (buckets, &key) in buckets.iter_mut().zip(chunk) {
            for (bucket, index) in buckets.iter_mut().zip(indexes) {
                *bucket = index.and_then(|index| index.start_search(key));
            }
        }
        for ((found, buckets), &key) in found.iter_mut().zip(&*buckets).zip(chunk) {
            for ((found, bucket), index) in found.iter_mut().zip(buckets).zip(indexes) {
                *found = match (index, *bucket) {
                    (Some(index), Some(bucket)) => index.rank(key, bucket),
                    _ => None,
                };
            }
        }
        for (found, &key) in found.iter_mut().zip(chunk) {
            for (found, index) in found.iter_mut().zip(indexes) {
                if let (Some(index), Some(i)) = (index, *found) {
                    *found = index.holds(key, i).then_some(i);
                    if found.is_some() {
                        prefetch(index.row(i));
                        index.prefetch_place(i);
                    }
                }
            }
        }
        for found in &*found {
            for (found, index) in found.iter().zip(indexes) {
                if let (Some(index), Some(i)) = (index, *found) {
                    index.row(i).prefetch();
                }
            }
        }
        for &found in &*found {
            each(found);
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
            Family::V4 => TableIndex::V4(Builder::default().finish()),
            Family::V6 => TableIndex::V6(Builder::default().finish()),
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

    /// Every range in address order, bounds widened (IPv4 in the low 32
    /// bits), for comparing with other range lists.
    pub fn ranges(&self) -> Box<dyn Iterator<Item = (u128, u128, &Place)> + '_> {
        match self {
            TableIndex::V4(index) => Box::new(index.ranges().map(|(s, e, p)| (s.into(), e.into(), p))),
            TableIndex::V6(index) => Box::new(index.ranges()),
        }
    }

    pub fn digest(&self) -> TableDigest {
        match self {
            TableIndex::V4(index) => index.digest(),
            TableIndex::V6(index) => index.digest(),
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
    /// When the data was produced: the live import's finish, or the data
    /// file's modification time; unknown for rows loaded outside both.
    pub data_time: Option<SystemTime>,
}

/// Identifies the data an index was built from, so that a refresh can
/// tell whether its source has changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Nothing loaded: a table no source gives.
    Absent,
    /// A PostgreSQL table: its relation (a new one after every import's
    /// swap) and its latest successful import.
    Postgres { relation: u32, import_id: Option<i64> },
    /// A data file, as it was when it was read.
    File(FileSignature),
    /// The sample compiled into the binary, which never changes.
    Builtin,
}

impl Version {
    /// The import behind a PostgreSQL table's data, if any.
    pub fn import_id(self) -> Option<i64> {
        match self {
            Version::Postgres { import_id, .. } => import_id,
            _ => None,
        }
    }
}

/// What identifies one version of a file: replacing it by a rename changes
/// the inode, rewriting it changes the size or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSignature {
    pub device: u64,
    pub inode: u64,
    pub len: u64,
    pub modified: i64,
    pub modified_nanos: i64,
}

/// The live indexes, one per table, and the corrections. Readers load a
/// table's current snapshot without a lock; a reload builds a new index
/// aside and swaps it in whole.
pub struct Tables {
    slots: [ArcSwap<Snapshot>; TABLES],
    /// Per table: how what it serves stands against its source.
    freshness: [Mutex<Freshness>; TABLES],
    corrections: ArcSwap<Corrections>,
}

const TABLES: usize = Table::ALL.len();

fn slot_of(table: Table) -> usize {
    match table {
        Table::Cn => 0,
        Table::En => 1,
        Table::V6 => 2,
        Table::Asn => 3,
        Table::AsnV6 => 4,
    }
}

impl Tables {
    /// Tables holding `snapshots`, one per table; a missing one is empty.
    pub fn new(mut snapshots: Vec<(Table, Snapshot)>) -> Tables {
        let slots = Table::ALL.map(|table| {
            let at = snapshots.iter().position(|(t, _)| *t == table);
            let snapshot = at.map(|i| snapshots.swap_remove(i).1).unwrap_or_else(|| Snapshot {
                index: TableIndex::empty(table),
                version: Version::Absent,
                data_time: None,
            });
            assert_eq!(
                snapshot.index.family(),
                table.family(),
                "{table:?} index of the wrong family"
            );
            ArcSwap::from_pointee(snapshot)
        });
        Tables {
            slots,
            freshness: Default::default(),
            corrections: ArcSwap::from_pointee(Corrections::none()),
        }
    }

    /// The corrections in force now.
    pub fn corrections(&self) -> Arc<Corrections> {
        self.corrections.load_full()
    }

    /// Makes `corrections` the ones lookups apply from now on.
    pub fn replace_corrections(&self, corrections: Corrections) {
        self.corrections.store(Arc::new(corrections));
    }

    /// Drops the corrections that have expired by `now`, if any have;
    /// needs no source. Returns whether any had.
    pub fn expire_corrections(&self, now: SystemTime) -> bool {
        let held = self.corrections();
        if !held.has_expired(now) {
            return false;
        }
        let rebuilt = held.rebuilt(now);
        tracing::info!(
            in_force = rebuilt.in_force(),
            "corrections expired; the rest still apply"
        );
        self.replace_corrections(rebuilt);
        true
    }

    /// The current snapshot of `table`.
    pub fn snapshot(&self, table: Table) -> Arc<Snapshot> {
        self.slots[slot_of(table)].load_full()
    }

    /// Says how `table` stands against its source; [`Tables::replace`]
    /// makes it current.
    pub fn set_freshness(&self, table: Table, freshness: Freshness) {
        *self.freshness[slot_of(table)].lock().unwrap_or_else(|e| e.into_inner()) = freshness;
    }

    pub fn freshness(&self, table: Table) -> Freshness {
        self.freshness[slot_of(table)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `snapshot` the one lookups of `table` see from now on;
    /// lookups already running finish on the old one. A snapshot may be
    /// shared with other tables.
    pub fn replace(&self, table: Table, snapshot: impl Into<Arc<Snapshot>>) {
        let snapshot = snapshot.into();
        assert_eq!(
            snapshot.index.family(),
            table.family(),
            "{table:?} index of the wrong family"
        );
        self.slots[slot_of(table)].store(snapshot);
        self.set_freshness(table, Freshness::Current);
    }

    /// One IPv4 address's row in `table` (cn or en, if asked), its
    /// network and its correction.
    pub fn lookup_one_v4(&self, table: Option<V4Table>, ip: Ipv4Addr) -> Found {
        self.lookup_one(Ask::v4(table), u32::from(ip))
    }

    /// One IPv6 address's row in the v6 table (if asked), its network and
    /// its correction.
    pub fn lookup_one_v6(&self, asks_v6: bool, ip: Ipv6Addr) -> Found {
        self.lookup_one(Ask::v6(asks_v6), u128::from(ip))
    }

    /// Each IPv4 address's row in `table` (cn or en, if asked), its
    /// network and its correction, all from one snapshot of each table.
    pub fn lookup_v4(&self, table: Option<V4Table>, ips: &[Ipv4Addr]) -> Vec<Found> {
        let keys: Vec<u32> = ips.iter().map(|&ip| u32::from(ip)).collect();
        self.lookup_all(Ask::v4(table), &keys)
    }

    /// Each IPv6 address's row in the v6 table (if asked), its network
    /// and its correction.
    pub fn lookup_v6(&self, asks_v6: bool, ips: &[Ipv6Addr]) -> Vec<Found> {
        let keys: Vec<u128> = ips.iter().map(|&ip| u128::from(ip)).collect();
        self.lookup_all(Ask::v6(asks_v6), &keys)
    }

    fn lookup_one<K: Key>(&self, ask: Ask, key: K) -> Found {
        let mut found = Found::default();
        self.lookup_all_into(ask, std::slice::from_ref(&key), |one| found = one);
        found
    }

    fn lookup_all<K: Key>(&self, ask: Ask, keys: &[K]) -> Vec<Found> {
        let mut out = Vec::with_capacity(keys.len());
        self.lookup_all_into(ask, keys, |found| out.push(found));
        out
    }

    /// Each key's row in the place table (if asked) and its network, both
    /// searched together, and its correction, each from one snapshot.
    fn lookup_all_into<K: Key>(&self, ask: Ask, keys: &[K], mut each: impl FnMut(Found)) {
        let places = ask
            .place
            .map(|(table, source)| (self.slots[slot_of(table)].load(), source));
        let networks = self.slots[slot_of(Table::networks_of(K::FAMILY))].load();
        let place_index = places
            .as_ref()
            .and_then(|(snapshot, source)| Some((K::index_of(&snapshot.index)?, *source)));
        let network_index = K::index_of(&networks.index);
        let corrections = self.corrections.load();
        let correction_index = K::corrections_of(&corrections, ask.lang);
        search_together(
            [place_index.map(|(index, _)| index), network_index, correction_index],
            keys,
            |[place, network, correction]| {
                each(Found {
                    place: place.and_then(|i| place_index.map(|(index, source)| index.answer(i, source))),
                    network: network.and_then(|i| network_index?.network_at(i)),
                    correction: correction
                        .and_then(|i| Some(Box::new(correction_index?.answer(i, Source::Correction)))),
                })
            },
        );
    }
}

/// What a lookup asks of the tables: the place table (and the source its
/// answers name), if any, and the language of the corrections it applies.
#[derive(Clone, Copy)]
struct Ask {
    place: Option<(Table, Source)>,
    lang: TableLang,
}

impl Ask {
    fn v4(table: Option<V4Table>) -> Ask {
        Ask {
            place: table.map(|t| (t.into(), t.source())),
            lang: TableLang::of_v4(table),
        }
    }

    fn v6(asks_v6: bool) -> Ask {
        Ask {
            place: asks_v6.then_some((Table::V6, Source::V6)),
            lang: TableLang::of_v6(asks_v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str) -> PlaceFields<'_> {
        PlaceFields {
            country_name: name,
            ..PlaceFields::default()
        }
    }

    fn index(ranges: &[(u32, u32, &str)]) -> RangeIndex<u32> {
        let mut builder = Builder::default();
        for &(start, end, name) in ranges {
            builder.push_fields(start, end, fields(name)).unwrap();
        }
        builder.finish()
    }

    fn name_at(index: &RangeIndex<u32>, key: u32) -> Option<&str> {
        index.get(key).map(|(_, _, p)| p.country_name())
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
    fn a_network_table_knows_where_each_place_lies_and_a_place_table_does_not() {
        let mut networks = Builder::default();
        let mut places = Builder::default();
        for i in 0..1000u32 {
            let (asn, org) = ((i % 37).to_string(), format!("AS {}", i % 37));
            let network = Place::from_columns([&asn, &org, "", "", "", "", "", ""]);
            networks.push_place(i * 10, i * 10 + 5, &network).unwrap();
            places.push_fields(i * 10, i * 10 + 5, fields(&org)).unwrap();
        }
        let (networks, places) = (networks.finish(), places.finish());
        assert_eq!(networks.near.len(), 1000);
        for (entry, &near) in networks.entries.iter().zip(networks.near.iter()) {
            let at = networks.first_place.wrapping_add_signed(near as isize * 8);
            assert_eq!(at, networks.places[entry.place as usize].address());
        }
        assert!(places.near.is_empty());
    }

    /// `index`'s places and ranges, to compare two indexes whole.
    fn contents(index: &RangeIndex<u32>) -> (Vec<Place>, Vec<(u32, u32, u32)>) {
        let (places, ranges) = index.parts();
        (places.to_vec(), ranges.collect())
    }

    #[test]
    fn applying_changes_gives_the_index_built_from_scratch() {
        let names = ["a", "b", "c", "d", "e"];
        let mut x = 7u64;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for round in 0..50 {
            // Ranges of 10 addresses every 20, then some dropped, split,
            // renamed or added in the gaps.
            let old: Vec<(u32, u32, &str)> = (0..200)
                .map(|i| (i * 20, i * 20 + 9, names[next(5) as usize]))
                .collect();
            let mut new = Vec::new();
            for &(start, end, name) in &old {
                match next(10) {
                    0 => {}
                    1 => new.extend([(start, start + 4, name), (start + 5, end, names[next(5) as usize])]),
                    2 => new.push((start, end, names[next(5) as usize])),
                    3 => new.extend([(start, end, name), (end + 3, end + 5, names[next(5) as usize])]),
                    _ => new.push((start, end, name)),
                }
            }
            let built = |list: &[(u32, u32, &str)]| -> Vec<(u32, u32, Place)> {
                list.iter().map(|&(s, e, n)| (s, e, Place::new(fields(n)))).collect()
            };
            let (old_rows, new_rows) = (built(&old), built(&new));
            let removed: Vec<_> = old_rows.iter().filter(|r| !new_rows.contains(r)).cloned().collect();
            let added: Vec<_> = new_rows.iter().filter(|r| !old_rows.contains(r)).cloned().collect();
            let changed = index(&old).with_changes(&removed, &added).unwrap();
            assert_eq!(contents(&changed), contents(&index(&new)), "round {round}");
        }
    }

    #[test]
    fn changes_that_do_not_fit_are_refused() {
        let old = index(&[(0, 9, "a"), (20, 29, "b")]);
        let row = |s, e, n| (s, e, Place::new(fields(n)));
        let not_fitting = [
            // Removing a range not held, or held with another place or end.
            (vec![row(10, 15, "a")], vec![]),
            (vec![row(20, 29, "a")], vec![]),
            (vec![row(20, 25, "b")], vec![]),
            (vec![row(40, 49, "a")], vec![]),
            // Adding over a range that stays.
            (vec![], vec![row(5, 12, "c")]),
            (vec![], vec![row(20, 29, "c")]),
        ];
        for (removed, added) in not_fitting {
            assert!(old.with_changes(&removed, &added).is_err(), "{removed:?} {added:?}");
        }
        let replaced = old.with_changes(&[row(20, 29, "b")], &[row(20, 29, "c")]).unwrap();
        assert_eq!(name_at(&replaced, 25), Some("c"));
    }

    #[test]
    fn a_batch_answers_as_lookups_one_by_one() {
        let index = index(&[(0, 9, "a"), (20, 0x0001_0005, "b"), (0x0003_0000, 0x0003_0000, "c")]);
        let keys: Vec<u32> = (0..100u32).map(|i| i.wrapping_mul(0x0000_9e37) % 0x0004_0000).collect();
        let one_by_one: Vec<_> = keys.iter().map(|&k| index.locate(k, Source::Cn)).collect();
        assert_eq!(index.locate_all(&keys, Source::Cn), one_by_one);
        assert!(one_by_one.iter().any(Option::is_some) && one_by_one.iter().any(Option::is_none));
    }

    #[test]
    fn a_sparse_index_finds_what_the_slow_search_finds() {
        let mut x = 11u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 16
        };
        for round in 0..20 {
            // A few hundred ranges, some tiny, some spanning many /20s,
            // some across a 64-block boundary of the coverage map.
            let mut starts: Vec<u32> = (0..300).map(|_| next() as u32).collect();
            starts.sort_unstable();
            starts.dedup();
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for pair in starts.windows(2) {
                let room = pair[1] - pair[0] - 1;
                let len = match next() % 3 {
                    0 => 0,
                    1 => (next() as u32) % 4096,
                    _ => (next() as u32) % (1 << 26),
                };
                ranges.push((pair[0], pair[0] + len.min(room)));
            }
            let mut builder = Builder::default();
            for &(start, end) in &ranges {
                builder.push_fields(start, end, fields("x")).unwrap();
            }
            let index = builder.finish();
            assert!(index.coverage.is_some(), "a sparse index has a coverage map");
            let mut keys: Vec<u32> = (0..2000).map(|_| next() as u32).collect();
            for &(start, end) in &ranges {
                keys.extend([start, end, start.wrapping_sub(1), end.wrapping_add(1)]);
            }
            for key in keys {
                let found = index.get(key).map(|(s, e, _)| (s, e));
                assert_eq!(found, naive(&ranges, key), "round {round}, key {key:#x}");
            }
        }
    }

    /// The greatest start at or below `key`, if its end reaches `key`,
    /// found the slow way.
    fn naive<K: Key>(ranges: &[(K, K)], key: K) -> Option<(K, K)> {
        ranges.iter().rev().find(|r| r.0 <= key).filter(|r| r.1 >= key).copied()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any table (ranges clustered, so that some slots are crowded and
        /// some sub-slots long), any addresses: one by one and in batches,
        /// the index finds what the slow search finds.
        #[test]
        fn the_index_finds_what_a_plain_search_finds(
            cuts in proptest::collection::btree_set(
                proptest::prop_oneof![
                    0x0a0b_0000u32..0x0a0b_4000,
                    0x0a0c_0000u32..0x0a0c_0100,
                    proptest::num::u32::ANY,
                ],
                2..3000,
            ),
            gaps in proptest::collection::vec(proptest::bool::ANY, 1500),
            keys in proptest::collection::vec(
                proptest::prop_oneof![0x0a0b_0000u32..0x0a0c_0200, proptest::num::u32::ANY],
                1..400,
            ),
        ) {
            // Consecutive cuts bound a range; a pair is left a gap where
            // `gaps` says so.
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut ranges = Vec::new();
            for (i, pair) in cuts.windows(2).enumerate() {
                if !gaps[i % gaps.len()] && pair[1] > pair[0] {
                    ranges.push((pair[0], pair[1] - 1));
                }
            }
            let mut builder = Builder::default();
            for &(start, end) in &ranges {
                builder.push_fields(start, end, fields("x")).unwrap();
            }
            let index = builder.finish();
            let mut probes = keys.clone();
            probes.extend(ranges.iter().flat_map(|&(start, end)| [start, end, end.wrapping_add(1)]).take(600));
            for &key in &probes {
                proptest::prop_assert_eq!(index.get(key).map(|(s, e, _)| (s, e)), naive(&ranges, key), "key {:#x}", key);
            }
            let batch = index.locate_all(&probes, Source::Cn);
            for (&key, found) in probes.iter().zip(&batch) {
                let v4 = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => u32::from(v4),
                    IpAddr::V6(_) => unreachable!("a v4 index"),
                };
                let found = found.as_ref().map(|l| (v4(l.start), v4(l.end)));
                proptest::prop_assert_eq!(found, naive(&ranges, key), "batch, key {:#x}", key);
            }
        }
    }

    /// `n` ranges, each followed by a gap, with bounds `at(0)`, `at(1)`, …
    fn crowded_ranges<K: Key>(at: impl Fn(u64) -> K, n: u64) -> Vec<(K, K)> {
        (0..n).map(|i| (at(2 * i), at(2 * i + 1))).collect()
    }

    #[test]
    fn crowded_slots_answer_as_a_plain_search() {
        // 3,000 ranges in one /16, and 3,000 in one v6 /16, with gaps.
        let v4 = crowded_ranges(|i| 0x0a0b_0000 + (i as u32) * 7, 3000);
        let v6 = crowded_ranges(|i| (0x2a01_u128 << 112) + u128::from(i) * (1 << 99), 3000);
        let mut b4 = Builder::default();
        for &(start, end) in &v4 {
            b4.push_fields(start, end, fields("x")).unwrap();
        }
        let mut b6 = Builder::default();
        for &(start, end) in &v6 {
            b6.push_fields(start, end, fields("x")).unwrap();
        }
        let (i4, i6) = (b4.finish(), b6.finish());
        assert!(i4.starts.crowded_slots() > 0 && i6.starts.crowded_slots() > 0);
        let mut x = 0x1234_5678_9abc_def0_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k4 = 0x0a0a_0000 + (x as u32 % 0x0003_0000);
            assert_eq!(i4.get(k4).map(|(s, e, _)| (s, e)), naive(&v4, k4), "{k4:#x}");
            let k6 = (0x2a00_u128 << 112) + (u128::from(x) << 64 | u128::from(x.rotate_left(7))) % (3 << 112);
            assert_eq!(i6.get(k6).map(|(s, e, _)| (s, e)), naive(&v6, k6), "{k6:#x}");
        }
        for &(start, end) in v4.iter().step_by(97) {
            assert_eq!(i4.get(start).map(|(s, e, _)| (s, e)), Some((start, end)));
            assert_eq!(i4.get(end + 1), None);
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let index = index(&[]);
        assert_eq!(name_at(&index, 0), None);
        assert_eq!(name_at(&index, u32::MAX), None);
        let v6: RangeIndex<u128> = Builder::default().finish();
        assert!(v6.get(u128::MAX).is_none());
    }

    #[test]
    fn equal_places_are_stored_once() {
        let index = index(&[(0, 1, "a"), (5, 6, "b"), (8, 9, "a")]);
        assert_eq!((index.len(), index.places()), (3, 2));
        assert_eq!(index.get(0).unwrap().2, index.get(9).unwrap().2);
    }

    #[test]
    fn unordered_duplicate_and_reversed_ranges_are_refused() {
        let mut builder = Builder::default();
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
        assert_eq!(
            builder.push_fields(20, 25, fields("b")),
            Err(IndexError::Overlap {
                first: "0.0.0.10 - 0.0.0.20".into(),
                second: "0.0.0.20 - 0.0.0.25".into()
            })
        );
        builder.push_fields(21, 25, fields("b")).unwrap();
    }

    #[test]
    fn ipv6_keys_use_their_top_bits() {
        let mut builder = Builder::default();
        let start = u128::from("240e::".parse::<Ipv6Addr>().unwrap());
        let end = u128::from("240e:fff:ffff:ffff:ffff:ffff:ffff:ffff".parse::<Ipv6Addr>().unwrap());
        builder.push_fields(start, end, fields("cn")).unwrap();
        builder.push_fields(u128::MAX, u128::MAX, fields("last")).unwrap();
        let index = builder.finish();
        let found = index.locate(start + 12345, Source::V6).unwrap();
        assert_eq!(found.place.country_name(), "cn");
        assert_eq!(found.start.to_string(), "240e::");
        assert!(index.get(end + 1).is_none());
        assert!(index.get(0).is_none());
        assert_eq!(index.get(u128::MAX).unwrap().2.country_name(), "last");
    }

    #[test]
    fn a_batch_reads_one_snapshot_and_a_replacement_is_seen_next() {
        let snapshot = |name: &str| Snapshot {
            index: TableIndex::V4(index(&[(0, u32::MAX, name)])),
            version: Version::Absent,
            data_time: None,
        };
        let tables = Tables::new(vec![(Table::Cn, snapshot("old"))]);
        let ip = Ipv4Addr::new(1, 2, 3, 4);
        let name = |tables: &Tables| {
            tables.lookup_v4(Some(V4Table::Cn), &[ip])[0]
                .place
                .as_ref()
                .unwrap()
                .place
                .country_name()
                .to_owned()
        };
        assert_eq!(name(&tables), "old");
        let held = tables.snapshot(Table::Cn);
        tables.replace(Table::Cn, snapshot("new"));
        assert_eq!(name(&tables), "new");
        // A reader holding the old snapshot still sees it whole.
        assert!(matches!(&held.index, TableIndex::V4(i) if i.get(7).unwrap().2.country_name() == "old"));
        assert_eq!(tables.lookup_v4(Some(V4Table::En), &[ip])[0], Found::default());
        assert_eq!(tables.lookup_v6(true, &[Ipv6Addr::LOCALHOST])[0], Found::default());
    }
}
