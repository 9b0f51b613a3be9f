//! The controller: the live executor of a policy, on the wall clock.
//!
//! Every `control_interval × time_scale` it builds the [`View`] (pools by state and market with queue
//! depths, live instances, function sandboxes by state, the arrival window rolled on the wall clock,
//! outcomes since the previous tick, spot notices, the catalog), calls the policy's `tick` (`start` once
//! at start-up), and executes the actions in order:
//!
//! | action | live operation |
//! |---|---|
//! | `Provision` | start workers ([`VmProvider::provision`]); locally: load the model, wait out the provisioning delay, then serve |
//! | `Release` / `ReleaseVms` | a provisioning worker is gone at once (its waiting requests re-routed); a ready one drains |
//! | `ConfigureFunctions` | the function platform's memory, keep-alive and pre-warm ([`FunctionProvider::configure`]) |
//! | `SetBatching` | the batching of the pool's workers that become ready from then on |
//!
//! The workers sit behind [`VmProvider`] and [`FunctionProvider`]: the local defaults are [`VmPool`] and
//! [`Functions`]; with the `aws` feature and a `[cluster.aws]` table, EC2 instances and a deployed Lambda
//! function (`super::aws`).
//!
//! An action that cannot be carried out is counted, with its reason, as the simulator counts it. Every
//! request is routed by `policy.route`: `Vm(type)` to the least-loaded ready worker of the pool (a
//! provisioning one only when no ready one has room: `rules::dispatch_to`), `Functions` to a sandbox,
//! `Reject(reason)` refused. A request whose worker goes away, or whose sandbox fails, is routed again (`attempt` + 1); every request ends
//! completed, rejected with a reason or dropped with a reason, in a [`Ledger`].
//!
//! The policy sits behind a mutex and is never called concurrently, as the `Policy` trait requires; the
//! lock is never held across an await.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hyscale_policies::{
    Action, ArrivalWindow, Catalog, Clock, DropReason, InstanceId, Ledger, Market, Nanos, Policy, PolicyError, Pool,
    RecentStats, RejectReason, RequestInfo, Route, Slo, TimeScale, View,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::ClusterConfig;
use super::functions::Functions;
use super::provider::{FnFailure, FunctionProvider, VmOutcome, VmProvider};
use super::vm::{VmPool, VmPoolConfig};
use crate::WallClock;
use crate::batcher::BatchObserver;
use crate::engine::{Engine, EngineError, ModelMetadata, Tensor};
use crate::lambda::{FunctionConfig, MODEL_PATH_ENV};
use crate::server::metrics::{InstanceLabel, Metrics};

/// Routings of one request at most (the first and the re-routings after lost workers or failed sandboxes).
const MAX_ATTEMPTS: u32 = 4;

/// What the controller needs from outside the backend: the catalog and SLO, loaded and checked by the
/// caller (the `hyscale` binary reads them with the simulator's scenario loader).
pub struct ClusterSetup {
    /// The cluster's configuration.
    pub config: ClusterConfig,
    /// The catalog, as the simulator would build it for the model's profile.
    pub catalog: Arc<Catalog>,
    /// The SLO.
    pub slo: Slo,
    /// The model file.
    pub model_path: PathBuf,
    /// The model's metadata.
    pub metadata: ModelMetadata,
    /// Most requests one worker queues.
    pub queue_capacity: usize,
    /// The engine (already initialised by the server).
    pub engine: &'static Engine,
    /// The configuration file's folder (relative paths).
    pub base: PathBuf,
}

/// Why a request routed by the controller got no outputs.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Refused at admission (by the policy, or for lack of capacity).
    #[error("rejected: {}", .0.key())]
    Rejected(RejectReason),
    /// Given up after admission.
    #[error("dropped: {key}: {why}", key = .0.key(), why = .1)]
    Dropped(DropReason, String),
    /// The model failed on the request (bad input that passed the protocol checks).
    #[error(transparent)]
    Engine(EngineError),
}

/// Labels of the controller's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    /// The route, outcome or action result.
    pub key: String,
}

