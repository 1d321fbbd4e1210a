//! Fills the codes a source lacks: ISO 3166-1 alpha-2 from a country name
//! (Chinese or English), and GB/T 2260 province and city codes from
//! Chinese names, matching both 广东 and 广东省. The dictionaries are the
//! reference data under `reference/`, embedded at build time.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use crate::domain::PlaceBuf;

const COUNTRY_CODES: &str = include_str!("../../../reference/country_codes.csv");
const GBT2260: &str = include_str!("../../../reference/gbt2260.csv");

/// Suffixes official names carry and IP databases usually drop, longest first.
const SUFFIXES: [&str; 10] = [
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "自治州",
    "地区",
    "省",
    "市",
    "盟",
];

/// The dictionaries, parsed once.
pub struct Codes {
    countries: HashMap<String, String>,
    /// Every ISO 3166-1 alpha-2 code the dictionary knows.
    country_codes: HashSet<String>,
    /// Short province name → six-digit code.
    provinces: HashMap<String, String>,
    /// (two-digit province prefix, short city name) → six-digit code.
    cities: HashMap<(String, String), String>,
    /// Cities administered directly by their province (天门, 济源, …), which
    /// GB/T 2260 lists at county level: same key, same value.
    county_level_cities: HashMap<(String, String), String>,
}

/// Whether two place names are one place: equal without the suffixes
/// official names carry, ASCII case aside (广东 and 广东省, Beijing and BEIJING).
pub fn same_place_name(a: &str, b: &str) -> bool {
    short(a).eq_ignore_ascii_case(short(b))
}

fn short(name: &str) -> &str {
    let name = name.trim();
    SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).filter(|rest| rest.chars().count() >= 2))
        .unwrap_or(name)
}

impl Codes {
    /// The embedded dictionaries.
    pub fn get() -> &'static Codes {
        static CODES: OnceLock<Codes> = OnceLock::new();
        CODES.get_or_init(Codes::parse)
    }

    fn parse() -> Codes {
        let mut countries = HashMap::new();
        for record in csv::Reader::from_reader(COUNTRY_CODES.as_bytes()).records() {
            let record = record.expect("embedded country_codes.csv is valid");
            countries.insert(record[0].to_owned(), record[1].to_owned());
        }
        let mut provinces = HashMap::new();
        let mut cities = HashMap::new();
        let mut county_level_cities = HashMap::new();
        for record in csv::Reader::from_reader(GBT2260.as_bytes()).records() {
            let record = record.expect("embedded gbt2260.csv is valid");
            let (code, name) = (record[0].to_owned(), &record[1]);
            match &record[2] {
                "province" => {
                    provinces.insert(short(name).to_owned(), code);
                }
                "city" => {
                    cities.insert((code[..2].to_owned(), short(name).to_owned()), code);
                }
                // xx90yy: county-level divisions directly under the province.
                "district" if &code[2..4] == "90" => {
                    county_level_cities.insert((code[..2].to_owned(), short(name).to_owned()), code);
                }
                _ => {}
            }
        }
        Codes {
            country_codes: countries.values().cloned().collect(),
            countries,
            provinces,
            cities,
            county_level_cities,
        }
    }

    pub fn is_country_code(&self, code: &str) -> bool {
        self.country_codes.contains(code)
    }

    /// Fills whichever of the country, province and city codes are empty.
    pub fn fill(&self, place: &mut PlaceBuf) {
        if place.country_code.is_empty() {
            if let Some(code) = self.countries.get(place.country_name.trim()) {
                place.country_code = code.clone();
            }
        }
        if !place.is_china() || place.province_name.is_empty() {
            return;
        }
        let Some(province) = self.provinces.get(short(&place.province_name)) else {
            return;
        };
        if place.province_code.is_empty() {
            place.province_code = province.clone();
        }
        if place.city_code.is_empty() && !place.city_name.is_empty() {
            let city = short(&place.city_name);
            let key = (province[..2].to_owned(), city.to_owned());
            if let Some(code) = self.cities.get(&key).or_else(|| self.county_level_cities.get(&key)) {
                place.city_code = code.clone();
            } else if city == short(&place.province_name) {
                // A municipality (北京, 上海, …) is its own city: xx0100.
                place.city_code = format!("{}0100", &province[..2]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(country: &str, province: &str, city: &str) -> (String, String, String) {
        let mut place = PlaceBuf {
            country_name: country.into(),
            province_name: province.into(),
            city_name: city.into(),
            ..PlaceBuf::default()
        };
        Codes::get().fill(&mut place);
        (place.country_code, place.province_code, place.city_code)
    }

    #[test]
    fn chinese_names_get_gbt2260_codes_with_or_without_suffixes() {
        let expected = ("CN".to_owned(), "440000".to_owned(), "440100".to_owned());
        assert_eq!(filled("中国", "广东", "广州"), expected);
        assert_eq!(filled("中国", "广东省", "广州市"), expected);
        assert_eq!(filled("中国", "广西", "南宁").1, "450000");
        assert_eq!(filled("中国", "新疆", "乌鲁木齐").1, "650000");
        assert_eq!(filled("中国", "香港", "").1, "810000");
    }

    #[test]
    fn cities_under_a_province_directly_get_their_county_level_code() {
        assert_eq!(filled("中国", "湖北", "天门").2, "429006");
        assert_eq!(filled("中国", "河南省", "济源市").2, "419001");
    }

    #[test]
    fn municipalities_are_their_own_city() {
        assert_eq!(
            filled("中国", "北京", "北京"),
            ("CN".into(), "110000".into(), "110100".into())
        );
        assert_eq!(filled("中国", "上海市", "上海市").2, "310100");
    }

    #[test]
    fn countries_match_in_chinese_and_english() {
        assert_eq!(filled("美国", "", "").0, "US");
        assert_eq!(filled("United States", "", "").0, "US");
        assert_eq!(filled("South Korea", "", "").0, "KR");
        assert_eq!(filled("China", "", "").0, "CN");
        assert_eq!(filled("Atlantis", "", "").0, "");
    }

    #[test]
    fn existing_codes_are_kept_and_foreign_provinces_get_none() {
        let mut place = PlaceBuf {
            country_name: "美国".into(),
            province_name: "加利福尼亚州".into(),
            country_code: "XX".into(),
            ..PlaceBuf::default()
        };
        Codes::get().fill(&mut place);
        assert_eq!((place.country_code.as_str(), place.province_code.as_str()), ("XX", ""));
    }
}
