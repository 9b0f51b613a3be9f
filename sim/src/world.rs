//! The simulation itself: the cloud's state, the event handlers, and `simulate`.
//!
//! One [`World`] holds the cluster (VMs, function instances), the view the policy sees (kept current as
//! the state changes, never rebuilt), the ledger and the cost. Events are a closed enum handled by one
//! `match`. Requests live only while outstanding, inside the queue or batch of the instance holding them;
//! completed ones leave only counters and a histogram behind.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::mem;

use hyscale_policies::billing::{self, CostBreakdown, VmEnd};
use hyscale_policies::keepalive::KeepAlivePolicy;
use hyscale_policies::report::{
    ActionSummary, CostSummary, FunctionStatsSummary, InstanceSummary, ModelMemorySummary, REPORT_FORMAT, Report,
    TimelineRow,
};
use hyscale_policies::view::MarketCounts;
use hyscale_policies::{
    Action, ArrivalWindow, BatchDecision, DropReason, FunctionSettings, InstanceId, Ledger, Market, Nanos, Policy,
    Pool, RecentStats, RejectReason, RequestInfo, Route, SpotNotice, View, VmInstanceView, VmState, VmTypeId,
};
use hyscale_traces::{Arrival, ArrivalStream, TraceError};
use rand::RngExt;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::dist::unit_mean_noise;
use crate::error::SimError;
use crate::queue::EventQueue;
use crate::rng::{SeedFan, SimRng};
use crate::scenario::Scenario;

/// Every kind of event, handled by [`World::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The next arrival of the trace (held in `World::next_arrival`).
    Arrival,
    /// A VM finished provisioning.
    VmReady(u32),
    /// A VM finished its batch.
    VmBatchDone(u32),
    /// A VM's oldest queued request reached its batching deadline.
    VmBatchTimer(u32),
    /// A spot VM receives its interruption notice (random hazard).
    SpotNotice(u32),
    /// A noticed spot VM is taken.
    SpotTerminate(u32),
    /// A listed spot interruption (index into the scenario's events).
    SpotListed(u32),
    /// A function instance finished its cold start.
    FnWarm { idx: u32, epoch: u32 },
    /// A function instance's slot finished its batch.
    FnBatchDone { idx: u32, epoch: u32, slot: u32 },
    /// A function instance's batching deadline.
    FnBatchTimer { idx: u32, epoch: u32 },
    /// A function instance's armed keep-alive check (one armed per instance at most).
    FnExpire { idx: u32, epoch: u32 },
    /// The pre-warm time a keep-alive policy chose for `function`: load an instance, to be kept `keep_alive`.
    FnPrewarm { function: u32, keep_alive: Nanos },
    /// The policy's control tick.
    Tick,
    /// The arrival-count window closes an interval.
    WindowRoll,
    /// A timeline row is due.
    Sample,
    /// The drain limit after the last arrival: whatever is outstanding is dropped.
    DrainDeadline,
}

/// An outstanding request.
#[derive(Clone, Copy, Debug)]
struct Req {
    arrival: Nanos,
    enqueued: Nanos,
    attempt: u32,
    model: u32,
    /// The request's input and output sizes (tokens, bytes; 0 where the trace has none).
    input_size: u32,
    output_size: u32,
}

struct Vm {
    vm_type: VmTypeId,
    market: Market,
    /// `None` once gone.
    state: Option<VmState>,
    launched: Nanos,
    queue: VecDeque<Req>,
    batch: Vec<Req>,
    timer: Option<Nanos>,
    view_idx: usize,
    noticed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FnPhase {
    Cold,
    Warm,
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FnClass {
    Cold,
    Idle,
    Busy,
    Gone,
}

struct FnInst {
    /// The function (the request's model id) it belongs to: it serves no other.
    function: u32,
    epoch: u32,
    phase: FnPhase,
    memory_mb: u32,
    concurrency: u32,
    stale: bool,
    /// Started as pre-warmed (provisioned) capacity: no init charge, the provisioned duration price, never
    /// expires while the capacity stays configured.
    provisioned: bool,
    /// Loaded by a keep-alive policy's pre-warm and not used yet: kept this long once warm.
    prewarmed_for: Option<Nanos>,
    queue: VecDeque<Req>,
    slots: Vec<Option<Vec<Req>>>,
    busy_slots: u32,
    in_service: u32,
    busy_since: Nanos,
    idle_since: Option<Nanos>,
    /// When the current idle period's keep-alive ends.
    expire_at: Nanos,
    /// The time of its pending keep-alive event, if one is armed.
    armed: Option<Nanos>,
    timer: Option<Nanos>,
    cold_time: Nanos,
}

impl FnInst {
    fn outstanding(&self) -> u32 {
        self.queue.len() as u32 + self.in_service
    }
}

/// One function: its instances serve it alone, and its keep-alive is decided for it.
#[derive(Default)]
struct FnFunction {
    /// When its last execution ended (the start of the idle time the keep-alive policy observes).
    last_end: Option<Nanos>,
    /// Its requests queued or in service.
    in_flight: u32,
    /// The current scaling interval's start and the requests in flight then: within the interval, in-flight
    /// requests may grow by at most the platform's `function_scale_step`.
    scale_since: Nanos,
    scale_base: u32,
    /// Invocations, and those that met a cold instance.
    invocations: u64,
    cold_invocations: u64,
}

/// Provisioned (pre-warmed) capacity belongs to this function: the one of single-model traces.
const PROVISIONED_FUNCTION: u32 = 0;

#[derive(Default)]
struct IntervalCounts {
    arrivals: u64,
    completed: u64,
    fulfilled: u64,
    rejected: u64,
    dropped: u64,
}

/// Counters the report needs that are not in the ledger.
#[derive(Default)]
struct Usage {
    cost: CostBreakdown,
    vm_hours: [f64; 2],
    launched: BTreeMap<String, u64>,
    spot_interruptions: u64,
    rerouted: u64,
    fn_live_peak: u64,
    fn_in_service_peak: u64,
    /// Integral of live function instances over time, instance-nanoseconds.
    fn_live_ns: u128,
    /// Integral of requests in service on functions, request-nanoseconds.
    fn_in_service_ns: u128,
    /// Integral of idle warm function memory over time, MB-nanoseconds.
    fn_idle_mb_ns: u128,
    actions_applied: u64,
    actions_refused: BTreeMap<String, u64>,
}

/// How often (in events) the progress callback runs.
const PROGRESS_EVERY: u64 = 1 << 20;

/// The simulated cloud; see the module docs.
struct World<'a> {
    sc: &'a Scenario,
    policy: &'a mut dyn Policy,
    now: Nanos,
    queue: EventQueue<Event>,
    view: View,
    ledger: Ledger,
    vms: Vec<Vm>,
    pool_members: Vec<Vec<u32>>,
    fns: Vec<FnInst>,
    fn_free: Vec<u32>,
    /// (function, instance) of instances with room, warm and cold.
    warm_free: BTreeSet<(u32, u32)>,
    cold_free: BTreeSet<(u32, u32)>,
    functions: BTreeMap<u32, FnFunction>,
    keep_alive: Option<Box<dyn KeepAlivePolicy>>,
    /// Memory of idle warm instances, MB.
    fn_idle_mb: u64,
    fn_live: u32,
    fn_stale_live: u32,
    fn_provisioned_live: u32,
    fn_in_service: u64,
    last_integral: Nanos,
    prewarm_since: Nanos,
    rng_provision: SimRng,
    rng_cold: SimRng,
    rng_service: SimRng,
    rng_spot: SimRng,
    vm_noise: Vec<Option<LogNormal<f64>>>,
    fn_noise: Option<LogNormal<f64>>,
    usage: Usage,
    interval: IntervalCounts,
    recent: RecentStats,
    timeline: Vec<TimelineRow>,
    trace: ArrivalStream,
    next_arrival: Option<Arrival>,
    trace_done: bool,
    actions: Vec<Action>,
    events: u64,
    /// Settings as durations, converted once (no float-to-time conversion in the event loop).
    trace_offset: Nanos,
    drain_limit: Nanos,
    report_interval: Nanos,
    spot_notice: Nanos,
    /// When the last timeline row was taken.
    sampled_to: Nanos,
}

/// Figures of the engine itself, for tests and benchmarks (not part of the report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events handled.
    pub events: u64,
    /// Most events pending at once.
    pub queue_peak: usize,
}

