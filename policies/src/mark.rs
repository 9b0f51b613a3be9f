//! `mark`: MArk (Zhang et al., "MArk: Exploiting Cloud Services for Cost-Effective, SLO-Aware Machine
//! Learning Inference Serving", USENIX ATC 2019), as its paper and released code describe it.
//!
//! Models:
//! - **Proactive planning.** Every control interval (60 s) the arrival count of the minute that just closed
//!   goes to a [`Predictor`] (MArk's released fallback, a moving max, by default; the paper's LSTM with
//!   `predictor = { kind = "lstm" }`, refitted on the observed past every `refit_every_steps` steps), which
//!   forecasts the next `lookahead_steps` minutes (6). The plan serves the largest forecast, and never less than
//!   the rate just seen, times `over_provision` (1.2).
//! - **Greedy fleet choice by cost per served request.** Capacity is planned one instance at a time: each step
//!   adds the candidate with the lowest cost per request it would serve over the look-ahead horizon,
//!   `(price x horizon + launch overhead) / (min(capacity, remaining load) x horizon)`, where an instance
//!   already running pays no launch overhead and a new one pays `launch_overhead_s` (180 s) of its price.
//!   Capacity per instance is the profile's throughput at the batch size chosen below.
//! - **Hysteresis.** Scale-out goes to the new plan at once; scale-in only down to the largest of the last
//!   `scale_in_history` plans (6).
//! - **Functions fill the gap.** A request goes to the VM pool with the lowest expected latency if that
//!   estimate (`batch latency x (1 + outstanding per ready instance / batch)`) is within `rt_max`; otherwise
//!   (VMs still provisioning, a burst beyond the fleet) to functions, sized to serve one request as fast as
//!   the platform allows. With `warm_up` (MArk's strategic warm-up), functions are pre-warmed to cover the
//!   gap between the plan and the capacity ready now.
//! - **Batching sized to the SLO** per instance type: the batch `b` with the best throughput whose latency
//!   fits `batch_budget x rt_max`, with the timeout taking what is left of that budget. Types too slow to
//!   serve even one request within that budget are left out of the plan.
//! - **Spot.** With `prefer_spot` (default) new instances are bought on the spot market where the type is sold
//!   there; an interruption notice triggers a replacement at once; `standbys` extra on-demand instances of the
//!   cheapest type per request are kept as cold standbys.
//!
//! Leaves out: MArk's multi-model scheduling, its measured (rather than profiled) capacities, the Lambda
//! concurrency warm-up heuristics beyond pre-warming the gap, GPU instances' queue model beyond the batch
//! rule, and SageMaker-specific comparisons.

use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::catalog::{Catalog, Market, VmTypeId};
use crate::error::PolicyError;
use crate::ledger::RejectReason;
use crate::policy::{Policy, Router, Scaler};
use crate::predict::{Predictor, PredictorSpec};
use crate::static_peak::instances_needed;
use crate::time::Nanos;
use crate::view::{RequestInfo, SpotNotice, View, VmState};

/// Configuration of [`Mark`], the `[policies.mark]` section. Defaults are MArk's released settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MarkConfig {
    /// VM types it may buy (default: every type in the catalog).
    pub vm_types: Vec<String>,
    /// Re-planning interval and prediction step, seconds.
    pub control_interval_s: f64,
    /// Prediction steps looked ahead.
    pub lookahead_steps: usize,
    /// Capacity planned per predicted request.
    pub over_provision: f64,
    /// Plans whose maximum bounds scale-in.
    pub scale_in_history: usize,
    /// Launch overhead of a new instance, seconds of its price.
    pub launch_overhead_s: f64,
    /// Buy spot where the type is sold on the spot market.
    pub prefer_spot: bool,
    /// Extra on-demand instances kept as standbys.
    pub standbys: u32,
    /// Share of `rt_max` a batch's latency plus its timeout may take.
    pub batch_budget: f64,
    /// Pre-warm functions to cover the capacity gap while VMs provision.
    pub warm_up: bool,
    /// Function memory, MB (default: the smallest size that gives one request all the vCPUs it can use).
    pub function_memory_mb: Option<u32>,
    /// Function keep-alive, seconds.
    pub function_keep_alive_s: f64,
    /// The load predictor.
    pub predictor: PredictorSpec,
    /// For predictors that train (the LSTM): refit on the observed past every this many steps.
    pub refit_every_steps: usize,
    /// Seed of the predictor's own randomness (the LSTM's initial weights).
    pub seed: u64,
}

