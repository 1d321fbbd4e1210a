//! The MaxMind GeoIP2/GeoLite2 City fallback: a memory-mapped reader that
//! decodes only what an answer needs, and [`MaxMind`], the live handle
//! that swaps in a replaced file without a restart.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use ipnetwork::IpNetwork;
use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tracing::{info, warn};

use crate::data::index::Key;
use crate::data::starts::Starts;
use crate::domain::{Lang, Located, Place, PlaceFields, Source};
use crate::memory::prefetch;

#[derive(Debug, thiserror::Error)]
pub enum MmdbError {
    #[error("cannot open MaxMind database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: MaxMindDbError,
    },
    #[error("MaxMind database {path} is a {kind} database, not a City database")]
    NotCity { path: String, kind: String },
    #[error("MaxMind lookup failed: {0}")]
    Lookup(#[from] MaxMindDbError),
    #[error("MaxMind networks cannot be held as a table: {0}")]
    Networks(&'static str),
}

/// The bytes of a database: a mapped file, or one compiled into the binary.
/// The mapping is shared with [`GeoDb`], which gives back its tree's pages
/// once the tables are built.
pub enum Bytes {
    Mapped(Arc<memmap2::Mmap>),
    Static(&'static [u8]),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Static(bytes) => bytes,
        }
    }
}

/// An open City database.
pub struct GeoDb {
    reader: Reader<Bytes>,
    /// The file's path, or a name for built-in data.
    label: String,
    places: PlaceCache,
    /// Every network of the file, once built.
    networks: OnceLock<NetworkTables>,
    /// The file's mapping, if it is one.
    mapped: Option<Arc<memmap2::Mmap>>,
}

/// The file's networks of one family flattened into one sorted table: where
/// each starts and the record it points to, gaps included, so that a
/// network ends where the next begins. A fallback then finds its network
/// with a short search in memory instead of a walk down the file's tree (a
/// cache miss a level, the cost of a lookup), and its place in the place
/// cache, in any language; a place not cached yet comes from the walk,
/// which caches it. An IPv4 network costs eight bytes (its record, its
/// start's low 16 bits for the search and its top 16 bits), an IPv6 one
/// twelve (see [`Stored`]); with the directories, 25 MB for GeoLite2
/// City's three million IPv4 networks and 7 MB for its half million IPv6
/// ones, gaps included.
struct Networks<K: Stored> {
    starts: Starts<K>,
    networks: Box<[Network<K::Start>]>,
}

/// Packed to 2 bytes, so that a row takes 6 bytes (IPv4) or 12 (IPv6),
/// not 8 or 16.
#[derive(Clone, Copy)]
#[repr(C, packed(2))]
struct Network<S> {
    start: S,
    /// The record's offset in the data section, [`NO_RECORD`] or [`IN_TREE`].
    record: u32,
}

/// The file's networks of both families, once built.
struct NetworkTables {
    v4: Networks<u32>,
    /// For an IPv4-only file, one row leaving every address to the tree.
    v6: Networks<u128>,
}

/// A /16 of more networks than this gets a second-level table. At the
/// range index's 48, half of GeoLite2's IPv4 /16s had one, doubling the
/// table (24 -> 49 MB, with 8-byte rows); at 256 it is 25 MB, and an IPv4
/// bucket of up to 256 is searched in its low keys (counted up to 64,
/// halved above).
const CROWDED: u32 = 256;

/// A gap between networks: addresses the file holds no record for.
const NO_RECORD: u32 = u32::MAX;

/// IPv6 addresses the table leaves to the tree walk: where the tree keeps
/// its IPv4 networks (`::/96`) or points to them again (its aliases, such
/// as `::ffff:0:0/96`, 6to4 and Teredo), which would take millions of
/// rows to flatten.
const IN_TREE: u32 = u32::MAX - 1;

/// How a table keeps its starts. An IPv4 table keeps their top 16 bits
/// beside the record: the search's low keys hold the rest. An IPv6 table
/// keeps their top 64 bits: a network the file lists down to a /64 or
/// shorter starts and ends on a /64's edges, and a /64 that holds longer
/// networks (a fifth of GeoLite2's IPv6 ones are) is left to the tree walk
/// whole ([`by_64`]).
trait Stored: Key {
    type Start: Copy;
    fn stored(self) -> Self::Start;
    /// The start again, from what a row keeps and its low key.
    fn full(start: Self::Start, low: u16) -> Self;
}

impl Stored for u32 {
    type Start = u16;

    fn stored(self) -> u16 {
        (self >> 16) as u16
    }

    fn full(start: u16, low: u16) -> u32 {
        u32::from(start) << 16 | u32::from(low)
    }
}

impl Stored for u128 {
    type Start = u64;

    fn stored(self) -> u64 {
        (self >> 64) as u64
    }

    /// IPv6 has no low keys.
    fn full(start: u64, _: u16) -> u128 {
        u128::from(start) << 64
    }
}

