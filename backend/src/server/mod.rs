//! The Open Inference Protocol v2 REST server (axum on tokio): health, server and model metadata, model
//! readiness, inference through each model's dynamic [`Batcher`], and Prometheus `/metrics`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2/health/live` | 200 while the process serves |
//! | `GET /v2/health/ready` | 200 once every configured model is loaded |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{name}[/versions/{v}]` | model metadata: inputs and outputs with datatypes and shapes (404 for an unknown model) |
//! | `GET /v2/models/{name}[/versions/{v}]/ready` | 200 when loaded, 404 when unknown |
//! | `POST /v2/models/{name}[/versions/{v}]/infer` | inference; JSON tensors, or the binary tensor extension (`Inference-Header-Content-Length`) as Triton clients send by default |
//! | `GET /metrics` | OpenMetrics text |
//!
//! Errors are JSON `{"error": "..."}` naming the problem: 400 for malformed JSON, an unknown input, a wrong
//! datatype, shape or element count, inputs with different row counts, or a tensor over `[limits]`; 404 for
//! an unknown model or version; 408 when the body is not received within `limits.body_timeout_s`; 413 for a
//! body over `limits.max_body_bytes`; 429 with `Retry-After` when the model's queue is full; 503 with
//! `Retry-After` when its batcher has stopped; 504 when a request outlives the request timeout.
//!
//! Nothing sized by a client is allocated before it is checked ([`protocol::RequestLimits`]): the body is
//! read up to its limit, shapes are multiplied with overflow checks and bounded, and only then is the data
//! decoded. Metric labels are bounded: an unknown model counts under `model="(unknown)"`, and outcomes are a
//! closed set ([`metrics::RequestOutcome`]).

pub mod binary;
pub mod grpc;
pub mod metrics;
pub mod protocol;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

use crate::batcher::{BatchError, BatchObserver, BatchRecord, Batcher, BatcherConfig};
use crate::engine::{Engine, EngineConfig, EngineError, ModelMetadata, Tensor};
use crate::live::controller::ClusterError;
use crate::live::{ClusterConfig, ClusterMetrics, ClusterSetup, Controller, LiveError};
use hyscale_policies::Nanos;
use hyscale_policies::{Catalog, DropReason, InstanceId, RejectReason, Slo};
use metrics::{EngineLabel, Metrics, ModelLabel, RequestOutcome};
use protocol::{InferRequest, InferResponse, RequestLimits, ResponseTensor, check_request, metadata_response};

/// One served model, as the `[[models]]` tables of a live configuration list them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use.
    pub name: String,
    /// The ONNX file (relative to the configuration file).
    pub path: PathBuf,
    /// The version reported and accepted.
    #[serde(default = "one")]
    pub version: String,
    /// Largest batch.
    #[serde(default = "batch_one")]
    pub max_batch: u32,
    /// Longest the oldest request waits for a batch to fill, ms.
    #[serde(default)]
    pub max_wait_ms: f64,
    /// Most requests waiting; beyond it, 429.
    #[serde(default = "queue")]
    pub queue_capacity: usize,
    /// A request that finds the model idle starts its batch at once instead of waiting `max_wait_ms` for it to
    /// fill (`policies::BatchRule::idle_start`; the simulator's `sim.batch_idle_start`). Default false.
    #[serde(default)]
    pub idle_start: bool,
}

fn one() -> String {
    "1".into()
}

fn batch_one() -> u32 {
    1
}

fn queue() -> usize {
    1024
}