impl Default for MarkConfig {
    fn default() -> MarkConfig {
        MarkConfig {
            vm_types: Vec::new(),
            control_interval_s: 60.0,
            lookahead_steps: 6,
            over_provision: 1.2,
            scale_in_history: 6,
            launch_overhead_s: 180.0,
            prefer_spot: true,
            standbys: 0,
            batch_budget: 0.8,
            warm_up: true,
            function_memory_mb: None,
            function_keep_alive_s: 600.0,
            predictor: PredictorSpec::from_name("moving-max").unwrap_or(PredictorSpec::LastValue),
            refit_every_steps: 30,
            seed: 0,
        }
    }
}

/// One VM type as MArk plans it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TypePlan {
    /// The type.
    pub vm_type: VmTypeId,
    /// The market new instances are bought on.
    pub market: Market,
    /// Its price there, dollars per hour.
    pub price_per_h: f64,
    /// Its batching.
    pub batching: BatchRule,
    /// Latency of a full batch.
    pub batch_latency: Nanos,
    /// Requests per second one instance serves at that batch.
    pub capacity_per_s: f64,
}

/// The batch size and timeout of `table` within `budget`: among the batches whose latency fits, the one
/// with the highest throughput (the smallest on ties, so hardware that gains nothing from batching does not
/// batch), with the timeout taking what is left (MArk sizes batches so that timeout plus batch latency meets
/// `rt_max`).
pub fn batch_for_budget(table: &crate::profile::LatencyTable, budget: Nanos) -> BatchRule {
    let largest = table.largest_batch_within(budget, Nanos::ZERO, table.max_measured_batch());
    let mut b = 1;
    for candidate in 2..=largest {
        if table.throughput_per_s(candidate) > table.throughput_per_s(b) * (1.0 + 1e-9) {
            b = candidate;
        }
    }
    let wait = if b > 1 { budget.saturating_sub(table.latency(b)) } else { Nanos::ZERO };
    BatchRule::new(b, wait)
}

/// Whether a predictor learns weights from the past (and so is refitted rather than fed one value).
fn trains(spec: &PredictorSpec) -> bool {
    #[cfg(feature = "lstm")]
    if matches!(spec, PredictorSpec::Lstm(_)) {
        return true;
    }
    let _ = spec;
    false
}

/// Plans instances for `rate_per_s` greedily by cost per served request over `horizon_s`; `existing[i]` is
/// how many instances of `types[i]` run already (they pay no launch overhead). Returns counts per type.
pub fn greedy_plan(
    types: &[TypePlan],
    existing: &[u32],
    rate_per_s: f64,
    horizon_s: f64,
    launch_overhead_s: f64,
) -> Vec<u32> {
    let mut plan = vec![0u32; types.len()];
    let mut remaining = rate_per_s;
    // Guard against float residue: stop once the remaining load is negligible.
    while remaining > 1e-9 {
        let mut best: Option<(f64, usize)> = None;
        for (i, t) in types.iter().enumerate() {
            let overhead = if plan[i] < existing[i] { 0.0 } else { launch_overhead_s };
            let served = t.capacity_per_s.min(remaining) * horizon_s;
            if served <= 0.0 {
                continue;
            }
            let cost = t.price_per_h / 3600.0 * (horizon_s + overhead) / served;
            if best.is_none_or(|(c, _)| cost < c) {
                best = Some((cost, i));
            }
        }
        let Some((_, i)) = best else { break };
        plan[i] += 1;
        remaining -= types[i].capacity_per_s;
    }
    plan
}

/// MArk; see the module docs.
pub struct Mark {
    config: MarkConfig,
    types: Vec<TypePlan>,
    /// What `route` reads of each type, in `types` order, as floats converted once (`route` runs per
    /// request): rebuilt from `types` in `new` and after `start` sets the batching and drops types.
    route_figures: Vec<RouteFigures>,
    /// `route_figures` by the estimate at an instance with no full batch ahead (the least any can give),
    /// ties in `route_figures` order: `route` looks at types in this order and stops once no type left can
    /// beat the best found.
    route_order: Vec<RouteFigures>,
    function_memory_mb: u32,
    function_service: Nanos,
    predictor: Box<dyn Predictor>,
    history: VecDeque<f64>,
    plans: VecDeque<BTreeMap<(VmTypeId, Market), u32>>,
    steps: usize,
    last_minute_end: Nanos,
}