impl<K: Stored> Networks<K> {
    /// The table of `networks`, each row keeping its start as
    /// [`Stored::stored`] says.
    fn new(networks: Vec<Network<K>>) -> Networks<K> {
        Networks {
            starts: Starts::new(networks.len(), |i| networks[i].start, CROWDED),
            networks: networks
                .into_iter()
                .map(|n| Network {
                    start: n.start.stored(),
                    record: n.record,
                })
                .collect(),
        }
    }

    /// Row `i`'s start.
    #[inline]
    fn start(&self, i: usize) -> K {
        K::full(self.networks[i].start, self.starts.low_key(i))
    }

    /// The bucket of networks sharing `ip`'s top bits, asked for (for
    /// IPv6, whose buckets are searched in the networks, its middle one).
    #[inline]
    fn bucket(&self, ip: K) -> (usize, usize) {
        let (lo, hi) = self.starts.bucket(ip);
        if !K::LOW_KEYS {
            prefetch(self.networks.as_ptr().wrapping_add((lo + hi) / 2));
        }
        (lo, hi)
    }

    /// The number of the network holding `ip`, given its bucket; the
    /// network asked for.
    #[inline]
    fn rank(&self, ip: K, (lo, hi): (usize, usize)) -> usize {
        let below = self.starts.rank(ip, (lo, hi), || {
            // IPv6 only: IPv4 buckets are searched in their low keys.
            self.networks[lo..hi].partition_point(|n| K::full(n.start, 0) <= ip)
        });
        // The table starts at the family's first address, so some network
        // starts at or below `ip`.
        let i = below - 1;
        prefetch(&self.networks[i]);
        i
    }

    /// Network `i`'s first and last address and record.
    #[inline]
    fn at(&self, i: usize) -> (IpAddr, IpAddr, u32) {
        let end = if i + 1 < self.networks.len() {
            self.start(i + 1).before()
        } else {
            K::MAX
        };
        (self.start(i).ip(), end.ip(), self.networks[i].record)
    }

    fn heap_bytes(&self) -> usize {
        self.starts.heap_bytes() + self.networks.len() * std::mem::size_of::<Network<K::Start>>()
    }
}

impl NetworkTables {
    /// The network holding `ip`.
    #[inline]
    fn find(&self, ip: IpAddr) -> (IpAddr, IpAddr, u32) {
        self.at(ip, self.rank(ip, self.bucket(ip)))
    }

    /// A search's first step: `ip`'s bucket, asked for.
    #[inline]
    fn bucket(&self, ip: IpAddr) -> (usize, usize) {
        match ip {
            IpAddr::V4(v4) => self.v4.bucket(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.bucket(u128::from(v6)),
        }
    }

    /// A search's second step: the network holding `ip` in its bucket,
    /// asked for.
    #[inline]
    fn rank(&self, ip: IpAddr, bucket: (usize, usize)) -> usize {
        match ip {
            IpAddr::V4(v4) => self.v4.rank(u32::from(v4), bucket),
            IpAddr::V6(v6) => self.v6.rank(u128::from(v6), bucket),
        }
    }

    /// A search's end: network `i` of `ip`'s table, as `(start, end, record)`.
    #[inline]
    fn at(&self, ip: IpAddr, i: usize) -> (IpAddr, IpAddr, u32) {
        match ip {
            IpAddr::V4(_) => self.v4.at(i),
            IpAddr::V6(_) => self.v6.at(i),
        }
    }
}

fn v4_bounds(network: IpNetwork) -> Option<(u32, u32)> {
    match network {
        IpNetwork::V4(net) => Some((net.network().into(), net.broadcast().into())),
        IpNetwork::V6(_) => None,
    }
}

fn v6_bounds(network: IpNetwork) -> Option<(u128, u128)> {
    match network {
        IpNetwork::V6(net) => Some((net.network().into(), net.broadcast().into())),
        IpNetwork::V4(_) => None,
    }
}

/// Collects a table's rows from the file's networks (`(start, end,
/// record)` in address order, those of the other family left out),
/// `gap` filling the space between them.
fn flatten<K: Key>(
    found: impl Iterator<Item = Result<(K, K, u32), MmdbError>>,
    mut gap: impl FnMut(K, K, &mut Vec<Network<K>>) -> Result<(), MmdbError>,
) -> Result<Vec<Network<K>>, MmdbError> {
    let mut networks: Vec<Network<K>> = Vec::new();
    // The first address no network read so far holds.
    let mut next = Some(K::MIN);
    for found in found {
        let (start, end, record) = found?;
        match next {
            Some(next) if start > next => gap(next, start.before(), &mut networks)?,
            Some(next) if start == next => {}
            _ => return Err(MmdbError::Networks("networks out of order")),
        }
        networks.push(Network { start, record });
        next = (end < K::MAX).then(|| end.after());
    }
    if let Some(next) = next {
        gap(next, K::MAX, &mut networks)?;
    }
    Ok(networks)
}

/// IPv6 rows whose starts are all a /64's first address: each /64 in
/// which a row starts elsewhere (it holds networks longer than /64, or a
/// gap between them) becomes one [`IN_TREE`] row, and the row that covered
/// its end goes on from the next /64 (only a gap or [`IN_TREE`] can: a
/// network that starts inside a /64 ends inside it).
fn by_64(rows: &[Network<u128>]) -> Vec<Network<u128>> {
    let slash_64 = |start: u128| start >> 64;
    let mut out: Vec<Network<u128>> = Vec::with_capacity(rows.len());
    let mut push = |start: u128, record: u32| match out.last() {
        Some(last) if last.record == record && record >= IN_TREE => {}
        _ => out.push(Network { start, record }),
    };
    let mut i = 0;
    while i < rows.len() {
        let (start, record) = (rows[i].start, rows[i].record);
        let same = rows[i..]
            .iter()
            .take_while(|n| slash_64(n.start) == slash_64(start))
            .count();
        if same == 1 && start as u64 == 0 {
            push(start, record);
        } else {
            push(slash_64(start) << 64, IN_TREE);
            // The next /64, unless it is the next row's own.
            let next = slash_64(start) + 1;
            let covered = rows.get(i + same).is_none_or(|n| slash_64(n.start) > next);
            if next <= u64::MAX as u128 && covered {
                push(next << 64, rows[i + same - 1].record);
            }
        }
        i += same;
    }
    out
}

impl GeoDb {
    /// Maps `path` and checks that it is a City-type database, so that a
    /// wrong file fails at start-up rather than answering every lookup empty.
    /// The file must be replaced by renaming a new one over it (as
    /// geoipupdate does), never rewritten in place while mapped.
    pub fn open(path: &Path) -> Result<GeoDb, MmdbError> {
        let label = path.display().to_string();
        let open_error = |source| MmdbError::Open {
            path: label.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| open_error(e.into()))?;
        // SAFETY: the mapping stays valid while the file is replaced by a
        // rename (the old inode lives on); rewriting the file in place is
        // documented as unsupported.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| open_error(e.into()))?);
        GeoDb::from_bytes(Bytes::Mapped(map), label)
    }

