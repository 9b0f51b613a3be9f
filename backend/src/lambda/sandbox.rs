//! One sandbox: a process of the function binary and its Runtime API endpoint.
//!
//! Dropping a [`Sandbox`] kills its process (`SIGKILL`, as Lambda ends an execution environment) and
//! closes its endpoint. A watcher task owns the child process: it reaps it, waits briefly for its output
//! to drain, and publishes an [`ExitReport`] that every waiter sees.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::runtime_api::{self, Answer, Invocation, Phase, RuntimeApi, lock};
use super::{FunctionConfig, FunctionError, FunctionErrorKind, LambdaError, MemoryLimit, SandboxId};

/// The region sandboxes are told they run in (`AWS_REGION`) and that their ARN names.
pub(crate) const REGION: &str = "us-east-1";

/// How many lines of a sandbox's output an [`ExitReport`] keeps.
const TAIL_LINES: usize = 12;
/// How many characters of one output line it keeps.
const TAIL_LINE_CHARS: usize = 400;
/// How long the watcher waits for a dead process's output to drain.
const DRAIN_WAIT: Duration = Duration::from_millis(200);

/// How a sandbox process ended.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExitReport {
    /// The exit status, as the platform prints it (`exit status: 1`, `signal: 9 (SIGKILL)`).
    pub status: String,
    /// The last lines the process wrote to stdout and stderr.
    pub output_tail: String,
}

impl ExitReport {
    /// The status, followed by the output tail when there is one.
    pub(crate) fn describe(&self) -> String {
        if self.output_tail.is_empty() {
            self.status.clone()
        } else {
            format!("{}; last output:\n{}", self.status, self.output_tail)
        }
    }
}

/// What became of one event handed to a sandbox.
pub(crate) enum Call {
    /// The function answered.
    Answered(Answer),
    /// The process died first.
    Died(ExitReport),
    /// The function timeout passed first.
    TimedOut,
    /// The function asked for another event without answering this one.
    Abandoned,
}

