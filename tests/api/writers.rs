//! Minimal writers for the two binary IP database formats, so tests make
//! their own fixtures instead of shipping or downloading them: MaxMind DB
//! (spec 2.0: search tree with 32-bit records, data section, metadata) and
//! IPIP.net ipdb (JSON header, the same kind of tree, tab-separated records).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A value in the data section.
#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(BTreeMap<String, Value>),
    Array(Vec<Value>),
}

/// `map!{"key" => value, ...}` builds a `Value::Map`.
#[macro_export]
macro_rules! map {
    ($($k:expr => $v:expr),* $(,)?) => {
        $crate::writers::Value::Map([$(($k.to_string(), $v)),*].into_iter().collect())
    };
}

pub fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// A binary trie over 128-bit addresses whose leaves name a record.
struct Trie {
    nodes: Vec<[Record; 2]>,
}

impl Trie {
    fn new() -> Self {
        Trie {
            nodes: vec![[Record::Empty; 2]],
        }
    }

    /// Points `network` at record `data`; IPv4 networks go below `v4_base`.
    fn insert(&mut self, network: &str, v4_base: u128, data: usize) {
        let (ip, len) = network.split_once('/').expect("network/prefix");
        let (bits, len): (u128, u32) = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => (v4_base | u128::from(u32::from(v4)), 96 + len.parse::<u32>().unwrap()),
            IpAddr::V6(v6) => (u128::from(v6), len.parse().unwrap()),
        };
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                self.nodes[node][bit] = Record::Data(data);
                break;
            }
            node = match self.nodes[node][bit] {
                Record::Node(next) => next,
                Record::Empty => {
                    self.nodes.push([Record::Empty; 2]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][bit] = Record::Node(next);
                    next
                }
                Record::Data(_) => panic!("{network} nests inside another network"),
            };
        }
    }

    /// The tree as big-endian u32 pairs; data record `d` becomes
    /// `node_count + data_base + offsets[d]`.
    fn write(&self, data_base: usize, offsets: &[usize], out: &mut Vec<u8>) {
        let count = self.nodes.len();
        for node in &self.nodes {
            for record in node {
                let value = match *record {
                    Record::Empty => count,
                    Record::Node(n) => n,
                    Record::Data(d) => count + data_base + offsets[d],
                };
                out.extend_from_slice(&(value as u32).to_be_bytes());
            }
        }
    }
}

/// Networks and their records, written as an IPv6 City database with the
/// IPv4 space under `::/96`, as GeoLite2 does.
pub struct Writer {
    trie: Trie,
    data: Vec<Value>,
    description: String,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            trie: Trie::new(),
            data: Vec::new(),
            description: "xm-ip-service test fixture".to_owned(),
        }
    }

    /// The metadata's English description.
    #[allow(dead_code)]
    pub fn describe(&mut self, text: &str) -> &mut Self {
        self.description = text.to_owned();
        self
    }

    /// Adds `network` ("8.8.8.0/24" or "2001:4860::/32"); networks must not nest.
    pub fn insert(&mut self, network: &str, value: Value) -> &mut Self {
        self.data.push(value);
        self.trie.insert(network, 0, self.data.len() - 1);
        self
    }

    pub fn build(&self, build_epoch: u64) -> Vec<u8> {
        // Equal records are written once, as MaxMind's own writer does.
        let mut section = Vec::new();
        let mut written: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
        let offsets: Vec<usize> = self
            .data
            .iter()
            .map(|value| {
                let mut bytes = Vec::new();
                encode(value, &mut bytes);
                *written.entry(bytes).or_insert_with_key(|bytes| {
                    section.extend_from_slice(bytes);
                    section.len() - bytes.len()
                })
            })
            .collect();
        let mut out = Vec::new();
        self.trie.write(16, &offsets, &mut out);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&section);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = map! {
            "binary_format_major_version" => Value::U16(2),
            "binary_format_minor_version" => Value::U16(0),
            "build_epoch" => Value::U64(build_epoch),
            "database_type" => s("GeoLite2-City"),
            "description" => map! {"en" => s(&self.description)},
            "ip_version" => Value::U16(6),
            "languages" => Value::Array(["de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"].iter().map(|l| s(l)).collect()),
            "node_count" => Value::U32(self.trie.nodes.len() as u32),
            "record_size" => Value::U16(32),
        };
        encode(&metadata, &mut out);
        out
    }
}

/// The fields of the qqwry ipdb, in its order.
pub const IPDB_FIELDS: [&str; 8] = [
    "country_name",
    "region_name",
    "city_name",
    "district_name",
    "owner_domain",
    "isp_domain",
    "country_code",
    "continent_code",
];

/// An ipdb with one language block (`CN`) of `IPDB_FIELDS`; IPv4 lives at
/// `::ffff:0:0/96`, where ipdb readers look for it.
pub struct IpdbWriter {
    trie: Trie,
    records: Vec<Vec<u8>>,
}

impl IpdbWriter {
    pub fn new() -> Self {
        IpdbWriter {
            trie: Trie::new(),
            records: Vec::new(),
        }
    }

    pub fn insert(&mut self, network: &str, values: [&str; 8]) -> &mut Self {
        self.records.push(values.join("\t").into_bytes());
        self.trie.insert(network, 0xffff << 32, self.records.len() - 1);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        // Record offsets start past 16 bytes of padding: a pointer equal to
        // node_count means "no data".
        let mut section = vec![0u8; 16];
        let offsets: Vec<usize> = self
            .records
            .iter()
            .map(|record| {
                let at = section.len();
                section.extend_from_slice(&(record.len() as u16).to_be_bytes());
                section.extend_from_slice(record);
                at
            })
            .collect();
        let mut tree = Vec::new();
        self.trie.write(0, &offsets, &mut tree);
        let meta = serde_json::json!({
            "build": 1_700_000_000,
            "ip_version": 3,
            "languages": {"CN": 0},
            "node_count": self.trie.nodes.len(),
            "total_size": tree.len() + section.len(),
            "fields": IPDB_FIELDS,
        })
        .to_string();
        let mut out = (meta.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(&tree);
        out.extend_from_slice(&section);
        out
    }
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(text) => {
            header(2, text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
        Value::U16(n) => uint(5, u64::from(*n), out),
        Value::U32(n) => uint(6, u64::from(*n), out),
        Value::U64(n) => uint(9, *n, out),
        Value::Map(entries) => {
            header(7, entries.len(), out);
            for (key, value) in entries {
                encode(&Value::Str(key.clone()), out);
                encode(value, out);
            }
        }
        Value::Array(items) => {
            header(11, items.len(), out);
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn uint(kind: u8, n: u64, out: &mut Vec<u8>) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    header(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

/// Control byte, extended type byte (types above 7) and size bytes.
fn header(kind: u8, size: usize, out: &mut Vec<u8>) {
    let type_bits = if kind > 7 { 0 } else { kind << 5 };
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(type_bits | size_bits);
    if kind > 7 {
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}
