//! The function platform as the controller drives it: the local Lambda service ([`FunctionService`])
//! running `hyscale-fn` sandboxes, with the settings a policy controls.
//!
//! How `ConfigureFunctions` maps onto the service, whose configuration is fixed when it starts:
//! - **memory**, **concurrency** and **keep-alive**: a new service starts with the new configuration and
//!   takes every new request; the old one is shut down (its idle sandboxes are killed now, its busy ones
//!   finish their invocations first), as when a new function version is published (the simulator retires
//!   its stale instances the same way). Cold starts and throttles of retired services stay in the totals.
//! - **prewarm**: the service starts sandboxes until that many are alive; the controller tops them up on
//!   every tick, since the service has no provisioned-concurrency pinning and keep-alive expiry would
//!   otherwise retire them.
//! - **concurrency**: each sandbox runs up to that many invocations at once from its one loaded model
//!   (`AWS_LAMBDA_MAX_CONCURRENCY`, as Lambda Managed Instances; see [`crate::lambda`]).
//! - **batching** (`SetBatching` on the function pool): requests for the functions wait by the shared rule
//!   (`BatchRule::decide`, the simulator's) until a batch fills or its oldest has waited `max_wait`, then run
//!   as one invocation whose inputs are the requests' rows stacked (one request fee, one billed duration, as
//!   the simulator bills a batch); the outputs are split back by rows. No separate task forms batches: a
//!   waiting request whose batch is due starts it. Models without a dynamic batch dimension run one request
//!   per invocation.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyscale_policies::billing::{self, CostBreakdown};
use hyscale_policies::{BatchDecision, Clock, FunctionPlatform, FunctionSettings, FunctionView, Nanos};

pub use super::provider::FnFailure;
use super::provider::{BoxFuture, FunctionProvider};
use crate::WallClock;
use crate::engine::{BatchDim, ModelMetadata, Tensor};
use crate::lambda::payload::{self, InferEvent, InferResult};
use crate::lambda::{FunctionConfig, FunctionService, FunctionStats, LambdaError};

struct State {
    service: FunctionService,
    /// Requests waiting for a batch (only while the function pool batches).
    pending: std::collections::VecDeque<Pending>,
    /// Batches running, and since when none has (for the batch rule's idle start: a request that finds the
    /// pool running nothing starts at once).
    running: u32,
    free_since: Nanos,
    settings: FunctionSettings,
    /// Services replaced by a configuration change, kept until their sandboxes are gone (for the counts).
    retired: Vec<FunctionService>,
    /// The totals of retired services already forgotten (all their sandboxes gone).
    forgotten: FunctionStats,
    /// What the invocations cost, by `policies::billing`.
    billed: CostBreakdown,
    /// Pre-warmed capacity billed so far, by the simulator's meter.
    prewarm_meter: billing::ProvisionedMeter,
}

/// The function platform of one model.
pub struct Functions {
    base: FunctionConfig,
    platform: FunctionPlatform,
    /// Since the platform started: the clock its pre-warmed capacity is billed by.
    clock: WallClock,
    state: Mutex<State>,
}

impl State {
    /// The stats of every service, the current one and the retired ones, together; retired services whose
    /// sandboxes are all gone are forgotten, their totals kept.
    fn stats(&mut self) -> FunctionStats {
        let mut forgotten = self.forgotten;
        self.retired.retain(|s| {
            let stats = s.stats();
            let gone = stats.sandboxes() == 0 && stats.in_flight == 0;
            if gone {
                forgotten.add(&stats);
            }
            !gone
        });
        self.forgotten = forgotten;
        let mut all = forgotten;
        for s in self.retired.iter().chain(std::iter::once(&self.service)) {
            all.add(&s.stats());
        }
        all
    }
}

/// A request waiting for a batch of the function pool.
struct Pending {
    inputs: Vec<Tensor>,
    enqueued: Nanos,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Tensor>, FnFailure>>,
}

