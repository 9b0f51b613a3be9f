//! The read-only snapshot of the cluster that a policy sees.
//!
//! The simulator and the live backend each keep a [`View`] current as their state changes and hand it
//! to the policy by shared reference: a policy can read everything here and change nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::batching::BatchRule;
use crate::catalog::{Catalog, Market, VmTypeId};
use crate::idmap::IdMap;
use crate::ledger::Slo;
use crate::time::{Nanos, TimeScale};

/// Identity of a VM instance, unique within a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub u64);

/// Lifecycle of a VM: provisioning → ready → draining → gone (gone instances leave the view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmState {
    /// Launching, booting and loading the model; requests may queue at it.
    Provisioning,
    /// Serving.
    Ready,
    /// Released: takes no new requests, finishes its queue, then is gone.
    Draining,
}

/// One live VM instance.
#[derive(Clone, Debug, PartialEq)]
pub struct VmInstanceView {
    /// Its id.
    pub id: InstanceId,
    /// Its type.
    pub vm_type: VmTypeId,
    /// How it was bought.
    pub market: Market,
    /// Its state.
    pub state: VmState,
    /// When it was requested.
    pub launched_at: Nanos,
    /// Requests waiting in its queue.
    pub queued: u32,
    /// Requests in the batch it is serving.
    pub in_service: u32,
    /// Deadline of a spot interruption notice, if it received one.
    pub interruption_at: Option<Nanos>,
    /// Model ids loaded on it (a VM hosts several, as SageMaker multi-model endpoints do; model memory
    /// counts against the instance's memory).
    pub models: Vec<u32>,
}

/// Counts split by market.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarketCounts {
    /// On-demand instances.
    pub on_demand: u32,
    /// Spot instances.
    pub spot: u32,
}

impl MarketCounts {
    /// Both markets together.
    pub fn total(&self) -> u32 {
        self.on_demand + self.spot
    }

    /// The count for `market`.
    pub fn get(&self, market: Market) -> u32 {
        match market {
            Market::OnDemand => self.on_demand,
            Market::Spot => self.spot,
        }
    }

    /// Mutable count for `market` (for the simulator and backend keeping the view current).
    pub fn get_mut(&mut self, market: Market) -> &mut u32 {
        match market {
            Market::OnDemand => &mut self.on_demand,
            Market::Spot => &mut self.spot,
        }
    }
}

/// One VM type's pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolView {
    /// The type.
    pub vm_type: VmTypeId,
    /// Instances provisioning.
    pub provisioning: MarketCounts,
    /// Instances ready.
    pub ready: MarketCounts,
    /// Instances draining.
    pub draining: MarketCounts,
    /// Requests queued at the pool's instances.
    pub queued: u64,
    /// Requests in service on the pool's instances.
    pub in_service: u64,
    /// The pool's batching.
    pub batching: BatchRule,
    /// Most requests one instance queues before refusing more.
    pub queue_limit: u32,
    /// Ready instances by the requests they hold (queued and in service): `ready_loads[k]` of them hold `k`.
    /// Kept by whoever fills the view through [`PoolView::add_ready_load`] / [`PoolView::remove_ready_load`], so
    /// a router finds the least-loaded ready instance's load without scanning the instances.
    pub ready_loads: Vec<u32>,
}

impl PoolView {
    /// A pool of `vm_type` with no instance, no batching and no queue limit.
    pub fn empty(vm_type: VmTypeId) -> PoolView {
        PoolView {
            vm_type,
            provisioning: MarketCounts::default(),
            ready: MarketCounts::default(),
            draining: MarketCounts::default(),
            queued: 0,
            in_service: 0,
            batching: BatchRule::NONE,
            queue_limit: u32::MAX,
            ready_loads: Vec::new(),
        }
    }

    /// Counts one more ready instance holding `load` requests.
    #[inline]
    pub fn add_ready_load(&mut self, load: u32) {
        let k = load as usize;
        if self.ready_loads.len() <= k {
            self.ready_loads.resize(k + 1, 0);
        }
        self.ready_loads[k] += 1;
    }

    /// Counts one ready instance holding `load` requests less (it changed load or state, or is gone).
    #[inline]
    pub fn remove_ready_load(&mut self, load: u32) {
        if let Some(c) = self.ready_loads.get_mut(load as usize) {
            *c = c.saturating_sub(1);
        }
        while self.ready_loads.last() == Some(&0) {
            self.ready_loads.pop();
        }
    }

    /// The fewest requests any ready instance holds (`None`: no instance is ready).
    pub fn least_ready_load(&self) -> Option<u32> {
        self.ready_loads.iter().position(|&c| c > 0).map(|k| k as u32)
    }

    /// Instances that take new requests (provisioning or ready).
    pub fn accepting(&self) -> u32 {
        self.provisioning.total() + self.ready.total()
    }
}

/// Settings of the function platform that a policy controls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FunctionSettings {
    /// Memory per instance, MB (CPU is proportional).
    pub memory_mb: u32,
    /// Requests one instance serves at once (1 = AWS Lambda).
    pub concurrency: u32,
    /// How long an idle instance stays warm.
    pub keep_alive: Nanos,
    /// Instances kept alive and warm whatever the load (pre-warmed / provisioned capacity).
    pub prewarm: u32,
    /// Batching inside an instance.
    pub batching: BatchRule,
}

