//! `target-tracking`: target tracking on invocations per instance, as AWS SageMaker real-time endpoints
//! scale with Application Auto Scaling.
//!
//! Source: the AWS SageMaker developer guide ("Automatic scaling of Amazon SageMaker AI models": a target
//! tracking policy on the predefined `SageMakerVariantInvocationsPerInstance` metric, with the target
//! derived from a load test as `MAX_RPS x SAFETY_FACTOR x 60`, safety factor 0.5) and the Application Auto
//! Scaling user guide ("Target tracking scaling policies": cooldowns of 300 s for SageMaker variants; "scale
//! in conservatively").
//!
//! Models, on one VM pool (one type, one market):
//! - The metric, one datapoint a minute: invocations in the last minute divided by the instances in
//!   service (ready; provisioning and draining ones do not count). It is read from the view's outcomes since
//!   the previous tick, which on a 60 s control interval is exactly CloudWatch's one-minute sum (the
//!   arrival window's intervals need not line up with the tick). With no instance in service there is no
//!   datapoint (CloudWatch's `INSUFFICIENT_DATA`) and both alarms start over.
//! - The two alarms Application Auto Scaling creates for the policy: scale out when the last
//!   `scale_out_datapoints` (3) datapoints are above the target; scale in when the last
//!   `scale_in_datapoints` (15) are below `scale_in_threshold` (90%) of it.
//! - The new capacity `desired = ceil(in_service x metric / target)`, within `[min_instances,
//!   max_instances]`; the current capacity is the pool's instances that are provisioning or ready (the
//!   variant's desired instance count, which includes capacity still launching).
//! - Scale-out cooldown (300 s): after a scale-out no other scale-out starts until it has passed, however
//!   high the metric. Scale-in cooldown (300 s): a scale-in waits until that long after the last scaling
//!   activity of either kind, and never goes below `min_instances`. Capacity below `min_instances` (lost
//!   spot instances) is restored at once, outside any cooldown.
//! - Routing: each request to the instance with the least work in the pool; rejected (`no_vm_capacity`)
//!   when the pool has no instance that accepts requests.
//!
//! Leaves out: Application Auto Scaling lets a scale-out *larger* than the one that started the cooldown
//! through during the cooldown; here the cooldown blocks every scale-out (the conservative reading). The
//! cooldown runs from the decision, not from when the launched instances come into service. CloudWatch's
//! reporting delay, step scaling, scale-to-zero (SageMaker needs step scaling for that), and SageMaker's
//! price premium over EC2 (the catalog's EC2 prices are used).

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::catalog::{Catalog, Market, VmTypeId};
use crate::error::PolicyError;
use crate::ledger::RejectReason;
use crate::policy::{Policy, Router, Scaler};
use crate::static_fleet::least_backlog_pool;
use crate::static_peak::instances_needed;
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// The metric period and control interval: CloudWatch's one-minute datapoints.
const PERIOD: Nanos = Nanos::from_secs(60);

/// Configuration of [`TargetTracking`], the `[policies.target-tracking]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetTrackingConfig {
    /// VM type name of the pool.
    pub vm_type: String,
    /// On-demand (default) or spot.
    #[serde(default)]
    pub market: Market,
    /// Fewest instances (default 1).
    #[serde(default = "one")]
    pub min_instances: u32,
    /// Most instances (default 10).
    #[serde(default = "ten")]
    pub max_instances: u32,
    /// Instances requested at time zero (default `min_instances`).
    pub initial_instances: Option<u32>,
    /// Target invocations per instance per minute. Default: SageMaker's recipe, `safety_factor x 60 x` the
    /// requests per second one instance sustains at the pool's batch size (from the profile).
    pub target_invocations_per_instance_per_min: Option<f64>,
    /// Safety factor of the default target (default 0.5, as SageMaker recommends).
    #[serde(default = "half")]
    pub safety_factor: f64,
    /// Scale-out cooldown, seconds (default 300).
    #[serde(default = "five_minutes")]
    pub scale_out_cooldown_s: f64,
    /// Scale-in cooldown, seconds (default 300).
    #[serde(default = "five_minutes")]
    pub scale_in_cooldown_s: f64,
    /// Consecutive one-minute datapoints above the target that trigger a scale-out (default 3).
    #[serde(default = "three")]
    pub scale_out_datapoints: u32,
    /// Consecutive one-minute datapoints below `scale_in_threshold x target` that trigger a scale-in
    /// (default 15).
    #[serde(default = "fifteen")]
    pub scale_in_datapoints: u32,
    /// Fraction of the target below which a datapoint counts towards scale-in (default 0.9).
    #[serde(default = "nine_tenths")]
    pub scale_in_threshold: f64,
    /// Never scale in (default false).
    #[serde(default)]
    pub disable_scale_in: bool,
    /// Largest batch on the pool's instances (default 1).
    #[serde(default = "one")]
    pub max_batch: u32,
    /// Longest wait of the oldest request for a batch, ms (default 0).
    #[serde(default)]
    pub max_wait_ms: f64,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn fifteen() -> u32 {
    15
}
fn half() -> f64 {
    0.5
}
fn nine_tenths() -> f64 {
    0.9
}
fn five_minutes() -> f64 {
    300.0
}

