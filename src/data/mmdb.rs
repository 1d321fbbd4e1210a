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
pub enum Bytes {
    Mapped(memmap2::Mmap),
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
    /// Every IPv4 network of the file, once built.
    networks: OnceLock<Networks>,
}

/// The file's IPv4 networks flattened into one sorted table: where each
/// starts and the record it points to, gaps included, so that a network
/// ends where the next begins. A fallback then finds its network with a
/// short search in memory instead of a walk down the file's tree (a cache
/// miss a level, the cost of a lookup), and its place in the place cache,
/// in any language; a place not cached yet comes from the walk, which
/// caches it. Ten bytes a network (its start and record, and the start's
/// low 16 bits again for the search), and the directory: 31 MB for
/// GeoLite2 City's three million, gaps included.
struct Networks {
    starts: Starts<u32>,
    networks: Box<[Network]>,
}

#[derive(Clone, Copy)]
struct Network {
    start: u32,
    /// The record's offset in the data section, or [`NO_RECORD`].
    record: u32,
}

/// A /16 of more networks than this gets a second-level table. At the
/// range index's 48, half of GeoLite2's /16s had one, doubling the table
/// (24 -> 49 MB); at 256 it is 31 MB, and a bucket of up to 256 is
/// searched in its low keys (counted up to 64, halved above).
const CROWDED: u32 = 256;

/// A gap between networks: addresses the file holds no record for.
const NO_RECORD: u32 = u32::MAX;

fn v4_key(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => Some(u32::from(v4)),
        IpAddr::V6(_) => None,
    }
}

impl Networks {
    /// The network holding `ip`: its first and last address and record.
    #[inline]
    fn find(&self, ip: u32) -> (u32, u32, u32) {
        self.at(self.rank(ip, self.starts.bucket(ip)))
    }

    /// The number of the network holding `ip`, given its bucket; the
    /// network asked for.
    #[inline]
    fn rank(&self, ip: u32, (lo, hi): (usize, usize)) -> usize {
        let below = self.starts.rank(ip, (lo, hi), || {
            self.networks[lo..hi].partition_point(|n| n.start <= ip)
        });
        // The table starts at 0.0.0.0, so some network starts at or below `ip`.
        let i = below - 1;
        prefetch(&self.networks[i]);
        i
    }

    /// Network `i`'s first and last address and record.
    #[inline]
    fn at(&self, i: usize) -> (u32, u32, u32) {
        let end = self.networks.get(i + 1).map_or(u32::MAX, |next| next.start - 1);
        (self.networks[i].start, end, self.networks[i].record)
    }

