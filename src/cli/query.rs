//! `query`: ask a running server, print a table or JSON lines.

use anyhow::Context;
use unicode_width::UnicodeWidthStr;

use super::QueryArgs;
use crate::thrift::{GeoInfo, GeoRequest, TIPServiceSyncClient};
use crate::tools::client::{self, to_json, Wire};

/// Runs `query`: a blocking client, so it stays out of the async runtime.
/// Whether every address was answered (`error_no` 0).
pub fn query(args: QueryArgs) -> anyhow::Result<bool> {
    let mut client = client::Reconnecting::connect(&args.addr, Wire::new(args.transport, args.protocol), args.timeout)
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let answers = client
        .call(|client| {
            let ips = args.ips.clone();
            if args.i18n {
                client.query_i18n_geo_info_by_i_p(ips)
            } else if let Some(lang) = &args.lang {
                client.query_geo_info(GeoRequest::new(ips, lang.clone()))
            } else {
                client.query_geo_info_by_i_p(ips)
            }
        })
        .with_context(|| format!("query to {} failed", args.addr))?;

    if args.json {
        for answer in &answers {
            println!("{}", to_json(answer));
        }
    } else {
        print!("{}", table(&answers));
    }
    Ok(answers.iter().all(|g| g.error_no.unwrap_or(0) == 0))
}

/// A table, one row per address; widths count display columns, so CJK
/// names line up. An error row gives its number and message after the IP,
/// and the network where the answer names one. A corrected answer says so
/// beside its source.
fn table(answers: &[GeoInfo]) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let pair =
        |code: &Option<String>, name: &Option<String>| format!("{} {}", text(code), text(name)).trim().to_owned();
    // `AS13335 Cloudflare, Inc.`, where the answer names a network.
    let network = |g: &GeoInfo| match g.geoip_asn {
        Some(asn) => format!("AS{asn} {}", text(&g.geoip_as_org)),
        None => String::new(),
    };
    let source = |g: &GeoInfo| match g.geoip_corrected {
        Some(true) => format!("{} (corrected)", text(&g.geoip_source)),
        _ => text(&g.geoip_source),
    };
    let header = [
        "IP", "SOURCE", "COUNTRY", "PROVINCE", "CITY", "DISTRICT", "CARRIER", "NETWORK", "RANGE",
    ];
    let rows: Vec<Vec<String>> = answers
        .iter()
        .map(|g| match g.error_no.unwrap_or(0) {
            0 => vec![
                text(&g.ip),
                source(g),
                pair(&g.geoip_country_code, &g.geoip_country_name),
                pair(&g.geoip_province_code, &g.geoip_province_name),
                pair(&g.geoip_city_code, &g.geoip_city_name),
                text(&g.geoip_district_name),
                text(&g.geoip_carrier),
                network(g),
                format!("{} - {}", text(&g.geoip_start_ip_str), text(&g.geoip_end_ip_str)),
            ],
            n => {
                let mut error = format!("error {n}: {}", text(&g.error_msg));
                if g.geoip_asn.is_some() {
                    error = format!("{error} (network {})", network(g));
                }
                vec![text(&g.ip), error]
            }
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows.iter().filter(|r| r.len() == header.len()) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.width().min(widths[i]) + 2));
            }
        }
        out.push('\n');
    }
    out
}