/// A planned type's figures as `Mark::route` estimates with them.
#[derive(Clone, Copy, Debug)]
struct RouteFigures {
    vm_type: VmTypeId,
    /// Its place in the planned types (`Mark::route_figures`): the first of equal estimates wins.
    rank: usize,
    max_batch: u32,
    /// The full batch's latency and the batching timeout, ns.
    batch_latency_ns: f64,
    max_wait_ns: f64,
}

impl RouteFigures {
    fn of(t: &TypePlan, rank: usize) -> RouteFigures {
        RouteFigures {
            vm_type: t.vm_type,
            rank,
            // A rule's batch is at least one (`BatchRule::new`); so it is here, whatever built the rule.
            max_batch: t.batching.max_batch.max(1),
            batch_latency_ns: t.batch_latency.0 as f64,
            max_wait_ns: t.batching.max_wait.0 as f64,
        }
    }

    /// The estimated latency at an instance holding `load` requests: every batch ahead (the one running and
    /// the full ones queued) runs to the end, then this request's batch, after at most the timeout. (No
    /// division for the usual idle or part-full instance: none is ahead.)
    #[inline]
    fn estimate(&self, load: u32) -> f64 {
        let ahead = if load < self.max_batch { 0.0 } else { (load / self.max_batch) as f64 };
        self.batch_latency_ns * (1.0 + ahead) + self.max_wait_ns
    }
}

/// `figures` by the least estimate each can give (at an instance with no full batch ahead), the first planned
/// first among equals: the order `best_within` scans.
fn by_least_estimate(figures: &[RouteFigures]) -> Vec<RouteFigures> {
    let mut order = figures.to_vec();
    order.sort_by(|a, b| a.estimate(0).total_cmp(&b.estimate(0)).then(a.rank.cmp(&b.rank)));
    order
}

/// The pool with the lowest estimate within `rt_max` at its least-loaded ready instance (`least_ready_load`
/// of a type; `None`: none ready), the first planned among equals; `order` is the route figures by their least
/// estimate (`Mark::route_order`). Once the best found is below the next type's least estimate (or equal to it
/// and planned first), no type left can beat it, and the scan stops: usually after the first type.
#[inline]
fn best_within(
    order: &[RouteFigures],
    rt_max: f64,
    least_ready_load: impl Fn(VmTypeId) -> Option<u32>,
) -> Option<VmTypeId> {
    let mut best: Option<(f64, usize, VmTypeId)> = None;
    for t in order {
        if let Some((e, rank, _)) = best
            && (e, rank) < (t.estimate(0), t.rank)
        {
            break;
        }
        if let Some(load) = least_ready_load(t.vm_type) {
            let estimate = t.estimate(load);
            if estimate <= rt_max && best.is_none_or(|(e, rank, _)| (estimate, t.rank) < (e, rank)) {
                best = Some((estimate, t.rank, t.vm_type));
            }
        }
    }
    best.map(|(_, _, id)| id)
}

fn invalid(reason: String) -> PolicyError {
    PolicyError::InvalidConfig { policy: "mark".into(), reason }
}

impl Mark {
    /// Rebuilds the route figures from the planned types (see `route_order`).
    fn set_route_figures(&mut self) {
        self.route_figures = self.types.iter().enumerate().map(|(rank, t)| RouteFigures::of(t, rank)).collect();
        self.route_order = by_least_estimate(&self.route_figures);
    }