    /// A database compiled into the binary.
    pub fn from_static(bytes: &'static [u8], label: &str) -> Result<GeoDb, MmdbError> {
        GeoDb::from_bytes(Bytes::Static(bytes), label.to_owned())
    }

    fn from_bytes(bytes: Bytes, label: String) -> Result<GeoDb, MmdbError> {
        let mapped = match &bytes {
            Bytes::Mapped(map) => Some(map.clone()),
            Bytes::Static(_) => None,
        };
        let reader = Reader::from_source(bytes).map_err(|source| MmdbError::Open {
            path: label.clone(),
            source,
        })?;
        let kind = &reader.metadata().database_type;
        if !kind.contains("City") {
            return Err(MmdbError::NotCity {
                path: label,
                kind: kind.clone(),
            });
        }
        Ok(GeoDb {
            reader,
            label,
            places: PlaceCache::new(),
            networks: OnceLock::new(),
            mapped,
        })
    }

    /// Builds the tables of networks (0.4 s of CPU for GeoLite2 City: call
    /// it off the request path); lookups use them from then on.
    pub fn build_networks(&self) -> Result<(), MmdbError> {
        let no_record = |start, _, out: &mut Vec<_>| {
            out.push(Network {
                start,
                record: NO_RECORD,
            });
            Ok(())
        };
        let v4 = flatten(self.networks_in("0.0.0.0/0", v4_bounds)?, no_record)?;
        let v6 = match self.reader.metadata().ip_version {
            6 => by_64(&flatten(self.networks_in("::/0", v6_bounds)?, |from, to, out| {
                self.fill_v6_gap(from, to, out)
            })?),
            _ => vec![Network {
                start: 0,
                record: IN_TREE,
            }],
        };
        let _ = self.networks.set(NetworkTables {
            v4: Networks::new(v4),
            v6: Networks::new(v6),
        });
        self.release_tree();
        Ok(())
    }

