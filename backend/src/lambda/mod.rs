//! A local Lambda service: the function half of the live backend.
//!
//! [`FunctionService`] runs a real function binary the way AWS Lambda runs a custom runtime
//! (`provided.al2023`): each **sandbox** is an OS process of the binary, started with
//! `AWS_LAMBDA_RUNTIME_API` pointing at a loopback implementation of the
//! [Lambda Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
//! (`GET /2018-06-01/runtime/invocation/next`, `POST …/{id}/response`, `POST …/{id}/error`,
//! `POST /2018-06-01/runtime/init/error`). The function shipped with hyscale, `hyscale-fn`
//! (`src/bin/hyscale-fn.rs`), is built on the official `lambda_runtime` crate, so the same binary, renamed
//! `bootstrap`, deploys to AWS unchanged. Callers reach the service in-process with
//! [`FunctionService::invoke`] or over HTTP through the Invoke API path
//! (`POST /2015-03-31/functions/{name}/invocations`, [`invoke_router`]), which the AWS SDKs and CLI speak.
//!
//! What it models, and the choices it makes:
//! - **Cold start** = an optional injected delay (standing for what a local process lacks: fetching the code
//!   and booting a microVM) + process start + the function's own initialisation (loading the model), up to
//!   its first `/next`, the same boundary AWS measures as "Init Duration". A free warm sandbox is reused
//!   (most recently used first, so surplus sandboxes age out); otherwise a new one starts, unless the
//!   **concurrency cap** (live sandboxes, one request each, as on AWS) is reached: then
//!   [`LambdaError::Throttled`], AWS's 429.
//! - **Keep-alive**: a sandbox idle for longer than the keep-alive is never reused, and a reaper task kills
//!   it soon after.
//! - **One Runtime API endpoint per sandbox.** The Runtime API carries no sandbox identity (`/next` is a
//!   bare `GET`), and AWS gives every execution environment its own endpoint; so does this service, each on
//!   an ephemeral loopback port. Which process asked is then known by construction, and a sandbox's
//!   endpoint dies with it.
//! - **Failures are function errors, not service errors**, as AWS reports them for a synchronous invoke
//!   (HTTP 200 with `X-Amz-Function-Error`): the function's own `/error`, a failed initialisation
//!   (`/init/error`, or the process exiting before its first `/next`), the process dying mid-request
//!   (`kill -9`), a timeout. They arrive in [`InvokeOutcome::result`] with the durations and billing the
//!   attempt cost. [`LambdaError`] is kept for what AWS answers with an HTTP error: throttling, a payload
//!   too large, a binary that cannot be started, a service shut down.
//! - **No retry after a sandbox dies mid-request**: the invocation is answered with a
//!   `Runtime.ExitError` function error as soon as the death is seen. The function may already have acted
//!   on the event, and a synchronous AWS invoke does not retry either; a caller that knows its requests
//!   are idempotent (inference is) retries itself. A sandbox killed while idle is dropped from the pool
//!   once its death is seen (within milliseconds); an event handed to it in that instant gets the same
//!   error, since TCP cannot tell whether the dead process read it. Every wait has a deadline (init
//!   timeout, function timeout), so nothing hangs.
//! - **Memory cap**: the configured size is passed to the function as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`
//!   and, by default, enforced as the sandbox's address-space limit (`RLIMIT_AS`, see [`MemoryLimit`]): an
//!   allocation beyond it fails inside the function, which then errors or dies, as on AWS. Lambda limits
//!   resident memory with a cgroup; without privileges an rlimit on the address space is the closest
//!   enforceable bound, so the default adds a headroom for the address space a process reserves but never
//!   touches. The peak resident memory is reported per invocation, as Lambda's "Max Memory Used".
//! - **Billing**: the invocation's duration (from the event's delivery on `/next` to its `/response` or
//!   `/error`) plus, on a cold start and when [`FunctionConfig::bill_init`] is set (custom runtimes on AWS
//!   bill their init phase), the init duration, rounded up to 1 ms, times the configured memory.
//!
//! - **Several invocations per sandbox** when [`FunctionConfig::concurrency`] is above 1: the sandbox is started
//!   with `AWS_LAMBDA_MAX_CONCURRENCY` (as Lambda Managed Instances start theirs), its Runtime API hands out
//!   up to that many events at once, and new invocations go to the warm sandbox with the most work that still
//!   has a free slot (packing them onto one loaded model), then to a starting one with a free slot (they wait
//!   for its cold start), before a new sandbox starts. A sandbox that fails one invocation takes no new ones.
//!
//! Left out: asynchronous invocation queues
//! and their retries, extensions, response streaming, provisioned concurrency billing, and the AWS error
//! shapes of rarely used Invoke options (`LogType: Tail` returns no log).

mod invoke_api;
pub mod payload;
mod runtime_api;
mod sandbox;
mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use axum::body::Bytes;
use hyscale_policies::Nanos;

