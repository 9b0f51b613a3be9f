//! The live cluster: VM-like workers, the local Lambda service, and the controller that drives them with
//! the same policy objects the simulator drives.
//!
//! When a live configuration has a `[cluster]` table (documented in `live/README.md`), `hyscale serve`
//! sends the named model's requests through a [`Controller`] instead of a single batcher: on wall-clock
//! ticks it builds the same [`hyscale_policies::View`] the simulator builds, calls the policy, and executes
//! its actions on a [`provider::VmProvider`] and a [`provider::FunctionProvider`] (locally [`vm::VmPool`]
//! and [`functions::Functions`]; with the `aws` feature, EC2 instances and a deployed Lambda function);
//! each request is routed by the policy.
//!
//! **Time scale.** A real VM takes tens of seconds to a few minutes to provision and a policy's control
//! interval is a minute; `time_scale` (default 1) compresses these slow processes for a local run. The policy
//! runs on model time, as in the simulator ([`hyscale_policies::TimeScale`]): the controller shows it the
//! wall clock divided by `time_scale` and carries out every duration it asks for multiplied by it, so its
//! control interval, cooldowns, grace periods, keep-alive windows, arrival-count interval, the provisioning
//! delays (the catalog's mean launch + boot + model load, unless a type sets `provision_s`, a wall-clock
//! delay taken as is) and the spot notice all shrink together. Request latencies, request rates, inference
//! and function cold starts are real and never scaled (a rate the policy reads from its arrival window is the
//! measured one). The catalog a policy sees carries the provisioning delays actually in force.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod aws_asg;
pub mod controller;
pub mod functions;
pub mod provider;
pub mod vm;

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyscale_policies::PolicyConfigs;
use serde::Deserialize;

pub use controller::{ClusterMetrics, ClusterSetup, Controller, LiveError, Status};

/// The `[cluster]` table of a live configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The `[[models]]` entry whose requests the cluster serves.
    pub model: String,
    /// Catalog file (`data/*.toml`), relative to the configuration file.
    pub catalog: PathBuf,
    /// Latency profile of the model (`profiles/*.toml` format), relative to the configuration file.
    pub profile: PathBuf,
    /// The policy, by name (`hyscale_policies::POLICY_NAMES`).
    pub policy: String,
    /// Per-policy sections, as in scenario files: `[cluster.policies.static]` and so on.
    #[serde(default)]
    pub policies: PolicyConfigs,
    /// The SLO the policy serves.
    #[serde(default)]
    pub slo: SloConfig,
    /// Multiplies the slow processes' durations (see the module documentation).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Per-VM-type overrides: `[cluster.vm_types."c5.large"] provision_s = 5.0`.
    #[serde(default)]
    pub vm_types: BTreeMap<String, VmTypeConfig>,
    /// The function binary (default: `hyscale-fn` next to the running executable).
    pub function_binary: Option<PathBuf>,
    /// Most function sandboxes alive at once (the local concurrency cap; also bounded by the catalog's
    /// regional concurrency).
    #[serde(default = "sandboxes")]
    pub function_max_sandboxes: u32,
    /// Extra delay injected into every function cold start, ms (what a local process lacks: fetching the
    /// code and booting a microVM).
    #[serde(default)]
    pub function_cold_start_delay_ms: f64,
    /// Function timeout, seconds.
    #[serde(default = "fn_timeout")]
    pub function_timeout_s: f64,
    /// Arrival-count interval the policy sees, seconds before scaling (MArk: 5).
    #[serde(default = "window")]
    pub arrival_window_s: f64,
    /// How many arrival intervals the policy sees.
    #[serde(default = "history")]
    pub arrival_history: usize,
    /// Spot interruption notice, seconds before scaling (AWS: 120).
    #[serde(default = "notice")]
    pub spot_notice_s: f64,
    /// Idle start for every batch rule the policy sets (`policies::BatchRule::idle_start`; the simulator's
    /// `sim.batch_idle_start`): a request that finds its worker idle starts its batch at once. Default false.
    #[serde(default)]
    pub batch_idle_start: bool,
    /// `[cluster.aws]`: run the cluster on AWS (EC2 workers, a deployed Lambda function) instead of the
    /// local defaults. Only with the `aws` feature; without it the table is refused as an unknown field.
    #[cfg(feature = "aws")]
    #[serde(default)]
    pub aws: Option<aws::AwsConfig>,
}

/// `[cluster.slo]`: the same SLO configuration a scenario's `[slo]` is (defined once, in `policies`).
pub use hyscale_policies::SloConfig;

/// `[cluster.vm_types."NAME"]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmTypeConfig {
    /// Provisioning delay of a worker of this type, wall-clock seconds (not scaled).
    pub provision_s: Option<f64>,
}

fn one() -> f64 {
    1.0
}
fn sandboxes() -> u32 {
    8
}
fn fn_timeout() -> f64 {
    10.0
}
fn window() -> f64 {
    5.0
}
fn history() -> usize {
    720
}
fn notice() -> f64 {
    120.0
}
