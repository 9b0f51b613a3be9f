//! The function platform as the controller drives it: the local Lambda service ([`FunctionService`])
//! running `hyscale-fn` sandboxes, with the settings a policy controls.
//!
//! How `ConfigureFunctions` maps onto the service, whose configuration is fixed when it starts:
//! - **memory** and **keep-alive**: a new service starts with the new configuration and takes every new
//!   request; the old one is shut down (its idle sandboxes are killed now, its busy ones finish their
//!   invocation first), as when a new function version is published. Cold starts and throttles of retired
//!   services stay in the totals.
//! - **prewarm**: the service starts sandboxes until that many are alive; the controller tops them up on
//!   every tick, since the service has no provisioned-concurrency pinning and keep-alive expiry would
//!   otherwise retire them.
//! - **concurrency**: the service runs one request per sandbox (AWS's default; `AWS_LAMBDA_MAX_CONCURRENCY`
//!   is left out), so a value other than 1 is refused with that reason (the other settings still apply).
//! - **batching** (`SetBatching` on the function pool): recorded in the view; each invocation carries one
//!   request, so nothing batches inside a sandbox.

use std::sync::{Arc, Mutex, MutexGuard};

use hyscale_policies::billing::{self, CostBreakdown};
use hyscale_policies::{FunctionPlatform, FunctionSettings, FunctionView, Nanos};

pub use super::provider::FnFailure;
use super::provider::{BoxFuture, FunctionProvider};
use crate::engine::{ModelMetadata, Tensor};
use crate::lambda::payload::{self, InferEvent, InferResult};
use crate::lambda::{FunctionConfig, FunctionService, LambdaError};

struct State {
    service: FunctionService,
    settings: FunctionSettings,
    /// Services replaced by a configuration change, kept until their sandboxes are gone (for the counts).
    retired: Vec<FunctionService>,
    retired_cold_starts: u64,
    retired_throttled: u64,
    /// What the invocations cost, by `policies::billing`.
    billed: CostBreakdown,
}

/// The function platform of one model.
pub struct Functions {
    base: FunctionConfig,
    platform: FunctionPlatform,
    state: Mutex<State>,
}

impl Functions {
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
            retired_cold_starts: 0,
            retired_throttled: 0,
            billed: CostBreakdown::default(),
        };
        Ok(Functions { base, platform, state: Mutex::new(state) })
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
            self.platform.check_settings(memory, 1).map_err(|e| format!("configure functions: {e}"))?;
            let keep = keep_alive.unwrap_or(old.keep_alive);
            if memory != old.memory_mb || keep != old.keep_alive {
                let mut config = self.base.clone();
                config.memory_mb = memory;
                config.keep_alive = keep;
                let fresh = FunctionService::start(config).await.map_err(|e| format!("configure functions: {e}"))?;
                let mut st = self.lock();
                let old_service = std::mem::replace(&mut st.service, fresh);
                old_service.shutdown();
                st.retired.push(old_service);
            }
            {
                let mut st = self.lock();
                st.settings.memory_mb = memory;
                st.settings.keep_alive = keep;
                st.settings.prewarm = prewarm.unwrap_or(old.prewarm);
            }
            self.top_up_prewarm();
            if wanted_concurrency != 1 {
                tracing::debug!(
                    wanted_concurrency,
                    "the local Lambda service runs one request per sandbox (kept at 1)"
                );
                return Err(hyscale_policies::Refusal::NotSupportedLive.to_string());
            }
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

    /// Runs one request in a sandbox: the inputs named after the model's, as `hyscale-fn` takes them.
    fn invoke<'a>(
        &'a self,
        metadata: &'a ModelMetadata,
        inputs: &'a [Tensor],
    ) -> BoxFuture<'a, Result<Vec<Tensor>, FnFailure>> {
        Box::pin(async move {
            let body = encode_event(metadata, inputs).map_err(FnFailure::Failed)?;
            let service = self.lock().service.clone();
            let outcome = match service.invoke(body).await {
                Ok(outcome) => outcome,
                Err(LambdaError::Throttled { .. }) => return Err(FnFailure::Throttled),
                Err(e) => return Err(FnFailure::Failed(e.to_string())),
            };
            {
                // Billed as the simulator bills: execution (and a cold start's init, when the platform bills
                // it) at the configured memory, rounded by the platform's granularity, plus the request fee.
                let p = &self.platform;
                let init = if p.bill_init && outcome.cold { outcome.init_duration } else { Nanos::ZERO };
                let charge = billing::function_compute_charge(p, outcome.memory_mb, outcome.duration + init);
                let mut st = self.lock();
                st.billed.function_compute += charge;
                st.billed.function_requests += p.price_per_request;
            }
            let bytes = outcome.result.map_err(|e| FnFailure::Failed(e.to_string()))?;
            let result: InferResult =
                serde_json::from_slice(&bytes).map_err(|e| FnFailure::Failed(format!("function answer: {e}")))?;
            decode_outputs(metadata, &result.outputs).map_err(FnFailure::Failed)
        })
    }

    /// The platform as the view shows it: settings, sandboxes by state (retired services' included),
    /// requests in flight and the totals.
    fn view(&self) -> FunctionView {
        let mut st = self.lock();
        let mut retired_cold = st.retired_cold_starts;
        let mut retired_throttled = st.retired_throttled;
        // Forget retired services whose sandboxes are all gone, keeping their totals.
        st.retired.retain(|s| {
            let stats = s.stats();
            if stats.sandboxes() == 0 && stats.in_flight == 0 {
                retired_cold += stats.cold_starts_total;
                retired_throttled += stats.throttled_total;
                false
            } else {
                true
            }
        });
        st.retired_cold_starts = retired_cold;
        st.retired_throttled = retired_throttled;
        let mut v = FunctionView {
            settings: st.settings,
            cold_starting: 0,
            idle_warm: 0,
            busy: 0,
            in_flight: 0,
            throttled_total: retired_throttled,
            cold_starts_total: retired_cold,
            per_function: Default::default(),
        };
        for s in st.retired.iter().chain(std::iter::once(&st.service)) {
            let stats = s.stats();
            v.cold_starting += stats.cold_starting;
            v.idle_warm += stats.idle_warm;
            v.busy += stats.busy;
            v.in_flight += stats.in_flight;
            v.throttled_total += stats.throttled_total;
            v.cold_starts_total += stats.cold_starts_total;
        }
        v.as_one_function(0);
        v
    }

    fn cost(&self) -> CostBreakdown {
        self.lock().billed
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
