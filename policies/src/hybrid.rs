//! `hybrid`: one shared model copy per function instance, scaled vertically first and horizontally after.
//!
//! Source: A. R. Ellore, "Rethinking Serverless for ML Inference" (M.S. thesis, Virginia Tech, 2023). The
//! thesis finds that model loading and the duplication of the model in memory (one copy per function
//! instance, and plain FaaS runs one request per instance) are the bottlenecks of serverless inference. Its
//! answer: an instance loads the model once and serves many requests at once from that one copy, and the
//! platform autoscales with a hybrid of vertical scaling (more concurrency and cores per instance) and
//! horizontal scaling (more instances).
//!
//! Models, every control interval (`control_interval_s`, 5 s):
//! - **Demand** ([`demand`]) by Little's law: the arrival rate times the service time of one request under
//!   the plan in force, the mean number of requests the arrivals keep busy. The requests in flight at
//!   function instances (queued or in service) count instead when there are more of them than the plan has
//!   slots: then requests are already waiting or starting instances of their own, a backlog (a rise within
//!   the interval, work behind cold starts) that the rate has not shown yet. The two estimate the same
//!   quantity, so they are never added; and the count in flight, one sample at the tick, is not used while
//!   it fits the plan, because at a mean near one request a single sample of 2 or 3 is noise (on the shipped
//!   conv scenario, taking the larger of the two at every tick cost 16% more, $0.54 against $0.47, for the
//!   same SLO attainment). The rate is the larger of the arrivals since the previous tick and the
//!   arrival window's last completed interval: the first reacts to a rise at once, the second keeps the
//!   rate of the interval before (in the simulator the window closes an interval just after a tick at the
//!   same instant, so it is one interval behind).
//! - **Slots needed**: `ceil(demand / target_utilization)` concurrent request slots.
//! - **Plan** for `S` slots ([`Hybrid::plan`]), vertical first: while `S` fits one instance, one instance
//!   with concurrency `S`; once `S` exceeds the concurrency cap, the cap on every instance and
//!   `ceil(S / cap)` instances. At least `min_instances` are kept. The instance count is the platform's
//!   `prewarm` (provisioned, kept warm); requests beyond the planned slots between two ticks start
//!   instances of their own, as on any FaaS platform, and those leave after `keep_alive_s` idle.
//! - **Memory per instance** ([`memory_for`]): the least that holds the model once plus each slot's
//!   working memory ([`FunctionPlatform::memory_needed_mb`]) and, CPU being proportional to memory, gives
//!   each slot enough vCPUs that one request's service time ([`FunctionPlatform::service_time`]) stays within
//!   `slo_fraction` of the SLO's `rt_max`. So a request runs at the same speed whatever the concurrency:
//!   vertical scaling adds cores with the slots. The **cap** is the largest concurrency up to
//!   `max_concurrency` whose memory fits `max_memory_mb` (the platform's largest size by default).
//! - **Scale up** at once when more slots are needed than planned. **Scale down** with hysteresis: only
//!   after the slots needed stayed at or below `scale_down_fraction` of the planned slots for
//!   `scale_down_intervals` ticks in a row, and then to the plan for the most slots needed during that run.
//!   Going down undoes horizontal scaling before vertical (the plan's order).
//! - **Routing**: every request to the function platform; a request it cannot place (its regional
//!   concurrency limit reached) is rejected there, with the reason `throttled`.
//! - **An SLO out of reach**: when not even one request per instance meets the budget at `max_memory_mb`
//!   (the policy learns the SLO from the view at start), it serves one request per instance at
//!   `max_memory_mb`, the fastest it may, and [`Hybrid::budget_met`] says so; [`Hybrid::resolve`] reports
//!   the same case as an error to a caller that knows the SLO beforehand.
//!
//! Why the defaults: 5 s is the arrival window of the simulator and MArk's load-sampling period, several
//! cold starts long (about 1.3 s for Inception v3 on the shipped catalog), so a step has landed before the
//! next is decided. `slo_fraction` 0.8: the SLO is a percentile (98%), and with a service-time CV near 0.1
//! the 98th percentile lies about 1.2 times the mean, so the mean must stay near 0.83 of `rt_max`; 0.8
//! leaves a little for queueing. `target_utilization` 0.7 is Knative's default headroom. One minute (12
//! ticks) below half the planned slots before scaling down, because in the simulator every change of
//! concurrency or memory redeploys the function (see below); a 60 s keep-alive lets an instance started by
//! a burst outlive that decision without holding its model copy for the platform's ten minutes.
//!
//! Leaves out, or models differently:
//! - The thesis's own implementation: its serving runtime, how its instances share the model, its scaling
//!   thresholds and its metrics are not public in the material available here; this policy is a reading of
//!   its design, not a port of its code.
//! - Resizing a running instance in place. In the simulator a change of concurrency or memory is a
//!   redeploy: running instances finish their work and retire, and new requests go to new instances, each
//!   with a cold start (the new `prewarm` instances start at once). Every vertical step therefore costs a
//!   cold start, which is why scale-down is slow.
//! - How the slots share the CPU: the simulator splits an instance's vCPUs evenly over its concurrency
//!   slots, busy or not, and bills the whole instance's memory for each busy period, so an instance with
//!   idle slots costs more per request than a smaller one would.
//! - Batching (one request per slot) and VMs.

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::catalog::{Catalog, FunctionPlatform};
use crate::error::PolicyError;
use crate::policy::{Policy, Router, Scaler};
use crate::static_peak::instances_needed;
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// Configuration of [`Hybrid`], the `[policies.hybrid]` section; every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HybridConfig {
    /// How often demand is measured and the plan revisited, seconds (default 5).
    pub control_interval_s: f64,
    /// Fraction of the SLO's `rt_max` that one request's service time may take (default 0.8).
    pub slo_fraction: f64,
    /// Fraction of the planned slots the demand should fill (default 0.7).
    pub target_utilization: f64,
    /// Most requests one instance serves at once (default 8); the cap is lower when `max_memory_mb` cannot
    /// give that many slots their memory and vCPUs.
    pub max_concurrency: u32,
    /// Largest memory per instance, MB (default: the platform's largest).
    pub max_memory_mb: Option<u32>,
    /// Fewest instances kept warm, whatever the demand (default 1).
    pub min_instances: u32,
    /// Scale down only when the slots needed are at most this fraction of the planned slots (default 0.5).
    pub scale_down_fraction: f64,
    /// ... for this many ticks in a row (default 12, one minute at 5 s).
    pub scale_down_intervals: u32,
    /// Keep-alive of idle instances beyond the planned ones, seconds (default 60).
    pub keep_alive_s: f64,
}

