//! The Lambda Runtime API of one sandbox, served on its own loopback port.
//!
//! The four routes of the API's 2018-06-01 version that a runtime uses (as `lambda_runtime` does):
//! - `GET /2018-06-01/runtime/invocation/next`: the first call marks the end of initialisation; each call
//!   then waits (a long poll, no timeout: AWS freezes an idle sandbox at this point) for the next event,
//!   returned with its `Lambda-Runtime-*` headers;
//! - `POST /2018-06-01/runtime/invocation/{id}/response` and `…/{id}/error`: the event's answer;
//! - `POST /2018-06-01/runtime/init/error`: initialisation failed, with a reason.
//!
//! The service side talks to it through channels: it hands one [`Invocation`] at a time to the inbox and
//! gets one [`Answer`] back on the invocation's own channel; it watches the sandbox's [`Phase`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::MAX_PAYLOAD_BYTES;

/// The largest body the endpoint reads; larger answers than [`MAX_PAYLOAD_BYTES`] but below this are read
/// so the invocation can fail with a clear error rather than wait for its timeout.
const BODY_READ_LIMIT: usize = 4 * MAX_PAYLOAD_BYTES;

/// One event on its way to the function.
pub(crate) struct Invocation {
    /// The request id (`Lambda-Runtime-Aws-Request-Id`).
    pub request_id: String,
    /// The event, as the caller sent it.
    pub payload: Bytes,
    /// When the function times out (`Lambda-Runtime-Deadline-Ms`).
    pub deadline: SystemTime,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// The function's answer to one event.
#[derive(Debug)]
pub(crate) struct Answer {
    /// What it said.
    pub kind: AnswerKind,
    /// From the event's delivery (the `/next` response) to the answer.
    pub duration: Duration,
}

/// What the function answered.
#[derive(Debug)]
pub(crate) enum AnswerKind {
    /// `/response`, with the payload.
    Response(Bytes),
    /// `/error`, with its type and message.
    Error {
        /// `Lambda-Runtime-Function-Error-Type`, or the body's `errorType`.
        error_type: String,
        /// The body's `errorMessage`, or the body itself.
        message: String,
    },
    /// `/response` with a payload over [`MAX_PAYLOAD_BYTES`], of this many bytes.
    TooLarge(usize),
}

/// Where a sandbox is in its life, as the Runtime API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started; not yet asked for an event.
    Initializing,
    /// Asked for its first event: initialisation is over.
    Ready,
    /// Reported `/init/error`.
    InitFailed {
        /// The reported error type.
        error_type: String,
        /// The reported message.
        message: String,
    },
}

/// A running endpoint. Dropping it stops the server.
pub(crate) struct RuntimeApi {
    /// The `host:port` a runtime finds in `AWS_LAMBDA_RUNTIME_API`.
    pub addr: SocketAddr,
    /// The inbox of events (capacity one: a sandbox runs one event at a time).
    pub invocations: mpsc::Sender<Invocation>,
    /// The sandbox's phase.
    pub phase: watch::Receiver<Phase>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct ApiState {
    function_arn: String,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// Events delivered and not yet answered, oldest first: at most `concurrency`.
    outstanding: Mutex<std::collections::VecDeque<Current>>,
    /// Events the function may hold at once (`AWS_LAMBDA_MAX_CONCURRENCY`; 1 on classic Lambda).
    concurrency: usize,
    phase: watch::Sender<Phase>,
}

/// The event the function holds.
struct Current {
    request_id: String,
    reply: oneshot::Sender<Answer>,
    delivered: Instant,
}

/// The body of `/error` and `/init/error` (the Runtime API's error document).
#[derive(Deserialize)]
struct ErrorDocument {
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(rename = "errorMessage", default)]
    error_message: String,
}

