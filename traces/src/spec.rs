//! Trace sources as named in a scenario file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ArrivalStream, AzureLlmReader, Poisson, TraceError};

/// A source of arrivals, as a scenario's `[trace]` table names it.
///
/// ```toml
/// [trace]
/// kind = "azure-llm"
/// path = "../traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
/// ```
///
/// Relative paths are resolved against the scenario file's folder.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TraceSpec {
    /// The Azure LLM inference 2023 per-request CSV.
    AzureLlm {
        /// The CSV file.
        path: PathBuf,
    },
    /// Poisson arrivals.
    Poisson {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// Length, seconds.
        duration_s: f64,
    },
}

impl TraceSpec {
    /// Opens the stream; `base` resolves relative paths and `seed` drives generators.
    pub fn open(&self, base: &Path, seed: u64) -> Result<ArrivalStream, TraceError> {
        Ok(match self {
            TraceSpec::AzureLlm { path } => Box::new(AzureLlmReader::open(&base.join(path))?),
            TraceSpec::Poisson { rate_per_s, duration_s } => Box::new(Poisson::new(*rate_per_s, *duration_s, seed)?),
        })
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            TraceSpec::AzureLlm { path } => format!("azure-llm:{}", path.display()),
            TraceSpec::Poisson { rate_per_s, duration_s } => format!("poisson:{rate_per_s}/s for {duration_s}s"),
        }
    }

    /// Interprets a command-line `--trace` value: `poisson:RATE:DURATION_S`, or a path to an Azure LLM CSV.
    pub fn from_arg(arg: &str) -> Result<TraceSpec, TraceError> {
        if let Some(rest) = arg.strip_prefix("poisson:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let num = |s: &str, what: &str| {
                s.parse::<f64>()
                    .map_err(|_| TraceError::InvalidParameters(format!("'{arg}': {what} '{s}' is not a number")))
            };
            return match parts.as_slice() {
                [rate, dur] => {
                    Ok(TraceSpec::Poisson { rate_per_s: num(rate, "rate")?, duration_s: num(dur, "duration")? })
                }
                _ => Err(TraceError::InvalidParameters(format!("'{arg}': expected poisson:RATE_PER_S:DURATION_S"))),
            };
        }
        Ok(TraceSpec::AzureLlm { path: PathBuf::from(arg) })
    }
}