/// Runs `policy` on `scenario` against `arrivals` and returns the report.
///
/// `progress`, when given, is called every million or so events with the simulated time and the number of
/// arrivals so far.
pub fn simulate(
    scenario: &Scenario,
    policy: &mut dyn Policy,
    arrivals: ArrivalStream,
    progress: Option<&mut dyn FnMut(Nanos, u64)>,
) -> Result<Report, SimError> {
    simulate_with_stats(scenario, policy, arrivals, progress).map(|(r, _)| r)
}

/// As [`simulate`], with the engine's own figures.
pub fn simulate_with_stats(
    scenario: &Scenario,
    policy: &mut dyn Policy,
    arrivals: ArrivalStream,
    mut progress: Option<&mut dyn FnMut(Nanos, u64)>,
) -> Result<(Report, EngineStats), SimError> {
    let mut queue_peak = 0;
    let mut w = World::new(scenario, policy, arrivals);
    w.start()?;
    while !w.finished() {
        let Some((t, ev)) = w.queue.pop() else {
            // Unreachable while requests are outstanding: each is held by an instance with a pending event.
            debug_assert!(false, "event queue ran dry with {} requests outstanding", w.ledger.outstanding());
            break;
        };
        debug_assert!(t >= w.now, "event at {t} before now {}", w.now);
        queue_peak = queue_peak.max(w.queue.len() + 1);
        w.now = t;
        w.view.now = t;
        w.events += 1;
        w.handle(ev)?;
        if w.events.is_multiple_of(PROGRESS_EVERY)
            && let Some(p) = progress.as_mut()
        {
            p(w.now, w.ledger.arrivals());
        }
    }
    let events = w.events;
    Ok((w.finish(), EngineStats { events, queue_peak }))
}

