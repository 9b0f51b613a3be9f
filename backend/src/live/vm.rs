//! The VM-like pool: long-lived local workers, one engine [`Session`](crate::engine::Session) behind one [`Batcher`] each.
//!
//! A worker goes **provisioning → ready → draining → gone**, as a VM does in the simulator
//! (`hyscale_policies::VmState`). Provisioning loads the model and then waits out the rest of the type's
//! provisioning delay (see [`super::ClusterConfig::time_scale`]), so a local worker becomes ready when a VM
//! of its type would. Requests may be assigned to a provisioning worker (only when the pool has no ready
//! one, as in the simulator); they wait for it. Releasing a provisioning worker makes it gone at once and
//! its waiting requests are routed again; releasing a ready one makes it drain: it takes no new requests,
//! finishes those it holds, then is gone. A spot interruption ([`VmProvider::interrupt`]) marks the worker with
//! its deadline; at the deadline it is taken, and every request it still holds (queued, or in a batch whose
//! result is then discarded) is routed again by the caller, so no request is lost with it.
//!
//! Batching: a worker's [`Batcher`] takes its rule when the worker becomes ready; the batcher has no way to
//! change it afterwards, so `SetBatching` reaches new workers only (documented in `live/README.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyscale_policies::{
    BatchRule, Clock, InstanceId, Market, Nanos, RejectReason, SpotNotice, TimeScale, View, VmInstanceView, VmState,
    VmTypeId,
};
use tokio::sync::watch;

use hyscale_policies::billing::{self, CostBreakdown, VmEnd};
use hyscale_policies::rules::{DispatchCandidate, ReleaseStep, dispatch_to, release_step};
use hyscale_policies::{Catalog, Refusal};

use super::provider::{BoxFuture, VmCounters, VmOutcome, VmProvider, push_instance, release_order, reset_pools};
use crate::WallClock;
use crate::batcher::{BatchError, BatchObserver, Batcher, BatcherConfig};
use crate::engine::{Engine, Tensor};

/// What a worker can do for a request now; sent on the worker's watch channel.
#[derive(Clone)]
enum Phase {
    /// Loading the model or waiting out the provisioning delay.
    Provisioning,
    /// Serving through this batcher (ready or draining).
    Serving(Batcher),
    /// Gone: requests it held must be routed again.
    Gone,
}

struct Worker {
    vm_type: VmTypeId,
    market: Market,
    launched_at: Nanos,
    state: VmState,
    phase: watch::Sender<Phase>,
    /// Requests assigned and not yet answered (waiting for readiness, queued, or in a batch).
    outstanding: Arc<AtomicU32>,
    interruption_at: Option<Nanos>,
}

impl Worker {
    fn batcher(&self) -> Option<Batcher> {
        match &*self.phase.borrow() {
            Phase::Serving(b) => Some(b.clone()),
            _ => None,
        }
    }

    /// (queued, in service) as the view counts them.
    fn load(&self) -> (u32, u32) {
        let outstanding = self.outstanding.load(Ordering::Relaxed);
        match self.batcher() {
            Some(b) => {
                let queued = (b.queue_depth() as u32).min(outstanding);
                (queued, outstanding - queued)
            }
            None => (outstanding, 0),
        }
    }
}

/// Settings of a [`VmPool`].
pub struct VmPoolConfig {
    /// The engine workers load the model into.
    pub engine: &'static Engine,
    /// The model file.
    pub model_path: PathBuf,
    /// Provisioning delay per VM type (indexed by [`VmTypeId`]), wall-clock.
    pub provision: Vec<Duration>,
    /// Most requests one worker's batcher queues.
    pub queue_capacity: usize,
    /// The catalog: the types' prices bill the workers.
    pub catalog: Arc<Catalog>,
    /// The cluster's `time_scale`: a worker alive `t` wall-clock seconds stands for `t / time_scale` seconds
    /// of a VM, and is billed so (prices scaled like time).
    pub time_scale: TimeScale,
    /// Receives every worker's batch figures (the server's metrics).
    pub observer: Arc<dyn BatchObserver>,
}