    /// Gives back the pages of the file's search tree that building the
    /// tables read (all of it, 26 MB of GeoLite2 City), which the
    /// tables now stand in for: only the few addresses left to the tree
    /// walk read it again, faulting their pages back in from the page
    /// cache. Without this a server holds the whole tree resident.
    fn release_tree(&self) {
        let Some(map) = &self.mapped else {
            return;
        };
        // SAFETY: the mapping is a read-only shared mapping of a file that
        // is never rewritten in place (see `open`), so dropping its pages
        // loses nothing: a later read faults the same bytes back in.
        if let Err(err) = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, self.tree_bytes().min(map.len()))
        } {
            warn!(mmdb = %self.label, error = %err, "cannot give back the pages of MaxMind's tree");
        }
    }

    /// The size of the file's search tree, at its start: two records of
    /// `record_size` bits a node.
    fn tree_bytes(&self) -> usize {
        let metadata = self.reader.metadata();
        metadata.node_count as usize * usize::from(metadata.record_size) / 4
    }

    /// The file's networks within `all` whose bounds `bounds` gives (those
    /// of the family asked for), as `(start, end, record)`, in address order.
    fn networks_in<K: Key>(
        &self,
        all: &str,
        bounds: fn(IpNetwork) -> Option<(K, K)>,
    ) -> Result<impl Iterator<Item = Result<(K, K, u32), MmdbError>> + '_, MmdbError> {
        let all: IpNetwork = all.parse().expect("a valid network");
        let found = self.reader.within(all, WithinOptions::default())?;
        Ok(found.filter_map(move |found| {
            let row = || {
                let found = found?;
                let Some((start, end)) = bounds(found.network()?) else {
                    return Ok(None);
                };
                match found.offset().map(u32::try_from) {
                    None => Ok(Some((start, end, NO_RECORD))),
                    Some(Ok(record)) if record < IN_TREE => Ok(Some((start, end, record))),
                    Some(_) => Err(MmdbError::Networks("a record lies beyond 4 GiB")),
                }
            };
            row().transpose()
        }))
    }

    /// Rows for the IPv6 addresses `from..=to` that no network the file
    /// lists holds: where the tree holds nothing, [`NO_RECORD`]; from the
    /// first address it answers (an alias of its IPv4 networks, which the
    /// listing leaves out), [`IN_TREE`] to the gap's end.
    fn fill_v6_gap(&self, mut from: u128, to: u128, out: &mut Vec<Network<u128>>) -> Result<(), MmdbError> {
        loop {
            let result = self.reader.lookup(IpAddr::V6(from.into()))?;
            let empty_to = match (result.offset(), result.network()?) {
                (None, IpNetwork::V6(empty)) => u128::from(empty.broadcast()).min(to),
                _ => {
                    out.push(Network {
                        start: from,
                        record: IN_TREE,
                    });
                    return Ok(());
                }
            };
            if out.last().is_none_or(|last| last.record != NO_RECORD) {
                out.push(Network {
                    start: from,
                    record: NO_RECORD,
                });
            }
            if empty_to == to {
                return Ok(());
            }
            from = empty_to + 1;
        }
    }

    /// Bytes the table of networks holds, once built.
    pub fn networks_bytes(&self) -> Option<usize> {
        let networks = self.networks.get()?;
        Some(networks.v4.heap_bytes() + networks.v6.heap_bytes())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `database_type` and build time (UTC) for the log.
    /// When the database was built.
    pub fn built(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.reader.metadata().build_epoch)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} built {}",
            self.reader.metadata().database_type,
            humantime::format_rfc3339_seconds(self.built())
        )
    }

    /// Locates `ip` with names in `lang`, falling back to English where
    /// that language is missing. A record with neither `country` nor
    /// `registered_country` is no answer.
    pub fn lookup(&self, ip: IpAddr, lang: Lang) -> Result<Option<Located>, MmdbError> {
        match self.networks.get() {
            Some(networks) => self.answer(ip, networks.find(ip), lang),
            None => self.lookup_in_tree(ip, lang),
        }
    }

    /// [`GeoDb::lookup`] for each of `ips`, in order. The searches of the
    /// network tables go in chunks, each step started for all of a
    /// chunk's addresses before the next, so that their misses overlap.
    pub fn lookup_all(&self, ips: &[IpAddr], lang: Lang) -> Vec<Result<Option<Located>, MmdbError>> {
        const CHUNK: usize = 16;
        let Some(networks) = self.networks.get() else {
            return ips.iter().map(|&ip| self.lookup_in_tree(ip, lang)).collect();
        };
        let mut out = Vec::with_capacity(ips.len());
        let (mut buckets, mut found) = ([(0, 0); CHUNK], [0; CHUNK]);
        for chunk in ips.chunks(CHUNK) {
            for (bucket, &ip) in buckets.iter_mut().zip(chunk) {
                *bucket = networks.bucket(ip);
            }
            for ((found, &bucket), &ip) in found.iter_mut().zip(&buckets).zip(chunk) {
                *found = networks.rank(ip, bucket);
            }
            for (&found, &ip) in found.iter().zip(chunk) {
                out.push(self.answer(ip, networks.at(ip, found), lang));
            }
        }
        out
    }

    /// The answer for `ip` in network `(start, end, record)` of a table,
    /// from the place cache, or else (a place not cached yet, or an
    /// address the table leaves to the tree) from a walk of the tree.
    fn answer(
        &self,
        ip: IpAddr,
        (start, end, record): (IpAddr, IpAddr, u32),
        lang: Lang,
    ) -> Result<Option<Located>, MmdbError> {
        match record {
            NO_RECORD => return Ok(None),
            IN_TREE => return self.lookup_in_tree(ip, lang),
            _ => {}
        }
        match self.places.get(record as usize, lang) {
            Some(place) => Ok(place.map(|place| Located {
                place,
                start,
                end,
                source: Source::MaxMind,
                network: None,
                corrected: false,
            })),
            None => self.lookup_in_tree(ip, lang),
        }
    }

    /// [`GeoDb::lookup`] by walking the file's search tree.
    fn lookup_in_tree(&self, ip: IpAddr, lang: Lang) -> Result<Option<Located>, MmdbError> {
        let result = self.reader.lookup(ip)?;
        let Some(offset) = result.offset() else {
            return Ok(None);
        };
        let place = match self.places.get(offset, lang) {
            Some(place) => place,
            None => {
                let place = decode_place(&result, lang)?;
                self.places.insert(offset, lang, place.clone());
                place
            }
        };
        let Some(place) = place else {
            return Ok(None);
        };
        let network = result.network()?;
        Ok(Some(Located {
            place,
            start: network.network(),
            end: network.broadcast(),
            source: Source::MaxMind,
            network: None,
            corrected: false,
        }))
    }
}