impl Functions {
    /// Runs the rows of `inputs` (one request, or a batch stacked by rows) as one invocation and bills it.
    async fn invoke_batch(&self, metadata: &ModelMetadata, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, FnFailure> {
        let body = encode_event(metadata, &inputs).map_err(FnFailure::Failed)?;
        let service = self.lock().service.clone();
        let outcome = match service.invoke(body).await {
            Ok(outcome) => outcome,
            Err(LambdaError::Throttled { .. }) => return Err(FnFailure::Throttled),
            Err(e) => return Err(FnFailure::Failed(e.to_string())),
        };
        {
            // Billed as the simulator bills: execution (and a cold start's init, when the platform bills
            // it) at the configured memory, rounded by the platform's granularity, at the provisioned
            // duration price on a pre-warmed sandbox, plus the request fee.
            let p = &self.platform;
            let init = if p.bill_init && outcome.cold { outcome.init_duration } else { Nanos::ZERO };
            let ran = outcome.duration + init;
            let charge = billing::function_compute_charge_on(p, outcome.memory_mb, ran, outcome.provisioned);
            let mut st = self.lock();
            st.billed.function_compute += charge;
            st.billed.function_requests += p.price_per_request;
        }
        let bytes = outcome.result.map_err(|e| FnFailure::Failed(e.to_string()))?;
        let result: InferResult =
            serde_json::from_slice(&bytes).map_err(|e| FnFailure::Failed(format!("function answer: {e}")))?;
        decode_outputs(metadata, &result.outputs).map_err(FnFailure::Failed)
    }

    /// Queues a request for a batch and waits for its answer; whichever waiting request finds a batch due
    /// (by the shared rule) takes it from the queue and runs it.
    async fn batched(
        &self,
        metadata: &ModelMetadata,
        rule: hyscale_policies::BatchRule,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, FnFailure> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.lock().pending.push_back(Pending { inputs, enqueued: self.clock.now(), reply });
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let (decision, batch) = {
                let mut st = self.lock();
                let oldest = st.pending.front().map_or(Nanos::ZERO, |p| p.enqueued);
                let idle_since = (st.running == 0).then_some(st.free_since);
                match rule.decide_at(st.pending.len(), oldest, self.clock.now(), idle_since) {
                    BatchDecision::Start(n) => {
                        let n = (n as usize).min(st.pending.len());
                        st.running += 1;
                        (None, st.pending.drain(..n).collect::<Vec<_>>())
                    }
                    BatchDecision::WaitUntil(t) => (Some(t), Vec::new()),
                    // Nothing waits: this request was taken into a batch; its answer is on its way.
                    BatchDecision::Idle => (None, Vec::new()),
                }
            };
            if !batch.is_empty() {
                self.run_batch(metadata, batch).await;
                let mut st = self.lock();
                st.running -= 1;
                if st.running == 0 {
                    st.free_since = self.clock.now();
                }
                continue;
            }
            match decision {
                Some(t) => {
                    let wait = Duration::from_nanos(t.saturating_sub(self.clock.now()).0);
                    if let Ok(Ok(result)) = tokio::time::timeout(wait, &mut answer).await {
                        return result;
                    }
                }
                None => {
                    return answer.await.unwrap_or_else(|_| Err(FnFailure::Failed("its batch was abandoned".into())));
                }
            }
        }
    }

    /// Runs `batch` as one invocation, its requests' rows stacked, and answers each with its rows.
    async fn run_batch(&self, metadata: &ModelMetadata, batch: Vec<Pending>) {
        let rows: Vec<usize> = batch.iter().map(|p| p.inputs.first().map_or(1, Tensor::rows)).collect();
        let requests: Vec<&[Tensor]> = batch.iter().map(|p| &p.inputs[..]).collect();
        let stacked = (0..metadata.inputs.len()).map(|k| Tensor::stack_rows(&requests, k)).collect();
        let result = self.invoke_batch(metadata, stacked).await;
        // Per output, each request's part; then per request, its outputs.
        let split: Result<Vec<Vec<Tensor>>, FnFailure> = result.and_then(|outputs| {
            outputs
                .iter()
                .map(|t| {
                    t.split_rows(&rows)
                        .ok_or_else(|| FnFailure::Failed("the batch's output has fewer rows than its inputs".into()))
                })
                .collect()
        });
        match split {
            Ok(per_output) => {
                let mut parts: Vec<_> = per_output.into_iter().map(Vec::into_iter).collect();
                for p in batch {
                    let _ = p.reply.send(Ok(parts.iter_mut().filter_map(Iterator::next).collect()));
                }
            }
            Err(e) => batch.into_iter().for_each(|p| {
                let _ = p.reply.send(Err(e.clone()));
            }),
        }
    }

