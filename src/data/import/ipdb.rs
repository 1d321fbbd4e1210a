//! IPIP.net `.ipdb` files: a JSON header, a binary trie with two 32-bit
//! children per node, and tab-separated records, one block of fields per
//! language. IPv4 lives under `::ffff:0:0/96` of the same trie.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Codes, Family, Origin, Range, RangeBuilder, RangeSink, SharedPlaces, SourceError};
use crate::domain::{Place, PlaceBuf};

#[derive(Debug, Deserialize)]
struct Meta {
    node_count: u32,
    languages: HashMap<String, usize>,
    fields: Vec<String>,
}

/// An opened `.ipdb` file.
pub struct Ipdb<'a> {
    meta: Meta,
    /// Everything after the JSON header: the trie, then the records.
    data: &'a [u8],
}

/// The address bits of IPv4 inside the trie: 80 zero bits, 16 one bits.
const V4_PREFIX: u128 = 0xffff_u128 << 32;

impl<'a> Ipdb<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Ipdb<'a>, SourceError> {
        let header = bytes
            .get(..4)
            .ok_or_else(|| SourceError::NotFormat("shorter than an ipdb header".into()))?;
        let meta_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let meta_bytes = bytes
            .get(4..4 + meta_len)
            .filter(|m| m.first() == Some(&b'{'))
            .ok_or_else(|| SourceError::NotFormat("no JSON metadata after the length prefix".into()))?;
        let meta: Meta = serde_json::from_slice(meta_bytes)
            .map_err(|e| SourceError::NotFormat(format!("metadata is not ipdb JSON: {e}")))?;
        let data = &bytes[4 + meta_len..];
        if data.len() < meta.node_count as usize * 8 {
            return Err(SourceError::NotFormat(format!(
                "{} nodes announced but only {} bytes follow the metadata",
                meta.node_count,
                data.len()
            )));
        }
        Ok(Ipdb { meta, data })
    }

    fn child(&self, node: u32, bit: usize) -> u32 {
        let at = node as usize * 8 + bit * 4;
        u32::from_be_bytes([self.data[at], self.data[at + 1], self.data[at + 2], self.data[at + 3]])
    }

    /// The values of record `pointer` in the language block at `offset`.
    fn record(&self, pointer: u32, offset: usize) -> Result<Vec<&'a str>, SourceError> {
        let at = (pointer - self.meta.node_count) as usize + self.meta.node_count as usize * 8;
        let bad = |what: &str| SourceError::Row {
            at: Origin::Offset(at as u64),
            reason: what.to_owned(),
        };
        let len = self
            .data
            .get(at..at + 2)
            .ok_or_else(|| bad("record offset is past the end"))?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let bytes = self
            .data
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| bad("record runs past the end"))?;
        let text = std::str::from_utf8(bytes).map_err(|e| bad(&format!("record is not UTF-8: {e}")))?;
        let fields = self.meta.fields.len();
        let values: Vec<&str> = text.split('\t').collect();
        values
            .get(offset..offset + fields)
            .map(<[&str]>::to_vec)
            .ok_or_else(|| {
                bad(&format!(
                    "record has {} values, fewer than the language block needs",
                    values.len()
                ))
            })
    }

    /// Where the values of language `wanted` (or the file's first) start
    /// in a record: the metadata maps each language to that offset.
    fn language_offset(&self, wanted: Option<&str>) -> Result<usize, SourceError> {
        match wanted {
            Some(lang) => self.meta.languages.get(lang).copied().ok_or_else(|| {
                let mut known: Vec<_> = self.meta.languages.keys().cloned().collect();
                known.sort();
                SourceError::NotFormat(format!(
                    "no language {lang:?} in this ipdb; it has {}",
                    known.join(", ")
                ))
            }),
            None => (self.meta.languages.values().min().copied())
                .ok_or_else(|| SourceError::NotFormat("the ipdb lists no languages".into())),
        }
    }

    /// Every range of `family`, adjacent leaves with equal values merged.
    pub fn ranges(&self, family: Family, language: Option<&str>, codes: &Codes) -> Result<RangeBuilder, SourceError> {
        let mut out = RangeBuilder::default();
        self.ranges_into(family, language, codes, &mut out)?;
        Ok(out)
    }

    /// The ranges of `family`, in address order, given to `sink` as the
    /// trie is walked, so that no list of them is ever held whole.
    pub fn ranges_into(
        &self,
        family: Family,
        language: Option<&str>,
        codes: &Codes,
        sink: &mut impl RangeSink,
    ) -> Result<(), SourceError> {
        let offset = self.language_offset(language)?;
        let field = |name: &str| self.meta.fields.iter().position(|f| f == name);
        let columns = [
            field("country_name"),
            field("region_name"),
            field("city_name"),
            field("district_name"),
            field("isp_domain"),
            field("country_code"),
        ];
        let mut places: HashMap<u32, Place> = HashMap::new();
        // qqwry's 178,475 IPv4 records name 42,974 places.
        let mut shared = SharedPlaces::default();
        let mut leaf = |start: u128, end: u128, pointer: u32| -> Result<(), SourceError> {
            let place = match places.get(&pointer) {
                Some(place) => place.clone(),
                None => {
                    let values = self.record(pointer, offset)?;
                    let get = |column: Option<usize>| column.map(|i| values[i].trim().to_owned()).unwrap_or_default();
                    let mut place = PlaceBuf {
                        country_name: get(columns[0]),
                        province_name: get(columns[1]),
                        city_name: get(columns[2]),
                        district_name: get(columns[3]),
                        carrier: get(columns[4]),
                        country_code: get(columns[5]),
                        ..PlaceBuf::default()
                    };
                    codes.fill(&mut place);
                    let place = shared.share(place.build());
                    places.insert(pointer, place.clone());
                    place
                }
            };
            if place.is_blank() {
                return Ok(());
            }
            sink.push(Range {
                start,
                end,
                place,
                origin: Origin::Offset(u64::from(pointer)),
            })
        };
        let (root, bits) = match family {
            Family::V4 => (self.v4_root(), 32),
            Family::V6 => (0, 128),
        };
        match root.cmp(&self.meta.node_count) {
            std::cmp::Ordering::Less => Walker {
                ipdb: self,
                bits,
                family,
                leaf: &mut leaf,
                // A valid trie reaches each node once; a looping one never ends.
                budget: 2 * u64::from(self.meta.node_count) + 2,
            }
            .walk(root, 0, 0),
            // The whole family is one record, or none.
            std::cmp::Ordering::Greater => leaf(0, u128::MAX >> (128 - bits), root),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The node where IPv4 begins: `::ffff:0:0/96`.
    fn v4_root(&self) -> u32 {
        let mut node = 0;
        for i in 0..96 {
            if node >= self.meta.node_count {
                break;
            }
            node = self.child(node, usize::from(i >= 80));
        }
        node
    }
}

/// A depth-first walk of the trie below a root, in address order.
struct Walker<'w, 'a> {
    ipdb: &'w Ipdb<'a>,
    /// 32 for IPv4 (walked from the IPv4 root), 128 for IPv6.
    bits: u32,
    family: Family,
    /// Given `(start, end, record pointer)` of each leaf, in address order.
    leaf: &'w mut dyn FnMut(u128, u128, u32) -> Result<(), SourceError>,
    /// Nodes it may still visit.
    budget: u64,
}

impl Walker<'_, '_> {
    /// Walks below `node`, whose address starts with the `depth` bits of `prefix`.
    fn walk(&mut self, node: u32, prefix: u128, depth: u32) -> Result<(), SourceError> {
        self.budget =
            (self.budget.checked_sub(1)).ok_or_else(|| SourceError::NotFormat("the trie revisits its nodes".into()))?;
        let (bits, count) = (self.bits, self.ipdb.meta.node_count);
        for bit in 0..2u32 {
            let child = self.ipdb.child(node, bit as usize);
            let child_prefix = prefix | (u128::from(bit) << (bits - depth - 1));
            let child_depth = depth + 1;
            // The IPv4 block is imported into the IPv4 tables, not v6.
            if self.family == Family::V6 && child_depth == 96 && child_prefix == V4_PREFIX {
                continue;
            }
            if child > count {
                let span = if child_depth == bits {
                    0
                } else {
                    (u128::MAX >> (128 - bits)) >> child_depth
                };
                (self.leaf)(child_prefix, child_prefix | span, child)?;
            } else if child < count && child_depth < bits {
                self.walk(child, child_prefix, child_depth)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipdb(meta: &str, tree: &[u32]) -> Vec<u8> {
        let mut out = (meta.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(meta.as_bytes());
        for pointer in tree {
            out.extend_from_slice(&pointer.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_trie_that_loops_is_refused_not_walked_forever() {
        let meta = r#"{"node_count": 1, "languages": {"CN": 0}, "fields": ["country_name"]}"#;
        let bytes = ipdb(meta, &[0, 0]);
        let err = Ipdb::parse(&bytes)
            .unwrap()
            .ranges(Family::V6, None, Codes::get())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a valid file of this format: the trie revisits its nodes"
        );
    }

    #[test]
    fn a_family_stored_as_a_single_record_is_one_range() {
        let meta = r#"{"node_count": 1, "languages": {"CN": 0}, "fields": ["country_name"]}"#;
        // Node 0 points both ways at the record 8 bytes past the tree
        // (pointer = node_count + 8).
        let mut bytes = ipdb(meta, &[9, 9]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[0, 6]);
        bytes.extend_from_slice("中国".as_bytes());
        let built = Ipdb::parse(&bytes)
            .unwrap()
            .ranges(Family::V4, None, Codes::get())
            .unwrap();
        assert_eq!(built.ranges.len(), 1);
        assert_eq!((built.ranges[0].start, built.ranges[0].end), (0, u128::from(u32::MAX)));
        assert_eq!(built.ranges[0].place.country_code(), "CN");
    }

    #[test]
    fn records_that_differ_only_in_fields_not_kept_share_one_place() {
        let meta = r#"{"node_count": 2, "languages": {"CN": 0}, "fields": ["country_name", "owner_domain"]}"#;
        // ::/2, 4000::/2 and 8000::/1; the first and last differ only in
        // their owner, so they share a place (the middle one keeps them
        // from being one range).
        let records = ["中国\ta.example", "美国\ta.example", "中国\tb.example"];
        // A record's pointer is node_count + its offset past the tree.
        let mut pointers = Vec::new();
        let mut data = vec![0; 8];
        for record in records {
            pointers.push(2 + data.len() as u32);
            data.extend_from_slice(&(record.len() as u16).to_be_bytes());
            data.extend_from_slice(record.as_bytes());
        }
        let mut bytes = ipdb(meta, &[1, pointers[2], pointers[0], pointers[1]]);
        bytes.extend_from_slice(&data);
        let built = Ipdb::parse(&bytes)
            .unwrap()
            .ranges(Family::V6, None, Codes::get())
            .unwrap();
        let names: Vec<&str> = built.ranges.iter().map(|r| r.place.country_name()).collect();
        assert_eq!(names, ["中国", "美国", "中国"]);
        assert_eq!(built.ranges[0].place.address(), built.ranges[2].place.address());
    }

    #[test]
    fn truncated_files_and_other_formats_are_refused() {
        let meta = r#"{"node_count": 5, "languages": {"CN": 0}, "fields": ["country_name"]}"#;
        let err = Ipdb::parse(&ipdb(meta, &[0, 0])).err().unwrap();
        assert!(
            err.to_string().contains("5 nodes announced but only 8 bytes follow"),
            "{err}"
        );
        let err = Ipdb::parse(b"start_ip,end_ip\n1,2\n").err().unwrap();
        assert!(err.to_string().contains("no JSON metadata"), "{err}");
    }
}
