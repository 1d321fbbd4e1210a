//! The built-in sample: what the service serves on a machine with no
//! database and no data files, so that it answers from real tables at
//! once. It is served as files are ([`super::files`]) and never changes.

/// The built-in sample (see `data/sample/README.md`): real ranges cut from
/// the fetched files by `scripts/cut-sample.sh`, compiled in so that the
/// service answers from its tables on a machine with nothing installed.
pub(super) const SAMPLE: [(&str, &[u8]); 5] = [
    ("cn.csv", include_bytes!("../../../data/sample/cn.csv")),
    ("v6.csv", include_bytes!("../../../data/sample/v6.csv")),
    (
        "GeoLite2-City-sample.mmdb",
        include_bytes!("../../../data/sample/GeoLite2-City-sample.mmdb"),
    ),
    ("asn-ipv4.csv", include_bytes!("../../../data/sample/asn-ipv4.csv")),
    ("asn-ipv6.csv", include_bytes!("../../../data/sample/asn-ipv6.csv")),
];
