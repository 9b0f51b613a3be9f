//! `hyscale-fsd-worker`: one worker of FSD-Inference's distributed inference, as a Lambda custom-runtime
//! function (the local Lambda service runs it; on AWS it deploys as `hyscale-fn` does).
//!
//! At initialisation it loads its slices of the model (`HYSCALE_FSD_DIR/layer{l}.onnx`, written by the
//! partitioner) into the engine `HYSCALE_ENGINE` names and connects to the channel (`HYSCALE_FSD_CHANNEL`,
//! JSON: a Redis broker or an S3-compatible store); it is worker `HYSCALE_FSD_WORKER` of
//! `HYSCALE_FSD_WORKERS`. Each event ([`FsdEvent`]) is one request; see `hyscale_backend::fsd::worker`.

use std::path::PathBuf;
use std::process::ExitCode;

use hyscale_backend::engine::{Engine, EngineChoice, EngineConfig};
use hyscale_backend::fsd::channel::ChannelSetup;
use hyscale_backend::fsd::worker::{CHANNEL_ENV, DIR_ENV, FsdAnswer, FsdEvent, WORKER_ENV, WORKERS_ENV, Worker};
use hyscale_backend::lambda::report_init_error;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hyscale-fsd-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyscale-fsd-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn init() -> Result<Worker, String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let index: usize = var(WORKER_ENV)?.parse().map_err(|e| format!("{WORKER_ENV}: {e}"))?;
    let workers: usize = var(WORKERS_ENV)?.parse().map_err(|e| format!("{WORKERS_ENV}: {e}"))?;
    let dir = PathBuf::from(var(DIR_ENV)?);
    let setup: ChannelSetup = serde_json::from_str(&var(CHANNEL_ENV)?).map_err(|e| format!("{CHANNEL_ENV}: {e}"))?;
    let engine = match std::env::var("HYSCALE_ENGINE") {
        Ok(choice) => choice.parse()?,
        Err(_) => EngineChoice::Tract,
    };
    let engine = Engine::init(&EngineConfig { engine, intra_threads: Some(1), ..EngineConfig::default() })
        .map_err(|e| e.to_string())?;
    Worker::start(engine, index, workers, &dir, &setup).await.map_err(|e| e.to_string())
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let worker = match init().await {
        Ok(worker) => worker,
        Err(e) => {
            report_init_error("hyscale-fsd-worker", &e).await;
            return Err(e.into());
        }
    };
    let worker = std::sync::Arc::new(tokio::sync::Mutex::new(worker));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<FsdEvent>| {
        let worker = worker.clone();
        async move {
            let answer: Result<FsdAnswer, Diagnostic> = worker
                .lock()
                .await
                .serve(&event.payload)
                .await
                .map_err(|e| Diagnostic { error_type: "FsdError".into(), error_message: e.to_string() });
            answer
        }
    }))
    .await
}