/// The server's settings (`hyscale serve --config live.toml`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on.
    #[serde(default = "listen")]
    pub listen: String,
    /// A request unanswered after this many seconds gets 504.
    #[serde(default = "timeout")]
    pub request_timeout_s: f64,
    /// `Retry-After` of 429 and 503 answers, seconds.
    #[serde(default = "retry")]
    pub retry_after_s: u32,
    /// The inference engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// How large a request may be, and how long its body may take to arrive.
    #[serde(default)]
    pub limits: RequestLimits,
    /// The models served.
    pub models: Vec<ModelConfig>,
    /// Also serve the protocol's gRPC service (KServe's `grpc_predict_v2.proto`, Triton's port 8001) here, on
    /// the same models, batchers and limits. Default: REST only.
    #[serde(default)]
    pub grpc_listen: Option<String>,
    /// Worker threads of the HTTP and gRPC services (1 to 1024). Default: one per core. The batchers run on
    /// their own threads, so with the engine's intra-op threads taking some cores, fewer server threads trade
    /// the rest less (`hyscale bench serve --server-threads` measures it).
    #[serde(default)]
    pub server_threads: Option<usize>,
}

impl ServeConfig {
    /// `server_threads`, checked: `None` for the default (one per core).
    pub fn checked_server_threads(&self) -> Result<Option<usize>, String> {
        check_server_threads(self.server_threads)
    }
}

/// A number of server worker threads, from a configuration or a command line: 1 to 1024 (`None`: the
/// default, one per core).
pub fn check_server_threads(n: Option<usize>) -> Result<Option<usize>, String> {
    match n {
        Some(n) if n == 0 || n > 1024 => Err(format!("server_threads must be 1 to 1024, got {n}")),
        n => Ok(n),
    }
}

fn listen() -> String {
    "127.0.0.1:8000".into()
}

fn timeout() -> f64 {
    30.0
}

fn retry() -> u32 {
    1
}

/// What can stop the server from starting.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A configuration value is wrong.
    #[error("invalid serve configuration: {0}")]
    Config(String),
    /// The engine or a model failed to load.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The cluster could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The gRPC service failed.
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The address could not be bound or the server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

struct Served {
    version: String,
    batcher: Batcher,
}

/// Shared state of the routes.
pub struct AppState {
    models: BTreeMap<String, Served>,
    /// Models served by a cluster under a policy, instead of their own batcher.
    clusters: BTreeMap<String, Arc<Controller>>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    retry_after: u32,
    limits: RequestLimits,
    /// Permits for the inference requests held at once (`limits.max_in_flight`).
    in_flight: Arc<tokio::sync::Semaphore>,
}

struct MetricsObserver(Arc<Metrics>);

impl BatchObserver for MetricsObserver {
    fn on_batch(&self, model: &str, record: &BatchRecord) {
        let label = ModelLabel { model: model.to_string() };
        self.0.batch_size.get_or_create(&label).observe(record.requests as f64);
        self.0.queue_depth.get_or_create(&label).set(record.queue_depth as i64);
    }
}

impl AppState {
    /// Initialises the engine, loads every model (paths relative to `base`) and starts its batcher.
    pub fn load(config: &ServeConfig, base: &Path) -> Result<AppState, ServeError> {
        AppState::load_with(config, base, Arc::new(Metrics::new()))
    }

    /// Stops the clusters' workers and function sandboxes (a server embedded in another program calls this
    /// after `serve` has returned; `hyscale serve` ends its process instead).
    pub fn shutdown(&self) {
        for c in self.clusters.values() {
            c.shutdown();
        }
    }

    /// As [`AppState::load`], and starts a `[cluster]` (the live configuration's table, read apart from
    /// `ServeConfig`) with its catalog and SLO (loaded by the caller: the `hyscale` binary reads them with the
    /// simulator's scenario loader). Must run inside a tokio runtime.
    pub async fn start(
        config: &ServeConfig,
        base: &Path,
        cluster: Option<(ClusterConfig, Arc<Catalog>, Slo)>,
    ) -> Result<AppState, ServeError> {
        let Some((c, catalog, slo)) = cluster else {
            return AppState::load(config, base);
        };
        let c = &c;
        let m =
            config.models.iter().find(|m| m.name == c.model).ok_or_else(|| {
                ServeError::Config(format!("[cluster] model '{}' is not among the [[models]]", c.model))
            })?;
        let mut metrics = Metrics::new();
        let cluster_metrics = ClusterMetrics::register(&mut metrics.registry);
        let metrics = Arc::new(metrics);
        let mut state = AppState::load_with(config, base, metrics.clone())?;
        let engine = Engine::get().ok_or_else(|| ServeError::Config("no engine initialised".into()))?;
        let metadata = state.models[&c.model].batcher.metadata().clone();
        let setup = ClusterSetup {
            config: c.clone(),
            catalog,
            slo,
            model_path: std::path::absolute(base.join(&m.path)).unwrap_or_else(|_| base.join(&m.path)),
            metadata,
            queue_capacity: m.queue_capacity,
            engine,
            base: base.to_path_buf(),
        };
        let observer = Arc::new(MetricsObserver(metrics.clone()));
        let controller = Controller::start(setup, metrics, cluster_metrics, observer).await?;
        state.clusters.insert(c.model.clone(), controller);
        Ok(state)
    }