/// The controller's Prometheus series, registered before the registry is shared.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// Routing decisions: `vm`, `functions`, `reject`.
    pub routes: Family<KeyLabel, Counter>,
    /// Request outcomes: `completed`, `rejected:REASON`, `dropped:REASON`.
    pub outcomes: Family<KeyLabel, Counter>,
    /// Actions: `applied`, or the reason it was refused.
    pub actions: Family<KeyLabel, Counter>,
}

impl ClusterMetrics {
    /// Registers the series under `hyscale_cluster_*`.
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        registry.register("cluster_routes", "Routing decisions of the policy", m.routes.clone());
        registry.register("cluster_outcomes", "Outcomes of requests served by the cluster", m.outcomes.clone());
        registry.register("cluster_actions", "Policy actions applied or refused (by reason)", m.actions.clone());
        m
    }

    fn inc(family: &Family<KeyLabel, Counter>, key: impl Into<String>) {
        family.get_or_create(&KeyLabel { key: key.into() }).inc();
    }
}

/// A summary of the controller for `GET /v2/cluster/{model}` and tests.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The policy.
    pub policy: String,
    /// Wall-clock seconds since the controller started.
    pub now_s: f64,
    /// Arrivals, completed, rejected, dropped.
    pub arrivals: u64,
    /// Completed requests.
    pub completed: u64,
    /// Rejected requests.
    pub rejected: u64,
    /// Dropped requests.
    pub dropped: u64,
    /// Requests routed to VM workers, by attempt (first routings and re-routings alike).
    pub routed_vm: u64,
    /// Requests routed to functions.
    pub routed_functions: u64,
    /// Requests refused by the router.
    pub routed_reject: u64,
    /// Re-routings after a lost worker or a failed sandbox.
    pub rerouted: u64,
    /// Completed requests served by a VM worker.
    pub completed_vm: u64,
    /// Completed requests served by a function.
    pub completed_functions: u64,
    /// Actions applied.
    pub actions_applied: u64,
    /// Actions refused, by reason.
    pub actions_refused: BTreeMap<String, u64>,
    /// VM workers: provisioning, ready, draining.
    pub vms: [u32; 3],
    /// Ready VM workers on the spot market (among `vms[1]`).
    pub vms_ready_spot: u32,
    /// VM workers launched so far.
    pub vms_launched: u64,
    /// Spot interruptions carried out.
    pub spot_interruptions: u64,
    /// Function sandboxes: cold-starting, idle, busy.
    pub functions: [u32; 3],
    /// Function cold starts so far.
    pub function_cold_starts: u64,
    /// Function invocations that reached a sandbox so far.
    pub function_invocations: u64,
    /// Their durations summed (event delivered to answer: the time each held its sandbox), ms.
    pub function_invocation_ms_total: f64,
    /// VM instance-hours on demand so far (lives scaled like time, as billed).
    pub vm_hours_on_demand: f64,
    /// VM instance-hours on spot so far.
    pub vm_hours_spot: f64,
    /// The live instances: (id, type name, state).
    pub instances: Vec<(u64, String, String)>,
    /// What the cluster has cost so far, by `policies::billing` at the catalog's prices (VM lives scaled like
    /// time; workers still alive counted as if released now; pre-warmed capacity by the simulator's meter).
    pub cost: hyscale_policies::CostBreakdown,
}

struct Stats {
    ledger: Ledger,
    window: ArrivalWindow,
    recent: RecentStats,
    routed: [u64; 3],
    completed_by: [u64; 2],
    rerouted: u64,
    applied: u64,
    refused: BTreeMap<String, u64>,
    cold_starts_exported: u64,
}

