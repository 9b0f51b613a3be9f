//! The simulation itself: the cloud's state, the event handlers, and `simulate`.
//!
//! One [`World`] holds the cluster (VMs, function instances), the view the policy sees (kept current as
//! the state changes, never rebuilt), the ledger and the cost. Events are a closed enum handled by one
//! `match`. Requests live only while outstanding, inside the queue or batch of the instance holding them;
//! completed ones leave only counters and a histogram behind.

use std::collections::{BTreeMap, VecDeque};
use std::mem;

use hyscale_policies::billing::{self, CostBreakdown, FunctionBilling, VmEnd};
use hyscale_policies::keepalive::KeepAlivePolicy;
use hyscale_policies::report::{
    ActionSummary, CostSummary, FunctionStatsSummary, InstanceSummary, ModelMemorySummary, REPORT_FORMAT, Report,
    TimelineRow,
};
use hyscale_policies::rules::DispatchCandidate;
use hyscale_policies::view::MarketCounts;
use hyscale_policies::{
    Action, ArrivalWindow, BatchDecision, DropReason, FunctionSettings, IdMap, InstanceId, Ledger, Market, MissCause,
    Nanos, Policy, Pool, RecentStats, Refusal, RejectReason, RequestInfo, Route, SpotNotice, View, VmInstanceView,
    VmState, VmTypeId,
};
use hyscale_traces::{Arrival, ArrivalStream, ChunkEnd, TraceError};
use rand::RngExt;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::dist::unit_mean_noise;
use crate::error::SimError;
use crate::queue::EventQueue;
use crate::rng::{SeedFan, SimRng};
use crate::scenario::Scenario;

mod cost;
mod functions;
mod report;
mod slots;
mod spot;
mod view;
mod vm;

/// Every kind of event, handled by [`World::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The next arrival of the trace (held beside the queue in `World::next_arrival`, never in it).
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
    /// When its batch started (for the SLO miss's cause).
    started: Nanos,
    model: u32,
    /// The request's input and output sizes (tokens, bytes; 0 where the trace has none).
    input_size: u32,
    output_size: u32,
    /// Reroutes so far (saturating: 65,535 is more than any policy does).
    attempt: u16,
    /// Where it waited: at a provisioning VM, a cold-starting function instance, or both. An enum rather than
    /// bit flags so that an `Option<Req>` (a function instance's first slot) needs no byte of its own: the
    /// request is 40 bytes, and the slot with it.
    waited: Waited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waited {
    No,
    Vm,
    Cold,
    VmAndCold,
}

impl Waited {
    fn vm(self) -> bool {
        matches!(self, Waited::Vm | Waited::VmAndCold)
    }

    fn cold(self) -> bool {
        matches!(self, Waited::Cold | Waited::VmAndCold)
    }

    /// It waits at a provisioning VM too.
    fn and_vm(self) -> Waited {
        if self.cold() { Waited::VmAndCold } else { Waited::Vm }
    }

    /// It waits at a cold-starting instance too.
    fn and_cold(self) -> Waited {
        if self.vm() { Waited::VmAndCold } else { Waited::Cold }
    }
}

/// An optional time in 8 bytes, where `Option<Nanos>` takes 16: `Nanos::MAX` stands for none, and a time
/// stored is at most a nanosecond before it (the end of time, 584 years in, is never reached: the run ends at
/// its drain deadline). Four of a function instance's fields, on the line each request reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OptTime(Nanos);

impl OptTime {
    const NONE: OptTime = OptTime(Nanos::MAX);

    #[inline(always)]
    fn some(t: Nanos) -> OptTime {
        OptTime(t.min(Nanos(u64::MAX - 1)))
    }

    #[inline(always)]
    fn get(self) -> Option<Nanos> {
        (self != OptTime::NONE).then_some(self.0)
    }

    #[inline(always)]
    fn is_none(self) -> bool {
        self == OptTime::NONE
    }
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
    /// Since when it has run nothing (for the batch rule's idle start; `Nanos::MAX` until ready).
    free_since: Nanos,
    view_idx: usize,
    noticed: bool,
    /// Models loaded on it and when each last ran, model id order (memory counts against the instance's).
    loaded: Vec<(u32, Nanos)>,
}

