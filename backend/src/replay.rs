//! `hyscale replay`: an open-loop load generator that replays a trace against any Open Inference Protocol v2
//! endpoint and writes the simulator's report format.
//!
//! Each arrival is sent at its trace time (relative to the start of the replay), whether or not earlier
//! requests have answered: open loop, as real users arrive. Every request ends exactly once in the same
//! [`Ledger`] the simulator uses: completed (latency from its scheduled send time to the end of the
//! response, so a client that falls behind cannot hide queueing), rejected with a reason (HTTP 429 →
//! `throttled`, 503 → `overloaded`, other 4xx/5xx → `policy:http_4xx` / `policy:http_5xx`), or dropped with
//! a reason (`timed_out` past the request timeout, `worker_failed` when the connection fails). The payload
//! is one FP32 tensor per input, shaped from the model's metadata with batch 1, filled with seeded values.
//! Cost and instance figures come from the endpoint's `GET /v2/cluster/{model}` when a `hyscale serve` cluster
//! serves the model (billed by `policies::billing`); against any other server they are not known to a client
//! and are reported as zero.

use std::time::{Duration, Instant};

use hyscale_policies::Nanos;
use hyscale_policies::billing::CostBreakdown;
use hyscale_policies::ledger::{DropReason, Ledger, RejectReason, Slo};
use hyscale_policies::report::{
    ActionSummary, CostSummary, InstanceSummary, ModelMemorySummary, REPORT_FORMAT, Report, TimelineRow,
};
use hyscale_traces::{Arrival, TraceError};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::mpsc;

/// What can stop a replay before it starts or while it reads the trace.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The endpoint could not be asked for the model's metadata.
    #[error("{url}: {reason}")]
    Metadata {
        /// The metadata URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The trace failed mid-way.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Bad settings.
    #[error("invalid replay settings: {0}")]
    Invalid(String),
}

/// Settings of a replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8000`.
    pub endpoint: String,
    /// The model to infer with.
    pub model: String,
    /// The SLO to judge by.
    pub slo: Slo,
    /// A request still unanswered after this is dropped as `timed_out`.
    pub timeout: Duration,
    /// Seed of the payload values.
    pub seed: u64,
    /// Timeline interval.
    pub report_interval: Duration,
    /// Names for the report.
    pub scenario: String,
    /// The trace's description, for the report.
    pub trace: String,
}

/// One input tensor of the model, with batch 1.
#[derive(Clone, Debug, PartialEq)]
pub struct InputShape {
    /// Its name.
    pub name: String,
    /// Its shape with the batch dimension set to 1.
    pub shape: Vec<u64>,
}

/// Reads the model's inputs from `GET /v2/models/{model}`; symbolic (-1) dimensions become 1.
pub async fn model_inputs(client: &reqwest::Client, cfg: &ReplayConfig) -> Result<Vec<InputShape>, ReplayError> {
    let url = format!("{}/v2/models/{}", cfg.endpoint.trim_end_matches('/'), cfg.model);
    let err = |reason: String| ReplayError::Metadata { url: url.clone(), reason };
    let response = client.get(&url).timeout(cfg.timeout).send().await.map_err(|e| err(e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| err(e.to_string()))?;
    if !status.is_success() {
        return Err(err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))));
    }
    let meta: Value = serde_json::from_slice(&body).map_err(|e| err(format!("not JSON: {e}")))?;
    let inputs = meta["inputs"].as_array().ok_or_else(|| err("metadata has no 'inputs' list".into()))?;
    inputs
        .iter()
        .map(|i| {
            let name = i["name"].as_str().ok_or_else(|| err("an input has no name".into()))?.to_string();
            let dtype = i["datatype"].as_str().unwrap_or("");
            if dtype != "FP32" {
                return Err(err(format!("input '{name}' is {dtype}; replay sends FP32 only")));
            }
            let shape = i["shape"]
                .as_array()
                .ok_or_else(|| err(format!("input '{name}' has no shape")))?
                .iter()
                .map(|d| d.as_i64().map(|d| if d < 0 { 1 } else { d as u64 }))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| err(format!("input '{name}' has a non-integer dimension")))?;
            Ok(InputShape { name, shape })
        })
        .collect()
}

/// The infer request body for `inputs`, with values drawn from `seed`.
pub fn infer_body(inputs: &[InputShape], seed: u64) -> Value {
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let tensors: Vec<Value> = inputs
        .iter()
        .map(|i| {
            let n: u64 = i.shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            json!({ "name": i.name, "shape": i.shape, "datatype": "FP32", "data": data })
        })
        .collect();
    json!({ "inputs": tensors })
}

