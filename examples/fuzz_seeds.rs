//! Writes the fuzz target's seed corpus: a valid call of every method in
//! each transport/protocol combination, as `scripts/fuzz.sh` feeds them.
//! Usage: cargo run --example fuzz_seeds -- DIR

use std::path::PathBuf;

use xm_ip_service::inputs::Inputs;
use xm_ip_service::thrift::calls::encode_call;
use xm_ip_service::thrift::codec::Call;

#[path = "../tests/decoder/invariants.rs"]
#[allow(dead_code)]
mod invariants;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus/decode".into()));
    std::fs::create_dir_all(&dir)?;
    let ips = |list: &[&str]| list.iter().collect::<Inputs>();
    let calls = [
        (
            "by_ip",
            Call::QueryGeoInfoByIp {
                ips: ips(&["183.62.57.1", "240e:1::1", "bogus", ""]),
            },
        ),
        ("i18n", Call::QueryI18nGeoInfoByIp { ips: ips(&["8.8.8.8"]) }),
        (
            "geo_info",
            Call::QueryGeoInfo {
                ips: ips(&["1.2.3.4", "::1"]),
                lang: "en".into(),
            },
        ),
        ("empty", Call::QueryGeoInfoByIp { ips: Inputs::new() }),
        ("unknown", Call::Unknown),
    ];
    let mut written = 0;
    for (name, call) in &calls {
        for (w, wire) in invariants::WIRES.iter().enumerate() {
            // Whole, and in pieces of 3 bytes.
            for piece in [0u8, 2] {
                let mut seed = vec![w as u8 | piece << 2];
                seed.extend(encode_call(*wire, 7, call));
                std::fs::write(dir.join(format!("{name}-{w}-{piece}")), seed)?;
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}
