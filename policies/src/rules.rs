//! Rules of the cluster that the simulator and the live backend must follow alike, written once: why an
//! action is refused (and the key reports count it under), which VM of a pool takes a request, what
//! releasing a VM does in each state, which VMs a `ReleaseVms` takes, and the SLO configuration both read.

use std::fmt;

use serde::Deserialize;

use crate::ledger::{RejectReason, Slo};
use crate::time::Nanos;
use crate::view::{InstanceId, VmState};

/// Why an action was refused. Both halves refuse for these reasons under these keys, so the reports'
/// `actions.refused` (and the live `/metrics` label, a closed set) match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// No VM type with that id in the catalog.
    UnknownVmType,
    /// The VM type is not sold on that market.
    NotSoldOnMarket,
    /// No live instance with that id.
    NoSuchInstance,
    /// The instance is already draining.
    AlreadyDraining,
    /// Fewer live instances of the type and market than the action asked to release; those there were are
    /// released.
    FewerInstancesThanAsked,
    /// A function memory size or concurrency the platform does not sell.
    InvalidFunctionSettings,
    /// More pre-warmed instances than the account's concurrency limit allows.
    PrewarmOverLimit,
    /// The cloud provider's API failed (live, real-cloud adapters only).
    ProviderFailed,
    /// The live half cannot carry this out (ARCHITECTURE.md, "Where live and sim differ").
    NotSupportedLive,
}

impl Refusal {
    /// The key reports and metrics use.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::UnknownVmType => "unknown_vm_type",
            Refusal::NotSoldOnMarket => "not_sold_on_market",
            Refusal::NoSuchInstance => "no_such_instance",
            Refusal::AlreadyDraining => "already_draining",
            Refusal::FewerInstancesThanAsked => "fewer_instances_than_asked",
            Refusal::InvalidFunctionSettings => "invalid_function_settings",
            Refusal::PrewarmOverLimit => "prewarm_over_limit",
            Refusal::ProviderFailed => "provider_failed",
            Refusal::NotSupportedLive => "not_supported_live",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A VM of the pool a request is routed to, as the dispatch rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchCandidate<K> {
    /// Whatever identifies it to the caller (ties go to the smallest).
    pub key: K,
    /// Its state (draining ones never take a request).
    pub state: VmState,
    /// Requests it holds: queued and in service.
    pub outstanding: usize,
    /// Whether it has a spot interruption notice (then it takes no new requests).
    pub noticed: bool,
}

impl<K> DispatchCandidate<K> {
    /// Whether the rule takes this candidate before any other of a larger key: ready, not under a notice,
    /// holding nothing, with room (`queue_limit > 0`). [`dispatch_to_in_key_order`] stops its scan at the first;
    /// an engine that keeps these in a set may take the smallest key there without a scan.
    pub fn wins_outright(&self, queue_limit: usize) -> bool {
        self.state == VmState::Ready && !self.noticed && self.outstanding == 0 && queue_limit > 0
    }
}

/// Which VM of a pool takes a request, as a load balancer would: the ready one with the fewest outstanding
/// requests below `queue_limit`; when every ready one is full (or none is ready), a provisioning one with
/// room, where the request waits for it to be ready. Refused `QueueFull` when the pool has VMs but none has
/// room, `NoVmCapacity` when it has none that could take a request.
pub fn dispatch_to<K: Ord + Copy>(
    candidates: impl IntoIterator<Item = DispatchCandidate<K>>,
    queue_limit: usize,
) -> Result<K, RejectReason> {
    dispatch(candidates, queue_limit, false)
}

/// [`dispatch_to`] for candidates in ascending key order (as a pool lists its VMs, by launch): the same
/// choice, found sooner — the first ready VM holding nothing (with room) is the best there can be, so the
/// scan stops there.
pub fn dispatch_to_in_key_order<K: Ord + Copy>(
    candidates: impl IntoIterator<Item = DispatchCandidate<K>>,
    queue_limit: usize,
) -> Result<K, RejectReason> {
    dispatch(candidates, queue_limit, true)
}

fn dispatch<K: Ord + Copy>(
    candidates: impl IntoIterator<Item = DispatchCandidate<K>>,
    queue_limit: usize,
    key_order: bool,
) -> Result<K, RejectReason> {
    let mut any = false;
    let mut best: Option<(u8, usize, K)> = None;
    let mut previous: Option<K> = None;
    for c in candidates {
        debug_assert!(!key_order || previous.is_none_or(|p| p < c.key), "candidates out of key order");
        previous = Some(c.key);
        let rank = match c.state {
            _ if c.noticed => continue,
            VmState::Ready => 0,
            VmState::Provisioning => 1,
            VmState::Draining => continue,
        };
        any = true;
        if c.outstanding < queue_limit && best.is_none_or(|b| (rank, c.outstanding, c.key) < b) {
            best = Some((rank, c.outstanding, c.key));
            if key_order && c.wins_outright(queue_limit) {
                // (0, 0, the smallest key left): nothing later can beat it.
                break;
            }
        }
    }
    match best {
        Some((_, _, key)) => Ok(key),
        None if any => Err(RejectReason::QueueFull),
        None => Err(RejectReason::NoVmCapacity),
    }
}

/// What releasing one VM does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Still provisioning: it is gone at once (its queued requests are routed again).
    GoneNow,
    /// Ready: it takes no new requests, finishes its queue, then is gone.
    Drain,
}