impl Default for HybridConfig {
    fn default() -> HybridConfig {
        HybridConfig {
            control_interval_s: 5.0,
            slo_fraction: 0.8,
            target_utilization: 0.7,
            max_concurrency: 8,
            max_memory_mb: None,
            min_instances: 1,
            scale_down_fraction: 0.5,
            scale_down_intervals: 12,
            keep_alive_s: 60.0,
        }
    }
}

/// What the platform is asked for: every instance's concurrency and memory, and how many to keep warm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HybridPlan {
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// Memory per instance, MB.
    pub memory_mb: u32,
    /// Instances kept warm (the platform's `prewarm`).
    pub instances: u32,
}

impl HybridPlan {
    /// Request slots the plan provides: concurrency times instances.
    pub fn slots(&self) -> u64 {
        self.concurrency as u64 * self.instances as u64
    }
}

/// The least memory (MB) an instance needs to serve `concurrency` requests at once from one model copy with
/// each request's service time within `budget`, or `None` when that takes more than `max_memory_mb` or no
/// memory can meet the budget (a request cannot use more than `max_vcpus_per_request`).
///
/// The memory holds the model once and each slot's working memory, is at least the platform's smallest
/// size, and buys the slots their vCPUs: [`FunctionPlatform::service_time`] decides, so this is exactly the
/// rule the simulator applies.
pub fn memory_for(platform: &FunctionPlatform, concurrency: u32, budget: Nanos, max_memory_mb: u32) -> Option<u32> {
    let c = concurrency.max(1);
    let limit = max_memory_mb.min(platform.memory_max_mb);
    let fits = |m: u32| platform.service_time(1, m, c) <= budget;
    if !fits(limit) {
        return None;
    }
    // vCPUs per slot that bring the one-vCPU service time down to the budget, as memory; the estimate is
    // then settled against `service_time` itself, which rounds to whole nanoseconds.
    let base = platform.service.latency(1).0 as f64;
    let speed = base / budget.0.max(1) as f64;
    let estimate = (speed * c as f64 * platform.mb_per_vcpu).floor();
    let mut m = if estimate.is_finite() { (estimate as u32).saturating_sub(1).clamp(1, limit) } else { limit };
    while m > 1 && fits(m - 1) {
        m -= 1;
    }
    while !fits(m) {
        m += 1;
    }
    let held = platform.memory_needed_mb(c);
    let held = if held.fract() == 0.0 { held } else { held.ceil() };
    let m = m.max(platform.memory_min_mb).max(if held >= u32::MAX as f64 { u32::MAX } else { held as u32 });
    (m <= limit).then_some(m)
}

