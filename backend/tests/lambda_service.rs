//! The local Lambda service with real sandboxes: processes of the `hyscale-fn` binary serving
//! `models/mlp.onnx` through the Runtime API.
//!
//! Timing assertions are one-sided and generous (a cold start is slower than a warm call; a killed
//! sandbox is answered well before its request would have finished), so they hold on a loaded machine.

use std::time::{Duration, Instant};

use hyscale_backend::lambda::payload::{InferEvent, InferResult, Tensor};
use hyscale_backend::lambda::{
    DEFAULT_HEADROOM_MB, FunctionConfig, FunctionErrorKind, FunctionService, InvokeOutcome, LambdaError,
    MODEL_PATH_ENV, MemoryLimit, SandboxState, invoke_router,
};
use hyscale_policies::Nanos;

const FUNCTION: &str = env!("CARGO_BIN_EXE_hyscale-fn");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// The longest any single step of these tests may take before it counts as hanging.
const HANG: Duration = Duration::from_secs(30);

fn config(name: &str) -> FunctionConfig {
    FunctionConfig::new(name, FUNCTION).with_env(MODEL_PATH_ENV, format!("{MODELS}/mlp.onnx"))
}

/// The fixed input of `models/expected.json`: x[i] = ((i * 37) mod 101) / 50 - 1 over the flat tensor.
fn fixed_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    Tensor::fp32("input", shape.to_vec(), data)
}

fn event(shape: &[usize], sleep_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&InferEvent { inputs: vec![fixed_input(shape)], sleep_ms }).expect("event encodes")
}

/// The expected output of `model` from `models/expected.json`: shape, data, tolerance.
fn expected(model: &str) -> (Vec<usize>, Vec<f32>, f32) {
    let text = std::fs::read_to_string(format!("{MODELS}/expected.json")).expect("models/expected.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("expected.json parses");
    let tolerance = doc["tolerance"].as_f64().expect("tolerance") as f32;
    let case = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["model"] == model)
        .unwrap_or_else(|| panic!("no case for {model}"));
    let output: Tensor = serde_json::from_value(case["output"].clone()).expect("output tensor");
    (output.shape, output.data, tolerance)
}

async fn invoke(service: &FunctionService, payload: Vec<u8>) -> InvokeOutcome {
    tokio::time::timeout(HANG, service.invoke(payload))
        .await
        .expect("the invocation hung")
        .expect("the service accepted the invocation")
}

fn output(outcome: &InvokeOutcome) -> InferResult {
    let body = outcome.result.as_ref().unwrap_or_else(|e| panic!("function error: {e}"));
    serde_json::from_slice(body).expect("the function's answer parses")
}