enum Outcome {
    Completed(Nanos),
    Rejected(RejectReason),
    Dropped(DropReason),
}

/// Replays `arrivals` against the endpoint and returns the report; prints nothing. `progress` is called
/// about once a second with (seconds replayed, requests sent).
pub async fn replay(
    arrivals: impl Iterator<Item = Result<Arrival, TraceError>>,
    cfg: &ReplayConfig,
    mut progress: impl FnMut(f64, u64),
) -> Result<Report, ReplayError> {
    if cfg.timeout.is_zero() || cfg.report_interval.is_zero() {
        return Err(ReplayError::Invalid("timeout and report interval must be positive".into()));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| ReplayError::Invalid(e.to_string()))?;
    let inputs = model_inputs(&client, cfg).await?;
    let body = std::sync::Arc::new(serde_json::to_vec(&infer_body(&inputs, cfg.seed)).unwrap_or_default());
    let url = std::sync::Arc::new(format!("{}/v2/models/{}/infer", cfg.endpoint.trim_end_matches('/'), cfg.model));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Nanos, Outcome)>();
    let start = Instant::now();
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_instances(client.clone(), cfg.clone(), start, std::sync::Arc::clone(&samples)));
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    let mut ledger = Ledger::new(cfg.slo);
    let interval = Nanos(cfg.report_interval.as_nanos() as u64);
    let mut rows: Vec<TimelineRow> = Vec::new();
    let mut arrivals_per_row: Vec<u64> = Vec::new();
    for a in arrivals {
        let a = a?;
        let due = start + Duration::from_nanos(a.time.0);
        tokio::time::sleep_until(due.into()).await;
        ledger.arrive();
        let row = (a.time.0 / interval.0) as usize;
        if arrivals_per_row.len() <= row {
            arrivals_per_row.resize(row + 1, 0);
        }
        arrivals_per_row[row] += 1;
        sent += 1;
        let (client, url, body, tx, timeout) = (client.clone(), url.clone(), body.clone(), tx.clone(), cfg.timeout);
        tokio::spawn(async move {
            let outcome = send(&client, &url, &body, timeout, due).await;
            let _ = tx.send((Nanos(due.duration_since(start).as_nanos() as u64), outcome));
        });
        while let Ok((t, outcome)) = rx.try_recv() {
            record(&mut ledger, &mut rows, interval, t, outcome);
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(start.elapsed().as_secs_f64(), sent);
            last_progress = Instant::now();
        }
    }
    drop(tx);
    while let Some((t, outcome)) = rx.recv().await {
        record(&mut ledger, &mut rows, interval, t, outcome);
    }
    let duration_s = start.elapsed().as_secs_f64();
    if rows.len() < arrivals_per_row.len() {
        rows.resize_with(arrivals_per_row.len(), || empty_row(0.0));
    }
    sampler.abort();
    let _ = sampler.await;
    // The last interval ends with the replay, before its sample is due: take it now.
    let last = rows.len().max(arrivals_per_row.len()).saturating_sub(1);
    let sampled = samples.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(row, _)| *row == last);
    if !sampled && let Some(status) = cluster_status(&client, cfg, cfg.timeout).await {
        samples.lock().unwrap_or_else(|p| p.into_inner()).push((last, instance_sample(&status)));
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, row) in rows.iter_mut().enumerate() {
        row.t_s = (i as u64 + 1) as f64 * interval.as_secs_f64();
        row.arrivals = arrivals_per_row.get(i).copied().unwrap_or(0);
    }
    for (i, s) in samples {
        if let Some(row) = rows.get_mut(i) {
            [row.vm_provisioning, row.vm_ready_on_demand, row.vm_ready_spot, row.vm_draining] =
                [s[0], s[1], s[2], s[3]];
            [row.fn_cold_starting, row.fn_idle, row.fn_busy] = [s[4], s[5], s[6]];
        }
    }
    let (requests, slo, latency_ms) = ledger.summary();
    let (cost, cluster) = cluster_figures(&client, cfg).await;
    let total = cost.total();
    let completed = requests.completed;
    Ok(Report {
        format: REPORT_FORMAT,
        mode: "replay".into(),
        scenario: cfg.scenario.clone(),
        policy: "(the endpoint's)".into(),
        seed: cfg.seed,
        trace: cfg.trace.clone(),
        model: cfg.model.clone(),
        duration_s,
        requests,
        slo,
        latency_ms,
        cost: CostSummary {
            pods: cost.pods,
            vm_on_demand: cost.vm_on_demand,
            vm_spot: cost.vm_spot,
            function_compute: cost.function_compute,
            function_requests: cost.function_requests,
            total,
            per_million_completed: if completed == 0 { 0.0 } else { total * 1e6 / completed as f64 },
        },
        instances: InstanceSummary {
            vms_launched: Default::default(),
            vm_hours_on_demand: cluster.vm_hours_on_demand,
            vm_hours_spot: cluster.vm_hours_spot,
            spot_interruptions: cluster.spot_interruptions,
            rerouted: cluster.rerouted,
            function_cold_starts: cluster.function_cold_starts,
            function_instance_hours: 0.0,
            function_instances_peak: 0,
            vm_model_loads: 0,
        },
        model_memory: ModelMemorySummary {
            model_size_mb: 0.0,
            gb_hours: 0.0,
            copies_peak: 0,
            one_copy_per_request_peak: 0,
            one_copy_per_request_gb_hours: 0.0,
        },
        functions: Default::default(),
        actions: ActionSummary { applied: 0, refused: Default::default() },
        timeline: rows,
    })
}

