//! What a policy can ask for: actions on the fleet and a route for each request.

use crate::batching::BatchRule;
use crate::catalog::{Market, VmTypeId};
use crate::ledger::RejectReason;
use crate::time::Nanos;
use crate::view::InstanceId;

/// A pool whose batching can be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// A VM type's pool.
    Vm(VmTypeId),
    /// The function platform.
    Functions,
}

/// A change to the fleet. Actions are applied in the order returned; one that cannot be carried out is
/// skipped and counted, with its reason, in the report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Launch `count` instances of a type.
    Provision {
        /// The type.
        vm_type: VmTypeId,
        /// On-demand or spot.
        market: Market,
        /// How many.
        count: u32,
    },
    /// Release one instance: it drains its queue and is gone (a provisioning instance is gone at once
    /// and its queued requests are routed again).
    Release {
        /// The instance.
        instance: InstanceId,
    },
    /// Release `count` instances of a type and market, chosen by the executor: provisioning ones first
    /// (newest first), then ready ones with the least work (newest first on ties).
    ReleaseVms {
        /// The type.
        vm_type: VmTypeId,
        /// The market.
        market: Market,
        /// How many.
        count: u32,
    },
    /// Change function settings; `None` keeps the current value.
    ConfigureFunctions {
        /// Memory per instance, MB.
        memory_mb: Option<u32>,
        /// Requests per instance at once.
        concurrency: Option<u32>,
        /// Keep-alive of idle instances.
        keep_alive: Option<Nanos>,
        /// Instances kept warm.
        prewarm: Option<u32>,
    },
    /// Set a pool's batching.
    SetBatching {
        /// The pool.
        pool: Pool,
        /// The rule.
        rule: BatchRule,
    },
}

/// Where one request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the VM pool of this type; the executor picks the instance with the least work.
    Vm(VmTypeId),
    /// To the function platform.
    Functions,
    /// Refuse it.
    Reject(RejectReason),
}
