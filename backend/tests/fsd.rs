//! FSD-Inference live, with real parts: the partitioned model's output equals the whole model's; workers are
//! `hyscale-fsd-worker` sandboxes of the local Lambda service exchanging slices through a real Redis broker
//! (`redis-server` from Debian) and a real S3 API (moto from PyPI), both started here on loopback; the calls
//! they make are the simulator's count; and a worker that dies, a message lost or duplicated, or a broker
//! that is down make a request fail with the reason (or, duplicated, still succeed), never hang.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyscale_backend::engine::{Engine, EngineChoice, EngineConfig, Tensor};
use hyscale_backend::fsd::channel::ChannelSetup;
use hyscale_backend::fsd::concat_columns;
use hyscale_backend::fsd::live::{LiveSetup, run_live};
use hyscale_backend::fsd::model::Mlp;
use hyscale_backend::fsd::services::{LocalService, create_bucket, start_moto, start_redis};
use hyscale_backend::fsd::worker::Fault;
use hyscale_policies::fsd::{ObjectPrices, QueuePrices};
use hyscale_sim::fsd::{Channel, ChannelsFile, FsdModel, FsdRun, Layer, simulate_fsd};

fn tract() -> &'static Engine {
    Engine::init(&EngineConfig { engine: EngineChoice::Tract, ..EngineConfig::default() }).unwrap()
}

fn redis() -> (LocalService, String) {
    let bin = std::env::var_os("HYSCALE_REDIS_SERVER").map(PathBuf::from).unwrap_or_else(|| "redis-server".into());
    let service = start_redis(&bin).unwrap();
    let url = format!("redis://127.0.0.1:{}", service.port);
    (service, url)
}

/// moto's S3 with bucket `fsd`.
fn s3() -> (LocalService, String) {
    let bin = std::env::var_os("HYSCALE_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::absolute("../.venv/bin/moto_server").unwrap());
    let service = start_moto(&bin).unwrap();
    create_bucket(&service, "fsd").unwrap();
    let url = service.http_url();
    (service, url)
}

fn channels() -> ChannelsFile {
    ChannelsFile::load(Path::new("../data/fsd_channels.toml")).unwrap()
}

fn platform() -> hyscale_policies::FunctionPlatform {
    hyscale_sim::Scenario::load(Path::new("../scenarios/conv_static.toml")).unwrap().catalog.functions.clone()
}

fn prices() -> (QueuePrices, ObjectPrices) {
    let c = channels();
    (c.queue.prices(), c.object.prices())
}

const WIDTHS: [usize; 4] = [16, 32, 24, 10];

#[test]
fn the_partitioned_model_computes_what_the_whole_model_does() {
    let engine = tract();
    let dir = tempfile::tempdir().unwrap();
    let mlp = Mlp::generate(&WIDTHS, 7).unwrap();
    std::fs::write(dir.path().join("whole.onnx"), mlp.to_onnx()).unwrap();
    let mut whole = engine.load(&dir.path().join("whole.onnx")).unwrap();
    let rows = 3;
    let input: Vec<f32> = (0..rows * 16).map(|i| (i % 11) as f32 / 11.0 - 0.4).collect();
    let want = whole.run(&[Tensor::new(vec![rows, 16], input.clone()).unwrap()]).unwrap().remove(0).data;
    for p in [1, 2, 3, 4] {
        let pdir = dir.path().join(format!("p{p}"));
        mlp.write_partition(p, &pdir).unwrap();
        let mut x = input.clone();
        for l in 0..mlp.layers.len() {
            let inputs = x.len() / rows;
            let parts: Vec<Vec<f32>> = (0..p)
                .map(|w| {
                    let mut s = engine.load(&pdir.join(format!("w{w}/layer{l}.onnx"))).unwrap();
                    s.run(&[Tensor::new(vec![rows, inputs], x.clone()).unwrap()]).unwrap().remove(0).data
                })
                .collect();
            x = concat_columns(&parts, rows);
        }
        let err = want.iter().zip(&x).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert_eq!(x.len(), want.len());
        assert!(err < 1e-5, "P = {p}: largest difference {err}");
    }
    // The shipped MLP (Gemm, transB, Relu) reads back as the same function.
    let shipped = Mlp::read(Path::new("models/mlp.onnx")).unwrap();
    assert_eq!((shipped.layers.len(), shipped.layers[0].inputs, shipped.layers[1].outputs), (2, 64, 10));
    std::fs::write(dir.path().join("again.onnx"), shipped.to_onnx()).unwrap();
    let x = Tensor::new(vec![2, 64], (0..128).map(|i| (i % 5) as f32 / 5.0).collect()).unwrap();
    let a = engine.load(Path::new("models/mlp.onnx")).unwrap().run(std::slice::from_ref(&x)).unwrap().remove(0).data;
    let b = engine.load(&dir.path().join("again.onnx")).unwrap().run(&[x]).unwrap().remove(0).data;
    assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
    // A model that is not a fully-connected chain is refused by name.
    let e = Mlp::read(Path::new("models/cnn.onnx")).unwrap_err().to_string();
    assert!(e.contains("Conv"), "{e}");
}

fn setup(dir: &Path, channel: ChannelSetup, workers: usize, fault: Option<Fault>, timeout_ms: u64) -> LiveSetup {
    LiveSetup {
        mlp: Mlp::generate(&WIDTHS, 7).unwrap(),
        workers,
        channel,
        dir: dir.join(format!("p{workers}")),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_hyscale-fsd-worker")),
        memory_mb: 1769,
        timeout_ms,
        platform: platform(),
        prices: prices(),
        fault,
    }
}

fn run(setup: &LiveSetup, requests: u64) -> hyscale_backend::fsd::live::LiveResult {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whole.onnx"), setup.mlp.to_onnx()).unwrap();
    let mut whole = tract().load(&dir.path().join("whole.onnx")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run_live(setup, &mut whole, requests, Duration::from_millis(50))).unwrap()
}

fn queue(url: &str) -> ChannelSetup {
    ChannelSetup::Queue { url: url.into(), limits: prices().0 }
}

#[test]
fn workers_exchange_slices_through_redis_and_s3_and_answer_the_whole_models_output() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, url) = redis();
    let (_moto, endpoint) = s3();
    let object = ChannelSetup::Object { endpoint, bucket: "fsd".into(), region: "us-east-1".into(), poll_ms: 5.0 };
    let model =
        FsdModel { layers: WIDTHS.windows(2).map(|w| Layer { inputs: w[0], outputs: w[1] }).collect(), whole_ms: 1.0 };
    for (channel, kind) in [(queue(&url), Channel::Queue), (object, Channel::Object)] {
        let live = run(&setup(dir.path(), channel, 3, None, 10_000), 4);
        assert!(live.failures.is_empty(), "{:?}", live.failures);
        assert_eq!(live.row.requests, 4);
        assert!(live.max_abs_error < 1e-5, "{}", live.max_abs_error);
        // The calls the workers made are the simulator's count for the same model, split and requests
        // (only polls that found nothing depend on timing).
        let run = FsdRun { parallelism: 3, channel: kind, memory_mb: 1769, requests: 4, rate_per_s: 20.0, seed: 1 };
        let sim = simulate_fsd(&model, &channels(), &platform(), &run).unwrap();
        let (l, s) = (live.row.counts, sim.counts);
        assert_eq!(
            (l.publishes, l.publish_billed, l.deliveries, l.puts, l.gets),
            (s.publishes, s.publish_billed, s.deliveries, s.puts, s.gets)
        );
        eprintln!("{}: live {:?}, p50 {:.1} ms; simulated {:?}", kind.name(), l, live.row.latency_ms.p50, s);
    }
}

