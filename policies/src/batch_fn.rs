//! `batch`: adaptive batching on functions, after BATCH.
//!
//! Source: Ali, Pinciroli, Yan and Smirni, "BATCH: Machine Learning Inference Serving on Serverless
//! Platforms with Adaptive Batching" (SC'20). BATCH buffers requests in front of AWS Lambda and sends them
//! to one invocation as a batch once `batch size` requests are buffered or the oldest has waited `timeout`;
//! an analytic model of the arrivals (an MMPP fitted to the trace) and of the service time chooses the
//! (memory, batch size, timeout) that costs least per request while meeting the latency SLO, and the choice
//! is revisited as the arrivals change. Its defaults: 3,008 MB, batch 5, timeout 1 s.
//!
//! Models:
//! - Functions with one request slot per instance and the platform's batching rule (batch `B`, timeout
//!   `T`): an instance takes up to `B` requests and starts its batch when `B` are queued or the oldest has
//!   waited `T`; one batch is one invocation, billed for its run time at the instance's memory.
//! - `mode = "fixed"`: the configured memory, batch size and timeout, set once.
//! - `mode = "adaptive"` (default): every `interval_s` (60 s) the arrival rate of the last interval is
//!   measured and every candidate memory size and batch size up to `max_batch_size` is priced. For each,
//!   the timeout is the longest that keeps the worst case, timeout plus the batch's service time, within
//!   `slo_fraction` of the SLO's `rt_max` (capped at `max_timeout_ms`); the batch that forms is
//!   `min(B, 1 + N)` with `N` the Poisson arrivals at the measured rate within the timeout; the cost per
//!   request is `E[cost of a batch] / E[batch size]` (the invocation fee plus its GB-seconds, rounded to the
//!   platform's granularity). The cheapest plan wins; the current plan is kept while it costs within
//!   `switch_threshold` of the cheapest, because a new memory size retires every warm instance. When no plan
//!   fits the SLO, the fastest is used.
//!
//! Leaves out: BATCH's MMPP fit and its latency percentiles (a Poisson rate and the worst case stand in for
//! them), its buffer in front of the platform (here a batch forms in an instance's own queue, so a request
//! can also wait behind the batch its instance is running), and cold starts in the cost model.

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::billing::function_compute_charge;
use crate::catalog::{Catalog, FunctionPlatform};
use crate::error::PolicyError;
use crate::policy::{Policy, Router, Scaler};
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// Fixed settings or BATCH's adaptive choice.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BatchMode {
    /// `memory_mb`, `batch_size` and `timeout_ms`, set once.
    Fixed,
    /// Re-chosen every interval from the measured arrival rate.
    #[default]
    Adaptive,
}

/// Configuration of [`Batch`], the `[policies.batch]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// `fixed` or `adaptive` (default).
    pub mode: BatchMode,
    /// Fixed mode: memory per instance, MB (default: the catalog's, 3,008 MB on the shipped AWS catalog).
    pub memory_mb: Option<u32>,
    /// Fixed mode: batch size (default 5).
    pub batch_size: u32,
    /// Fixed mode: timeout, ms (default 1,000).
    pub timeout_ms: f64,
    /// Adaptive mode: memory sizes to choose from, MB (default: every 64 MB the platform sells that holds
    /// the model).
    pub memory_options_mb: Option<Vec<u32>>,
    /// Adaptive mode: largest batch size considered (default 16).
    pub max_batch_size: u32,
    /// Adaptive mode: longest timeout considered, ms (default 1,000).
    pub max_timeout_ms: f64,
    /// Adaptive mode: fraction of `rt_max` the worst case may use, headroom for service-time variability
    /// that the profile's means do not show (default 0.9).
    pub slo_fraction: f64,
    /// Adaptive mode: keep the current plan while it costs at most this fraction more than the cheapest
    /// (default 0.05).
    pub switch_threshold: f64,
    /// Adaptive mode: how often the plan is revisited, seconds (default 60).
    pub interval_s: f64,
    /// Keep-alive of idle instances, seconds (default: the catalog's).
    pub keep_alive_s: Option<f64>,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            mode: BatchMode::Adaptive,
            memory_mb: None,
            batch_size: 5,
            timeout_ms: 1000.0,
            memory_options_mb: None,
            max_batch_size: 16,
            max_timeout_ms: 1000.0,
            slo_fraction: 0.9,
            switch_threshold: 0.05,
            interval_s: 60.0,
            keep_alive_s: None,
        }
    }
}

/// One choice of memory, batch size and timeout, with what the model expects of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchPlan {
    /// Memory per instance, MB.
    pub memory_mb: u32,
    /// Batch size.
    pub batch_size: u32,
    /// Timeout of the oldest request.
    pub timeout: Nanos,
    /// Expected dollars per request.
    pub cost_per_request: f64,
    /// Expected requests per batch.
    pub expected_batch: f64,
    /// Worst case: the timeout plus the service time of a full batch.
    pub worst_latency: Nanos,
}

