//! `kpa`: the Knative Pod Autoscaler, on the function platform.
//!
//! Source: the Knative Serving documentation ("About autoscaling", "Additional autoscaling configuration
//! for Knative Pod Autoscaler", "Configuring scale to zero", the `config-autoscaler` defaults) and its
//! autoscaler's scaling step (`pkg/autoscaler/scaling/autoscaler.go`).
//!
//! Models, every tick (Knative's `tick-interval`, 2 s):
//! - The observed concurrency, sampled once a tick: requests in flight at function instances (queued or in
//!   service, cold instances included). Two windows of these samples: the stable window (60 s, so the last
//!   30 samples) and the panic window (`panic_window_percentage`, 10% of it: the last 3 samples), each
//!   averaged over the samples it holds (fewer at the start).
//! - Target value = `target_concurrency x target_utilization` (Knative: container concurrency target,
//!   default 100, times `container-concurrency-target-percentage`, 70%). The target defaults here to 1,
//!   which suits ML inference where one instance serves one request at a time.
//! - Desired counts `ceil(stable average / target value)` and `ceil(panic average / target value)`, each
//!   held within `[floor(ready / max_scale_down_rate), ceil(ready x max_scale_up_rate)]` (rates 2 and 1000;
//!   `ready` counts warm instances, at least 1).
//! - Panic: entered when the panic-window count reaches `panic_threshold_percentage` (200%) of the ready
//!   instances, extended while it stays there, left once a whole stable window has passed since it last was.
//!   In panic the count is the larger of the two and never goes down.
//! - Scale to zero: when the count falls to 0 (the stable average is 0 only after a whole stable window
//!   without traffic), the last instance is kept for `scale_to_zero_grace_s` (30 s) more, then released.
//!   `min_scale`/`max_scale` bound the count (Knative's annotations; `max_scale` 0 means no bound), and
//!   `initial_scale` (1) instances are started with the revision.
//!
//! Why functions and not a VM pool: the platform fits the KPA's world. A request that finds no free
//! instance starts one (a cold start), which plays the activator's part: nothing is lost at zero and scaling
//! from zero costs one cold start, where a VM pool at zero could only reject. An instance's concurrency slots
//! are Knative's container concurrency. The KPA's decision, how many instances must exist, is the platform's
//! `prewarm` count; instances above it are released once idle for `keep_alive_s` (2 s), as Knative removes
//! surplus pods when it scales down.
//!
//! Billing: Knative pods are not Lambda provisioned concurrency. They run on a Kubernetes cluster's nodes, so
//! every instance is billed from its start to its end at its memory's share of a node's on-demand price
//! (`node_type`, default the catalog's cheapest type per GiB), as [`FunctionBilling::Pods`] states; the
//! EC2 prices come from the catalog (`data/`).
//!
//! Leaves out: the activator's buffering (a request that finds every slot full starts a new instance at
//! once, as on AWS Lambda, instead of waiting for the autoscaler), target burst capacity, the
//! requests-per-second metric, `scale-down-delay`, `scale-to-zero-pod-retention-period`, and the
//! queue-proxy's per-second averaging (the sample is the instantaneous count at the tick).

use std::collections::VecDeque;

use serde::Deserialize;

