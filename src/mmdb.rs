//! The MaxMind GeoIP2/GeoLite2 City fallback: one reader, shared by every
//! request, mapping a record to the service's answer.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use maxminddb::geoip2::{self, Names};
use maxminddb::Reader;

use crate::domain::{Located, Place, Source};

#[derive(Debug, thiserror::Error)]
pub enum MmdbError {
    #[error("cannot open MaxMind database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error("MaxMind database {path} is a {kind} database, not a City database")]
    NotCity { path: PathBuf, kind: String },
    #[error("MaxMind lookup failed: {0}")]
    Lookup(#[from] maxminddb::MaxMindDbError),
}

/// An open City database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl GeoDb {
    /// Opens `path` and checks that it is a City-type database, so that a
    /// wrong file fails at start-up rather than answering every lookup empty.
    pub fn open(path: &Path) -> Result<GeoDb, MmdbError> {
        let reader = Reader::open_readfile(path).map_err(|source| MmdbError::Open {
            path: path.to_owned(),
            source,
        })?;
        let kind = &reader.metadata().database_type;
        if !kind.contains("City") {
            return Err(MmdbError::NotCity {
                path: path.to_owned(),
                kind: kind.clone(),
            });
        }
        Ok(GeoDb {
            reader,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `database_type` and build time (UTC) for the start-up log line.
    pub fn describe(&self) -> String {
        let meta = self.reader.metadata();
        let built = UNIX_EPOCH + Duration::from_secs(meta.build_epoch);
        format!(
            "{} built {}",
            meta.database_type,
            humantime::format_rfc3339_seconds(built)
        )
    }

    /// Locates `ip` with names in `lang` (an mmdb language key such as
    /// `zh-CN`), falling back to English where that language is missing.
    /// A record with neither `country` nor `registered_country` is no answer.
    pub fn lookup(&self, ip: IpAddr, lang: &str) -> Result<Option<Located>, MmdbError> {
        let result = self.reader.lookup(ip)?;
        let Some(city) = result.decode::<geoip2::City>()? else {
            return Ok(None);
        };
        let Some(place) = place_of(&city, lang) else {
            return Ok(None);
        };
        let network = result.network()?;
        Ok(Some(Located {
            place,
            start: network.network(),
            end: network.broadcast(),
            source: Source::MaxMind,
        }))
    }
}

/// The service's view of a City record, names in `lang` with English
/// fallback; `None` for a record with neither `country` nor
/// `registered_country`. Shared by lookups and the mmdb importer.
pub fn place_of(city: &geoip2::City<'_>, lang: &str) -> Option<Place> {
    let country = if city.country.is_empty() {
        &city.registered_country
    } else {
        &city.country
    };
    if country.is_empty() {
        return None;
    }
    let province = city.subdivisions.first();
    Some(Place {
        country_code: country.iso_code.unwrap_or_default().to_owned(),
        country_name: name(&country.names, lang),
        province_code: province.and_then(|p| p.iso_code).unwrap_or_default().to_owned(),
        province_name: province.map(|p| name(&p.names, lang)).unwrap_or_default(),
        city_code: city.city.geoname_id.map(|id| id.to_string()).unwrap_or_default(),
        city_name: name(&city.city.names, lang),
        district_name: String::new(),
        carrier: String::new(),
    })
}

fn name(names: &Names<'_>, lang: &str) -> String {
    let wanted = match lang {
        "zh-CN" => names.simplified_chinese,
        "de" => names.german,
        "es" => names.spanish,
        "fr" => names.french,
        "ja" => names.japanese,
        "pt-BR" => names.brazilian_portuguese,
        "ru" => names.russian,
        _ => names.english,
    };
    wanted.or(names.english).unwrap_or_default().to_owned()
}