/// The controller of one model's cluster. Cheap to share (`Arc`).
pub struct Controller {
    clock: WallClock,
    /// The policy runs on model time: the view is converted with it, the durations it asks for back.
    scale: TimeScale,
    catalog: Arc<Catalog>,
    slo: Slo,
    policy: Mutex<Box<dyn Policy>>,
    policy_name: String,
    vms: Arc<dyn VmProvider>,
    functions: Arc<dyn FunctionProvider>,
    metadata: ModelMetadata,
    stats: Mutex<Stats>,
    queue_limit: u32,
    /// `batch_idle_start`: idle start added to every batch rule the policy sets.
    batch_idle_start: bool,
    spot_notice: Nanos,
    tick_every: Duration,
    metrics: Arc<Metrics>,
    cluster_metrics: ClusterMetrics,
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration value is unusable.
    #[error("[cluster]: {0}")]
    Config(String),
    /// The policy's configuration is unusable.
    #[error("[cluster] policy: {0}")]
    Policy(#[from] PolicyError),
}

impl Controller {
    /// Builds the pool, the function service and the policy, runs the policy's `start`, and starts the
    /// control loop on the current tokio runtime.
    pub async fn start(
        setup: ClusterSetup,
        metrics: Arc<Metrics>,
        cluster_metrics: ClusterMetrics,
        observer: Arc<dyn BatchObserver>,
    ) -> Result<Arc<Controller>, ClusterError> {
        let c = &setup.config;
        let bad = |m: String| ClusterError::Config(m);
        let scale = TimeScale::new(c.time_scale)
            .ok_or_else(|| bad(format!("time_scale must be positive, got {}", c.time_scale)))?;
        if !(c.arrival_window_s.is_finite() && c.arrival_window_s > 0.0) || c.arrival_history == 0 {
            return Err(bad("arrival_window_s must be positive and arrival_history at least 1".into()));
        }
        // Provisioning delays in force (wall clock), written into the catalog the policy sees in model time.
        let mut catalog = (*setup.catalog).clone();
        for name in c.vm_types.keys() {
            catalog.vm_id(name).map_err(|e| bad(format!("vm_types: {e}")))?;
        }
        let mut provision = Vec::new();
        for t in &mut catalog.vm_types {
            let delay = match c.vm_types.get(&t.name).and_then(|o| o.provision_s) {
                Some(s) if s.is_finite() && s >= 0.0 => Nanos::from_secs_f64(s),
                Some(s) => return Err(bad(format!("vm_types.\"{}\".provision_s must be >= 0, got {s}", t.name))),
                None => scale.to_wall(t.provision_mean),
            };
            t.provision_mean = scale.to_model(delay);
            provision.push(Duration::from_nanos(delay.0));
        }
        let catalog = Arc::new(catalog);
        let policy = c.policies.build(&c.policy, &catalog)?;
        let policy_name = policy.name().to_string();
        let clock = WallClock::start();
        let (vms, functions) = match Self::aws_providers(&setup, &catalog, clock).await? {
            Some(providers) => providers,
            None => Self::local_providers(&setup, &catalog, clock, scale, provision, observer).await?,
        };
        let interval = scale.to_wall(Nanos::from_secs_f64(c.arrival_window_s));
        let window = ArrivalWindow::new(interval.max(Nanos(1)), c.arrival_history);
        let tick = scale.to_wall(policy.control_interval()).as_secs_f64();
        let controller = Arc::new(Controller {
            clock,
            scale,
            slo: setup.slo,
            policy: Mutex::new(policy),
            policy_name,
            vms,
            functions,
            metadata: setup.metadata,
            stats: Mutex::new(Stats {
                ledger: Ledger::new(setup.slo),
                window,
                recent: RecentStats::default(),
                routed: [0; 3],
                completed_by: [0; 2],
                rerouted: 0,
                applied: 0,
                refused: BTreeMap::new(),
                cold_starts_exported: 0,
            }),
            queue_limit: u32::try_from(setup.queue_capacity).unwrap_or(u32::MAX).max(1),
            batch_idle_start: c.batch_idle_start,
            spot_notice: scale.to_wall(Nanos::from_secs_f64(c.spot_notice_s)),
            tick_every: Duration::from_secs_f64(tick.max(0.01)),
            metrics,
            cluster_metrics,
            catalog,
        });
        let mut actions = Vec::new();
        {
            let view = controller.view();
            controller.lock_policy().start(&view, &mut actions);
        }
        controller.apply(actions).await;
        tracing::info!(policy = %controller.policy_name, tick_s = controller.tick_every.as_secs_f64(), "cluster controller started");
        tokio::spawn(control_loop(Arc::downgrade(&controller)));
        Ok(controller)
    }

