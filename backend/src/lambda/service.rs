//! The function service: sandboxes by state, invocation, keep-alive, accounting.
//!
//! One mutex guards the pool (which sandbox is where, and the counters); it is never held across an
//! await. An idle sandbox lives in the pool; a starting or busy one is owned by the invocation that uses
//! it, through a [`Lease`] that puts it back when it is still fit to serve and otherwise kills it, also
//! when the invocation is cancelled (its future dropped), so no sandbox is ever left in a state no one
//! tracks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use hyscale_policies::{Clock, Nanos};
use tokio::task::JoinSet;

use super::runtime_api::{AnswerKind, lock};
use super::sandbox::{Call, Sandbox};
use super::{
    FunctionConfig, FunctionError, FunctionErrorKind, InvokeOutcome, LambdaError, MAX_PAYLOAD_BYTES, SandboxId, to_std,
};
use crate::WallClock;

/// Billing granularity of execution time (AWS Lambda: 1 ms).
const BILLING_GRANULARITY: Nanos = Nanos::from_millis(1);

/// A local Lambda service for one function. Cheap to clone (clones share the sandboxes).
///
/// Must be started and used inside a tokio runtime, with the time and I/O drivers enabled. Dropping the
/// last clone (and any in-flight invocation) kills every sandbox.
#[derive(Clone)]
pub struct FunctionService {
    shared: Arc<Shared>,
}

struct Shared {
    config: FunctionConfig,
    clock: WallClock,
    pool: Mutex<Pool>,
    /// A prefix unique to this service, so request ids differ across services and runs.
    request_prefix: u64,
    request_seq: AtomicU64,
}

#[derive(Default)]
struct Pool {
    /// Every live sandbox, in any state.
    live: BTreeMap<SandboxId, SandboxInfo>,
    /// The idle ones, least recently used first.
    idle: Vec<Idle>,
    next_id: u64,
    in_flight: u64,
    shut_down: bool,
    counters: Counters,
}

struct Idle {
    sandbox: Sandbox,
    since: Nanos,
}

#[derive(Clone, Copy, Default)]
struct Counters {
    invocations: u64,
    cold_starts: u64,
    warm_starts: u64,
    throttled: u64,
    function_errors: u64,
    init_failures: u64,
    expired: u64,
    billed_mb_ms: u64,
}

/// A sandbox's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// Cold-starting: the injected delay, the process start or the function's initialisation.
    Starting,
    /// Warm and free.
    Idle,
    /// Running an invocation.
    Busy,
}

/// One live sandbox, as [`FunctionService::sandboxes`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Its id.
    pub id: SandboxId,
    /// Its process id, once the process runs.
    pub pid: Option<u32>,
    /// Its state.
    pub state: SandboxState,
}

/// Counters and gauges of a function service: the live counterpart of the simulator's
/// `hyscale_policies::FunctionView` (same names where they mean the same thing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Sandboxes cold-starting now.
    pub cold_starting: u32,
    /// Warm sandboxes serving nothing now.
    pub idle_warm: u32,
    /// Sandboxes running an invocation now.
    pub busy: u32,
    /// Invocations in progress now (waiting for a cold start or running).
    pub in_flight: u64,
    /// Invocations that reached a sandbox (not throttled, not refused).
    pub invocations_total: u64,
    /// Sandboxes started (for an invocation or a pre-warm).
    pub cold_starts_total: u64,
    /// Invocations served by a warm sandbox.
    pub warm_starts_total: u64,
    /// Invocations throttled by the concurrency cap.
    pub throttled_total: u64,
    /// Invocations that ended with a function error (init failures included).
    pub function_errors_total: u64,
    /// Sandboxes whose initialisation failed.
    pub init_failures_total: u64,
    /// Sandboxes killed after sitting idle past the keep-alive.
    pub expired_total: u64,
    /// Billed duration times memory, MB-milliseconds.
    pub billed_mb_ms_total: u64,
}

impl FunctionStats {
    /// Sandboxes alive in any state.
    pub fn sandboxes(&self) -> u32 {
        self.cold_starting + self.idle_warm + self.busy
    }