use crate::action::{Action, Route};
use crate::billing::FunctionBilling;
use crate::catalog::Catalog;
use crate::error::PolicyError;
use crate::policy::{Policy, Router, Scaler};
use crate::static_peak::instances_needed;
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// Configuration of [`Kpa`], the `[policies.kpa]` section. Names follow Knative's `config-autoscaler` keys.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KpaConfig {
    /// Memory per function instance, MB (default: the catalog's).
    pub memory_mb: Option<u32>,
    /// Requests one instance serves at once, Knative's `containerConcurrency` (default 1).
    pub container_concurrency: u32,
    /// Target concurrency per instance (Knative's default is 100; default here 1).
    pub target_concurrency: f64,
    /// Fraction of the target to aim for, Knative's `container-concurrency-target-percentage` / 100
    /// (default 0.7).
    pub target_utilization: f64,
    /// Stable window, seconds (default 60).
    pub stable_window_s: f64,
    /// Panic window as a percentage of the stable window (default 10).
    pub panic_window_percentage: f64,
    /// Panic when the panic-window count reaches this percentage of the ready instances (default 200).
    pub panic_threshold_percentage: f64,
    /// Most growth per tick, as a multiple of the ready instances (default 1000).
    pub max_scale_up_rate: f64,
    /// Most shrinkage per tick, as a divisor of the ready instances (default 2).
    pub max_scale_down_rate: f64,
    /// Whether the count may reach zero (default true).
    pub enable_scale_to_zero: bool,
    /// How long the last instance is kept after the count reaches zero, seconds (default 30).
    pub scale_to_zero_grace_s: f64,
    /// Instances started with the revision (default 1).
    pub initial_scale: u32,
    /// Fewest instances (default 0).
    pub min_scale: u32,
    /// Most instances; 0 means no bound but the platform's (default 0).
    pub max_scale: u32,
    /// Tick interval, seconds (default 2).
    pub tick_s: f64,
    /// How long an idle instance above the desired count lives, seconds (default 2).
    pub keep_alive_s: f64,
    /// The VM type of the cluster's nodes, whose price per GiB bills the pods (default: the catalog's
    /// cheapest on-demand type per GiB).
    pub node_type: Option<String>,
}

impl Default for KpaConfig {
    fn default() -> KpaConfig {
        KpaConfig {
            memory_mb: None,
            container_concurrency: 1,
            target_concurrency: 1.0,
            target_utilization: 0.7,
            stable_window_s: 60.0,
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_s: 30.0,
            initial_scale: 1,
            min_scale: 0,
            max_scale: 0,
            tick_s: 2.0,
            keep_alive_s: 2.0,
            node_type: None,
        }
    }
}

/// Knative's scaling step: the desired count from the two window averages, with the panic state it keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Autoscaler {
    /// Target concurrency per instance times the target utilisation.
    pub target_value: f64,
    /// Panic threshold as a ratio (2.0 for 200%).
    pub panic_threshold: f64,
    /// Most growth per tick, times the ready instances.
    pub max_scale_up_rate: f64,
    /// Most shrinkage per tick, ready instances divided by this.
    pub max_scale_down_rate: f64,
    /// How long panic lasts after the panic count was last over the threshold.
    pub stable_window: Nanos,
    /// When the panic count was last over the threshold, while in panic.
    panic_time: Option<Nanos>,
    /// The highest count decided in this panic.
    max_panic: u32,
}

impl Autoscaler {
    /// A scaler in stable mode.
    pub fn new(
        target_value: f64,
        panic_threshold: f64,
        max_scale_up_rate: f64,
        max_scale_down_rate: f64,
        stable_window: Nanos,
    ) -> Autoscaler {
        Autoscaler {
            target_value,
            panic_threshold,
            max_scale_up_rate,
            max_scale_down_rate,
            stable_window,
            panic_time: None,
            max_panic: 0,
        }
    }

    /// Whether it is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic_time.is_some()
    }

    /// The desired count at `now`, with `ready` instances ready and the two windows' average concurrency.
    pub fn scale(&mut self, now: Nanos, ready: u32, stable_avg: f64, panic_avg: f64) -> u32 {
        let ready = ready.max(1) as f64;
        let max_up = (self.max_scale_up_rate * ready).ceil();
        let max_down = (ready / self.max_scale_down_rate).floor();
        let dspc = instances_needed(stable_avg / self.target_value) as f64;
        let dppc = instances_needed(panic_avg / self.target_value) as f64;
        let stable = dspc.max(max_down).min(max_up);
        let panic = dppc.max(max_down).min(max_up);
        let over = dppc / ready >= self.panic_threshold;
        if over {
            // Enter panic, or extend it.
            self.panic_time = Some(now);
        } else if self.panic_time.is_some_and(|t| t.saturating_add(self.stable_window) < now) {
            // The surge has made its way into the stable window.
            self.panic_time = None;
            self.max_panic = 0;
        }
        if self.in_panic() {
            // Never scale down in panic; provision for the larger of the two windows.
            self.max_panic = self.max_panic.max(instances_needed(stable.max(panic)));
            self.max_panic
        } else {
            instances_needed(stable)
        }
    }
}

