//! `hyscale-fn`: an inference function for AWS Lambda and for hyscale's local Lambda service.
//!
//! A custom-runtime function built on the official `lambda_runtime` crate: at initialisation it loads the
//! ONNX model named by `HYSCALE_MODEL_PATH` into the engine `HYSCALE_ENGINE` names (`auto`, the default:
//! ONNX Runtime when its library is found, else tract; see `hyscale_backend::engine`) (once per sandbox: this load is what makes a cold start of an
//! inference function slow); each event is a batch of input tensors ([`InferEvent`]), answered with the
//! model's outputs ([`InferResult`]). A model that cannot be loaded is reported on the Runtime API's
//! `/init/error`, with the path and the reason, before the process exits.
//!
//! Deploying it to AWS: build it for the target (`cargo build --release --bin hyscale-fn
//! --target x86_64-unknown-linux-gnu`), name the binary `bootstrap`, zip it with the model, create the
//! function on the `provided.al2023` runtime, and set `HYSCALE_MODEL_PATH=/var/task/mlp.onnx`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use hyscale_backend::engine::{self, Engine, EngineChoice, EngineConfig, Session};
use hyscale_backend::lambda::payload::{FP32, InferEvent, InferResult, Tensor};
use hyscale_backend::lambda::{MODEL_PATH_ENV, report_init_error};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hyscale-fn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The platform that started this sandbox, before anything else can take time.
    let parent = std::os::unix::process::parent_id();
    match runtime.block_on(run(parent)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyscale-fn: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(parent: u32) -> Result<(), lambda_runtime::Error> {
    let model = match load_model() {
        Ok(model) => model,
        Err(e) => {
            report_init_error("hyscale-fn", &e.to_string()).await;
            return Err(e.into());
        }
    };
    eprintln!("hyscale-fn: loaded {} on {}", model.session.name(), model.engine);
    // One loaded model for every event the sandbox runs: one at a time on AWS's classic Lambda (the
    // runtime's sequential loop, which ends when the Runtime API goes away), up to
    // `AWS_LAMBDA_MAX_CONCURRENCY` at once where it is above 1 (Lambda Managed Instances, or the local service
    // with `concurrency` above 1), which `run_concurrent` polls for. Inference takes the model in turn (the
    // runtime is single-threaded: one vCPU's worth), events interleave while they wait.
    let model = Arc::new(Mutex::new(model));
    let handler = service_fn(move |event: LambdaEvent<InferEvent>| {
        let model = model.clone();
        async move { handle(&model, event.payload).await }
    });
    let concurrent = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").ok().and_then(|v| v.parse::<u32>().ok());
    if concurrent.is_some_and(|n| n > 1) {
        // The concurrent loop retries a failed poll for ever, without yielding to other tasks; a sandbox whose
        // platform died (its parent killed) must not live on polling nothing, so a thread of its own ends it
        // when it is orphaned.
        std::thread::spawn(move || exit_when_orphaned(parent));
        lambda_runtime::run_concurrent(handler).await
    } else {
        lambda_runtime::run(handler).await
    }
}

/// Ends the process once its parent (`parent`, read first thing at start) is gone and it was re-parented:
/// checked twice a second. Nothing is printed: its standard error went to the parent, and writing to it now
/// would fail.
fn exit_when_orphaned(parent: u32) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(1);
        }
    }
}

async fn handle(model: &Mutex<Model>, event: InferEvent) -> Result<InferResult, Diagnostic> {
    if event.sleep_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(event.sleep_ms.min(MAX_SLEEP_MS))).await;
    }
    model
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .infer(&event.inputs)
        .map_err(|message| Diagnostic { error_type: "InvalidInput".into(), error_message: message })
}

/// The environment variable that picks the engine: `auto` (default), `tract` or `onnxruntime`.
const ENGINE_ENV: &str = "HYSCALE_ENGINE";

/// The longest synthetic wait an event may ask for.
const MAX_SLEEP_MS: u64 = 15 * 60 * 1000;

/// Why the function could not initialise.
#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("{MODEL_PATH_ENV} is not set: it must name the ONNX model to serve")]
    NoModelPath,
    #[error("cannot start the inference engine: {reason}")]
    Engine { reason: String },
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
}

fn load_model() -> Result<Model, InitError> {
    let path = std::env::var(MODEL_PATH_ENV).map_err(|_| InitError::NoModelPath)?;
    let engine = match std::env::var(ENGINE_ENV) {
        Ok(choice) => choice.parse().map_err(|reason| InitError::Engine { reason })?,
        Err(_) => EngineChoice::Auto,
    };
    let config = EngineConfig { engine, intra_threads: Some(lambda_vcpus()), ..EngineConfig::default() };
    let engine = Engine::init(&config).map_err(|e| InitError::Engine { reason: e.to_string() })?;
    // The engine logs these through `tracing`, which this binary does not print; they matter here (an
    // ONNX Runtime that cannot load under the memory cap makes `auto` fall back to tract).
    for note in engine.notes() {
        eprintln!("hyscale-fn: {note}");
    }
    let session = engine.load(Path::new(&path)).map_err(|e| InitError::Load { path, reason: e.to_string() })?;
    Ok(Model { session, engine: engine.name() })
}

/// The vCPUs Lambda gives a function of the configured memory (one per 1,769 MB, at least one), used as
/// the engine's thread count so a sandbox computes with the parallelism it would have on AWS.
fn lambda_vcpus() -> usize {
    let memory_mb: usize =
        std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok().and_then(|m| m.parse().ok()).unwrap_or(128);
    (memory_mb / 1769).max(1)
}

/// The loaded model.
struct Model {
    session: Session,
    engine: &'static str,
}

impl Model {
    /// Runs one batch: the event's tensors bound to the model's inputs by name (or, unnamed, in order).
    fn infer(&mut self, inputs: &[Tensor]) -> Result<InferResult, String> {
        let declared = &self.session.metadata().inputs;
        if inputs.len() != declared.len() {
            let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "{} input tensors given, the model takes {} ({})",
                inputs.len(),
                declared.len(),
                names.join(", ")
            ));
        }
        let mut ordered = Vec::with_capacity(declared.len());
        for (position, info) in declared.iter().enumerate() {
            let tensor = inputs
                .iter()
                .find(|t| t.name == info.name)
                .or_else(|| inputs.get(position).filter(|t| t.name.is_empty()))
                .ok_or_else(|| format!("no input tensor named '{}'", info.name))?;
            if tensor.datatype != FP32 {
                return Err(format!("input '{}' is {}, only {FP32} is served", info.name, tensor.datatype));
            }
            let tensor = engine::Tensor::new(tensor.shape.clone(), tensor.data.clone()).ok_or_else(|| {
                format!("input '{}' has {} values for shape {:?}", info.name, tensor.data.len(), tensor.shape)
            })?;
            ordered.push(tensor);
        }
        let outputs = self.session.run(&ordered).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .metadata()
            .outputs
            .iter()
            .zip(outputs)
            .map(|(info, t)| Tensor::fp32(info.name.clone(), t.shape, t.data))
            .collect();
        Ok(InferResult { model_name: self.session.name().to_owned(), engine: self.engine.to_owned(), outputs })
    }
}