    /// The local defaults: [`VmPool`] workers and the local Lambda service running `hyscale-fn`.
    async fn local_providers(
        setup: &ClusterSetup,
        catalog: &Arc<Catalog>,
        clock: WallClock,
        scale: TimeScale,
        provision: Vec<Duration>,
        observer: Arc<dyn BatchObserver>,
    ) -> Result<(Arc<dyn VmProvider>, Arc<dyn FunctionProvider>), ClusterError> {
        let c = &setup.config;
        let bad = |m: String| ClusterError::Config(m);
        let vms = VmPool::new(
            VmPoolConfig {
                engine: setup.engine,
                model_path: setup.model_path.clone(),
                provision,
                queue_capacity: setup.queue_capacity,
                catalog: Arc::clone(catalog),
                time_scale: scale,
                observer,
            },
            clock,
        );
        let binary = match &c.function_binary {
            Some(p) => setup.base.join(p),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("hyscale-fn")))
                .ok_or_else(|| bad("cannot find the running executable's folder for hyscale-fn".into()))?,
        };
        let mut fc = FunctionConfig::new(
            format!("{}-fn", catalog.model.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-")),
            binary,
        )
        .with_env(MODEL_PATH_ENV, setup.model_path.to_string_lossy().into_owned())
        .with_env("HYSCALE_ENGINE", setup.engine.name());
        fc.max_sandboxes = c.function_max_sandboxes.min(catalog.functions.regional_concurrency).max(1);
        fc.cold_start_delay = Nanos::from_millis_f64(c.function_cold_start_delay_ms);
        fc.timeout = Nanos::from_secs_f64(c.function_timeout_s);
        fc.bill_init = catalog.functions.bill_init;
        // The catalog's keep-alive is a model duration; the sandboxes live it on the wall clock.
        let mut platform = catalog.functions.clone();
        platform.default_keep_alive = scale.to_wall(platform.default_keep_alive);
        let functions = Functions::start(fc, platform).await.map_err(|e| bad(format!("functions: {e}")))?;
        Ok((Arc::new(vms), Arc::new(functions)))
    }

    /// The AWS adapters, when the configuration has a `[cluster.aws]` table (the `aws` feature).
    #[cfg(feature = "aws")]
    async fn aws_providers(
        setup: &ClusterSetup,
        catalog: &Arc<Catalog>,
        clock: WallClock,
    ) -> Result<Option<(Arc<dyn VmProvider>, Arc<dyn FunctionProvider>)>, ClusterError> {
        use super::aws::{Ec2Vms, VmProviderKind};
        use super::aws_asg::AsgVms;
        let Some(aws) = &setup.config.aws else { return Ok(None) };
        let error = |e: String| ClusterError::Config(format!("aws: {e}"));
        let (sdk, vm_setup, functions) =
            super::aws::setup(&setup.config, aws, catalog, &setup.metadata).await.map_err(error)?;
        let vms: Arc<dyn VmProvider> = match aws.vm_provider {
            VmProviderKind::Ec2 => Arc::new(Ec2Vms::new(vm_setup, catalog, clock).map_err(error)?),
            VmProviderKind::Asg => Arc::new(AsgVms::new(&sdk, vm_setup, catalog, clock).map_err(error)?),
        };
        Ok(Some((vms, functions)))
    }

    /// Without the `aws` feature there are only the local defaults.
    #[cfg(not(feature = "aws"))]
    async fn aws_providers(
        _setup: &ClusterSetup,
        _catalog: &Arc<Catalog>,
        _clock: WallClock,
    ) -> Result<Option<(Arc<dyn VmProvider>, Arc<dyn FunctionProvider>)>, ClusterError> {
        Ok(None)
    }

    fn lock_policy(&self) -> MutexGuard<'_, Box<dyn Policy>> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The view a policy sees now.
    pub fn view(&self) -> View {
        self.view_with(false)
    }

