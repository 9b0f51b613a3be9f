use std::path::PathBuf;

use hyscale_policies::PolicyError;
use hyscale_traces::TraceError;
use thiserror::Error;

/// What can stop a simulation.
#[derive(Debug, Error)]
pub enum SimError {
    /// A scenario, catalog or profile file is unreadable or wrong.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (TOML errors include line, column and field).
        reason: String,
    },
    /// The trace failed.
    #[error("trace: {0}")]
    Trace(#[from] TraceError),
    /// The policy could not be built.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
}