/// The function platform's state.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionView {
    /// Current settings.
    pub settings: FunctionSettings,
    /// Instances starting cold.
    pub cold_starting: u32,
    /// Warm instances serving nothing.
    pub idle_warm: u32,
    /// Warm instances serving at least one request.
    pub busy: u32,
    /// Requests being served or waiting at function instances.
    pub in_flight: u64,
    /// Invocations throttled so far.
    pub throttled_total: u64,
    /// Cold starts so far.
    pub cold_starts_total: u64,
    /// The same, per function (model id): each function's instances serve only it. A function with no
    /// instance and nothing in flight is absent (the simulator updates it on every request: see [`IdMap`]).
    pub per_function: IdMap<FunctionCounts>,
}

/// One function's instances and requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionCounts {
    /// Instances alive (cold, idle or busy).
    pub instances: u32,
    /// Requests in service or waiting at its instances.
    pub in_flight: u32,
}

impl FunctionView {
    /// Records the whole platform as one function, `function` (a live cluster serves one model).
    pub fn as_one_function(&mut self, function: u32) {
        let counts = FunctionCounts {
            instances: self.instances(),
            in_flight: u32::try_from(self.in_flight).unwrap_or(u32::MAX),
        };
        self.per_function.clear();
        if counts != FunctionCounts::default() {
            self.per_function.insert(function, counts);
        }
    }

    /// Instances alive in any state.
    pub fn instances(&self) -> u32 {
        self.cold_starting + self.idle_warm + self.busy
    }
}

/// Arrival counts per fixed interval, most recent last.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrivalWindow {
    /// Length of one interval.
    pub interval: Nanos,
    /// Counts of completed intervals, oldest first, at most `capacity` of them.
    pub counts: VecDeque<u64>,
    /// How many completed intervals are kept.
    pub capacity: usize,
    /// Arrivals so far in the interval now running.
    pub current: u64,
}

impl ArrivalWindow {
    /// An empty window.
    pub fn new(interval: Nanos, capacity: usize) -> ArrivalWindow {
        ArrivalWindow { interval, counts: VecDeque::with_capacity(capacity), capacity: capacity.max(1), current: 0 }
    }

    /// Closes the running interval.
    pub fn roll(&mut self) {
        if self.counts.len() == self.capacity {
            self.counts.pop_front();
        }
        self.counts.push_back(self.current);
        self.current = 0;
    }

    /// Mean arrival rate per second over the last `n` completed intervals (0 when there are none).
    pub fn rate_per_s(&self, n: usize) -> f64 {
        let n = n.min(self.counts.len());
        if n == 0 || self.interval.0 == 0 {
            return 0.0;
        }
        let sum: u64 = self.counts.iter().rev().take(n).sum();
        sum as f64 / (n as f64 * self.interval.as_secs_f64())
    }

    /// Highest per-second rate among the last `n` completed intervals.
    pub fn peak_rate_per_s(&self, n: usize) -> f64 {
        let max = self.counts.iter().rev().take(n).copied().max().unwrap_or(0);
        if self.interval.0 == 0 { 0.0 } else { max as f64 / self.interval.as_secs_f64() }
    }
}

/// Outcomes since the policy's previous tick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentStats {
    /// Requests arrived.
    pub arrivals: u64,
    /// Requests completed.
    pub completed: u64,
    /// Completed within the SLO's `rt_max`.
    pub fulfilled: u64,
    /// Rejected or dropped.
    pub failed: u64,
    /// Longest latency among the completed, ms.
    pub latency_ms_max: f64,
}

/// A spot interruption notice: the instance will be taken at `deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpotNotice {
    /// The instance.
    pub instance: InstanceId,
    /// Its type.
    pub vm_type: VmTypeId,
    /// When it will be gone.
    pub deadline: Nanos,
}

/// A request to route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// When it arrived.
    pub arrival: Nanos,
    /// Model or function id from the trace (0 when the trace has one).
    pub model: u32,
    /// Routings before this one (re-routing after a preemption or release).
    pub attempt: u32,
}

/// The read-only snapshot handed to policies.
#[derive(Clone, Debug)]
pub struct View {
    /// The time now.
    pub now: Nanos,
    /// The SLO being served.
    pub slo: Slo,
    /// What can be bought.
    pub catalog: Arc<Catalog>,
    /// One pool per VM type, indexed by [`VmTypeId`].
    pub pools: Vec<PoolView>,
    /// Live VM instances (not gone), in an order that is deterministic but otherwise unspecified.
    pub vms: Vec<VmInstanceView>,
    /// The function platform.
    pub functions: FunctionView,
    /// Recent arrivals.
    pub arrivals: ArrivalWindow,
    /// Outcomes since the previous tick.
    pub recent: RecentStats,
    /// Interruption notices of spot instances still alive.
    pub notices: Vec<SpotNotice>,
}