/// Requests inside the function platform by Little's law, `rate_per_s` times `service`; or the `in_flight`
/// count when it exceeds both that and the `planned_slots` (a backlog; see the module docs).
pub fn demand(in_flight: u64, planned_slots: u64, rate_per_s: f64, service: Nanos) -> f64 {
    let little = rate_per_s.max(0.0) * service.as_secs_f64();
    if in_flight > planned_slots { little.max(in_flight as f64) } else { little }
}

/// Request slots needed to serve `demand` at `target_utilization`: `ceil(demand / target_utilization)`.
pub fn slots_needed(demand: f64, target_utilization: f64) -> u32 {
    instances_needed(demand / target_utilization)
}

/// The hybrid scaler on functions; see the module docs.
#[derive(Clone, Debug)]
pub struct Hybrid {
    interval: Nanos,
    slo_fraction: f64,
    target_utilization: f64,
    min_instances: u32,
    scale_down_fraction: f64,
    scale_down_intervals: u32,
    keep_alive: Nanos,
    /// Most instances the platform allows alive at once.
    max_instances: u32,
    /// The memory of concurrency `c` at index `c - 1`, for every concurrency up to the cap; resolved at
    /// start, because the SLO is part of the view.
    memories: Vec<u32>,
    max_concurrency: u32,
    max_memory_mb: u32,
    /// The plan in force.
    current: HybridPlan,
    /// Ticks in a row with the slots needed at or below `scale_down_fraction` of the plan's.
    low_ticks: u32,
    /// The most slots needed during those ticks.
    low_peak: u32,
    /// Time of the previous tick (or of the start).
    last_tick: Nanos,
    /// The demand measured at the last tick.
    last_demand: f64,
    /// Whether the memories meet the service-time budget (false after the fallback in `start`).
    budget_met: bool,
}