impl<'a> World<'a> {
    fn new(sc: &'a Scenario, policy: &'a mut dyn Policy, trace: ArrivalStream) -> World<'a> {
        let fan = SeedFan::new(sc.file.seed);
        let f = &sc.catalog.functions;
        let settings = FunctionSettings {
            memory_mb: f.default_memory_mb,
            concurrency: 1,
            keep_alive: f.default_keep_alive,
            prewarm: 0,
            batching: hyscale_policies::BatchRule::NONE,
        };
        let s = &sc.file.sim;
        let window = ArrivalWindow::new(Nanos::from_secs_f64(s.arrival_window_s), s.arrival_history);
        let mut view = View::new(sc.catalog.clone(), sc.slo, window, settings);
        for p in &mut view.pools {
            p.queue_limit = s.vm_queue_limit;
        }
        World {
            sc,
            policy,
            now: Nanos::ZERO,
            queue: EventQueue::new(),
            view,
            ledger: Ledger::new(sc.slo),
            vms: Vec::new(),
            pool_members: vec![Vec::new(); sc.catalog.vm_types.len()],
            fns: Vec::new(),
            fn_free: Vec::new(),
            warm_free: BTreeSet::new(),
            cold_free: BTreeSet::new(),
            functions: BTreeMap::new(),
            // Checked when the scenario was loaded.
            keep_alive: sc.file.keep_alive.as_ref().and_then(|k| k.build().ok()),
            fn_idle_mb: 0,
            fn_live: 0,
            fn_stale_live: 0,
            fn_provisioned_live: 0,
            fn_in_service: 0,
            last_integral: Nanos::ZERO,
            prewarm_since: Nanos::ZERO,
            rng_provision: fan.stream("provisioning"),
            rng_cold: fan.stream("cold-start"),
            rng_service: fan.stream("service"),
            rng_spot: fan.stream("spot"),
            vm_noise: sc.vm_models.iter().map(|m| unit_mean_noise(m.service_cv)).collect(),
            fn_noise: unit_mean_noise(sc.function_model.service_cv),
            usage: Usage::default(),
            interval: IntervalCounts::default(),
            recent: RecentStats::default(),
            timeline: Vec::new(),
            trace,
            next_arrival: None,
            trace_done: false,
            actions: Vec::new(),
            events: 0,
            trace_offset: Nanos::from_secs_f64(s.trace_offset_s),
            drain_limit: Nanos::from_secs_f64(s.drain_limit_s),
            report_interval: Nanos::from_secs_f64(s.report_interval_s).max(Nanos(1)),
            spot_notice: Nanos::from_secs_f64(sc.file.spot.notice_s),
            sampled_to: Nanos::ZERO,
        }
    }

    fn start(&mut self) -> Result<(), SimError> {
        let mut actions = mem::take(&mut self.actions);
        self.policy.start(&self.view, &mut actions);
        self.apply_all(&mut actions);
        self.actions = actions;
        self.pull_arrival()?;
        self.queue.push(self.policy.control_interval().max(Nanos(1)), Event::Tick);
        self.queue.push(self.view.arrivals.interval.max(Nanos(1)), Event::WindowRoll);
        self.queue.push(self.report_interval, Event::Sample);
        for (k, e) in self.sc.spot_events.iter().enumerate() {
            self.queue.push(e.0, Event::SpotListed(k as u32));
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.trace_done && self.ledger.outstanding() == 0
    }

    fn pull_arrival(&mut self) -> Result<(), SimError> {
        match self.trace.next() {
            Some(Ok(mut a)) => {
                a.time = a.time.saturating_add(self.trace_offset);
                if a.time < self.now {
                    return Err(SimError::Trace(TraceError::InvalidParameters(format!(
                        "arrival {} at {} comes before the previous one at {}; arrivals must be in time order",
                        self.ledger.arrivals() + 1,
                        a.time,
                        self.now
                    ))));
                }
                self.queue.push(a.time, Event::Arrival);
                self.next_arrival = Some(a);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                self.trace_done = true;
                self.queue.push(self.now.saturating_add(self.drain_limit), Event::DrainDeadline);
            }
        }
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<(), SimError> {
        match ev {
            Event::Arrival => {
                let Some(a) = self.next_arrival.take() else {
                    return Ok(());
                };
                self.ledger.arrive();
                self.view.arrivals.current += 1;
                self.interval.arrivals += 1;
                self.recent.arrivals += 1;
                self.dispatch(Req {
                    arrival: self.now,
                    enqueued: self.now,
                    attempt: 0,
                    model: a.model,
                    input_size: a.input_size,
                    output_size: a.output_size,
                });
                self.pull_arrival()?;
            }
            Event::VmReady(i) => {
                if self.vms[i as usize].state == Some(VmState::Provisioning) {
                    let before = self.vm_snapshot(i);
                    self.vms[i as usize].state = Some(VmState::Ready);
                    self.vm_sync(i, before);
                    self.vm_try_start(i);
                }
            }
            Event::VmBatchDone(i) => {
                let vm = &mut self.vms[i as usize];
                if vm.state.is_none() || vm.batch.is_empty() {
                    return Ok(());
                }
                let before = self.vm_snapshot(i);
                let batch = mem::take(&mut self.vms[i as usize].batch);
                self.vm_sync(i, before);
                for r in &batch {
                    self.complete(r);
                }
                // Give the batch's allocation back for the next one.
                let mut batch = batch;
                batch.clear();
                self.vms[i as usize].batch = batch;
                self.vm_try_start(i);
            }
            Event::VmBatchTimer(i) => {
                if self.vms[i as usize].timer == Some(self.now) {
                    self.vms[i as usize].timer = None;
                    self.vm_try_start(i);
                }
            }
            Event::SpotNotice(i) => self.spot_notice(i),
            Event::SpotTerminate(i) => {
                if self.vms[i as usize].state.is_some() {
                    self.usage.spot_interruptions += 1;
                    self.vm_gone(i, VmEnd::Interrupted);
                }
            }
            Event::SpotListed(k) => {
                let (_, vm_type, count) = self.sc.spot_events[k as usize];
                let victims: Vec<u32> = self.pool_members[vm_type.0 as usize]
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let vm = &self.vms[i as usize];
                        vm.market == Market::Spot && !vm.noticed && vm.state.is_some()
                    })
                    .take(count as usize)
                    .collect();
                for i in victims {
                    self.spot_notice(i);
                }
            }
            Event::FnWarm { idx, epoch } => {
                let inst = &self.fns[idx as usize];
                if inst.epoch != epoch || inst.phase != FnPhase::Cold {
                    return Ok(());
                }
                let before = self.fn_class(idx);
                let inst = &mut self.fns[idx as usize];
                inst.phase = FnPhase::Warm;
                let (memory, cold) = (inst.memory_mb, inst.cold_time);
                if self.sc.catalog.functions.bill_init && !inst.provisioned {
                    self.usage.cost.function_compute +=
                        billing::function_compute_charge(&self.sc.catalog.functions, memory, cold);
                }
                self.fn_sync(idx, before);
                self.fn_try_start(idx);
            }
            Event::FnBatchDone { idx, epoch, slot } => self.fn_batch_done(idx, epoch, slot),
            Event::FnBatchTimer { idx, epoch } => {
                let inst = &mut self.fns[idx as usize];
                if inst.epoch == epoch && inst.timer == Some(self.now) {
                    inst.timer = None;
                    self.fn_try_start(idx);
                }
            }
            Event::FnExpire { idx, epoch } => {
                let inst = &mut self.fns[idx as usize];
                if inst.epoch != epoch || inst.armed != Some(self.now) {
                    // Superseded by an earlier deadline, or the instance was replaced.
                    return Ok(());
                }
                inst.armed = None;
                if inst.phase != FnPhase::Warm || inst.outstanding() != 0 || inst.idle_since.is_none() {
                    // Busy now: its next idle period arms a check again.
                    return Ok(());
                }
                if inst.expire_at > self.now {
                    // Used and idle again since this was armed: wait for the new deadline.
                    let at = inst.expire_at;
                    self.arm_expiry(idx, at);
                } else if inst.provisioned && !inst.stale {
                    // Pre-warmed capacity never expires; look again after another keep-alive.
                    let at = self.now.saturating_add(self.view.functions.settings.keep_alive.max(Nanos(1)));
                    self.arm_expiry(idx, at);
                } else {
                    self.fn_retire(idx);
                }
            }
            Event::FnPrewarm { function, keep_alive } => {
                // Load the function again unless an instance with room is there already (an invocation
                // since started one).
                let has_instance = self.warm_free.range((function, 0)..=(function, u32::MAX)).next().is_some()
                    || self.cold_free.range((function, 0)..=(function, u32::MAX)).next().is_some();
                if !has_instance && self.fn_live < self.sc.catalog.functions.regional_concurrency {
                    let idx = self.fn_spawn(function, false);
                    self.fns[idx as usize].prewarmed_for = Some(keep_alive);
                }
            }
            Event::Tick => {
                self.view.recent = self.recent;
                let mut actions = mem::take(&mut self.actions);
                self.policy.tick(&self.view, &mut actions);
                self.apply_all(&mut actions);
                self.actions = actions;
                self.recent = RecentStats::default();
                self.queue.push(self.now + self.policy.control_interval().max(Nanos(1)), Event::Tick);
            }
            Event::WindowRoll => {
                self.view.arrivals.roll();
                self.queue.push(self.now + self.view.arrivals.interval.max(Nanos(1)), Event::WindowRoll);
            }
            Event::Sample => {
                self.sample();
                self.queue.push(self.now + self.report_interval, Event::Sample);
            }
            Event::DrainDeadline => {
                // Everything outstanding sits in some instance's queue or batch; the run ends now, so
                // counting them is enough.
                let n = self.ledger.outstanding();
                for _ in 0..n {
                    self.ledger.drop_request(DropReason::RunEnded);
                }
                self.interval.dropped += n;
                self.recent.failed += n;
            }
        }
        Ok(())
    }

    // ----- requests -----

    fn dispatch(&mut self, req: Req) {
        let info = RequestInfo { arrival: req.arrival, model: req.model, attempt: req.attempt };
        let route = self.policy.route(&info, &self.view);
        let result = match route {
            Route::Vm(t) => self.vm_admit(t, req),
            Route::Functions => self.fn_admit(req),
            Route::Reject(r) => Err(r),
        };
        if let Err(reason) = result {
            if req.attempt == 0 {
                self.ledger.reject(reason);
                self.interval.rejected += 1;
            } else {
                self.ledger.drop_request(DropReason::RerouteFailed(reason));
                self.interval.dropped += 1;
            }
            self.recent.failed += 1;
        }
    }

    fn complete(&mut self, r: &Req) {
        let latency = self.now - r.arrival;
        let ok = self.ledger.complete(latency);
        self.interval.completed += 1;
        self.interval.fulfilled += ok as u64;
        self.recent.completed += 1;
        self.recent.fulfilled += ok as u64;
        self.recent.latency_ms_max = self.recent.latency_ms_max.max(latency.as_millis_f64());
    }

    fn reroute(&mut self, reqs: Vec<Req>) {
        self.usage.rerouted += reqs.len() as u64;
        for r in reqs {
            self.dispatch(Req { enqueued: self.now, attempt: r.attempt + 1, ..r });
        }
    }

    // ----- VMs -----

    fn vm_snapshot(&self, i: u32) -> (Option<VmState>, u32, u32) {
        let vm = &self.vms[i as usize];
        (vm.state, vm.queue.len() as u32, vm.batch.len() as u32)
    }

    /// Brings the view in line with VM `i` after a change from `before`.
    fn vm_sync(&mut self, i: u32, before: (Option<VmState>, u32, u32)) {
        let after = self.vm_snapshot(i);
        let vm = &self.vms[i as usize];
        let (vm_type, market, view_idx) = (vm.vm_type, vm.market, vm.view_idx);
        let pool = &mut self.view.pools[vm_type.0 as usize];
        if before.0 != after.0 {
            if let Some(s) = before.0 {
                *state_counts(pool, s).get_mut(market) -= 1;
            }
            if let Some(s) = after.0 {
                *state_counts(pool, s).get_mut(market) += 1;
            }
        }
        pool.queued = pool.queued + after.1 as u64 - before.1 as u64;
        pool.in_service = pool.in_service + after.2 as u64 - before.2 as u64;
        match after.0 {
            Some(state) => {
                let v = &mut self.view.vms[view_idx];
                v.state = state;
                v.queued = after.1;
                v.in_service = after.2;
            }
            None if before.0.is_some() => {
                self.view.vms.swap_remove(view_idx);
                if let Some(moved) = self.view.vms.get(view_idx) {
                    self.vms[moved.id.0 as usize].view_idx = view_idx;
                }
                self.pool_members[vm_type.0 as usize].retain(|&m| m != i);
                self.view.notices.retain(|n| n.instance.0 != i as u64);
            }
            None => {}
        }
    }

    fn provision(&mut self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        let t = self
            .sc
            .catalog
            .vm_types
            .get(vm_type.0 as usize)
            .ok_or_else(|| format!("provision: no VM type with id {}", vm_type.0))?;
        if t.price_per_h(market).is_none() {
            return Err(format!("provision: {} is not sold on the {} market", t.name, market.name()));
        }
        let model = &self.sc.vm_models[vm_type.0 as usize];
        *self.usage.launched.entry(format!("{}/{}", t.name, market.name())).or_insert(0) += count as u64;
        for _ in 0..count {
            let i = self.vms.len() as u32;
            let boot = Nanos::from_secs_f64(model.launch_boot_s.sample(&mut self.rng_provision));
            let ready_at = self.now.saturating_add(boot).saturating_add(model.model_load);
            self.vms.push(Vm {
                vm_type,
                market,
                state: None,
                launched: self.now,
                queue: VecDeque::new(),
                batch: Vec::new(),
                timer: None,
                view_idx: self.view.vms.len(),
                noticed: false,
            });
            self.view.vms.push(VmInstanceView {
                id: InstanceId(i as u64),
                vm_type,
                market,
                state: VmState::Provisioning,
                launched_at: self.now,
                queued: 0,
                in_service: 0,
                interruption_at: None,
            });
            let before = self.vm_snapshot(i);
            self.vms[i as usize].state = Some(VmState::Provisioning);
            self.vm_sync(i, before);
            self.pool_members[vm_type.0 as usize].push(i);
            self.queue.push(ready_at, Event::VmReady(i));
            if market == Market::Spot && model.spot_hazard_per_h > 0.0 {
                // The hazard is positive and finite (checked at load), so the rate is valid.
                if let Ok(exp) = Exp::new(model.spot_hazard_per_h) {
                    let hours: f64 = exp.sample(&mut self.rng_spot);
                    let at = self.now.saturating_add(Nanos::from_secs_f64(hours * 3600.0));
                    if at < Nanos::MAX {
                        self.queue.push(at, Event::SpotNotice(i));
                    }
                }
            }
        }
        Ok(())
    }

    fn vm_admit(&mut self, vm_type: VmTypeId, req: Req) -> Result<(), RejectReason> {
        let members = self.pool_members.get(vm_type.0 as usize).ok_or(RejectReason::Policy("unknown VM type"))?;
        let limit = self.sc.file.sim.vm_queue_limit as usize;
        let mut any = false;
        let mut best: Option<(u8, usize, u32)> = None;
        for &i in members {
            let vm = &self.vms[i as usize];
            // An instance under an interruption notice takes no new requests.
            if vm.noticed {
                continue;
            }
            let rank = match vm.state {
                Some(VmState::Ready) => 0,
                Some(VmState::Provisioning) => 1,
                _ => continue,
            };
            any = true;
            let load = vm.queue.len() + vm.batch.len();
            // Like a load balancer, send to instances in service (least outstanding requests first); queue at
            // an instance still provisioning only when no instance in service has room.
            if load < limit && best.is_none_or(|b| (rank, load, i) < b) {
                best = Some((rank, load, i));
            }
        }
        let Some((_, _, i)) = best else {
            return Err(if any { RejectReason::QueueFull } else { RejectReason::NoVmCapacity });
        };
        let before = self.vm_snapshot(i);
        self.vms[i as usize].queue.push_back(req);
        self.vm_sync(i, before);
        self.vm_try_start(i);
        Ok(())
    }

    fn vm_try_start(&mut self, i: u32) {
        let vm = &self.vms[i as usize];
        if !matches!(vm.state, Some(VmState::Ready | VmState::Draining)) || !vm.batch.is_empty() {
            return;
        }
        let rule = self.view.pools[vm.vm_type.0 as usize].batching;
        let oldest = vm.queue.front().map_or(self.now, |r| r.enqueued);
        match rule.decide(vm.queue.len(), oldest, self.now) {
            BatchDecision::Idle => {
                if vm.state == Some(VmState::Draining) {
                    self.vm_gone(i, VmEnd::Released);
                }
            }
            BatchDecision::Start(n) => {
                let before = self.vm_snapshot(i);
                let t = vm.vm_type.0 as usize;
                let vm = &mut self.vms[i as usize];
                let n = (n as usize).min(vm.queue.len());
                vm.batch.extend(vm.queue.drain(..n));
                vm.timer = None;
                let (input, output) = sizes(&vm.batch);
                let mut service = self.sc.catalog.vm_types[t].service.latency_sized(n as u32, input, output);
                if let Some(noise) = &self.vm_noise[t] {
                    service = scale(service, noise.sample(&mut self.rng_service));
                }
                self.vm_sync(i, before);
                self.queue.push(self.now + service, Event::VmBatchDone(i));
            }
            BatchDecision::WaitUntil(t) => {
                if vm.timer != Some(t) {
                    self.vms[i as usize].timer = Some(t);
                    self.queue.push(t, Event::VmBatchTimer(i));
                }
            }
        }
    }

    /// VM `i` is gone now, ended by `end`: billed, removed, its queued and in-service requests routed again.
    fn vm_gone(&mut self, i: u32, end: VmEnd) {
        let before = self.vm_snapshot(i);
        if before.0.is_none() {
            return;
        }
        let vm = &mut self.vms[i as usize];
        let mut orphans: Vec<Req> = mem::take(&mut vm.batch);
        orphans.extend(mem::take(&mut vm.queue));
        vm.state = None;
        vm.timer = None;
        let (vm_type, market, ran) = (vm.vm_type, vm.market, self.now - vm.launched);
        self.bill_vm(vm_type, market, ran, end);
        self.vm_sync(i, before);
        if !orphans.is_empty() {
            self.reroute(orphans);
        }
    }

    fn bill_vm(&mut self, vm_type: VmTypeId, market: Market, ran: Nanos, end: VmEnd) {
        let price = self.sc.catalog.vm(vm_type).price_per_h(market).unwrap_or(0.0);
        let charge = billing::vm_charge(price, market, ran, end);
        // Hours the instances ran (what was used), whatever the bill made of them.
        let hours = ran.as_secs_f64() / 3600.0;
        match market {
            Market::OnDemand => self.usage.cost.vm_on_demand += charge,
            Market::Spot => self.usage.cost.vm_spot += charge,
        }
        self.usage.vm_hours[market as usize] += hours;
    }

    fn spot_notice(&mut self, i: u32) {
        let vm = &mut self.vms[i as usize];
        if vm.state.is_none() || vm.noticed {
            return;
        }
        vm.noticed = true;
        let deadline = self.now.saturating_add(self.spot_notice);
        let notice = SpotNotice { instance: InstanceId(i as u64), vm_type: vm.vm_type, deadline };
        let view_idx = vm.view_idx;
        self.view.vms[view_idx].interruption_at = Some(deadline);
        self.view.notices.push(notice);
        self.queue.push(deadline, Event::SpotTerminate(i));
        let mut actions = mem::take(&mut self.actions);
        self.policy.on_spot_notice(&notice, &self.view, &mut actions);
        self.apply_all(&mut actions);
        self.actions = actions;
    }

    fn release(&mut self, i: u32) -> Result<(), String> {
        let state = self.vms.get(i as usize).and_then(|vm| vm.state);
        match state {
            None => Err("release: instance is not alive".into()),
            Some(VmState::Provisioning) => {
                self.vm_gone(i, VmEnd::Released);
                Ok(())
            }
            Some(VmState::Ready) => {
                let before = self.vm_snapshot(i);
                self.vms[i as usize].state = Some(VmState::Draining);
                self.vm_sync(i, before);
                self.vm_try_start(i);
                Ok(())
            }
            Some(VmState::Draining) => Ok(()),
        }
    }

    fn release_vms(&mut self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        let members = self
            .pool_members
            .get(vm_type.0 as usize)
            .ok_or_else(|| format!("release: no VM type with id {}", vm_type.0))?;
        let mut provisioning: Vec<u32> = Vec::new();
        let mut ready: Vec<(usize, std::cmp::Reverse<u32>)> = Vec::new();
        for &i in members {
            let vm = &self.vms[i as usize];
            if vm.market != market {
                continue;
            }
            match vm.state {
                Some(VmState::Provisioning) => provisioning.push(i),
                Some(VmState::Ready) => ready.push((vm.queue.len() + vm.batch.len(), std::cmp::Reverse(i))),
                _ => {}
            }
        }
        provisioning.sort_unstable_by(|a, b| b.cmp(a));
        ready.sort_unstable();
        let chosen: Vec<u32> = provisioning
            .into_iter()
            .chain(ready.into_iter().map(|(_, std::cmp::Reverse(i))| i))
            .take(count as usize)
            .collect();
        for i in chosen {
            self.release(i)?;
        }
        Ok(())
    }

    // ----- functions -----

    fn fn_capacity(&self, inst: &FnInst) -> u32 {
        inst.concurrency.saturating_mul(self.view.functions.settings.batching.max_batch)
    }

    fn fn_class(&self, idx: u32) -> FnClass {
        let inst = &self.fns[idx as usize];
        match inst.phase {
            FnPhase::Gone => FnClass::Gone,
            FnPhase::Cold => FnClass::Cold,
            FnPhase::Warm if inst.outstanding() == 0 => FnClass::Idle,
            FnPhase::Warm => FnClass::Busy,
        }
    }

    /// Brings counts and the free sets in line with instance `idx` after a change from `before`.
    fn fn_sync(&mut self, idx: u32, before: FnClass) {
        let after = self.fn_class(idx);
        if (before == FnClass::Idle) != (after == FnClass::Idle) {
            self.integrate();
            let mb = self.fns[idx as usize].memory_mb as u64;
            if after == FnClass::Idle {
                self.fn_idle_mb += mb;
            } else {
                self.fn_idle_mb -= mb;
            }
        }
        if before != after {
            let f = &mut self.view.functions;
            for (class, delta) in [(before, -1i64), (after, 1)] {
                let counter = match class {
                    FnClass::Cold => &mut f.cold_starting,
                    FnClass::Idle => &mut f.idle_warm,
                    FnClass::Busy => &mut f.busy,
                    FnClass::Gone => continue,
                };
                *counter = (*counter as i64 + delta) as u32;
            }
        }
        let inst = &self.fns[idx as usize];
        let key = (inst.function, idx);
        self.warm_free.remove(&key);
        self.cold_free.remove(&key);
        if !inst.stale && inst.outstanding() < self.fn_capacity(inst) {
            match inst.phase {
                FnPhase::Warm => {
                    self.warm_free.insert(key);
                }
                FnPhase::Cold => {
                    self.cold_free.insert(key);
                }
                FnPhase::Gone => {}
            }
        }
    }

    /// Advances the time integrals of function instances and in-service requests to now.
    fn integrate(&mut self) {
        let dt = (self.now - self.last_integral).0 as u128;
        self.usage.fn_live_ns += self.fn_live as u128 * dt;
        self.usage.fn_in_service_ns += self.fn_in_service as u128 * dt;
        self.usage.fn_idle_mb_ns += self.fn_idle_mb as u128 * dt;
        self.last_integral = self.now;
    }

    fn fn_admit(&mut self, req: Req) -> Result<(), RejectReason> {
        // AWS's account concurrency counts executions in flight, not instances.
        if self.view.functions.in_flight >= self.sc.catalog.functions.regional_concurrency as u64 {
            self.view.functions.throttled_total += 1;
            return Err(RejectReason::Throttled);
        }
        let function = req.model;
        let platform = &self.sc.catalog.functions;
        let f = self.functions.entry(function).or_default();
        if self.now >= f.scale_since.saturating_add(platform.function_scale_interval) {
            f.scale_since = self.now;
            f.scale_base = f.in_flight;
        }
        if f.in_flight >= f.scale_base.saturating_add(platform.function_scale_step) {
            return Err(RejectReason::FunctionScaling);
        }
        let mine = (function, 0)..=(function, u32::MAX);
        let idx = if let Some(&(_, i)) = self.warm_free.range(mine.clone()).next() {
            i
        } else if let Some(&(_, i)) = self.cold_free.range(mine).next() {
            i
        } else {
            if self.fn_live >= self.sc.catalog.functions.regional_concurrency {
                self.view.functions.throttled_total += 1;
                return Err(RejectReason::Throttled);
            }
            self.fn_spawn(function, false)
        };
        let cold = self.fns[idx as usize].phase == FnPhase::Cold;
        let now = self.now;
        let f = self.functions.entry(function).or_default();
        f.in_flight += 1;
        if let Some(end) = f.last_end
            && let Some(k) = self.keep_alive.as_mut()
        {
            k.observe_idle(function, now.saturating_sub(end));
        }
        f.invocations += 1;
        f.cold_invocations += cold as u64;
        let before = self.fn_class(idx);
        let inst = &mut self.fns[idx as usize];
        inst.queue.push_back(req);
        inst.idle_since = None;
        self.view.functions.in_flight += 1;
        self.fn_sync(idx, before);
        self.fn_try_start(idx);
        Ok(())
    }

    fn fn_spawn(&mut self, function: u32, provisioned: bool) -> u32 {
        let settings = self.view.functions.settings;
        let memory_mb = self.sc.function_traits.get(&function).and_then(|t| t.memory_mb).unwrap_or(settings.memory_mb);
        let m = &self.sc.function_model;
        let platform = &self.sc.catalog.functions;
        // A cold start of measured parts: the sandbox, the language runtime, fetching the model's bytes, and
        // loading it (deserialise + first inference), which is CPU-bound and gets the vCPU share its memory buys.
        let sandbox = m.sandbox_init_s.sample(&mut self.rng_cold);
        let bandwidth = m.model_load_mb_per_s.sample(&mut self.rng_cold).max(1e-9);
        let vcpus = platform.vcpus(memory_mb).min(platform.max_vcpus_per_request).max(1e-6);
        let cold = Nanos::from_secs_f64(sandbox + platform.model_size_mb / bandwidth + m.load_s_one_vcpu / vcpus)
            .saturating_add(m.runtime_init);
        let idx = match self.fn_free.pop() {
            Some(i) => i,
            None => {
                self.fns.push(FnInst {
                    function,
                    epoch: 0,
                    phase: FnPhase::Gone,
                    memory_mb: 0,
                    concurrency: 0,
                    stale: false,
                    provisioned: false,
                    prewarmed_for: None,
                    queue: VecDeque::new(),
                    slots: Vec::new(),
                    busy_slots: 0,
                    in_service: 0,
                    busy_since: Nanos::ZERO,
                    idle_since: None,
                    expire_at: Nanos::ZERO,
                    armed: None,
                    timer: None,
                    cold_time: Nanos::ZERO,
                });
                (self.fns.len() - 1) as u32
            }
        };
        self.integrate();
        let inst = &mut self.fns[idx as usize];
        inst.function = function;
        inst.epoch = inst.epoch.wrapping_add(1);
        inst.phase = FnPhase::Cold;
        inst.memory_mb = memory_mb;
        inst.concurrency = settings.concurrency.max(1);
        inst.stale = false;
        inst.provisioned = provisioned;
        inst.prewarmed_for = None;
        self.fn_provisioned_live += provisioned as u32;
        inst.slots.clear();
        inst.slots.resize(inst.concurrency as usize, None);
        inst.busy_slots = 0;
        inst.in_service = 0;
        inst.idle_since = None;
        inst.armed = None;
        inst.timer = None;
        inst.cold_time = cold;
        let epoch = inst.epoch;
        self.fn_live += 1;
        self.usage.fn_live_peak = self.usage.fn_live_peak.max(self.fn_live as u64);
        self.view.functions.cold_starts_total += 1;
        self.fn_sync(idx, FnClass::Gone);
        self.queue.push(self.now + cold, Event::FnWarm { idx, epoch });
        idx
    }

    fn fn_try_start(&mut self, idx: u32) {
        let before = self.fn_class(idx);
        let rule = self.view.functions.settings.batching;
        loop {
            let inst = &self.fns[idx as usize];
            if inst.phase != FnPhase::Warm {
                break;
            }
            let oldest = inst.queue.front().map_or(self.now, |r| r.enqueued);
            match rule.decide(inst.queue.len(), oldest, self.now) {
                BatchDecision::Idle => {
                    if inst.busy_slots == 0 && inst.idle_since.is_none() {
                        if inst.stale {
                            self.fn_sync(idx, before);
                            self.fn_retire(idx);
                            return;
                        }
                        let function = inst.function;
                        let keep_alive = match (inst.prewarmed_for, inst.provisioned, self.keep_alive.as_mut()) {
                            (Some(k), _, _) => k,
                            (None, false, Some(policy)) => {
                                let d = policy.decide(function);
                                if d.prewarm > Nanos::ZERO {
                                    // Unload now; load again at the pre-warm time.
                                    self.fn_sync(idx, before);
                                    self.fn_retire(idx);
                                    let at = self.now.saturating_add(d.prewarm);
                                    self.queue.push(at, Event::FnPrewarm { function, keep_alive: d.keep_alive });
                                    return;
                                }
                                d.keep_alive
                            }
                            _ => self.view.functions.settings.keep_alive,
                        };
                        self.fns[idx as usize].idle_since = Some(self.now);
                        self.arm_expiry(idx, self.now.saturating_add(keep_alive));
                    }
                    break;
                }
                BatchDecision::WaitUntil(t) => {
                    if inst.timer != Some(t) {
                        let epoch = inst.epoch;
                        self.fns[idx as usize].timer = Some(t);
                        self.queue.push(t, Event::FnBatchTimer { idx, epoch });
                    }
                    break;
                }
                BatchDecision::Start(n) => {
                    let Some(slot) = inst.slots.iter().position(Option::is_none) else {
                        break;
                    };
                    let platform = &self.sc.catalog.functions;
                    let taken = (n as usize).min(inst.queue.len());
                    let (input, output) = sizes(inst.queue.range(..taken));
                    let traced = self.sc.function_traits.get(&inst.function).and_then(|t| t.duration.as_ref());
                    let service = match traced {
                        // The trace's execution time of one invocation, the batch's as the profile scales it.
                        Some(d) => {
                            let u: f64 = self.rng_service.random();
                            let ms = d.at_quantile(u) * platform.service.latency(n).as_secs_f64()
                                / platform.service.latency(1).as_secs_f64();
                            Nanos::from_millis_f64(ms).max(Nanos(1))
                        }
                        None => {
                            let mut service =
                                platform.service_time_sized(n, inst.memory_mb, inst.concurrency, input, output);
                            if let Some(noise) = &self.fn_noise {
                                service = scale(service, noise.sample(&mut self.rng_service));
                            }
                            service
                        }
                    };
                    self.usage.cost.function_requests += platform.price_per_request;
                    self.integrate();
                    let now = self.now;
                    let inst = &mut self.fns[idx as usize];
                    inst.prewarmed_for = None;
                    let n = (n as usize).min(inst.queue.len());
                    let batch: Vec<Req> = inst.queue.drain(..n).collect();
                    if inst.busy_slots == 0 {
                        inst.busy_since = now;
                    }
                    inst.busy_slots += 1;
                    inst.in_service += n as u32;
                    inst.slots[slot] = Some(batch);
                    inst.timer = None;
                    inst.idle_since = None;
                    let epoch = inst.epoch;
                    self.fn_in_service += n as u64;
                    self.usage.fn_in_service_peak = self.usage.fn_in_service_peak.max(self.fn_in_service);
                    self.queue.push(now + service, Event::FnBatchDone { idx, epoch, slot: slot as u32 });
                }
            }
        }
        self.fn_sync(idx, before);
    }

    fn fn_batch_done(&mut self, idx: u32, epoch: u32, slot: u32) {
        let inst = &self.fns[idx as usize];
        if inst.epoch != epoch || inst.phase != FnPhase::Warm {
            return;
        }
        let before = self.fn_class(idx);
        self.integrate();
        let now = self.now;
        let inst = &mut self.fns[idx as usize];
        let Some(batch) = inst.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        inst.busy_slots -= 1;
        inst.in_service -= batch.len() as u32;
        let busy_period = (inst.busy_slots == 0).then(|| (inst.memory_mb, now - inst.busy_since, inst.provisioned));
        self.fn_in_service -= batch.len() as u64;
        self.view.functions.in_flight -= batch.len() as u64;
        if let Some((memory, ran, provisioned)) = busy_period {
            self.usage.cost.function_compute +=
                billing::function_compute_charge_on(&self.sc.catalog.functions, memory, ran, provisioned);
        }
        self.fn_sync(idx, before);
        for r in &batch {
            self.complete(r);
        }
        let function = self.fns[idx as usize].function;
        let f = self.functions.entry(function).or_default();
        f.last_end = Some(now);
        f.in_flight -= batch.len() as u32;
        self.fn_try_start(idx);
    }

    /// Instance `idx`, idle, expires at `at`: at most one keep-alive event is armed per instance; a later
    /// deadline is picked up when the armed one fires.
    fn arm_expiry(&mut self, idx: u32, at: Nanos) {
        let inst = &mut self.fns[idx as usize];
        inst.expire_at = at;
        if inst.armed.is_none_or(|t| t > at) {
            inst.armed = Some(at);
            let epoch = inst.epoch;
            self.queue.push(at, Event::FnExpire { idx, epoch });
        }
    }

    fn fn_retire(&mut self, idx: u32) {
        let before = self.fn_class(idx);
        if before == FnClass::Gone {
            return;
        }
        self.integrate();
        let inst = &mut self.fns[idx as usize];
        debug_assert_eq!(inst.outstanding(), 0, "retiring a function instance with work");
        inst.phase = FnPhase::Gone;
        if inst.stale {
            self.fn_stale_live -= 1;
        }
        if inst.provisioned {
            inst.provisioned = false;
            self.fn_provisioned_live -= 1;
        }
        self.fn_live -= 1;
        self.fn_sync(idx, before);
        self.fn_free.push(idx);
    }

    fn configure_functions(
        &mut self,
        memory_mb: Option<u32>,
        concurrency: Option<u32>,
        keep_alive: Option<Nanos>,
        prewarm: Option<u32>,
    ) -> Result<(), String> {
        let old = self.view.functions.settings;
        let memory = memory_mb.unwrap_or(old.memory_mb);
        let conc = concurrency.unwrap_or(old.concurrency);
        self.sc.catalog.functions.check_settings(memory, conc).map_err(|e| format!("configure functions: {e}"))?;
        if prewarm.unwrap_or(old.prewarm) != old.prewarm || memory != old.memory_mb {
            // A configured period of provisioned capacity ends (and is billed) when its size changes.
            self.settle_prewarm();
        }
        let settings = &mut self.view.functions.settings;
        settings.memory_mb = memory;
        settings.concurrency = conc;
        settings.keep_alive = keep_alive.unwrap_or(old.keep_alive);
        settings.prewarm = prewarm.unwrap_or(old.prewarm);
        if memory != old.memory_mb || conc != old.concurrency {
            // As when a function's configuration is published: running instances finish their work under
            // the old settings and retire; new requests get new instances.
            for idx in 0..self.fns.len() as u32 {
                let inst = &mut self.fns[idx as usize];
                if inst.phase == FnPhase::Gone || inst.stale {
                    continue;
                }
                inst.stale = true;
                self.fn_stale_live += 1;
                if inst.provisioned {
                    // Provisioned capacity moves to the new version; this one finishes on demand.
                    inst.provisioned = false;
                    self.fn_provisioned_live -= 1;
                }
                let before = self.fn_class(idx);
                self.fn_sync(idx, before);
                if before == FnClass::Idle {
                    self.fn_retire(idx);
                }
            }
        }
        let target = self.view.functions.settings.prewarm;
        // Fewer provisioned instances than before: the surplus become on-demand instances (idle ones start
        // their keep-alive now).
        for idx in 0..self.fns.len() as u32 {
            if self.fn_provisioned_live <= target {
                break;
            }
            let inst = &mut self.fns[idx as usize];
            if inst.phase != FnPhase::Gone && inst.provisioned && !inst.stale {
                inst.provisioned = false;
                self.fn_provisioned_live -= 1;
                if inst.phase == FnPhase::Warm && inst.outstanding() == 0 {
                    inst.idle_since = Some(self.now);
                    let at = self.now.saturating_add(self.view.functions.settings.keep_alive);
                    self.arm_expiry(idx, at);
                }
            }
        }
        // More: live on-demand instances of the current version are adopted first (they are initialised
        // already), then new ones start; so `prewarm` is also the number of instances kept alive at least.
        for idx in 0..self.fns.len() as u32 {
            if self.fn_provisioned_live >= target {
                break;
            }
            let inst = &mut self.fns[idx as usize];
            if inst.phase != FnPhase::Gone && !inst.provisioned && !inst.stale {
                inst.provisioned = true;
                self.fn_provisioned_live += 1;
            }
        }
        while self.fn_provisioned_live < target {
            if self.fn_live >= self.sc.catalog.functions.regional_concurrency {
                return Err("configure functions: prewarm exceeds the regional concurrency limit".into());
            }
            self.fn_spawn(PROVISIONED_FUNCTION, true);
        }
        Ok(())
    }

    /// Bills pre-warmed capacity held since the last settlement.
    fn settle_prewarm(&mut self) {
        let s = self.view.functions.settings;
        if s.prewarm > 0 {
            let held = self.now - self.prewarm_since;
            self.usage.cost.function_compute +=
                s.prewarm as f64 * billing::function_provisioned_charge(&self.sc.catalog.functions, s.memory_mb, held);
        }
        self.prewarm_since = self.now;
    }

    fn set_batching(&mut self, pool: Pool, rule: hyscale_policies::BatchRule) -> Result<(), String> {
        let rule = hyscale_policies::BatchRule::new(rule.max_batch, rule.max_wait);
        match pool {
            Pool::Vm(t) => {
                let p = self.view.pools.get_mut(t.0 as usize).ok_or_else(|| format!("batching: no VM type {}", t.0))?;
                p.batching = rule;
                for i in self.pool_members[t.0 as usize].clone() {
                    self.vm_try_start(i);
                }
            }
            Pool::Functions => {
                self.view.functions.settings.batching = rule;
                for idx in 0..self.fns.len() as u32 {
                    let before = self.fn_class(idx);
                    self.fn_sync(idx, before);
                    self.fn_try_start(idx);
                }
            }
        }
        Ok(())
    }

    // ----- actions -----

    fn apply_all(&mut self, actions: &mut Vec<Action>) {
        for a in actions.drain(..) {
            let result = match a {
                Action::Provision { vm_type, market, count } => self.provision(vm_type, market, count),
                Action::Release { instance } => self.release(u32::try_from(instance.0).unwrap_or(u32::MAX)),
                Action::ReleaseVms { vm_type, market, count } => self.release_vms(vm_type, market, count),
                Action::ConfigureFunctions { memory_mb, concurrency, keep_alive, prewarm } => {
                    self.configure_functions(memory_mb, concurrency, keep_alive, prewarm)
                }
                Action::SetBatching { pool, rule } => self.set_batching(pool, rule),
            };
            match result {
                Ok(()) => self.usage.actions_applied += 1,
                Err(reason) => *self.usage.actions_refused.entry(reason).or_insert(0) += 1,
            }
        }
    }

    // ----- reporting -----

    /// Cost so far, counting live VMs and pre-warmed capacity up to now (without minimums).
    fn cost_so_far(&self) -> f64 {
        let mut total = self.usage.cost.total();
        for vm in &self.view.vms {
            let price = self.sc.catalog.vm(vm.vm_type).price_per_h(vm.market).unwrap_or(0.0);
            total += price * (self.now - vm.launched_at).as_secs_f64() / 3600.0;
        }
        let s = self.view.functions.settings;
        total
            + s.prewarm as f64
                * billing::function_provisioned_charge(
                    &self.sc.catalog.functions,
                    s.memory_mb,
                    self.now - self.prewarm_since,
                )
    }

    fn sample(&mut self) {
        self.sampled_to = self.now;
        let c = mem::take(&mut self.interval);
        let mut provisioning = 0;
        let mut ready = MarketCounts::default();
        let mut draining = 0;
        for p in &self.view.pools {
            provisioning += p.provisioning.total();
            ready.on_demand += p.ready.on_demand;
            ready.spot += p.ready.spot;
            draining += p.draining.total();
        }
        let f = &self.view.functions;
        self.timeline.push(TimelineRow {
            t_s: self.now.as_secs_f64(),
            arrivals: c.arrivals,
            completed: c.completed,
            fulfilled: c.fulfilled,
            rejected: c.rejected,
            dropped: c.dropped,
            vm_provisioning: provisioning,
            vm_ready_on_demand: ready.on_demand,
            vm_ready_spot: ready.spot,
            vm_draining: draining,
            fn_cold_starting: f.cold_starting,
            fn_idle: f.idle_warm,
            fn_busy: f.busy,
            cost_so_far: self.cost_so_far(),
        });
    }

    fn finish(mut self) -> Report {
        self.integrate();
        self.settle_prewarm();
        // Bill functions still mid-batch (only when the drain limit cut the run short).
        for inst in &self.fns {
            if inst.phase == FnPhase::Warm && inst.busy_slots > 0 {
                self.usage.cost.function_compute += billing::function_compute_charge_on(
                    &self.sc.catalog.functions,
                    inst.memory_mb,
                    self.now - inst.busy_since,
                    inst.provisioned,
                );
            }
        }
        let live: Vec<(VmTypeId, Market, Nanos)> =
            self.view.vms.iter().map(|v| (v.vm_type, v.market, self.now - v.launched_at)).collect();
        for (t, m, ran) in live {
            self.bill_vm(t, m, ran, VmEnd::Released);
        }
        if self.timeline.is_empty() || self.now > self.sampled_to {
            self.sample();
        }
        let (requests, slo, latency) = self.ledger.summary();
        let cost = self.usage.cost;
        let total = cost.total();
        let f = &self.sc.catalog.functions;
        let ns_per_h = 3600e9;
        let model_gb = f.model_size_mb / 1024.0;
        Report {
            format: REPORT_FORMAT,
            mode: "simulation".into(),
            scenario: self.sc.file.name.clone(),
            policy: self.policy.name().to_string(),
            seed: self.sc.file.seed,
            trace: self.sc.file.trace.describe(),
            model: self.sc.catalog.model.clone(),
            duration_s: self.now.as_secs_f64(),
            requests,
            slo,
            latency_ms: latency,
            cost: CostSummary {
                vm_on_demand: cost.vm_on_demand,
                vm_spot: cost.vm_spot,
                function_compute: cost.function_compute,
                function_requests: cost.function_requests,
                total,
                per_million_completed: if self.ledger.completed() == 0 {
                    0.0
                } else {
                    total * 1e6 / self.ledger.completed() as f64
                },
            },
            instances: InstanceSummary {
                vms_launched: self.usage.launched,
                vm_hours_on_demand: self.usage.vm_hours[Market::OnDemand as usize],
                vm_hours_spot: self.usage.vm_hours[Market::Spot as usize],
                spot_interruptions: self.usage.spot_interruptions,
                rerouted: self.usage.rerouted,
                function_cold_starts: self.view.functions.cold_starts_total,
                function_instance_hours: self.usage.fn_live_ns as f64 / ns_per_h,
                function_instances_peak: self.usage.fn_live_peak,
            },
            model_memory: ModelMemorySummary {
                model_size_mb: f.model_size_mb,
                gb_hours: self.usage.fn_live_ns as f64 / ns_per_h * model_gb,
                copies_peak: self.usage.fn_live_peak,
                one_copy_per_request_peak: self.usage.fn_in_service_peak,
                one_copy_per_request_gb_hours: self.usage.fn_in_service_ns as f64 / ns_per_h * model_gb,
            },
            functions: function_stats(
                &self.functions,
                self.keep_alive.as_ref().map_or_else(|| "settings".to_string(), |k| k.name()),
                self.usage.fn_idle_mb_ns,
            ),
            actions: ActionSummary { applied: self.usage.actions_applied, refused: self.usage.actions_refused },
            timeline: self.timeline,
        }
    }
}

