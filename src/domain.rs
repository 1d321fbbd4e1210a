//! The service's vocabulary: parsed addresses, languages, sources and
//! answers. No I/O lives here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use triomphe::HeaderSlice;

use crate::ip_text;

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

/// The part of an input an answer echoes: all of it, or the first
/// `MAX_IP_TEXT` bytes of one too long to be an address, so that a reply
/// never outgrows its request.
pub fn echo(input: &str) -> &str {
    if input.len() <= MAX_IP_TEXT {
        return input;
    }
    let mut end = MAX_IP_TEXT;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    &input[..end]
}

impl Addr {
    /// Parses one input: trimmed, a dotted quad or any IPv6 text form,
    /// nothing else (no CIDR, port, zone index or leading-zero octets).
    pub fn parse(input: &str) -> Result<Addr, LookupError> {
        // Text that begins and ends with a visible ASCII character has
        // nothing to trim; looking at two bytes is cheaper than `trim`'s
        // Unicode-aware walk from both ends.
        let text = match input.as_bytes() {
            [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => input,
            _ => input.trim(),
        };
        if text.is_empty() {
            return Err(LookupError::InvalidIp("empty address".into()));
        }
        if text.len() > MAX_IP_TEXT {
            return Err(LookupError::InvalidIp(format!(
                "address text is {} bytes, longer than any IP address (ip echoes its first {MAX_IP_TEXT})",
                text.len()
            )));
        }
        // As std's parser reads them: leading zeros, CIDR suffixes, ports,
        // brackets and zone indexes are refused.
        match ip_text::parse(text.as_bytes()) {
            Some(IpAddr::V4(v4)) => Ok(Addr::V4(v4)),
            Some(IpAddr::V6(v6)) => Ok(match v6.to_ipv4_mapped() {
                Some(v4) => Addr::V4(v4),
                None => Addr::V6(v6),
            }),
            None => Err(LookupError::InvalidIp(format!(
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

/// A language an answer can be in. The tables hold zh-CN and en; every
/// language is a key of the MaxMind `names` maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    ZhCn,
    En,
    De,
    Es,
    Fr,
    Ja,
    PtBr,
    Ru,
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
            "de" => Lang::De,
            "es" => Lang::Es,
            "fr" => Lang::Fr,
            "ja" => Lang::Ja,
            "pt-br" | "pt" => Lang::PtBr,
            "ru" => Lang::Ru,
            _ => {
                return Err(LookupError::UnsupportedLang(format!(
                    "unsupported lang {lang:?}; supported: {}",
                    Lang::SUPPORTED
                )))
            }
        })
    }

    /// The language of a table's names (the network tables' are English).
    pub fn of_table(table: Table) -> Lang {
        match table {
            Table::Cn | Table::V6 => Lang::ZhCn,
            Table::En | Table::Asn | Table::AsnV6 => Lang::En,
        }
    }

    /// The key of this language in MaxMind `names` maps.
    pub fn mmdb_key(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
            Lang::De => "de",
            Lang::Es => "es",
            Lang::Fr => "fr",
            Lang::Ja => "ja",
            Lang::PtBr => "pt-BR",
            Lang::Ru => "ru",
        }
    }
}

/// The range tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// IPv4, Chinese names.
    Cn,
    /// IPv4, English names.
    En,
    /// IPv6, Chinese names.
    V6,
    /// IPv4, the autonomous system announcing each range.
    Asn,
    /// IPv6, the autonomous system announcing each range.
    AsnV6,
}

/// What a table's rows say about their ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RowKind {
    /// Where the addresses are: [`PLACE_COLUMNS`].
    #[default]
    Place,
    /// Which network announces them: [`NETWORK_COLUMNS`].
    Network,
}

impl Table {
    pub const ALL: [Table; 5] = [Table::Cn, Table::En, Table::V6, Table::Asn, Table::AsnV6];