pub use invoke_api::invoke_router;
pub use service::{FunctionService, FunctionStats, SandboxInfo, SandboxState};

/// The environment variable that names the model file of `hyscale-fn`.
pub const MODEL_PATH_ENV: &str = "HYSCALE_MODEL_PATH";

/// The largest synchronous request or response payload, as on AWS Lambda (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Identifies one sandbox of a service, in start order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxId(pub u64);

impl std::fmt::Display for SandboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sandbox-{}", self.0)
    }
}

/// How the configured memory size is enforced on a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    /// Limit the address space (`RLIMIT_AS`) to the memory size plus `headroom_mb`. The headroom covers
    /// address space a process reserves without using it (thread stacks, allocator arenas, the mapped
    /// binary), which counts against `RLIMIT_AS` but not against Lambda's resident-memory limit.
    AddressSpace {
        /// MiB added to the memory size.
        headroom_mb: u32,
    },
    /// Pass the memory size to the function but enforce nothing.
    Unenforced,
}

impl Default for MemoryLimit {
    fn default() -> MemoryLimit {
        MemoryLimit::AddressSpace { headroom_mb: DEFAULT_HEADROOM_MB }
    }
}

/// The default address-space headroom of [`MemoryLimit::AddressSpace`], MiB. Measured on `hyscale-fn`
/// serving the test MLP (one thread): about 80 MB of address space for 37 MB resident with tract, and
/// 128 MB for 43 MB resident with ONNX Runtime; each further thread reserves a stack and possibly an
/// allocator arena (64 MB with glibc), hence the margin.
pub const DEFAULT_HEADROOM_MB: u32 = 256;

/// The configuration of one function.
#[derive(Clone, Debug)]
pub struct FunctionConfig {
    /// The function's name: `AWS_LAMBDA_FUNCTION_NAME` and the `{name}` of the Invoke API path.
    pub name: String,
    /// The function binary: any program that speaks the Runtime API (`hyscale-fn`, or a `bootstrap`).
    pub binary: PathBuf,
    /// The function's environment variables (added to the service's own environment, which sandboxes
    /// inherit so that settings such as `ORT_DYLIB_PATH` or `RUST_LOG` reach them).
    pub env: BTreeMap<String, String>,
    /// Memory size, MB: passed to the function, billed, and enforced as `memory_limit` says.
    pub memory_mb: u32,
    /// How the memory size is enforced.
    pub memory_limit: MemoryLimit,
    /// The concurrency cap: at most this many sandboxes alive (starting, idle or busy) at once.
    pub max_sandboxes: u32,
    /// Invocations one sandbox runs at once, from its one loaded copy of the code (1, AWS's default; above 1
    /// the function is started with `AWS_LAMBDA_MAX_CONCURRENCY`, as Lambda Managed Instances do, and must
    /// poll for that many events at once, as `lambda_runtime::run_concurrent` does).
    pub concurrency: u32,
    /// How long an idle sandbox stays warm.
    pub keep_alive: Nanos,
    /// Extra time added to every cold start before the process starts (0 for none).
    pub cold_start_delay: Nanos,
    /// The longest an initialisation may take (AWS: 10 s) before the sandbox is killed.
    pub init_timeout: Nanos,
    /// The longest one invocation may run (the function timeout; AWS's default is 3 s).
    pub timeout: Nanos,
    /// Whether the init duration of a cold start is billed (it is for custom runtimes on AWS).
    pub bill_init: bool,
}

impl FunctionConfig {
    /// A configuration with AWS's defaults where they make sense locally: 512 MB, 10 sandboxes at most,
    /// a 10-minute keep-alive, no injected delay, a 10 s init timeout, a 3 s function timeout, init billed.
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> FunctionConfig {
        FunctionConfig {
            name: name.into(),
            binary: binary.into(),
            env: BTreeMap::new(),
            memory_mb: 512,
            memory_limit: MemoryLimit::default(),
            max_sandboxes: 10,
            concurrency: 1,
            keep_alive: Nanos::from_secs(600),
            cold_start_delay: Nanos::ZERO,
            init_timeout: Nanos::from_secs(10),
            timeout: Nanos::from_secs(3),
            bill_init: true,
        }
    }

    /// Sets one environment variable of the function.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> FunctionConfig {
        self.env.insert(key.into(), value.into());
        self
    }

    fn validate(&self) -> Result<(), LambdaError> {
        let invalid = |field: &'static str, reason: String| Err(LambdaError::InvalidConfig { field, reason });
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return invalid("name", format!("{:?} is not a function name (letters, digits, - and _)", self.name));
        }
        if !self.binary.is_file() {
            return invalid("binary", format!("{} is not a file", self.binary.display()));
        }
        if self.memory_mb == 0 {
            return invalid("memory_mb", "must be positive".into());
        }
        if self.max_sandboxes == 0 {
            return invalid("max_sandboxes", "must be positive".into());
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1".into());
        }
        if self.timeout == Nanos::ZERO || self.init_timeout == Nanos::ZERO {
            return invalid("timeout", "timeouts must be positive".into());
        }
        Ok(())
    }
}

