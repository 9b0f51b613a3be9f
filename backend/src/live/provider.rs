//! The two worker providers the controller drives, one trait each: [`VmProvider`] (long-lived workers by
//! VM type and market) and [`FunctionProvider`] (a function platform, one request per invocation).
//!
//! The local defaults are [`super::vm::VmPool`] (local workers with an engine session each) and
//! [`super::functions::Functions`] (the local Lambda service running `hyscale-fn` sandboxes). With the `aws`
//! feature, `super::aws` adds `Ec2Vms` and `AwsLambdaFunctions`, which drive real EC2 instances and a
//! deployed Lambda function behind the same traits.
//!
//! Both traits are object-safe: the asynchronous operations return a [`BoxFuture`], so the controller holds
//! `Arc<dyn VmProvider>` and `Arc<dyn FunctionProvider>` and does not know which it runs. Operations that
//! change the cluster answer `Err(reason)` when they cannot be carried out; the controller counts the
//! reason, as the simulator counts refused actions.

use std::future::Future;
use std::pin::Pin;

use hyscale_policies::billing::CostBreakdown;
use hyscale_policies::view::{MarketCounts, VmInstanceView, VmState};
use hyscale_policies::{
    BatchRule, FunctionSettings, FunctionView, InstanceId, Market, Nanos, RejectReason, SpotNotice, View, VmTypeId,
};

use crate::engine::{EngineError, ModelMetadata, Tensor};

/// Empties the pools' instance counts and queues of `view`, sets each pool's batching from `batching`
/// (indexed like the catalog) and clears the instance list: the start of a provider's `fill_view`.
pub(crate) fn reset_pools(view: &mut View, batching: &[BatchRule]) {
    for (pool, rule) in view.pools.iter_mut().zip(batching) {
        pool.provisioning = MarketCounts::default();
        pool.ready = MarketCounts::default();
        pool.draining = MarketCounts::default();
        pool.queued = 0;
        pool.in_service = 0;
        pool.ready_loads.clear();
        pool.batching = *rule;
    }
    view.vms.clear();
}

/// Adds one live instance to `view`: its pool's count for its state and market, its queue and work in service,
/// and the instance list.
pub(crate) fn push_instance(view: &mut View, vm: VmInstanceView) {
    if let Some(pool) = view.pools.get_mut(vm.vm_type.0 as usize) {
        let counts = match vm.state {
            VmState::Provisioning => &mut pool.provisioning,
            VmState::Ready => &mut pool.ready,
            VmState::Draining => &mut pool.draining,
        };
        *counts.get_mut(vm.market) += 1;
        if vm.state == VmState::Ready {
            pool.add_ready_load(vm.queued + vm.in_service);
        }
        pool.queued += u64::from(vm.queued);
        pool.in_service += u64::from(vm.in_service);
    }
    view.vms.push(vm);
}

/// Which `count` instances a `ReleaseVms` takes: the rule the simulator follows too, defined once.
pub(crate) use hyscale_policies::rules::release_order;

/// A boxed, sendable future borrowing its provider: what the traits' asynchronous operations return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What became of a request dispatched to a VM worker.
#[derive(Debug)]
pub enum VmOutcome {
    /// The worker answered with the model's outputs, in the model's order.
    Done(Vec<Tensor>),
    /// The worker's queue was full (rejected as `queue_full`).
    QueueFull,
    /// The model failed on the request.
    Engine(EngineError),
    /// The worker refused the request for a reason that another worker would share (dropped, not routed
    /// again).
    Failed(String),
    /// The worker went away (released while provisioning, failed, interrupted, unreachable) before
    /// answering: the request is worth routing again. The string says what happened.
    Lost(String),
}

/// Counters of a VM provider since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmCounters {
    /// Workers launched.
    pub launched: u64,
    /// Workers taken by a spot interruption.
    pub spot_interruptions: u64,
    /// Workers that failed to start (gone at once).
    pub load_failures: u64,
}