impl Vm {
    /// Its state and how many requests it holds queued and in its batch: what the view counts of it.
    #[inline(always)]
    fn snapshot(&self) -> (Option<VmState>, u32, u32) {
        (self.state, self.queue.len() as u32, self.batch.len() as u32)
    }
}

/// A VM boots with this model loaded (its provisioning time covers the scenario's default profile's load).
const BOOT_MODEL: u32 = 0;

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

/// A function instance (sandbox).
///
/// Laid out by use (`repr(C)`, on 64-byte lines): the first three lines hold what a request reads and writes
/// on its way in and out (counts and times; the keep-alive state and the queue's length; the first slot and
/// its request), the fourth what it never touches (the other slots, the start and cold-start times). In the
/// compiler's own order, with `Option`s of 16 bytes and a request of 48, they spread over five or six.
#[repr(C, align(64))]
struct FnInst {
    epoch: u32,
    busy_slots: u32,
    in_service: u32,
    /// The function (the request's model id) it belongs to: it serves no other.
    function: u32,
    /// Its function's slot in `World::functions`.
    slot: u32,
    memory_mb: u32,
    concurrency: u32,
    free_pos: u32,
    phase: FnPhase,
    stale: bool,
    /// Started as pre-warmed (provisioned) capacity: no init charge, the provisioned duration price, never
    /// expires while the capacity stays configured.
    provisioned: bool,
    /// The free list of its function it is in (`warm_free` or `cold_free`), if any, and its position there
    /// (`free_pos`): the lists are touched only when it changes.
    free_in: Option<FnPhase>,
    busy_since: Nanos,
    /// Since when no slot has run anything (for the batch rule's idle start; `Nanos::MAX` until warm).
    free_since: Nanos,
    /// When the current idle period's keep-alive ends.
    expire_at: Nanos,
    idle_since: OptTime,
    /// The time of its pending keep-alive event, if one is armed.
    armed: OptTime,
    timer: OptTime,
    /// Loaded by a keep-alive policy's pre-warm and not used yet: kept this long once warm.
    prewarmed_for: OptTime,
    queue: VecDeque<Req>,
    /// One batch per concurrency slot (the first slot and the first request of its batch inline, see
    /// `slots`); an empty one is a free slot.
    slots: slots::Slots<Req>,
    /// When it started (a pod is billed from then).
    spawned_at: Nanos,
    cold_time: Nanos,
}

impl FnInst {
    fn outstanding(&self) -> u32 {
        self.queue.len() as u32 + self.in_service
    }

    /// `rule`'s decision for it at `now` with `queued` requests, the oldest queued at `oldest` (the one place
    /// both its queue and a request arriving to it free ask the rule).
    #[inline(always)]
    fn decide(&self, rule: &hyscale_policies::BatchRule, queued: usize, oldest: Nanos, now: Nanos) -> BatchDecision {
        let idle_since = (self.busy_slots == 0).then_some(self.free_since);
        rule.decide_at(queued, oldest, now, idle_since)
    }

    /// What the view counts it as.
    #[inline(always)]
    fn class(&self) -> FnClass {
        match self.phase {
            FnPhase::Gone => FnClass::Gone,
            FnPhase::Cold => FnClass::Cold,
            FnPhase::Warm if self.outstanding() == 0 => FnClass::Idle,
            FnPhase::Warm => FnClass::Busy,
        }
    }
}

