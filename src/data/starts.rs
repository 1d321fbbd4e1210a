//! Finding a key among sorted range starts in few dependent reads, for the
//! range index and MaxMind's network table. A directory on the key's top
//! bits narrows the search to a bucket of starts that share those bits; an
//! IPv4 bucket is then searched in a copy of its starts' low 16 bits, 32 to
//! a cache line, by counting those at or below the key: the loads do not
//! wait on each other and no branch depends on the data. Searching the
//! 12-byte entries themselves walked several lines one after another.

use crate::data::index::Key;
use crate::memory::{prefetch, Growing, HugePages};

const SLOTS: usize = 1 << 16;
const NOT_CROWDED: u32 = u32::MAX;
/// Buckets up to this many low keys are counted; larger ones (a crowded
/// /24, rare) are halved.
const COUNTED: usize = 64;

/// Sorted starts, ready to be searched.
pub struct Starts<K> {
    directory: Directory,
    /// For IPv4, each start's low 16 bits, in order; empty for IPv6,
    /// whose buckets share too few bits for a short copy to order them.
    low: HugePages<u16>,
    family: std::marker::PhantomData<K>,
}

impl<K: Key> Starts<K> {
    /// The search over `len` sorted starts, the `i`-th given by `start(i)`;
    /// a slot of more than `crowded` starts gets a second-level table (of
    /// 257 or 4,097 counts: a threshold too low costs memory).
    pub fn new(len: usize, start: impl Fn(usize) -> K, crowded: u32) -> Starts<K> {
        let mut low = Growing::default();
        if K::LOW_KEYS {
            low.reserve(len);
            for i in 0..len {
                low.push(start(i).low());
            }
        }
        Starts {
            directory: Directory::new(len, start, crowded),
            low: low.finish(),
            family: std::marker::PhantomData,
        }
    }

    /// The bucket of starts sharing `key`'s top bits, as `lo..hi`: every
    /// start before it is below `key`, every one after it above. Asks for
    /// the bucket's low keys to be loaded.
    #[inline]
    pub fn bucket(&self, key: K) -> (usize, usize) {
        let (lo, hi) = self.directory.bounds(key);
        if K::LOW_KEYS && lo < hi {
            prefetch(&self.low[lo]);
            prefetch(&self.low[hi - 1]);
        }
        (lo, hi)
    }

    /// How many starts are at or below `key`, given its bucket; for a
    /// family without low keys, `in_bucket` counts the bucket's from the
    /// full starts.
    #[inline]
    pub fn rank(&self, key: K, (lo, hi): (usize, usize), in_bucket: impl FnOnce() -> usize) -> usize {
        if !K::LOW_KEYS {
            return lo + in_bucket();
        }
        let (keys, key) = (&self.low[lo..hi], key.low());
        lo + if keys.len() <= COUNTED {
            keys.iter().map(|&k| u8::from(k <= key) as usize).sum::<usize>()
        } else {
            keys.partition_point(|&k| k <= key)
        }
    }

    /// Start `i`'s low 16 bits (0 for a family without low keys).
    #[inline]
    pub fn low_key(&self, i: usize) -> u16 {
        if K::LOW_KEYS {
            self.low[i]
        } else {
            0
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.directory.heap_bytes() + self.low.len() * 2
    }

    /// Slots with a second-level table.
    #[cfg(test)]
    pub fn crowded_slots(&self) -> usize {
        self.directory.crowded.iter().filter(|&&c| c != NOT_CROWDED).count()
    }
}

/// Where a key's bucket begins and ends among the sorted starts: a table
/// on the top 16 bits, and for crowded slots a second table on the next
/// bits.
struct Directory {
    /// Per slot: how many starts are below it; `SLOTS + 1` entries.
    slots: Box<[u32]>,
    /// Per slot: where its second-level table starts in `subs`, if it has one.
    crowded: Box<[u32]>,
    /// Second-level tables of `2^SUB_BITS + 1` entries: how many starts
    /// are below each sub-slot.
    subs: Box<[u32]>,
}

impl Directory {
    fn new<K: Key>(len: usize, start: impl Fn(usize) -> K, crowded_above: u32) -> Directory {
        let mut slots = vec![0u32; SLOTS + 1];
        for i in 0..len {
            slots[start(i).slot() + 1] += 1;
        }
        for s in 1..=SLOTS {
            slots[s] += slots[s - 1];
        }
        let subs_per_table = (1usize << K::SUB_BITS) + 1;
        let mut crowded = vec![NOT_CROWDED; SLOTS];
        let mut subs = Vec::new();
        for slot in 0..SLOTS {
            let (lo, hi) = (slots[slot], slots[slot + 1]);
            if hi - lo <= crowded_above {
                continue;
            }
            crowded[slot] = subs.len() as u32;
            let table = subs.len();
            subs.resize(table + subs_per_table, 0);
            for i in lo as usize..hi as usize {
                subs[table + start(i).sub_slot() + 1] += 1;
            }
            subs[table] = lo;
            for sub in 1..subs_per_table {
                subs[table + sub] += subs[table + sub - 1];
            }
        }
        Directory {
            slots: slots.into_boxed_slice(),
            crowded: crowded.into_boxed_slice(),
            subs: subs.into_boxed_slice(),
        }
    }

    /// The starts sharing `key`'s slot (or sub-slot); every start before
    /// them is below `key`.
    #[inline]
    fn bounds<K: Key>(&self, key: K) -> (usize, usize) {
        let slot = key.slot();
        match self.crowded[slot] {
            NOT_CROWDED => (self.slots[slot] as usize, self.slots[slot + 1] as usize),
            table => {
                let at = table as usize + key.sub_slot();
                (self.subs[at] as usize, self.subs[at + 1] as usize)
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        (self.slots.len() + self.crowded.len() + self.subs.len()) * 4
    }
}