    /// Starts the service with `base` (binary, environment, limits) and the catalog's default settings.
    pub async fn start(mut base: FunctionConfig, platform: FunctionPlatform) -> Result<Functions, LambdaError> {
        let settings = FunctionSettings {
            memory_mb: platform.default_memory_mb,
            concurrency: 1,
            keep_alive: platform.default_keep_alive,
            prewarm: 0,
            batching: hyscale_policies::BatchRule::NONE,
        };
        base.memory_mb = settings.memory_mb;
        base.keep_alive = settings.keep_alive;
        let service = FunctionService::start(base.clone()).await?;
        let state = State {
            service,
            settings,
            retired: Vec::new(),
            forgotten: FunctionStats::default(),
            billed: CostBreakdown::default(),
            prewarm_meter: billing::ProvisionedMeter::default(),
            pending: std::collections::VecDeque::new(),
            running: 0,
            free_since: Nanos::ZERO,
        };
        Ok(Functions { base, platform, clock: WallClock::start(), state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The local default: the local Lambda service (see the module documentation).
impl FunctionProvider for Functions {
    /// The settings now.
    fn settings(&self) -> FunctionSettings {
        self.lock().settings
    }

    /// Applies a `ConfigureFunctions` action; see the module documentation.
    fn configure(
        &self,
        memory_mb: Option<u32>,
        concurrency: Option<u32>,
        keep_alive: Option<Nanos>,
        prewarm: Option<u32>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let old = self.settings();
            let memory = memory_mb.unwrap_or(old.memory_mb);
            let wanted_concurrency = concurrency.unwrap_or(old.concurrency);
            self.platform.check_settings(memory, wanted_concurrency).map_err(|e| {
                tracing::debug!(error = %e, "configure functions");
                hyscale_policies::Refusal::InvalidFunctionSettings.to_string()
            })?;
            let keep = keep_alive.unwrap_or(old.keep_alive);
            if memory != old.memory_mb || keep != old.keep_alive || wanted_concurrency != old.concurrency {
                let mut config = self.base.clone();
                config.memory_mb = memory;
                config.keep_alive = keep;
                config.concurrency = wanted_concurrency;
                let fresh = FunctionService::start(config).await.map_err(|e| {
                    tracing::warn!(error = %e, "configure functions: the new function service did not start");
                    hyscale_policies::Refusal::ProviderFailed.to_string()
                })?;
                let mut st = self.lock();
                let old_service = std::mem::replace(&mut st.service, fresh);
                old_service.shutdown();
                st.retired.push(old_service);
            }
            {
                let mut st = self.lock();
                let new_prewarm = prewarm.unwrap_or(old.prewarm);
                if new_prewarm != old.prewarm || memory != old.memory_mb {
                    // Billed as the simulator bills it: when the amount changes; going to 0 disables it.
                    let now = self.clock.now();
                    let charge =
                        st.prewarm_meter.settle(&self.platform, old.prewarm, old.memory_mb, now, new_prewarm == 0);
                    st.billed.function_compute += charge;
                }
                st.settings.memory_mb = memory;
                st.settings.keep_alive = keep;
                st.settings.concurrency = wanted_concurrency;
                st.settings.prewarm = new_prewarm;
            }
            self.top_up_prewarm();
            Ok(())
        })
    }

    /// Records the function pool's batching (see the module documentation).
    fn set_batching(&self, rule: hyscale_policies::BatchRule) {
        self.lock().settings.batching = rule;
    }

    /// Starts sandboxes in the background until the pre-warm target is alive.
    fn top_up_prewarm(&self) {
        let (service, target) = {
            let st = self.lock();
            (st.service.clone(), st.settings.prewarm)
        };
        if target > 0 && service.stats().sandboxes() < target {
            tokio::spawn(async move {
                if let Err(e) = service.prewarm(target).await {
                    tracing::warn!(error = %e, "pre-warming function sandboxes failed");
                }
            });
        }
    }

    /// Runs one request in a sandbox (the inputs named after the model's, as `hyscale-fn` takes them), in a
    /// batch of requests when the function pool batches (see the module documentation).
    fn invoke<'a>(
        &'a self,
        metadata: &'a ModelMetadata,
        inputs: &'a [Tensor],
    ) -> BoxFuture<'a, Result<Vec<Tensor>, FnFailure>> {
        Box::pin(async move {
            let rule = self.lock().settings.batching;
            if rule.max_batch <= 1 || metadata.batch_dim() != BatchDim::Dynamic {
                return self.invoke_batch(metadata, inputs.to_vec()).await;
            }
            self.batched(metadata, rule, inputs.to_vec()).await
        })
    }

