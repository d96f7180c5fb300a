//! The one error type of the packet views.

use core::fmt;

/// Why a buffer is not a valid header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer ends before the header does (short frame, capture snaplen).
    Truncated,
    /// The header's own fields contradict each other or the protocol
    /// (wrong version, a length smaller than the header, a chain too long).
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("header truncated"),
            WireError::Malformed => f.write_str("header malformed"),
        }
    }
}

impl core::error::Error for WireError {}

/// Result of the views' constructors.
pub type Result<T> = core::result::Result<T, WireError>;
