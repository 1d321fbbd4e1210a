//! A minimal MaxMind DB writer, so tests make their own City database
//! instead of shipping or downloading one. Format: the MaxMind DB spec 2.0
//! (search tree with 32-bit records, data section, metadata).

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
        $crate::mmdb_writer::Value::Map([$(($k.to_string(), $v)),*].into_iter().collect())
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

/// Networks and their records, written as an IPv6 City database with the
/// IPv4 space under `::/96`, as GeoLite2 does.
#[derive(Default)]
pub struct Writer {
    nodes: Vec<[Record; 2]>,
    data: Vec<Value>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            nodes: vec![[Record::Empty; 2]],
            data: Vec::new(),
        }
    }

    /// Adds `network` ("8.8.8.0/24" or "2001:4860::/32"); networks must not nest.
    pub fn insert(&mut self, network: &str, value: Value) -> &mut Self {
        let (ip, len) = network.split_once('/').expect("network/prefix");
        let (bits, len): (u128, u32) = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 96 + len.parse::<u32>().unwrap()),
            IpAddr::V6(v6) => (u128::from(v6), len.parse().unwrap()),
        };
        self.data.push(value);
        let data = self.data.len() - 1;
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
        self
    }

    pub fn build(&self, build_epoch: u64) -> Vec<u8> {
        let mut section = Vec::new();
        let offsets: Vec<usize> = self
            .data
            .iter()
            .map(|value| {
                let at = section.len();
                encode(value, &mut section);
                at
            })
            .collect();
        let count = self.nodes.len();
        let mut out = Vec::new();
        for node in &self.nodes {
            for record in node {
                let value = match *record {
                    Record::Empty => count,
                    Record::Node(n) => n,
                    Record::Data(d) => count + 16 + offsets[d],
                };
                out.extend_from_slice(&(value as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&section);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = map! {
            "binary_format_major_version" => Value::U16(2),
            "binary_format_minor_version" => Value::U16(0),
            "build_epoch" => Value::U64(build_epoch),
            "database_type" => s("GeoLite2-City"),
            "description" => map! {"en" => s("xm-ip-service test fixture")},
            "ip_version" => Value::U16(6),
            "languages" => Value::Array(["de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"].iter().map(|l| s(l)).collect()),
            "node_count" => Value::U32(count as u32),
            "record_size" => Value::U16(32),
        };
        encode(&metadata, &mut out);
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