    fn load_with(config: &ServeConfig, base: &Path, metrics: Arc<Metrics>) -> Result<AppState, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::Config("no [[models]] to serve".into()));
        }
        if !(config.request_timeout_s.is_finite() && config.request_timeout_s > 0.0) {
            return Err(ServeError::Config(format!(
                "request_timeout_s must be positive, got {}",
                config.request_timeout_s
            )));
        }
        config.limits.validate().map_err(ServeError::Config)?;
        let engine = Engine::init(&config.engine)?;
        tracing::info!(engine = %engine.describe(), "inference engine");
        for note in engine.notes() {
            tracing::warn!("{note}");
        }
        let mut models = BTreeMap::new();
        for m in &config.models {
            if models.contains_key(&m.name) {
                return Err(ServeError::Config(format!("model '{}' is listed twice", m.name)));
            }
            if !(m.max_wait_ms.is_finite() && m.max_wait_ms >= 0.0) || m.max_batch == 0 || m.queue_capacity == 0 {
                return Err(ServeError::Config(format!(
                    "model '{}': max_batch and queue_capacity must be at least 1 and max_wait_ms >= 0",
                    m.name
                )));
            }
            let session = engine.load(&base.join(&m.path))?;
            metrics
                .engine
                .get_or_create(&EngineLabel {
                    engine: engine.name().into(),
                    version: engine.version().into(),
                    device: session.device().name().into(),
                })
                .set(1);
            tracing::info!(model = %m.name, path = %m.path.display(), max_batch = m.max_batch, max_wait_ms = m.max_wait_ms, device = session.device().name(), "model loaded");
            let batcher = Batcher::spawn(
                session,
                BatcherConfig::new(m.max_batch, Nanos::from_millis_f64(m.max_wait_ms), m.queue_capacity)
                    .with_idle_start(m.idle_start),
                Arc::new(MetricsObserver(metrics.clone())),
            );
            models.insert(m.name.clone(), Served { version: m.version.clone(), batcher });
        }
        Ok(AppState {
            models,
            clusters: BTreeMap::new(),
            metrics,
            timeout: Duration::from_secs_f64(config.request_timeout_s),
            retry_after: config.retry_after_s,
            limits: config.limits.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_in_flight.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
        })
    }

    /// Counts one inference request's outcome and latency (REST and gRPC alike).
    fn record(&self, name: &str, outcome: RequestOutcome, started: Instant) {
        // A name clients made up must not become a label: unknown models share one series.
        let model = if self.models.contains_key(name) { name } else { metrics::UNKNOWN_MODEL };
        self.metrics.count(model, outcome);
        self.metrics
            .latency
            .get_or_create(&ModelLabel { model: model.to_string() })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The metrics, for callers that add their own series (workers, controller).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/metrics", get(metrics_text))
        .route("/v2/cluster/{name}", get(cluster_status))
        .route("/v2/cluster/{name}/instances/{id}/interrupt", post(cluster_interrupt))
        .with_state(state)
}