    /// Resolves the configuration against the catalog.
    pub fn new(config: &MarkConfig, catalog: &Catalog) -> Result<Mark, PolicyError> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 { Ok(()) } else { Err(invalid(format!("{name} must be positive, got {v}"))) }
        };
        positive("control_interval_s", config.control_interval_s)?;
        positive("over_provision", config.over_provision)?;
        positive("batch_budget", config.batch_budget)?;
        if !(config.launch_overhead_s.is_finite() && config.launch_overhead_s >= 0.0) {
            return Err(invalid(format!("launch_overhead_s must be >= 0, got {}", config.launch_overhead_s)));
        }
        if config.lookahead_steps == 0 || config.scale_in_history == 0 {
            return Err(invalid("lookahead_steps and scale_in_history must be at least 1".into()));
        }
        let ids: Vec<VmTypeId> = if config.vm_types.is_empty() {
            catalog.vm_types.iter().map(|t| t.id).collect()
        } else {
            config.vm_types.iter().map(|n| catalog.vm_id(n)).collect::<Result<_, _>>()?
        };
        let f = &catalog.functions;
        let fastest = (f.max_vcpus_per_request * f.mb_per_vcpu).ceil() as u32;
        let needed = f.memory_needed_mb(1).ceil() as u32;
        let function_memory_mb =
            config.function_memory_mb.unwrap_or(fastest.max(needed).clamp(f.memory_min_mb, f.memory_max_mb));
        f.check_settings(function_memory_mb, 1).map_err(|e| invalid(e.to_string()))?;
        let predictor = config.predictor.build(config.seed).map_err(|e| invalid(e.to_string()))?;
        let mut mark = Mark {
            config: config.clone(),
            route_figures: Vec::new(),
            route_order: Vec::new(),
            types: ids
                .iter()
                .map(|&id| {
                    let t = catalog.vm(id);
                    let spot = config.prefer_spot && t.price_spot_per_h.is_some();
                    let market = if spot { Market::Spot } else { Market::OnDemand };
                    TypePlan {
                        vm_type: id,
                        market,
                        price_per_h: t.price_per_h(market).unwrap_or(t.price_on_demand_per_h),
                        batching: BatchRule::NONE,
                        batch_latency: t.service.latency(1),
                        capacity_per_s: t.service.throughput_per_s(1),
                    }
                })
                .collect(),
            function_memory_mb,
            function_service: f.service_time(1, function_memory_mb, 1),
            predictor,
            history: VecDeque::new(),
            plans: VecDeque::new(),
            steps: 0,
            last_minute_end: Nanos::ZERO,
        };
        mark.set_route_figures();
        Ok(mark)
    }

    fn interval(&self) -> Nanos {
        Nanos::from_secs_f64(self.config.control_interval_s)
    }

    /// Arrivals in the control interval that just closed, from the view's arrival window.
    fn observed_count(&self, view: &View) -> f64 {
        let w = &view.arrivals;
        let per = (self.interval().0 / w.interval.0.max(1)).max(1) as usize;
        w.counts.iter().rev().take(per).sum::<u64>() as f64
    }

    /// Alive (provisioning or ready) instances per (type, market) that are not under an interruption notice.
    fn alive(view: &View) -> BTreeMap<(VmTypeId, Market), u32> {
        let mut alive = BTreeMap::new();
        for vm in &view.vms {
            if matches!(vm.state, VmState::Provisioning | VmState::Ready) && vm.interruption_at.is_none() {
                *alive.entry((vm.vm_type, vm.market)).or_insert(0) += 1;
            }
        }
        alive
    }

    /// The rate to plan for: the largest forecast over the look-ahead, and at least the rate just seen,
    /// times the over-provisioning factor.
    fn target_rate(&self, observed: f64) -> f64 {
        let step = self.config.control_interval_s;
        let forecast = self.predictor.forecast(self.config.lookahead_steps);
        let peak = forecast.iter().copied().fold(observed, f64::max);
        peak / step * self.config.over_provision
    }

    fn refit(&mut self) {
        if trains(&self.config.predictor)
            && self.steps.is_multiple_of(self.config.refit_every_steps.max(1))
            && let Ok(mut fresh) = self.config.predictor.build(self.config.seed)
        {
            let past: Vec<f64> = self.history.iter().copied().collect();
            if fresh.fit(&past).is_ok() {
                self.predictor = fresh;
                return;
            }
        }
        if let Some(&last) = self.history.back() {
            self.predictor.observe(last);
        }
    }

    fn plan(&mut self, view: &View, out: &mut Vec<Action>) {
        let observed = self.observed_count(view);
        if view.now > Nanos::ZERO {
            self.steps += 1;
            self.history.push_back(observed);
            if self.history.len() > 1440 {
                self.history.pop_front();
            }
            self.refit();
        }
        let target = self.target_rate(observed);
        let alive = Mark::alive(view);
        let existing: Vec<u32> =
            self.types.iter().map(|t| alive.get(&(t.vm_type, t.market)).copied().unwrap_or(0)).collect();
        let horizon = self.config.control_interval_s * self.config.lookahead_steps as f64;
        let counts = greedy_plan(&self.types, &existing, target, horizon, self.config.launch_overhead_s);
        let mut plan: BTreeMap<(VmTypeId, Market), u32> = BTreeMap::new();
        for (t, &n) in self.types.iter().zip(&counts) {
            *plan.entry((t.vm_type, t.market)).or_insert(0) += n;
        }
        if self.config.standbys > 0
            && let Some(best) = self.cheapest_per_request()
        {
            *plan.entry((best, Market::OnDemand)).or_insert(0) += self.config.standbys;
        }
        self.plans.push_back(plan.clone());
        if self.plans.len() > self.config.scale_in_history {
            self.plans.pop_front();
        }
        let mut keys: Vec<(VmTypeId, Market)> = alive.keys().chain(plan.keys()).copied().collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let now = alive.get(&key).copied().unwrap_or(0);
            let want = plan.get(&key).copied().unwrap_or(0);
            let floor = self.plans.iter().filter_map(|p| p.get(&key)).copied().max().unwrap_or(0);
            if want > now {
                out.push(Action::Provision { vm_type: key.0, market: key.1, count: want - now });
            } else if now > floor {
                out.push(Action::ReleaseVms { vm_type: key.0, market: key.1, count: now - floor });
            }
        }
        if self.config.warm_up {
            let ready: f64 =
                self.types.iter().map(|t| view.pool(t.vm_type).ready.total() as f64 * t.capacity_per_s).sum();
            let gap = (target - ready).max(0.0);
            let prewarm = instances_needed(gap * self.function_service.as_secs_f64());
            if prewarm != view.functions.settings.prewarm {
                out.push(Action::ConfigureFunctions {
                    memory_mb: None,
                    concurrency: None,
                    keep_alive: None,
                    prewarm: Some(prewarm),
                });
            }
        }
        self.last_minute_end = view.now;
    }

    fn cheapest_per_request(&self) -> Option<VmTypeId> {
        self.types
            .iter()
            .min_by(|a, b| (a.price_per_h / a.capacity_per_s).total_cmp(&(b.price_per_h / b.capacity_per_s)))
            .map(|t| t.vm_type)
    }

    /// The planned types, with their batching (set once the SLO is known, at start).
    pub fn types(&self) -> &[TypePlan] {
        &self.types
    }
}

