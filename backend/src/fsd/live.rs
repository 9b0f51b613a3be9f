//! The live FSD coordinator: partitions the model, starts one function per worker on the local Lambda
//! service (`hyscale-fsd-worker`, its slices and the channel in its environment), and for each request
//! invokes the `P` workers at once, takes worker 0's output, checks it against the whole model, and measures
//! the request's latency, each worker's billed duration and cold start, and the channel calls the workers
//! made. A request fails (never hangs) when a worker fails: its reason is kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyscale_policies::fsd::{ChannelCounts, CostParts, FsdRow, Latency, ObjectPrices, QueuePrices};
use hyscale_policies::{FunctionPlatform, billing};

use super::FsdError;
use super::channel::{Channel, ChannelSetup, ChannelTimes};
use super::model::Mlp;
use super::worker::{CHANNEL_ENV, DIR_ENV, Fault, FsdAnswer, FsdEvent, WORKER_ENV, WORKERS_ENV};
use crate::engine::{Session, Tensor};
use crate::lambda::{FunctionConfig, FunctionService};

/// What a live run is made of.
pub struct LiveSetup {
    /// The model.
    pub mlp: Mlp,
    /// Workers per request.
    pub workers: usize,
    /// The channel.
    pub channel: ChannelSetup,
    /// Where the partition is written.
    pub dir: PathBuf,
    /// The worker binary (`hyscale-fsd-worker`).
    pub binary: PathBuf,
    /// Each worker's memory, MB.
    pub memory_mb: u32,
    /// A request's deadline, ms.
    pub timeout_ms: u64,
    /// The platform the workers are billed as.
    pub platform: FunctionPlatform,
    /// Queue and object prices (for the cost per 1,000).
    pub prices: (QueuePrices, ObjectPrices),
    /// A fault every request's workers are told to commit (the failure tests); `None` in real runs.
    pub fault: Option<Fault>,
}

/// A live run's table row and what was measured beside it.
#[derive(Debug)]
pub struct LiveResult {
    /// The row (mode `live`).
    pub row: FsdRow,
    /// Requests that failed, with their reasons.
    pub failures: Vec<String>,
    /// Largest difference between a served output and the whole model's.
    pub max_abs_error: f32,
    /// The channel operations' latencies.
    pub times: ChannelTimes,
}

