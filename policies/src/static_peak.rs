//! `static-peak`: a fixed fleet sized for a given peak rate, as an operator who provisions for the peak
//! would size it.
//!
//! Models: the classic over-provisioning baseline that the autoscaling papers compare against (MArk,
//! ATC'19, sizes its "static" comparison this way). One VM type serves everything. Its capacity per instance
//! at the SLO is read from the model's latency profile: the largest batch whose worst case, the batch
//! timeout plus the batch's service time, fits within the SLO's `rt_max`
//! ([`LatencyTable::largest_batch_within`]), and the requests per second an instance sustains at that batch
//! size. The fleet is `ceil(peak_rate_per_s / capacity_per_instance)` instances, requested at time zero and
//! replaced when lost (spot interruptions); each request goes to the instance with the least work.
//!
//! Leaves out: any reaction to load, any headroom for queueing at high utilisation (an instance at exactly
//! its capacity has an unbounded queue; give a higher peak to leave room), and functions. The fleet is sized
//! when the policy starts, because the SLO is part of the view, not of the configuration.

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::catalog::{Catalog, Market, VmTypeId};
use crate::error::PolicyError;
use crate::ledger::RejectReason;
use crate::policy::{Policy, Router, Scaler};
use crate::profile::LatencyTable;
use crate::static_fleet::least_backlog_pool;
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// Configuration of [`StaticPeak`], the `[policies.static-peak]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticPeakConfig {
    /// VM type name.
    pub vm_type: String,
    /// The peak arrival rate to provision for, requests per second.
    pub peak_rate_per_s: f64,
    /// On-demand (default) or spot.
    #[serde(default)]
    pub market: Market,
    /// Largest batch allowed; the batch actually used is the largest within the SLO up to this. Default:
    /// the profile's largest measured batch.
    pub max_batch: Option<u32>,
    /// Longest wait of the oldest request for a batch, ms (default 0: a batch starts with whatever is
    /// queued as soon as the instance is free).
    #[serde(default)]
    pub max_wait_ms: f64,
}

/// How a fleet is sized for a peak; see [`fleet_size`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FleetSize {
    /// Largest batch whose worst-case latency fits the SLO.
    pub batch: u32,
    /// Requests per second one instance sustains at that batch.
    pub capacity_per_s: f64,
    /// Instances: `ceil(peak / capacity_per_s)`.
    pub instances: u32,
}

/// Sizes a fleet for `peak_rate_per_s` on hardware with latency `table`, batches capped at `max_batch`
/// waiting at most `max_wait`, within a latency budget `rt_max`.
pub fn fleet_size(
    table: &LatencyTable,
    peak_rate_per_s: f64,
    rt_max: Nanos,
    max_wait: Nanos,
    max_batch: u32,
) -> FleetSize {
    let batch = table.largest_batch_within(rt_max, max_wait, max_batch);
    let capacity_per_s = table.throughput_per_s(batch);
    FleetSize { batch, capacity_per_s, instances: instances_needed(peak_rate_per_s / capacity_per_s) }
}

/// The number of instances a fractional need `x` takes: `ceil(x)`, except that a value within a relative
/// 1e-9 of an integer counts as that integer (so that `3.0000000000000004`, an artefact of float division,
/// asks for 3 instances, not 4). Negative and non-finite needs give 0; huge ones saturate.
pub fn instances_needed(x: f64) -> u32 {
    if !x.is_finite() || x <= 0.0 {
        return 0;
    }
    let r = x.round();
    let n = if (x - r).abs() <= 1e-9 * r.max(1.0) { r } else { x.ceil() };
    if n >= u32::MAX as f64 { u32::MAX } else { n as u32 }
}

/// A fixed fleet sized for a peak; see the module docs.
#[derive(Clone, Debug)]
pub struct StaticPeak {
    vm_type: VmTypeId,
    market: Market,
    peak_rate_per_s: f64,
    max_batch: u32,
    max_wait: Nanos,
    /// Set when the policy starts.
    size: Option<FleetSize>,
}