#[test]
fn a_dead_worker_a_lost_message_or_a_broker_down_fail_the_request_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (redis_process, url) = redis();
    // A worker that dies mid-layer: its own invocation fails (the process exited), the others time out
    // waiting for its slice; the request fails with both reasons, in about the timeout.
    let started = Instant::now();
    let live = run(&setup(dir.path(), queue(&url), 2, Some(Fault::Die { worker: 1, layer: 1 }), 1_500), 1);
    assert_eq!(live.row.requests, 0);
    let why = live.failures.join(" ");
    assert!(why.contains("worker 1") && why.contains("Runtime.ExitError"), "{why}");
    assert!(why.contains("no slice from worker(s) [1]"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A lost message: a timeout naming the worker whose slice never came.
    let live = run(&setup(dir.path(), queue(&url), 2, Some(Fault::Lose { worker: 0, layer: 0 }), 1_000), 1);
    assert!(live.failures.join(" ").contains("no slice from worker(s) [0]"), "{:?}", live.failures);
    // A duplicated message is ignored: the answer is still right.
    let live = run(&setup(dir.path(), queue(&url), 2, Some(Fault::Duplicate { worker: 1, layer: 0 }), 5_000), 2);
    assert!(live.failures.is_empty(), "{:?}", live.failures);
    assert!(live.max_abs_error < 1e-5);
    // The broker down: the workers cannot start (their initialisation fails and says why).
    drop(redis_process);
    let live = run(&setup(dir.path(), queue(&url), 2, None, 1_000), 1);
    assert_eq!(live.row.requests, 0);
    let why = live.failures.join(" ");
    eprintln!("broker down: {why}");
    assert!(why.contains("InitError") && why.contains("channel"), "{why}");
}