/// Expected batch `E[min(B, 1 + N)]` and expected `E[f(min(B, 1 + N))]`, with `N` Poisson of mean
/// `rate_per_s x timeout`: the first request opens the batch, those arriving within the timeout join it.
fn batch_expectations(rate_per_s: f64, timeout: Nanos, max_batch: u32, f: impl Fn(u32) -> f64) -> (f64, f64) {
    let b = max_batch.max(1);
    let mean = (rate_per_s.max(0.0) * timeout.as_secs_f64()).max(0.0);
    let mut p = (-mean).exp(); // P(N = 0)
    let (mut e_b, mut e_f, mut below) = (0.0, 0.0, 0.0);
    for k in 0..b - 1 {
        e_b += p * (1 + k) as f64;
        e_f += p * f(1 + k);
        below += p;
        p *= mean / (k + 1) as f64;
    }
    let full = (1.0 - below).max(0.0);
    (e_b + full * b as f64, e_f + full * f(b))
}

/// Expected requests per batch with `max_batch` and `timeout` at `rate_per_s` (Poisson arrivals).
pub fn expected_batch(rate_per_s: f64, timeout: Nanos, max_batch: u32) -> f64 {
    batch_expectations(rate_per_s, timeout, max_batch, |_| 0.0).0
}

/// Prices one (memory, batch size) at `rate_per_s` with the longest timeout whose worst case fits `budget`
/// (capped at `max_timeout`); `None` when even a batch started at once misses the budget.
pub fn price_plan(
    platform: &FunctionPlatform,
    rate_per_s: f64,
    memory_mb: u32,
    batch_size: u32,
    budget: Nanos,
    max_timeout: Nanos,
) -> Option<BatchPlan> {
    let service_full = platform.service_time(batch_size, memory_mb, 1);
    if service_full > budget {
        return None;
    }
    // A batch of one never waits.
    let timeout = if batch_size <= 1 { Nanos::ZERO } else { (budget - service_full).min(max_timeout) };
    let cost = |b: u32| {
        platform.price_per_request
            + function_compute_charge(platform, memory_mb, platform.service_time(b, memory_mb, 1))
    };
    let (e_b, e_cost) = batch_expectations(rate_per_s, timeout, batch_size, cost);
    Some(BatchPlan {
        memory_mb,
        batch_size,
        timeout,
        cost_per_request: e_cost / e_b,
        expected_batch: e_b,
        worst_latency: timeout + service_full,
    })
}

/// BATCH's choice: over `memories` and batch sizes `1..=max_batch`, the plan with the least expected cost per
/// request whose worst case fits `budget`; ties go to the lower worst case, then the smaller memory, then
/// the smaller batch. When nothing fits, the plan with the lowest worst case (batch 1, no timeout).
pub fn best_plan(
    platform: &FunctionPlatform,
    rate_per_s: f64,
    memories: &[u32],
    max_batch: u32,
    budget: Nanos,
    max_timeout: Nanos,
) -> Option<BatchPlan> {
    let key = |p: &BatchPlan| (p.worst_latency, p.memory_mb, p.batch_size);
    let mut best: Option<BatchPlan> = None;
    for &m in memories {
        for b in 1..=max_batch.max(1) {
            let Some(plan) = price_plan(platform, rate_per_s, m, b, budget, max_timeout) else {
                // Larger batches only take longer.
                break;
            };
            let better = best.is_none_or(|cur| {
                let tol = 1e-12 * cur.cost_per_request.abs().max(1e-300);
                plan.cost_per_request < cur.cost_per_request - tol
                    || (plan.cost_per_request <= cur.cost_per_request + tol && key(&plan) < key(&cur))
            });
            if better {
                best = Some(plan);
            }
        }
    }
    best.or_else(|| {
        memories.iter().filter_map(|&m| price_plan(platform, rate_per_s, m, 1, Nanos::MAX, Nanos::ZERO)).min_by_key(key)
    })
}

/// BATCH-like batching on functions; see the module docs.
#[derive(Clone, Debug)]
pub struct Batch {
    mode: BatchMode,
    keep_alive: Nanos,
    memories: Vec<u32>,
    max_batch: u32,
    max_timeout: Nanos,
    slo_fraction: f64,
    switch_threshold: f64,
    interval: Nanos,
    /// The plan in force (memory, batch size, timeout).
    current: (u32, u32, Nanos),
}