/// Opens an endpoint on an ephemeral loopback port for the function with this ARN.
pub(crate) async fn open(function_arn: String, concurrency: u32) -> std::io::Result<RuntimeApi> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let concurrency = concurrency.max(1) as usize;
    let (invocations, inbox) = mpsc::channel(concurrency);
    let (phase_tx, phase) = watch::channel(Phase::Initializing);
    let state = Arc::new(ApiState {
        function_arn,
        inbox: tokio::sync::Mutex::new(inbox),
        outstanding: Mutex::new(std::collections::VecDeque::new()),
        concurrency,
        phase: phase_tx,
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(BODY_READ_LIMIT))
        .with_state(state);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(%addr, error = %e, "Runtime API endpoint stopped");
        }
    });
    Ok(RuntimeApi { addr, invocations, phase, server })
}

async fn next(State(state): State<Arc<ApiState>>) -> Response {
    state.phase.send_if_modified(|phase| {
        let first = *phase == Phase::Initializing;
        if first {
            *phase = Phase::Ready;
        }
        first
    });
    let invocation = state.inbox.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return error_response(StatusCode::GONE, "SandboxShutDown", "the sandbox is shutting down");
    };
    let deadline_ms = invocation.deadline.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        ("lambda-runtime-aws-request-id", invocation.request_id.clone()),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", state.function_arn.clone()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    // A function that asks for a new event while it holds as many as it may (one, unless it runs
    // concurrently) abandons its oldest: dropping that event's reply channel, which its caller sees.
    let abandoned = {
        let mut outstanding = lock(&state.outstanding);
        let abandoned = if outstanding.len() >= state.concurrency { outstanding.pop_front() } else { None };
        outstanding.push_back(Current {
            request_id: invocation.request_id,
            reply: invocation.reply,
            delivered: Instant::now(),
        });
        abandoned
    };
    drop(abandoned);
    (StatusCode::OK, headers, invocation.payload).into_response()
}

async fn response(State(state): State<Arc<ApiState>>, Path(id): Path<String>, body: Bytes) -> Response {
    let Some(current) = take_current(&state, &id) else {
        return unknown_request(&id);
    };
    let duration = current.delivered.elapsed();
    if body.len() > MAX_PAYLOAD_BYTES {
        let _ = current.reply.send(Answer { kind: AnswerKind::TooLarge(body.len()), duration });
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("response of {} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit", body.len()),
        );
    }
    let _ = current.reply.send(Answer { kind: AnswerKind::Response(body), duration });
    accepted()
}

async fn error(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(current) = take_current(&state, &id) else {
        return unknown_request(&id);
    };
    let duration = current.delivered.elapsed();
    let (error_type, message) = read_error(&headers, &body);
    let _ = current.reply.send(Answer { kind: AnswerKind::Error { error_type, message }, duration });
    accepted()
}

async fn init_error(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (error_type, message) = read_error(&headers, &body);
    state.phase.send_replace(Phase::InitFailed { error_type, message });
    accepted()
}

/// The error type and message of an error document, from the header and the body, leniently: a runtime
/// that sends plain text still gets its message through.
fn read_error(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let header_type =
        headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    match serde_json::from_slice::<ErrorDocument>(body) {
        Ok(doc) => {
            let error_type = if doc.error_type.is_empty() {
                header_type.unwrap_or_else(|| "Unhandled".to_owned())
            } else {
                doc.error_type
            };
            (error_type, doc.error_message)
        }
        Err(_) => (header_type.unwrap_or_else(|| "Unhandled".to_owned()), String::from_utf8_lossy(body).into_owned()),
    }
}

fn take_current(state: &ApiState, id: &str) -> Option<Current> {
    let mut outstanding = lock(&state.outstanding);
    let i = outstanding.iter().position(|c| c.request_id == id)?;
    outstanding.remove(i)
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"OK"}"#).into_response()
}

fn unknown_request(id: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "InvalidRequestID", &format!("no event {id} is outstanding"))
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Locks `m`, recovering from poisoning: the guarded values stay consistent at every await-free step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
