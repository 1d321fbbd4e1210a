//! How the library's enums read on the command line: clap learns them
//! here, so that the types themselves know nothing of it.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::data::import::Format;
use crate::domain::Table;
use crate::tools::client::{Framing, Protocol};
use crate::tools::loadgen::LoadCall;

/// `impl ValueEnum` for an enum: each variant, its name on the command
/// line and an optional help line.
macro_rules! value_enum {
    ($ty:ty { $($variant:path => $name:literal $(, $help:literal)?;)+ }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($variant => PossibleValue::new($name)$(.help($help))?,)+
                })
            }
        }
    };
}

value_enum!(Table {
    Table::Cn => "cn", "IPv4, Chinese names";
    Table::En => "en", "IPv4, English names";
    Table::V6 => "v6", "IPv6, Chinese names";
    Table::Asn => "asn", "IPv4, AS number and organisation";
    Table::AsnV6 => "asn-v6", "IPv6, AS number and organisation";
});

/// What `import` and `export` take: a range table, or the corrections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Table(Table),
    Overrides,
}

/// The tables' names and help lines, then the corrections'.
impl ValueEnum for Target {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Target::Table(Table::Cn),
            Target::Table(Table::En),
            Target::Table(Table::V6),
            Target::Table(Table::Asn),
            Target::Table(Table::AsnV6),
            Target::Overrides,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            Target::Table(table) => table.to_possible_value(),
            Target::Overrides => {
                Some(PossibleValue::new("overrides").help("corrections, IPv4 and IPv6 (ip_service_overrides)"))
            }
        }
    }
}

value_enum!(Format {
    Format::Ipdb => "ipdb";
    Format::Mmdb => "mmdb";
    Format::Csv => "csv";
});

value_enum!(Framing {
    Framing::Framed => "framed";
    Framing::Buffered => "buffered";
});

/// A client sends binary strict, as every current client does.
impl ValueEnum for Protocol {
    fn value_variants<'a>() -> &'a [Self] {
        &[Protocol::BINARY, Protocol::Compact]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Protocol::Binary { .. } => "binary",
            Protocol::Compact => "compact",
        }))
    }
}

value_enum!(LoadCall {
    LoadCall::ByIp => "by-ip", "queryGeoInfoByIP (zh-CN)";
    LoadCall::English => "english", "queryGeoInfo with lang \"en\"";
    LoadCall::I18n => "i18n", "queryI18nGeoInfoByIP (MaxMind only)";
});
