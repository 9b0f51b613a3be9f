use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong reading or generating a trace.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A row does not parse.
    #[error("{path}:{line}: column '{column}': {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The column's name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// The header lacks a column the format needs.
    #[error("{path}:1: missing column '{column}' (the header has: {found})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns found.
        found: String,
    },
    /// A timestamp is earlier than the row before it.
    #[error(
        "{path}:{line}: timestamp goes back {back_ms:.3} ms before the previous row; traces must be sorted by time"
    )]
    Unsorted {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// How far back, ms.
        back_ms: f64,
    },
    /// The file has a header but no rows.
    #[error("{path}: the trace holds no requests")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A generator's or spec's parameters are invalid.
    #[error("invalid trace parameters: {0}")]
    InvalidParameters(String),
}
