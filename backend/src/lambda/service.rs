//! The function service: sandboxes by state, invocation, keep-alive, accounting.
//!
//! One mutex guards the pool (which sandbox is where, and the counters); it is never held across an
//! await. A ready sandbox lives in the pool with the number of invocations it runs (at most the
//! configuration's `concurrency`); each invocation holds one of its slots through a [`Lease`], which gives
//! the slot back when the sandbox is still fit to serve and otherwise takes the sandbox out of the pool, also
//! when the invocation is cancelled (its future dropped), so no sandbox is ever left in a state no one
//! tracks. A sandbox's process is killed when the pool and the last lease let go of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use hyscale_policies::{Clock, Nanos};
use tokio::sync::watch;
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
    /// The ready ones, idle or running invocations.
    ready: BTreeMap<SandboxId, Ready>,
    /// The ones cold-starting, with the invocations waiting for them.
    starting: BTreeMap<SandboxId, Starting>,
    next_id: u64,
    in_flight: u64,
    shut_down: bool,
    counters: Counters,
}

/// A ready sandbox in the pool.
struct Ready {
    sandbox: Arc<Sandbox>,
    /// Started by a pre-warm (provisioned capacity).
    provisioned: bool,
    /// Invocations running on it.
    in_use: u32,
    /// When it last became idle (or ready).
    since: Nanos,
}

/// What the invocations waiting for a cold start hear: nothing yet (`None`), then the ready sandbox
/// (`Some(Some(sandbox))`) or that it failed (`Some(None)`).
type ColdStartNews = Option<Option<Arc<Sandbox>>>;

/// A sandbox cold-starting: how many invocations wait for it (its starter included), and where they hear
/// how its start ended.
struct Starting {
    in_use: u32,
    ready: watch::Receiver<ColdStartNews>,
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
    duration_ns: u64,
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
    /// Invocations it runs now (or that wait for its cold start).
    pub in_use: u32,
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
    /// Invocations' durations (from the event's delivery to the function's answer: the time a sandbox is
    /// held by an invocation, before rounding), summed, ns.
    pub duration_ns_total: u64,
}

impl FunctionStats {
    /// Sandboxes alive in any state.
    pub fn sandboxes(&self) -> u32 {
        self.cold_starting + self.idle_warm + self.busy
    }

    /// Adds `other`'s gauges and counters to these (the stats of several services together).
    pub fn add(&mut self, other: &FunctionStats) {
        self.cold_starting += other.cold_starting;
        self.idle_warm += other.idle_warm;
        self.busy += other.busy;
        self.in_flight += other.in_flight;
        self.invocations_total += other.invocations_total;
        self.cold_starts_total += other.cold_starts_total;
        self.warm_starts_total += other.warm_starts_total;
        self.throttled_total += other.throttled_total;
        self.function_errors_total += other.function_errors_total;
        self.init_failures_total += other.init_failures_total;
        self.expired_total += other.expired_total;
        self.billed_mb_ms_total += other.billed_mb_ms_total;
        self.duration_ns_total += other.duration_ns_total;
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
            pool.counters.duration_ns = pool.counters.duration_ns.saturating_add(attempt.duration.0);
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
            provisioned: attempt.provisioned,
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
        let (mut lease, joined) = self.acquire()?;
        let _in_flight = InFlight::enter(shared);
        let cold = lease.sandbox.is_none() && joined.is_none();
        let mut attempt = Attempt {
            result: Ok(Bytes::new()),
            cold,
            provisioned: lease.provisioned,
            sandbox: lease.id,
            init_duration: Nanos::ZERO,
            duration: Nanos::ZERO,
            max_memory_used_mb: None,
        };
        if let Some(mut ready) = joined {
            // Waits for the cold start of a sandbox another invocation started (its init is that one's).
            let sandbox = ready.wait_for(Option::is_some).await.ok().and_then(|s| s.clone().flatten());
            match sandbox {
                Some(sandbox) => lease.sandbox = Some(sandbox),
                None => {
                    lease.released = true; // The starter has taken the sandbox out of the pool.
                    attempt.result = Err(FunctionError {
                        kind: FunctionErrorKind::Init,
                        error_type: "Runtime.InitError".into(),
                        message: format!("the sandbox {} this invocation waited for failed to start", lease.id),
                    });
                    return Ok(attempt);
                }
            }
        } else if cold {
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
                let mut lease = pool.reserve(&self.shared, self.shared.config.concurrency);
                lease.provisioned = true;
                leases.push(lease);
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
            duration_ns_total: c.duration_ns,
        }
    }