/// The Knative Pod Autoscaler on functions; see the module docs.
#[derive(Clone, Debug)]
pub struct Kpa {
    memory_mb: u32,
    concurrency: u32,
    keep_alive: Nanos,
    tick: Nanos,
    initial_scale: u32,
    min_scale: u32,
    max_scale: u32,
    enable_scale_to_zero: bool,
    grace: Nanos,
    stable_samples: usize,
    panic_samples: usize,
    autoscaler: Autoscaler,
    /// Concurrency samples, oldest first, at most `stable_samples`.
    samples: VecDeque<u64>,
    /// Since when the desired count has been zero.
    zero_since: Option<Nanos>,
    /// The `prewarm` count last asked for.
    asked: u32,
    /// How its pods are billed.
    billing: FunctionBilling,
}

impl Kpa {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &KpaConfig, catalog: &Catalog) -> Result<Kpa, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "kpa".into(), reason };
        let f = &catalog.functions;
        let memory_mb = config.memory_mb.unwrap_or(f.default_memory_mb);
        f.check_settings(memory_mb, config.container_concurrency).map_err(|e| invalid(e.to_string()))?;
        for (name, v) in [
            ("target_concurrency", config.target_concurrency),
            ("target_utilization", config.target_utilization),
            ("stable_window_s", config.stable_window_s),
            ("panic_window_percentage", config.panic_window_percentage),
            ("panic_threshold_percentage", config.panic_threshold_percentage),
            ("max_scale_up_rate", config.max_scale_up_rate),
            ("max_scale_down_rate", config.max_scale_down_rate),
            ("tick_s", config.tick_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(format!("{name} must be a positive number, got {v}")));
            }
        }
        for (name, v) in
            [("scale_to_zero_grace_s", config.scale_to_zero_grace_s), ("keep_alive_s", config.keep_alive_s)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(format!("{name} must be a non-negative number, got {v}")));
            }
        }
        if config.max_scale_down_rate < 1.0 {
            return Err(invalid(format!("max_scale_down_rate must be at least 1, got {}", config.max_scale_down_rate)));
        }
        let max_scale = if config.max_scale == 0 { f.regional_concurrency } else { config.max_scale };
        if config.min_scale > max_scale || config.initial_scale > max_scale {
            return Err(invalid(format!(
                "min_scale {} and initial_scale {} must not exceed max_scale {max_scale}",
                config.min_scale, config.initial_scale
            )));
        }
        let per_gib = |t: &crate::catalog::VmType| t.price_on_demand_per_h / t.memory_gib.max(1e-9);
        let node = match &config.node_type {
            Some(name) => catalog
                .vm_types
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| invalid(format!("node_type '{name}' is not a VM type of the catalog")))?,
            None => catalog.vm_types.iter().min_by(|a, b| per_gib(a).total_cmp(&per_gib(b))).ok_or_else(|| {
                invalid("pods are billed as a share of a node, and the catalog has no VM type".into())
            })?,
        };
        let billing = FunctionBilling::Pods { node: node.name.clone(), price_per_gb_s: per_gib(node) / 3600.0 };
        let stable_samples = (config.stable_window_s / config.tick_s).round().max(1.0) as usize;
        let panic_samples = (stable_samples as f64 * config.panic_window_percentage / 100.0)
            .round()
            .clamp(1.0, stable_samples as f64) as usize;
        let stable_window = Nanos::from_secs_f64(config.stable_window_s);
        Ok(Kpa {
            memory_mb,
            concurrency: config.container_concurrency,
            keep_alive: Nanos::from_secs_f64(config.keep_alive_s),
            tick: Nanos::from_secs_f64(config.tick_s),
            initial_scale: config.initial_scale.max(config.min_scale),
            min_scale: config.min_scale,
            max_scale,
            enable_scale_to_zero: config.enable_scale_to_zero,
            grace: Nanos::from_secs_f64(config.scale_to_zero_grace_s),
            stable_samples,
            panic_samples,
            autoscaler: Autoscaler::new(
                config.target_concurrency * config.target_utilization,
                config.panic_threshold_percentage / 100.0,
                config.max_scale_up_rate,
                config.max_scale_down_rate,
                stable_window,
            ),
            samples: VecDeque::with_capacity(stable_samples),
            zero_since: None,
            asked: 0,
            billing,
        })
    }

    /// Whether the autoscaler is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.autoscaler.in_panic()
    }

    /// The instance count last asked of the platform.
    pub fn desired(&self) -> u32 {
        self.asked
    }

    /// Mean of the last `n` samples (0 with none).
    fn average(&self, n: usize) -> f64 {
        let n = n.min(self.samples.len());
        if n == 0 {
            return 0.0;
        }
        self.samples.iter().rev().take(n).sum::<u64>() as f64 / n as f64
    }
}

