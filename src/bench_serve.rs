//! `hyscale bench serve`: a load generator for the live server, with the engine's own speed measured in the
//! same run as the yardstick.
//!
//! For each model of a live configuration it first runs the engine alone (the model's session, no server) at
//! every batch size up to the model's `max_batch`: samples per second and the median run time. Then it serves
//! the configuration on loopback (REST and gRPC, in this process, on their own threads) — or drives a server
//! already running (`--url`, `--grpc-url`: another hyscale, or a peer such as KServe's ModelServer) — and
//! offers load over REST JSON, REST binary tensors (Triton's extension) and gRPC:
//! - closed loop (as Triton's perf_analyzer): `--concurrency` clients, each sending its next request when the
//!   last one is answered;
//! - open loop (`--rate`): requests sent on a fixed schedule whatever the answers, latency counted from each
//!   request's scheduled time (no coordinated omission).
//!
//! Each row gives throughput, p50/p90/p99 latency, the mean batch the server ran (from its `/metrics`), the
//! engine's samples/s at that batch size, their ratio (served/raw), and the server's overhead at p50: served
//! p50 minus the engine's median run time at that batch — also net of the protocol's floor on this machine,
//! the p50 of a health check that does no work (one client, same run), which no server can go below.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use hyscale_backend::engine::{Dim, Engine, ModelMetadata, Tensor};
use hyscale_backend::server::grpc::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use hyscale_backend::server::grpc::inference::{
    ModelInferRequest, ServerLiveRequest, model_infer_request::InferInputTensor,
};
use hyscale_backend::server::{AppState, ServeConfig, grpc::serve_grpc, serve};
use serde::Serialize;

use crate::BadInput;