impl StaticPeak {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &StaticPeakConfig, catalog: &Catalog) -> Result<StaticPeak, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "static-peak".into(), reason };
        let vm_type = catalog.vm_id(&config.vm_type)?;
        let t = catalog.vm(vm_type);
        if t.price_per_h(config.market).is_none() {
            return Err(invalid(format!("{} is not sold on the {} market", t.name, config.market.name())));
        }
        if !(config.peak_rate_per_s.is_finite() && config.peak_rate_per_s > 0.0) {
            return Err(invalid(format!("peak_rate_per_s must be a positive number, got {}", config.peak_rate_per_s)));
        }
        if !(config.max_wait_ms.is_finite() && config.max_wait_ms >= 0.0) {
            return Err(invalid(format!("max_wait_ms must be a non-negative number, got {}", config.max_wait_ms)));
        }
        if config.max_batch == Some(0) {
            return Err(invalid("max_batch must be at least 1".into()));
        }
        Ok(StaticPeak {
            vm_type,
            market: config.market,
            peak_rate_per_s: config.peak_rate_per_s,
            max_batch: config.max_batch.unwrap_or_else(|| t.service.max_measured_batch()),
            max_wait: Nanos::from_millis_f64(config.max_wait_ms),
            size: None,
        })
    }

    /// The fleet's size, once the policy has started (it needs the SLO from the view).
    pub fn size(&self) -> Option<FleetSize> {
        self.size
    }
}

impl Scaler for StaticPeak {
    fn control_interval(&self) -> Nanos {
        Nanos::from_secs(10)
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        let table = &view.catalog.vm(self.vm_type).service;
        let size = fleet_size(table, self.peak_rate_per_s, view.slo.rt_max, self.max_wait, self.max_batch);
        self.size = Some(size);
        let rule = BatchRule::new(size.batch, self.max_wait);
        out.push(Action::SetBatching { pool: Pool::Vm(self.vm_type), rule });
        self.tick(view, out);
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        // Keep the fleet at its size: replaces instances lost to spot interruptions.
        let want = self.size.map_or(0, |s| s.instances);
        let pool = view.pool(self.vm_type);
        let have = pool.provisioning.get(self.market) + pool.ready.get(self.market);
        if have < want {
            out.push(Action::Provision { vm_type: self.vm_type, market: self.market, count: want - have });
        }
    }
}

impl Router for StaticPeak {
    fn route(&mut self, _request: &RequestInfo, view: &View) -> Route {
        least_backlog_pool(view, &[self.vm_type]).map_or(Route::Reject(RejectReason::NoVmCapacity), Route::Vm)
    }
}

impl Policy for StaticPeak {
    fn name(&self) -> &str {
        "static-peak"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(points: &[(u32, f64)]) -> LatencyTable {
        let (b, l): (Vec<u32>, Vec<f64>) = points.iter().copied().unzip();
        LatencyTable::from_millis("test", b, &l).unwrap()
    }

    #[test]
    fn instances_needed_rounds_up_but_forgives_float_noise() {
        assert_eq!(instances_needed(3.25), 4);
        assert_eq!(instances_needed(3.0), 3);
        assert_eq!(instances_needed(0.1 + 0.2 + 2.7), 3);
        assert_eq!(instances_needed(3.000001), 4);
        assert_eq!(instances_needed(0.0), 0);
        assert_eq!(instances_needed(-1.0), 0);
        assert_eq!(instances_needed(f64::NAN), 0);
        assert_eq!(instances_needed(1e20), u32::MAX);
    }

    #[test]
    fn sizes_a_fleet_from_the_capacity_at_the_slo() {
        // 100 ms at batch 1, 130 ms at batch 4 (10 ms per extra request).
        let t = table(&[(1, 100.0), (4, 130.0)]);
        let slo = Nanos::from_millis(200);
        // Batch 4 fits 200 ms: 4 / 0.13 s = 30.77 requests/s per instance; 100/s needs 3.25, so 4.
        let s = fleet_size(&t, 100.0, slo, Nanos::ZERO, 4);
        assert_eq!(s.batch, 4);
        assert!((s.capacity_per_s - 4.0 / 0.13).abs() < 1e-9);
        assert_eq!(s.instances, 4);
        // Without batching an instance serves 10/s: 100/s needs exactly 10.
        assert_eq!(fleet_size(&t, 100.0, slo, Nanos::ZERO, 1).instances, 10);
        // Waiting 80 ms for a batch leaves 120 ms of service: batch 3 (120 ms), 25/s per instance.
        let s = fleet_size(&t, 100.0, slo, Nanos::from_millis(80), 8);
        assert_eq!((s.batch, s.instances), (3, 4));
    }
}
