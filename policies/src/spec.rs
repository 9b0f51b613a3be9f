//! Policies by name, with their configuration from a scenario file.
//!
//! A scenario holds one optional section per policy (`[policies.static]`, `[policies.function-only]`)
//! and names the one to run; the command line may name another, which then runs with its own section or
//! its defaults.

use serde::Deserialize;

use crate::catalog::Catalog;
use crate::error::PolicyError;
use crate::function_only::{FunctionOnly, FunctionOnlyConfig};
use crate::policy::Policy;
use crate::static_fleet::{StaticConfig, StaticFleet};

/// The names of all policies, as accepted by [`PolicyConfigs::build`].
pub const POLICY_NAMES: &[&str] = &["static", "function-only"];

/// Per-policy configuration sections of a scenario.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfigs {
    /// `[policies.static]`.
    #[serde(rename = "static")]
    pub static_fleet: Option<StaticConfig>,
    /// `[policies.function-only]`.
    #[serde(rename = "function-only")]
    pub function_only: Option<FunctionOnlyConfig>,
}

impl PolicyConfigs {
    /// Builds the policy called `name` from its section (or its defaults) against `catalog`.
    pub fn build(&self, name: &str, catalog: &Catalog) -> Result<Box<dyn Policy>, PolicyError> {
        match name {
            "static" => {
                let config = self.static_fleet.as_ref().ok_or_else(|| PolicyError::InvalidConfig {
                    policy: "static".into(),
                    reason: "needs a fleet: add a [policies.static] section with fleet entries".into(),
                })?;
                Ok(Box::new(StaticFleet::new(config, catalog)?))
            }
            "function-only" => {
                let config = self.function_only.clone().unwrap_or_default();
                Ok(Box::new(FunctionOnly::new(&config, catalog)?))
            }
            other => Err(PolicyError::InvalidConfig {
                policy: other.to_string(),
                reason: format!("no such policy; the policies are: {}", POLICY_NAMES.join(", ")),
            }),
        }
    }
}