    fn heap_bytes(&self) -> usize {
        self.starts.heap_bytes() + self.networks.len() * std::mem::size_of::<Network>()
    }
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
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| open_error(e.into()))?;
        GeoDb::from_bytes(Bytes::Mapped(map), label)
    }

    /// A database compiled into the binary.
    pub fn from_static(bytes: &'static [u8], label: &str) -> Result<GeoDb, MmdbError> {
        GeoDb::from_bytes(Bytes::Static(bytes), label.to_owned())
    }

    fn from_bytes(bytes: Bytes, label: String) -> Result<GeoDb, MmdbError> {
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
        })
    }

    /// Builds the table of IPv4 networks (0.15 s of CPU for GeoLite2
    /// City: call it off the request path); lookups use it from then on.
    pub fn build_networks(&self) -> Result<(), MmdbError> {
        let all: IpNetwork = "0.0.0.0/0".parse().expect("a valid network");
        let mut networks: Vec<Network> = Vec::new();
        // The first address no network read so far holds.
        let mut next = Some(0u32);
        for found in self.reader.within(all, WithinOptions::default())? {
            let found = found?;
            let network = found.network()?;
            let (IpAddr::V4(start), IpAddr::V4(end)) = (network.network(), network.broadcast()) else {
                continue;
            };
            let (start, end) = (u32::from(start), u32::from(end));
            let record = found.offset().map_or(Ok(NO_RECORD), u32::try_from);
            let record = record.map_err(|_| MmdbError::Networks("a record lies beyond 4 GiB"))?;
            match next {
                Some(next) if start > next => networks.push(Network {
                    start: next,
                    record: NO_RECORD,
                }),
                Some(next) if start == next => {}
                _ => return Err(MmdbError::Networks("networks out of order")),
            }
            networks.push(Network { start, record });
            next = end.checked_add(1);
        }
        if let Some(next) = next {
            networks.push(Network {
                start: next,
                record: NO_RECORD,
            });
        }
        let _ = self.networks.set(Networks {
            starts: Starts::new(networks.len(), |i| networks[i].start, CROWDED),
            networks: networks.into_boxed_slice(),
        });
        Ok(())
    }

    /// Bytes the table of networks holds, once built.
    pub fn networks_bytes(&self) -> Option<usize> {
        self.networks.get().map(Networks::heap_bytes)
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
        match (ip, self.networks.get()) {
            (IpAddr::V4(v4), Some(networks)) => self.answer(ip, networks.find(u32::from(v4)), lang),
            _ => self.lookup_in_tree(ip, lang),
        }
    }

    /// [`GeoDb::lookup`] for each of `ips`, in order. The IPv4 addresses'
    /// searches of the network table go in chunks, each step started for
    /// all of a chunk's addresses before the next, so that their misses
    /// overlap.
    pub fn lookup_all(&self, ips: &[IpAddr], lang: Lang) -> Vec<Result<Option<Located>, MmdbError>> {
        const CHUNK: usize = 16;
        let Some(networks) = self.networks.get() else {
            return ips.iter().map(|&ip| self.lookup_in_tree(ip, lang)).collect();
        };
        let mut out = Vec::with_capacity(ips.len());
        let (mut buckets, mut found) = ([None; CHUNK], [None; CHUNK]);
        for chunk in ips.chunks(CHUNK) {
            for (bucket, &ip) in buckets.iter_mut().zip(chunk) {
                *bucket = v4_key(ip).map(|ip| networks.starts.bucket(ip));
            }
            for ((found, bucket), &ip) in found.iter_mut().zip(buckets).zip(chunk) {
                *found = bucket.zip(v4_key(ip)).map(|(bucket, ip)| networks.rank(ip, bucket));
            }
            for (found, &ip) in found.iter().zip(chunk) {
                out.push(match found {
                    Some(i) => self.answer(ip, networks.at(*i), lang),
                    None => self.lookup_in_tree(ip, lang),
                });
            }
        }
        out
    }

    /// The answer for `ip` in network `(start, end, record)` of the
    /// table: from the place cache, else from a walk of the tree.
    fn answer(
        &self,
        ip: IpAddr,
        (start, end, record): (u32, u32, u32),
        lang: Lang,
    ) -> Result<Option<Located>, MmdbError> {
        if record == NO_RECORD {
            return Ok(None);
        }
        match self.places.get(record as usize, lang) {
            Some(place) => Ok(place.map(|place| Located {
                place,
                start: IpAddr::V4(start.into()),
                end: IpAddr::V4(end.into()),
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
    /// Whether each database served gets its table of IPv4 networks.
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

    /// When `wanted`, builds the table of IPv4 networks of this database
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
                "MaxMind IPv4 networks held as a table"
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
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_network_table_answers_every_ipv4_address_as_the_tree_walk_does() {
        let sample = include_bytes!("../../data/sample/GeoLite2-City-sample.mmdb");
        let db = GeoDb::from_static(sample, "sample").unwrap();
        // Every network's edges and their neighbours, and addresses spread
        // over the whole space.
        let mut probes: Vec<u32> = Vec::new();
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        for found in db.reader.within(all, WithinOptions::default()).unwrap() {
            let network = found.unwrap().network().unwrap();
            if let (IpAddr::V4(start), IpAddr::V4(end)) = (network.network(), network.broadcast()) {
                let (start, end) = (u32::from(start), u32::from(end));
                probes.extend([start.wrapping_sub(1), start, end, end.wrapping_add(1)]);
            }
        }
        assert!(probes.len() > 100, "the sample has networks");
        let mut x = 1u32;
        probes.extend((0..20_000).map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x
        }));
        let by_tree = |lang| -> Vec<Option<Located>> {
            probes
                .iter()
                .map(|&ip| db.lookup_in_tree(Ipv4Addr::from(ip).into(), lang).unwrap())
                .collect()
        };
        // From a reader of its own: the table's lookups start with a cold
        // place cache, then run again with it warm.
        let flat = GeoDb::from_static(sample, "sample").unwrap();
        flat.build_networks().unwrap();
        assert!(flat.networks_bytes().is_some());
        for lang in [Lang::ZhCn, Lang::En, Lang::Ja] {
            let expected = by_tree(lang);
            for _ in 0..2 {
                let found: Vec<_> = probes
                    .iter()
                    .map(|&ip| flat.lookup(Ipv4Addr::from(ip).into(), lang).unwrap())
                    .collect();
                assert_eq!(found, expected, "{lang:?}");
                assert!(found.iter().any(Option::is_some) && found.iter().any(Option::is_none));
            }
        }
        // In batches, IPv6 addresses (::a.b.c.d, where the tree keeps its
        // IPv4 networks) among them: what one by one gives.
        let mixed: Vec<IpAddr> = probes
            .iter()
            .enumerate()
            .map(|(i, &ip)| match i % 5 {
                0 => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(ip))),
                _ => IpAddr::V4(ip.into()),
            })
            .collect();
        let one_by_one: Vec<_> = mixed.iter().map(|&ip| flat.lookup(ip, Lang::En).unwrap()).collect();
        assert!(
            one_by_one.iter().step_by(5).any(Option::is_some),
            "some IPv6 address is known"
        );
        for batch in [1, 7, 1000] {
            let together: Vec<_> = mixed
                .chunks(batch)
                .flat_map(|chunk| flat.lookup_all(chunk, Lang::En))
                .map(Result::unwrap)
                .collect();
            assert_eq!(together, one_by_one, "batches of {batch}");
        }
    }
}