/// Places already decoded, by record and language. Decoding a record
/// follows pointers all over the file and costs a microsecond or more; the
/// tree walk before it a tenth of that. Popular records are asked for again
/// and again, so each is decoded once while it stays in the cache.
struct PlaceCache {
    shards: Box<[Mutex<Shard>]>,
}

/// Places by record and language key; `None` for a record that names no
/// country, which is no answer either. Keys are hashed by a multiply, not
/// SipHash: they are offsets in a trusted file, and every fallback asks.
type Shard = HashTable<(u64, Option<Place>)>;

/// Shards, so that the workers seldom wait for each other.
const CACHE_SHARDS: usize = 16;
/// Places per shard; a full shard starts again empty. In all some 260,000
/// places, about 30 MB at most: more than GeoLite2 City's distinct places
/// (117,330 in English), so that a warm cache answers nearly every lookup.
const CACHE_SHARD_PLACES: usize = 16_384;

impl PlaceCache {
    fn new() -> PlaceCache {
        PlaceCache {
            shards: (0..CACHE_SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }

    /// The key of a record's place in a language, its hash and its shard.
    fn key(offset: usize, lang: Lang) -> (u64, u64, usize) {
        let key = (offset as u64) << 3 | lang as u64;
        let hash = Self::hash(key);
        (key, hash, (hash >> 32) as usize % CACHE_SHARDS)
    }

    /// Offsets are spread but aligned: mixed so that low bits and high
    /// bits both vary.
    fn hash(key: u64) -> u64 {
        let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        mixed ^ mixed >> 29
    }

    fn get(&self, offset: usize, lang: Lang) -> Option<Option<Place>> {
        let (key, hash, shard) = PlaceCache::key(offset, lang);
        let shard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.find(hash, |(k, _)| *k == key).map(|(_, place)| place.clone())
    }

    fn insert(&self, offset: usize, lang: Lang, place: Option<Place>) {
        let (key, hash, shard) = PlaceCache::key(offset, lang);
        let mut shard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.len() >= CACHE_SHARD_PLACES {
            shard.clear();
        }
        match shard.entry(hash, |(k, _)| *k == key, |(k, _)| Self::hash(*k)) {
            Entry::Occupied(mut held) => held.get_mut().1 = place,
            Entry::Vacant(room) => {
                room.insert((key, place));
            }
        }
    }
}

/// The service's view of the record behind `result`, names in `lang` with
/// English fallback; `None` for no record or one with neither `country` nor
/// `registered_country`. Shared by lookups and the mmdb importer, so that
/// an imported table says what a MaxMind answer says.
pub fn decode_place<S: AsRef<[u8]>>(result: &LookupResult<'_, S>, lang: Lang) -> Result<Option<Place>, MaxMindDbError> {
    fn decode<L: Language, S: AsRef<[u8]>>(result: &LookupResult<'_, S>) -> Result<Option<Place>, MaxMindDbError> {
        Ok(result.decode::<City<L>>()?.and_then(|city| city.place()))
    }
    match lang {
        Lang::ZhCn => decode::<language::ZhCn, S>(result),
        Lang::En => decode::<language::En, S>(result),
        Lang::De => decode::<language::De, S>(result),
        Lang::Es => decode::<language::Es, S>(result),
        Lang::Fr => decode::<language::Fr, S>(result),
        Lang::Ja => decode::<language::Ja, S>(result),
        Lang::PtBr => decode::<language::PtBr, S>(result),
        Lang::Ru => decode::<language::Ru, S>(result),
    }
}

/// A `names` key, fixed at compile time so that decoding keeps one
/// language and English and skips the rest without reading them.
trait Language {
    const KEY: &'static str;
}

mod language {
    macro_rules! languages {
        ($($name:ident = $key:literal),*) => {$(
            pub struct $name;
            impl super::Language for $name {
                const KEY: &'static str = $key;
            }
        )*};
    }
    languages!(
        ZhCn = "zh-CN",
        En = "en",
        De = "de",
        Es = "es",
        Fr = "fr",
        Ja = "ja",
        PtBr = "pt-BR",
        Ru = "ru"
    );
}

/// The parts of a City record an answer uses; everything else (location,
/// postal code, continent, traits) is skipped, and all text is borrowed.
#[derive(Deserialize)]
#[serde(bound = "L: Language")]
struct City<'a, L> {
    #[serde(borrow, default)]
    country: Area<'a, L>,
    #[serde(borrow, default)]
    registered_country: Area<'a, L>,
    #[serde(borrow, default)]
    subdivisions: First<Area<'a, L>>,
    #[serde(borrow, default)]
    city: Area<'a, L>,
}

#[derive(Deserialize)]
#[serde(bound = "L: Language")]
struct Area<'a, L> {
    #[serde(default)]
    iso_code: Option<&'a str>,
    #[serde(default)]
    geoname_id: Option<u32>,
    #[serde(borrow, default)]
    names: Names<'a, L>,
}