    /// Billed GB-seconds (1 GB = 1024 MB).
    pub fn billed_gb_s(&self) -> f64 {
        self.billed_mb_ms_total as f64 / 1024.0 / 1000.0
    }
}

impl FunctionService {
    /// Checks the configuration and starts the service (no sandbox starts until needed). Must be called
    /// inside a tokio runtime: it spawns the task that retires idle sandboxes after the keep-alive.
    pub async fn start(config: FunctionConfig) -> Result<FunctionService, LambdaError> {
        config.validate()?;
        let request_prefix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32);
        let shared = Arc::new(Shared {
            config,
            clock: WallClock::start(),
            pool: Mutex::new(Pool::default()),
            request_prefix,
            request_seq: AtomicU64::new(0),
        });
        tokio::spawn(reap_expired(Arc::downgrade(&shared)));
        Ok(FunctionService { shared })
    }

    /// The function's configuration.
    pub fn config(&self) -> &FunctionConfig {
        &self.shared.config
    }

    /// Invokes the function synchronously with `payload` (the event, usually JSON) and waits for the
    /// outcome: on a warm sandbox if one is free, else on a new one, else [`LambdaError::Throttled`].
    /// Function failures (including a sandbox that dies or times out) come back as
    /// `Ok(outcome)` with `outcome.result` an error; see the module documentation.
    pub async fn invoke(&self, payload: impl Into<Bytes>) -> Result<InvokeOutcome, LambdaError> {
        let payload = payload.into();
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(LambdaError::PayloadTooLarge { bytes: payload.len(), limit: MAX_PAYLOAD_BYTES });
        }
        let shared = &self.shared;
        let config = &shared.config;
        let started = shared.clock.now();
        let request_id = shared.next_request_id();
        let attempt = self.attempt(&request_id, payload).await?;
        let billed_duration = shared.bill(attempt.duration, attempt.init_duration);
        {
            let mut pool = lock(&shared.pool);
            pool.counters.invocations += 1;
            if let Err(error) = &attempt.result {
                pool.counters.function_errors += 1;
                if error.kind == FunctionErrorKind::Init {
                    pool.counters.init_failures += 1;
                }
            }
        }
        Ok(InvokeOutcome {
            request_id,
            result: attempt.result,
            cold: attempt.cold,
            sandbox: attempt.sandbox,
            init_duration: attempt.init_duration,
            duration: attempt.duration,
            billed_duration,
            memory_mb: config.memory_mb,
            max_memory_used_mb: attempt.max_memory_used_mb,
            latency: shared.clock.now().saturating_sub(started),
        })
    }

    /// Runs the event: on a warm sandbox, or on a new one after its cold start.
    async fn attempt(&self, request_id: &str, payload: Bytes) -> Result<Attempt, LambdaError> {
        let shared = &self.shared;
        let config = &shared.config;
        let mut lease = self.acquire()?;
        let _in_flight = InFlight::enter(shared);
        let cold = lease.sandbox.is_none();
        let mut attempt = Attempt {
            result: Ok(Bytes::new()),
            cold,
            sandbox: lease.id,
            init_duration: Nanos::ZERO,
            duration: Nanos::ZERO,
            max_memory_used_mb: None,
        };
        if cold {
            let (ready, init) = self.cold_start(&mut lease).await?;
            attempt.init_duration = init;
            if let Err(error) = ready {
                // The lease drops here, which kills what is left of the sandbox.
                attempt.result = Err(error);
                return Ok(attempt);
            }
        }
        let Some(sandbox) = lease.sandbox.as_ref() else {
            return Err(LambdaError::ShutDown(config.name.clone()));
        };
        let dispatched = shared.clock.now();
        let call = sandbox.call(request_id.to_owned(), payload, to_std(config.timeout)).await;
        let since_dispatch = shared.clock.now().saturating_sub(dispatched);
        attempt.max_memory_used_mb = sandbox.peak_rss_mb();
        let fit = match call {
            Call::Answered(answer) => {
                attempt.duration = Nanos(u64::try_from(answer.duration.as_nanos()).unwrap_or(u64::MAX));
                attempt.result = match answer.kind {
                    AnswerKind::Response(body) => Ok(body),
                    AnswerKind::Error { error_type, message } => {
                        Err(FunctionError { kind: FunctionErrorKind::Handled, error_type, message })
                    }
                    AnswerKind::TooLarge(bytes) => Err(FunctionError {
                        kind: FunctionErrorKind::InvalidResponse,
                        error_type: "Function.ResponseSizeTooLarge".into(),
                        message: format!(
                            "Response payload size ({bytes} bytes) exceeded maximum allowed payload size \
                             ({MAX_PAYLOAD_BYTES} bytes)."
                        ),
                    }),
                };
                true
            }
            Call::Died(report) => {
                tracing::warn!(function = %config.name, sandbox = %lease.id, status = %report.status,
                    "sandbox died during an invocation");
                attempt.duration = since_dispatch;
                attempt.result = Err(FunctionError {
                    kind: FunctionErrorKind::Exit,
                    error_type: "Runtime.ExitError".into(),
                    message: format!("RequestId: {request_id} Error: Runtime exited with error: {}", report.describe()),
                });
                false
            }
            Call::TimedOut => {
                attempt.duration = config.timeout;
                attempt.result = Err(FunctionError {
                    kind: FunctionErrorKind::Timeout,
                    error_type: "Sandbox.Timedout".into(),
                    message: format!(
                        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                        config.timeout.as_secs_f64()
                    ),
                });
                false
            }
            Call::Abandoned => {
                attempt.duration = since_dispatch;
                attempt.result = Err(FunctionError {
                    kind: FunctionErrorKind::InvalidResponse,
                    error_type: "Runtime.InvalidResponse".into(),
                    message: format!("RequestId: {request_id} the function asked for a new event before answering"),
                });
                false
            }
        };
        if fit {
            lease.release();
        }
        Ok(attempt)
    }

    /// Starts sandboxes until `count` are alive (or the concurrency cap is reached) and waits for their
    /// initialisation; returns how many of the started ones became ready. Their initialisation is counted
    /// as cold starts and, when init is billed, billed.
    pub async fn prewarm(&self, count: u32) -> Result<u32, LambdaError> {
        let mut leases = Vec::new();
        {
            let mut pool = lock(&self.shared.pool);
            if pool.shut_down {
                return Err(LambdaError::ShutDown(self.shared.config.name.clone()));
            }
            let target = count.min(self.shared.config.max_sandboxes) as usize;
            while pool.live.len() < target {
                leases.push(pool.reserve(&self.shared));
            }
        }
        let mut starts = JoinSet::new();
        for mut lease in leases {
            let service = self.clone();
            starts.spawn(async move {
                let (ready, init) = service.cold_start(&mut lease).await?;
                service.shared.bill(Nanos::ZERO, init);
                match ready {
                    Ok(()) => {
                        lease.release();
                        Ok(true)
                    }
                    Err(error) => {
                        tracing::warn!(function = %service.shared.config.name, %error, "pre-warm failed");
                        lock(&service.shared.pool).counters.init_failures += 1;
                        Ok(false)
                    }
                }
            });
        }
        let mut ready = 0;
        let mut first_error = None;
        while let Some(joined) = starts.join_next().await {
            match joined {
                Ok(Ok(true)) => ready += 1,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => tracing::warn!(%e, "pre-warm task failed"),
            }
        }
        match first_error {
            Some(e) if ready == 0 => Err(e),
            _ => Ok(ready),
        }
    }

    /// Counters and gauges now.
    pub fn stats(&self) -> FunctionStats {
        let pool = lock(&self.shared.pool);
        let count = |state| pool.live.values().filter(|s| s.state == state).count() as u32;
        let c = pool.counters;
        FunctionStats {
            cold_starting: count(SandboxState::Starting),
            idle_warm: count(SandboxState::Idle),
            busy: count(SandboxState::Busy),
            in_flight: pool.in_flight,
            invocations_total: c.invocations,
            cold_starts_total: c.cold_starts,
            warm_starts_total: c.warm_starts,
            throttled_total: c.throttled,
            function_errors_total: c.function_errors,
            init_failures_total: c.init_failures,
            expired_total: c.expired,
            billed_mb_ms_total: c.billed_mb_ms,
        }
    }

    /// The live sandboxes, in start order.
    pub fn sandboxes(&self) -> Vec<SandboxInfo> {
        lock(&self.shared.pool).live.values().copied().collect()
    }

    /// Stops the service: kills the idle sandboxes now and the busy ones as their invocations end, and
    /// refuses new invocations with [`LambdaError::ShutDown`].
    pub fn shutdown(&self) {
        let idle = {
            let mut pool = lock(&self.shared.pool);
            pool.shut_down = true;
            let idle = std::mem::take(&mut pool.idle);
            for i in &idle {
                pool.live.remove(&i.sandbox.id);
            }
            idle
        };
        drop(idle);
    }

    /// Takes a warm sandbox, or reserves a slot for a new one.
    fn acquire(&self) -> Result<Lease, LambdaError> {
        let shared = &self.shared;
        let now = shared.clock.now();
        let mut pool = lock(&shared.pool);
        if pool.shut_down {
            return Err(LambdaError::ShutDown(shared.config.name.clone()));
        }
        let retired = pool.retire_expired(now, shared.config.keep_alive);
        while let Some(idle) = pool.idle.pop() {
            if idle.sandbox.exit_report().is_some() {
                // Died while idle (killed from outside): forget it and look further.
                pool.live.remove(&idle.sandbox.id);
                continue;
            }
            let id = idle.sandbox.id;
            if let Some(info) = pool.live.get_mut(&id) {
                info.state = SandboxState::Busy;
            }
            pool.counters.warm_starts += 1;
            drop(pool);
            drop(retired);
            return Ok(Lease { shared: shared.clone(), id, sandbox: Some(idle.sandbox), released: false });
        }
        if pool.live.len() >= shared.config.max_sandboxes as usize {
            pool.counters.throttled += 1;
            return Err(LambdaError::Throttled {
                function: shared.config.name.clone(),
                limit: shared.config.max_sandboxes,
            });
        }
        let lease = pool.reserve(shared);
        drop(pool);
        drop(retired);
        Ok(lease)
    }

    /// Starts the sandbox of a reserved lease: the injected delay, the process, its initialisation.
    /// Returns whether it became ready, and how long that took. Only a service failure (the binary cannot
    /// be started) is an `Err`.
    async fn cold_start(&self, lease: &mut Lease) -> Result<(Result<(), FunctionError>, Nanos), LambdaError> {
        let shared = &self.shared;
        let config = &shared.config;
        let started = shared.clock.now();
        if config.cold_start_delay > Nanos::ZERO {
            tokio::time::sleep(to_std(config.cold_start_delay)).await;
        }
        let sandbox = Sandbox::spawn(config, lease.id).await?;
        if let Some(info) = lock(&shared.pool).live.get_mut(&lease.id) {
            info.pid = sandbox.pid;
        }
        let ready = sandbox.wait_ready(to_std(config.init_timeout)).await;
        let init = shared.clock.now().saturating_sub(started);
        lease.sandbox = Some(sandbox);
        if ready.is_ok()
            && let Some(info) = lock(&shared.pool).live.get_mut(&lease.id)
        {
            // Ready, and still held by its invocation (or pre-warm, which releases it to idle next).
            info.state = SandboxState::Busy;
        }
        match &ready {
            Ok(()) => tracing::debug!(function = %config.name, sandbox = %lease.id, init_ms = init.as_millis_f64(),
                "sandbox ready"),
            Err(error) => tracing::warn!(function = %config.name, sandbox = %lease.id, %error, "init failed"),
        }
        Ok((ready, init))
    }
}

