//! `hyscale fidelity`: does the simulator predict the live system?
//!
//! For one model, one trace window and a list of policies it
//! 1. profiles the model here (`hyscale profile`, in a child process: the batch-latency curve and the cold
//!    start of fresh processes);
//! 2. measures each serving path on the live half: requests through one VM worker (policy `static`) and
//!    through warm function sandboxes (policy `function-only`), sent with the trace's own gaps taken from
//!    just after the compared window (held out) and timed by the same load generator as the trace. On the VM path the served median
//!    minus the engine's own latency is the hardware's `overhead_ms`; on the function path the time an
//!    invocation holds its sandbox (the function's handling of the event) is added to the function table
//!    (busy and billed time) and the rest of the served median is its `overhead_ms`;
//! 3. for each policy simulates the window with that profile and runs the live cluster with the same
//!    configuration on the same arrivals, replayed in real time by `hyscale replay`'s load generator;
//! 4. prints both side by side with each figure's error and writes the reports and the comparison as JSON.
//!
//! The simulator is given the live half's constants, not fitted to its answers: every VM type's
//! provisioning delay is the constant the live workers wait (`[cluster.vm_types."T"] provision_s`, or the
//! catalog's mean), a function cold start's cloud-side parts (sandbox creation, runtime start, model fetch)
//! are fixed at the catalog's means and injected live as `function_cold_start_delay_ms` (the model's
//! deserialisation and first inference are real live and the profile's measured `load_s` in the
//! simulator), and the function concurrency cap is the live one. Everything it uses is listed in
//! `fidelity.json` under `calibration`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyscale_backend::live::ClusterConfig;
use hyscale_backend::replay::{ReplayConfig, lone_requests, replay, wait_for_cluster};
use hyscale_backend::server::{AppState, ServeConfig, serve};
use hyscale_policies::profile::ProfileFile;
use hyscale_policies::report::Report;
use hyscale_policies::static_fleet::{FleetEntry, StaticConfig};
use hyscale_policies::{Market, Nanos, POLICY_NAMES, Slo};
use hyscale_sim::dist::Dist;
use hyscale_sim::scenario::{Scenario, SimSettings};
use hyscale_traces::{Arrival, TraceSpec, TransformSpec};
use serde::Serialize;

use crate::BadInput;
use crate::serve_cmd::{cluster_catalog, cluster_scenario, read_config};

#[derive(Args)]
pub struct FidelityArgs {
    /// The trace (any form `hyscale simulate --trace` takes); its first --duration-s seconds are replayed in
    /// real time and simulated.
    #[arg(long)]
    trace: String,
    /// The policies, comma-separated (as `hyscale simulate --policy` names them).
    #[arg(long, value_delimiter = ',', required = true)]
    policy: Vec<String>,
    /// The ONNX model (default: the file of the configuration's cluster model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A live configuration with a `[cluster]` table (catalog, policy sections, SLO, and one
    /// `[cluster.vm_types."TYPE"]` per VM type the live workers stand for); see live/README.md.
    #[arg(long, default_value = "live/fidelity.toml")]
    config: PathBuf,
    /// Seconds of the trace replayed and simulated.
    #[arg(long, default_value_t = 120.0)]
    duration_s: f64,
    /// Use this profile (`hyscale profile` output) instead of profiling the model now.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Requests sent through each serving path to measure it (after 10 to warm it), with the trace's gaps
    /// from just after the compared window (capped at 2 s; evenly spaced when the trace ends first).
    #[arg(long, default_value_t = 100)]
    calibration_requests: u32,
    /// Seed of the trace's random choices, the payloads and the simulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder for the profile, both halves' reports and fidelity.json.
    #[arg(long, default_value = "results/fidelity")]
    out: PathBuf,
}

/// Standard normal quantiles at 0.90 and 0.99.
const Z90: f64 = 1.281_551_565_5;
const Z99: f64 = 2.326_347_874;

/// Targets of the comparison: (quantity, bound, whether the bound is an absolute difference in points).
const TARGETS: &[(&str, f64, bool)] = &[
    ("p50_ms", 0.10, false),
    ("p90_ms", f64::NAN, false),
    ("p99_ms", 0.15, false),
    ("slo_attainment_pct", 1.0, true),
    ("rejected", f64::NAN, false),
    ("vm_instance_s", f64::NAN, false),
    ("function_cold_starts", 0.10, false),
    ("cost_usd", 0.05, false),
];