/// One function: its instances serve it alone, and its keep-alive is decided for it. Functions live in a dense
/// table (`World::functions`, found by id through `World::fn_slot_of` once per request); an instance knows its
/// function's slot.
///
/// Laid out by use (`repr(C)`, a record per 64-byte line): a request reads the first line (its scaling limit,
/// a free instance, the counts) and the second (its execution time), nothing else unless it spawns an
/// instance or the batch has more than one request. In the compiler's own order the record spanned four lines
/// and a request touched all of them: a fifth of the function workload's first-level cache misses.
#[repr(C, align(64))]
struct FnFunction<'a> {
    /// The current scaling interval's start and the function's requests in flight then (the view's
    /// `per_function` count): within the interval, they may grow by at most the platform's `function_scale_step`.
    scale_since: Nanos,
    scale_base: u32,
    /// The last of `warm_free` (`NO_INSTANCE` when it is empty), the instance a request takes: read here, the
    /// instance's record is fetched straight after this line, not after the list's buffer too (three
    /// dependent loads, each a likely cache miss, were the admission's critical path).
    warm_last: u32,
    /// Whether `duration` holds the trace's execution times (see [`FnFunction::duration`]).
    has_duration: bool,
    /// Its instances with room, warm and cold: stacks, the last (most recently freed) taken first.
    warm_free: Vec<u32>,
    /// Invocations, and those that met a cold instance.
    invocations: u64,
    cold_invocations: u64,
    /// Its execution times from the trace (a copy, read on every request: no pointer to chase), when
    /// `has_duration`; zeros otherwise.
    duration: hyscale_traces::DurationPercentiles,
    /// Its model's figures, looked up once.
    model: crate::scenario::ModelFigures<'a>,
    cold_free: Vec<u32>,
    /// Its memory from the trace (read when it spawns an instance).
    memory_mb: Option<u32>,
    /// When its last execution ended (the start of the idle time the keep-alive policy observes; kept only
    /// under such a policy).
    last_end: Option<Nanos>,
}

/// `FnFunction::warm_last` of a function with no warm instance free.
const NO_INSTANCE: u32 = u32::MAX;

impl FnFunction<'_> {
    /// Its execution times from the trace, if the trace has them.
    #[inline(always)]
    fn duration(&self) -> Option<&hyscale_traces::DurationPercentiles> {
        self.has_duration.then_some(&self.duration)
    }
}

/// Arrivals read from the trace at a time (24 bytes each).
const READ_AHEAD: usize = 1024;

/// Provisioned (pre-warmed) capacity belongs to this function: the one of single-model traces.
const PROVISIONED_FUNCTION: u32 = 0;

/// The ledger's outcome counts at one moment. The counts of an interval (a timeline row's, a control tick's)
/// are the differences between its end's and its start's: each outcome is counted once, in the ledger, not
/// again per interval on every request.
#[derive(Clone, Copy, Default)]
struct Counts {
    arrivals: u64,
    completed: u64,
    fulfilled: u64,
    rejected: u64,
    dropped: u64,
}

impl Counts {
    fn of(ledger: &Ledger) -> Counts {
        Counts {
            arrivals: ledger.arrivals(),
            completed: ledger.completed(),
            fulfilled: ledger.fulfilled(),
            rejected: ledger.rejected(),
            dropped: ledger.dropped(),
        }
    }

    /// The counts since `start` (taken from the same ledger earlier).
    fn since(self, start: Counts) -> Counts {
        Counts {
            arrivals: self.arrivals - start.arrivals,
            completed: self.completed - start.completed,
            fulfilled: self.fulfilled - start.fulfilled,
            rejected: self.rejected - start.rejected,
            dropped: self.dropped - start.dropped,
        }
    }
}

/// The time integral of a count that changes at events, from time 0: `∫₀ᵗ x = x(t)·t − Σ Δᵢ·tᵢ` over its
/// changes `Δᵢ` at `tᵢ`. It keeps that sum, one multiply-add where the count changes and nothing per event
/// in between (an integral advanced at every event cost three 128-bit multiply-adds there, 2% of the function
/// workload's instructions). Exact integers, as the piecewise sums were: the same figures to the bit.
#[derive(Clone, Copy, Debug, Default)]
struct Integral(i128);

impl Integral {
    /// The count changed by `by` at `at` (one signed multiply: no branch on the sign).
    #[inline(always)]
    fn change(&mut self, by: i64, at: Nanos) {
        self.0 += i128::from(by) * i128::from(at.0);
    }