#[derive(Args)]
pub struct ServeBenchArgs {
    /// The live configuration whose models are served and measured.
    #[arg(long, default_value = "live/mlp.toml")]
    config: PathBuf,
    /// Models to load (default: every `[[models]]` entry).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Protocols: json (REST, JSON tensors), binary (REST, binary tensors), grpc.
    #[arg(long, value_delimiter = ',', default_values_t = ["json".to_string(), "binary".to_string(), "grpc".to_string()])]
    protocols: Vec<String>,
    /// Closed-loop concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    concurrency: Vec<usize>,
    /// Open loop instead: requests per second, sent on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured at each level (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    duration_s: f64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 0.5)]
    warmup_s: f64,
    /// Drive a REST server already running at this base URL (e.g. http://127.0.0.1:8080) instead of starting
    /// one; the engine figures are still measured here.
    #[arg(long)]
    url: Option<String>,
    /// With --url: its gRPC endpoint (e.g. http://127.0.0.1:8081), for the grpc protocol.
    #[arg(long)]
    grpc_url: Option<String>,
    /// ONNX Runtime intra-op threads for the engine, alone and served (default: the configuration's). With 2
    /// cores, 1 leaves the other to the server and the load generator.
    #[arg(long)]
    intra_threads: Option<usize>,
    /// Worker threads of the server started here (default: the configuration's `server_threads`, else one
    /// per core). With 2 cores and one intra-op thread, 1 keeps the server's threads from trading the spare
    /// core with each other.
    #[arg(long)]
    server_threads: Option<usize>,
    /// Write the table as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The engine alone at one batch size.
#[derive(Clone, Debug, Serialize)]
struct EngineFigure {
    batch: usize,
    samples_per_s: f64,
    run_p50_ms: f64,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
struct Row {
    model: String,
    protocol: String,
    /// Closed-loop clients, or 0 in open loop.
    concurrency: usize,
    /// Open-loop rate, or 0 in closed loop.
    rate_per_s: f64,
    completed: u64,
    failed: u64,
    requests_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// The server's mean batch during the measurement (None: a server without hyscale's metrics).
    mean_batch: Option<f64>,
    engine_samples_per_s: f64,
    served_over_raw: f64,
    overhead_p50_us: f64,
    /// The protocol's floor on this machine: the p50 of a health check that does no work (REST
    /// `GET /v2/health/live`, gRPC `ServerLive`), one client, measured in the same run.
    floor_p50_us: f64,
    /// The overhead above that floor: served p50 − floor − the engine's median run.
    overhead_over_floor_p50_us: f64,
    /// CPU time per request of the server's threads (HTTP, gRPC, decoding, admission; not the engine),
    /// and of the load generator (this process's main thread), µs: where the spare core goes. From the
    /// kernel's per-thread run time (Linux `schedstat`); None elsewhere or with --url.
    server_cpu_us_per_request: Option<f64>,
    client_cpu_us_per_request: Option<f64>,
    /// The fraction of the wall time the model's batcher thread (the engine) ran.
    engine_busy: Option<f64>,
}

/// Nanoseconds run so far by this process's threads whose name starts with `prefix` (`None`: the main
/// thread), from `/proc/self/task/*/schedstat`; `None` where the kernel does not say.
fn threads_cpu_ns(prefix: Option<&str>) -> Option<u64> {
    let main = std::process::id().to_string();
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let wanted = match prefix {
            None => tid == main,
            Some(p) => std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(p)),
        };
        if wanted {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// The server's, the load generator's and the batchers' run time so far, ns.
fn cpu_now(model: &str) -> [Option<u64>; 3] {
    [threads_cpu_ns(Some(SERVER_THREAD)), threads_cpu_ns(None), threads_cpu_ns(Some(&format!("batcher-{model}")))]
}

/// The name of the server's worker threads in this process (a thread name holds 15 bytes).
const SERVER_THREAD: &str = "bench-server";

/// What one request carries, ready to send again and again.
#[derive(Clone)]
struct Payload {
    json: bytes::Bytes,
    binary: bytes::Bytes,
    binary_header_len: usize,
    grpc: ModelInferRequest,
}

fn bad(m: String) -> anyhow::Error {
    anyhow::Error::new(BadInput(m))
}

/// An input shape for one request: the batch dimension and any other free dimension 1.
fn request_shape(info: &hyscale_backend::engine::TensorInfo, rows: usize) -> Vec<usize> {
    info.shape
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Fixed(n) => *n,
            Dim::Dynamic(_) if k == 0 => rows,
            Dim::Dynamic(_) => 1,
        })
        .collect()
}

/// Deterministic inputs of `rows` rows.
fn inputs(meta: &ModelMetadata, rows: usize) -> Vec<Tensor> {
    meta.inputs
        .iter()
        .map(|info| {
            let shape = request_shape(info, rows);
            let n: usize = shape.iter().product();
            let data = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
            Tensor { shape, data }
        })
        .collect()
}

fn payload(model: &str, meta: &ModelMetadata) -> anyhow::Result<Payload> {
    let tensors = inputs(meta, 1);
    let json_inputs: Vec<serde_json::Value> = meta
        .inputs
        .iter()
        .zip(&tensors)
        .map(|(info, t)| serde_json::json!({"name": info.name, "shape": t.shape, "datatype": "FP32", "data": t.data}))
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "inputs": json_inputs }))?;
    let bin_inputs: Vec<serde_json::Value> = meta
        .inputs
        .iter()
        .zip(&tensors)
        .map(|(info, t)| {
            serde_json::json!({"name": info.name, "shape": t.shape, "datatype": "FP32",
                "parameters": {"binary_data_size": t.data.len() * 4}})
        })
        .collect();
    let mut binary =
        serde_json::to_vec(&serde_json::json!({ "inputs": bin_inputs, "parameters": {"binary_data_output": true} }))?;
    let binary_header_len = binary.len();
    let mut raw = Vec::new();
    for t in &tensors {
        let mut bytes = Vec::new();
        hyscale_backend::server::binary::extend_le(&mut bytes, &t.data);
        binary.extend_from_slice(&bytes);
        raw.push(bytes.into());
    }
    let grpc = ModelInferRequest {
        model_name: model.to_string(),
        inputs: meta
            .inputs
            .iter()
            .zip(&tensors)
            .map(|(info, t)| InferInputTensor {
                name: info.name.clone(),
                datatype: "FP32".into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: raw,
        ..Default::default()
    };
    Ok(Payload { json: json.into(), binary: binary.into(), binary_header_len, grpc })
}

/// The engine alone: each batch size for about `seconds`; with the model's metadata.
fn engine_figures(
    engine: &Engine,
    path: &Path,
    max_batch: usize,
    seconds: f64,
) -> anyhow::Result<(Vec<EngineFigure>, ModelMetadata)> {
    let mut session = engine.load(path).with_context(|| format!("loading {}", path.display()))?;
    let meta = session.metadata().clone();
    let mut out = Vec::new();
    for batch in 1..=max_batch.max(1) {
        let x = inputs(&meta, batch);
        for _ in 0..3 {
            session.run(&x)?;
        }
        let mut times = Vec::new();
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < seconds || times.len() < 5 {
            let t = Instant::now();
            session.run(&x)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let total = started.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        out.push(EngineFigure {
            batch,
            samples_per_s: (batch * times.len()) as f64 / total,
            run_p50_ms: times[times.len() / 2] * 1e3,
        });
    }
    Ok((out, meta))
}

/// The server's batches of `model` so far: (requests in batches, batches), from its `/metrics`.
async fn batch_totals(client: &reqwest::Client, base: &str, model: &str) -> Option<(f64, f64)> {
    let response = client.get(format!("{base}/metrics")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let text = response.text().await.ok()?;
    if !text.contains("hyscale_") {
        return None;
    }
    // No series yet: no batch has run.
    let find = |metric: &str| {
        let key = format!("hyscale_batch_size_{metric}{{model=\"{model}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    Some((find("sum"), find("count")))
}

/// Where and how one client sends its requests: cloned into each client task.
#[derive(Clone)]
struct Target {
    protocol: String,
    http: reqwest::Client,
    grpc: Option<GrpcInferenceServiceClient<tonic::transport::Channel>>,
    url: String,
    payload: Payload,
}

impl Target {
    /// Sends one request; whether it was answered with success.
    async fn send(&mut self) -> bool {
        let p = &self.payload;
        match self.protocol.as_str() {
            "json" => {
                let r = self.http.post(&self.url).header("content-type", "application/json").body(p.json.clone());
                match r.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
            "binary" => match self
                .http
                .post(&self.url)
                .header("inference-header-content-length", p.binary_header_len)
                .header("content-type", "application/octet-stream")
                .body(p.binary.clone())
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            },
            _ => match self.grpc.as_mut() {
                Some(c) => c.model_infer(p.grpc.clone()).await.is_ok(),
                None => false,
            },
        }
    }
}

/// The p50 of a health check that does no work, one client for `seconds`: REST `GET /v2/health/live`, or
/// gRPC `ServerLive` — the round trip every request pays before the server does anything.
async fn floor_p50_us(
    grpc_protocol: bool,
    http: &reqwest::Client,
    grpc: &Option<GrpcInferenceServiceClient<tonic::transport::Channel>>,
    base: &str,
    seconds: f64,
) -> f64 {
    let mut h = histogram();
    let mut grpc = grpc.clone();
    let started = Instant::now();
    let url = format!("{base}/v2/health/live");
    while started.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        let ok = if grpc_protocol {
            match grpc.as_mut() {
                Some(c) => c.server_live(ServerLiveRequest {}).await.is_ok(),
                None => false,
            }
        } else {
            http.get(&url).send().await.is_ok_and(|r| r.status().is_success())
        };
        if ok {
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
        }
    }
    if h.is_empty() { f64::NAN } else { h.value_at_quantile(0.5) as f64 }
}

struct Measured {
    completed: u64,
    failed: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Closed loop: `clients` clients for warm-up then `seconds`; only the measured window counts.
async fn closed_loop(target: &Target, clients: usize, warmup: Duration, seconds: Duration) -> Measured {
    let start = Instant::now();
    let (from, to) = (start + warmup, start + warmup + seconds);
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let mut target = target.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut h) = (0u64, 0u64, histogram());
                loop {
                    let t = Instant::now();
                    if t >= to {
                        break;
                    }
                    let good = target.send().await;
                    if t >= from {
                        if good {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed, h)
            })
        })
        .collect();
    let mut m = Measured { completed: 0, failed: 0, seconds: seconds.as_secs_f64(), latency_us: histogram() };
    for t in tasks {
        if let Ok((ok, failed, h)) = t.await {
            m.completed += ok;
            m.failed += failed;
            let _ = m.latency_us.add(&h);
        }
    }
    m
}

/// Open loop: one request every 1/`rate` s for warm-up then `seconds`, each latency from its scheduled time.
async fn open_loop(target: &Target, rate: f64, warmup: Duration, seconds: Duration) -> Measured {
    let start = tokio::time::Instant::now();
    let total = ((warmup + seconds).as_secs_f64() * rate).ceil() as u64;
    let counted_from = (warmup.as_secs_f64() * rate).ceil() as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let mut target = target.clone();
        tasks.push(tokio::spawn(async move {
            let good = target.send().await;
            (i, good, at.elapsed())
        }));
    }
    let mut m = Measured { completed: 0, failed: 0, seconds: seconds.as_secs_f64(), latency_us: histogram() };
    for t in tasks {
        if let Ok((i, good, latency)) = t.await
            && i >= counted_from
        {
            if good {
                m.completed += 1;
                let _ = m.latency_us.record(latency.as_micros().max(1) as u64);
            } else {
                m.failed += 1;
            }
        }
    }
    m
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    if !(args.duration_s.is_finite() && args.duration_s > 0.0 && args.warmup_s.is_finite() && args.warmup_s >= 0.0) {
        return Err(bad(format!(
            "--duration-s must be positive and --warmup-s non-negative, got {} and {}",
            args.duration_s, args.warmup_s
        )));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(bad("--rate must be a positive number of requests per second".into()));
    }
    hyscale_backend::server::check_server_threads(args.server_threads)
        .map_err(|e| bad(format!("--server-threads: {e}")))?;
    if args.concurrency.iter().any(|&c| c == 0 || c > 10_000) {
        return Err(bad("--concurrency levels must be in 1..=10000".into()));
    }
    if let Some(p) = args.protocols.iter().find(|p| !["json", "binary", "grpc"].contains(&p.as_str())) {
        return Err(bad(format!("unknown protocol '{p}' (json, binary, grpc)")));
    }
    let (mut config, _) = crate::serve_cmd::read_config(&args.config)?;
    let base = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
    if !args.models.is_empty() {
        if let Some(m) = args.models.iter().find(|m| !config.models.iter().any(|c| &&c.name == m)) {
            return Err(bad(format!("{}: no model '{m}'", args.config.display())));
        }
        config.models.retain(|m| args.models.contains(&m.name));
    }
    if let Some(n) = args.intra_threads {
        config.engine.intra_threads = Some(n.max(1));
    }
    let engine = Engine::init(&config.engine).map_err(|e| bad(format!("{}: {e}", args.config.display())))?;
    eprintln!("engine: {}", engine.describe());
    // The yardstick first, alone on the machine.
    let mut engine_table: BTreeMap<String, (Vec<EngineFigure>, ModelMetadata)> = BTreeMap::new();
    for m in &config.models {
        let path = base.join(&m.path);
        eprintln!("engine alone: {} at batch 1..={}", m.name, m.max_batch);
        engine_table.insert(m.name.clone(), engine_figures(engine, &path, m.max_batch as usize, 0.4)?);
    }
    // The server, on its own threads.
    let configured = config.checked_server_threads().map_err(|e| bad(format!("{}: {e}", args.config.display())))?;
    let server_rt =
        crate::serve_cmd::server_runtime(args.server_threads.or(configured)).thread_name(SERVER_THREAD).build()?;
    let (rest_base, grpc_base) = match &args.url {
        Some(u) => (u.trim_end_matches('/').to_string(), args.grpc_url.clone()),
        None => start_server(&server_rt, &config, &base)?,
    };
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rows = client_rt.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
        let grpc = match &grpc_base {
            Some(g) => {
                let channel = tonic::transport::Endpoint::from_shared(g.clone())
                    .with_context(|| format!("gRPC endpoint {g}"))?
                    .tcp_nodelay(true)
                    // Flow-control windows sized for tensors, as the server's.
                    .initial_connection_window_size(16 << 20)
                    .initial_stream_window_size(2 << 20)
                    .connect()
                    .await
                    .with_context(|| format!("gRPC {g}"))?;
                Some(GrpcInferenceServiceClient::new(channel))
            }
            None => None,
        };
        let rest_floor = floor_p50_us(false, &http, &grpc, &rest_base, 1.0).await;
        let grpc_floor =
            if grpc.is_some() { floor_p50_us(true, &http, &grpc, &rest_base, 1.0).await } else { f64::NAN };
        eprintln!("floor (health check, one client, p50): REST {rest_floor:.0} µs, gRPC {grpc_floor:.0} µs");
        let mut rows = Vec::new();
        for m in &config.models {
            let (figures, meta) = &engine_table[&m.name];
            let payload = payload(&m.name, meta)?;
            let url = format!("{rest_base}/v2/models/{}/infer", m.name);
            for protocol in &args.protocols {
                if protocol == "grpc" && grpc.is_none() {
                    eprintln!("skipping grpc: no gRPC endpoint (--grpc-url)");
                    continue;
                }
                let target = Target {
                    protocol: protocol.clone(),
                    http: http.clone(),
                    grpc: grpc.clone(),
                    url: url.clone(),
                    payload: payload.clone(),
                };
                let floor = if protocol == "grpc" { grpc_floor } else { rest_floor };
                let levels: Vec<usize> = if args.rate.is_some() { vec![0] } else { args.concurrency.clone() };
                for c in levels {
                    let before = batch_totals(&http, &rest_base, &m.name).await;
                    let (cpu0, wall0) = (cpu_now(&m.name), Instant::now());
                    let warm = Duration::from_secs_f64(args.warmup_s);
                    let secs = Duration::from_secs_f64(args.duration_s);
                    let measured = match args.rate {
                        Some(r) => open_loop(&target, r, warm, secs).await,
                        None => closed_loop(&target, c, warm, secs).await,
                    };
                    let (cpu1, wall) = (cpu_now(&m.name), wall0.elapsed().as_secs_f64());
                    let after = batch_totals(&http, &rest_base, &m.name).await;
                    let mean_batch = match (before, after) {
                        (Some((s0, n0)), Some((s1, n1))) if n1 > n0 => Some((s1 - s0) / (n1 - n0)),
                        _ => None,
                    };
                    // Requests served over the whole call (warm-up included, as the CPU times are): one
                    // sample each.
                    let served = match (before, after, args.url.is_none()) {
                        (Some((s0, _)), Some((s1, _)), true) if s1 > s0 => Some(s1 - s0),
                        _ => None,
                    };
                    let per_request = |k: usize| match (cpu0[k], cpu1[k], served) {
                        (Some(a), Some(b), Some(n)) => Some(b.saturating_sub(a) as f64 / 1e3 / n),
                        _ => None,
                    };
                    let engine_busy = match (cpu0[2], cpu1[2], args.url.is_none()) {
                        (Some(a), Some(b), true) if wall > 0.0 => Some(b.saturating_sub(a) as f64 / 1e9 / wall),
                        _ => None,
                    };
                    let b = mean_batch.map_or(1, |b| (b.round() as usize).clamp(1, figures.len()));
                    let e = &figures[b - 1];
                    let q = |p: f64| measured.latency_us.value_at_quantile(p) as f64 / 1e3;
                    let rps = measured.completed as f64 / measured.seconds;
                    let overhead_p50_us = (q(0.5) - e.run_p50_ms) * 1e3;
                    let row = Row {
                        model: m.name.clone(),
                        protocol: protocol.clone(),
                        concurrency: c,
                        rate_per_s: args.rate.unwrap_or(0.0),
                        completed: measured.completed,
                        failed: measured.failed,
                        requests_per_s: rps,
                        p50_ms: q(0.5),
                        p90_ms: q(0.9),
                        p99_ms: q(0.99),
                        mean_batch,
                        engine_samples_per_s: e.samples_per_s,
                        served_over_raw: rps / e.samples_per_s,
                        overhead_p50_us,
                        floor_p50_us: floor,
                        overhead_over_floor_p50_us: overhead_p50_us - floor,
                        server_cpu_us_per_request: per_request(0),
                        client_cpu_us_per_request: per_request(1),
                        engine_busy,
                    };
                    print_row(&row, rows.is_empty());
                    rows.push(row);
                }
            }
        }
        anyhow::Ok(rows)
    })?;
    if let Some(out) = &args.out {
        let engine: BTreeMap<&String, &Vec<EngineFigure>> = engine_table.iter().map(|(k, (f, _))| (k, f)).collect();
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "engine": engine_describe(),
            "engine_alone": engine,
            "rows": rows,
        }))?;
        crate::write_atomically(out, |f| Ok(f.write_all(format!("{json}\n").as_bytes())?))?;
    }
    server_rt.shutdown_background();
    Ok(())
}