impl Shared {
    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let p = self.request_prefix;
        // Shaped like the UUIDs AWS uses, so that tools which parse them accept these.
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            p >> 32,
            (p >> 16) & 0xffff,
            p & 0xfff,
            (n >> 48) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    /// The billed duration of `duration` after an init of `init` (zero when warm), and its charge added
    /// to the counters.
    fn bill(&self, duration: Nanos, init: Nanos) -> Nanos {
        let init = if self.config.bill_init { init } else { Nanos::ZERO };
        let billed = duration.saturating_add(init).round_up_to(BILLING_GRANULARITY);
        let ms = billed.0 / BILLING_GRANULARITY.0;
        let mut pool = lock(&self.pool);
        pool.counters.billed_mb_ms = pool.counters.billed_mb_ms.saturating_add(ms * u64::from(self.config.memory_mb));
        billed
    }
}

impl Pool {
    /// Reserves a slot for a new sandbox (the caller checked the cap).
    fn reserve(&mut self, shared: &Arc<Shared>) -> Lease {
        let id = SandboxId(self.next_id);
        self.next_id += 1;
        self.live.insert(id, SandboxInfo { id, pid: None, state: SandboxState::Starting });
        self.counters.cold_starts += 1;
        Lease { shared: shared.clone(), id, sandbox: None, released: false }
    }