    /// The integral up to `t`, where the count is `x`.
    fn to(self, x: u64, t: Nanos) -> u128 {
        (i128::from(x) * i128::from(t.0) - self.0) as u128
    }
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
    /// Integral of live function instances over time (instance-nanoseconds), of requests in service on
    /// functions (request-nanoseconds) and of idle warm function memory (MB-nanoseconds).
    fn_live_ns: Integral,
    fn_in_service_ns: Integral,
    fn_idle_mb_ns: Integral,
    actions_applied: u64,
    vm_model_loads: u64,
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
    /// Per pool, the VMs the dispatch rule takes outright (`DispatchCandidate::wins_outright`), kept by
    /// `set_dispatch`: the smallest is the rule's choice, no scan needed. Only when the set is empty does a
    /// request scan its pool's VMs (rare: under a thousandth of the VM workload's instructions; a copy of
    /// what the rule reads of each VM, kept for that scan, cost ten times more to keep than the scans).
    outright: Vec<crate::keyset::KeySet>,
    pool_members: Vec<Vec<u32>>,
    fns: Vec<FnInst>,
    fn_free: Vec<u32>,
    /// Per function, in the order first seen; the summary sorts and sums, so the order never reaches the report.
    functions: Vec<FnFunction<'a>>,
    /// Function id → 1 + its slot in `functions` (0: not seen yet), looked up once per request.
    fn_slot_of: IdMap<u32>,
    keep_alive: Option<Box<dyn KeepAlivePolicy>>,
    /// Memory of idle warm instances, MB.
    fn_idle_mb: u64,
    fn_live: u32,
    fn_stale_live: u32,
    fn_provisioned_live: u32,
    fn_in_service: u64,
    /// Pre-warmed (provisioned) capacity billed so far (`policies::billing::ProvisionedMeter`).
    prewarm_meter: billing::ProvisionedMeter,
    /// How function instances are billed (the policy says).
    fn_billing: FunctionBilling,
    rng_provision: SimRng,
    rng_cold: SimRng,
    rng_service: SimRng,
    /// Serving overheads (drawn only where a profile gives them a spread).
    rng_overhead: SimRng,
    rng_spot: SimRng,
    vm_noise: Vec<Option<LogNormal<f64>>>,
    fn_noise: Option<LogNormal<f64>>,
    usage: Usage,
    /// The ledger's counts when the last timeline row was taken, and when the policy last ticked.
    sampled_counts: Counts,
    ticked_counts: Counts,
    /// The longest latency completed since the last tick (`recent.latency_ms_max` in ms when the policy
    /// looks; the same figure, the conversion being monotonic, without a float division per request).
    recent_latency_max: Nanos,
    timeline: Vec<TimelineRow>,
    trace: ArrivalStream,
    /// Arrivals read ahead from `trace`, a chunk at a time (`hyscale_traces::read_chunk`), and where the next
    /// one is: the engine reads each from memory rather than straight from the stream's call (the profile
    /// showed each arrival waiting on the value the call had just written, 7% of the function workload's time).
    read_ahead: Vec<Arrival>,
    read_pos: usize,
    /// The error that ended the read-ahead, reported when the arrivals before it have been simulated.
    read_error: Option<TraceError>,
    /// Whether `trace` has ended or failed (it is not read again).
    trace_ended: bool,
    next_arrival: Option<Arrival>,
    /// The next arrival's place in the event order (`queue::key`): it is kept out of the event queue, which
    /// then holds only the instances' events, and taken when it comes before the queue's earliest.
    arrival_key: u128,
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
    /// Most events pending at once (the queue's most, and the next arrival, which the engine holds beside it).
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
    progress: Option<&mut dyn FnMut(Nanos, u64)>,
) -> Result<(Report, EngineStats), SimError> {
    run(scenario, policy, arrivals, progress, None)
}