/// What one invocation came to.
#[derive(Clone, Debug)]
pub struct InvokeOutcome {
    /// The request id the function saw (`Lambda-Runtime-Aws-Request-Id`).
    pub request_id: String,
    /// The function's response payload, or the error it ended with.
    pub result: Result<Bytes, FunctionError>,
    /// Whether a new sandbox was started for this invocation.
    pub cold: bool,
    /// Whether it ran on a pre-warmed sandbox ([`FunctionService::prewarm`]), which AWS bills at the
    /// provisioned-concurrency duration price.
    pub provisioned: bool,
    /// The sandbox that ran (or tried to run) it.
    pub sandbox: SandboxId,
    /// Injected delay + process start + function initialisation (zero when warm).
    pub init_duration: Nanos,
    /// From the event's delivery to the function's answer (or to the failure).
    pub duration: Nanos,
    /// What is billed: `duration` (+ `init_duration` when cold and init is billed), rounded up to 1 ms.
    pub billed_duration: Nanos,
    /// The configured memory size, MB.
    pub memory_mb: u32,
    /// The sandbox's peak resident memory so far, MB, where the platform reports it.
    pub max_memory_used_mb: Option<u32>,
    /// The whole call as the caller saw it, cold start included.
    pub latency: Nanos,
}

impl InvokeOutcome {
    /// Billed GB-seconds of this invocation (1 GB = 1024 MB, as AWS bills).
    pub fn billed_gb_s(&self) -> f64 {
        self.billed_duration.as_secs_f64() * self.memory_mb as f64 / 1024.0
    }
}

/// An invocation that reached the function platform but did not produce a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} function error {error_type}: {message}")]
pub struct FunctionError {
    /// Which way it failed.
    pub kind: FunctionErrorKind,
    /// The error type, as AWS names it (`Runtime.ExitError`, `Sandbox.Timedout`) or as the function
    /// reported it.
    pub error_type: String,
    /// A message for people, naming the cause.
    pub message: String,
}

/// The ways an invocation fails inside the function platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionErrorKind {
    /// The function answered the event with `/error`; the sandbox stays warm.
    Handled,
    /// The sandbox never became ready: `/init/error`, an exit before the first `/next`, or the init timeout.
    Init,
    /// The sandbox process died while it held the event.
    Exit,
    /// The invocation ran past the function timeout; the sandbox was killed.
    Timeout,
    /// The function's answer broke the Runtime API's rules (too large, or the event was abandoned).
    InvalidResponse,
}

/// Errors of the function service itself (AWS answers these with an HTTP error, not a function error).
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// Every sandbox the concurrency cap allows is busy or starting.
    #[error("throttled: all {limit} sandboxes of function {function} are busy or starting")]
    Throttled {
        /// The function.
        function: String,
        /// Its concurrency cap.
        limit: u32,
    },
    /// The request payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("request payload of {bytes} bytes is over the {limit}-byte limit")]
    PayloadTooLarge {
        /// The payload's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A configuration value is unusable.
    #[error("invalid function configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The function binary could not be started.
    #[error("cannot start function binary {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The loopback Runtime API of a sandbox could not be opened.
    #[error("cannot open a Runtime API endpoint on loopback: {0}")]
    RuntimeApi(std::io::Error),
    /// The service has been shut down.
    #[error("function service {0} is shut down")]
    ShutDown(String),
}

/// `n` as a [`std::time::Duration`], for tokio's timers.
fn to_std(n: Nanos) -> std::time::Duration {
    std::time::Duration::from_nanos(n.0)
}

/// Posts an initialisation failure to the Runtime API's `/init/error`, as a custom runtime must when its
/// initialisation fails (the `lambda_runtime` crate does this only for its own SnapStart hooks); `who`
/// prefixes what is printed when the report itself fails.
pub async fn report_init_error(who: &str, message: &str) {
    let client = match lambda_runtime_api_client::Client::builder().build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{who}: cannot reach the Runtime API to report the init error: {e}");
            return;
        }
    };
    let diagnostic =
        lambda_runtime::Diagnostic { error_type: "Runtime.InitError".into(), error_message: message.into() };
    let body = match serde_json::to_vec(&diagnostic) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("{who}: cannot encode the init error: {e}");
            return;
        }
    };
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .header("content-type", "application/json")
        .body(lambda_runtime_api_client::body::Body::from(body));
    match request {
        Ok(request) => {
            if let Err(e) = client.call(request).await {
                eprintln!("{who}: cannot report the init error: {e}");
            }
        }
        Err(e) => eprintln!("{who}: cannot build the init error report: {e}"),
    }
}