impl Hybrid {
    /// Resolves the configuration against the catalog. The memory of each concurrency depends on the SLO,
    /// which reaches a policy in the view: [`Scaler::start`] computes it unless [`Hybrid::resolve`] did.
    pub fn new(config: &HybridConfig, catalog: &Catalog) -> Result<Hybrid, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "hybrid".into(), reason };
        let f = &catalog.functions;
        for (name, v) in [
            ("control_interval_s", config.control_interval_s),
            ("slo_fraction", config.slo_fraction),
            ("target_utilization", config.target_utilization),
            ("scale_down_fraction", config.scale_down_fraction),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(format!("{name} must be a positive number, got {v}")));
            }
        }
        if config.scale_down_fraction >= 1.0 {
            return Err(invalid(format!(
                "scale_down_fraction must be below 1 (it is the fraction of the planned slots under which \
                 the plan shrinks), got {}",
                config.scale_down_fraction
            )));
        }
        if !(config.keep_alive_s.is_finite() && config.keep_alive_s >= 0.0) {
            return Err(invalid(format!("keep_alive_s must be a non-negative number, got {}", config.keep_alive_s)));
        }
        if config.max_concurrency == 0 || config.scale_down_intervals == 0 {
            return Err(invalid("max_concurrency and scale_down_intervals must be at least 1".into()));
        }
        let max_memory_mb = config.max_memory_mb.unwrap_or(f.memory_max_mb);
        if max_memory_mb < f.memory_min_mb || max_memory_mb > f.memory_max_mb {
            return Err(invalid(format!(
                "max_memory_mb {max_memory_mb} is outside the platform's {}..={} MB",
                f.memory_min_mb, f.memory_max_mb
            )));
        }
        if f.memory_needed_mb(1) > max_memory_mb as f64 {
            return Err(invalid(format!(
                "max_memory_mb {max_memory_mb} cannot hold the model ({} MB) and one request ({} MB)",
                f.model_size_mb, f.per_request_mb
            )));
        }
        if config.min_instances > f.regional_concurrency {
            return Err(invalid(format!(
                "min_instances {} exceeds the platform's regional concurrency {}",
                config.min_instances, f.regional_concurrency
            )));
        }
        Ok(Hybrid {
            interval: Nanos::from_secs_f64(config.control_interval_s),
            slo_fraction: config.slo_fraction,
            target_utilization: config.target_utilization,
            min_instances: config.min_instances,
            scale_down_fraction: config.scale_down_fraction,
            scale_down_intervals: config.scale_down_intervals,
            keep_alive: Nanos::from_secs_f64(config.keep_alive_s),
            max_instances: f.regional_concurrency,
            memories: Vec::new(),
            max_concurrency: config.max_concurrency,
            max_memory_mb,
            current: HybridPlan { concurrency: 1, memory_mb: f.default_memory_mb, instances: 0 },
            low_ticks: 0,
            low_peak: 0,
            last_tick: Nanos::ZERO,
            last_demand: 0.0,
            budget_met: true,
        })
    }

    /// Computes the memory of every concurrency up to the cap for an SLO of `rt_max`; an error when not
    /// even one request per instance can meet `slo_fraction x rt_max` within `max_memory_mb`.
    pub fn resolve(&mut self, platform: &FunctionPlatform, rt_max: Nanos) -> Result<(), PolicyError> {
        let budget = Nanos::from_secs_f64(rt_max.as_secs_f64() * self.slo_fraction);
        let memories: Vec<u32> =
            (1..=self.max_concurrency).map_while(|c| memory_for(platform, c, budget, self.max_memory_mb)).collect();
        if memories.is_empty() {
            let fastest = platform.service_time(1, self.max_memory_mb, 1);
            return Err(PolicyError::InvalidConfig {
                policy: "hybrid".into(),
                reason: format!(
                    "one request per instance cannot meet the service-time budget of {:.1} ms ({} x rt_max) \
                     within {} MB: it takes {:.1} ms at best; raise slo_fraction, rt_max or max_memory_mb",
                    budget.as_millis_f64(),
                    self.slo_fraction,
                    self.max_memory_mb,
                    fastest.as_millis_f64()
                ),
            });
        }
        self.memories = memories;
        Ok(())
    }

    /// The concurrency cap: the most requests per instance that `max_concurrency` and `max_memory_mb`
    /// allow within the budget (1 before [`Hybrid::resolve`]).
    pub fn cap(&self) -> u32 {
        (self.memories.len() as u32).max(1)
    }

    /// The memory (MB) of each concurrency from 1 to the cap.
    pub fn memories(&self) -> &[u32] {
        &self.memories
    }

    /// The plan for `slots` request slots: vertical first (one instance with that many slots) up to the
    /// cap, then horizontal (`ceil(slots / cap)` instances at the cap); never fewer than `min_instances`
    /// nor more instances than the platform's regional concurrency.
    pub fn plan(&self, slots: u32) -> HybridPlan {
        let cap = self.cap();
        let concurrency = slots.clamp(1, cap);
        let instances = slots.div_ceil(cap).max(self.min_instances).min(self.max_instances);
        let memory_mb = self.memories.get(concurrency as usize - 1).copied().unwrap_or(self.current.memory_mb);
        HybridPlan { concurrency, memory_mb, instances }
    }

    /// Whether one request's service time meets `slo_fraction x rt_max`; false when no memory up to
    /// `max_memory_mb` can, and the policy serves one request per instance at `max_memory_mb` instead.
    pub fn budget_met(&self) -> bool {
        self.budget_met
    }

    /// The plan in force.
    pub fn plan_in_force(&self) -> HybridPlan {
        self.current
    }

    /// The demand measured at the last tick, requests.
    pub fn last_demand(&self) -> f64 {
        self.last_demand
    }

    /// The next plan when `needed` slots are needed now, updating the scale-down run; `None` to keep the
    /// plan in force.
    fn decide(&mut self, needed: u32) -> Option<HybridPlan> {
        let have = self.current.slots();
        let next = if needed as u64 > have {
            self.low_ticks = 0;
            self.plan(needed)
        } else if needed as f64 <= self.scale_down_fraction * have as f64 {
            self.low_peak = if self.low_ticks == 0 { needed } else { self.low_peak.max(needed) };
            self.low_ticks += 1;
            if self.low_ticks < self.scale_down_intervals {
                return None;
            }
            self.low_ticks = 0;
            self.plan(self.low_peak)
        } else {
            self.low_ticks = 0;
            return None;
        };
        (next != self.current).then_some(next)
    }

    /// The action that moves the platform from the plan in force to `next`, and makes `next` the plan.
    fn apply(&mut self, next: HybridPlan, out: &mut Vec<Action>) {
        let vertical = next.concurrency != self.current.concurrency || next.memory_mb != self.current.memory_mb;
        out.push(Action::ConfigureFunctions {
            memory_mb: vertical.then_some(next.memory_mb),
            concurrency: vertical.then_some(next.concurrency),
            keep_alive: None,
            prewarm: Some(next.instances),
        });
        self.current = next;
    }
}