    /// Takes the idle sandboxes whose keep-alive has run out (or that died) out of the pool; the caller
    /// drops them, which kills them, after releasing the lock.
    fn retire_expired(&mut self, now: Nanos, keep_alive: Nanos) -> Vec<Idle> {
        let (retired, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|i| now.saturating_sub(i.since) > keep_alive || i.sandbox.exit_report().is_some());
        self.idle = kept;
        for r in &retired {
            self.live.remove(&r.sandbox.id);
            if r.sandbox.exit_report().is_none() {
                self.counters.expired += 1;
            }
        }
        retired
    }
}

/// What one run of an event came to (before billing and counting).
struct Attempt {
    result: Result<Bytes, FunctionError>,
    cold: bool,
    sandbox: SandboxId,
    init_duration: Nanos,
    duration: Nanos,
    max_memory_used_mb: Option<u32>,
}

/// A sandbox slot held by one invocation or pre-warm: starting (no sandbox yet) or busy.
struct Lease {
    shared: Arc<Shared>,
    id: SandboxId,
    sandbox: Option<Sandbox>,
    released: bool,
}

impl Lease {
    /// Puts a healthy sandbox back in the pool as idle.
    fn release(mut self) {
        self.released = true;
        let Some(sandbox) = self.sandbox.take() else {
            lock(&self.shared.pool).live.remove(&self.id);
            return;
        };
        let now = self.shared.clock.now();
        let mut pool = lock(&self.shared.pool);
        if pool.shut_down || sandbox.exit_report().is_some() {
            pool.live.remove(&self.id);
            drop(pool);
            drop(sandbox);
            return;
        }
        if let Some(info) = pool.live.get_mut(&self.id) {
            info.state = SandboxState::Idle;
        }
        pool.idle.push(Idle { sandbox, since: now });
    }
}

impl Drop for Lease {
    /// A lease dropped without [`Lease::release`] (failure, cancellation) kills its sandbox.
    fn drop(&mut self) {
        if !self.released {
            lock(&self.shared.pool).live.remove(&self.id);
            // `self.sandbox`, if any, is dropped after this, which kills the process.
        }
    }
}

/// Counts an invocation as in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        lock(&shared.pool).in_flight += 1;
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.0.pool);
        pool.in_flight = pool.in_flight.saturating_sub(1);
    }
}

/// Kills idle sandboxes soon after their keep-alive runs out (invocations never reuse an expired one in
/// any case: [`FunctionService::acquire`] retires them first). Ends with the service.
async fn reap_expired(shared: Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(s) => Nanos(s.config.keep_alive.0 / 4).max(Nanos::from_millis(10)).min(Nanos::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(to_std(period)).await;
        let Some(service) = shared.upgrade() else { return };
        let now = service.clock.now();
        let retired = lock(&service.pool).retire_expired(now, service.config.keep_alive);
        if !retired.is_empty() {
            tracing::debug!(function = %service.config.name, count = retired.len(), "idle sandboxes retired");
        }
        drop(retired);
    }
}
