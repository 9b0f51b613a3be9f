//! How cost accrues, shared by the simulator and the live backend.
//!
//! - VMs ([`vm_billed`]): per-second billing with a 60-second minimum (EC2 Linux), from the provision request
//!   until the instance is gone. AWS starts the meter when the instance enters `running`, a few seconds after
//!   the request; hyscale bills from the request, a small overestimate it states rather than hides. A Linux
//!   spot instance **interrupted by EC2** is free when the interruption comes within its first hour and billed
//!   the seconds it ran (no minimum) after that; one the user stops or terminates is billed like on-demand:
//!   the seconds used, 60 s minimum, in its first hour or not. Source: Amazon EC2 User Guide, "Billing for
//!   interrupted Spot Instances" (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/billing-for-interrupted-spot-instances.html>).
//!   The end of a run counts as the user terminating what is still running.
//! - Functions: execution time of each busy period of an instance, rounded up to the platform's granularity,
//!   times its memory in GB (1 GB = 1024 MB); plus a fee per invocation (one batch is one invocation); plus,
//!   when the platform bills initialisation, the cold start of an on-demand instance as execution time.
//! - Lambda provisioned concurrency ([`function_provisioned_charge`], [`function_compute_charge_on`]): the
//!   provisioned price per GB-s for as long as it is configured, each configured period rounded up to the
//!   platform's provisioned granularity (5 minutes on AWS); work done on a provisioned instance is billed at
//!   the lower provisioned duration price; a provisioned (pre-warmed) instance pays no initialisation. Source:
//!   AWS Lambda pricing, "Provisioned Concurrency" (<https://aws.amazon.com/lambda/pricing/>); the figures are
//!   in `data/aws_us_east_1.toml`.

use serde::Serialize;

use crate::catalog::{FunctionPlatform, Market};
use crate::time::Nanos;

/// EC2's minimum billed duration.
pub const VM_MIN_BILLED: Nanos = Nanos::from_secs(60);
/// EC2's billing granularity.
pub const VM_GRANULARITY: Nanos = Nanos::from_secs(1);

/// How function instances are billed.
#[derive(Clone, Debug, PartialEq)]
pub enum FunctionBilling {
    /// As AWS Lambda bills: GB-s of execution, a fee per invocation, the init of on-demand instances, and
    /// provisioned concurrency.
    Lambda,
    /// As pods on VMs (Knative on a Kubernetes cluster): every instance, from its start to its end, busy or
    /// idle, at its memory's share of a node's on-demand price; no per-request fee, no init charge. The cluster
    /// is assumed to be sized to its pods (no idle node capacity billed).
    Pods {
        /// The node type whose price sets the rate.
        node: String,
        /// Dollars per GB-second of pod memory: the node's hourly price / its memory in GiB / 3600.
        price_per_gb_s: f64,
    },
}

/// Dollars for a pod of `memory_mb` that lived `lived` at `price_per_gb_s` (see [`FunctionBilling::Pods`]).
pub fn pod_charge(price_per_gb_s: f64, memory_mb: u32, lived: Nanos) -> f64 {
    price_per_gb_s * gb(memory_mb) * lived.as_secs_f64()
}

/// A spot instance interrupted by EC2 before it has run this long is not charged (EC2 User Guide, "Billing for
/// interrupted Spot Instances").
pub const SPOT_FREE_INTERRUPTION_WINDOW: Nanos = Nanos::from_secs(3600);

/// Who ended a VM's life; it decides how a spot instance is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEnd {
    /// The user (the policy, or the end of the run) released it.
    Released,
    /// The provider took it back (a spot interruption).
    Interrupted,
}

/// The duration billed for a VM of `market` that ran for `ran` and ended by `end` (see the module docs).
pub fn vm_billed(market: Market, ran: Nanos, end: VmEnd) -> Nanos {
    match (market, end) {
        (Market::Spot, VmEnd::Interrupted) if ran < SPOT_FREE_INTERRUPTION_WINDOW => Nanos::ZERO,
        (Market::Spot, VmEnd::Interrupted) => ran.round_up_to(VM_GRANULARITY),
        _ => ran.max(VM_MIN_BILLED).round_up_to(VM_GRANULARITY),
    }
}

/// Dollars for a VM that ran for `ran` at `price_per_h` in `market` and ended by `end`.
pub fn vm_charge(price_per_h: f64, market: Market, ran: Nanos, end: VmEnd) -> f64 {
    price_per_h * vm_billed(market, ran, end).as_secs_f64() / 3600.0
}