impl<L> Default for Area<'_, L> {
    fn default() -> Self {
        Area {
            iso_code: None,
            geoname_id: None,
            names: Names::default(),
        }
    }
}

impl<L> Area<'_, L> {
    fn is_empty(&self) -> bool {
        self.iso_code.is_none() && self.geoname_id.is_none() && !self.names.any
    }

    fn name(&self) -> &str {
        self.names.wanted.or(self.names.english).unwrap_or_default()
    }
}

impl<L: Language> City<'_, L> {
    fn place(&self) -> Option<Place> {
        let country = if self.country.is_empty() {
            &self.registered_country
        } else {
            &self.country
        };
        if country.is_empty() {
            return None;
        }
        let province = self.subdivisions.0.as_ref();
        let city_code = self.city.geoname_id.map(|id| id.to_string()).unwrap_or_default();
        Some(Place::new(PlaceFields {
            country_code: country.iso_code.unwrap_or_default(),
            country_name: country.name(),
            province_code: province.and_then(|p| p.iso_code).unwrap_or_default(),
            province_name: province.map(Area::name).unwrap_or_default(),
            city_code: &city_code,
            city_name: self.city.name(),
            ..PlaceFields::default()
        }))
    }
}

/// A `names` map reduced to the wanted language and English.
struct Names<'a, L> {
    wanted: Option<&'a str>,
    english: Option<&'a str>,
    /// Whether the map named anything at all, in any language.
    any: bool,
    language: PhantomData<L>,
}

impl<L> Default for Names<'_, L> {
    fn default() -> Self {
        Names {
            wanted: None,
            english: None,
            any: false,
            language: PhantomData,
        }
    }
}

impl<'de: 'a, 'a, L: Language> Deserialize<'de> for Names<'a, L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor<'a, L>(PhantomData<(&'a (), L)>);

        impl<'de: 'a, 'a, L: Language> Visitor<'de> for NamesVisitor<'a, L> {
            type Value = Names<'a, L>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names by language")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut names = Names::default();
                while let Some(key) = map.next_key::<&'de str>()? {
                    names.any = true;
                    if key == L::KEY {
                        names.wanted = Some(map.next_value()?);
                    } else if key == "en" {
                        names.english = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(names)
            }
        }

        deserializer.deserialize_map(NamesVisitor(PhantomData))
    }
}

/// The first element of a list; the rest are skipped.
struct First<T>(Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstVisitor<T> {
            type Value = First<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }

        deserializer.deserialize_seq(FirstVisitor(PhantomData))
    }
}

/// The live MaxMind database, shared by every request. A lookup takes the
/// current reader once per batch, so a replacement never splits a batch
/// and in-flight lookups finish on the reader they started with.
#[derive(Clone)]
pub struct MaxMind {
    current: Arc<ArcSwap<GeoDb>>,
    /// Whether each database served gets its tables of networks.
    networks: bool,
}

impl MaxMind {
    /// Opens the database at `path`.
    pub fn open(path: &Path) -> Result<MaxMind, MmdbError> {
        Ok(MaxMind::new(GeoDb::open(path)?))
    }

    pub fn new(db: GeoDb) -> MaxMind {
        MaxMind {
            current: Arc::new(ArcSwap::from_pointee(db)),
            networks: false,
        }
    }

    /// When `wanted`, builds the tables of networks of this database
    /// and of each one that replaces it, each on a thread of its own;
    /// lookups walk the tree until it is ready.
    pub fn with_networks(mut self, wanted: bool) -> MaxMind {
        self.networks = wanted;
        if wanted {
            build_networks_aside(self.current());
        }
        self
    }

    /// The reader to use for one batch.
    pub fn current(&self) -> Arc<GeoDb> {
        self.current.load_full()
    }

    /// Serves `db` from the next batch on.
    pub fn replace(&self, db: GeoDb) {
        let db = Arc::new(db);
        self.current.store(db.clone());
        if self.networks {
            build_networks_aside(db);
        }
    }
}

