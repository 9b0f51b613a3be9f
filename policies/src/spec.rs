//! Policies by name, with their configuration from a scenario file.
//!
//! A scenario holds one optional section per policy (`[policies.static]`, `[policies.function-only]`,
//! `[policies.target-tracking]`, `[policies.kpa]`, `[policies.batch]`, `[policies.static-peak]`) and names
//! the one to run; the command line may name another, which then runs with its own section or
//! its defaults.

use serde::Deserialize;

use crate::batch_fn::{Batch, BatchConfig};
use crate::catalog::Catalog;
use crate::error::PolicyError;
use crate::function_only::{FunctionOnly, FunctionOnlyConfig};
use crate::hybrid::{Hybrid, HybridConfig};
use crate::kpa::{Kpa, KpaConfig};
use crate::mark::{Mark, MarkConfig};
use crate::policy::Policy;
use crate::static_fleet::{StaticConfig, StaticFleet};
use crate::static_peak::{StaticPeak, StaticPeakConfig};
use crate::target_tracking::{TargetTracking, TargetTrackingConfig};

/// The names of all policies, as accepted by [`PolicyConfigs::build`].
pub const POLICY_NAMES: &[&str] =
    &["static", "function-only", "target-tracking", "kpa", "batch", "static-peak", "mark", "hybrid"];

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
    /// `[policies.target-tracking]`: needs at least `vm_type`.
    #[serde(rename = "target-tracking")]
    pub target_tracking: Option<TargetTrackingConfig>,
    /// `[policies.kpa]`: every field has a default.
    pub kpa: Option<KpaConfig>,
    /// `[policies.batch]`: every field has a default.
    pub batch: Option<BatchConfig>,
    /// `[policies.static-peak]`: needs `vm_type` and `peak_rate_per_s`.
    #[serde(rename = "static-peak")]
    pub static_peak: Option<StaticPeakConfig>,
    /// `[policies.mark]`: every field has a default (MArk's released settings).
    pub mark: Option<MarkConfig>,
    /// `[policies.hybrid]`: every field has a default.
    pub hybrid: Option<HybridConfig>,
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
            "target-tracking" => {
                let config = required(&self.target_tracking, "target-tracking", "vm_type = \"...\"")?;
                Ok(Box::new(TargetTracking::new(config, catalog)?))
            }
            "kpa" => Ok(Box::new(Kpa::new(&self.kpa.clone().unwrap_or_default(), catalog)?)),
            "batch" => Ok(Box::new(Batch::new(&self.batch.clone().unwrap_or_default(), catalog)?)),
            "static-peak" => {
                let config = required(&self.static_peak, "static-peak", "vm_type = \"...\" and peak_rate_per_s")?;
                Ok(Box::new(StaticPeak::new(config, catalog)?))
            }
            "mark" => Ok(Box::new(Mark::new(&self.mark.clone().unwrap_or_default(), catalog)?)),
            "hybrid" => Ok(Box::new(Hybrid::new(&self.hybrid.clone().unwrap_or_default(), catalog)?)),
            other => Err(PolicyError::InvalidConfig {
                policy: other.to_string(),
                reason: format!("no such policy; the policies are: {}", POLICY_NAMES.join(", ")),
            }),
        }
    }
}

/// The section of a policy that cannot run on defaults, or an error saying what to add.
fn required<'a, T>(section: &'a Option<T>, policy: &str, needs: &str) -> Result<&'a T, PolicyError> {
    section.as_ref().ok_or_else(|| PolicyError::InvalidConfig {
        policy: policy.into(),
        reason: format!("needs a [policies.{policy}] section with {needs}"),
    })
}