    /// The platform as the view shows it: settings, sandboxes by state (retired services' included),
    /// requests in flight and the totals.
    fn view(&self) -> FunctionView {
        let mut st = self.lock();
        let all = st.stats();
        let mut v = FunctionView {
            settings: st.settings,
            cold_starting: all.cold_starting,
            idle_warm: all.idle_warm,
            busy: all.busy,
            in_flight: all.in_flight,
            throttled_total: all.throttled_total,
            cold_starts_total: all.cold_starts_total,
            per_function: Default::default(),
        };
        v.as_one_function(0);
        v
    }

    fn invocation_time(&self) -> (u64, f64) {
        let all = self.lock().stats();
        (all.invocations_total, all.duration_ns_total as f64 / 1e6)
    }

    /// What ran so far, with the pre-warmed capacity held now billed as if the run ended now (as the
    /// simulator settles it at its end).
    fn cost(&self) -> CostBreakdown {
        let st = self.lock();
        let mut cost = st.billed;
        let mut meter = st.prewarm_meter;
        let s = st.settings;
        cost.function_compute += meter.settle(&self.platform, s.prewarm, s.memory_mb, self.clock.now(), true);
        cost
    }

    /// Shuts every service down.
    fn shutdown(&self) {
        let st = self.lock();
        st.service.shutdown();
        for s in &st.retired {
            s.shutdown();
        }
    }
}

/// The event `hyscale-fn` takes (and the body of an Open Inference Protocol infer request): the inputs
/// named after the model's, in its order.
pub fn encode_event(metadata: &ModelMetadata, inputs: &[Tensor]) -> Result<Vec<u8>, String> {
    let event = InferEvent {
        inputs: metadata
            .inputs
            .iter()
            .zip(inputs)
            .map(|(info, t)| payload::Tensor::fp32(info.name.clone(), t.shape.clone(), t.data.clone()))
            .collect(),
        sleep_ms: 0,
    };
    serde_json::to_vec(&event).map_err(|e| format!("encoding the event: {e}"))
}

/// The model's outputs in its order, matched by name among `outputs` (a function's answer or an Open
/// Inference Protocol infer response); `Err` names the output missing or malformed.
pub fn decode_outputs(metadata: &ModelMetadata, outputs: &[payload::Tensor]) -> Result<Vec<Tensor>, String> {
    metadata
        .outputs
        .iter()
        .map(|info| {
            let t = outputs
                .iter()
                .find(|t| t.name == info.name)
                .ok_or_else(|| format!("function answer lacks output '{}'", info.name))?;
            Tensor::new(t.shape.clone(), t.data.clone())
                .ok_or_else(|| format!("output '{}' does not match its shape", info.name))
        })
        .collect()
}

/// Shares one platform between the controller's tasks.
pub type SharedFunctions = Arc<Functions>;