/// One compared quantity.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What is compared.
    pub quantity: &'static str,
    /// The simulator's figure.
    pub sim: f64,
    /// The live figure.
    pub live: f64,
    /// |sim − live| / live (0 when both are 0, 1 when only live is 0); for the SLO, the difference in points.
    pub error: f64,
    /// The target bound on `error`, if the quantity has one.
    pub target: Option<f64>,
    /// Whether `error` is within the target (true when there is none).
    pub met: bool,
}

/// One policy's comparison.
#[derive(Debug, Serialize)]
struct Run {
    policy: String,
    rows: Vec<Row>,
    sim_report: PathBuf,
    live_report: PathBuf,
}

/// What the simulator was given from the live half, and how it was measured.
#[derive(Debug, Serialize)]
struct Calibration {
    profile: PathBuf,
    engine_batch1_ms: f64,
    function_batch1_ms: f64,
    vm_served_median_ms: f64,
    vm_overhead_ms: f64,
    vm_overhead_p99_ms: f64,
    function_served_median_ms: f64,
    function_in_sandbox_ms: f64,
    function_overhead_ms: f64,
    function_overhead_p99_ms: f64,
    calibration_schedule: String,
    calibration_requests: u32,
    vm_provision_s: Vec<(String, f64)>,
    function_cold_start_injected_ms: f64,
    function_load_s: f64,
    function_max_sandboxes: u32,
}

#[derive(Debug, Serialize)]
struct FidelityFile {
    trace: String,
    duration_s: f64,
    seed: u64,
    model: PathBuf,
    calibration: Calibration,
    runs: Vec<Run>,
}

