//! The report format written by `hyscale simulate` and, for live runs, `hyscale replay`.
//!
//! One JSON document (serde_json) per run. Field order is fixed by these structs and maps are ordered
//! (`BTreeMap`), so the same run gives the same bytes. Notebooks in `notebooks/` read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{LatencySummary, RequestSummary, SloSummary};

/// Version of the report format; bumped on any incompatible change.
pub const REPORT_FORMAT: u32 = 1;

/// A whole run's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// `simulation` or `live`.
    pub mode: String,
    /// The scenario's name.
    pub scenario: String,
    /// The policy's name.
    pub policy: String,
    /// The master seed.
    pub seed: u64,
    /// What the arrivals were.
    pub trace: String,
    /// The model served.
    pub model: String,
    /// Length of the run (first arrival to the last request's end), seconds.
    pub duration_s: f64,
    /// How requests ended.
    pub requests: RequestSummary,
    /// SLO attainment.
    pub slo: SloSummary,
    /// Latency of completed requests, ms.
    pub latency_ms: LatencySummary,
    /// Cost, dollars.
    pub cost: CostSummary,
    /// Instances used.
    pub instances: InstanceSummary,
    /// Memory held by model copies on functions.
    pub model_memory: ModelMemorySummary,
    /// Per-function cold starts and idle memory (simulation; empty when no function ran).
    #[serde(default)]
    pub functions: FunctionStatsSummary,
    /// Policy actions applied and refused.
    pub actions: ActionSummary,
    /// Per-interval timeline.
    pub timeline: Vec<TimelineRow>,
}

/// Per-function figures, as "Serverless in the Wild" (ATC'20) reads them: the share of each function's
/// invocations that met a cold instance, summarised over functions by percentile, and the memory time of
/// instances loaded but idle (wasted memory).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionStatsSummary {
    /// The keep-alive in force: the keep-alive policy's name, or `settings` (the scaling policy's own).
    pub keep_alive: String,
    /// Functions with at least one invocation on function instances.
    pub functions: u64,
    /// Invocations served on function instances.
    pub invocations: u64,
    /// Of those, invocations that found no warm instance of their function (they waited for a cold start).
    pub cold_invocations: u64,
    /// Per-function cold-invocation percentage: median over functions.
    pub cold_pct_p50: f64,
    /// ... 75th percentile over functions (the figure of the paper).
    pub cold_pct_p75: f64,
    /// ... 90th percentile over functions.
    pub cold_pct_p90: f64,
    /// GB-seconds of function instances loaded and idle (memory × idle time).
    pub wasted_memory_gb_s: f64,
}

/// Cost by kind, dollars.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// On-demand VMs.
    pub vm_on_demand: f64,
    /// Spot VMs.
    pub vm_spot: f64,
    /// Function execution, initialisation and pre-warmed capacity.
    pub function_compute: f64,
    /// Function per-invocation fees.
    pub function_requests: f64,
    /// Function instances billed as pods on VMs (a Knative policy), their memory's share of the nodes.
    #[serde(default)]
    pub pods: f64,
    /// Sum of the above.
    pub total: f64,
    /// Total per million completed requests.
    pub per_million_completed: f64,
}

/// Instances used over the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    /// VMs launched, by type and market (`c5.large/spot`).
    pub vms_launched: BTreeMap<String, u64>,
    /// Billed VM hours, on-demand.
    pub vm_hours_on_demand: f64,
    /// Billed VM hours, spot.
    pub vm_hours_spot: f64,
    /// Spot interruptions (instances taken back).
    pub spot_interruptions: u64,
    /// Requests routed again after their instance was taken or released.
    pub rerouted: u64,
    /// Function cold starts.
    pub function_cold_starts: u64,
    /// Hours function instances were alive (cold-starting, busy or idle).
    pub function_instance_hours: f64,
    /// Most function instances alive at once.
    pub function_instances_peak: u64,
    /// Models loaded onto running VMs beyond the one each boots with (multi-model hosting, LRU eviction).
    #[serde(default)]
    pub vm_model_loads: u64,
}

/// Memory held by model copies on the function platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMemorySummary {
    /// Size of one model copy, MB.
    pub model_size_mb: f64,
    /// GB-hours of model copies held by live function instances.
    pub gb_hours: f64,
    /// Most copies held at once (one per live instance).
    pub copies_peak: u64,
    /// Most requests in flight on functions at once: the copies one-copy-per-request would need.
    pub one_copy_per_request_peak: u64,
    /// GB-hours one-copy-per-request would hold for the same requests (each request's instance time).
    pub one_copy_per_request_gb_hours: f64,
}

/// Policy actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionSummary {
    /// Actions applied.
    pub applied: u64,
    /// Actions refused, by reason.
    pub refused: BTreeMap<String, u64>,
}

/// One interval of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// End of the interval, seconds from the start.
    pub t_s: f64,
    /// Arrivals in the interval.
    pub arrivals: u64,
    /// Completions in the interval.
    pub completed: u64,
    /// Completions within the SLO in the interval.
    pub fulfilled: u64,
    /// Rejections in the interval.
    pub rejected: u64,
    /// Drops in the interval.
    pub dropped: u64,
    /// VMs provisioning at the end of the interval.
    pub vm_provisioning: u32,
    /// VMs ready (on-demand).
    pub vm_ready_on_demand: u32,
    /// VMs ready (spot).
    pub vm_ready_spot: u32,
    /// VMs draining.
    pub vm_draining: u32,
    /// Function instances starting cold.
    pub fn_cold_starting: u32,
    /// Function instances warm and idle.
    pub fn_idle: u32,
    /// Function instances busy.
    pub fn_busy: u32,
    /// Cost accrued so far, dollars.
    pub cost_so_far: f64,
}
