//! What can be bought: VM types and the function platform, with prices and the model's service times.
//!
//! The catalog is what a policy knows about the cloud. The simulator builds it from the data files in
//! `data/` and the model's profile in `profiles/`; the live backend builds it from its configuration.
//! Random parts of the cloud model (provisioning and cold-start distributions) stay in the simulator:
//! a policy sees only their means, as a real operator would know them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::profile::LatencyTable;
use crate::time::Nanos;

/// Index of a VM type in [`Catalog::vm_types`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VmTypeId(pub u16);

/// How a VM is bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    /// Full price, never taken back.
    #[default]
    OnDemand,
    /// Discounted; can be taken back after an interruption notice.
    Spot,
}

impl Market {
    /// Both markets, in report order.
    pub const ALL: [Market; 2] = [Market::OnDemand, Market::Spot];

    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Market::OnDemand => "on-demand",
            Market::Spot => "spot",
        }
    }
}

/// One VM type that can serve the model.
#[derive(Clone, Debug, PartialEq)]
pub struct VmType {
    /// Its index in the catalog.
    pub id: VmTypeId,
    /// Cloud name, e.g. `c5.xlarge`.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// GPUs.
    pub gpus: u32,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// On-demand price in dollars per hour.
    pub price_on_demand_per_h: f64,
    /// Spot price in dollars per hour, if the type is sold on the spot market.
    pub price_spot_per_h: Option<f64>,
    /// Mean time from the provision request until the instance serves (launch + boot + model load).
    pub provision_mean: Nanos,
    /// The model's batch latency on this type (one batch at a time per instance).
    pub service: LatencyTable,
}

impl VmType {
    /// Price per hour in `market`, or `None` when the type is not sold there.
    pub fn price_per_h(&self, market: Market) -> Option<f64> {
        match market {
            Market::OnDemand => Some(self.price_on_demand_per_h),
            Market::Spot => self.price_spot_per_h,
        }
    }
}

/// The function (FaaS) platform and the model's behaviour on it.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionPlatform {
    /// Dollars per GB-second of execution (GB = 1024 MB).
    pub price_per_gb_s: f64,
    /// Dollars per invocation.
    pub price_per_request: f64,
    /// Dollars per GB-second of configured pre-warmed (provisioned) capacity.
    pub provisioned_price_per_gb_s: f64,
    /// Dollars per GB-second of execution on a provisioned instance (lower than `price_per_gb_s`).
    pub provisioned_duration_price_per_gb_s: f64,
    /// Each configured period of provisioned capacity is billed rounded up to this (5 minutes on AWS).
    pub provisioned_granularity: Nanos,
    /// Billing granularity of execution time (1 ms on AWS Lambda).
    pub billing_granularity: Nanos,
    /// Whether the initialisation (cold start) time is billed as execution.
    pub bill_init: bool,
    /// Smallest memory size in MB.
    pub memory_min_mb: u32,
    /// Largest memory size in MB.
    pub memory_max_mb: u32,
    /// Memory that buys one full vCPU (CPU is proportional to memory).
    pub mb_per_vcpu: f64,
    /// Most function executions in flight at once in the account and region (AWS counts concurrency as
    /// requests in flight); past it, invocations are throttled.
    pub regional_concurrency: u32,
    /// How many concurrent executions one function may add per `function_scale_interval` (AWS: 1,000).
    pub function_scale_step: u32,
    /// The interval of `function_scale_step` (AWS: 10 s).
    pub function_scale_interval: Nanos,
    /// Keep-alive of an idle instance unless a policy sets another.
    pub default_keep_alive: Nanos,
    /// Default memory size in MB unless a policy sets another.
    pub default_memory_mb: u32,
    /// Mean cold start (sandbox and runtime start plus model load) at the default memory size.
    pub cold_start_mean: Nanos,
    /// Batch latency of the model with exactly one vCPU per request.
    pub service: LatencyTable,
    /// Size of one loaded model copy, MB.
    pub model_size_mb: f64,
    /// Extra memory per concurrent request beyond the shared model copy, MB.
    pub per_request_mb: f64,
    /// Most vCPUs one request can use.
    pub max_vcpus_per_request: f64,
}

impl FunctionPlatform {
    /// vCPUs given to an instance of `memory_mb`.
    pub fn vcpus(&self, memory_mb: u32) -> f64 {
        memory_mb as f64 / self.mb_per_vcpu
    }