    pub fn name(self) -> &'static str {
        match self {
            Table::Cn => "ip_service_cn",
            Table::En => "ip_service_en",
            Table::V6 => "ip_service_v6",
            Table::Asn => "ip_service_asn",
            Table::AsnV6 => "ip_service_asn_v6",
        }
    }

    pub fn kind(self) -> RowKind {
        match self {
            Table::Cn | Table::En | Table::V6 => RowKind::Place,
            Table::Asn | Table::AsnV6 => RowKind::Network,
        }
    }

    /// The table's value columns, in the order a row's [`Place`] holds
    /// them: every query, COPY, the swap and `check` use this order.
    pub fn columns(self) -> &'static [Column] {
        match self.kind() {
            RowKind::Place => &PLACE_COLUMNS,
            RowKind::Network => &NETWORK_COLUMNS,
        }
    }

    /// The table called `name` (`ip_service_cn`), as NOTIFY payloads name it.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The source an answer from this table names; none for the network
    /// tables, which answer no place.
    pub fn source(self) -> Option<Source> {
        match self {
            Table::Cn => Some(Source::Cn),
            Table::En => Some(Source::En),
            Table::V6 => Some(Source::V6),
            Table::Asn | Table::AsnV6 => None,
        }
    }

    pub fn family(self) -> Family {
        match self {
            Table::Cn | Table::En | Table::Asn => Family::V4,
            Table::V6 | Table::AsnV6 => Family::V6,
        }
    }

    /// The network table of this table's family.
    pub fn networks_of(family: Family) -> Table {
        match family {
            Family::V4 => Table::Asn,
            Family::V6 => Table::AsnV6,
        }
    }
}

/// The tables that hold IPv4 ranges: what an IPv4 lookup may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V4Table {
    Cn,
    En,
}

impl V4Table {
    pub fn source(self) -> Source {
        match self {
            V4Table::Cn => Source::Cn,
            V4Table::En => Source::En,
        }
    }
}

impl From<V4Table> for Table {
    fn from(table: V4Table) -> Table {
        match table {
            V4Table::Cn => Table::Cn,
            V4Table::En => Table::En,
        }
    }
}

/// The address family a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// An address of this family from its number (IPv4 in the low 32 bits).
    pub fn ip(self, value: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    /// An address of this family as text.
    pub fn text(self, value: u128) -> String {
        self.ip(value).to_string()
    }
}

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cn,
    En,
    V6,
    MaxMind,
    /// No source knew the place; a correction alone gives it.
    Correction,
}

impl Source {
    /// Every source, in the order metrics count them (`source as usize`).
    pub const ALL: [Source; 5] = [Source::Cn, Source::En, Source::V6, Source::MaxMind, Source::Correction];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cn => "cn",
            Source::En => "en",
            Source::V6 => "v6",
            Source::MaxMind => "maxmind",
            Source::Correction => "correction",
        }
    }
}

/// The languages the range tables hold, and so the languages corrections
/// are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableLang {
    ZhCn,
    En,
}

impl TableLang {
    pub const ALL: [TableLang; 2] = [TableLang::ZhCn, TableLang::En];

    /// How the language is spelt in a correction's `lang` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TableLang::ZhCn => "zh-CN",
            TableLang::En => "en",
        }
    }

    /// The corrections an IPv4 lookup applies: those in the language of
    /// the table it asks. A route that asks none answers from MaxMind in
    /// a language the tables lack, whose missing names MaxMind itself
    /// gives in English: it takes the English corrections.
    pub fn of_v4(table: Option<V4Table>) -> TableLang {
        match table {
            Some(V4Table::Cn) => TableLang::ZhCn,
            Some(V4Table::En) | None => TableLang::En,
        }
    }

    /// The corrections an IPv6 lookup applies: the v6 table's (zh-CN) if
    /// it asks it, else English ones as for [`TableLang::of_v4`].
    pub fn of_v6(asks_v6: bool) -> TableLang {
        match asks_v6 {
            true => TableLang::ZhCn,
            false => TableLang::En,
        }
    }
}

/// A value column of the range tables: its name and its width
/// (`varchar(n)`, in characters, or digits for a number), as the
/// migrations create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub width: usize,
    /// A `bigint` column, held as its decimal text like every value.
    pub number: bool,
}