impl Scaler for Hybrid {
    fn control_interval(&self) -> Nanos {
        self.interval
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        if self.memories.is_empty() && self.resolve(&view.catalog.functions, view.slo.rt_max).is_err() {
            // No concurrency meets the budget (the SLO reaches the policy only now, so `new` could not
            // refuse): serve one request per instance at the fastest speed the memory limit allows.
            self.memories = vec![self.max_memory_mb];
            self.budget_met = false;
        }
        self.last_tick = view.now;
        self.current = self.plan(0);
        out.push(Action::SetBatching { pool: Pool::Functions, rule: BatchRule::NONE });
        out.push(Action::ConfigureFunctions {
            memory_mb: Some(self.current.memory_mb),
            concurrency: Some(self.current.concurrency),
            keep_alive: Some(self.keep_alive),
            prewarm: Some(self.current.instances),
        });
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        let elapsed = view.now.saturating_sub(self.last_tick).as_secs_f64();
        self.last_tick = view.now;
        let recent = if elapsed > 0.0 { view.recent.arrivals as f64 / elapsed } else { 0.0 };
        let rate = recent.max(view.arrivals.rate_per_s(1));
        let service = view.catalog.functions.service_time(1, self.current.memory_mb, self.current.concurrency);
        self.last_demand = demand(view.functions.in_flight, self.current.slots(), rate, service);
        let needed = slots_needed(self.last_demand, self.target_utilization);
        if let Some(next) = self.decide(needed) {
            self.apply(next, out);
        }
    }
}

impl Router for Hybrid {
    fn route(&mut self, _request: &RequestInfo, _view: &View) -> Route {
        Route::Functions
    }
}

