//! MaxMind GeoIP2/GeoLite2 City files: every network of a family, mapped
//! exactly as the service maps a MaxMind answer.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};

use super::{Codes, Family, Origin, Range, RangeBuilder, RangeSink, SharedPlaces, SourceError};
use crate::data::mmdb::decode_place;
use crate::domain::{Lang, Place, PlaceBuf};

/// Ranges of `family` with names in `lang`; adjacent
/// networks whose stored values match merge, whatever else their records
/// hold (postal codes, coordinates).
pub fn ranges(bytes: &[u8], family: Family, lang: Lang, codes: &Codes) -> Result<RangeBuilder, SourceError> {
    let mut out = RangeBuilder::default();
    ranges_into(bytes, family, lang, codes, &mut out)?;
    Ok(out)
}

/// The ranges of [`ranges`], in address order, given to `sink` as the
/// networks are read.
pub fn ranges_into(
    bytes: &[u8],
    family: Family,
    lang: Lang,
    codes: &Codes,
    sink: &mut impl RangeSink,
) -> Result<(), SourceError> {
    let reader = Reader::from_source(bytes).map_err(|e| SourceError::NotFormat(e.to_string()))?;
    let all: IpNetwork = match (family, reader.metadata().ip_version) {
        (Family::V4, _) => "0.0.0.0/0".parse().expect("valid network"),
        (Family::V6, 6) => "::/0".parse().expect("valid network"),
        (Family::V6, _) => return Err(SourceError::NotFormat("an IPv4-only mmdb has no IPv6 networks".into())),
    };
    let networks = reader
        .within(all, WithinOptions::default())
        .map_err(|e| SourceError::NotFormat(e.to_string()))?;
    let mut places: HashMap<usize, Option<Place>> = HashMap::new();
    // Half a million records name some 120,000 places.
    let mut shared = SharedPlaces::default();
    for found in networks {
        let found = found.map_err(|e| SourceError::NotFormat(e.to_string()))?;
        let network = found.network().map_err(|e| SourceError::NotFormat(e.to_string()))?;
        let (start, end) = match (network.network(), network.broadcast()) {
            (IpAddr::V4(start), IpAddr::V4(end)) if family == Family::V4 => {
                (u128::from(u32::from(start)), u128::from(u32::from(end)))
            }
            (IpAddr::V6(start), IpAddr::V6(end)) if family == Family::V6 => {
                // IPv4 sits under ::/96 of an IPv6 tree; it belongs to the IPv4 tables.
                if u128::from(start) >> 32 == 0 {
                    continue;
                }
                (u128::from(start), u128::from(end))
            }
            _ => continue,
        };
        let offset = found.offset().unwrap_or_default();
        let place = match places.get(&offset) {
            Some(place) => place.clone(),
            None => {
                let place = decode_place(&found, lang).map_err(|e| SourceError::Row {
                    at: Origin::Network(network),
                    reason: format!("record does not decode: {e}"),
                })?;
                let place = place.map(|place| {
                    let mut place = PlaceBuf::from(&place);
                    codes.fill(&mut place);
                    shared.share(place.build())
                });
                places.insert(offset, place.clone());
                place
            }
        };
        if let Some(place) = place {
            sink.push(Range {
                start,
                end,
                place,
                origin: Origin::Network(network),
            })?;
        }
    }
    Ok(())
}