/// The range tables' text columns, in the one order every query, COPY,
/// the swap and `check` use: the order of [`PlaceFields::columns`]. A test
/// holds the widths equal to the migrated schema's.
pub const PLACE_COLUMNS: [Column; 8] = [
    Column {
        name: "country_code",
        width: 16,
        number: false,
    },
    Column {
        name: "country_name",
        width: 100,
        number: false,
    },
    Column {
        name: "province_code",
        width: 16,
        number: false,
    },
    Column {
        name: "province_name",
        width: 100,
        number: false,
    },
    Column {
        name: "city_code",
        width: 16,
        number: false,
    },
    Column {
        name: "city_name",
        width: 100,
        number: false,
    },
    Column {
        name: "district_name",
        width: 100,
        number: false,
    },
    Column {
        name: "carrier_name",
        width: 255,
        number: false,
    },
];

/// The network tables' columns: the AS number (`bigint`, 0 to
/// 4294967295) and its organisation.
pub const NETWORK_COLUMNS: [Column; 2] = [
    Column {
        name: "asn",
        width: 10,
        number: true,
    },
    Column {
        name: "as_org",
        width: 255,
        number: false,
    },
];

/// The largest AS number (32-bit ASNs, RFC 6793).
pub const MAX_ASN: u32 = u32::MAX;

/// A place's fields by name, borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PlaceFields<'a> {
    pub country_code: &'a str,
    pub country_name: &'a str,
    pub province_code: &'a str,
    pub province_name: &'a str,
    pub city_code: &'a str,
    pub city_name: &'a str,
    pub district_name: &'a str,
    pub carrier: &'a str,
}

impl<'a> PlaceFields<'a> {
    /// The fields from values in [`PLACE_COLUMNS`] order.
    #[inline]
    pub fn from_columns(values: [&'a str; 8]) -> PlaceFields<'a> {
        let [country_code, country_name, province_code, province_name, city_code, city_name, district_name, carrier] =
            values;
        PlaceFields {
            country_code,
            country_name,
            province_code,
            province_name,
            city_code,
            city_name,
            district_name,
            carrier,
        }
    }

    /// The values in [`PLACE_COLUMNS`] order.
    #[inline]
    pub fn columns(self) -> [&'a str; 8] {
        [
            self.country_code,
            self.country_name,
            self.province_code,
            self.province_name,
            self.city_code,
            self.city_name,
            self.district_name,
            self.carrier,
        ]
    }

    /// Every name empty: a row that says nothing, and counts as no row.
    pub fn is_blank(self) -> bool {
        [
            self.country_name,
            self.province_name,
            self.city_name,
            self.district_name,
            self.carrier,
        ]
        .iter()
        .all(|name| name.is_empty())
    }
}

/// Where an address is: names and codes, all the text in one shared
/// allocation with the ends that cut it into fields, so that a copy costs
/// a reference count, an index's array of places is 16 bytes a place, and
/// an answer's text sits in one or two cache lines. Built from
/// [`PlaceFields`].
///
/// A network table's row is held the same way, its values in the first
/// [`NETWORK_COLUMNS`] slots, so that every table shares the index, the
/// importer and the snapshots; [`Network`] reads it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Place(triomphe::Arc<HeaderSlice<PlaceHeader, str>>);

/// What every lookup reads of a place besides its text, decided once.
#[derive(PartialEq, Eq, Hash)]
struct PlaceHeader {
    /// Where each field but the last ends in the text, in
    /// [`PLACE_COLUMNS`] order; the last ends with the text.
    ends: [u32; 7],
    /// The first field as an AS number, when `is_network`: a network
    /// row's number, read once here instead of on every lookup (two
    /// fields, not an `Option`, keep the header at 36 bytes).
    asn: u32,
    is_network: bool,
    /// [`Place::is_china`] and [`Place::is_blank`]: every lookup asks,
    /// and need not read the text to know.
    china: bool,
    blank: bool,
}

impl Place {
    pub fn new(fields: PlaceFields) -> Place {
        let columns = fields.columns();
        let mut text = String::with_capacity(columns.iter().map(|f| f.len()).sum());
        let ends = columns.map(|field| {
            text.push_str(field);
            text.len() as u32
        });
        let asn = parse_asn(columns[0].as_bytes());
        let header = PlaceHeader {
            ends: std::array::from_fn(|i| ends[i]),
            asn: asn.unwrap_or(0),
            is_network: asn.is_some(),
            china: is_china(fields.country_code, fields.country_name),
            blank: fields.is_blank(),
        };
        Place(triomphe::Arc::from_header_and_str(header, &text))
    }

    /// A place from values in [`PLACE_COLUMNS`] order.
    pub fn from_columns(values: [&str; 8]) -> Place {
        Place::new(PlaceFields::from_columns(values))
    }

    /// The field at `i` in [`PLACE_COLUMNS`] order.
    #[inline]
    fn field(&self, i: usize) -> &str {
        let (ends, text) = (&self.0.header.ends, &self.0.slice);
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        let end = ends.get(i).map_or(text.len(), |&end| end as usize);
        &text[start..end]
    }

    /// Every field, by name.
    #[inline]
    pub fn fields(&self) -> PlaceFields<'_> {
        PlaceFields::from_columns(std::array::from_fn(|i| self.field(i)))
    }

    pub fn country_code(&self) -> &str {
        self.field(0)
    }

    pub fn country_name(&self) -> &str {
        self.field(1)
    }

    pub fn province_code(&self) -> &str {
        self.field(2)
    }

    pub fn province_name(&self) -> &str {
        self.field(3)
    }

    pub fn city_code(&self) -> &str {
        self.field(4)
    }

    pub fn city_name(&self) -> &str {
        self.field(5)
    }

    pub fn district_name(&self) -> &str {
        self.field(6)
    }

    pub fn carrier(&self) -> &str {
        self.field(7)
    }

    /// Asks for the place to be loaded ahead of use: its count and ends,
    /// and the start of its text, which may begin on the next cache line.
    #[inline]
    pub fn prefetch(&self) {
        Place::prefetch_at(self.address());
    }

    /// Where the place's header lies: with [`Place::prefetch_at`], lets an
    /// index ask for a place before it has read which place it is.
    pub fn address(&self) -> usize {
        triomphe::Arc::as_ptr(&self.0).cast::<u8>() as usize
    }

    /// [`Place::prefetch`] for the place whose [`Place::address`] is
    /// `address`; any address is safe to ask for.
    #[inline]
    pub fn prefetch_at(address: usize) {
        crate::memory::prefetch(address as *const u8);
        crate::memory::prefetch(address.wrapping_add(std::mem::size_of::<PlaceHeader>()) as *const u8);
    }

    /// The size of the place's allocation: its count, header and text.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<usize>() + std::mem::size_of_val::<HeaderSlice<PlaceHeader, str>>(&self.0)
    }