pub fn run(args: FidelityArgs) -> anyhow::Result<()> {
    let bad = |m: String| anyhow::Error::new(BadInput(m));
    if !(args.duration_s.is_finite() && args.duration_s > 0.0) {
        return Err(bad(format!("--duration-s must be a positive number of seconds, got {}", args.duration_s)));
    }
    if args.calibration_requests == 0 {
        return Err(bad("--calibration-requests must be at least 1".into()));
    }
    for p in &args.policy {
        if !POLICY_NAMES.contains(&p.as_str()) {
            return Err(bad(format!("--policy: unknown policy '{p}'; the policies are: {}", POLICY_NAMES.join(", "))));
        }
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let config_path = cwd.join(&args.config);
    let (mut serve_cfg, cluster) = read_config(&config_path)?;
    let where_ = config_path.display().to_string();
    let mut cluster =
        cluster.ok_or_else(|| bad(format!("{where_}: no [cluster] table (fidelity runs a live cluster)")))?;
    if cluster.time_scale != 1.0 {
        return Err(bad(format!(
            "{where_}: [cluster] time_scale is {}; fidelity compares both halves in real time (time_scale = 1)",
            cluster.time_scale
        )));
    }
    if cluster.vm_types.is_empty() {
        return Err(bad(format!(
            "{where_}: no [cluster.vm_types.\"TYPE\"] table: name the VM types the live workers stand for (they all \
             run on this machine, which is profiled under their names)"
        )));
    }
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let model_cfg = serve_cfg
        .models
        .iter_mut()
        .find(|m| m.name == cluster.model)
        .ok_or_else(|| bad(format!("{where_}: [cluster] model '{}' is not among the [[models]]", cluster.model)))?;
    if let Some(m) = &args.model {
        model_cfg.path = cwd.join(m);
    }
    let model_path = base.join(&model_cfg.path);
    // Each live VM worker queues this many requests; the simulator's VMs are given the same limit.
    let queue_limit = u32::try_from(model_cfg.queue_capacity).unwrap_or(u32::MAX);
    if !model_path.is_file() {
        return Err(bad(format!("--model {}: no such file", model_path.display())));
    }
    let out = cwd.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // 1. The profile: measured here, or given.
    let measured = out.join("profile-measured.toml");
    match &args.profile {
        Some(p) => {
            let text = std::fs::read(cwd.join(p)).map_err(|e| bad(format!("--profile {}: {e}", p.display())))?;
            std::fs::write(&measured, text).with_context(|| format!("writing {}", measured.display()))?;
        }
        None => profile(&model_path, &cluster, &measured)?,
    }
    cluster.profile = measured.clone();

    // The live half's constants, given to the simulator.
    let probe = cluster_scenario(&config_path, &base, &cluster, poisson()?, args.seed, SimSettings::default())?;
    let f = &probe.function_model;
    let injected_s = f.sandbox_init_s.mean()
        + f.runtime_init.as_secs_f64()
        + probe.catalog.functions.model_size_mb * f.model_load_mb_per_s.mean_reciprocal();
    cluster.function_cold_start_delay_ms = injected_s * 1e3;
    let vm_provision_s: Vec<(String, f64)> = probe
        .catalog
        .vm_types
        .iter()
        .map(|t| {
            let s = cluster.vm_types.get(&t.name).and_then(|o| o.provision_s);
            (t.name.clone(), s.unwrap_or(t.provision_mean.as_secs_f64()))
        })
        .collect();
    let engine_batch1_ms = probe.catalog.vm_types.first().map_or(0.0, |t| t.service.latency(1).as_millis_f64());
    let fns = &probe.catalog.functions;
    let function_batch1_ms = fns.service_time(1, fns.default_memory_mb, 1).as_millis_f64();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;

    // 2. The serving paths, measured on the live half with the trace's held-out gaps.
    let mut spec = TraceSpec::from_arg(&args.trace).map_err(|e| bad(format!("--trace: {e}")))?;
    spec.rebase(&cwd);
    let window = TraceSpec::Transform(TransformSpec::Window {
        start_s: 0.0,
        end_s: Some(args.duration_s),
        source: Box::new(spec.clone()),
    });
    let trace_seed = hyscale_sim::rng::SeedFan::new(args.seed).seed("arrivals");
    let count = window.open(Path::new(""), trace_seed).map_err(|e| bad(format!("--trace: {e}")))?.count();
    let schedule = calibration_schedule(&spec, trace_seed, args.duration_s, count, args.calibration_requests)
        .map_err(|e| bad(format!("--trace: {e}")))?;
    let vm_type = probe.catalog.vm_types.first().map(|t| t.name.clone()).unwrap_or_default();
    let live = LiveSetup { serve: &serve_cfg, base: &base, config_path: &config_path };
    eprintln!("measuring the serving paths ({} requests each, {})", schedule.times.len(), schedule.describe);
    let (vm_lone, fn_lone) = runtime.block_on(async {
        let vm = live.lone(&calibration_vm(&cluster, &vm_type), &schedule.times, args.seed).await?;
        let mut c = cluster.clone();
        c.policy = "function-only".into();
        let func = live.lone(&c, &schedule.times, args.seed).await?;
        anyhow::Ok((vm, func))
    })?;
    let mut file: ProfileFile = toml::from_str(&std::fs::read_to_string(&measured)?)
        .with_context(|| format!("reading {}", measured.display()))?;
    let vm_served = vm_lone.served_ms;
    let fn_served = fn_lone.served_ms;
    // A function invocation holds its sandbox for the engine's time plus the function's own handling of the
    // event (decoding, encoding): measured live, it is added to the function table, as the sandbox's busy
    // (and billed) time; the rest of the served latency is the path's overhead.
    let in_sandbox_ms = fn_lone.in_sandbox_ms.unwrap_or(function_batch1_ms).max(function_batch1_ms);
    let handling_ms = in_sandbox_ms - function_batch1_ms;
    let vm_overhead_ms = (vm_served - engine_batch1_ms).max(0.0);
    let function_overhead_ms = (fn_served - in_sandbox_ms).max(0.0);
    // The path's spread, as a log-normal: fitted to the median and the 90th percentile of the calibration
    // (a 99th percentile of a hundred requests is one request), and written as its 99th percentile.
    let spread = |p90: f64, median: f64| {
        if p90 > median + 1e-3 && median > 0.0 { round3(median * (p90 / median).powf(Z99 / Z90)) } else { 0.0 }
    };
    let vm_overhead_p99_ms = spread(vm_lone.served_p90_ms - engine_batch1_ms, vm_overhead_ms);
    let function_overhead_p99_ms = spread(fn_lone.served_p90_ms - in_sandbox_ms, function_overhead_ms);
    for h in &mut file.hardware {
        if h.hardware == "function" {
            h.overhead_ms = round3(function_overhead_ms);
            h.overhead_p99_ms = function_overhead_p99_ms;
            for l in &mut h.latency_ms {
                *l = (*l + handling_ms * 1e3).round() / 1e3;
            }
        } else {
            h.overhead_ms = round3(vm_overhead_ms);
            h.overhead_p99_ms = vm_overhead_p99_ms;
        }
    }
    let calibrated = out.join("profile.toml");
    std::fs::write(
        &calibrated,
        format!(
            "# Measured by `hyscale profile` and `hyscale fidelity` on this machine (overhead_ms: calibration requests' \
             served median minus the engine's).\n{}",
            toml::to_string(&file)?
        ),
    )?;
    cluster.profile = calibrated.clone();
    let calibration = Calibration {
        profile: calibrated.clone(),
        engine_batch1_ms,
        function_batch1_ms,
        vm_served_median_ms: vm_served,
        vm_overhead_ms,
        vm_overhead_p99_ms,
        function_served_median_ms: fn_served,
        function_in_sandbox_ms: in_sandbox_ms,
        function_overhead_ms,
        function_overhead_p99_ms,
        calibration_schedule: schedule.describe.clone(),
        calibration_requests: args.calibration_requests,
        vm_provision_s,
        function_cold_start_injected_ms: cluster.function_cold_start_delay_ms,
        function_load_s: file.model.load_s,
        function_max_sandboxes: cluster.function_max_sandboxes.min(fns.regional_concurrency),
    };
    eprintln!(
        "calibration: VM path {vm_served:.3} ms served − {engine_batch1_ms:.3} ms engine = {vm_overhead_ms:.3} ms; \
         function path {fn_served:.3} ms served − {in_sandbox_ms:.3} ms in the sandbox = {function_overhead_ms:.3} \
         ms; cold start injected {:.0} ms + measured load {:.3} s",
        calibration.function_cold_start_injected_ms, calibration.function_load_s
    );

    // 3. Each policy: the simulator, then the live cluster, on the same arrivals.
    let mut runs = Vec::new();
    for policy in &args.policy {
        let mut c = cluster.clone();
        c.policy = policy.clone();
        let sim = simulate(&config_path, &base, &c, &window, args.seed, queue_limit)
            .map_err(|e| e.context(format!("simulating {policy}")))?;
        eprintln!("{policy}: live, {:.0} s of the trace in real time", args.duration_s);
        let arrivals = window.open(Path::new(""), trace_seed).map_err(|e| bad(format!("--trace: {e}")))?;
        let live = runtime.block_on(live.replay(&c, arrivals, &window.describe(), args.seed))?;
        let sim_path = out.join(format!("{policy}-sim.json"));
        let live_path = out.join(format!("{policy}-live.json"));
        std::fs::write(&sim_path, format!("{}\n", serde_json::to_string_pretty(&sim)?))?;
        std::fs::write(&live_path, format!("{}\n", serde_json::to_string_pretty(&live)?))?;
        runs.push(Run {
            policy: policy.clone(),
            rows: compare(&sim, &live),
            sim_report: sim_path,
            live_report: live_path,
        });
    }

    // 4. The table and the JSON.
    println!("fidelity of the simulator against the live cluster: {} s of {}", args.duration_s, args.trace);
    println!(
        "calibration: overhead VM {:.3} ms, function {:.3} ms; provisioning {}; function cold start {:.0} ms injected + \
         load measured {:.3} s",
        calibration.vm_overhead_ms,
        calibration.function_overhead_ms,
        calibration.vm_provision_s.iter().map(|(t, s)| format!("{t} {s:.1} s")).collect::<Vec<_>>().join(", "),
        calibration.function_cold_start_injected_ms,
        calibration.function_load_s
    );
    for r in &runs {
        println!();
        println!("{}", r.policy);
        println!("  {:<22} {:>12} {:>12} {:>9} {:>8}", "quantity", "sim", "live", "error", "target");
        for row in &r.rows {
            let error = if row.quantity == "slo_attainment_pct" {
                format!("{:.2} pt", row.error)
            } else {
                format!("{:.1}%", row.error * 100.0)
            };
            let target = match row.target {
                Some(t) if row.quantity == "slo_attainment_pct" => {
                    format!("{t} pt{}", if row.met { "" } else { " MISSED" })
                }
                Some(t) => format!("{:.0}%{}", t * 100.0, if row.met { "" } else { " MISSED" }),
                None => String::new(),
            };
            println!("  {:<22} {:>12.4} {:>12.4} {:>9} {:>8}", row.quantity, row.sim, row.live, error, target);
        }
    }
    let result = FidelityFile {
        trace: args.trace.clone(),
        duration_s: args.duration_s,
        seed: args.seed,
        model: model_path,
        calibration,
        runs,
    };
    let json_path = out.join("fidelity.json");
    std::fs::write(&json_path, format!("{}\n", serde_json::to_string_pretty(&result)?))?;
    println!();
    println!("reports and fidelity.json written to {}", out.display());
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn poisson() -> anyhow::Result<TraceSpec> {
    TraceSpec::from_arg("poisson:1:1").map_err(|e| anyhow::Error::new(BadInput(e.to_string())))
}

/// Runs `hyscale profile` on the model in a child process, for `function` and the configured VM types.
fn profile(model: &Path, cluster: &ClusterConfig, out: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    let hardware: Vec<&str> = std::iter::once("function").chain(cluster.vm_types.keys().map(String::as_str)).collect();
    eprintln!("profiling {} for {}", model.display(), hardware.join(", "));
    let status = std::process::Command::new(exe)
        .arg("profile")
        .arg("--model")
        .arg(model)
        .args(["--hardware", &hardware.join(","), "--name", &cluster.model, "--max-batch", "16"])
        .args(["--cold-starts", "5"])
        .arg("--out")
        .arg(out)
        .status()
        .context("running hyscale profile")?;
    anyhow::ensure!(status.success(), "hyscale profile failed ({status})");
    Ok(())
}

/// A cluster of one ready VM worker of `vm_type`, no batching: the VM serving path alone.
fn calibration_vm(cluster: &ClusterConfig, vm_type: &str) -> ClusterConfig {
    let mut c = cluster.clone();
    c.policy = "static".into();
    c.policies.static_fleet = Some(StaticConfig {
        fleet: vec![FleetEntry {
            vm_type: vm_type.to_string(),
            count: 1,
            market: Market::OnDemand,
            max_batch: 1,
            max_wait_ms: 0.0,
        }],
    });
    if let Some(t) = c.vm_types.get_mut(vm_type) {
        t.provision_s = Some(0.0);
    }
    c
}

/// The simulator's run of the live cluster `c` on `window` (VM worker queues of `queue_limit`): the scenario the `[cluster]` table describes,
/// with the live half's constants (see the module documentation).
fn simulate(
    config_path: &Path,
    base: &Path,
    c: &ClusterConfig,
    window: &TraceSpec,
    seed: u64,
    queue_limit: u32,
) -> anyhow::Result<Report> {
    let cap = c.function_max_sandboxes.max(1);
    let settings = SimSettings {
        report_interval_s: 10.0,
        arrival_window_s: c.arrival_window_s,
        arrival_history: c.arrival_history,
        vm_queue_limit: queue_limit,
        ..SimSettings::default()
    };
    let mut scenario: Scenario = cluster_scenario(config_path, base, c, window.clone(), seed, settings)?;
    apply_live_constants(&mut scenario, c, cap);
    let policy = c.policy.clone();
    hyscale_sim::run_scenario_with(&scenario, &policy, None).map_err(|e| anyhow::Error::new(BadInput(e.to_string())))
}

/// Gives the simulator the live half's constants: fixed provisioning delays, fixed cloud-side cold-start
/// parts, the live function concurrency cap.
fn apply_live_constants(scenario: &mut Scenario, c: &ClusterConfig, cap: u32) {
    let catalog = Arc::make_mut(&mut scenario.catalog);
    for (t, m) in catalog.vm_types.iter_mut().zip(scenario.vm_models.iter_mut()) {
        let delay = c.vm_types.get(&t.name).and_then(|o| o.provision_s).unwrap_or(t.provision_mean.as_secs_f64());
        m.launch_boot_s = Dist::Fixed((delay - m.model_load.as_secs_f64()).max(0.0));
        t.provision_mean = Nanos::from_secs_f64(delay);
    }
    let f = &mut scenario.function_model;
    f.sandbox_init_s = Dist::Fixed(f.sandbox_init_s.mean());
    f.model_load_mb_per_s = Dist::Fixed(1.0 / f.model_load_mb_per_s.mean_reciprocal());
    catalog.functions.regional_concurrency = catalog.functions.regional_concurrency.min(cap);
}

/// Where the live half's servers come from.
struct LiveSetup<'a> {
    serve: &'a ServeConfig,
    base: &'a Path,
    config_path: &'a Path,
}

/// When the calibration's requests are sent.
struct Schedule {
    times: Vec<Nanos>,
    describe: String,
}

/// The calibration's send times: the gaps between the trace's requests just after the compared window (held
/// out: never the compared arrivals), each capped at 2 s (a longer gap finds the path as idle as 2 s does), so
/// that the serving path is measured under the trace's own pattern of bursts and pauses. Where fewer than `n`
/// requests follow the window, `n` requests evenly spaced at the window's mean gap (20 to 500 ms).
fn calibration_schedule(
    spec: &TraceSpec,
    seed: u64,
    duration_s: f64,
    in_window: usize,
    n: u32,
) -> Result<Schedule, hyscale_traces::TraceError> {
    let after = TraceSpec::Transform(TransformSpec::Window {
        start_s: duration_s,
        end_s: None,
        source: Box::new(spec.clone()),
    });
    let held_out: Vec<Nanos> =
        after.open(Path::new(""), seed)?.take(n as usize + 1).map(|a| a.map(|a| a.time)).collect::<Result<_, _>>()?;
    if held_out.len() > n as usize {
        let cap = Nanos::from_secs(2);
        let mut t = Nanos::ZERO;
        let mut times = vec![Nanos::ZERO];
        for pair in held_out.windows(2).take(n as usize - 1) {
            t = t.saturating_add(pair[1].saturating_sub(pair[0]).min(cap));
            times.push(t);
        }
        return Ok(Schedule {
            describe: format!("with the trace's gaps after the compared window, from {duration_s:.0} s, capped at 2 s"),
            times,
        });
    }
    let spacing = Nanos::from_secs_f64((duration_s / in_window.max(1) as f64).clamp(0.02, 0.5));
    Ok(Schedule {
        times: (0..u64::from(n)).map(|i| Nanos(i * spacing.0)).collect(),
        describe: format!("{:.0} ms apart, the window's mean gap", spacing.as_millis_f64()),
    })
}

/// What the calibration measured on one serving path.
struct Lone {
    /// Their median served latency, ms.
    served_ms: f64,
    /// Their 90th percentile, ms.
    served_p90_ms: f64,
    /// The mean time an invocation held its sandbox (function path only), ms.
    in_sandbox_ms: Option<f64>,
}

/// A live server on a loopback port, serving until stopped.
struct Live {
    state: Arc<AppState>,
    endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hyscale_backend::server::ServeError>>,
}

impl LiveSetup<'_> {
    async fn start(&self, c: &ClusterConfig) -> anyhow::Result<Live> {
        let (catalog, slo) = cluster_catalog(self.config_path, self.base, c)?;
        let state = AppState::start(self.serve, self.base, Some((c.clone(), catalog, slo)))
            .await
            .map_err(|e| anyhow::Error::new(BadInput(format!("{}: {e}", self.config_path.display()))))?;
        let state = Arc::new(state);
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            Arc::clone(&state),
            "127.0.0.1:0",
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let addr = addr_rx.await.context("the live server did not start")?;
        Ok(Live { state, endpoint: format!("http://{addr}"), stop, task })
    }

    fn replay_config(&self, c: &ClusterConfig, endpoint: &str, trace: &str, seed: u64) -> ReplayConfig {
        ReplayConfig {
            endpoint: endpoint.to_string(),
            model: c.model.clone(),
            slo: Slo { rt_max: Nanos::from_millis_f64(c.slo.rt_max_ms), sl_min: c.slo.sl_min },
            timeout: Duration::from_secs_f64(self.serve.request_timeout_s.max(1.0)),
            seed,
            report_interval: Duration::from_secs(10),
            scenario: format!("fidelity: live {}", c.policy),
            trace: trace.to_string(),
        }
    }

    /// Requests through cluster `c` with only its one instance (a ready VM worker when it asks for one):
    /// after 10 unmeasured ones back to back, requests sent at `times` by the replay's load generator, so
    /// that they are timed as the trace's are.
    async fn lone(&self, c: &ClusterConfig, times: &[Nanos], seed: u64) -> anyhow::Result<Lone> {
        let n = times.len() as u64;
        let live = self.start(c).await?;
        let cfg = self.replay_config(c, &live.endpoint, "calibration requests", seed);
        let wants_vm = c.policy == "static";
        let result = async {
            if wants_vm {
                wait_for_cluster(&cfg, Duration::from_secs(60), |s| s["vms"][1].as_u64().unwrap_or(0) >= 1).await?;
            }
            lone_requests(&cfg, 10).await?;
            let before = wait_for_cluster(&cfg, Duration::from_secs(5), |_| true).await?;
            let spaced = times.iter().map(|&time| Ok(Arrival { time, model: 0, input_size: 0, output_size: 0 }));
            let report = replay(spaced, &cfg, |_, _| {}).await?;
            anyhow::ensure!(
                report.requests.completed == n,
                "calibration of the {} path: {} of {n} requests completed",
                c.policy,
                report.requests.completed
            );
            let after = wait_for_cluster(&cfg, Duration::from_secs(5), |_| true).await?;
            let delta = |k: &str| after[k].as_f64().unwrap_or(0.0) - before[k].as_f64().unwrap_or(0.0);
            let invocations = delta("function_invocations");
            let in_sandbox_ms = (invocations > 0.0).then(|| delta("function_invocation_ms_total") / invocations);
            anyhow::Ok(Lone { served_ms: report.latency_ms.p50, served_p90_ms: report.latency_ms.p90, in_sandbox_ms })
        }
        .await;
        live.stop().await;
        result
    }

    /// Replays `arrivals` against cluster `c` and returns the live report.
    async fn replay(
        &self,
        c: &ClusterConfig,
        arrivals: hyscale_traces::ArrivalStream,
        trace: &str,
        seed: u64,
    ) -> anyhow::Result<Report> {
        let live = self.start(c).await?;
        let cfg = self.replay_config(c, &live.endpoint, trace, seed);
        let report = replay(arrivals, &cfg, |t, n| eprintln!("  ... {t:.0} s replayed, {n} requests sent")).await;
        live.stop().await;
        let mut report = report?;
        report.policy = c.policy.clone();
        Ok(report)
    }
}

