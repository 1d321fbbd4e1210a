//! `bench` and `compare`: drive running servers.

use crate::tools::client::to_json;
use crate::tools::loadgen::{self, CompareOptions, LoadOptions};

/// Runs `bench` and prints one summary line.
pub fn bench(options: LoadOptions) -> anyhow::Result<()> {
    let report = loadgen::run(&options)?;
    if options.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    println!(
        "{:?} x{} connections x{} in flight, batch {}: {}",
        options.method,
        options.connections,
        options.pipeline,
        options.batch,
        report.summary()
    );
    Ok(())
}

/// Runs `compare`: the count of differing answers, and the first few.
pub fn compare(options: CompareOptions) -> anyhow::Result<bool> {
    let found = loadgen::compare(&options, options.show)?;
    for difference in &found.shown {
        println!(
            "{:?} {}:\n  {}: {}\n  {}: {}",
            difference.method,
            difference.expected.ip.as_deref().unwrap_or_default(),
            options.addr,
            to_json(&difference.expected),
            options.against,
            to_json(&difference.got)
        );
    }
    println!(
        "{} answers compared ({} of them corrected), {} differences",
        found.compared, found.corrected, found.differing
    );
    Ok(found.differing == 0)
}