impl Scaler for Kpa {
    fn control_interval(&self) -> Nanos {
        self.tick
    }

    fn function_billing(&self) -> FunctionBilling {
        self.billing.clone()
    }

    fn start(&mut self, _view: &View, out: &mut Vec<Action>) {
        self.asked = self.initial_scale;
        out.push(Action::ConfigureFunctions {
            memory_mb: Some(self.memory_mb),
            concurrency: Some(self.concurrency),
            keep_alive: Some(self.keep_alive),
            prewarm: Some(self.asked),
        });
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        if self.samples.len() == self.stable_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(view.functions.in_flight);
        let f = &view.functions;
        let ready = f.idle_warm + f.busy;
        let (stable, panic) = (self.average(self.stable_samples), self.average(self.panic_samples));
        let mut want = self.autoscaler.scale(view.now, ready, stable, panic).clamp(self.min_scale, self.max_scale);
        if want == 0 {
            let since = *self.zero_since.get_or_insert(view.now);
            if !self.enable_scale_to_zero {
                want = 1;
            } else if view.now < since.saturating_add(self.grace) {
                // Keep the last instance (never start one) until the grace period has passed.
                want = f.instances().min(1);
            }
        } else {
            self.zero_since = None;
        }
        if want != self.asked {
            self.asked = want;
            out.push(Action::ConfigureFunctions {
                memory_mb: None,
                concurrency: None,
                keep_alive: None,
                prewarm: Some(want),
            });
        }
    }
}

impl Router for Kpa {
    fn route(&mut self, _request: &RequestInfo, _view: &View) -> Route {
        Route::Functions
    }
}