/// What a checker sees after every event: the time, the view a policy sees, the ledger's counts, the requests
/// held in the instances' queues and batches (counted from the instances themselves, not from the ledger), and
/// the cost billed so far.
pub struct Snapshot<'s> {
    /// Simulated time.
    pub now: Nanos,
    /// The view a policy sees.
    pub view: &'s View,
    /// Requests arrived, completed, rejected and dropped so far, and outstanding, by the ledger.
    pub arrivals: u64,
    /// Completed.
    pub completed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Dropped.
    pub dropped: u64,
    /// Outstanding.
    pub outstanding: u64,
    /// Requests in VMs' queues and batches.
    pub held_at_vms: u64,
    /// Requests in function instances' queues and slots.
    pub held_at_functions: u64,
    /// Dollars billed so far.
    pub cost: f64,
    /// The drain limit has passed: the outstanding requests were dropped where they sat.
    pub run_ended: bool,
}

/// Looks at the simulation after every event (swarm testing); see [`simulate_observed`].
pub trait Observer {
    /// Called after each event with the state it left.
    fn after_event(&mut self, snapshot: &Snapshot<'_>);
}

/// As [`simulate_with_stats`], calling `observer` after every event. Counting the requests held in instances
/// costs a pass over them per event: for tests, not for long runs.
pub fn simulate_observed(
    scenario: &Scenario,
    policy: &mut dyn Policy,
    arrivals: ArrivalStream,
    observer: &mut dyn Observer,
) -> Result<(Report, EngineStats), SimError> {
    run(scenario, policy, arrivals, None, Some(observer))
}

fn run(
    scenario: &Scenario,
    policy: &mut dyn Policy,
    arrivals: ArrivalStream,
    mut progress: Option<&mut dyn FnMut(Nanos, u64)>,
    mut observer: Option<&mut dyn Observer>,
) -> Result<(Report, EngineStats), SimError> {
    let mut w = World::new(scenario, policy, arrivals);
    w.start()?;
    while !w.finished() {
        let Some((t, ev)) = w.next_event() else {
            // Unreachable while requests are outstanding: each is held by an instance with a pending event.
            debug_assert!(false, "event queue ran dry with {} requests outstanding", w.ledger.outstanding());
            break;
        };
        debug_assert!(t >= w.now, "event at {t} before now {}", w.now);
        w.now = t;
        w.view.now = t;
        w.events += 1;
        w.handle(ev)?;
        if let Some(o) = observer.as_mut() {
            o.after_event(&w.snapshot(ev == Event::DrainDeadline));
        }
        if w.events.is_multiple_of(PROGRESS_EVERY)
            && let Some(p) = progress.as_mut()
        {
            p(w.now, w.ledger.arrivals());
        }
    }
    let events = w.events;
    // The queue's peak, and the next arrival held beside it.
    let queue_peak = w.queue.peak() + usize::from(w.ledger.arrivals() > 0);
    Ok((w.finish(), EngineStats { events, queue_peak }))
}

impl<'a> World<'a> {
    fn snapshot(&self, run_ended: bool) -> Snapshot<'_> {
        let held_at_vms =
            self.vms.iter().filter(|v| v.state.is_some()).map(|v| (v.queue.len() + v.batch.len()) as u64).sum();
        let held_at_functions =
            self.fns.iter().filter(|f| f.phase != FnPhase::Gone).map(|f| u64::from(f.outstanding())).sum();
        Snapshot {
            now: self.now,
            view: &self.view,
            arrivals: self.ledger.arrivals(),
            completed: self.ledger.completed(),
            rejected: self.ledger.rejected(),
            dropped: self.ledger.dropped(),
            outstanding: self.ledger.outstanding(),
            held_at_vms,
            held_at_functions,
            cost: self.usage.cost.total(),
            run_ended,
        }
    }

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
        let fn_billing = policy.function_billing();
        World {
            sc,
            policy,
            now: Nanos::ZERO,
            queue: EventQueue::new(),
            view,
            ledger: Ledger::new(sc.slo),
            vms: Vec::new(),
            outright: vec![Default::default(); sc.catalog.vm_types.len()],
            pool_members: vec![Vec::new(); sc.catalog.vm_types.len()],
            fns: Vec::new(),
            fn_free: Vec::new(),
            functions: Vec::new(),
            fn_slot_of: IdMap::new(),
            // Checked when the scenario was loaded.
            keep_alive: sc.file.keep_alive.as_ref().and_then(|k| k.build().ok()),
            fn_idle_mb: 0,
            fn_live: 0,
            fn_stale_live: 0,
            fn_provisioned_live: 0,
            fn_in_service: 0,
            prewarm_meter: billing::ProvisionedMeter::default(),
            fn_billing,
            rng_provision: fan.stream("provisioning"),
            rng_cold: fan.stream("cold-start"),
            rng_service: fan.stream("service"),
            rng_overhead: fan.stream("overhead"),
            rng_spot: fan.stream("spot"),
            vm_noise: sc.vm_models.iter().map(|m| unit_mean_noise(m.service_cv)).collect(),
            fn_noise: unit_mean_noise(sc.function_model.service_cv),
            usage: Usage::default(),
            sampled_counts: Counts::default(),
            ticked_counts: Counts::default(),
            recent_latency_max: Nanos::ZERO,
            timeline: Vec::new(),
            trace,
            read_ahead: Vec::with_capacity(READ_AHEAD),
            read_pos: 0,
            read_error: None,
            trace_ended: false,
            next_arrival: None,
            arrival_key: 0,
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
            self.queue.push_timer(e.0, Event::SpotListed(k as u32));
        }
        Ok(())
    }

    /// The next event: the pending arrival when it comes before the queue's earliest, else the queue's.
    fn next_event(&mut self) -> Option<(Nanos, Event)> {
        match &self.next_arrival {
            Some(a) => self.queue.pop_before(self.arrival_key).or(Some((a.time, Event::Arrival))),
            None => self.queue.pop(),
        }
    }

    fn finished(&self) -> bool {
        self.trace_done && self.ledger.outstanding() == 0
    }

    #[inline(always)]
    fn pull_arrival(&mut self) -> Result<(), SimError> {
        if self.read_pos == self.read_ahead.len() {
            self.read_more();
        }
        match self.read_ahead.get(self.read_pos).copied() {
            Some(mut a) => {
                self.read_pos += 1;
                a.time = a.time.saturating_add(self.trace_offset);
                if a.time < self.now {
                    return Err(SimError::Trace(TraceError::InvalidParameters(format!(
                        "arrival {} at {} comes before the previous one at {}; arrivals must be in time order",
                        self.ledger.arrivals() + 1,
                        a.time,
                        self.now
                    ))));
                }
                self.arrival_key = crate::queue::key(a.time, self.queue.take_seq());
                self.next_arrival = Some(a);
            }
            None => {
                if let Some(e) = self.read_error.take() {
                    return Err(e.into());
                }
                self.trace_done = true;
                self.queue.push_timer(self.now.saturating_add(self.drain_limit), Event::DrainDeadline);
            }
        }
        Ok(())
    }

    /// Reads up to `READ_AHEAD` more arrivals, up to the stream's end or its first error.
    fn read_more(&mut self) {
        self.read_ahead.clear();
        self.read_pos = 0;
        if self.trace_ended {
            return;
        }
        match hyscale_traces::read_chunk(&mut self.trace, &mut self.read_ahead, READ_AHEAD) {
            ChunkEnd::Full => {}
            ChunkEnd::Ended => self.trace_ended = true,
            ChunkEnd::Failed(e) => {
                self.read_error = Some(e);
                self.trace_ended = true;
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Result<(), SimError> {
        match ev {
            Event::Arrival => {
                let Some(a) = self.next_arrival.take() else {
                    return Ok(());
                };
                self.ledger.arrive();
                self.view.arrivals.current += 1;
                self.dispatch(Req {
                    arrival: self.now,
                    enqueued: self.now,
                    started: self.now,
                    attempt: 0,
                    model: a.model,
                    input_size: a.input_size,
                    output_size: a.output_size,
                    waited: Waited::No,
                });
                self.pull_arrival()?;
            }
            Event::VmReady(i) => {
                if self.vms[i as usize].state == Some(VmState::Provisioning) {
                    let before = self.vm_snapshot(i);
                    self.vms[i as usize].state = Some(VmState::Ready);
                    self.vms[i as usize].free_since = self.now;
                    self.vm_sync(i, before);
                    self.vm_try_start(i);
                }
            }
            Event::VmBatchDone(i) => {
                let vm = &self.vms[i as usize];
                if vm.state.is_none() || vm.batch.is_empty() {
                    return Ok(());
                }
                let before = vm.snapshot();
                let sc = self.sc;
                let overhead = &sc.vm_models[vm.vm_type.0 as usize].overhead;
                let now = self.now;
                // The batch's requests are booked where they lie (booking touches neither VMs nor the view),
                // then the batch is emptied and the view catches up.
                let vm = &mut self.vms[i as usize];
                for r in &vm.batch {
                    let o = overhead.sample(&mut self.rng_overhead);
                    book(&mut self.ledger, &mut self.recent_latency_max, now, r, o);
                }
                vm.batch.clear();
                vm.free_since = now;
                self.vm_sync(i, before);
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
                inst.free_since = self.now;
                let (memory, cold) = (inst.memory_mb, inst.cold_time);
                if self.sc.catalog.functions.bill_init
                    && !inst.provisioned
                    && self.fn_billing == FunctionBilling::Lambda
                {
                    self.usage.cost.function_compute +=
                        billing::function_compute_charge(&self.sc.catalog.functions, memory, cold);
                }
                self.fn_sync(idx, before);
                self.fn_try_start(idx);
            }
            Event::FnBatchDone { idx, epoch, slot } => self.fn_batch_done(idx, epoch, slot),
            Event::FnBatchTimer { idx, epoch } => {
                let inst = &mut self.fns[idx as usize];
                if inst.epoch == epoch && inst.timer.get() == Some(self.now) {
                    inst.timer = OptTime::NONE;
                    self.fn_try_start(idx);
                }
            }
            Event::FnExpire { idx, epoch } => {
                let inst = &mut self.fns[idx as usize];
                if inst.epoch != epoch || inst.armed.get() != Some(self.now) {
                    // Superseded by an earlier deadline, or the instance was replaced.
                    return Ok(());
                }
                inst.armed = OptTime::NONE;
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
                let slot = self.function_slot(function) as usize;
                let f = &self.functions[slot];
                let has_instance = !f.warm_free.is_empty() || !f.cold_free.is_empty();
                // A load runs nothing: like any instance, it does not count against the account limit.
                if !has_instance {
                    let idx = self.fn_spawn(function, false);
                    self.fns[idx as usize].prewarmed_for = OptTime::some(keep_alive);
                }
            }
            Event::Tick => {
                let counts = Counts::of(&self.ledger);
                let c = counts.since(mem::replace(&mut self.ticked_counts, counts));
                self.view.recent = RecentStats {
                    arrivals: c.arrivals,
                    completed: c.completed,
                    fulfilled: c.fulfilled,
                    failed: c.rejected + c.dropped,
                    latency_ms_max: self.recent_latency_max.as_millis_f64(),
                };
                let mut actions = mem::take(&mut self.actions);
                self.policy.tick(&self.view, &mut actions);
                self.apply_all(&mut actions);
                self.actions = actions;
                self.recent_latency_max = Nanos::ZERO;
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
            }
        }
        Ok(())
    }

    // ----- requests -----

    #[inline(always)]
    fn dispatch(&mut self, req: Req) {
        let info = RequestInfo { arrival: req.arrival, model: req.model, attempt: u32::from(req.attempt) };
        let route = self.policy.route(&info, &self.view);
        let result = match route {
            Route::Vm(t) => self.vm_admit(t, req),
            Route::Functions => self.fn_admit(req),
            Route::Reject(r) => Err(r),
        };
        if let Err(reason) = result {
            if req.attempt == 0 {
                self.ledger.reject(reason);
            } else {
                self.ledger.drop_request(DropReason::RerouteFailed(reason));
            }
        }
    }

    fn reroute(&mut self, reqs: Vec<Req>) {
        self.usage.rerouted += reqs.len() as u64;
        for r in reqs {
            self.dispatch(Req { enqueued: self.now, attempt: r.attempt.saturating_add(1), ..r });
        }
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
                Err(reason) => *self.usage.actions_refused.entry(reason.key().to_string()).or_insert(0) += 1,
            }
        }
    }
}