impl View {
    /// Converts a view taken on the live wall clock to model time (see [`TimeScale`]): every time and
    /// duration in it, the arrival window's interval and the notices' deadlines. Request rates stay real, so
    /// the counts per interval are the counts a stream at the measured rate gives over the model interval
    /// (the wall count ÷ the scale): a rate read from the window is the real one, and a ratio of a model
    /// duration to the window's interval is the one the simulator sees.
    pub fn to_model_time(&mut self, scale: TimeScale) {
        if scale == TimeScale::REAL {
            return;
        }
        let count = |c: &mut u64| *c = (*c as f64 / scale.factor()).round() as u64;
        self.now = scale.to_model(self.now);
        for v in &mut self.vms {
            v.launched_at = scale.to_model(v.launched_at);
            v.interruption_at = v.interruption_at.map(|t| scale.to_model(t));
        }
        for n in &mut self.notices {
            n.deadline = scale.to_model(n.deadline);
        }
        self.functions.settings.keep_alive = scale.to_model(self.functions.settings.keep_alive);
        self.arrivals.interval = scale.to_model(self.arrivals.interval);
        self.arrivals.counts.iter_mut().for_each(count);
        count(&mut self.arrivals.current);
        for c in
            [&mut self.recent.arrivals, &mut self.recent.completed, &mut self.recent.fulfilled, &mut self.recent.failed]
        {
            count(c);
        }
    }

    /// A view of an empty cluster at time zero.
    pub fn new(catalog: Arc<Catalog>, slo: Slo, window: ArrivalWindow, functions: FunctionSettings) -> View {
        let pools = catalog.vm_types.iter().map(|t| PoolView::empty(t.id)).collect();
        View {
            now: Nanos::ZERO,
            slo,
            catalog,
            pools,
            vms: Vec::new(),
            functions: FunctionView {
                settings: functions,
                cold_starting: 0,
                idle_warm: 0,
                busy: 0,
                in_flight: 0,
                throttled_total: 0,
                cold_starts_total: 0,
                per_function: Default::default(),
            },
            arrivals: window,
            recent: RecentStats::default(),
            notices: Vec::new(),
        }
    }

    /// The pool of `vm_type`.
    pub fn pool(&self, vm_type: VmTypeId) -> &PoolView {
        &self.pools[vm_type.0 as usize]
    }

    /// Requests waiting (queued, not in service) at VMs.
    pub fn vm_queued(&self) -> u64 {
        self.pools.iter().map(|p| p.queued).sum()
    }

    /// Ready VM instances of any type.
    pub fn ready_vms(&self) -> u32 {
        self.pools.iter().map(|p| p.ready.total()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_loads_give_the_least_loaded_ready_instance() {
        let mut pool = PoolView::empty(VmTypeId(0));
        assert_eq!(pool.least_ready_load(), None);
        pool.add_ready_load(3);
        pool.add_ready_load(5);
        assert_eq!(pool.least_ready_load(), Some(3));
        // The one holding 3 takes a request: 4 and 5 now.
        pool.remove_ready_load(3);
        pool.add_ready_load(4);
        assert_eq!(pool.least_ready_load(), Some(4));
        pool.remove_ready_load(4);
        pool.remove_ready_load(5);
        assert_eq!((pool.least_ready_load(), pool.ready_loads.len()), (None, 0));
        pool.add_ready_load(0);
        assert_eq!(pool.least_ready_load(), Some(0));
    }

    #[test]
    fn a_wall_clock_view_becomes_model_time_with_real_rates() {
        let catalog = crate::kpa::tests::catalog();
        let settings = FunctionSettings {
            memory_mb: 1024,
            concurrency: 1,
            keep_alive: Nanos::from_secs(60),
            prewarm: 0,
            batching: BatchRule::NONE,
        };
        // Live at time_scale 0.1: 0.5 s arrival intervals on the wall clock, 20 arrivals in each (40/s).
        let mut window = ArrivalWindow::new(Nanos::from_millis(500), 4);
        window.current = 20;
        window.roll();
        window.current = 7;
        let mut view = View::new(catalog, Slo::MARK, window, settings);
        view.now = Nanos::from_secs(3);
        view.recent.arrivals = 20;
        view.notices.push(SpotNotice { instance: InstanceId(1), vm_type: VmTypeId(0), deadline: Nanos::from_secs(15) });
        let rate = view.arrivals.rate_per_s(1);
        view.to_model_time(TimeScale::new(0.1).unwrap());
        assert_eq!(view.now, Nanos::from_secs(30));
        assert_eq!(view.notices[0].deadline, Nanos::from_secs(150));
        assert_eq!(view.functions.settings.keep_alive, Nanos::from_secs(600));
        assert_eq!(view.arrivals.interval, Nanos::from_secs(5));
        assert_eq!(view.arrivals.counts, [200]);
        assert_eq!(view.arrivals.current, 70);
        assert_eq!(view.recent.arrivals, 200);
        // The rate a policy reads is the real one: 40 requests per second.
        assert_eq!(view.arrivals.rate_per_s(1), rate);
        assert_eq!(rate, 40.0);
    }
}
