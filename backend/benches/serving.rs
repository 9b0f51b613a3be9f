//! Raw engine throughput against served throughput, in one process: the MLP test model run directly by the
//! engine (`Session::run` on B rows) and through `hyscale serve`'s whole path (HTTP, JSON, validation,
//! dynamic batcher, engine, JSON back) with one client sending requests of B rows one after another.
//! criterion reports elements (samples) per second for both; their ratio is the serving overhead. At the end
//! it prints the batching overhead (served latency minus raw latency) at the median and p99.
//!
//! The engine is the process's `auto` choice (ONNX Runtime when `.venv` has it, else tract); set
//! `HYSCALE_BENCH_ENGINE=tract|onnxruntime` to pick.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyscale_backend::engine::{Engine, EngineConfig, Tensor};
use hyscale_backend::server::{AppState, ModelConfig, ServeConfig, serve};

const BATCHES: [usize; 3] = [1, 8, 32];

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/mlp.onnx")
}

fn input(rows: usize) -> Tensor {
    let data: Vec<f32> = (0..rows * 64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    Tensor::new(vec![rows, 64], data).expect("shape matches")
}

fn body(rows: usize) -> Vec<u8> {
    let t = input(rows);
    serde_json::to_vec(&serde_json::json!({
        "inputs": [{ "name": "input", "shape": [rows, 64], "datatype": "FP32", "data": t.data }]
    }))
    .expect("serialises")
}

fn serving(c: &mut Criterion) {
    let mut engine_config = EngineConfig::default();
    if let Ok(choice) = std::env::var("HYSCALE_BENCH_ENGINE") {
        engine_config.engine = choice.parse().expect("HYSCALE_BENCH_ENGINE is auto, tract or onnxruntime");
    }
    let engine = Engine::init(&engine_config).expect("engine starts");
    eprintln!("engine: {}", engine.describe());
    let mut session = engine.load(&model()).expect("model loads");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        request_timeout_s: 30.0,
        retry_after_s: 1,
        engine: engine_config,
        limits: Default::default(),
        models: vec![ModelConfig {
            name: "mlp".into(),
            path: model(),
            version: "1".into(),
            max_batch: 32,
            max_wait_ms: 0.0,
            queue_capacity: 64,
            idle_start: false,
        }],
        grpc_listen: None,
        server_threads: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let state = runtime.block_on(async { AppState::load(&config, std::path::Path::new("")) }).expect("server loads");
    runtime.spawn(async move {
        let _ = serve(Arc::new(state), "127.0.0.1:0", move |addr| tx.send(addr).unwrap_or(()), std::future::pending())
            .await;
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server binds");
    let url = format!("http://{addr}/v2/models/mlp/infer");
    let client = reqwest::Client::new();
    let post = |b: &Vec<u8>| {
        runtime.block_on(async {
            let r = client.post(&url).body(b.clone()).send().await.expect("request");
            assert!(r.status().is_success());
            r.bytes().await.expect("body").len()
        })
    };

    let mut group = c.benchmark_group("mlp");
    group.sample_size(30).measurement_time(Duration::from_secs(4));
    for rows in BATCHES {
        group.throughput(Throughput::Elements(rows as u64));
        let t = input(rows);
        group.bench_function(format!("raw engine batch {rows}"), |b| {
            b.iter(|| session.run(std::slice::from_ref(&t)).expect("runs"))
        });
        let request = body(rows);
        group.bench_function(format!("served batch {rows}"), |b| b.iter(|| post(&request)));
    }
    group.finish();

    // Batching overhead: served minus raw, per request, over many single-row requests.
    let single = input(1);
    let request = body(1);
    let n = 2000;
    let mut raw: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            session.run(std::slice::from_ref(&single)).expect("runs");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut served: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            post(&request);
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    raw.sort_by(f64::total_cmp);
    served.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "batch-1 latency over {n} requests, ms: raw p50 {:.3} p99 {:.3}; served p50 {:.3} p99 {:.3}; overhead p50 {:.3} p99 {:.3}",
        at(&raw, 0.5),
        at(&raw, 0.99),
        at(&served, 0.5),
        at(&served, 0.99),
        at(&served, 0.5) - at(&raw, 0.5),
        at(&served, 0.99) - at(&raw, 0.99)
    );
}

criterion_group!(benches, serving);
criterion_main!(benches);