/// Starts the workers, serves `requests` single-row requests spaced `gap` apart (the next waits for the
/// previous when it runs longer), and stops the workers.
pub async fn run_live(
    setup: &LiveSetup,
    whole: &mut Session,
    requests: u64,
    gap: Duration,
) -> Result<LiveResult, FsdError> {
    let p = setup.workers.max(1);
    setup.mlp.write_partition(p, &setup.dir)?;
    let channel_json = serde_json::to_string(&setup.channel).map_err(|e| FsdError::Io(e.to_string()))?;
    let mut services = Vec::with_capacity(p);
    for w in 0..p {
        let mut config = FunctionConfig::new(format!("fsd-w{w}"), &setup.binary)
            .with_env(WORKER_ENV, w.to_string())
            .with_env(WORKERS_ENV, p.to_string())
            .with_env(DIR_ENV, setup.dir.join(format!("w{w}")).to_string_lossy().into_owned())
            .with_env(CHANNEL_ENV, channel_json.clone())
            .with_env("HYSCALE_ENGINE", "tract");
        config.memory_mb = setup.memory_mb;
        config.max_sandboxes = 4;
        config.timeout = hyscale_policies::Nanos::from_millis(setup.timeout_ms + 5_000);
        config.bill_init = setup.platform.bill_init;
        services.push(Arc::new(
            FunctionService::start(config).await.map_err(|e| FsdError::Worker { worker: w, reason: e.to_string() })?,
        ));
    }
    // What requests leave on the channel is removed after each; a channel down is the workers' failure to
    // report, not the coordinator's.
    let mut cleaner = match Channel::connect(&setup.channel).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the coordinator cannot reach the channel to clean up after requests");
            None
        }
    };
    let inputs = setup.mlp.layers[0].inputs;
    let mut counts = ChannelCounts::default();
    let mut times = ChannelTimes::default();
    let (mut compute_cost, mut cold_starts, mut max_err) = (0.0, 0u64, 0.0f32);
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let start = Instant::now();
    for r in 0..requests {
        tokio::time::sleep_until((start + gap * r as u32).into()).await;
        let input: Vec<f32> = (0..inputs).map(|i| ((i as u64 * 7 + r * 13) % 17) as f32 / 17.0 - 0.5).collect();
        let request = format!("r{r}-{}", std::process::id());
        let event = FsdEvent {
            request: request.clone(),
            rows: 1,
            input: input.clone(),
            timeout_ms: setup.timeout_ms,
            fault: setup.fault,
        };
        let payload = serde_json::to_vec(&event).map_err(|e| FsdError::Io(e.to_string()))?;
        let sent = Instant::now();
        let calls: Vec<_> = services
            .iter()
            .map(|s| {
                let (s, payload) = (Arc::clone(s), payload.clone());
                tokio::spawn(async move { s.invoke(payload).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(p);
        for call in calls {
            outcomes.push(call.await.map_err(|e| FsdError::Io(format!("an invocation task: {e}")))?);
        }
        let latency = sent.elapsed().as_secs_f64() * 1e3;
        let mut output = None;
        let mut failed = Vec::new();
        for (w, outcome) in outcomes.into_iter().enumerate() {
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    failed.push(format!("worker {w}: {e}"));
                    continue;
                }
            };
            compute_cost +=
                billing::function_compute_charge(&setup.platform, outcome.memory_mb, outcome.billed_duration);
            cold_starts += u64::from(outcome.cold);
            match outcome.result {
                Ok(bytes) => match serde_json::from_slice::<FsdAnswer>(&bytes) {
                    Ok(a) => {
                        counts.add(&a.meter.counts);
                        times.add(&a.meter.times);
                        if a.worker == 0 {
                            output = a.output;
                        }
                    }
                    Err(e) => failed.push(format!("worker {w}: answer: {e}")),
                },
                Err(e) => failed.push(format!("worker {w}: {} ({})", e.message, e.error_type)),
            }
        }
        if let Some(c) = cleaner.as_mut() {
            c.clean(&request, setup.mlp.layers.len(), p).await;
        }
        match (failed.is_empty(), output) {
            (true, Some(out)) => {
                let want = whole
                    .run(&[Tensor::new(vec![1, inputs], input).ok_or_else(|| FsdError::Model("input".into()))?])
                    .map_err(|e| FsdError::Engine(e.to_string()))?;
                let want = want.first().map(|t| t.data.clone()).unwrap_or_default();
                if want.len() != out.len() {
                    failures.push(format!("request {r}: {} outputs, the whole model gives {}", out.len(), want.len()));
                    continue;
                }
                max_err = want.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(max_err, f32::max);
                latencies.push(latency);
            }
            (true, None) => failures.push(format!("request {r}: worker 0 answered no output")),
            (false, _) => failures.push(format!("request {r}: {}", failed.join("; "))),
        }
    }
    for s in &services {
        s.shutdown();
    }
    let served = latencies.len() as u64;
    let invocations = setup.platform.price_per_request * (requests * p as u64) as f64;
    let row = FsdRow {
        kind: "functions".into(),
        parallelism: p,
        channel: if p == 1 {
            "none".into()
        } else {
            match setup.channel {
                ChannelSetup::Queue { .. } => "queue".into(),
                ChannelSetup::Object { .. } => "object".into(),
            }
        },
        mode: "live".into(),
        requests: served,
        memory_mb: setup.memory_mb,
        latency_ms: Latency::of(&mut latencies),
        cost_per_1000: CostParts::per_thousand(
            compute_cost,
            invocations,
            counts.queue_cost(&setup.prices.0),
            counts.object_cost(&setup.prices.1),
            requests,
        ),
        counts,
        cold_starts,
    };
    Ok(LiveResult { row, failures, max_abs_error: max_err, times })
}