    /// Service time of a batch on an instance of `memory_mb` whose vCPUs are split evenly among
    /// `concurrency` request slots. A slot with less than one vCPU runs proportionally slower; one with
    /// more runs faster only up to `max_vcpus_per_request`.
    pub fn service_time(&self, batch: u32, memory_mb: u32, concurrency: u32) -> Nanos {
        self.service_time_sized(batch, memory_mb, concurrency, 0, 0)
    }

    /// As [`FunctionPlatform::service_time`], for requests whose input and output sizes add up to `input` and
    /// `output` (see [`LatencyTable::latency_sized`]).
    pub fn service_time_sized(&self, batch: u32, memory_mb: u32, concurrency: u32, input: u64, output: u64) -> Nanos {
        self.service_time_of(&self.service, self.max_vcpus_per_request, batch, memory_mb, concurrency, (input, output))
    }

    /// As [`FunctionPlatform::service_time_sized`], for a model with its own one-vCPU table and vCPU cap.
    pub fn service_time_of(
        &self,
        table: &LatencyTable,
        max_vcpus_per_request: f64,
        batch: u32,
        memory_mb: u32,
        concurrency: u32,
        (input, output): (u64, u64),
    ) -> Nanos {
        let per_slot = self.vcpus(memory_mb) / concurrency.max(1) as f64;
        let speed = per_slot.min(max_vcpus_per_request).max(1e-6);
        let base = table.latency_sized(batch, input, output).0 as f64;
        Nanos((base / speed).round().clamp(1.0, u64::MAX as f64) as u64)
    }

    /// Memory an instance needs to hold one model copy and serve `concurrency` requests at once.
    pub fn memory_needed_mb(&self, concurrency: u32) -> f64 {
        self.model_size_mb + self.per_request_mb * concurrency as f64
    }

    /// Checks that `memory_mb` is a size the platform sells and fits `concurrency` requests.
    pub fn check_settings(&self, memory_mb: u32, concurrency: u32) -> Result<(), PolicyError> {
        if memory_mb < self.memory_min_mb || memory_mb > self.memory_max_mb {
            return Err(PolicyError::InvalidAction(format!(
                "function memory {memory_mb} MB is outside {}..={} MB",
                self.memory_min_mb, self.memory_max_mb
            )));
        }
        if concurrency == 0 {
            return Err(PolicyError::InvalidAction("function concurrency must be at least 1".into()));
        }
        let need = self.memory_needed_mb(concurrency);
        if need > memory_mb as f64 {
            return Err(PolicyError::InvalidAction(format!(
                "function memory {memory_mb} MB cannot hold the model ({} MB) and {concurrency} concurrent \
                 requests ({need} MB needed)",
                self.model_size_mb
            )));
        }
        Ok(())
    }
}

/// Everything a policy may buy, for one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalog {
    /// The model being served (every model id the scenario does not map to another profile).
    pub model: String,
    /// Other models served in the same cluster, by model id (the request's `model`), each with its own
    /// profile; ids not listed are the catalog's own model.
    pub models: BTreeMap<u32, ModelSpec>,
    /// VM types with a latency profile for the model, indexed by [`VmTypeId`].
    pub vm_types: Vec<VmType>,
    /// The function platform.
    pub functions: FunctionPlatform,
}

/// A model other than the catalog's own, with its own latency profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Its name (from its profile).
    pub name: String,
    /// Its batch latency on each VM type, indexed like [`Catalog::vm_types`]; `None` where it was not
    /// profiled, so it cannot run there.
    pub vm_service: Vec<Option<LatencyTable>>,
    /// Its batch latency on a function with one vCPU per request.
    pub function_service: LatencyTable,
    /// One loaded copy, MB.
    pub size_mb: f64,
    /// Extra memory per concurrent request on a function, MB.
    pub per_request_mb: f64,
    /// Most vCPUs one request can use.
    pub max_vcpus_per_request: f64,
    /// Deserialisation and first inference at one vCPU, seconds.
    pub load_s: f64,
}

impl Catalog {
    /// The VM type with this id.
    pub fn vm(&self, id: VmTypeId) -> &VmType {
        &self.vm_types[id.0 as usize]
    }

    /// Looks a VM type up by name; the error lists the known names.
    pub fn vm_id(&self, name: &str) -> Result<VmTypeId, PolicyError> {
        self.vm_types.iter().find(|t| t.name == name).map(|t| t.id).ok_or_else(|| PolicyError::UnknownVmType {
            name: name.to_string(),
            known: self.vm_types.iter().map(|t| t.name.clone()).collect::<Vec<_>>().join(", "),
        })
    }
}