/// Waits until some sandbox is busy and returns its process id.
async fn busy_pid(service: &FunctionService) -> u32 {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(pid) = service.sandboxes().iter().find(|s| s.state == SandboxState::Busy).and_then(|s| s.pid) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no sandbox became busy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_invoke_is_cold_and_right_and_the_second_is_warm_and_faster() {
    let service = FunctionService::start(config("cold-warm")).await.expect("service starts");
    let (shape, want, tolerance) = expected("mlp.onnx");

    let cold = invoke(&service, event(&[3, 64], 0)).await;
    assert!(cold.cold);
    assert!(cold.init_duration > Nanos::ZERO);
    let got = output(&cold);
    assert_eq!(got.model_name, "mlp");
    assert_eq!(got.outputs.len(), 1);
    assert_eq!(got.outputs[0].name, "logits");
    assert_eq!(got.outputs[0].shape, shape);
    for (i, (g, w)) in got.outputs[0].data.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= tolerance, "logits[{i}] = {g}, expected {w}");
    }

    let warm = invoke(&service, event(&[3, 64], 0)).await;
    assert!(!warm.cold);
    assert_eq!(warm.sandbox, cold.sandbox, "the warm sandbox is reused");
    assert_eq!(warm.init_duration, Nanos::ZERO);
    assert_eq!(output(&warm).outputs, got.outputs);
    assert!(warm.latency < cold.latency, "warm {} vs cold {}", warm.latency, cold.latency);

    // Billing: the duration (plus the init when cold) rounded up to whole milliseconds.
    for o in [&cold, &warm] {
        let unrounded = o.duration.saturating_add(o.init_duration);
        assert!(o.billed_duration >= unrounded);
        assert!(o.billed_duration < unrounded.saturating_add(Nanos::from_millis(1)));
        assert_eq!(o.billed_duration.0 % Nanos::from_millis(1).0, 0);
        assert_eq!(o.memory_mb, 512);
    }
    let stats = service.stats();
    assert_eq!((stats.cold_starts_total, stats.warm_starts_total, stats.invocations_total), (1, 1, 2));
    assert_eq!((stats.idle_warm, stats.busy, stats.cold_starting, stats.in_flight), (1, 0, 0, 0));
    let billed_ms = (cold.billed_duration.0 + warm.billed_duration.0) / Nanos::from_millis(1).0;
    assert_eq!(stats.billed_mb_ms_total, billed_ms * 512);
    eprintln!(
        "cold: latency {:.1} ms (init {:.1} ms, duration {:.2} ms); warm: latency {:.2} ms (duration {:.2} ms); \
         peak RSS {:?} MB",
        cold.latency.as_millis_f64(),
        cold.init_duration.as_millis_f64(),
        cold.duration.as_millis_f64(),
        warm.latency.as_millis_f64(),
        warm.duration.as_millis_f64(),
        warm.max_memory_used_mb,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_delay_lengthens_cold_starts_only_and_is_billed_with_the_init() {
    let mut config = config("delayed");
    config.cold_start_delay = Nanos::from_millis(250);
    let service = FunctionService::start(config).await.expect("service starts");
    let cold = invoke(&service, event(&[1, 64], 0)).await;
    output(&cold);
    assert!(cold.cold && cold.init_duration >= Nanos::from_millis(250), "init {}", cold.init_duration);
    assert!(cold.billed_duration >= Nanos::from_millis(250));
    let warm = invoke(&service, event(&[1, 64], 0)).await;
    assert!(!warm.cold && warm.latency < Nanos::from_millis(250), "warm latency {}", warm.latency);

    // Without init billing, only the invocation's own duration is billed.
    let mut config = crate::config("delayed-unbilled");
    config.cold_start_delay = Nanos::from_millis(250);
    config.bill_init = false;
    let service = FunctionService::start(config).await.expect("service starts");
    let cold = invoke(&service, event(&[1, 64], 0)).await;
    assert_eq!(cold.billed_duration, cold.duration.round_up_to(Nanos::from_millis(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_expires_after_the_keep_alive_and_the_next_start_is_cold() {
    let mut config = config("keep-alive");
    config.keep_alive = Nanos::from_millis(150);
    let service = FunctionService::start(config).await.expect("service starts");
    let first = invoke(&service, event(&[1, 64], 0)).await;
    assert!(first.cold);
    let again = invoke(&service, event(&[1, 64], 0)).await;
    assert!(!again.cold, "reused within the keep-alive");

    // The reaper kills the idle sandbox soon after the keep-alive.
    let deadline = Instant::now() + HANG;
    while service.stats().idle_warm > 0 {
        assert!(Instant::now() < deadline, "the idle sandbox was never retired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(service.stats().expired_total, 1);
    let after = invoke(&service, event(&[1, 64], 0)).await;
    assert!(after.cold, "a sandbox idle past the keep-alive is not reused");
    assert_ne!(after.sandbox, first.sandbox);
    output(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_throttles_and_the_invoke_api_answers_429() {
    let mut config = config("capped");
    config.max_sandboxes = 1;
    let service = FunctionService::start(config).await.expect("service starts");
    let slow = tokio::spawn({
        let service = service.clone();
        async move { service.invoke(event(&[1, 64], 1500)).await }
    });
    busy_pid(&service).await;

    match service.invoke(event(&[1, 64], 0)).await {
        Err(LambdaError::Throttled { limit: 1, .. }) => {}
        other => panic!("expected throttling, got {other:?}"),
    }
    let (url, _server) = serve(service.clone()).await;
    let client = reqwest::Client::new();
    let response = client.post(&url).body(event(&[1, 64], 0)).send().await.expect("HTTP call");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-amzn-errortype"], "TooManyRequestsException");

    let slow = tokio::time::timeout(HANG, slow).await.expect("the slow call hung").expect("task");
    output(&slow.expect("accepted"));
    assert_eq!(service.stats().throttled_total, 2);
    // The cap is on sandboxes alive at once: with the one free again, calls are served.
    output(&invoke(&service, event(&[1, 64], 0)).await);
}

/// Concurrency above 1: one sandbox (one loaded model) serves several invocations at once, so the memory
/// they hold is one process's, not one per request; the cap on sandboxes still holds past the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sandbox_serves_concurrent_invocations_from_one_loaded_model() {
    let mut shared = config("shared");
    shared.concurrency = 4;
    shared.max_sandboxes = 1;
    let service = FunctionService::start(shared).await.expect("service starts");
    // Warm it, then four at once, each holding its slot for 600 ms: together they take about 600 ms, not
    // 2.4 s, and all run on the one sandbox.
    let first = invoke(&service, event(&[1, 64], 0)).await;
    output(&first);
    let started = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.invoke(event(&[1, 64], 600)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(tokio::time::timeout(HANG, call).await.expect("hung").expect("task").expect("accepted"));
    }
    let together = started.elapsed();
    for o in &outcomes {
        output(o);
        assert_eq!(o.sandbox, first.sandbox, "every invocation runs on the one sandbox");
        assert!(!o.cold);
    }
    assert!(together < Duration::from_millis(2000), "four 600 ms invocations ran one after another: {together:?}");
    let shared_rss: u32 = outcomes.iter().filter_map(|o| o.max_memory_used_mb).max().unwrap_or(0);
    assert_eq!(service.stats().cold_starts_total, 1);
    // A fifth while four run: the one sandbox is full and the cap is one sandbox, so it is throttled.
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.invoke(event(&[1, 64], 800)).await })
        })
        .collect();
    let deadline = Instant::now() + HANG;
    while service.sandboxes().first().map_or(0, |s| s.in_use) < 4 {
        assert!(Instant::now() < deadline, "the four invocations never ran at once");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match service.invoke(event(&[1, 64], 0)).await {
        Err(LambdaError::Throttled { limit: 1, .. }) => {}
        other => panic!("expected throttling past the sandbox's slots, got {other:?}"),
    }
    for call in busy {
        output(&tokio::time::timeout(HANG, call).await.expect("hung").expect("task").expect("accepted"));
    }

    // The same four at once with one request per sandbox need four sandboxes, each with its own model.
    let mut single = config("single");
    single.max_sandboxes = 4;
    let singles = FunctionService::start(single).await.expect("service starts");
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let service = singles.clone();
            tokio::spawn(async move { service.invoke(event(&[1, 64], 300)).await })
        })
        .collect();
    let mut separate_rss = 0;
    let mut sandboxes = std::collections::BTreeSet::new();
    for call in calls {
        let o = tokio::time::timeout(HANG, call).await.expect("hung").expect("task").expect("accepted");
        output(&o);
        sandboxes.insert(o.sandbox);
        separate_rss += o.max_memory_used_mb.unwrap_or(0);
    }
    assert_eq!(sandboxes.len(), 4);
    eprintln!(
        "resident memory: one sandbox serving 4 at once {shared_rss} MiB; 4 single-request sandboxes {separate_rss} \
         MiB in all"
    );
    assert!(shared_rss > 0 && separate_rss > 2 * shared_rss, "{shared_rss} MiB vs {separate_rss} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_busy_sandbox_answers_its_request_with_an_error_at_once() {
    let service = FunctionService::start(config("killed")).await.expect("service starts");
    let request = tokio::spawn({
        let service = service.clone();
        async move { service.invoke(event(&[1, 64], 20_000)).await }
    });
    let pid = busy_pid(&service).await;
    let killed_at = Instant::now();
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success());

    let outcome = tokio::time::timeout(HANG, request).await.expect("the request hung").expect("task");
    let outcome = outcome.expect("accepted");
    let answered_after = killed_at.elapsed();
    let error = outcome.result.expect_err("a killed sandbox gives no answer");
    assert_eq!(error.kind, FunctionErrorKind::Exit);
    assert_eq!(error.error_type, "Runtime.ExitError");
    assert!(error.message.contains("signal: 9"), "{}", error.message);
    assert!(answered_after < Duration::from_secs(5), "answered {answered_after:?} after the kill");
    assert!(service.sandboxes().is_empty(), "the dead sandbox is gone");

    // The service goes on: the next call starts a fresh sandbox.
    let next = invoke(&service, event(&[1, 64], 0)).await;
    assert!(next.cold);
    output(&next);
    let stats = service.stats();
    assert_eq!((stats.function_errors_total, stats.cold_starts_total), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_while_idle_is_never_reused() {
    // The event follows the kill at once: either the pool has already seen the death and starts a fresh
    // sandbox, or the event reaches the dead sandbox's endpoint first and is answered with an error.
    // Either way it is answered, and the dead sandbox never serves again.
    let service = FunctionService::start(config("killed-idle")).await.expect("service starts");
    assert_eq!(service.prewarm(1).await.expect("pre-warm"), 1);
    for round in 0..3 {
        let sandboxes = service.sandboxes();
        assert_eq!(sandboxes.len(), 1, "round {round}: {sandboxes:?}");
        let dead = sandboxes[0];
        assert_eq!(dead.state, SandboxState::Idle);
        let pid = dead.pid.expect("a pid").to_string();
        let status = std::process::Command::new("kill").args(["-9", &pid]).status().expect("kill");
        assert!(status.success());
        let outcome = invoke(&service, event(&[1, 64], 0)).await;
        match &outcome.result {
            Ok(_) => assert!(outcome.cold && outcome.sandbox != dead.id, "round {round}: {outcome:?}"),
            Err(error) => assert_eq!(error.kind, FunctionErrorKind::Exit, "round {round}: {error}"),
        }
        let next = invoke(&service, event(&[1, 64], 0)).await;
        assert_ne!(next.sandbox, dead.id);
        output(&next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_load_is_an_init_error_naming_it() {
    let bad = format!("{MODELS}/no-such-model.onnx");
    let service =
        FunctionService::start(config("bad-model").with_env(MODEL_PATH_ENV, &bad)).await.expect("service starts");
    let outcome = invoke(&service, event(&[1, 64], 0)).await;
    assert!(outcome.cold);
    let error = outcome.result.expect_err("no model, no answer");
    assert_eq!(error.kind, FunctionErrorKind::Init);
    assert_eq!(error.error_type, "Runtime.InitError");
    assert!(error.message.contains(&bad), "{}", error.message);
    assert!(service.sandboxes().is_empty(), "the failed sandbox is gone");
    let stats = service.stats();
    assert_eq!((stats.init_failures_total, stats.function_errors_total), (1, 1));

    // Without the variable at all, the function says which variable is missing.
    let mut unset = config("no-model");
    unset.env.clear();
    let service = FunctionService::start(unset).await.expect("service starts");
    let error = invoke(&service, event(&[1, 64], 0)).await.result.expect_err("no model");
    assert!(error.message.contains(MODEL_PATH_ENV), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_is_a_handled_error_and_the_sandbox_stays_warm() {
    let service = FunctionService::start(config("bad-event")).await.expect("service starts");
    let outcome = invoke(&service, br#"{"inputs": []}"#.to_vec()).await;
    let error = outcome.result.expect_err("no input, no answer");
    assert_eq!(error.kind, FunctionErrorKind::Handled);
    let next = invoke(&service, event(&[2, 64], 0)).await;
    assert!(!next.cold, "a handled error keeps the sandbox");
    assert_eq!(output(&next).outputs[0].shape, vec![2, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_past_the_timeout_is_cut_off_and_its_sandbox_killed() {
    let mut config = config("timeout");
    config.timeout = Nanos::from_millis(300);
    let service = FunctionService::start(config).await.expect("service starts");
    invoke(&service, event(&[1, 64], 0)).await;
    let started = Instant::now();
    let outcome = invoke(&service, event(&[1, 64], 10_000)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let error = outcome.result.expect_err("timed out");
    assert_eq!(error.kind, FunctionErrorKind::Timeout);
    assert_eq!(outcome.billed_duration, Nanos::from_millis(300));
    assert!(service.sandboxes().is_empty(), "a timed-out sandbox is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cap_is_enforced_on_the_sandbox() {
    // With the default headroom, the sandbox runs under an address-space limit of memory + headroom, and
    // its peak resident memory stays under the memory size.
    let service = FunctionService::start(config_with_memory(256)).await.expect("service starts");
    let outcome = invoke(&service, event(&[1, 64], 0)).await;
    output(&outcome);
    let used = outcome.max_memory_used_mb.expect("Linux reports the peak");
    assert!(used > 0 && used <= 256, "peak RSS {used} MB");
    let pid = service.sandboxes()[0].pid.expect("a pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max address space")).expect("an address-space line");
    let cap = (256 + DEFAULT_HEADROOM_MB as u64) * 1024 * 1024;
    assert_eq!(line.split_whitespace().nth(3), Some(cap.to_string().as_str()), "{line}");

    // 8 MiB of address space is too little for the process to load: it dies before it is ready (or, on
    // a kernel that checks earlier, cannot be started at all).
    let mut config = config("tiny");
    config.memory_mb = 8;
    config.memory_limit = MemoryLimit::AddressSpace { headroom_mb: 0 };
    let service = FunctionService::start(config).await.expect("service starts");
    match tokio::time::timeout(HANG, service.invoke(event(&[1, 64], 0))).await.expect("hung") {
        Ok(outcome) => {
            let error = outcome.result.expect_err("cannot run in 8 MiB");
            assert_eq!(error.kind, FunctionErrorKind::Init, "{error}");
        }
        Err(LambdaError::Spawn { .. }) => {}
        Err(other) => panic!("unexpected: {other}"),
    }
}

fn config_with_memory(memory_mb: u32) -> FunctionConfig {
    let mut config = config("sized");
    config.memory_mb = memory_mb;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_serves_standard_requests() {
    let service = FunctionService::start(config("http-fn")).await.expect("service starts");
    let (url, _server) = serve(service.clone()).await;
    let client = reqwest::Client::new();

    let response = client.post(&url).body(event(&[3, 64], 0)).send().await.expect("HTTP call");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-hyscale-cold"], "true");
    assert!(response.headers().contains_key("x-amzn-requestid"));
    let answer: InferResult = serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    assert_eq!(answer.outputs[0].shape, vec![3, 10]);

    // A full ARN with a qualifier names the same function; the second call is warm.
    let arn_url = url.replace("http-fn", "arn:aws:lambda:us-east-1:000000000000:function:http-fn:$LATEST");
    let response = client.post(&arn_url).body(event(&[1, 64], 0)).send().await.expect("HTTP call");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-hyscale-cold"], "false");

    let response = client.post(&url).body(r#"{"inputs": []}"#).send().await.expect("HTTP call");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let error: serde_json::Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    assert!(error["errorMessage"].as_str().is_some_and(|m| !m.is_empty()), "{error}");

    let missing = url.replace("http-fn", "other-fn");
    let response = client.post(&missing).body("{}").send().await.expect("HTTP call");
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-amzn-errortype"], "ResourceNotFoundException");

    let response =
        client.post(&url).header("x-amz-invocation-type", "DryRun").body("{}").send().await.expect("HTTP call");
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarmed_sandboxes_serve_warm_up_to_the_cap() {
    let mut config = config("prewarmed");
    config.max_sandboxes = 2;
    let service = FunctionService::start(config).await.expect("service starts");
    let ready = tokio::time::timeout(HANG, service.prewarm(3)).await.expect("pre-warm hung").expect("pre-warm");
    assert_eq!(ready, 2, "the cap bounds the pre-warm");
    let stats = service.stats();
    assert_eq!((stats.idle_warm, stats.cold_starts_total, stats.invocations_total), (2, 2, 0));
    let outcome = invoke(&service, event(&[1, 64], 0)).await;
    assert!(!outcome.cold);
    output(&outcome);
}

/// Cold-start and warm latency of the real function, per engine, for the record (not an assertion):
/// `cargo test --release -p hyscale-backend --test lambda_service -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures; run by hand"]
async fn cold_and_warm_latency_figures() {
    for engine in ["tract", "onnxruntime"] {
        let mut cold = Vec::new();
        let mut init = Vec::new();
        let mut warm = Vec::new();
        let mut engine_name = String::new();
        for round in 0..10 {
            let mut config = config(&format!("figures-{engine}-{round}")).with_env("HYSCALE_ENGINE", engine);
            config.max_sandboxes = 1;
            let service = FunctionService::start(config).await.expect("service starts");
            let first = invoke(&service, event(&[1, 64], 0)).await;
            if first.result.is_err() {
                eprintln!("{engine}: unavailable here ({:?})", first.result.err());
                break;
            }
            engine_name = output(&first).engine;
            cold.push(first.latency.as_millis_f64());
            init.push(first.init_duration.as_millis_f64());
            for _ in 0..50 {
                warm.push(invoke(&service, event(&[1, 64], 0)).await.latency.as_millis_f64());
            }
        }
        if cold.is_empty() {
            continue;
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let p99 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[(v.len() * 99 / 100).min(v.len() - 1)]
        };
        eprintln!(
            "{engine_name}: cold invoke median {:.1} ms (init {:.1} ms) over {} sandboxes; warm invoke median \
             {:.3} ms, p99 {:.3} ms over {} calls (MLP, batch 1)",
            median(&mut cold),
            median(&mut init),
            cold.len(),
            median(&mut warm),
            p99(&mut warm),
            warm.len()
        );
    }
}

/// The AWS SDK for Python calls the function through the Invoke API, as it would call AWS Lambda. Runs when
/// the Python in `HYSCALE_PYTHON` (default `python3`) has `boto3`; says so and passes otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_invokes_the_function_through_the_invoke_api() {
    let python = std::env::var("HYSCALE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_boto3 = std::process::Command::new(&python).args(["-c", "import boto3"]).output();
    if !has_boto3.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: {python} has no boto3 (pip install boto3, or set HYSCALE_PYTHON)");
        return;
    }
    let service = FunctionService::start(config("boto3-fn")).await.expect("service starts");
    let (url, _server) = serve(service.clone()).await;
    let endpoint = url.split("/2015-03-31").next().expect("endpoint").to_owned();
    let script = r#"
import json, sys
import boto3
from botocore.config import Config
endpoint, name, payload = sys.argv[1:4]
client = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="local",
                      aws_secret_access_key="local", config=Config(retries={"max_attempts": 0}))
answer = client.invoke(FunctionName=name, Payload=payload.encode())
out = {"status": answer["StatusCode"], "error": answer.get("FunctionError"), "payload": json.loads(answer["Payload"].read())}
bad = client.invoke(FunctionName=name, Payload=b'{"inputs": []}')
out["bad_error"] = bad.get("FunctionError")
try:
    client.invoke(FunctionName="missing-fn", Payload=b"{}")
except client.exceptions.ResourceNotFoundException:
    out["missing"] = "ResourceNotFoundException"
print(json.dumps(out))
"#;
    let payload = String::from_utf8(event(&[3, 64], 0)).expect("UTF-8");
    let run = tokio::process::Command::new(&python).args(["-c", script, &endpoint, "boto3-fn", &payload]).output();
    let run = tokio::time::timeout(HANG, run).await.expect("boto3 hung").expect("python runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).expect("the script prints JSON");
    assert_eq!(out["status"], 200);
    assert_eq!(out["error"], serde_json::Value::Null);
    let answer: InferResult = serde_json::from_value(out["payload"].clone()).expect("an InferResult");
    let (shape, want, tolerance) = expected("mlp.onnx");
    assert_eq!(answer.outputs[0].shape, shape);
    assert!(answer.outputs[0].data.iter().zip(&want).all(|(g, w)| (g - w).abs() <= tolerance));
    assert_eq!(out["bad_error"], "Unhandled");
    assert_eq!(out["missing"], "ResourceNotFoundException");
}

/// Serves the Invoke API for `service` on a loopback port; returns the function's invoke URL and the
/// server task (it stops with the test's runtime).
async fn serve(service: FunctionService) -> (String, tokio::task::JoinHandle<()>) {
    let name = service.config().name.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, invoke_router([service])).await;
    });
    (format!("http://{addr}/2015-03-31/functions/{name}/invocations"), server)
}

/// A sandbox running several events at once (whose runtime retries a failed poll for ever) ends once the
/// platform that started it is gone, instead of polling a dead endpoint: started by a shell that exits a
/// second later, as a `hyscale serve` killed with `kill -9` would.
#[test]
fn an_orphaned_concurrent_sandbox_exits() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead_endpoint = listener.local_addr().expect("address").to_string();
    drop(listener);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{FUNCTION} >/dev/null 2>&1 & p=$!; echo $p; sleep 1; kill -0 $p && echo alive"))
        .env("AWS_LAMBDA_RUNTIME_API", &dead_endpoint)
        .env("AWS_LAMBDA_FUNCTION_NAME", "orphan")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/orphan")
        .env("AWS_LAMBDA_MAX_CONCURRENCY", "4")
        .env(MODEL_PATH_ENV, format!("{MODELS}/mlp.onnx"))
        .env("HYSCALE_ENGINE", "tract")
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let pid: u32 = lines.next().unwrap_or_default().trim().parse().expect("the sandbox's pid");
    assert_eq!(lines.next(), Some("alive"), "the sandbox must run while its parent does");
    // Its parent gone, it polls a dead endpoint: it must end within a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
    {
        assert!(Instant::now() < deadline, "the orphaned sandbox {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}