fn empty_row(t_s: f64) -> TimelineRow {
    TimelineRow {
        t_s,
        arrivals: 0,
        completed: 0,
        fulfilled: 0,
        rejected: 0,
        dropped: 0,
        vm_provisioning: 0,
        vm_ready_on_demand: 0,
        vm_ready_spot: 0,
        vm_draining: 0,
        fn_cold_starting: 0,
        fn_idle: 0,
        fn_busy: 0,
        cost_so_far: 0.0,
    }
}

/// Books an outcome in the ledger and in the timeline row of when it happened, as the simulator does: a
/// completion when its answer arrived, a refusal or a drop at its send time.
fn record(ledger: &mut Ledger, rows: &mut Vec<TimelineRow>, interval: Nanos, sent_at: Nanos, outcome: Outcome) {
    let at = match outcome {
        Outcome::Completed(latency) => sent_at.saturating_add(latency),
        _ => sent_at,
    };
    let i = (at.0 / interval.0) as usize;
    if rows.len() <= i {
        rows.resize_with(i + 1, || empty_row(0.0));
    }
    let row = &mut rows[i];
    match outcome {
        Outcome::Completed(latency) => {
            row.completed += 1;
            if ledger.complete(latency) {
                row.fulfilled += 1;
            }
        }
        Outcome::Rejected(reason) => {
            row.rejected += 1;
            ledger.reject(reason);
        }
        Outcome::Dropped(reason) => {
            row.dropped += 1;
            ledger.drop_request(reason);
        }
    }
}

/// Instances by state at the end of each report interval, from `GET /v2/cluster/{model}` (none when the
/// endpoint is not a `hyscale serve` cluster): (row, [VMs provisioning, ready on demand, ready spot,
/// draining, sandboxes cold-starting, idle, busy]), pushed into `samples` until the task is aborted.
type Samples = std::sync::Arc<std::sync::Mutex<Vec<(usize, [u32; 7])>>>;

async fn sample_instances(client: reqwest::Client, cfg: ReplayConfig, start: Instant, samples: Samples) {
    for row in 0usize.. {
        tokio::time::sleep_until((start + cfg.report_interval * (row as u32 + 1)).into()).await;
        match cluster_status(&client, &cfg, cfg.report_interval).await {
            Some(status) => samples.lock().unwrap_or_else(|p| p.into_inner()).push((row, instance_sample(&status))),
            None if row == 0 => return, // Not a cluster (or not answering): nothing to sample.
            None => {}
        }
    }
}

