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
//! datatype, shape or element count; 404 for an unknown model or version; 429 with `Retry-After` when the
//! model's queue is full; 503 with `Retry-After` when its batcher has stopped; 504 when a request outlives
//! the request timeout.

mod binary;
pub mod metrics;
pub mod protocol;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

use crate::batcher::{BatchError, BatchObserver, BatchRecord, Batcher, BatcherConfig};
use crate::engine::{Engine, EngineConfig, EngineError, Tensor};
use hyscale_policies::Nanos;
use metrics::{EngineLabel, Metrics, ModelLabel};
use protocol::{InferRequest, InferResponse, ResponseTensor, check_request, metadata_response};

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
    /// The models served.
    pub models: Vec<ModelConfig>,
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
    metrics: Arc<Metrics>,
    timeout: Duration,
    retry_after: u32,
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
        if config.models.is_empty() {
            return Err(ServeError::Config("no [[models]] to serve".into()));
        }
        if !(config.request_timeout_s.is_finite() && config.request_timeout_s > 0.0) {
            return Err(ServeError::Config(format!(
                "request_timeout_s must be positive, got {}",
                config.request_timeout_s
            )));
        }
        let engine = Engine::init(&config.engine)?;
        tracing::info!(engine = %engine.describe(), "inference engine");
        for note in engine.notes() {
            tracing::warn!("{note}");
        }
        let metrics = Arc::new(Metrics::new());
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
                BatcherConfig::new(m.max_batch, Nanos::from_millis_f64(m.max_wait_ms), m.queue_capacity),
                Arc::new(MetricsObserver(metrics.clone())),
            );
            models.insert(m.name.clone(), Served { version: m.version.clone(), batcher });
        }
        Ok(AppState {
            models,
            metrics,
            timeout: Duration::from_secs_f64(config.request_timeout_s),
            retry_after: config.retry_after_s,
        })
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
        .with_state(state)
}

/// Serves `state` on `listen` until `shutdown` resolves; returns the bound address through `bound` first.
pub async fn serve(
    state: Arc<AppState>,
    listen: &str,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Io { what: format!("binding {listen}"), source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io { what: "local address".into(), source })?;
    bound(addr);
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
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn infer(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_on(&state, &name, None, &headers, &body).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_on(&state, &name, Some(&version), &headers, &body).await
}

async fn infer_on(state: &AppState, name: &str, version: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    let started = Instant::now();
    let (response, outcome) = match infer_inner(state, name, version, headers, body).await {
        Ok(r) => (r, "ok"),
        Err(e) => {
            let outcome = match e.status {
                StatusCode::BAD_REQUEST => "bad_request",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::TOO_MANY_REQUESTS => "queue_full",
                StatusCode::GATEWAY_TIMEOUT => "timed_out",
                _ => "error",
            };
            (e.into_response(), outcome)
        }
    };
    state.metrics.count(name, outcome);
    state
        .metrics
        .latency
        .get_or_create(&ModelLabel { model: name.to_string() })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn infer_inner(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let served = state.model(name, version)?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let (request, binary_outputs): (InferRequest, bool) = binary::parse(headers, body).map_err(bad)?;
    let meta = served.batcher.metadata();
    let checked = check_request(&request, meta).map_err(bad)?;
    if let Some(wanted) = &request.outputs
        && let Some(unknown) = wanted.iter().find(|o| !meta.outputs.iter().any(|m| m.name == o.name))
    {
        return Err(bad(format!("unknown output '{}'", unknown.name)));
    }
    let tensors: Vec<Tensor> = checked
        .into_iter()
        .map(|c| Tensor::new(c.shape, c.data).ok_or_else(|| bad("tensor data does not match its shape".into())))
        .collect::<Result<_, _>>()?;
    let outputs = match tokio::time::timeout(state.timeout, served.batcher.infer(tensors)).await {
        Err(_) => {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("model '{name}': no result within {:.1} s", state.timeout.as_secs_f64()),
            ));
        }
        Ok(Err(BatchError::QueueFull { model, capacity })) => {
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("model '{model}': queue full ({capacity} requests waiting); retry later"),
                retry_after: Some(state.retry_after),
            });
        }
        Ok(Err(BatchError::Stopped { model })) => {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("model '{model}' is not serving"),
                retry_after: Some(state.retry_after),
            });
        }
        Ok(Err(BatchError::Engine(e))) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Ok(Ok(outputs)) => outputs,
    };
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
    let response = InferResponse {
        model_name: name.to_string(),
        model_version: served.version.clone(),
        id: request.id.clone(),
        outputs,
    };
    Ok(if binary_outputs { binary::respond(response) } else { axum::Json(response).into_response() })
}