/// Books request `r`, answered at `now`, in `ledger` and the longest latency since the last tick; `overhead`
/// is the serving path's time outside the model (the profile's `overhead_ms` for the hardware that served it),
/// which the response spends after the batch ends. A function of the parts it touches, not of `World`, so that
/// a batch is booked where it lies.
#[inline(always)]
fn book(ledger: &mut Ledger, latency_max: &mut Nanos, now: Nanos, r: &Req, overhead: Nanos) {
    let latency = now - r.arrival + overhead;
    ledger.complete_explained(latency, || {
        if r.waited.vm() {
            MissCause::WaitedForVm
        } else if r.waited.cold() {
            MissCause::WaitedForColdStart
        } else if r.started.saturating_sub(r.arrival) >= (now - r.started) + overhead {
            MissCause::Queued
        } else {
            MissCause::SlowService
        }
    });
    *latency_max = (*latency_max).max(latency);
}

/// The input and output sizes of `reqs`, summed.
fn sizes<'r>(reqs: impl IntoIterator<Item = &'r Req>) -> (u64, u64) {
    reqs.into_iter().fold((0, 0), |(i, o), r| (i + u64::from(r.input_size), o + u64::from(r.output_size)))
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// The per-request records keep the layout their docs describe: line-aligned, the function's in four
    /// lines (two read per request), the instance's in four (three read per request).
    #[test]
    fn the_per_request_records_sit_on_whole_cache_lines() {
        assert_eq!(mem::align_of::<FnFunction>(), 64);
        assert_eq!(mem::size_of::<FnFunction>(), 4 * 64);
        assert_eq!(mem::offset_of!(FnFunction, duration), 64, "the execution times start the second line");
        assert!(mem::offset_of!(FnFunction, warm_last) < 64 && mem::offset_of!(FnFunction, cold_invocations) < 64);
        assert_eq!(mem::size_of::<hyscale_traces::DurationPercentiles>(), 64);
        assert_eq!(mem::align_of::<FnInst>(), 64);
        assert_eq!(mem::size_of::<Req>(), 40);
        assert_eq!(mem::size_of::<Option<Req>>(), 40, "the request's `Waited` holds the option's tag");
        assert_eq!(mem::size_of::<FnInst>(), 4 * 64);
        assert_eq!(mem::offset_of!(FnInst, idle_since), 64, "the keep-alive state starts the second line");
        assert_eq!(mem::offset_of!(FnInst, slots), 2 * 64, "the first slot is the third line");
        assert_eq!(mem::size_of::<slots::Batch<Req>>(), 64);
        assert!(mem::offset_of!(FnInst, spawned_at) >= 3 * 64, "the cold fields sit past the hot lines");
    }

    #[test]
    fn an_optional_time_keeps_every_time_but_the_last_nanosecond() {
        assert_eq!(OptTime::NONE.get(), None);
        assert!(OptTime::NONE.is_none());
        assert_eq!(OptTime::some(Nanos::ZERO).get(), Some(Nanos::ZERO));
        assert_eq!(OptTime::some(Nanos(u64::MAX - 1)).get(), Some(Nanos(u64::MAX - 1)));
        // The end of time is kept a nanosecond early, never as none.
        assert_eq!(OptTime::some(Nanos::MAX).get(), Some(Nanos(u64::MAX - 1)));
    }

    #[test]
    fn waiting_at_a_vm_and_at_a_cold_instance_add_up() {
        assert!(!Waited::No.vm() && !Waited::No.cold());
        assert_eq!(Waited::No.and_vm(), Waited::Vm);
        assert_eq!(Waited::No.and_cold(), Waited::Cold);
        assert_eq!(Waited::Vm.and_cold(), Waited::VmAndCold);
        assert_eq!(Waited::Cold.and_vm(), Waited::VmAndCold);
        assert_eq!(Waited::Vm.and_vm(), Waited::Vm);
        assert!(Waited::VmAndCold.vm() && Waited::VmAndCold.cold());
    }
}
