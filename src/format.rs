//! The formats IP data files come in (ipdb, mmdb, CSV): named by a data
//! directory's extensions, recognised by content, chosen by `--format`.

/// The source formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ipdb,
    Mmdb,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ipdb => "ipdb",
            Format::Mmdb => "mmdb",
            Format::Csv => "csv",
        }
    }

    /// The format a data directory's file has by its extension
    /// (.ipdb, .mmdb, .csv), or none: other files are not data.
    pub fn of_name(name: &str) -> Option<Format> {
        match std::path::Path::new(name)
            .extension()?
            .to_str()?
            .to_ascii_lowercase()
            .as_str()
        {
            "ipdb" => Some(Format::Ipdb),
            "mmdb" => Some(Format::Mmdb),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// Recognises a file by its content: the ipdb length-prefixed JSON
    /// header, the mmdb metadata marker near the end, else CSV.
    pub fn detect(bytes: &[u8]) -> Format {
        const MMDB_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
        let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
        if tail.windows(MMDB_MARKER.len()).any(|w| w == MMDB_MARKER) {
            return Format::Mmdb;
        }
        if bytes.len() > 5 && bytes[4] == b'{' {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len < bytes.len() {
                return Format::Ipdb;
            }
        }
        Format::Csv
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