/// `GET /v2/cluster/{model}`: the cluster's status as JSON, or `None` when the endpoint does not answer
/// with one (not a `hyscale serve` cluster, not answering within `timeout`).
async fn cluster_status(client: &reqwest::Client, cfg: &ReplayConfig, timeout: Duration) -> Option<Value> {
    let url = format!("{}/v2/cluster/{}", cfg.endpoint.trim_end_matches('/'), cfg.model);
    let response = client.get(&url).timeout(timeout).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// One sample of a cluster's instances by state, from its status (see [`sample_instances`]).
fn instance_sample(status: &Value) -> [u32; 7] {
    let n = |v: &Value| v.as_u64().unwrap_or(0) as u32;
    let (vms, fns) = (&status["vms"], &status["functions"]);
    let spot = n(&status["vms_ready_spot"]);
    [n(&vms[0]), n(&vms[1]).saturating_sub(spot), spot, n(&vms[2]), n(&fns[0]), n(&fns[1]), n(&fns[2])]
}

/// Sends `n` requests one after another, each once the previous one has answered, and returns their
/// latencies: the served latency of a lone request (`hyscale fidelity` warms a serving path with them).
/// Any answer but 200 is an error naming it.
pub async fn lone_requests(cfg: &ReplayConfig, n: u32) -> Result<Vec<Duration>, ReplayError> {
    let client = reqwest::Client::new();
    let inputs = model_inputs(&client, cfg).await?;
    let body = serde_json::to_vec(&infer_body(&inputs, cfg.seed)).unwrap_or_default();
    let url = format!("{}/v2/models/{}/infer", cfg.endpoint.trim_end_matches('/'), cfg.model);
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let started = Instant::now();
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(cfg.timeout)
            .send()
            .await
            .map_err(|e| ReplayError::Invalid(format!("{url}: request {i}: {e}")))?;
        let status = response.status();
        let answer = response.bytes().await.map_err(|e| ReplayError::Invalid(format!("{url}: request {i}: {e}")))?;
        if !status.is_success() {
            return Err(ReplayError::Invalid(format!(
                "{url}: request {i}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer)
            )));
        }
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Polls `GET /v2/cluster/{model}` until `ready` holds for its JSON (or `deadline` passes: an error) and
/// returns that status.
pub async fn wait_for_cluster(
    cfg: &ReplayConfig,
    deadline: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value, ReplayError> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = cluster_status(&client, cfg, cfg.timeout).await
            && ready(&status)
        {
            return Ok(status);
        }
        if started.elapsed() > deadline {
            let url = format!("{}/v2/cluster/{}", cfg.endpoint.trim_end_matches('/'), cfg.model);
            return Err(ReplayError::Invalid(format!("{url}: the cluster was not ready after {deadline:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a cluster's status says about instances (zero without a cluster).
#[derive(Clone, Copy, Debug, Default)]
struct ClusterFigures {
    vm_hours_on_demand: f64,
    vm_hours_spot: f64,
    spot_interruptions: u64,
    rerouted: u64,
    function_cold_starts: u64,
}

/// What the endpoint's cluster has cost and run, from `GET /v2/cluster/{model}` (its `cost`, billed by
/// `policies::billing`, and its instance figures); zero when the model is not served by a cluster (a plain
/// batcher bills nothing).
async fn cluster_figures(client: &reqwest::Client, cfg: &ReplayConfig) -> (CostBreakdown, ClusterFigures) {
    let Some(status) = cluster_status(client, cfg, cfg.timeout).await else {
        return Default::default();
    };
    let f = |k: &str| status["cost"][k].as_f64().unwrap_or(0.0);
    let cost = CostBreakdown {
        vm_on_demand: f("vm_on_demand"),
        vm_spot: f("vm_spot"),
        function_compute: f("function_compute"),
        function_requests: f("function_requests"),
        pods: f("pods"),
    };
    let figures = ClusterFigures {
        vm_hours_on_demand: status["vm_hours_on_demand"].as_f64().unwrap_or(0.0),
        vm_hours_spot: status["vm_hours_spot"].as_f64().unwrap_or(0.0),
        spot_interruptions: status["spot_interruptions"].as_u64().unwrap_or(0),
        rerouted: status["rerouted"].as_u64().unwrap_or(0),
        function_cold_starts: status["function_cold_starts"].as_u64().unwrap_or(0),
    };
    (cost, figures)
}

async fn send(client: &reqwest::Client, url: &str, body: &[u8], timeout: Duration, due: Instant) -> Outcome {
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(timeout.saturating_sub(due.elapsed()))
        .send();
    let response = match request.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Dropped(DropReason::TimedOut),
        Err(_) => return Outcome::Dropped(DropReason::WorkerFailed),
    };
    let status = response.status().as_u16();
    // Read the whole body: the request is done when its response is.
    let read = response.bytes().await;
    let latency = Nanos(due.elapsed().as_nanos() as u64);
    match (status, read) {
        (_, Err(e)) if e.is_timeout() => Outcome::Dropped(DropReason::TimedOut),
        (_, Err(_)) => Outcome::Dropped(DropReason::WorkerFailed),
        (200..=299, Ok(_)) => Outcome::Completed(latency),
        (429, _) => Outcome::Rejected(RejectReason::Throttled),
        (503, _) => Outcome::Rejected(RejectReason::Overloaded),
        (400..=499, _) => Outcome::Rejected(RejectReason::Policy("http_4xx")),
        _ => Outcome::Rejected(RejectReason::Policy("http_5xx")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_seeded_and_shaped() {
        let inputs = vec![InputShape { name: "x".into(), shape: vec![1, 3] }];
        let a = infer_body(&inputs, 5);
        assert_eq!(a, infer_body(&inputs, 5));
        assert_ne!(a, infer_body(&inputs, 6));
        assert_eq!(a["inputs"][0]["shape"], json!([1, 3]));
        assert_eq!(a["inputs"][0]["data"].as_array().map(Vec::len), Some(3));
    }
}