impl Batch {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &BatchConfig, catalog: &Catalog) -> Result<Batch, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "batch".into(), reason };
        let f = &catalog.functions;
        for (name, v) in [("timeout_ms", config.timeout_ms), ("max_timeout_ms", config.max_timeout_ms)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(format!("{name} must be a non-negative number, got {v}")));
            }
        }
        for (name, v) in [("slo_fraction", config.slo_fraction), ("interval_s", config.interval_s)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(format!("{name} must be a positive number, got {v}")));
            }
        }
        if !(config.switch_threshold.is_finite() && config.switch_threshold >= 0.0) {
            return Err(invalid(format!("switch_threshold must be non-negative, got {}", config.switch_threshold)));
        }
        if config.batch_size == 0 || config.max_batch_size == 0 {
            return Err(invalid("batch_size and max_batch_size must be at least 1".into()));
        }
        let keep_alive = match config.keep_alive_s {
            Some(s) if !(s.is_finite() && s >= 0.0) => {
                return Err(invalid(format!("keep_alive_s must be a non-negative number, got {s}")));
            }
            Some(s) => Nanos::from_secs_f64(s),
            None => f.default_keep_alive,
        };
        let memory_mb = config.memory_mb.unwrap_or(f.default_memory_mb);
        f.check_settings(memory_mb, 1).map_err(|e| invalid(e.to_string()))?;
        let memories = match &config.memory_options_mb {
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid("memory_options_mb is empty".into()));
                }
                for &m in list {
                    f.check_settings(m, 1).map_err(|e| invalid(format!("memory_options_mb: {e}")))?;
                }
                let mut list = list.clone();
                list.sort_unstable();
                list.dedup();
                list
            }
            None => (f.memory_min_mb.div_ceil(64) * 64..=f.memory_max_mb)
                .step_by(64)
                .filter(|&m| f.check_settings(m, 1).is_ok())
                .collect(),
        };
        if memories.is_empty() {
            return Err(invalid("no memory size the platform sells holds the model".into()));
        }
        let current = (memory_mb, config.batch_size, Nanos::from_millis_f64(config.timeout_ms));
        Ok(Batch {
            mode: config.mode,
            keep_alive,
            memories,
            max_batch: config.max_batch_size,
            max_timeout: Nanos::from_millis_f64(config.max_timeout_ms),
            slo_fraction: config.slo_fraction,
            switch_threshold: config.switch_threshold,
            interval: Nanos::from_secs_f64(config.interval_s),
            current,
        })
    }

    /// The plan in force: memory (MB), batch size and timeout.
    pub fn plan(&self) -> (u32, u32, Nanos) {
        self.current
    }

    /// The latency budget of a plan's worst case.
    fn budget(&self, view: &View) -> Nanos {
        Nanos::from_secs_f64(view.slo.rt_max.as_secs_f64() * self.slo_fraction)
    }

    /// The adaptive choice at `rate_per_s`, keeping the current plan while it is close enough.
    fn choose(&self, view: &View, rate_per_s: f64) -> (u32, u32, Nanos) {
        let f = &view.catalog.functions;
        let budget = self.budget(view);
        let Some(best) = best_plan(f, rate_per_s, &self.memories, self.max_batch, budget, self.max_timeout) else {
            return self.current;
        };
        let (m, b, _) = self.current;
        if let Some(cur) = price_plan(f, rate_per_s, m, b, budget, self.max_timeout)
            && cur.cost_per_request <= best.cost_per_request * (1.0 + self.switch_threshold)
        {
            return (cur.memory_mb, cur.batch_size, cur.timeout);
        }
        (best.memory_mb, best.batch_size, best.timeout)
    }

    fn apply(&mut self, plan: (u32, u32, Nanos), out: &mut Vec<Action>) {
        let (m, b, t) = plan;
        if m != self.current.0 {
            out.push(Action::ConfigureFunctions {
                memory_mb: Some(m),
                concurrency: None,
                keep_alive: None,
                prewarm: None,
            });
        }
        if (b, t) != (self.current.1, self.current.2) {
            out.push(Action::SetBatching { pool: Pool::Functions, rule: BatchRule::new(b, t) });
        }
        self.current = plan;
    }
}

impl Scaler for Batch {
    fn control_interval(&self) -> Nanos {
        self.interval
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        if self.mode == BatchMode::Adaptive {
            // No arrivals measured yet: the best plan for a rate of zero (batches of one).
            let f = &view.catalog.functions;
            let budget = self.budget(view);
            if let Some(p) = best_plan(f, 0.0, &self.memories, self.max_batch, budget, self.max_timeout) {
                self.current = (p.memory_mb, p.batch_size, p.timeout);
            }
        }
        let (m, b, t) = self.current;
        out.push(Action::ConfigureFunctions {
            memory_mb: Some(m),
            concurrency: Some(1),
            keep_alive: Some(self.keep_alive),
            prewarm: Some(0),
        });
        out.push(Action::SetBatching { pool: Pool::Functions, rule: BatchRule::new(b, t) });
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        if self.mode == BatchMode::Fixed {
            return;
        }
        let rate = view.recent.arrivals as f64 / self.interval.as_secs_f64();
        let plan = self.choose(view, rate);
        self.apply(plan, out);
    }
}