/// Binds `listen` and tells `bound` the address (port 0: the one chosen): REST and gRPC alike.
async fn bind(
    listen: &str,
    bound: impl FnOnce(SocketAddr),
) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Io { what: format!("binding {listen}"), source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io { what: "local address".into(), source })?;
    bound(addr);
    Ok((listener, addr))
}

/// Serves `state` on `listen` until `shutdown` resolves; returns the bound address through `bound` first.
pub async fn serve(
    state: Arc<AppState>,
    listen: &str,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (listener, addr) = bind(listen, bound).await?;
    tracing::info!(%addr, "serving the Open Inference Protocol v2");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { what: "serving".into(), source })
}

/// An error answer: `{"error": message}` with a status and, for 429/503, `Retry-After`.
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into(), retry_after: None }
}

impl AppState {
    fn model(&self, name: &str, version: Option<&str>) -> Result<&Served, ApiError> {
        let served = self.models.get(name).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown model '{name}' (served: {})",
                    self.models.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        match version {
            Some(v) if v != served.version => Err(error(
                StatusCode::NOT_FOUND,
                format!("model '{name}' has no version '{v}' (served: {})", served.version),
            )),
            _ => Ok(served),
        }
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.models.is_empty() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

async fn server_metadata() -> impl IntoResponse {
    axum::Json(json!({ "name": "hyscale", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }))
}

async fn model_metadata(State(state): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    metadata_of(&state, &name, None)
}

async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Response {
    metadata_of(&state, &name, Some(&version))
}

fn metadata_of(state: &AppState, name: &str, version: Option<&str>) -> Response {
    match state.model(name, version) {
        Ok(m) => axum::Json(metadata_response(name, &m.version, m.batcher.metadata())).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn model_ready(State(state): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    state.model(&name, None).map(|_| StatusCode::OK).into_response()
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Response {
    state.model(&name, Some(&version)).map(|_| StatusCode::OK).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    for (name, m) in &state.models {
        state
            .metrics
            .queue_depth
            .get_or_create(&ModelLabel { model: name.clone() })
            .set(m.batcher.queue_depth() as i64);
    }
    for c in state.clusters.values() {
        c.export_metrics();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn infer(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_on(&state, &name, None, &headers, body).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_on(&state, &name, Some(&version), &headers, body).await
}

async fn infer_on(state: &AppState, name: &str, version: Option<&str>, headers: &HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (response, outcome) = match infer_inner(state, name, version, headers, body).await {
        Ok(r) => (r, RequestOutcome::ok),
        Err(e) => {
            let outcome = RequestOutcome::of_status(e.status);
            (e.into_response(), outcome)
        }
    };
    state.record(name, outcome, started);
    response
}

/// Reads a request body within `limits`: 413 past `max_body_bytes` (announced or received), 408 when it
/// has not all arrived within `body_timeout_s`, 400 when the connection breaks.
/// Reads a refused request's body and throws it away, frame by frame (nothing kept), within the body limits,
/// so that the refusal reaches the client: closing a connection with unread data in it resets it, and the
/// client would see a broken connection instead of the 429 or 503.
async fn drain(limits: &RequestLimits, body: Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(limits.body_timeout_s);
    while read <= limits.max_body_bytes {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

async fn read_body(limits: &RequestLimits, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes (limits.max_body_bytes)", limits.max_body_bytes),
        )
    };
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let deadline = Duration::from_secs_f64(limits.body_timeout_s);
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {} s (limits.body_timeout_s)", limits.body_timeout_s),
        )),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(too_large())
            } else {
                Err(error(StatusCode::BAD_REQUEST, format!("reading the request body: {inner}")))
            }
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// An inference request's body decoded and checked against the model and the limits: what the server runs.
#[derive(Debug)]
pub struct DecodedInfer {
    /// The request (its outputs and parameters shape the response).
    pub request: InferRequest,
    /// The inputs, in the model's order.
    pub tensors: Vec<Tensor>,
    /// Whether the outputs go back as binary data.
    pub binary_outputs: bool,
}

/// Decodes an Open Inference Protocol v2 request body (JSON, or JSON followed by binary tensors as the
/// `Inference-Header-Content-Length` header says) and checks it against `meta` and `limits`; the error is
/// the 400's message. No allocation is sized by the client before the shape has been checked.
pub fn decode_infer(
    headers: &HeaderMap,
    body: &[u8],
    meta: &ModelMetadata,
    limits: &RequestLimits,
) -> Result<DecodedInfer, String> {
    let (mut request, binary_outputs) = binary::parse(headers, body)?;
    let tensors = tensors_of(&mut request, meta, limits)?;
    Ok(DecodedInfer { request, tensors, binary_outputs })
}

/// The model's inputs from a parsed request (REST or gRPC), checked against the model and the limits; the
/// outputs it names must exist.
fn tensors_of(request: &mut InferRequest, meta: &ModelMetadata, limits: &RequestLimits) -> Result<Vec<Tensor>, String> {
    let checked = check_request(request, meta, limits)?;
    if let Some(wanted) = &request.outputs
        && let Some(unknown) = wanted.iter().find(|o| !meta.outputs.iter().any(|m| m.name == o.name))
    {
        return Err(format!("unknown output '{}'", unknown.name));
    }
    checked
        .into_iter()
        .map(|c| Tensor::new(c.shape, c.data).ok_or_else(|| "tensor data does not match its shape".to_string()))
        .collect()
}

async fn infer_inner(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let served = state.model(name, version)?;
    // Shed before the body is read or decoded: under overload, a refused request costs neither memory nor
    // decoding time, and the requests admitted keep the CPU.
    let _permit = match admit(state, name, served) {
        Ok(p) => p,
        Err(e) => {
            drain(&state.limits, body).await;
            return Err(e);
        }
    };
    let body = read_body(&state.limits, headers, body).await?;
    // Its place in the queue, held while it is decoded (not while its body arrives: a slow upload must not
    // shut the model to others).
    let place = hold_place(state, name, served)?;
    let meta = served.batcher.metadata();
    let decoded = decode_infer(headers, &body, meta, &state.limits).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let DecodedInfer { request, tensors, binary_outputs } = decoded;
    let outputs = run_inference(state, name, served, place, tensors).await?;
    let response = response_of(name, &served.version, meta, &request, outputs);
    Ok(if binary_outputs { binary::respond(response) } else { axum::Json(response).into_response() })
}

/// Admission, before a request's tensors are read (REST and gRPC alike): a permit of `limits.max_in_flight`
/// (503 without), and room in the model's queue (429).
fn admit(state: &AppState, name: &str, served: &Served) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let Ok(permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the server holds {} requests already (limits.max_in_flight); retry later",
                state.limits.max_in_flight
            ),
            retry_after: Some(state.retry_after),
        });
    };
    if !state.clusters.contains_key(name) && served.batcher.room() == 0 {
        return Err(queue_full(state, name, served.batcher.config().queue_capacity));
    }
    Ok(permit)
}

/// A place held in the model's queue for a request about to be decoded (429 without): places count against
/// the queue's capacity, so a burst cannot have more requests decoding than the queue holds. None for a
/// model served by a cluster, which queues on its own.
fn hold_place(state: &AppState, name: &str, served: &Served) -> Result<Option<crate::batcher::Place>, ApiError> {
    if state.clusters.contains_key(name) {
        return Ok(None);
    }
    served.batcher.reserve().map(Some).ok_or_else(|| queue_full(state, name, served.batcher.config().queue_capacity))
}

/// The 429 for a model whose queue (of `capacity`) has no room.
fn queue_full(state: &AppState, name: &str, capacity: usize) -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: format!("model '{name}': queue full ({capacity} requests waiting); retry later"),
        retry_after: Some(state.retry_after),
    }
}