/// What one evaluation decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingDecision {
    /// Leave the capacity as it is.
    Hold,
    /// Launch this many instances.
    ScaleOut(u32),
    /// Release this many instances.
    ScaleIn(u32),
}

/// `ceil(in_service x metric / target)`: the capacity that would bring `metric` (per in-service instance)
/// to `target`, as Application Auto Scaling computes it.
pub fn desired_capacity(in_service: u32, metric: f64, target: f64) -> u32 {
    instances_needed(in_service as f64 * metric / target)
}

/// Target tracking on one VM pool; see the module docs.
#[derive(Clone, Debug)]
pub struct TargetTracking {
    vm_type: VmTypeId,
    market: Market,
    rule: BatchRule,
    min: u32,
    max: u32,
    initial: u32,
    target: f64,
    scale_out_cooldown: Nanos,
    scale_in_cooldown: Nanos,
    scale_out_datapoints: u32,
    scale_in_datapoints: u32,
    scale_in_threshold: f64,
    disable_scale_in: bool,
    /// Consecutive datapoints above the target.
    high: u32,
    /// Consecutive datapoints below the scale-in threshold.
    low: u32,
    last_scale_out: Option<Nanos>,
    last_activity: Option<Nanos>,
}

impl TargetTracking {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &TargetTrackingConfig, catalog: &Catalog) -> Result<TargetTracking, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "target-tracking".into(), reason };
        let vm_type = catalog.vm_id(&config.vm_type)?;
        let t = catalog.vm(vm_type);
        if t.price_per_h(config.market).is_none() {
            return Err(invalid(format!("{} is not sold on the {} market", t.name, config.market.name())));
        }
        if config.max_instances == 0 || config.min_instances > config.max_instances {
            return Err(invalid(format!(
                "need 0 <= min_instances <= max_instances and max_instances >= 1, got {} and {}",
                config.min_instances, config.max_instances
            )));
        }
        let initial = config.initial_instances.unwrap_or(config.min_instances);
        if initial < config.min_instances || initial > config.max_instances {
            return Err(invalid(format!("initial_instances {initial} is outside min_instances..=max_instances")));
        }
        for (name, v) in [
            ("scale_out_cooldown_s", config.scale_out_cooldown_s),
            ("scale_in_cooldown_s", config.scale_in_cooldown_s),
            ("max_wait_ms", config.max_wait_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(format!("{name} must be a non-negative number, got {v}")));
            }
        }
        if !(config.scale_in_threshold.is_finite() && config.scale_in_threshold > 0.0) {
            return Err(invalid(format!("scale_in_threshold must be positive, got {}", config.scale_in_threshold)));
        }
        if config.scale_out_datapoints == 0 || config.scale_in_datapoints == 0 {
            return Err(invalid("scale_out_datapoints and scale_in_datapoints must be at least 1".into()));
        }
        if !(config.safety_factor.is_finite() && config.safety_factor > 0.0) {
            return Err(invalid(format!("safety_factor must be positive, got {}", config.safety_factor)));
        }
        let rule = BatchRule::new(config.max_batch, Nanos::from_millis_f64(config.max_wait_ms));
        let target = match config.target_invocations_per_instance_per_min {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                return Err(invalid(format!("target_invocations_per_instance_per_min must be positive, got {v}")));
            }
            Some(v) => v,
            None => config.safety_factor * 60.0 * t.service.throughput_per_s(rule.max_batch),
        };
        Ok(TargetTracking {
            vm_type,
            market: config.market,
            rule,
            min: config.min_instances,
            max: config.max_instances,
            initial,
            target,
            scale_out_cooldown: Nanos::from_secs_f64(config.scale_out_cooldown_s),
            scale_in_cooldown: Nanos::from_secs_f64(config.scale_in_cooldown_s),
            scale_out_datapoints: config.scale_out_datapoints,
            scale_in_datapoints: config.scale_in_datapoints,
            scale_in_threshold: config.scale_in_threshold,
            disable_scale_in: config.disable_scale_in,
            high: 0,
            low: 0,
            last_scale_out: None,
            last_activity: None,
        })
    }

    /// The target, invocations per instance per minute.
    pub fn target_per_min(&self) -> f64 {
        self.target
    }

    /// One evaluation at `now`: `invocations` in the last minute, `in_service` instances ready, `capacity`
    /// instances provisioning or ready.
    pub fn evaluate(&mut self, now: Nanos, invocations: u64, in_service: u32, capacity: u32) -> ScalingDecision {
        if capacity < self.min {
            return ScalingDecision::ScaleOut(self.min - capacity);
        }
        if in_service == 0 {
            // No datapoint: the alarms have nothing to evaluate.
            self.high = 0;
            self.low = 0;
            return ScalingDecision::Hold;
        }
        let metric = invocations as f64 / in_service as f64;
        self.high = if metric > self.target { self.high + 1 } else { 0 };
        self.low = if metric < self.scale_in_threshold * self.target { self.low + 1 } else { 0 };
        let desired = desired_capacity(in_service, metric, self.target).clamp(self.min, self.max);
        let after = |t: Option<Nanos>, cooldown: Nanos| t.is_none_or(|t| now >= t.saturating_add(cooldown));
        if self.high >= self.scale_out_datapoints && desired > capacity {
            if !after(self.last_scale_out, self.scale_out_cooldown) {
                return ScalingDecision::Hold;
            }
            self.last_scale_out = Some(now);
            self.last_activity = Some(now);
            return ScalingDecision::ScaleOut(desired - capacity);
        }
        if !self.disable_scale_in && self.low >= self.scale_in_datapoints && desired < capacity {
            if !after(self.last_activity, self.scale_in_cooldown) {
                return ScalingDecision::Hold;
            }
            self.last_activity = Some(now);
            return ScalingDecision::ScaleIn(capacity - desired);
        }
        ScalingDecision::Hold
    }
}