    /// A row whose names are all empty says nothing and counts as no row.
    pub fn is_blank(&self) -> bool {
        self.0.header.blank
    }

    /// Whether this is a network table's row: its first value an AS number.
    pub fn is_network(&self) -> bool {
        self.0.header.is_network
    }

    /// Whether this place is in China: the rule that keeps a table row from
    /// being handed to MaxMind.
    pub fn is_china(&self) -> bool {
        self.0.header.china
    }
}

impl Default for Place {
    /// No values: a blank place.
    fn default() -> Place {
        Place::new(PlaceFields::default())
    }
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Place").field(&self.fields()).finish()
    }
}

/// The one China rule, for answers and for the importer's GB/T 2260 codes.
/// Hong Kong, Macau and Taiwan rows labelled 中国 count.
fn is_china(country_code: &str, country_name: &str) -> bool {
    country_code == "CN" || country_name == "中国" || country_name == "China"
}

/// A place while it is assembled: parsed from a source, codes filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaceBuf {
    pub country_code: String,
    pub country_name: String,
    pub province_code: String,
    pub province_name: String,
    pub city_code: String,
    pub city_name: String,
    pub district_name: String,
    pub carrier: String,
}

impl From<&Place> for PlaceBuf {
    fn from(place: &Place) -> PlaceBuf {
        let f = place.fields();
        PlaceBuf {
            country_code: f.country_code.to_owned(),
            country_name: f.country_name.to_owned(),
            province_code: f.province_code.to_owned(),
            province_name: f.province_name.to_owned(),
            city_code: f.city_code.to_owned(),
            city_name: f.city_name.to_owned(),
            district_name: f.district_name.to_owned(),
            carrier: f.carrier.to_owned(),
        }
    }
}

impl PlaceBuf {
    pub fn is_china(&self) -> bool {
        is_china(&self.country_code, &self.country_name)
    }