fn engine_describe() -> String {
    Engine::get().map(Engine::describe).unwrap_or_default()
}

fn print_row(r: &Row, header: bool) {
    if header {
        println!(
            "{:<6} {:<7} {:>6} {:>10} {:>8} {:>8} {:>8} {:>7} {:>11} {:>7} {:>10} {:>9} {:>10} {:>8} {:>8} {:>6}",
            "model",
            "proto",
            "conc",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "batch",
            "engine/s",
            "ratio",
            "ovh p50 µs",
            "floor µs",
            "ovh-floor",
            "srv µs",
            "cli µs",
            "busy"
        );
    }
    let load = if r.concurrency > 0 { r.concurrency.to_string() } else { format!("{}/s", r.rate_per_s) };
    println!(
        "{:<6} {:<7} {:>6} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>11.0} {:>7.2} {:>10.0} {:>9.0} {:>10.0} {:>8} {:>8} {:>6}{}",
        r.model,
        r.protocol,
        load,
        r.requests_per_s,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.mean_batch.map_or("-".to_string(), |b| format!("{b:.2}")),
        r.engine_samples_per_s,
        r.served_over_raw,
        r.overhead_p50_us,
        r.floor_p50_us,
        r.overhead_over_floor_p50_us,
        r.server_cpu_us_per_request.map_or("-".to_string(), |c| format!("{c:.1}")),
        r.client_cpu_us_per_request.map_or("-".to_string(), |c| format!("{c:.1}")),
        r.engine_busy.map_or("-".to_string(), |b| format!("{b:.2}")),
        if r.failed > 0 { format!("  ({} failed)", r.failed) } else { String::new() }
    );
}

/// Serves `config` on loopback ports in `rt`: the REST base URL and the gRPC endpoint.
fn start_server(
    rt: &tokio::runtime::Runtime,
    config: &ServeConfig,
    base: &Path,
) -> anyhow::Result<(String, Option<String>)> {
    // Batchers are tasks of the server's runtime.
    let state = {
        let _inside = rt.enter();
        Arc::new(AppState::load(config, base).map_err(|e| bad(e.to_string()))?)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    let rest_state = Arc::clone(&state);
    rt.spawn(async move {
        let _ =
            serve(rest_state, "127.0.0.1:0", move |a| tx.send(("rest", a)).unwrap_or(()), std::future::pending()).await;
    });
    rt.spawn(async move {
        let _ = serve_grpc(state, "127.0.0.1:0", move |a| tx2.send(("grpc", a)).unwrap_or(()), std::future::pending())
            .await;
    });
    let (mut rest, mut grpc) = (None, None);
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(30)).context("the server did not start")? {
            ("rest", a) => rest = Some(format!("http://{a}")),
            (_, a) => grpc = Some(format!("http://{a}")),
        }
    }
    Ok((rest.context("no REST address")?, grpc))
}
