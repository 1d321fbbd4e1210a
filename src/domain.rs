//! The service's vocabulary: parsed addresses, languages, sources and
//! answers. No I/O lives here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Inputs longer than this are rejected before parsing; the longest valid
/// IPv6 text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) is 45 bytes.
const MAX_IP_TEXT: usize = 64;

/// An address ready for lookup. IPv4-mapped IPv6 input becomes `V4`, so it
/// is answered exactly as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Addr {
    /// Parses one input: trimmed, a dotted quad or any IPv6 text form,
    /// nothing else (no CIDR, port, zone index or leading-zero octets).
    pub fn parse(input: &str) -> Result<Addr, LookupError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(LookupError::InvalidIp("empty address".into()));
        }
        if text.len() > MAX_IP_TEXT {
            return Err(LookupError::InvalidIp(format!(
                "address text is {} bytes, longer than any IP address",
                text.len()
            )));
        }
        // std's parser is strict: it rejects leading zeros, CIDR suffixes,
        // ports, brackets and zone indexes.
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Ok(Addr::V4(v4)),
            Ok(IpAddr::V6(v6)) => Ok(match v6.to_ipv4_mapped() {
                Some(v4) => Addr::V4(v4),
                None => Addr::V6(v6),
            }),
            Err(_) => Err(LookupError::InvalidIp(format!(
                "{text:?} is not an IPv4 or IPv6 address"
            ))),
        }
    }

    pub fn ip(self) -> IpAddr {
        match self {
            Addr::V4(v4) => IpAddr::V4(v4),
            Addr::V6(v6) => IpAddr::V6(v6),
        }
    }
}

/// The language of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    ZhCn,
    En,
    /// A language only the MaxMind database carries; the value is its key
    /// in the mmdb `names` maps.
    MaxMindOnly(&'static str),
}

impl Lang {
    /// Every language `parse` accepts, as a client should spell it.
    pub const SUPPORTED: &'static str = "zh-CN, en, de, es, fr, ja, pt-BR, ru";

    /// Matches a client's `lang` case-insensitively, with the aliases old
    /// clients send (`zh`, `zh_CN`, `cn`, empty, `en-US`).
    pub fn parse(lang: &str) -> Result<Lang, LookupError> {
        let key = lang.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match key.as_str() {
            "" | "zh" | "zh-cn" | "cn" | "zh-hans" => Lang::ZhCn,
            "en" | "en-us" => Lang::En,
            "de" => Lang::MaxMindOnly("de"),
            "es" => Lang::MaxMindOnly("es"),
            "fr" => Lang::MaxMindOnly("fr"),
            "ja" => Lang::MaxMindOnly("ja"),
            "pt-br" | "pt" => Lang::MaxMindOnly("pt-BR"),
            "ru" => Lang::MaxMindOnly("ru"),
            _ => {
                return Err(LookupError::UnsupportedLang(format!(
                    "unsupported lang {lang:?}; supported: {}",
                    Lang::SUPPORTED
                )))
            }
        })
    }
}

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cn,
    En,
    V6,
    MaxMind,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cn => "cn",
            Source::En => "en",
            Source::V6 => "v6",
            Source::MaxMind => "maxmind",
        }
    }
}

/// A located address: names, codes and the range that matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub country_code: String,
    pub country_name: String,
    pub province_code: String,
    pub province_name: String,
    pub city_code: String,
    pub city_name: String,
    pub district_name: String,
    pub carrier: String,
}

impl Place {
    /// A row whose names are all empty says nothing and counts as no row.
    pub fn is_blank(&self) -> bool {
        self.country_name.is_empty()
            && self.province_name.is_empty()
            && self.city_name.is_empty()
            && self.district_name.is_empty()
            && self.carrier.is_empty()
    }
}

/// One successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub place: Place,
    pub start: IpAddr,
    pub end: IpAddr,
    pub source: Source,
}

/// Why an input got no answer; each maps to one wire error number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("invalid IP: {0}")]
    InvalidIp(String),
    #[error("not found in any source")]
    NotFound,
    #[error("backend unavailable: {0}")]
    Backend(String),
    #[error("{0}")]
    UnsupportedLang(String),
}

impl LookupError {
    /// The wire `error_no` documented in the IDL.
    pub fn error_no(&self) -> i32 {
        match self {
            LookupError::InvalidIp(_) => 1,
            LookupError::NotFound => 2,
            LookupError::Backend(_) => 3,
            LookupError::UnsupportedLang(_) => 4,
        }
    }
}

/// The answer for one input.
pub type Outcome = Result<Located, LookupError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Addr {
        Addr::V4(s.parse().unwrap())
    }

    #[test]
    fn accepts_ipv4_and_every_ipv6_form() {
        assert_eq!(Addr::parse(" 8.8.8.8\t").unwrap(), v4("8.8.8.8"));
        for text in ["240e:1::1", "240E:0001:0:0:0:0:0:1", "::1", "::", "2001:db8::1.2.3.4"] {
            assert!(matches!(Addr::parse(text), Ok(Addr::V6(_))), "{text}");
        }
    }

    #[test]
    fn mapped_ipv6_is_answered_as_ipv4() {
        for text in ["::ffff:1.2.3.4", "::FFFF:102:304", "0:0:0:0:0:ffff:1.2.3.4"] {
            assert_eq!(Addr::parse(text).unwrap(), v4("1.2.3.4"), "{text}");
        }
        assert_eq!(Addr::parse("::FFFF:b73e:3901").unwrap(), v4("183.62.57.1"));
    }

    #[test]
    fn rejects_everything_else() {
        let long = "1".repeat(10_000);
        for text in [
            "",
            "   ",
            "localhost",
            "1.2.3.0/24",
            "1.2.3.4:80",
            "[::1]:80",
            "256.1.1.1",
            "010.1.1.1",
            "1.2.3",
            "fe80::1%eth0",
            "::ffff:1.2.3.4/120",
            "1.2.3.4.5",
            "\u{0}",
            "中国",
            &long,
        ] {
            let err = Addr::parse(text).unwrap_err();
            assert_eq!(err.error_no(), 1, "{text:?}");
        }
    }

    #[test]
    fn languages_match_case_insensitively_with_aliases() {
        for lang in ["", "zh", "zh-CN", "ZH_cn", "cn", " zh-cn "] {
            assert_eq!(Lang::parse(lang).unwrap(), Lang::ZhCn, "{lang:?}");
        }
        for lang in ["en", "EN", "en-US", "en_us"] {
            assert_eq!(Lang::parse(lang).unwrap(), Lang::En, "{lang:?}");
        }
        assert_eq!(Lang::parse("PT-br").unwrap(), Lang::MaxMindOnly("pt-BR"));
        assert_eq!(Lang::parse("ja").unwrap(), Lang::MaxMindOnly("ja"));
        let err = Lang::parse("klingon").unwrap_err();
        assert_eq!(err.error_no(), 4);
        assert!(err.to_string().contains("zh-CN, en, de"), "{err}");
    }
}