    pub fn build(&self) -> Place {
        Place::new(PlaceFields {
            country_code: &self.country_code,
            country_name: &self.country_name,
            province_code: &self.province_code,
            province_name: &self.province_name,
            city_code: &self.city_code,
            city_name: &self.city_name,
            district_name: &self.district_name,
            carrier: &self.carrier,
        })
    }
}

/// What is wrong with a range where a table would hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFault {
    /// It starts after it ends.
    Reversed,
    /// It starts at or before the previous range starts: out of order.
    Unordered,
    /// It starts inside the previous range.
    Overlaps,
}

/// The one rule for a table's ranges, read in address order: each starts
/// no later than it ends, and after the range before it (`previous`, its
/// start and end) ends. The importer, the index builder and `check` all
/// apply it; the tables' SQL constraints say the same.
pub fn range_fault(previous: Option<(u128, u128)>, start: u128, end: u128) -> Option<RangeFault> {
    if start > end {
        return Some(RangeFault::Reversed);
    }
    match previous {
        Some((previous_start, _)) if start <= previous_start => Some(RangeFault::Unordered),
        Some((_, previous_end)) if start <= previous_end => Some(RangeFault::Overlaps),
        _ => None,
    }
}

/// An AS number's digits, as `str::parse::<u32>` reads them but for
/// digits only (no sign): every place is asked whether its first field is
/// one.
fn parse_asn(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |asn, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        asn.checked_mul(10)?.checked_add(u32::from(digit - b'0'))
    })
}

/// The autonomous system announcing an address: a network table's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The row, shared with the table: the AS number's digits, then the
    /// organisation (a network row's other values are empty); its header
    /// holds the number read.
    row: Place,
}

impl Network {
    /// A network row's values (see [`Place`]); `None` unless its AS number
    /// is one (the importer and the table's CHECK refuse any other).
    #[inline]
    pub fn from_row(row: &Place) -> Option<Network> {
        row.is_network().then(|| Network { row: row.clone() })
    }

    /// A network from its parts, for tests and samples.
    pub fn new(asn: u32, org: &str) -> Network {
        let row = Place::from_columns([&asn.to_string(), org, "", "", "", "", "", ""]);
        Network::from_row(&row).expect("an AS number")
    }

    pub fn asn(&self) -> u32 {
        self.row.0.header.asn
    }

    /// Asks for the network's row to be loaded (see [`Place::prefetch`]).
    #[inline]
    pub fn prefetch(&self) {
        self.row.prefetch();
    }

    /// The organisation's name, as the data gives it.
    pub fn org(&self) -> &str {
        self.row.field(1)
    }
}

/// One successful answer. The place is shared: a table row's names are
/// stored once and every answer from that row points at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub place: Place,
    pub start: IpAddr,
    pub end: IpAddr,
    pub source: Source,
    /// The network announcing the address, where the network tables know it.
    pub network: Option<Network>,
    /// Whether a correction changed the answer.
    pub corrected: bool,
}

impl Located {
    /// This answer with `correction`'s values in place of its own where
    /// the correction gives one: an empty value keeps what the source says.
    pub fn corrected_by(self, correction: &Place) -> Located {
        let (mine, theirs) = (self.place.fields().columns(), correction.fields().columns());
        let place = Place::from_columns(std::array::from_fn(|i| match theirs[i] {
            "" => mine[i],
            value => value,
        }));
        Located {
            place,
            corrected: true,
            ..self
        }
    }

    /// The range's bounds as the IDL's integers: the IPv4 address, or 0
    /// for IPv6 answers.
    pub fn bounds_as_int(&self) -> (i64, i64) {
        let int = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => i64::from(u32::from(v4)),
            IpAddr::V6(_) => 0,
        };
        (int(self.start), int(self.end))
    }
}

/// What the range tables hold for one address: its row in the place table
/// a route asks (none if it asks none, or the table has no row), the
/// network announcing it, and the correction in force for it in the
/// route's language (as an answer from [`Source::Correction`]). Boxed:
/// seldom there, and a batch moves every address's `Found` about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub place: Option<Located>,
    pub network: Option<Network>,
    pub correction: Option<Box<Located>>,
}

