//! The policy crate's error type.

use thiserror::Error;

/// What can go wrong when building policies, profiles or catalogs, or applying an action.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PolicyError {
    /// A latency profile is malformed.
    #[error("invalid latency profile for {what}: {reason}")]
    InvalidProfile {
        /// Which table.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A VM type name is not in the catalog.
    #[error("unknown VM type '{name}' (the catalog has: {known})")]
    UnknownVmType {
        /// The name asked for.
        name: String,
        /// The names the catalog has.
        known: String,
    },
    /// A policy's configuration is invalid.
    #[error("invalid configuration for policy '{policy}': {reason}")]
    InvalidConfig {
        /// The policy.
        policy: String,
        /// What is wrong.
        reason: String,
    },
    /// An action cannot be carried out as asked.
    #[error("invalid action: {0}")]
    InvalidAction(String),
}