impl Scaler for TargetTracking {
    fn control_interval(&self) -> Nanos {
        PERIOD
    }

    fn start(&mut self, _view: &View, out: &mut Vec<Action>) {
        out.push(Action::SetBatching { pool: Pool::Vm(self.vm_type), rule: self.rule });
        if self.initial > 0 {
            out.push(Action::Provision { vm_type: self.vm_type, market: self.market, count: self.initial });
        }
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        let pool = view.pool(self.vm_type);
        let in_service = pool.ready.get(self.market);
        let capacity = pool.provisioning.get(self.market) + in_service;
        // Invocations since the previous tick, one control interval (a minute) ago.
        let (vm_type, market) = (self.vm_type, self.market);
        match self.evaluate(view.now, view.recent.arrivals, in_service, capacity) {
            ScalingDecision::Hold => {}
            ScalingDecision::ScaleOut(count) => out.push(Action::Provision { vm_type, market, count }),
            ScalingDecision::ScaleIn(count) => out.push(Action::ReleaseVms { vm_type, market, count }),
        }
    }
}

impl Router for TargetTracking {
    fn route(&mut self, _request: &RequestInfo, view: &View) -> Route {
        least_backlog_pool(view, &[self.vm_type]).map_or(Route::Reject(RejectReason::NoVmCapacity), Route::Vm)
    }
}