impl Scaler for Mark {
    fn control_interval(&self) -> Nanos {
        self.interval()
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        let budget = Nanos::from_secs_f64(view.slo.rt_max.as_secs_f64() * self.config.batch_budget);
        for t in &mut self.types {
            let table = &view.catalog.vm(t.vm_type).service;
            t.batching = batch_for_budget(table, budget);
            t.batch_latency = table.latency(t.batching.max_batch);
            t.capacity_per_s = table.throughput_per_s(t.batching.max_batch);
            out.push(Action::SetBatching { pool: Pool::Vm(t.vm_type), rule: t.batching });
        }
        // A type whose batch alone cannot meet the budget would only ever pass its requests on to functions.
        self.types.retain(|t| t.batch_latency.saturating_add(t.batching.max_wait) <= budget);
        self.set_route_figures();
        out.push(Action::ConfigureFunctions {
            memory_mb: Some(self.function_memory_mb),
            concurrency: Some(1),
            keep_alive: Some(Nanos::from_secs_f64(self.config.function_keep_alive_s)),
            prewarm: Some(0),
        });
        self.plan(view, out);
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        self.plan(view, out);
    }

    fn on_spot_notice(&mut self, notice: &SpotNotice, _view: &View, out: &mut Vec<Action>) {
        // Replace lost spot capacity at once, on the spot market again.
        out.push(Action::Provision { vm_type: notice.vm_type, market: Market::Spot, count: 1 });
    }
}

impl Router for Mark {
    fn route(&mut self, _request: &RequestInfo, view: &View) -> Route {
        // The executor sends a VM-bound request to the pool's ready instance with the least outstanding work;
        // estimate that instance's latency for each pool (its load from the view's per-pool count, no scan),
        // and take the pool with the lowest estimate within `rt_max` (the first planned among equals).
        let rt_max = view.slo.rt_max.0 as f64;
        if let Some(id) = best_within(&self.route_order, rt_max, |t| view.pool(t).least_ready_load()) {
            return Route::Vm(id);
        }
        // Functions take it while their executions in flight are under the account limit (what the platform
        // throttles by; idle instances hold none).
        let platform = &view.catalog.functions;
        if view.functions.in_flight < u64::from(platform.regional_concurrency) {
            return Route::Functions;
        }
        // No pool within `rt_max` and no function room: the lowest estimate anywhere, else the first planned
        // pool that accepts (no instance ready yet).
        let mut fallback: Option<(f64, VmTypeId)> = None;
        for t in &self.route_figures {
            let pool = view.pool(t.vm_type);
            match pool.least_ready_load() {
                Some(load) => {
                    let estimate = t.estimate(load);
                    if fallback.is_none_or(|(e, _)| estimate < e) {
                        fallback = Some((estimate, t.vm_type));
                    }
                }
                None => {
                    if fallback.is_none() && pool.accepting() > 0 {
                        fallback = Some((f64::INFINITY, t.vm_type));
                    }
                }
            }
        }
        match fallback {
            Some((_, id)) => Route::Vm(id),
            None => Route::Reject(RejectReason::Throttled),
        }
    }
}