/// The release rule for a VM in `state` (`None`: no such live instance).
pub fn release_step(state: Option<VmState>) -> Result<ReleaseStep, Refusal> {
    match state {
        None => Err(Refusal::NoSuchInstance),
        Some(VmState::Provisioning) => Ok(ReleaseStep::GoneNow),
        Some(VmState::Ready) => Ok(ReleaseStep::Drain),
        Some(VmState::Draining) => Err(Refusal::AlreadyDraining),
    }
}

/// Which `count` instances a `ReleaseVms` takes: provisioning ones first (newest first), then ready ones with
/// the least outstanding work (newest first on ties); draining ones are never taken. `instances` are the
/// type's and market's live instances in id order, with their state and outstanding requests. When fewer
/// than `count` are returned, the action releases them and is refused with
/// [`Refusal::FewerInstancesThanAsked`].
pub fn release_order(instances: impl Iterator<Item = (InstanceId, VmState, u32)>, count: u32) -> Vec<InstanceId> {
    let mut provisioning = Vec::new();
    let mut ready = Vec::new();
    for (id, state, outstanding) in instances {
        match state {
            VmState::Provisioning => provisioning.push(id),
            VmState::Ready => ready.push((outstanding, std::cmp::Reverse(id))),
            VmState::Draining => {}
        }
    }
    provisioning.reverse();
    ready.sort();
    provisioning.into_iter().chain(ready.into_iter().map(|(_, r)| r.0)).take(count as usize).collect()
}

/// The SLO as configuration files write it (a scenario's `[slo]`, a live cluster's `[cluster.slo]`):
/// MArk's 200 ms for 98% of requests unless set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Response-time threshold, ms.
    pub rt_max_ms: f64,
    /// Fraction of requests that must meet it, within 0..=1.
    pub sl_min: f64,
}

impl Default for SloConfig {
    fn default() -> SloConfig {
        SloConfig { rt_max_ms: 200.0, sl_min: 0.98 }
    }
}