fn build_networks_aside(db: Arc<GeoDb>) {
    let spawned = std::thread::Builder::new().name("mmdb-networks".into()).spawn(move || {
        let started = Instant::now();
        match db.build_networks() {
            Ok(()) => info!(
                mmdb = db.label(),
                megabytes = db.networks_bytes().unwrap_or_default() / 1_000_000,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "MaxMind networks held as tables"
            ),
            Err(err) => warn!(mmdb = db.label(), error = %err, "MaxMind answers stay on the tree walk"),
        }
    });
    if let Err(err) = spawned {
        warn!(error = %err, "cannot start the thread that holds the MaxMind networks as a table");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../data/sample/GeoLite2-City-sample.mmdb");
    const SAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/GeoLite2-City-sample.mmdb");

    /// How many of the pages of `bytes` this process has mapped in, from
    /// `/proc/self/pagemap` (bit 63 of each page's word: present).
    fn pages_present(bytes: &[u8]) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        const PAGE: usize = 4096;
        let first = bytes.as_ptr() as usize / PAGE;
        let pages = (bytes.as_ptr() as usize + bytes.len()).div_ceil(PAGE) - first;
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        pagemap.seek(SeekFrom::Start(first as u64 * 8)).unwrap();
        let mut words = vec![0u8; pages * 8];
        pagemap.read_exact(&mut words).unwrap();
        words
            .chunks_exact(8)
            .filter(|word| u64::from_ne_bytes((*word).try_into().unwrap()) >> 63 == 1)
            .count()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn building_the_tables_gives_back_the_pages_of_the_tree_it_read() {
        let db = GeoDb::open(Path::new(SAMPLE_PATH)).unwrap();
        let map = db.mapped.clone().unwrap();
        let tree = &map[..db.tree_bytes()];
        let pages = tree.len() / 4096;
        assert!(pages >= 16, "a tree of {pages} pages is too small to tell");
        let networks = db.networks_in("::/0", v6_bounds).unwrap().count();
        assert!(networks > 0);
        assert!(pages_present(tree) >= pages / 2, "the listing read the tree");
        db.build_networks().unwrap();
        let after = pages_present(tree);
        assert!(after < pages / 4, "{after} of the tree's {pages} pages still present");
        // The tree answers again, from pages faulted back in.
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        let walked = db.lookup_in_tree(ip, Lang::En).unwrap();
        assert!(walked.is_some());
        assert_eq!(db.lookup(ip, Lang::En).unwrap(), walked);
    }

    /// Each of the sample's networks within `all`, as its first and last
    /// address.
    fn sample_networks(all: &str) -> Vec<(IpAddr, IpAddr)> {
        let db = GeoDb::from_static(SAMPLE, "sample").unwrap();
        let all: IpNetwork = all.parse().unwrap();
        let found = db.reader.within(all, WithinOptions::default()).unwrap();
        found
            .map(|found| {
                let network = found.unwrap().network().unwrap();
                (network.network(), network.broadcast())
            })
            .collect()
    }

    /// A pseudo-random number after `x`.
    fn next(x: &mut u64) -> u64 {
        *x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *x >> 11
    }

    /// Holds the sample's network tables to the tree walk for `probes`: one
    /// by one with the place cache cold and then warm, in each language,
    /// and in batches; returns the answers.
    fn answers_as_the_tree_does(probes: &[IpAddr]) -> Vec<Option<Located>> {
        let db = GeoDb::from_static(SAMPLE, "sample").unwrap();
        let by_tree =
            |lang| -> Vec<Option<Located>> { probes.iter().map(|&ip| db.lookup_in_tree(ip, lang).unwrap()).collect() };
        // From a reader of its own, of the file mapped as a server maps it
        // (whose tree's pages the build gives back): the tables' lookups
        // start with a cold place cache, then run again with it warm.
        let flat = GeoDb::open(Path::new(SAMPLE_PATH)).unwrap();
        flat.build_networks().unwrap();
        assert!(flat.networks_bytes().is_some());
        for lang in [Lang::ZhCn, Lang::En, Lang::Ja] {
            let expected = by_tree(lang);
            for _ in 0..2 {
                let found: Vec<_> = probes.iter().map(|&ip| flat.lookup(ip, lang).unwrap()).collect();
                assert_eq!(found, expected, "{lang:?}");
                assert!(found.iter().any(Option::is_some) && found.iter().any(Option::is_none));
            }
        }
        let one_by_one: Vec<_> = probes.iter().map(|&ip| flat.lookup(ip, Lang::En).unwrap()).collect();
        for batch in [1, 7, 1000] {
            let together: Vec<_> = probes
                .chunks(batch)
                .flat_map(|chunk| flat.lookup_all(chunk, Lang::En))
                .map(Result::unwrap)
                .collect();
            assert_eq!(together, one_by_one, "batches of {batch}");
        }
        one_by_one
    }

    #[test]
    fn the_network_table_answers_every_ipv4_address_as_the_tree_walk_does() {
        // Every network's edges and their neighbours, and addresses spread
        // over the whole space.
        let mut probes: Vec<u32> = Vec::new();
        for (start, end) in sample_networks("0.0.0.0/0") {
            if let (IpAddr::V4(start), IpAddr::V4(end)) = (start, end) {
                let (start, end) = (u32::from(start), u32::from(end));
                probes.extend([start.wrapping_sub(1), start, end, end.wrapping_add(1)]);
            }
        }
        assert!(probes.len() > 100, "the sample has networks");
        let mut x = 1;
        probes.extend((0..20_000).map(|_| next(&mut x) as u32));
        // IPv6 addresses (::a.b.c.d, where the tree keeps its IPv4
        // networks) among them.
        let mixed: Vec<IpAddr> = probes
            .iter()
            .enumerate()
            .map(|(i, &ip)| match i % 5 {
                0 => IpAddr::V6(Ipv6Addr::from(u128::from(ip))),
                _ => IpAddr::V4(ip.into()),
            })
            .collect();
        let answers = answers_as_the_tree_does(&mixed);
        assert!(
            answers.iter().step_by(5).any(Option::is_some),
            "some IPv6 address is known"
        );
    }

    #[test]
    fn a_slash_64_with_longer_networks_or_a_gap_starting_inside_it_is_left_to_the_tree() {
        let row = |hi: u128, lo: u128, record| Network {
            start: hi << 64 | lo,
            record,
        };
        let rows = [
            row(0, 0, NO_RECORD),
            row(1, 0, 10),
            // A /65 and the /65 after it; then a /126 and a gap from
            // inside its /64 to the end of 5's.
            row(2, 0, 11),
            row(2, 1 << 63, 12),
            row(3, 0, 13),
            row(3, 4, NO_RECORD),
            row(6, 0, 14),
        ];
        let kept: Vec<(u128, u32)> = by_64(&rows).iter().map(|n| ({ n.start } >> 64, n.record)).collect();
        assert_eq!(kept, [(0, NO_RECORD), (1, 10), (2, IN_TREE), (4, NO_RECORD), (6, 14)]);
        // The last /64 mixed: nothing after it.
        let top = u64::MAX as u128;
        let kept = by_64(&[row(top, 0, 20), row(top, 1, NO_RECORD)]);
        assert_eq!(kept.iter().map(|n| n.record).collect::<Vec<_>>(), [IN_TREE]);
    }

    #[test]
    fn the_ipv6_network_table_answers_as_the_tree_walk_does() {
        let networks = sample_networks("::/0");
        let mut probes: Vec<u128> = Vec::new();
        for &(start, end) in &networks {
            if let (IpAddr::V6(start), IpAddr::V6(end)) = (start, end) {
                let (start, end) = (u128::from(start), u128::from(end));
                probes.extend([start.wrapping_sub(1), start, end, end.wrapping_add(1)]);
            }
        }
        assert!(probes.len() > 100, "the sample has IPv6 networks");
        let mut x = 7;
        let mut random =
            || (u128::from(next(&mut x)) << 75) ^ (u128::from(next(&mut x)) << 22) ^ u128::from(next(&mut x));
        for _ in 0..10_000 {
            // Anywhere, in global unicast space, and in the tree's IPv4
            // space and its aliases of it (IPv4-mapped, 6to4, Teredo),
            // where an IPv4 address the sample knows may sit.
            let v4 = u128::from(u32::from(Ipv4Addr::new(81, 2, 69, 142)) ^ (random() as u32 & 0xffff));
            probes.extend([
                random(),
                random() >> 3 | 0x2000 << 112,
                v4,
                0xffff << 32 | v4,
                0x2002 << 112 | v4 << 80,
                0x2001_0000 << 96 | !v4 & 0xffff_ffff,
            ]);
        }
        let probes: Vec<IpAddr> = probes.into_iter().map(|ip| IpAddr::V6(ip.into())).collect();
        let answers = answers_as_the_tree_does(&probes);
        assert!(answers
            .iter()
            .flatten()
            .any(|found| matches!(found.start, IpAddr::V6(start) if start.segments()[0] >= 0x2000)));

        // The table answers global unicast space itself, and leaves the
        // tree's IPv4 space to the walk (the sample has no aliases of it:
        // `tests/api/real_data.rs` holds those on the real file).
        let db = GeoDb::from_static(SAMPLE, "sample").unwrap();
        db.build_networks().unwrap();
        let table = &db.networks.get().unwrap().v6;
        let record_of = |ip: &str| {
            let ip: Ipv6Addr = ip.parse().unwrap();
            table.at(table.rank(u128::from(ip), table.bucket(u128::from(ip)))).2
        };
        assert_eq!(record_of("::81.2.69.142"), IN_TREE);
        let (known, _) = networks
            .iter()
            .find(|(start, _)| matches!(start, IpAddr::V6(s) if s.segments()[0] >= 0x2000))
            .unwrap();
        assert!(record_of(&known.to_string()) < IN_TREE);
        assert_eq!(record_of("3fff:ffff::1"), NO_RECORD);
    }
}