impl Policy for Mark {
    fn name(&self) -> &str {
        "mark"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u16, price: f64, capacity: f64) -> TypePlan {
        TypePlan {
            vm_type: VmTypeId(id),
            market: Market::OnDemand,
            price_per_h: price,
            batching: BatchRule::NONE,
            batch_latency: Nanos::from_millis(100),
            capacity_per_s: capacity,
        }
    }

    #[test]
    fn greedy_buys_the_cheapest_per_request_then_fills_the_rest() {
        // Type 0: $0.90/h for 55 req/s ($0.0164 per 1000 req/h-units); type 1: $0.085/h for 4.7 req/s.
        let types = [t(0, 0.90, 55.0), t(1, 0.085, 4.7)];
        // 60 req/s: one big instance (55), then 5 left. The big one for 5 req/s costs 0.90/5 per req/s; a small
        // one costs 0.085/4.7: two small ones.
        assert_eq!(greedy_plan(&types, &[0, 0], 60.0, 360.0, 180.0), [1, 2]);
        // Nothing to serve, nothing planned.
        assert_eq!(greedy_plan(&types, &[0, 0], 0.0, 360.0, 180.0), [0, 0]);
    }

    #[test]
    fn running_instances_pay_no_launch_overhead() {
        // Equal cost per request at full use; the launch overhead makes the running type win for a small load.
        // At 10 req/s a running c5.2xlarge (no overhead) beats a new c5.xlarge; a running c5.xlarge beats a new
        // c5.2xlarge, and the rest goes to a second c5.xlarge.
        let types = [t(0, 0.34, 12.85), t(1, 0.17, 6.425)];
        assert_eq!(greedy_plan(&types, &[1, 0], 10.0, 360.0, 180.0), [1, 0]);
        assert_eq!(greedy_plan(&types, &[0, 1], 10.0, 360.0, 180.0), [0, 2]);
    }

    #[test]
    fn the_ordered_route_scan_picks_what_a_scan_of_every_pool_picks() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        for _ in 0..20_000 {
            // Up to five types, latencies from a few values so that estimates often tie.
            let types: Vec<TypePlan> = (0..rng.random_range(1..6u16))
                .map(|id| TypePlan {
                    batching: BatchRule::new(rng.random_range(1..5), Nanos::from_millis(rng.random_range(0..3) * 10)),
                    batch_latency: Nanos::from_millis(rng.random_range(1..4) * 20),
                    ..t(id, 0.1, 1.0)
                })
                .collect();
            let figures: Vec<RouteFigures> = types.iter().enumerate().map(|(r, t)| RouteFigures::of(t, r)).collect();
            let order = by_least_estimate(&figures);
            let loads: Vec<Option<u32>> =
                figures.iter().map(|_| rng.random_bool(0.8).then(|| rng.random_range(0..12))).collect();
            let rt_max = rng.random_range(20..200) as f64 * 1e6;
            // Every pool, in planned order, the first of the lowest estimates kept.
            let mut expected: Option<(f64, VmTypeId)> = None;
            for (f, load) in figures.iter().zip(&loads) {
                if let Some(load) = load {
                    let e = f.estimate(*load);
                    if e <= rt_max && expected.is_none_or(|(best, _)| e < best) {
                        expected = Some((e, f.vm_type));
                    }
                }
            }
            let got = best_within(&order, rt_max, |id| loads[id.0 as usize]);
            assert_eq!(got, expected.map(|(_, id)| id), "{figures:?} loads {loads:?} rt_max {rt_max}");
        }
    }

    #[test]
    fn batches_fit_the_budget() {
        let table = crate::profile::LatencyTable::from_millis("gpu", vec![1, 8], &[40.0, 144.6]).unwrap();
        let rule = batch_for_budget(&table, Nanos::from_millis(160));
        assert_eq!(rule.max_batch, 8);
        assert_eq!(rule.max_wait, Nanos::from_micros(15_400));
        let cpu = crate::profile::LatencyTable::from_millis("cpu", vec![1, 8], &[77.8, 622.4]).unwrap();
        assert_eq!(batch_for_budget(&cpu, Nanos::from_millis(160)), BatchRule::NONE);
    }
}