/// The per-function summary: cold-invocation percentages by function, summarised by nearest-rank
/// percentiles, and the idle memory time.
fn function_stats(functions: &BTreeMap<u32, FnFunction>, keep_alive: String, idle_mb_ns: u128) -> FunctionStatsSummary {
    let mut pct: Vec<f64> = functions
        .values()
        .filter(|f| f.invocations > 0)
        .map(|f| 100.0 * f.cold_invocations as f64 / f.invocations as f64)
        .collect();
    pct.sort_by(f64::total_cmp);
    let rank = |q: f64| -> f64 {
        if pct.is_empty() {
            return 0.0;
        }
        let k = ((q * pct.len() as f64).ceil() as usize).clamp(1, pct.len());
        pct[k - 1]
    };
    FunctionStatsSummary {
        keep_alive,
        functions: pct.len() as u64,
        invocations: functions.values().map(|f| f.invocations).sum(),
        cold_invocations: functions.values().map(|f| f.cold_invocations).sum(),
        cold_pct_p50: rank(0.5),
        cold_pct_p75: rank(0.75),
        cold_pct_p90: rank(0.9),
        wasted_memory_gb_s: idle_mb_ns as f64 / 1024.0 / 1e9,
    }
}

fn state_counts(pool: &mut hyscale_policies::PoolView, state: VmState) -> &mut MarketCounts {
    match state {
        VmState::Provisioning => &mut pool.provisioning,
        VmState::Ready => &mut pool.ready,
        VmState::Draining => &mut pool.draining,
    }
}

/// The input and output sizes of `reqs`, summed.
fn sizes<'r>(reqs: impl IntoIterator<Item = &'r Req>) -> (u64, u64) {
    reqs.into_iter().fold((0, 0), |(i, o), r| (i + u64::from(r.input_size), o + u64::from(r.output_size)))
}

fn scale(t: Nanos, factor: f64) -> Nanos {
    Nanos((t.0 as f64 * factor).round().max(1.0) as u64)
}
