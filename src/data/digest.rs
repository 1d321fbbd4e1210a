//! The table digest: a hash of a table's ranges that is the same in every
//! process, so that an instance can tell whether the rows it applied are
//! the rows an import recorded.

use crate::domain::Place;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A hash of a table's ranges in address order, the same in every process:
/// an import records it with the changed rows it keeps, and an instance
/// that applied them compares, so that data it never held (rows edited by
/// hand) sends it back to reading the whole table.
#[derive(Debug, Clone, Copy)]
pub struct TableDigest(u64);

impl Default for TableDigest {
    fn default() -> Self {
        TableDigest(FNV_OFFSET)
    }
}

impl TableDigest {
    /// Adds the next range, given its [`place_digest`].
    #[inline]
    pub fn add(&mut self, start: u128, end: u128, place: u64) {
        for word in [
            start as u64,
            (start >> 64) as u64,
            end as u64,
            (end >> 64) as u64,
            place,
        ] {
            self.0 = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            self.0 ^= self.0 >> 29;
        }
    }

    /// The digest of `ranges`, in address order.
    pub fn of<'a>(ranges: impl IntoIterator<Item = (u128, u128, &'a Place)>) -> TableDigest {
        let mut digest = TableDigest::default();
        for (start, end, place) in ranges {
            digest.add(start, end, place_digest(place));
        }
        digest
    }

    /// As PostgreSQL's bigint holds it.
    pub fn to_i64(self) -> i64 {
        self.0 as i64
    }
}

/// A hash of a place's fields that is the same in every process, for
/// [`TableDigest`].
pub fn place_digest(place: &Place) -> u64 {
    let mut hash = FNV_OFFSET;
    for field in place.fields().columns() {
        // The separator keeps ("ab", "") apart from ("a", "b").
        for &byte in field.as_bytes().iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }
    hash
}