impl Policy for TargetTracking {
    fn name(&self) -> &str {
        "target-tracking"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    /// A policy with target 300 per instance per minute, min 1, max 10, 300 s cooldowns, and `out`/`in_`
    /// datapoints for the alarms.
    fn policy(out: u32, in_: u32) -> TargetTracking {
        TargetTracking {
            vm_type: VmTypeId(0),
            market: Market::OnDemand,
            rule: BatchRule::NONE,
            min: 1,
            max: 10,
            initial: 1,
            target: 300.0,
            scale_out_cooldown: Nanos::from_secs(300),
            scale_in_cooldown: Nanos::from_secs(300),
            scale_out_datapoints: out,
            scale_in_datapoints: in_,
            scale_in_threshold: 0.9,
            disable_scale_in: false,
            high: 0,
            low: 0,
            last_scale_out: None,
            last_activity: None,
        }
    }

    fn at(minutes: u64) -> Nanos {
        Nanos::from_secs(minutes * MIN)
    }

    #[test]
    fn desired_capacity_brings_the_metric_to_the_target() {
        // 2 instances at 450 per instance: 900 per minute needs 3 at 300.
        assert_eq!(desired_capacity(2, 450.0, 300.0), 3);
        assert_eq!(desired_capacity(2, 451.0, 300.0), 4);
        assert_eq!(desired_capacity(4, 60.0, 300.0), 1);
        assert_eq!(desired_capacity(3, 0.0, 300.0), 0);
    }

    #[test]
    fn scale_out_waits_for_three_high_datapoints_then_its_cooldown() {
        let mut p = policy(3, 15);
        // 900 per minute on one instance: 900 > 300, desired 3.
        assert_eq!(p.evaluate(at(1), 900, 1, 1), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(2), 900, 1, 1), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(3), 900, 1, 1), ScalingDecision::ScaleOut(2));
        // Still one in service (two launching), load up to 1500: desired 5 > 3, but the cooldown holds.
        assert_eq!(p.evaluate(at(4), 1500, 1, 3), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(7), 1500, 3, 3), ScalingDecision::Hold);
        // Five minutes after the scale-out: 1500 / 3 = 500 > 300, desired 5.
        assert_eq!(p.evaluate(at(8), 1500, 3, 3), ScalingDecision::ScaleOut(2));
    }

    #[test]
    fn scale_in_needs_fifteen_low_datapoints_and_its_cooldown() {
        let mut p = policy(1, 15);
        assert_eq!(p.evaluate(at(0), 3000, 1, 1), ScalingDecision::ScaleOut(9));
        // 400 per minute on 10 instances: 40 < 270, desired 2; low for 15 datapoints, minutes 1..=15.
        for m in 1..15 {
            assert_eq!(p.evaluate(at(m), 400, 10, 10), ScalingDecision::Hold, "minute {m}");
        }
        assert_eq!(p.evaluate(at(15), 400, 10, 10), ScalingDecision::ScaleIn(8));
        // Load falls to 100: desired 1, still low, but the scale-in cooldown runs until minute 20.
        for m in 16..20 {
            assert_eq!(p.evaluate(at(m), 100, 2, 2), ScalingDecision::Hold, "minute {m}");
        }
        assert_eq!(p.evaluate(at(20), 100, 2, 2), ScalingDecision::ScaleIn(1));
        // Never below the minimum.
        assert_eq!(p.evaluate(at(30), 0, 1, 1), ScalingDecision::Hold);
    }

    #[test]
    fn a_datapoint_between_the_thresholds_resets_both_alarms() {
        let mut p = policy(2, 2);
        assert_eq!(p.evaluate(at(1), 900, 1, 1), ScalingDecision::Hold);
        // 280 is neither above 300 nor below 270.
        assert_eq!(p.evaluate(at(2), 280, 1, 1), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(3), 900, 1, 1), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(4), 900, 1, 1), ScalingDecision::ScaleOut(2));
    }

    #[test]
    fn no_instance_in_service_means_no_datapoint_and_lost_capacity_is_restored() {
        let mut p = policy(1, 1);
        assert_eq!(p.evaluate(at(1), 900, 0, 1), ScalingDecision::Hold);
        assert_eq!(p.evaluate(at(2), 900, 0, 0), ScalingDecision::ScaleOut(1));
    }
}