impl Policy for Hybrid {
    fn name(&self) -> &str {
        "hybrid"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ledger::Slo;
    use crate::profile::LatencyTable;
    use crate::view::{ArrivalWindow, FunctionSettings};

    /// Functions with one vCPU per 1,024 MB, a 200 ms request at one vCPU (at most one vCPU per request), a
    /// 100 MB model and 50 MB per request.
    fn platform() -> FunctionPlatform {
        FunctionPlatform {
            price_per_gb_s: 0.0,
            price_per_request: 0.0,
            provisioned_price_per_gb_s: 0.0,
            provisioned_duration_price_per_gb_s: 0.0,
            provisioned_granularity: Nanos::from_secs(300),
            billing_granularity: Nanos::from_millis(1),
            bill_init: false,
            memory_min_mb: 128,
            memory_max_mb: 10240,
            mb_per_vcpu: 1024.0,
            regional_concurrency: 1000,
            function_scale_step: 1000,
            function_scale_interval: Nanos::from_secs(10),
            default_keep_alive: Nanos::from_secs(600),
            default_memory_mb: 1024,
            cold_start_mean: Nanos::from_secs(1),
            service: LatencyTable::from_millis("function", vec![1], &[200.0]).unwrap(),
            model_size_mb: 100.0,
            per_request_mb: 50.0,
            max_vcpus_per_request: 1.0,
        }
    }

    /// The shipped AWS catalog and Inception v3 profile: 1,769 MB per vCPU, 317 ms at one vCPU, at most two
    /// vCPUs per request, a 92 MB model and 50 MB per request.
    fn inception() -> FunctionPlatform {
        FunctionPlatform {
            mb_per_vcpu: 1769.0,
            service: LatencyTable::from_millis("function", vec![1, 8], &[317.0, 2536.0]).unwrap(),
            model_size_mb: 92.0,
            max_vcpus_per_request: 2.0,
            ..platform()
        }
    }

    fn catalog(f: FunctionPlatform) -> Catalog {
        Catalog { model: "m".into(), models: Default::default(), vm_types: Vec::new(), functions: f }
    }

    fn ms(x: u64) -> Nanos {
        Nanos::from_millis(x)
    }

    #[test]
    fn memory_buys_each_slot_the_vcpus_that_keep_a_request_within_the_budget() {
        let f = platform();
        // A 400 ms budget needs half a vCPU per slot: 512 MB per slot, exactly.
        assert_eq!(memory_for(&f, 1, ms(400), 10240), Some(512));
        assert_eq!(memory_for(&f, 4, ms(400), 10240), Some(2048));
        assert_eq!(f.service_time(1, 2048, 4), ms(400));
        // One MB less would be too slow.
        assert!(f.service_time(1, 2047, 4) > ms(400));
        // The cap: 20 slots need 10,240 MB, 21 do not fit.
        assert_eq!(memory_for(&f, 20, ms(400), 10240), Some(10240));
        assert_eq!(memory_for(&f, 21, ms(400), 10240), None);
        // ... nor do 5 within a 2,048 MB limit.
        assert_eq!(memory_for(&f, 5, ms(400), 2048), None);
        // A 2 s budget needs 0.1 vCPU per slot: 307.2 MB of CPU for three slots, so 308 MB, more than the
        // 100 + 3 x 50 = 250 MB that hold the model and three requests. For one slot, the 150 MB that hold
        // the model and one request are more than its 102.4 MB of CPU.
        assert_eq!(memory_for(&f, 3, ms(2000), 10240), Some(308));
        assert_eq!(memory_for(&f, 1, ms(2000), 10240), Some(150));
        // ... and by the platform's smallest size: a 10 s budget and no model at all.
        let tiny = FunctionPlatform { model_size_mb: 0.0, per_request_mb: 0.0, ..platform() };
        assert_eq!(memory_for(&tiny, 1, ms(10_000), 10240), Some(128));
        // A request cannot use more than one vCPU here: a 150 ms budget is out of reach at any memory.
        assert_eq!(memory_for(&f, 1, ms(150), 10240), None);
    }

    #[test]
    fn inception_on_lambda_fits_two_requests_per_instance_within_160_ms() {
        let f = inception();
        // 317 / 160 = 1.98125 vCPUs per slot; x 1,769 MB = 3,504.83 MB: 3,505 MB for one slot, 7,009.66:
        // 7,010 MB for two; 10,514.5 MB for three is over Lambda's 10,240 MB.
        assert_eq!(memory_for(&f, 1, ms(160), 10240), Some(3505));
        assert_eq!(memory_for(&f, 2, ms(160), 10240), Some(7010));
        assert_eq!(memory_for(&f, 3, ms(160), 10240), None);
        // With the looser 0.9 x 200 ms = 180 ms budget, three fit: 317 / 180 x 1,769 x 3 = 9,346.2 MB.
        assert_eq!(memory_for(&f, 3, ms(180), 10240), Some(9347));
        // 200 ms x 0.8: the default budget; the cap is 2.
        let mut h = Hybrid::new(&HybridConfig::default(), &catalog(f.clone())).unwrap();
        h.resolve(&f, ms(200)).unwrap();
        assert_eq!((h.cap(), h.memories()), (2, &[3505, 7010][..]));
        // 150 ms x 0.8 = 120 ms is below the 158.5 ms of two vCPUs: refused, saying what to change.
        let err = h.resolve(&f, ms(150)).unwrap_err();
        assert!(err.to_string().contains("158.5 ms at best"), "{err}");
    }

    #[test]
    fn demand_is_littles_law_or_a_backlog_beyond_the_planned_slots() {
        // 16 requests/s x 400 ms = 6.4 requests inside; 3 in flight now, within 4 planned slots.
        assert!((demand(3, 4, 16.0, ms(400)) - 6.4).abs() < 1e-12);
        // A backlog behind a cold start: 9 in flight on 8 slots, though the rate alone says 6.4.
        assert_eq!(demand(9, 8, 16.0, ms(400)), 9.0);
        // ... but 9 in flight on 12 slots is within the plan: the rate decides.
        assert!((demand(9, 12, 16.0, ms(400)) - 6.4).abs() < 1e-12);
        // 3 in flight on 2 slots at a rate that keeps 0.8 busy: a burst the rate has not shown.
        assert_eq!(demand(3, 2, 2.0, ms(400)), 3.0);
        assert_eq!(slots_needed(6.4, 1.0), 7);
        // 0.7 x 10 = 7 exactly, despite the float division.
        assert_eq!(slots_needed(7.0, 0.7), 10);
        assert_eq!(slots_needed(0.0, 0.7), 0);
    }

    fn hybrid(config: HybridConfig) -> Hybrid {
        let f = platform();
        let mut h = Hybrid::new(&config, &catalog(f.clone())).unwrap();
        h.resolve(&f, ms(500)).unwrap();
        h
    }

    #[test]
    fn plans_go_vertical_up_to_the_cap_then_horizontal() {
        // Budget 0.8 x 500 ms = 400 ms: 512 MB per slot; cap 4 by max_concurrency.
        let h = hybrid(HybridConfig { max_concurrency: 4, ..HybridConfig::default() });
        assert_eq!(h.cap(), 4);
        let p = |c, memory_mb, instances| HybridPlan { concurrency: c, memory_mb, instances };
        assert_eq!(h.plan(0), p(1, 512, 1));
        assert_eq!(h.plan(1), p(1, 512, 1));
        assert_eq!(h.plan(3), p(3, 1536, 1));
        assert_eq!(h.plan(4), p(4, 2048, 1));
        assert_eq!(h.plan(5), p(4, 2048, 2));
        assert_eq!(h.plan(9), p(4, 2048, 3));
        assert_eq!(h.plan(9).slots(), 12);
        // The cap by memory: 1,536 MB holds three slots.
        let h = hybrid(HybridConfig { max_memory_mb: Some(1536), min_instances: 0, ..HybridConfig::default() });
        assert_eq!((h.cap(), h.plan(0), h.plan(7)), (3, p(1, 512, 0), p(3, 1536, 3)));
    }

    fn view(now_s: u64, arrivals_since_tick: u64, in_flight: u64) -> View {
        let settings = FunctionSettings {
            memory_mb: 512,
            concurrency: 1,
            keep_alive: Nanos::from_secs(60),
            prewarm: 1,
            batching: BatchRule::NONE,
        };
        let slo = Slo { rt_max: ms(500), sl_min: 0.98 };
        let mut v =
            View::new(Arc::new(catalog(platform())), slo, ArrivalWindow::new(Nanos::from_secs(5), 10), settings);
        v.now = Nanos::from_secs(now_s);
        v.recent.arrivals = arrivals_since_tick;
        v.functions.in_flight = in_flight;
        v
    }

    fn configure(memory_mb: Option<u32>, concurrency: Option<u32>, prewarm: u32) -> Action {
        Action::ConfigureFunctions { memory_mb, concurrency, keep_alive: None, prewarm: Some(prewarm) }
    }

    #[test]
    fn ticks_scale_up_at_once_and_down_only_after_a_low_run() {
        let config = HybridConfig {
            max_concurrency: 4,
            target_utilization: 1.0,
            scale_down_intervals: 3,
            ..HybridConfig::default()
        };
        let mut h = Hybrid::new(&config, &catalog(platform())).unwrap();
        let mut out = Vec::new();
        // The memories are resolved from the view's SLO at start: 0.8 x 500 ms.
        h.start(&view(0, 0, 0), &mut out);
        assert_eq!(
            out,
            vec![
                Action::SetBatching { pool: Pool::Functions, rule: BatchRule::NONE },
                Action::ConfigureFunctions {
                    memory_mb: Some(512),
                    concurrency: Some(1),
                    keep_alive: Some(Nanos::from_secs(60)),
                    prewarm: Some(1),
                },
            ]
        );
        let mut tick = |now_s, arrivals, in_flight| {
            let mut out = Vec::new();
            h.tick(&view(now_s, arrivals, in_flight), &mut out);
            out
        };
        // 20 arrivals in 5 s x 400 ms = 1.6: 2 slots, one instance of 2 (vertical).
        assert_eq!(tick(5, 20, 1), vec![configure(Some(1024), Some(2), 1)]);
        // 40 in 5 s: 3.2 (the 3 in flight, more than 2 slots, are fewer), 4 slots: the cap.
        assert_eq!(tick(10, 40, 3), vec![configure(Some(2048), Some(4), 1)]);
        // 80 in 5 s: 6.4, 7 slots: a second instance (horizontal, no redeploy).
        assert_eq!(tick(15, 80, 6), vec![configure(None, None, 2)]);
        // 50 in 5 s is only 4, but 9 in flight on 8 slots is a backlog: 9 slots, a third instance.
        assert_eq!(tick(20, 50, 9), vec![configure(None, None, 3)]);
        // Low: 4 (8 in flight fit the 12 slots), 3 and 1 slots needed, each at most half of 12: after three
        // low ticks, the plan for the most of them, 4.
        assert_eq!(tick(25, 50, 8), vec![]);
        assert_eq!(tick(30, 30, 2), vec![]);
        assert_eq!(tick(35, 10, 0), vec![configure(None, None, 1)]);
        // Now 4 slots planned: 2 needed is low (2 <= 2), 3 is not and restarts the run.
        assert_eq!(tick(40, 20, 0), vec![]);
        assert_eq!(tick(45, 30, 3), vec![]);
        assert_eq!(tick(50, 20, 0), vec![]);
        assert_eq!(tick(55, 5, 0), vec![]);
        // Three low ticks (2, 1, 1 slots): back to one instance of 2 (vertical, a redeploy).
        assert_eq!(tick(60, 5, 0), vec![configure(Some(1024), Some(2), 1)]);
        assert_eq!(h.plan_in_force(), HybridPlan { concurrency: 2, memory_mb: 1024, instances: 1 });
    }

    #[test]
    fn the_window_keeps_the_rate_of_the_interval_before() {
        let config = HybridConfig { max_concurrency: 4, target_utilization: 1.0, ..HybridConfig::default() };
        let mut h = Hybrid::new(&config, &catalog(platform())).unwrap();
        let mut out = Vec::new();
        h.start(&view(0, 0, 0), &mut out);
        // No arrival since the last tick, but 50 in the window's last interval: 10/s x 400 ms = 4 slots.
        let mut v = view(5, 0, 0);
        v.arrivals.current = 50;
        v.arrivals.roll();
        out.clear();
        h.tick(&v, &mut out);
        assert!((h.last_demand() - 4.0).abs() < 1e-12, "{}", h.last_demand());
        assert_eq!(out, vec![configure(Some(2048), Some(4), 1)]);
    }

    #[test]
    fn rejects_invalid_configuration() {
        let c = catalog(platform());
        let bad = |config: HybridConfig| Hybrid::new(&config, &c).unwrap_err().to_string();
        assert!(bad(HybridConfig { slo_fraction: 0.0, ..HybridConfig::default() }).contains("slo_fraction"));
        assert!(bad(HybridConfig { scale_down_fraction: 1.0, ..HybridConfig::default() }).contains("below 1"));
        assert!(bad(HybridConfig { max_concurrency: 0, ..HybridConfig::default() }).contains("at least 1"));
        assert!(bad(HybridConfig { max_memory_mb: Some(20000), ..HybridConfig::default() }).contains("outside"));
        assert!(bad(HybridConfig { keep_alive_s: f64::NAN, ..HybridConfig::default() }).contains("keep_alive_s"));
        assert!(bad(HybridConfig { min_instances: 1001, ..HybridConfig::default() }).contains("regional"));
    }
}
