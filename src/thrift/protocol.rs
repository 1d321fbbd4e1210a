//! The two protocols, the bytes that mark them, and the error for bytes
//! that are not a request: what the reader, the framing check and the
//! codec all stand on.

/// A protocol, as detected from a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `strict` is false for old clients that omit the version word.
    Binary {
        strict: bool,
    },
    Compact,
}

impl Protocol {
    /// Binary with the version word, as every current client sends it.
    pub const BINARY: Protocol = Protocol::Binary { strict: true };
}

/// Why bytes could not be read as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More bytes are needed; not an error yet.
    #[error("incomplete message")]
    Incomplete,
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: u64, limit: usize },
    #[error("not a Thrift message: {0}")]
    NotThrift(String),
    #[error("malformed message: {0}")]
    Malformed(String),
}

pub const BINARY_VERSION_1: u32 = 0x8001_0000;
pub const COMPACT_ID: u8 = 0x82;