impl Live {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.state.shutdown();
    }
}

/// The compared quantities of a simulated and a live report.
pub fn compare(sim: &Report, live: &Report) -> Vec<Row> {
    let get = |r: &Report, q: &str| match q {
        "p50_ms" => r.latency_ms.p50,
        "p90_ms" => r.latency_ms.p90,
        "p99_ms" => r.latency_ms.p99,
        "slo_attainment_pct" => r.slo.attainment * 100.0,
        "rejected" => r.requests.rejected as f64,
        "vm_instance_s" => (r.instances.vm_hours_on_demand + r.instances.vm_hours_spot) * 3600.0,
        "function_cold_starts" => r.instances.function_cold_starts as f64,
        _ => r.cost.total,
    };
    TARGETS
        .iter()
        .map(|&(quantity, bound, points)| {
            let (s, l) = (get(sim, quantity), get(live, quantity));
            let error = error(s, l, points);
            let target = (!bound.is_nan()).then_some(bound);
            Row { quantity, sim: s, live: l, error, target, met: target.is_none_or(|t| error <= t) }
        })
        .collect()
}

/// The simulator's error against the live figure: |sim − live| / |live| (0 when both are 0, 1 when only live
/// is), or |sim − live| when the figures are already points (percentages).
fn error(sim: f64, live: f64, points: bool) -> f64 {
    if points {
        (sim - live).abs()
    } else if live == 0.0 {
        if sim == 0.0 { 0.0 } else { 1.0 }
    } else {
        (sim - live).abs() / live.abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_relative_to_the_live_figure_or_in_points() {
        assert!((error(9.0, 10.0, false) - 0.1).abs() < 1e-12);
        assert!((error(11.5, 10.0, false) - 0.15).abs() < 1e-12);
        assert_eq!(error(0.0, 0.0, false), 0.0);
        assert_eq!(error(3.0, 0.0, false), 1.0);
        assert!((error(97.5, 98.25, true) - 0.75).abs() < 1e-12);
    }
}