impl SloConfig {
    /// The checked SLO; the error names the field.
    pub fn slo(&self) -> Result<Slo, String> {
        if !(self.rt_max_ms.is_finite() && self.rt_max_ms > 0.0) {
            return Err(format!("slo.rt_max_ms must be positive, got {}", self.rt_max_ms));
        }
        if !(0.0..=1.0).contains(&self.sl_min) {
            return Err(format!("slo.sl_min must be within 0..=1 (a fraction, not a percentage), got {}", self.sl_min));
        }
        Ok(Slo { rt_max: Nanos::from_millis_f64(self.rt_max_ms), sl_min: self.sl_min })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_prefers_ready_with_room_then_provisioning_and_skips_noticed_and_draining() {
        let c = |key: u32, state, outstanding, noticed| DispatchCandidate { key, state, outstanding, noticed };
        let (r, p, d) = (VmState::Ready, VmState::Provisioning, VmState::Draining);
        // The least-loaded ready one, ties to the smallest key.
        assert_eq!(dispatch_to([c(1, r, 3, false), c(2, r, 1, false), c(3, r, 1, false)], 4), Ok(2));
        // Ready ones full: a provisioning one with room, not `QueueFull`.
        assert_eq!(dispatch_to([c(1, r, 4, false), c(2, p, 0, false)], 4), Ok(2));
        // A provisioning one, even when empty, only after every ready one with room.
        assert_eq!(dispatch_to([c(1, r, 3, false), c(2, p, 0, false)], 4), Ok(1));
        // Under a notice or draining: never.
        assert_eq!(dispatch_to([c(1, r, 0, true), c(2, d, 0, false), c(3, r, 2, false)], 4), Ok(3));
        assert_eq!(dispatch_to([c(1, r, 4, false), c(2, p, 4, false)], 4), Err(RejectReason::QueueFull));
        assert_eq!(dispatch_to([c(1, d, 0, false), c(2, r, 0, true)], 4), Err(RejectReason::NoVmCapacity));
        assert_eq!(dispatch_to(Vec::<DispatchCandidate<u32>>::new(), 4), Err(RejectReason::NoVmCapacity));
    }

    #[test]
    fn in_key_order_the_scan_stops_at_the_first_idle_ready_vm_and_chooses_as_the_full_scan() {
        let c = |key: u32, state, outstanding, noticed| DispatchCandidate { key, state, outstanding, noticed };
        let (r, p, d) = (VmState::Ready, VmState::Provisioning, VmState::Draining);
        // Every pool of up to 4 VMs of these kinds, in key order: both scans choose alike.
        let kinds = [(r, 0, false), (r, 1, false), (r, 4, false), (p, 0, false), (d, 0, false), (r, 0, true)];
        let mut longest = vec![Vec::new()];
        let mut pools = longest.clone();
        for _ in 0..4 {
            longest = longest
                .iter()
                .flat_map(|pool: &Vec<DispatchCandidate<u32>>| {
                    kinds.iter().map(move |&(state, outstanding, noticed)| {
                        let mut longer = pool.clone();
                        longer.push(c(pool.len() as u32 + 1, state, outstanding, noticed));
                        longer
                    })
                })
                .collect();
            pools.extend(longest.iter().cloned());
        }
        assert_eq!(pools.len(), 1 + 6 + 36 + 216 + 1296);
        for pool in &pools {
            let chosen = dispatch_to(pool.iter().copied(), 4);
            assert_eq!(dispatch_to_in_key_order(pool.iter().copied(), 4), chosen, "{pool:?}");
            // The smallest key that wins outright, where there is one, is the choice.
            if let Some(first) = pool.iter().find(|c| c.wins_outright(4)) {
                assert_eq!(chosen, Ok(first.key), "{pool:?}");
            }
            assert!(pool.iter().all(|c| !c.wins_outright(0)));
        }
        // It stops at the idle ready VM: what follows is never looked at.
        let mut looked = 0;
        let pool = [c(1, r, 2, false), c(2, r, 0, false), c(3, r, 0, false), c(4, p, 0, false)];
        let key = dispatch_to_in_key_order(pool.iter().inspect(|_| looked += 1).copied(), 4);
        assert_eq!((key, looked), (Ok(2), 2));
    }

    #[test]
    fn release_takes_provisioning_newest_first_then_the_least_loaded_ready() {
        let i = InstanceId;
        let live = [
            (i(1), VmState::Ready, 3),
            (i(2), VmState::Provisioning, 0),
            (i(3), VmState::Ready, 0),
            (i(4), VmState::Draining, 0),
            (i(5), VmState::Provisioning, 0),
            (i(6), VmState::Ready, 0),
        ];
        assert_eq!(release_order(live.into_iter(), 4), [i(5), i(2), i(6), i(3)]);
        assert_eq!(release_order(live.into_iter(), 9), [i(5), i(2), i(6), i(3), i(1)]);
    }

    #[test]
    fn releasing_follows_the_state() {
        assert_eq!(release_step(None), Err(Refusal::NoSuchInstance));
        assert_eq!(release_step(Some(VmState::Provisioning)), Ok(ReleaseStep::GoneNow));
        assert_eq!(release_step(Some(VmState::Ready)), Ok(ReleaseStep::Drain));
        assert_eq!(release_step(Some(VmState::Draining)), Err(Refusal::AlreadyDraining));
        assert_eq!(Refusal::FewerInstancesThanAsked.key(), "fewer_instances_than_asked");
    }

    #[test]
    fn slo_config_is_checked() {
        assert_eq!(SloConfig::default().slo().unwrap().rt_max, Nanos::from_millis(200));
        assert!(SloConfig { sl_min: 98.0, ..SloConfig::default() }.slo().unwrap_err().contains("slo.sl_min"));
        assert!(SloConfig { rt_max_ms: -1.0, ..SloConfig::default() }.slo().unwrap_err().contains("slo.rt_max_ms"));
    }
}