/// Dollars of on-demand function execution for `ran` at `memory_mb`.
pub fn function_compute_charge(platform: &FunctionPlatform, memory_mb: u32, ran: Nanos) -> f64 {
    function_compute_charge_on(platform, memory_mb, ran, false)
}

/// Dollars of function execution for `ran` at `memory_mb`, on a provisioned instance (the provisioned
/// duration price) or an on-demand one.
pub fn function_compute_charge_on(platform: &FunctionPlatform, memory_mb: u32, ran: Nanos, provisioned: bool) -> f64 {
    // Lambda's 1 ms: a division by a constant, which compiles to a multiply (a division by the catalog's
    // value, on every busy period of the function workload, showed in its profile).
    const MS: Nanos = Nanos::from_millis(1);
    let unit = platform.billing_granularity;
    let billed = if unit == MS { ran.round_up_to(MS) } else { ran.round_up_to(unit) };
    let price = if provisioned { platform.provisioned_duration_price_per_gb_s } else { platform.price_per_gb_s };
    price * gb(memory_mb) * billed.as_secs_f64()
}

/// Dollars for keeping one provisioned instance of `memory_mb` configured for `held`.
pub fn function_provisioned_charge(platform: &FunctionPlatform, memory_mb: u32, held: Nanos) -> f64 {
    platform.provisioned_price_per_gb_s * gb(memory_mb) * held.as_secs_f64()
}

/// The time added to a period of `enabled` during which provisioned concurrency was on (enabled until it was
/// disabled, whatever amounts it took meanwhile): AWS rounds that period up to the provisioned granularity.
/// The extra is billed at the amount in force when it was disabled.
pub fn provisioned_rounding(platform: &FunctionPlatform, enabled: Nanos) -> Nanos {
    enabled.round_up_to(platform.provisioned_granularity) - enabled
}

/// The meter of pre-warmed (provisioned) capacity, written once for both halves: the configured amount is
/// billed for the time it was held each time it changes (at the amount and memory in force until then);
/// when it goes to 0, or the run ends, the whole period it was enabled is rounded up to the platform's
/// provisioned granularity and the extra billed at the amount in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProvisionedMeter {
    /// The last settlement.
    since: Nanos,
    /// When provisioned capacity was last enabled, while it is.
    enabled_since: Option<Nanos>,
}

impl ProvisionedMeter {
    /// Settles at `now` the `prewarm` instances of `memory_mb` held since the last settlement and returns
    /// their charge; `disabling` when the amount goes to 0 (or the run ends).
    pub fn settle(
        &mut self,
        platform: &FunctionPlatform,
        prewarm: u32,
        memory_mb: u32,
        now: Nanos,
        disabling: bool,
    ) -> f64 {
        let mut charge = 0.0;
        if prewarm > 0 {
            let mut held = now.saturating_sub(self.since);
            if disabling && let Some(since) = self.enabled_since {
                held += provisioned_rounding(platform, now.saturating_sub(since));
            }
            charge = prewarm as f64 * function_provisioned_charge(platform, memory_mb, held);
        }
        if disabling {
            self.enabled_since = None;
        } else if self.enabled_since.is_none() {
            self.enabled_since = Some(now);
        }
        self.since = now;
        charge
    }

    /// The charge of `prewarm` instances held since the last settlement, without the rounding (a running
    /// total, as the timeline shows it).
    pub fn held(&self, platform: &FunctionPlatform, prewarm: u32, memory_mb: u32, now: Nanos) -> f64 {
        prewarm as f64 * function_provisioned_charge(platform, memory_mb, now.saturating_sub(self.since))
    }
}

fn gb(memory_mb: u32) -> f64 {
    memory_mb as f64 / 1024.0
}

/// Cost split by kind, in dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CostBreakdown {
    /// On-demand VMs.
    pub vm_on_demand: f64,
    /// Spot VMs.
    pub vm_spot: f64,
    /// Function execution, initialisation and pre-warmed capacity.
    pub function_compute: f64,
    /// Function per-invocation fees.
    pub function_requests: f64,
    /// Function instances billed as pods on VMs.
    pub pods: f64,
}

impl CostBreakdown {
    /// Adds a VM's `charge` to its market's share.
    pub fn add_vm(&mut self, market: Market, charge: f64) {
        match market {
            Market::OnDemand => self.vm_on_demand += charge,
            Market::Spot => self.vm_spot += charge,
        }
    }

