//! How cost accrues, shared by the simulator and the live backend.
//!
//! - VMs: per-second billing with a 60-second minimum (EC2 Linux), from the provision request until the
//!   instance is gone. AWS starts the meter when the instance enters `running`, a few seconds after the
//!   request; hyscale bills from the request, a small overestimate it states rather than hides.
//! - Functions: execution time of each busy period of an instance, rounded up to the platform's granularity,
//!   times its memory in GB (1 GB = 1024 MB); plus a fee per invocation (one batch is one invocation); plus,
//!   when the platform bills initialisation, the cold start as execution time; plus configured pre-warmed
//!   capacity per GB-second.

use serde::Serialize;

use crate::catalog::FunctionPlatform;
use crate::time::Nanos;

/// EC2's minimum billed duration.
pub const VM_MIN_BILLED: Nanos = Nanos::from_secs(60);
/// EC2's billing granularity.
pub const VM_GRANULARITY: Nanos = Nanos::from_secs(1);

/// Dollars for a VM that ran for `ran` at `price_per_h`.
pub fn vm_charge(price_per_h: f64, ran: Nanos) -> f64 {
    let billed = ran.max(VM_MIN_BILLED).round_up_to(VM_GRANULARITY);
    price_per_h * billed.as_secs_f64() / 3600.0
}

/// Dollars of function execution for `ran` at `memory_mb`.
pub fn function_compute_charge(platform: &FunctionPlatform, memory_mb: u32, ran: Nanos) -> f64 {
    let billed = ran.round_up_to(platform.billing_granularity);
    platform.price_per_gb_s * gb(memory_mb) * billed.as_secs_f64()
}

/// Dollars for keeping `memory_mb` of pre-warmed capacity for `held`.
pub fn function_provisioned_charge(platform: &FunctionPlatform, memory_mb: u32, held: Nanos) -> f64 {
    platform.provisioned_price_per_gb_s * gb(memory_mb) * held.as_secs_f64()
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
}

impl CostBreakdown {
    /// The sum of all kinds.
    pub fn total(&self) -> f64 {
        self.vm_on_demand + self.vm_spot + self.function_compute + self.function_requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_billing_has_a_minute_minimum_and_second_steps() {
        let p = 3.6; // one dollar per 1000 s
        assert!((vm_charge(p, Nanos::from_secs(10)) - 0.06).abs() < 1e-12);
        assert!((vm_charge(p, Nanos::from_millis(100_500)) - 0.101).abs() < 1e-12);
    }
}