/// Runs checked inputs through the model's cluster or batcher within the request timeout (REST and gRPC), in
/// the queue's `place` held for them while they were decoded.
async fn run_inference(
    state: &AppState,
    name: &str,
    served: &Served,
    place: Option<crate::batcher::Place>,
    tensors: Vec<Tensor>,
) -> Result<Vec<Tensor>, ApiError> {
    let timed_out = || {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("model '{name}': no result within {:.1} s", state.timeout.as_secs_f64()),
        )
    };
    if let Some(controller) = state.clusters.get(name) {
        return match tokio::time::timeout(state.timeout, controller.infer(tensors)).await {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(cluster_error(state, name, e)),
            Ok(Ok(outputs)) => Ok(outputs),
        };
    }
    match tokio::time::timeout(state.timeout, served.batcher.infer_in(place, tensors)).await {
        Err(_) => Err(timed_out()),
        Ok(Err(BatchError::QueueFull { model, capacity })) => Err(queue_full(state, &model, capacity)),
        Ok(Err(BatchError::Stopped { model })) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("model '{model}' is not serving"),
            retry_after: Some(state.retry_after),
        }),
        Ok(Err(BatchError::Engine(e))) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Ok(Ok(outputs)) => Ok(outputs),
    }
}

/// The answer to a request the cluster could not serve: 429 (queue full, throttled) or 503 (any other
/// rejection) with `Retry-After` and the reason; 502 when the request was dropped after admission.
fn cluster_error(state: &AppState, name: &str, e: LiveError) -> ApiError {
    match e {
        LiveError::Rejected(r) => ApiError {
            status: match r {
                RejectReason::QueueFull | RejectReason::Throttled => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            message: format!("model '{name}': rejected ({}); retry later", r.key()),
            retry_after: Some(state.retry_after),
        },
        LiveError::Dropped(DropReason::RerouteFailed(r), why) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("model '{name}': dropped ({}): {why}", DropReason::RerouteFailed(r).key()),
            retry_after: Some(state.retry_after),
        },
        LiveError::Dropped(d, why) => {
            error(StatusCode::BAD_GATEWAY, format!("model '{name}': dropped ({}): {why}", d.key()))
        }
        LiveError::Engine(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The response to `request`: the outputs it asked for (all by default), in the model's order.
fn response_of(
    name: &str,
    version: &str,
    meta: &ModelMetadata,
    request: &InferRequest,
    outputs: Vec<Tensor>,
) -> InferResponse {
    let wanted = |n: &str| request.outputs.as_ref().is_none_or(|w| w.iter().any(|o| o.name == n));
    let outputs: Vec<ResponseTensor> = meta
        .outputs
        .iter()
        .zip(outputs)
        .filter(|(info, _)| wanted(&info.name))
        .map(|(info, t)| ResponseTensor {
            name: info.name.clone(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            datatype: "FP32",
            data: t.data,
        })
        .collect();
    InferResponse { model_name: name.to_string(), model_version: version.to_string(), id: request.id.clone(), outputs }
}

fn cluster_of<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<Controller>, ApiError> {
    state
        .clusters
        .get(name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("model '{name}' is not served by a cluster")))
}

/// `GET /v2/cluster/{model}`: the controller's counters and instances, as JSON.
async fn cluster_status(State(state): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    match cluster_of(&state, &name) {
        Ok(c) => axum::Json(c.status()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v2/cluster/{model}/instances/{id}/interrupt[?notice_s=S]`: a spot interruption notice to one
/// worker, taken after `notice_s` wall-clock seconds (default: the cluster's scaled `spot_notice_s`).
async fn cluster_interrupt(
    State(state): State<Arc<AppState>>,
    UrlPath((name, id)): UrlPath<(String, u64)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let notice = query.as_deref().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("notice_s="));
    let notice = match notice.map(str::parse::<f64>) {
        None => None,
        Some(Ok(s)) if s.is_finite() && s >= 0.0 => Some(Nanos::from_secs_f64(s)),
        Some(_) => return error(StatusCode::BAD_REQUEST, "notice_s must be a non-negative number").into_response(),
    };
    let c = match cluster_of(&state, &name) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match c.interrupt(InstanceId(id), notice).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(m) => error(StatusCode::CONFLICT, m).into_response(),
    }
}