    /// The view; with `take_recent`, the outcomes since the last tick are taken out in the same lock that
    /// reads them, so that no arrival or outcome falls between reading and resetting them.
    fn view_with(&self, take_recent: bool) -> View {
        let (window, recent) = {
            let mut s = self.lock_stats();
            let recent = if take_recent { std::mem::take(&mut s.recent) } else { s.recent };
            (s.window.clone(), recent)
        };
        let mut view = View::new(self.catalog.clone(), self.slo, window, self.functions.settings());
        view.now = self.clock.now();
        for p in &mut view.pools {
            p.queue_limit = self.queue_limit;
        }
        self.vms.fill_view(&mut view);
        view.functions = self.functions.view();
        view.recent = recent;
        view.to_model_time(self.scale);
        view
    }

    /// Executes actions in order, counting the applied and the refused (with their reasons).
    async fn apply(&self, actions: Vec<Action>) {
        for a in actions {
            let result = match a {
                Action::Provision { vm_type, market, count } => self.vms.provision(vm_type, market, count),
                Action::Release { instance } => self.vms.release(instance),
                Action::ReleaseVms { vm_type, market, count } => self.vms.release_vms(vm_type, market, count),
                Action::ConfigureFunctions { memory_mb, concurrency, keep_alive, prewarm } => {
                    let keep_alive = keep_alive.map(|k| self.scale.to_wall(k));
                    self.functions.configure(memory_mb, concurrency, keep_alive, prewarm).await
                }
                Action::SetBatching { pool: Pool::Vm(t), rule } => {
                    self.vms.set_batching(t, rule.with_platform_idle_start(self.batch_idle_start))
                }
                Action::SetBatching { pool: Pool::Functions, rule } => {
                    self.functions.set_batching(rule.with_platform_idle_start(self.batch_idle_start));
                    Ok(())
                }
            };
            let mut s = self.lock_stats();
            match result {
                Ok(()) => {
                    s.applied += 1;
                    ClusterMetrics::inc(&self.cluster_metrics.actions, "applied");
                }
                Err(reason) => {
                    tracing::debug!(?a, %reason, "action refused");
                    ClusterMetrics::inc(&self.cluster_metrics.actions, reason.clone());
                    *s.refused.entry(reason).or_insert(0) += 1;
                }
            }
        }
    }

    async fn tick(&self) {
        let view = self.view_with(true);
        let mut actions = Vec::new();
        self.lock_policy().tick(&view, &mut actions);
        self.apply(actions).await;
        self.functions.top_up_prewarm();
    }

    /// Delivers a spot interruption notice to worker `instance` (taken after the configured, scaled notice,
    /// or `notice` when given), tells the policy (`on_spot_notice`, with the notice in the view) and executes
    /// what it answers. Requests the worker still holds at the deadline are routed again.
    pub async fn interrupt(&self, instance: InstanceId, notice: Option<Nanos>) -> Result<(), String> {
        let view = self.view();
        if !view.vms.iter().any(|v| v.id == instance && v.market == Market::Spot) {
            return Err(format!("instance {} is not a live spot worker", instance.0));
        }
        let mut n = self.vms.interrupt(instance, notice.unwrap_or(self.spot_notice))?;
        n.deadline = self.scale.to_model(n.deadline);
        let view = self.view();
        let mut actions = Vec::new();
        self.lock_policy().on_spot_notice(&n, &view, &mut actions);
        self.apply(actions).await;
        Ok(())
    }