/// Why a source could not answer: the short reason a client is told,
/// never SQL text, host names or paths (those go to the log, once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("database timed out")]
    DatabaseTimeout,
    #[error("database query failed")]
    DatabaseQuery,
    #[error("database holds invalid rows")]
    DatabaseRows,
    #[error("database unavailable")]
    Database,
    #[error("the database lookup task has stopped")]
    LookupStopped,
    #[error("the database returned the wrong number of rows")]
    RowCount,
    #[error("MaxMind lookup failed")]
    MaxMind,
    #[error("no MaxMind database configured")]
    NoMaxMind,
}

/// Why an input got no answer; each maps to one wire error number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("invalid IP: {0}")]
    InvalidIp(String),
    /// No source knows the place; the network tables may still know the
    /// network, which the answer then carries.
    #[error("not found in any source")]
    NotFound(Option<Network>),
    #[error("backend unavailable: {0}")]
    Backend(Unavailable),
    #[error("{0}")]
    UnsupportedLang(String),
}

/// The answer for one input.
pub type Outcome = Result<Located, LookupError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::ErrorNo;

    fn v4(s: &str) -> Addr {
        Addr::V4(s.parse().unwrap())
    }

    #[test]
    fn a_place_text_starts_where_prefetch_at_asks_for_it() {
        let place = Place::from_columns(["CN", "中国", "", "广东", "", "广州", "", "电信"]);
        let text = place.0.slice.as_ptr() as usize;
        assert_eq!(text, place.address() + std::mem::size_of::<PlaceHeader>());
    }

    proptest::proptest! {
        /// The AS number reader reads digits as std does, up to u32::MAX
        /// and no further, and refuses anything else (a sign included).
        #[test]
        fn the_asn_reader_reads_digits_as_std_does(
            text in "0{0,12}[0-9]{0,12}|[0-9a -]{1,11}|4294967[0-9]{3}",
            asn in proptest::num::u32::ANY,
        ) {
            proptest::prop_assert_eq!(parse_asn(text.as_bytes()), text.parse::<u32>().ok(), "{:?}", text);
            proptest::prop_assert_eq!(parse_asn(asn.to_string().as_bytes()), Some(asn));
            proptest::prop_assert_eq!(parse_asn(format!("+{asn}").as_bytes()), None);
        }
    }

    #[test]
    fn sources_are_listed_in_their_counting_order() {
        for (i, source) in Source::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i, "{source:?}");
        }
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
            assert_eq!(ErrorNo::of(&err).wire(), 1, "{text:?}");
        }
    }

    #[test]
    fn a_place_gives_back_its_fields_and_knows_china() {
        let fields = ["CN", "中国", "440000", "广东", "", "", "天河区", "电信"];
        let place = Place::from_columns(fields);
        assert_eq!(place.fields().columns(), fields);
        assert_eq!(
            (place.province_name(), place.city_name(), place.carrier()),
            ("广东", "", "电信")
        );
        assert!(place.is_china() && !place.is_blank());
        assert!(Place::from_columns(["HK", "中国", "", "香港", "", "", "", ""]).is_china());
        assert!(Place::from_columns(["", "China", "", "", "", "", "", ""]).is_china());
        assert!(!Place::from_columns(["US", "美国", "", "", "", "", "", ""]).is_china());
        assert!(Place::from_columns(["CN", "", "440000", "", "440100", "", "", ""]).is_blank());
        assert_eq!(Place::default().fields().columns(), [""; 8]);
        assert!(Place::default().is_blank());
    }

    #[test]
    fn languages_match_case_insensitively_with_aliases() {
        for lang in ["", "zh", "zh-CN", "ZH_cn", "cn", " zh-cn "] {
            assert_eq!(Lang::parse(lang).unwrap(), Lang::ZhCn, "{lang:?}");
        }
        for lang in ["en", "EN", "en-US", "en_us"] {
            assert_eq!(Lang::parse(lang).unwrap(), Lang::En, "{lang:?}");
        }
        assert_eq!(Lang::parse("PT-br").unwrap(), Lang::PtBr);
        assert_eq!(Lang::parse("ja").unwrap().mmdb_key(), "ja");
        let err = Lang::parse("klingon").unwrap_err();
        assert_eq!(ErrorNo::of(&err).wire(), 4);
        assert!(err.to_string().contains("zh-CN, en, de"), "{err}");
    }
}