    /// The live sandboxes, in start order.
    pub fn sandboxes(&self) -> Vec<SandboxInfo> {
        let pool = lock(&self.shared.pool);
        let in_use = |id| pool.ready.get(id).map(|r| r.in_use).or_else(|| pool.starting.get(id).map(|s| s.in_use));
        pool.live.values().map(|info| SandboxInfo { in_use: in_use(&info.id).unwrap_or(0), ..*info }).collect()
    }

    /// Stops the service: kills the idle sandboxes now and the busy ones as their invocations end, and
    /// refuses new invocations with [`LambdaError::ShutDown`].
    pub fn shutdown(&self) {
        let idle = {
            let mut pool = lock(&self.shared.pool);
            pool.shut_down = true;
            let ids: Vec<SandboxId> = pool.ready.iter().filter(|(_, r)| r.in_use == 0).map(|(id, _)| *id).collect();
            let mut idle = Vec::new();
            for id in ids {
                pool.live.remove(&id);
                idle.extend(pool.ready.remove(&id));
            }
            idle
        };
        drop(idle);
    }

    /// Takes a slot of a warm sandbox (the busiest with one free, then the most recently idle), else of a
    /// starting one (answered with where to hear it is ready), else reserves a new sandbox.
    fn acquire(&self) -> Result<(Lease, Option<watch::Receiver<ColdStartNews>>), LambdaError> {
        let shared = &self.shared;
        let concurrency = shared.config.concurrency.max(1);
        let now = shared.clock.now();
        let mut pool = lock(&shared.pool);
        if pool.shut_down {
            return Err(LambdaError::ShutDown(shared.config.name.clone()));
        }
        let mut retired = pool.retire_expired(now, shared.config.keep_alive);
        loop {
            let best = pool
                .ready
                .iter()
                .filter(|(_, r)| r.in_use < concurrency)
                .max_by_key(|(id, r)| (r.in_use, r.since, **id))
                .map(|(id, _)| *id);
            let Some(id) = best else { break };
            let Some(entry) = pool.ready.get_mut(&id) else { break };
            if entry.sandbox.exit_report().is_some() {
                // Died while idle (killed from outside): forget it and look further.
                retired.extend(pool.ready.remove(&id));
                pool.live.remove(&id);
                continue;
            }
            entry.in_use += 1;
            let (sandbox, provisioned) = (Arc::clone(&entry.sandbox), entry.provisioned);
            if let Some(info) = pool.live.get_mut(&id) {
                info.state = SandboxState::Busy;
            }
            pool.counters.warm_starts += 1;
            drop(pool);
            drop(retired);
            let mut lease = Lease::new(shared, id, Some(sandbox));
            lease.provisioned = provisioned;
            return Ok((lease, None));
        }
        let joinable = pool.starting.iter().find(|(_, s)| s.in_use < concurrency).map(|(id, _)| *id);
        if let Some(id) = joinable
            && let Some(entry) = pool.starting.get_mut(&id)
        {
            entry.in_use += 1;
            let ready = entry.ready.clone();
            drop(pool);
            drop(retired);
            return Ok((Lease::new(shared, id, None), Some(ready)));
        }
        if pool.live.len() >= shared.config.max_sandboxes as usize {
            pool.counters.throttled += 1;
            return Err(LambdaError::Throttled {
                function: shared.config.name.clone(),
                limit: shared.config.max_sandboxes,
            });
        }
        let lease = pool.reserve(shared, 1);
        drop(pool);
        drop(retired);
        Ok((lease, None))
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
        let sandbox = Arc::new(sandbox);
        lease.sandbox = Some(Arc::clone(&sandbox));
        {
            let mut pool = lock(&shared.pool);
            let waiting = pool.starting.remove(&lease.id);
            if ready.is_ok()
                && let Some(waiting) = waiting
                && pool.live.contains_key(&lease.id)
            {
                // Ready, and still held by its invocations (or pre-warm, which releases it to idle next).
                let now = shared.clock.now();
                let ready = Ready {
                    sandbox: Arc::clone(&sandbox),
                    provisioned: lease.provisioned,
                    in_use: waiting.in_use,
                    since: now,
                };
                pool.ready.insert(lease.id, ready);
                if let Some(info) = pool.live.get_mut(&lease.id) {
                    info.state = SandboxState::Busy;
                }
            }
        }
        if let Some(starter) = lease.starter.take() {
            // Whoever waits for this sandbox hears now: ready, or failed (they give their slots up).
            let _ = starter.send(Some(ready.is_ok().then(|| Arc::clone(&sandbox))));
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
    /// Reserves a new sandbox (the caller checked the cap), held by `in_use` invocations (1, or a pre-warm's
    /// whole capacity so that nothing joins it before it is released).
    fn reserve(&mut self, shared: &Arc<Shared>, in_use: u32) -> Lease {
        let id = SandboxId(self.next_id);
        self.next_id += 1;
        self.live.insert(id, SandboxInfo { id, pid: None, state: SandboxState::Starting, in_use: 0 });
        self.counters.cold_starts += 1;
        let (starter, ready) = watch::channel(None);
        self.starting.insert(id, Starting { in_use, ready });
        let mut lease = Lease::new(shared, id, None);
        lease.starter = Some(starter);
        lease.slots = in_use;
        lease
    }

    /// Takes the idle sandboxes whose keep-alive has run out (or that died) out of the pool; the caller
    /// drops them, which kills them, after releasing the lock.
    fn retire_expired(&mut self, now: Nanos, keep_alive: Nanos) -> Vec<Ready> {
        let gone: Vec<SandboxId> = self
            .ready
            .iter()
            .filter(|(_, r)| {
                r.sandbox.exit_report().is_some() || (r.in_use == 0 && now.saturating_sub(r.since) > keep_alive)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut retired = Vec::new();
        for id in gone {
            if let Some(r) = self.ready.remove(&id) {
                self.live.remove(&id);
                if r.sandbox.exit_report().is_none() {
                    self.counters.expired += 1;
                }
                retired.push(r);
            }
        }
        retired
    }
}

/// What one run of an event came to (before billing and counting).
struct Attempt {
    result: Result<Bytes, FunctionError>,
    cold: bool,
    provisioned: bool,
    sandbox: SandboxId,
    init_duration: Nanos,
    duration: Nanos,
    max_memory_used_mb: Option<u32>,
}

/// A sandbox slot held by one invocation or pre-warm: on a starting sandbox (no sandbox yet) or a ready one.
struct Lease {
    shared: Arc<Shared>,
    id: SandboxId,
    sandbox: Option<Arc<Sandbox>>,
    /// The cold start's announcer, held by the lease that started the sandbox until it is ready or failed.
    starter: Option<watch::Sender<ColdStartNews>>,
    /// Slots the lease holds (1; a pre-warm holds them all).
    slots: u32,
    /// Whether the sandbox was started by a pre-warm.
    provisioned: bool,
    released: bool,
}

impl Lease {
    fn new(shared: &Arc<Shared>, id: SandboxId, sandbox: Option<Arc<Sandbox>>) -> Lease {
        Lease { shared: shared.clone(), id, sandbox, starter: None, slots: 1, provisioned: false, released: false }
    }

    /// Gives the slot back to a healthy sandbox (idle once no invocation runs on it).
    fn release(mut self) {
        self.released = true;
        let now = self.shared.clock.now();
        let mut pool = lock(&self.shared.pool);
        let dead = self.sandbox.as_ref().is_none_or(|s| s.exit_report().is_some());
        if pool.shut_down || dead {
            let gone = pool.ready.remove(&self.id);
            pool.live.remove(&self.id);
            drop(pool);
            drop(gone);
            return;
        }
        let Some(entry) = pool.ready.get_mut(&self.id) else {
            return; // Taken out of the pool already (a failed invocation beside this one).
        };
        entry.in_use = entry.in_use.saturating_sub(self.slots);
        if entry.in_use == 0 {
            entry.since = now;
        }
        let idle = entry.in_use == 0;
        if let Some(info) = pool.live.get_mut(&self.id) {
            info.state = if idle { SandboxState::Idle } else { SandboxState::Busy };
        }
    }
}

impl Drop for Lease {
    /// A lease dropped without [`Lease::release`] (failure, cancellation) takes its sandbox out of the pool:
    /// it takes no new invocations, and its process is killed once the invocations still on it let go.
    fn drop(&mut self) {
        if !self.released && self.sandbox.is_none() && self.starter.is_none() {
            // An invocation that gave up waiting for another's cold start: only its slot goes back.
            let mut guard = lock(&self.shared.pool);
            let pool = &mut *guard;
            match (pool.starting.get_mut(&self.id), pool.ready.get_mut(&self.id)) {
                (Some(s), _) => s.in_use = s.in_use.saturating_sub(1),
                (None, Some(r)) => r.in_use = r.in_use.saturating_sub(1),
                (None, None) => {}
            }
        } else if !self.released {
            let mut pool = lock(&self.shared.pool);
            pool.live.remove(&self.id);
            let gone = (pool.ready.remove(&self.id), pool.starting.remove(&self.id));
            drop(pool);
            drop(gone);
            // `self.starter`, if any, is dropped after this, which tells whoever waits that it failed.
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