    fn settle(&self, arrival: Nanos, outcome: &Result<(Vec<Tensor>, usize), LiveError>) {
        let now = self.clock.now();
        let mut s = self.lock_stats();
        let key = match outcome {
            Ok((_, via)) => {
                let latency = now.saturating_sub(arrival);
                let fulfilled = s.ledger.complete(latency);
                s.recent.completed += 1;
                s.recent.fulfilled += u64::from(fulfilled);
                s.recent.latency_ms_max = s.recent.latency_ms_max.max(latency.as_millis_f64());
                s.completed_by[*via] += 1;
                "completed".to_string()
            }
            Err(LiveError::Rejected(r)) => {
                s.ledger.reject(*r);
                s.recent.failed += 1;
                format!("rejected:{}", r.key())
            }
            Err(LiveError::Dropped(d, _)) => {
                s.ledger.drop_request(*d);
                s.recent.failed += 1;
                format!("dropped:{}", d.key())
            }
            Err(LiveError::Engine(_)) => {
                s.ledger.drop_request(DropReason::WorkerFailed);
                s.recent.failed += 1;
                "dropped:worker_failed".to_string()
            }
        };
        ClusterMetrics::inc(&self.cluster_metrics.outcomes, key);
    }

    /// Serves one request (inputs checked against the model's metadata): routes it by the policy and runs
    /// it on a worker or a sandbox. A request abandoned by its caller (a server timeout) counts as dropped,
    /// `timed_out`.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, LiveError> {
        let arrival = self.clock.now();
        {
            let mut s = self.lock_stats();
            s.ledger.arrive();
            s.window.current += 1;
            s.recent.arrivals += 1;
        }
        let mut guard = Unsettled { controller: self, arrival, armed: true };
        let outcome = self.route_and_run(arrival, inputs).await;
        guard.armed = false;
        self.settle(arrival, &outcome);
        outcome.map(|(out, _)| out)
    }

    async fn route_and_run(&self, arrival: Nanos, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), LiveError> {
        let mut attempt = 0;
        let mut last_failure = String::new();
        loop {
            let first = attempt == 0;
            let refuse = move |r: RejectReason, why: &str| {
                if first {
                    LiveError::Rejected(r)
                } else {
                    LiveError::Dropped(DropReason::RerouteFailed(r), why.to_string())
                }
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(LiveError::Dropped(
                    DropReason::WorkerFailed,
                    format!("gave up after {attempt} routings: {last_failure}"),
                ));
            }
            let view = self.view();
            let info = RequestInfo { arrival: self.scale.to_model(arrival), model: 0, attempt };
            let route = self.lock_policy().route(&info, &view);
            let idx = match route {
                Route::Vm(_) => 0,
                Route::Functions => 1,
                Route::Reject(_) => 2,
            };
            self.lock_stats().routed[idx] += 1;
            ClusterMetrics::inc(&self.cluster_metrics.routes, ["vm", "functions", "reject"][idx]);
            if attempt > 0 {
                self.lock_stats().rerouted += 1;
            }
            attempt += 1;
            match route {
                Route::Reject(r) => return Err(refuse(r, "the policy refused the re-routing")),
                Route::Vm(t) => match self.vms.dispatch(t, self.queue_limit, inputs.clone()).await {
                    Err(r) => return Err(refuse(r, "no VM worker to re-route to")),
                    Ok((_, VmOutcome::Done(out))) => return Ok((out, 0)),
                    Ok((_, VmOutcome::QueueFull)) => {
                        return Err(refuse(RejectReason::QueueFull, "worker queue full"));
                    }
                    Ok((_, VmOutcome::Engine(e))) => return Err(LiveError::Engine(e)),
                    Ok((instance, VmOutcome::Failed(why))) => {
                        return Err(LiveError::Dropped(
                            DropReason::WorkerFailed,
                            format!("VM worker {}: {why}", instance.0),
                        ));
                    }
                    Ok((_, VmOutcome::Lost(why))) => last_failure = why,
                },
                Route::Functions => match self.functions.invoke(&self.metadata, &inputs).await {
                    Ok(out) => return Ok((out, 1)),
                    Err(FnFailure::Throttled) => {
                        return Err(refuse(RejectReason::Throttled, "functions throttled"));
                    }
                    Err(FnFailure::Failed(why)) => {
                        tracing::warn!(%why, attempt, "function invocation failed; routing again");
                        last_failure = why;
                    }
                },
            }
        }
    }

    /// Brings the server's instance gauges and cold-start counter up to date.
    pub fn export_metrics(&self) {
        let (p, r, d) = self.vms.state_counts();
        let f = self.functions.view();
        let set = |kind: &str, state: &str, v: u32| {
            self.metrics
                .instances
                .get_or_create(&InstanceLabel { kind: kind.into(), state: state.into() })
                .set(i64::from(v));
        };
        set("vm", "provisioning", p);
        set("vm", "ready", r);
        set("vm", "draining", d);
        set("function", "cold_starting", f.cold_starting);
        set("function", "idle", f.idle_warm);
        set("function", "busy", f.busy);
        let mut s = self.lock_stats();
        if f.cold_starts_total > s.cold_starts_exported {
            self.metrics.cold_starts.inc_by(f.cold_starts_total - s.cold_starts_exported);
            s.cold_starts_exported = f.cold_starts_total;
        }
    }

    /// A summary of the controller now.
    pub fn status(&self) -> Status {
        let view = self.view();
        let c = self.vms.counters();
        let (p, r, d) = self.vms.state_counts();
        let (vm_hours_on_demand, vm_hours_spot) = self.vms.instance_hours();
        let (function_invocations, function_invocation_ms_total) = self.functions.invocation_time();
        let s = self.lock_stats();
        Status {
            function_invocations,
            function_invocation_ms_total,
            vm_hours_on_demand,
            vm_hours_spot,
            policy: self.policy_name.clone(),
            now_s: view.now.as_secs_f64(),
            arrivals: s.ledger.arrivals(),
            completed: s.ledger.completed(),
            rejected: s.ledger.rejected(),
            dropped: s.ledger.dropped(),
            routed_vm: s.routed[0],
            routed_functions: s.routed[1],
            routed_reject: s.routed[2],
            rerouted: s.rerouted,
            completed_vm: s.completed_by[0],
            completed_functions: s.completed_by[1],
            actions_applied: s.applied,
            actions_refused: s.refused.clone(),
            vms: [p, r, d],
            vms_ready_spot: view
                .vms
                .iter()
                .filter(|v| v.market == Market::Spot && v.state == hyscale_policies::VmState::Ready)
                .count() as u32,
            vms_launched: c.launched,
            spot_interruptions: c.spot_interruptions,
            functions: [view.functions.cold_starting, view.functions.idle_warm, view.functions.busy],
            function_cold_starts: view.functions.cold_starts_total,
            cost: {
                let mut cost = self.vms.cost();
                let f = self.functions.cost();
                cost.function_compute += f.function_compute;
                cost.function_requests += f.function_requests;
                cost
            },
            instances: view
                .vms
                .iter()
                .map(|v| (v.id.0, self.catalog.vm(v.vm_type).name.clone(), format!("{:?}", v.state).to_lowercase()))
                .collect(),
        }
    }

    /// Stops every worker and sandbox.
    pub fn shutdown(&self) {
        self.vms.shutdown();
        self.functions.shutdown();
    }
}

/// Counts a request whose future was dropped before it settled (the server's request timeout) as dropped.
struct Unsettled<'a> {
    controller: &'a Controller,
    arrival: Nanos,
    armed: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.armed {
            let outcome = Err(LiveError::Dropped(DropReason::TimedOut, "abandoned by the caller".into()));
            self.controller.settle(self.arrival, &outcome);
        }
    }
}

/// Ticks the policy and rolls the arrival window on the wall clock until the controller is dropped.
async fn control_loop(controller: Weak<Controller>) {
    let Some(c) = controller.upgrade() else { return };
    let tick_every = c.tick_every;
    let roll_every = Duration::from_nanos(c.lock_stats().window.interval.0);
    drop(c);
    let start = tokio::time::Instant::now();
    let mut next_tick = start + tick_every;
    let mut next_roll = start + roll_every;
    loop {
        tokio::time::sleep_until(next_tick.min(next_roll)).await;
        let Some(c) = controller.upgrade() else { return };
        let now = tokio::time::Instant::now();
        if now >= next_roll {
            c.lock_stats().window.roll();
            next_roll += roll_every;
        }
        if now >= next_tick {
            c.tick().await;
            next_tick += tick_every;
        }
        c.export_metrics();
    }
}