/// A running sandbox.
pub(crate) struct Sandbox {
    /// Its process id, while the platform reports one.
    pub pid: Option<u32>,
    api: RuntimeApi,
    exit: watch::Receiver<Option<ExitReport>>,
    kill: Option<oneshot::Sender<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

impl Sandbox {
    /// Opens an endpoint and starts a process of the function binary against it. Returns once the
    /// process runs; [`Sandbox::wait_ready`] waits for its initialisation.
    pub(crate) async fn spawn(config: &FunctionConfig, id: SandboxId) -> Result<Sandbox, LambdaError> {
        let arn = format!("arn:aws:lambda:{REGION}:000000000000:function:{}", config.name);
        let api = runtime_api::open(arn, config.concurrency).await.map_err(LambdaError::RuntimeApi)?;
        let mut command = Command::new(&config.binary);
        // The function's own variables first, so that the reserved ones below win, as on AWS.
        command
            .envs(&config.env)
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", config.memory_mb.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", config.name))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/[$LATEST]{id}"))
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("_HANDLER", "bootstrap")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if config.concurrency > 1 {
            command.env("AWS_LAMBDA_MAX_CONCURRENCY", config.concurrency.to_string());
        }
        if let MemoryLimit::AddressSpace { headroom_mb } = config.memory_limit {
            let bytes = (u64::from(config.memory_mb) + u64::from(headroom_mb)) * 1024 * 1024;
            // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
            // calls are allowed; `rlimit::setrlimit` is one `setrlimit(2)` call that allocates nothing on
            // Linux (RLIMIT_AS is supported there, so its error path that builds a message is not taken).
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes));
            }
        }
        let mut child =
            command.spawn().map_err(|source| LambdaError::Spawn { binary: config.binary.clone(), source })?;
        let pid = child.id();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let forwarders = vec![
            forward(child.stdout.take(), config.name.clone(), id, tail.clone()),
            forward(child.stderr.take(), config.name.clone(), id, tail.clone()),
        ];
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(watch_process(child, kill_rx, forwarders, tail, exit_tx));
        tracing::debug!(function = %config.name, sandbox = %id, pid, endpoint = %api.addr, "sandbox started");
        Ok(Sandbox { pid, api, exit, kill: Some(kill) })
    }

    /// Waits until the function asks for its first event, reports `/init/error`, exits, or `timeout`
    /// passes (and the caller then drops the sandbox, which kills it).
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> Result<(), FunctionError> {
        let mut phase = self.api.phase.clone();
        tokio::select! {
            biased;
            settled = phase.wait_for(|p| *p != Phase::Initializing) => {
                match settled.map(|p| p.clone()) {
                    Ok(Phase::Ready) => Ok(()),
                    Ok(Phase::InitFailed { error_type, message }) => Err(init_failed(error_type, message)),
                    Ok(Phase::Initializing) | Err(_) => Err(init_failed(
                        "Runtime.Unknown".into(),
                        "the sandbox's Runtime API endpoint went away".into(),
                    )),
                }
            }
            report = self.exited() => {
                // A runtime that reports `/init/error` exits right after; its reason is the better one.
                if let Phase::InitFailed { error_type, message } = self.api.phase.borrow().clone() {
                    return Err(init_failed(error_type, message));
                }
                Err(init_failed(
                    "Runtime.ExitError".into(),
                    format!("Runtime exited without providing a reason: {}", report.describe()),
                ))
            }
            () = tokio::time::sleep(timeout) => Err(init_failed(
                "Sandbox.Timedout".into(),
                format!("init phase timed out after {} ms", timeout.as_millis()),
            )),
        }
    }

    /// Hands one event to the function and waits for its answer, its death, or `timeout`.
    pub(crate) async fn call(&self, request_id: String, payload: Bytes, timeout: Duration) -> Call {
        let (reply, answer) = oneshot::channel();
        let invocation = Invocation { request_id, payload, deadline: SystemTime::now() + timeout, reply };
        // The inbox holds `concurrency` events and the service gives a sandbox no more at once, so it has room.
        if self.api.invocations.try_send(invocation).is_err() {
            return Call::Abandoned;
        }
        tokio::select! {
            // An answer that arrived before a death still counts.
            biased;
            answer = answer => match answer {
                Ok(answer) => Call::Answered(answer),
                Err(_) => Call::Abandoned,
            },
            report = self.exited() => Call::Died(report),
            () = tokio::time::sleep(timeout) => Call::TimedOut,
        }
    }

    /// How the process ended, once it has.
    pub(crate) fn exit_report(&self) -> Option<ExitReport> {
        self.exit.borrow().clone()
    }

    /// Waits until the process has ended.
    pub(crate) async fn exited(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone().unwrap_or_default(),
            Err(_) => ExitReport { status: "unknown (its watcher stopped)".into(), output_tail: String::new() },
        }
    }

    /// The process's peak resident memory so far, MiB (Linux's `VmHWM`); `None` elsewhere or once it ended.
    pub(crate) fn peak_rss_mb(&self) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        u32::try_from(kb.div_ceil(1024)).ok()
    }
}

fn init_failed(error_type: String, message: String) -> FunctionError {
    FunctionError { kind: FunctionErrorKind::Init, error_type, message }
}

/// Owns the child: reaps it, or kills it when told to or when the sandbox is dropped.
async fn watch_process(
    mut child: Child,
    kill: oneshot::Receiver<()>,
    forwarders: Vec<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    exit: watch::Sender<Option<ExitReport>>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        // Sent, or its sender dropped with the sandbox: either way the sandbox is done.
        _ = kill => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    for forwarder in forwarders {
        let _ = tokio::time::timeout(DRAIN_WAIT, forwarder).await;
    }
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let output_tail = lock(&tail).iter().cloned().collect::<Vec<_>>().join("\n");
    exit.send_replace(Some(ExitReport { status, output_tail }));
}

/// Forwards a sandbox's output to the log, line by line, keeping the last lines. Reads bytes, not text,
/// so that output which is not UTF-8 cannot stop the reading and leave the process blocked on a full pipe.
fn forward(
    stream: Option<impl AsyncRead + Unpin + Send + 'static>,
    function: String,
    id: SandboxId,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(stream) = stream else { return };
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            tracing::debug!(function = %function, sandbox = %id, "{line}");
            let mut kept: String = line.chars().take(TAIL_LINE_CHARS).collect();
            if kept.len() < line.len() {
                kept.push('…');
            }
            let mut tail = lock(&tail);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(kept);
        }
    })
}