impl Router for Batch {
    fn route(&mut self, _request: &RequestInfo, _view: &View) -> Route {
        Route::Functions
    }
}

impl Policy for Batch {
    fn name(&self) -> &str {
        "batch"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::LatencyTable;

    const MS: u64 = 1_000_000;

    /// 1 vCPU per 1,024 MB, up to 2 vCPUs per request; a batch of b takes 100 ms x b at one vCPU.
    /// $1 per invocation and $0.001 per GB-second, so the invocation fee dominates.
    fn platform() -> FunctionPlatform {
        FunctionPlatform {
            price_per_gb_s: 0.001,
            price_per_request: 1.0,
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
            service: LatencyTable::from_millis("function", vec![1], &[100.0]).unwrap(),
            model_size_mb: 0.0,
            per_request_mb: 0.0,
            max_vcpus_per_request: 2.0,
        }
    }

    #[test]
    fn expected_batch_is_one_plus_the_capped_poisson_arrivals() {
        assert_eq!(expected_batch(0.0, Nanos(500 * MS), 5), 1.0);
        assert_eq!(expected_batch(100.0, Nanos(500 * MS), 1), 1.0);
        // Mean 1 arrival within the timeout, batch at most 2: 1 + P(N >= 1) = 2 - e^-1.
        let e = expected_batch(2.0, Nanos(500 * MS), 2);
        assert!((e - (2.0 - (-1.0f64).exp())).abs() < 1e-12, "{e}");
        // Very high rates fill every batch.
        assert!((expected_batch(1e6, Nanos(500 * MS), 5) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_plan_waits_as_long_as_the_budget_allows() {
        let p = platform();
        // 2,048 MB (2 vCPUs): batch 3 takes 150 ms; a 400 ms budget leaves 250 ms of timeout.
        let plan = price_plan(&p, 10.0, 2048, 3, Nanos(400 * MS), Nanos(1000 * MS)).unwrap();
        assert_eq!(plan.timeout, Nanos(250 * MS));
        assert_eq!(plan.worst_latency, Nanos(400 * MS));
        // Capped by the longest timeout allowed.
        assert_eq!(price_plan(&p, 10.0, 2048, 3, Nanos(400 * MS), Nanos(100 * MS)).unwrap().timeout, Nanos(100 * MS));
        // 1,024 MB: batch 5 takes 500 ms, past the budget.
        assert!(price_plan(&p, 10.0, 1024, 5, Nanos(400 * MS), Nanos(1000 * MS)).is_none());
        // At rate 0 every batch has one request: $1 + 1 GB x 0.1 s x $0.001.
        let one = price_plan(&p, 0.0, 1024, 1, Nanos(400 * MS), Nanos::ZERO).unwrap();
        assert!((one.cost_per_request - (1.0 + 0.0001)).abs() < 1e-12);
    }

    #[test]
    fn the_best_plan_batches_when_the_invocation_fee_dominates() {
        let p = platform();
        let budget = Nanos(400 * MS);
        // Idle: batches of one; every plan costs the same fee plus 0.1 GB-s, so the fastest worst case wins
        // (2,048 MB: 50 ms, as fast as 3,072 MB but smaller).
        let idle = best_plan(&p, 0.0, &[1024, 2048, 3072], 8, budget, Nanos(1000 * MS)).unwrap();
        assert_eq!((idle.memory_mb, idle.batch_size, idle.timeout), (2048, 1, Nanos::ZERO));
        // At 1,000 requests/s a batch fills within any timeout of a few ms: the largest batch that still leaves
        // time to wait, 7 at 2,048 MB (350 ms of service, 50 ms of timeout). Batch 8 would take the whole
        // 400 ms, leave no timeout, and so expect batches of one.
        let busy = best_plan(&p, 1000.0, &[1024, 2048, 3072], 8, budget, Nanos(1000 * MS)).unwrap();
        assert_eq!((busy.memory_mb, busy.batch_size, busy.timeout), (2048, 7, Nanos(50 * MS)));
        assert!((busy.expected_batch - 7.0).abs() < 1e-9);
        assert!((busy.cost_per_request - (1.0 + 0.001 * 2.0 * 0.35) / 7.0).abs() < 1e-12);
        // Nothing fits 40 ms: the fastest plan, batch one at 2,048 MB.
        let none = best_plan(&p, 10.0, &[1024, 2048, 3072], 8, Nanos(40 * MS), Nanos(1000 * MS)).unwrap();
        assert_eq!((none.memory_mb, none.batch_size, none.worst_latency), (2048, 1, Nanos(50 * MS)));
    }
}
