//! `static`: a fixed fleet, as an operator who provisions for the peak would run it.
//!
//! Models: a constant number of instances per (type, market), requested at time zero and replaced when
//! lost (a spot interruption); each request goes to the pool whose queue would clear first.
//! Leaves out: any reaction to load. Requests a full fleet cannot queue are rejected.

use serde::Deserialize;

use crate::action::{Action, Pool, Route};
use crate::batching::BatchRule;
use crate::catalog::{Catalog, Market, VmTypeId};
use crate::error::PolicyError;
use crate::ledger::RejectReason;
use crate::policy::{Policy, Router, Scaler};
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// One line of a static fleet in a scenario file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetEntry {
    /// VM type name.
    pub vm_type: String,
    /// How many instances.
    pub count: u32,
    /// On-demand or spot.
    #[serde(default)]
    pub market: Market,
    /// Largest batch (default 1).
    #[serde(default = "one")]
    pub max_batch: u32,
    /// Longest wait of the oldest request for a batch, ms (default 0).
    #[serde(default)]
    pub max_wait_ms: f64,
}

fn one() -> u32 {
    1
}

/// Configuration of [`StaticFleet`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// The fleet.
    pub fleet: Vec<FleetEntry>,
}

/// A fixed fleet; see the module docs.
#[derive(Clone, Debug)]
pub struct StaticFleet {
    fleet: Vec<(VmTypeId, Market, u32, BatchRule)>,
    types: Vec<VmTypeId>,
}

impl StaticFleet {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &StaticConfig, catalog: &Catalog) -> Result<StaticFleet, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidConfig { policy: "static".into(), reason };
        if config.fleet.is_empty() {
            return Err(invalid("the fleet is empty; give at least one [[policies.static.fleet]] entry".into()));
        }
        let mut fleet = Vec::new();
        let mut types: Vec<VmTypeId> = Vec::new();
        for e in &config.fleet {
            let id = catalog.vm_id(&e.vm_type)?;
            if catalog.vm(id).price_per_h(e.market).is_none() {
                return Err(invalid(format!("{} is not sold on the {} market", e.vm_type, e.market.name())));
            }
            if !(e.max_wait_ms.is_finite() && e.max_wait_ms >= 0.0) {
                return Err(invalid(format!("max_wait_ms of {} must be a non-negative number", e.vm_type)));
            }
            let rule = BatchRule::new(e.max_batch, Nanos::from_millis_f64(e.max_wait_ms));
            if let Some(prev) = fleet.iter().find(|(t, _, _, _): &&(VmTypeId, Market, u32, BatchRule)| *t == id)
                && prev.3 != rule
            {
                return Err(invalid(format!("{} is listed twice with different batching", e.vm_type)));
            }
            // Entries of the same (type, market) add up.
            match fleet.iter_mut().find(|f| f.0 == id && f.1 == e.market) {
                Some(f) => f.2 += e.count,
                None => fleet.push((id, e.market, e.count, rule)),
            }
            if !types.contains(&id) {
                types.push(id);
            }
        }
        Ok(StaticFleet { fleet, types })
    }
}

impl Scaler for StaticFleet {
    fn control_interval(&self) -> Nanos {
        Nanos::from_secs(10)
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        for &(vm_type, _, _, rule) in &self.fleet {
            out.push(Action::SetBatching { pool: Pool::Vm(vm_type), rule });
        }
        self.tick(view, out);
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        // Keep each (type, market) at its count: replaces instances lost to spot interruptions.
        for &(vm_type, market, want, _) in &self.fleet {
            let pool = view.pool(vm_type);
            let have = pool.provisioning.get(market) + pool.ready.get(market);
            if have < want {
                out.push(Action::Provision { vm_type, market, count: want - have });
            }
        }
    }
}

impl Router for StaticFleet {
    fn route(&mut self, _request: &RequestInfo, view: &View) -> Route {
        least_backlog_pool(view, &self.types).map_or(Route::Reject(RejectReason::NoVmCapacity), Route::Vm)
    }
}

/// Among `types`, the pool with instances accepting requests whose backlog clears soonest, estimated as
/// (queued + in service) / (instances x throughput at the pool's batch size). Ties go to the earlier type.
pub fn least_backlog_pool(view: &View, types: &[VmTypeId]) -> Option<VmTypeId> {
    let mut best: Option<(f64, VmTypeId)> = None;
    for &t in types {
        let pool = view.pool(t);
        let n = pool.accepting();
        if n == 0 {
            continue;
        }
        let rate = n as f64 * view.catalog.vm(t).service.throughput_per_s(pool.batching.max_batch);
        let backlog = (pool.queued + pool.in_service) as f64 / rate;
        if best.is_none_or(|(b, _)| backlog < b) {
            best = Some((backlog, t));
        }
    }
    best.map(|(_, t)| t)
}

impl Policy for StaticFleet {
    fn name(&self) -> &str {
        "static"
    }
}