/// Long-lived workers by VM type and market, as the policy's VM actions see them.
pub trait VmProvider: Send + Sync {
    /// Launches `count` workers of `vm_type` on `market` (`Provision`); they serve once ready.
    fn provision(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String>;

    /// Releases one worker (`Release`): a provisioning one is gone at once, a ready one drains.
    fn release(&self, id: InstanceId) -> Result<(), String>;

    /// Releases `count` workers of a type and market (`ReleaseVms`): provisioning ones first (newest
    /// first), then ready ones with the least work, as the simulator chooses.
    fn release_vms(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String>;

    /// Sets the batching of `vm_type`'s workers (`SetBatching` on a VM pool).
    fn set_batching(&self, vm_type: VmTypeId, rule: BatchRule) -> Result<(), String>;

    /// Delivers a spot interruption notice to worker `id`, taken `notice` from now; returns the notice for
    /// the policy's `on_spot_notice`.
    fn interrupt(&self, id: InstanceId, notice: Nanos) -> Result<SpotNotice, String>;

    /// Writes the pools (by state and market, queue depths, batching), the live instances and the spot
    /// notices into `view`, whose pools are indexed like the catalog.
    fn fill_view(&self, view: &mut View);

    /// Workers by state: (provisioning, ready, draining).
    fn state_counts(&self) -> (u32, u32, u32);

    /// Counters since the provider started.
    fn counters(&self) -> VmCounters;

    /// What the workers cost so far by `policies::billing` (those still alive as if released now). The
    /// real-cloud adapters answer zero: AWS's own bill is the record there.
    fn cost(&self) -> CostBreakdown {
        CostBreakdown::default()
    }

    /// Instance-hours of the workers so far, (on demand, spot), from the provision request to the end (those
    /// still alive up to now), scaled like time: what the simulator reports as `vm_hours_*`. The real-cloud
    /// adapters answer zero, as for the cost.
    fn instance_hours(&self) -> (f64, f64) {
        (0.0, 0.0)
    }

    /// Takes every worker away (shutdown); requests they hold end as lost.
    fn shutdown(&self);

    /// Runs one request on a worker of `vm_type`: the least-loaded ready one, or a provisioning one when
    /// none is ready (the request waits for it). Refuses at once with `NoVmCapacity` when the pool has no
    /// accepting worker and `QueueFull` when the chosen one holds `queue_limit` requests; otherwise answers
    /// the worker chosen and what became of the request there.
    fn dispatch(
        &self,
        vm_type: VmTypeId,
        queue_limit: u32,
        inputs: Vec<Tensor>,
    ) -> BoxFuture<'_, Result<(InstanceId, VmOutcome), RejectReason>>;
}

/// Why a function invocation gave no outputs.
#[derive(Clone, Debug)]
pub enum FnFailure {
    /// The concurrency cap refused it (AWS's 429).
    Throttled,
    /// The sandbox failed (function error, death, timeout) or the service refused it; worth another route.
    Failed(String),
}

/// A function platform, as the policy's function actions see it.
pub trait FunctionProvider: Send + Sync {
    /// The settings in force (memory, concurrency, keep-alive, pre-warm, batching).
    fn settings(&self) -> FunctionSettings;

    /// Applies a `ConfigureFunctions` action (each `None` keeps the setting); `Err` names what could not be
    /// applied (settings that could still apply do).
    fn configure(
        &self,
        memory_mb: Option<u32>,
        concurrency: Option<u32>,
        keep_alive: Option<Nanos>,
        prewarm: Option<u32>,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// Records the function pool's batching (`SetBatching` on the function pool).
    fn set_batching(&self, rule: BatchRule);

    /// Keeps the pre-warmed instances at their target (called on every tick; may start work in the
    /// background).
    fn top_up_prewarm(&self);

    /// Runs one request: the inputs in the model's order, the outputs answered in the model's order.
    fn invoke<'a>(
        &'a self,
        metadata: &'a ModelMetadata,
        inputs: &'a [Tensor],
    ) -> BoxFuture<'a, Result<Vec<Tensor>, FnFailure>>;

    /// The platform as the view shows it: settings, instances by state, requests in flight, totals.
    fn view(&self) -> FunctionView;

    /// Invocations that reached a sandbox so far and their durations summed (delivery to answer, ms): what
    /// a sandbox is held for per invocation. The real-cloud adapters answer zero (not observed).
    fn invocation_time(&self) -> (u64, f64) {
        (0, 0.0)
    }

    /// What the invocations cost so far by `policies::billing` (zero for the real-cloud adapter: AWS bills).
    fn cost(&self) -> CostBreakdown {
        CostBreakdown::default()
    }

    /// Stops the platform's local parts (sandboxes, background tasks).
    fn shutdown(&self);
}