    /// The sum of all kinds.
    pub fn total(&self) -> f64 {
        self.vm_on_demand + self.vm_spot + self.function_compute + self.function_requests + self.pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn vm_billing_has_a_minute_minimum_and_second_steps() {
        let p = 3.6; // one dollar per 1000 s
        assert!(close(vm_charge(p, Market::OnDemand, Nanos::from_secs(10), VmEnd::Released), 0.06));
        assert!(close(vm_charge(p, Market::OnDemand, Nanos::from_millis(100_500), VmEnd::Released), 0.101));
    }

    #[test]
    fn spot_interrupted_in_its_first_hour_is_free_and_after_it_pays_the_seconds_used() {
        let p = 3.6;
        // Interrupted by EC2 after 59 min 59 s: no charge.
        assert_eq!(vm_charge(p, Market::Spot, Nanos::from_secs(3599), VmEnd::Interrupted), 0.0);
        assert_eq!(vm_charge(p, Market::Spot, Nanos::from_secs(10), VmEnd::Interrupted), 0.0);
        // After 1 h 0 min 0.5 s: 3,601 s at $0.001/s.
        assert!(close(vm_charge(p, Market::Spot, Nanos::from_millis(3_600_500), VmEnd::Interrupted), 3.601));
        // Released by the user: the seconds used, 60 s minimum, first hour or not.
        assert!(close(vm_charge(p, Market::Spot, Nanos::from_secs(10), VmEnd::Released), 0.06));
        assert!(close(vm_charge(p, Market::Spot, Nanos::from_secs(1800), VmEnd::Released), 1.8));
        // On-demand is never free.
        assert!(close(vm_charge(p, Market::OnDemand, Nanos::from_secs(10), VmEnd::Interrupted), 0.06));
    }

    fn lambda() -> FunctionPlatform {
        FunctionPlatform {
            price_per_gb_s: 0.0000166667,
            price_per_request: 0.0000002,
            provisioned_price_per_gb_s: 0.0000041667,
            provisioned_duration_price_per_gb_s: 0.0000097222,
            provisioned_granularity: Nanos::from_secs(300),
            billing_granularity: Nanos::from_millis(1),
            bill_init: true,
            memory_min_mb: 128,
            memory_max_mb: 10240,
            mb_per_vcpu: 1769.0,
            regional_concurrency: 1000,
            function_scale_step: 1000,
            function_scale_interval: Nanos::from_secs(10),
            default_keep_alive: Nanos::from_secs(600),
            default_memory_mb: 1024,
            cold_start_mean: Nanos::from_millis(500),
            service: crate::LatencyTable::from_millis("function", vec![1], &[10.0]).unwrap(),
            model_size_mb: 100.0,
            per_request_mb: 0.0,
            max_vcpus_per_request: 1.0,
        }
    }

    #[test]
    fn pods_pay_their_memory_share_of_a_node_for_their_whole_life() {
        // A c5.2xlarge ($0.34/h, 16 GiB): $0.34 / 16 / 3600 per GB-s; a 2 GB pod for 30 minutes: $0.02125.
        let rate = 0.34 / 16.0 / 3600.0;
        assert!(close(pod_charge(rate, 2048, Nanos::from_secs(1800)), 0.02125));
    }

    #[test]
    fn provisioned_concurrency_bills_its_time_in_five_minute_steps_and_work_at_the_lower_price() {
        let f = lambda();
        // 2 GB provisioned for 61 s: $0.0000041667 x 2 x 61; enabled for 61 s, rounded up to 300 s, so 239 s
        // more at the amount in force when disabled.
        assert!(close(function_provisioned_charge(&f, 2048, Nanos::from_secs(61)), 0.0000041667 * 2.0 * 61.0));
        assert_eq!(provisioned_rounding(&f, Nanos::from_secs(61)), Nanos::from_secs(239));
        // Exactly 600 s needs no rounding; nothing enabled, nothing added.
        assert_eq!(provisioned_rounding(&f, Nanos::from_secs(600)), Nanos::ZERO);
        assert_eq!(provisioned_rounding(&f, Nanos::ZERO), Nanos::ZERO);
        // 100.4 ms of work at 1 GB: 101 ms; on demand $0.0000016833367, provisioned $0.0000009819422.
        let ran = Nanos::from_micros(100_400);
        assert!(close(function_compute_charge_on(&f, 1024, ran, false), 0.101 * 0.0000166667));
        assert!(close(function_compute_charge_on(&f, 1024, ran, true), 0.101 * 0.0000097222));
        assert!(close(function_compute_charge(&f, 1024, ran), 0.101 * 0.0000166667));
    }
}