#[derive(Default)]
struct PoolState {
    workers: BTreeMap<InstanceId, Worker>,
    next_id: u64,
    batching: Vec<BatchRule>,
    notices: Vec<SpotNotice>,
    launched: u64,
    spot_interruptions: u64,
    load_failures: u64,
    /// What the workers that are gone cost, by `policies::billing` (the simulator's rules).
    billed: CostBreakdown,
    /// Instance-hours of the workers that are gone, (on demand, spot), scaled like time.
    hours: (f64, f64),
}

struct Shared {
    config: VmPoolConfig,
    clock: WallClock,
    state: Mutex<PoolState>,
}

/// The VM-like workers of every type. Cheap to clone.
#[derive(Clone)]
pub struct VmPool {
    shared: Arc<Shared>,
}

/// A request's claim on one worker: holds its place in the worker's outstanding count until dropped.
pub struct Assignment {
    /// The worker.
    pub instance: InstanceId,
    phase: watch::Receiver<Phase>,
    outstanding: Arc<AtomicU32>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Assignment {
    /// Runs `inputs` on the worker, waiting for it to become ready if it is provisioning.
    pub async fn run(mut self, inputs: Vec<Tensor>) -> VmOutcome {
        let lost = |id: InstanceId| VmOutcome::Lost(format!("VM worker {} went away", id.0));
        loop {
            let phase = self.phase.borrow_and_update().clone();
            match phase {
                Phase::Provisioning => {
                    if self.phase.changed().await.is_err() {
                        return lost(self.instance);
                    }
                }
                Phase::Gone => return lost(self.instance),
                Phase::Serving(batcher) => {
                    let gone = wait_gone(self.phase.clone());
                    return tokio::select! {
                        result = batcher.infer(inputs) => match result {
                            Ok(out) => VmOutcome::Done(out),
                            Err(BatchError::QueueFull { .. }) => VmOutcome::QueueFull,
                            Err(BatchError::Engine(e)) => VmOutcome::Engine(e),
                            Err(BatchError::Stopped { .. }) => lost(self.instance),
                        },
                        () = gone => lost(self.instance),
                    };
                }
            }
        }
    }
}

async fn wait_gone(mut rx: watch::Receiver<Phase>) {
    loop {
        if matches!(*rx.borrow_and_update(), Phase::Gone) {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn lock(m: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmPool {
    /// A pool with no workers; `types` VM types, all batching [`BatchRule::NONE`] until set.
    pub fn new(config: VmPoolConfig, clock: WallClock) -> VmPool {
        let types = config.provision.len();
        let state = PoolState { batching: vec![BatchRule::NONE; types], ..PoolState::default() };
        VmPool { shared: Arc::new(Shared { config, clock, state: Mutex::new(state) }) }
    }

    fn check_type(&self, vm_type: VmTypeId) -> Result<(), String> {
        if (vm_type.0 as usize) < self.shared.config.provision.len() {
            Ok(())
        } else {
            Err(Refusal::UnknownVmType.to_string())
        }
    }

    /// Claims a worker of `vm_type` by the dispatch rule both halves follow (`rules::dispatch_to`): the
    /// least-loaded ready one with room, else a provisioning one with room (the request waits for it), never
    /// one under a spot notice. Refuses with `NoVmCapacity` when the pool has no worker that could take a
    /// request, and `QueueFull` when every one holds `queue_limit` requests.
    pub fn assign(&self, vm_type: VmTypeId, queue_limit: u32) -> Result<Assignment, RejectReason> {
        let st = lock(&self.shared.state);
        // The dispatch rule both halves follow (`policies::rules::dispatch_to`).
        let candidates = st.workers.iter().filter(|(_, w)| w.vm_type == vm_type).map(|(id, w)| DispatchCandidate {
            key: *id,
            state: w.state,
            outstanding: w.outstanding.load(Ordering::Relaxed) as usize,
            noticed: w.interruption_at.is_some(),
        });
        let id = dispatch_to(candidates, queue_limit as usize)?;
        let Some(w) = st.workers.get(&id) else { return Err(RejectReason::NoVmCapacity) };
        w.outstanding.fetch_add(1, Ordering::Relaxed);
        Ok(Assignment { instance: id, phase: w.phase.subscribe(), outstanding: Arc::clone(&w.outstanding) })
    }
}

/// The local default: workers on this machine (see the module documentation).
impl VmProvider for VmPool {
    /// Launches `count` workers of `vm_type`; each loads the model and is ready after its type's delay.
    fn provision(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        self.check_type(vm_type)?;
        if self.shared.config.catalog.vm(vm_type).price_per_h(market).is_none() {
            return Err(Refusal::NotSoldOnMarket.to_string());
        }
        for _ in 0..count {
            let id = {
                let mut st = lock(&self.shared.state);
                let id = InstanceId(st.next_id);
                st.next_id += 1;
                st.launched += 1;
                let (phase, _) = watch::channel(Phase::Provisioning);
                st.workers.insert(
                    id,
                    Worker {
                        vm_type,
                        market,
                        launched_at: self.shared.clock.now(),
                        state: VmState::Provisioning,
                        phase,
                        outstanding: Arc::new(AtomicU32::new(0)),
                        interruption_at: None,
                    },
                );
                id
            };
            tokio::spawn(provision_worker(Arc::clone(&self.shared), id, vm_type));
        }
        Ok(())
    }

    /// Releases one worker by the shared rule: a provisioning one is gone at once, a ready one drains.
    fn release(&self, id: InstanceId) -> Result<(), String> {
        let mut st = lock(&self.shared.state);
        let step = release_step(st.workers.get(&id).map(|w| w.state)).map_err(|r| r.to_string())?;
        match step {
            ReleaseStep::GoneNow => remove(&self.shared, &mut st, id, VmEnd::Released),
            ReleaseStep::Drain => {
                let Some(w) = st.workers.get_mut(&id) else {
                    return Err(Refusal::NoSuchInstance.to_string());
                };
                w.state = VmState::Draining;
                let outstanding = Arc::clone(&w.outstanding);
                drop(st);
                tokio::spawn(drain_worker(Arc::clone(&self.shared), id, outstanding));
            }
        }
        Ok(())
    }

    /// Releases `count` workers of a type and market: provisioning ones first (newest first), then ready
    /// ones with the least work (newest first on ties), as the simulator chooses.
    fn release_vms(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        self.check_type(vm_type)?;
        let victims: Vec<InstanceId> = {
            let st = lock(&self.shared.state);
            let mine = st.workers.iter().filter(|(_, w)| w.vm_type == vm_type && w.market == market);
            release_order(mine.map(|(id, w)| (*id, w.state, w.outstanding.load(Ordering::Relaxed))), count)
        };
        if (victims.len() as u32) < count {
            // Release what there is, and say the rest could not be.
            for id in &victims {
                let _ = self.release(*id);
            }
            return Err(Refusal::FewerInstancesThanAsked.to_string());
        }
        for id in victims {
            self.release(id)?;
        }
        Ok(())
    }

    /// Sets the batching of `vm_type`'s workers that become ready from now on.
    /// Sets the batching of `vm_type`'s workers: running ones from their next decision on (as the simulator
    /// changes running VMs), and those that become ready later.
    fn set_batching(&self, vm_type: VmTypeId, rule: BatchRule) -> Result<(), String> {
        self.check_type(vm_type)?;
        let rule = BatchRule::new(rule.max_batch, rule.max_wait).with_idle_start(rule.idle_start);
        let mut st = lock(&self.shared.state);
        st.batching[vm_type.0 as usize] = rule;
        for w in st.workers.values_mut().filter(|w| w.vm_type == vm_type) {
            if let Some(b) = w.batcher() {
                b.set_rule(rule);
            }
        }
        Ok(())
    }

    /// Delivers a spot interruption notice to worker `id`: it will be taken `notice` (wall clock) from now.
    /// Returns the notice (for the policy's `on_spot_notice`). The worker keeps serving until then.
    fn interrupt(&self, id: InstanceId, notice: Nanos) -> Result<SpotNotice, String> {
        let mut st = lock(&self.shared.state);
        let deadline = self.shared.clock.now().saturating_add(notice);
        let w = st.workers.get_mut(&id).ok_or_else(|| format!("no live instance {}", id.0))?;
        if w.interruption_at.is_some() {
            return Err(format!("instance {} already has an interruption notice", id.0));
        }
        w.interruption_at = Some(deadline);
        let n = SpotNotice { instance: id, vm_type: w.vm_type, deadline };
        st.notices.push(n);
        drop(st);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(shared.clock.instant_at(deadline))).await;
            let mut st = lock(&shared.state);
            if st.workers.contains_key(&id) {
                st.spot_interruptions += 1;
                tracing::info!(instance = id.0, "spot worker taken at its interruption deadline");
                remove(&shared, &mut st, id, VmEnd::Interrupted);
            }
        });
        Ok(n)
    }

    /// Writes the pools, live instances and notices into `view` (whose pools are indexed like the catalog).
    fn fill_view(&self, view: &mut View) {
        let st = lock(&self.shared.state);
        reset_pools(view, &st.batching);
        for (id, w) in &st.workers {
            let (queued, in_service) = w.load();
            push_instance(
                view,
                VmInstanceView {
                    id: *id,
                    vm_type: w.vm_type,
                    market: w.market,
                    state: w.state,
                    launched_at: w.launched_at,
                    queued,
                    in_service,
                    interruption_at: w.interruption_at,
                    models: vec![0],
                },
            );
        }
        view.notices.clone_from(&st.notices);
    }

    /// Workers by state: (provisioning, ready, draining).
    fn state_counts(&self) -> (u32, u32, u32) {
        let st = lock(&self.shared.state);
        let n = |s| st.workers.values().filter(|w| w.state == s).count() as u32;
        (n(VmState::Provisioning), n(VmState::Ready), n(VmState::Draining))
    }

    /// Counters since the pool started.
    fn counters(&self) -> VmCounters {
        let st = lock(&self.shared.state);
        VmCounters { launched: st.launched, spot_interruptions: st.spot_interruptions, load_failures: st.load_failures }
    }

    fn instance_hours(&self) -> (f64, f64) {
        let st = lock(&self.shared.state);
        let now = self.shared.clock.now();
        let mut hours = st.hours;
        for w in st.workers.values() {
            add_hours(&mut hours, &self.shared, w, now);
        }
        hours
    }

    fn cost(&self) -> CostBreakdown {
        let st = lock(&self.shared.state);
        let now = self.shared.clock.now();
        let mut cost = st.billed;
        for w in st.workers.values() {
            cost.add_vm(w.market, worker_charge(&self.shared, w, now, VmEnd::Released));
        }
        cost
    }

    /// Takes every worker away at once (shutdown); requests they hold are answered as lost.
    fn shutdown(&self) {
        let mut st = lock(&self.shared.state);
        let ids: Vec<InstanceId> = st.workers.keys().copied().collect();
        for id in ids {
            remove(&self.shared, &mut st, id, VmEnd::Released);
        }
    }

    fn dispatch(
        &self,
        vm_type: VmTypeId,
        queue_limit: u32,
        inputs: Vec<Tensor>,
    ) -> BoxFuture<'_, Result<(InstanceId, VmOutcome), RejectReason>> {
        // The claim is taken when the future is first polled, which the controller does at once.
        Box::pin(async move {
            let assignment = self.assign(vm_type, queue_limit)?;
            let instance = assignment.instance;
            Ok((instance, assignment.run(inputs).await))
        })
    }
}

/// Removes a worker: it is gone, billed (who ended it decides a spot bill), and whoever waits on it hears so.
fn remove(shared: &Shared, st: &mut PoolState, id: InstanceId, end: VmEnd) {
    if let Some(w) = st.workers.remove(&id) {
        w.phase.send_replace(Phase::Gone);
        let now = shared.clock.now();
        st.billed.add_vm(w.market, worker_charge(shared, &w, now, end));
        add_hours(&mut st.hours, shared, &w, now);
    }
    st.notices.retain(|n| n.instance != id);
}

/// Adds worker `w`'s life up to `now`, scaled like time, to the (on demand, spot) hours.
fn add_hours(hours: &mut (f64, f64), shared: &Shared, w: &Worker, now: Nanos) {
    let h = shared.config.time_scale.to_model(now.saturating_sub(w.launched_at)).as_secs_f64() / 3600.0;
    match w.market {
        Market::OnDemand => hours.0 += h,
        Market::Spot => hours.1 += h,
    }
}

/// What worker `w` costs if it ends at `now` by `end`: its wall-clock life scaled like time, at its type's
/// price in its market, by the simulator's billing rules.
fn worker_charge(shared: &Shared, w: &Worker, now: Nanos, end: VmEnd) -> f64 {
    let price = shared.config.catalog.vm_types.get(w.vm_type.0 as usize).and_then(|t| t.price_per_h(w.market));
    let ran = shared.config.time_scale.to_model(now.saturating_sub(w.launched_at));
    billing::vm_charge(price.unwrap_or(0.0), w.market, ran, end)
}

async fn provision_worker(shared: Arc<Shared>, id: InstanceId, vm_type: VmTypeId) {
    let started = tokio::time::Instant::now();
    let delay = shared.config.provision[vm_type.0 as usize];
    let engine = shared.config.engine;
    let path = shared.config.model_path.clone();
    let loaded = tokio::task::spawn_blocking(move || engine.load(&path)).await;
    // The model load is part of provisioning: wait out whatever the delay has left.
    tokio::time::sleep_until(started + delay).await;
    let mut st = lock(&shared.state);
    if !st.workers.contains_key(&id) {
        return; // Released while provisioning.
    }
    match loaded {
        Ok(Ok(session)) => {
            let rule = st.batching[vm_type.0 as usize];
            let config = BatcherConfig { rule, queue_capacity: shared.config.queue_capacity };
            let batcher = Batcher::spawn(session, config, Arc::clone(&shared.config.observer));
            if let Some(w) = st.workers.get_mut(&id) {
                w.state = VmState::Ready;
                w.phase.send_replace(Phase::Serving(batcher));
                tracing::info!(
                    instance = id.0,
                    vm_type = vm_type.0,
                    after_ms = started.elapsed().as_millis() as u64,
                    "VM worker ready"
                );
            }
        }
        Ok(Err(e)) => {
            tracing::error!(instance = id.0, error = %e, "VM worker could not load the model");
            st.load_failures += 1;
            remove(&shared, &mut st, id, VmEnd::Released);
        }
        Err(e) => {
            tracing::error!(instance = id.0, error = %e, "VM worker's model load panicked");
            st.load_failures += 1;
            remove(&shared, &mut st, id, VmEnd::Released);
        }
    }
}

async fn drain_worker(shared: Arc<Shared>, id: InstanceId, outstanding: Arc<AtomicU32>) {
    // The batcher has no completion signal; poll its outstanding count (cheap, and only while draining).
    while outstanding.load(Ordering::Relaxed) > 0 {
        if !lock(&shared.state).workers.contains_key(&id) {
            return; // Taken meanwhile (an interruption deadline).
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    remove(&shared, &mut lock(&shared.state), id, VmEnd::Released);
}