impl Policy for Kpa {
    fn name(&self) -> &str {
        "kpa"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::batching::BatchRule;
    use crate::catalog::FunctionPlatform;
    use crate::ledger::Slo;
    use crate::profile::LatencyTable;
    use crate::view::{ArrivalWindow, FunctionSettings};

    fn s(secs: u64) -> Nanos {
        Nanos::from_secs(secs)
    }

    fn knative(target_value: f64) -> Autoscaler {
        Autoscaler::new(target_value, 2.0, 1000.0, 2.0, s(60))
    }

    #[test]
    fn stable_mode_follows_the_stable_average_within_the_rates() {
        let mut a = knative(1.0);
        // 2.5 in flight on average over both windows, 3 ready: 3 instances, no panic (3 / 3 < 2).
        assert_eq!(a.scale(s(2), 3, 2.5, 2.5), 3);
        assert!(!a.in_panic());
        // The load is gone: at most halve per tick (floor(8 / 2) = 4).
        assert_eq!(a.scale(s(4), 8, 0.0, 0.0), 4);
        assert_eq!(a.scale(s(6), 1, 0.0, 0.0), 0);
        // Utilisation 0.7: an average of 1.4 needs exactly 2, not 3.
        let mut a = knative(0.7);
        assert_eq!(a.scale(s(2), 2, 1.4, 1.4), 2);
    }

    #[test]
    fn panics_at_twice_the_ready_instances_and_never_scales_down_in_panic() {
        let mut a = knative(1.0);
        // Panic average 4 on 2 ready: 4 / 2 = 2 >= 2, panic. Count max(stable 1, panic 4) = 4.
        assert_eq!(a.scale(s(10), 2, 1.0, 4.0), 4);
        assert!(a.in_panic());
        // The burst is gone, 4 ready: in panic the count stays at 4 (not floor(4 / 2) = 2).
        assert_eq!(a.scale(s(12), 4, 0.5, 0.0), 4);
        // A bigger burst in panic raises it: 9 / 4 >= 2, count 9, panic extended to 14 s.
        assert_eq!(a.scale(s(14), 4, 1.0, 9.0), 9);
        // Panic ends once 60 s have passed since it was last over the threshold (strictly after 74 s).
        assert_eq!(a.scale(s(74), 9, 0.0, 0.0), 9);
        assert!(a.in_panic());
        assert_eq!(a.scale(s(76), 9, 0.0, 0.0), 4);
        assert!(!a.in_panic());
    }

    #[test]
    fn scale_up_is_limited_by_the_up_rate() {
        let mut a = Autoscaler::new(1.0, 2.0, 3.0, 2.0, s(60));
        // Zero ready counts as one: at most 3 instances however large the burst.
        assert_eq!(a.scale(s(2), 0, 50.0, 50.0), 3);
    }

    pub(crate) fn catalog() -> Arc<Catalog> {
        let functions = FunctionPlatform {
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
            default_keep_alive: s(600),
            default_memory_mb: 1024,
            cold_start_mean: s(1),
            service: LatencyTable::from_millis("function", vec![1], &[100.0]).unwrap(),
            model_size_mb: 0.0,
            per_request_mb: 0.0,
            max_vcpus_per_request: 1.0,
        };
        // One node type: its price per GiB bills the pods.
        let node = crate::catalog::VmType {
            id: crate::catalog::VmTypeId(0),
            name: "node".into(),
            vcpus: 8,
            gpus: 0,
            memory_gib: 16.0,
            price_on_demand_per_h: 0.34,
            price_spot_per_h: None,
            provision_mean: s(60),
            service: LatencyTable::from_millis("node", vec![1], &[50.0]).unwrap(),
        };
        Arc::new(Catalog { model: "m".into(), models: Default::default(), vm_types: vec![node], functions })
    }

    #[test]
    fn ticks_sample_concurrency_and_keep_the_last_instance_for_the_grace_period() {
        let config = KpaConfig { target_utilization: 1.0, ..KpaConfig::default() };
        let mut kpa = Kpa::new(&config, &catalog()).unwrap();
        assert_eq!((kpa.stable_samples, kpa.panic_samples), (30, 3));
        let settings = FunctionSettings {
            memory_mb: 1024,
            concurrency: 1,
            keep_alive: s(600),
            prewarm: 0,
            batching: BatchRule::NONE,
        };
        let mut view = View::new(catalog(), Slo::MARK, ArrivalWindow::new(s(5), 10), settings);
        let mut out = Vec::new();
        kpa.start(&view, &mut out);
        assert_eq!(
            out[0],
            Action::ConfigureFunctions {
                memory_mb: Some(1024),
                concurrency: Some(1),
                keep_alive: Some(s(2)),
                prewarm: Some(1),
            }
        );
        // One idle warm instance and no traffic: the count is 0 from the first tick (floor(1 / 2) = 0), but
        // the instance is kept until 30 s after it, at 32 s.
        view.functions.idle_warm = 1;
        for t in (2..=30).step_by(2) {
            view.now = s(t);
            out.clear();
            kpa.tick(&view, &mut out);
            assert!(out.is_empty(), "t = {t}: {out:?}");
        }
        view.now = s(32);
        kpa.tick(&view, &mut out);
        let release =
            Action::ConfigureFunctions { memory_mb: None, concurrency: None, keep_alive: None, prewarm: Some(0) };
        assert_eq!(out, vec![release]);
        // Six requests arrive at zero instances: 16 samples of 0 and one of 6. Stable average 6 / 17 needs 1,
        // panic average 6 / 3 = 2 needs 2, which is twice the (at least one) ready instance: panic, count 2.
        view.functions.idle_warm = 0;
        view.functions.cold_starting = 6;
        view.functions.in_flight = 6;
        view.now = s(34);
        out.clear();
        kpa.tick(&view, &mut out);
        assert!(kpa.in_panic());
        assert_eq!(
            out,
            vec![Action::ConfigureFunctions { memory_mb: None, concurrency: None, keep_alive: None, prewarm: Some(2) }]
        );
    }
}
