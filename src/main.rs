//! `hyscale`: simulate scaling policies for ML inference on VMs, spot instances and functions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hyscale_policies::report::Report;
use hyscale_sim::{Scenario, SimError};
use hyscale_traces::TraceSpec;

mod bench;
mod bench_serve;
mod compare;
mod fidelity;
mod fsd_cmd;
mod keepalive_cmd;
mod plot;
mod predict;
mod profile_cmd;
mod replay_cmd;
mod serve_cmd;
mod sweep;
mod trace_cmd;

#[derive(Parser)]
#[command(
    name = "hyscale",
    version,
    about = "What would this scaling policy cost, and would it meet the SLO, on this traffic?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a scenario: a policy on a trace, with a catalog and a model profile.
    Simulate(SimulateArgs),
    /// Compare arrival predictors on a trace: fit on its start, score forecasts on the rest.
    Predict(predict::PredictArgs),
    /// Measure an ONNX model's batch-latency curve and cold start here, and write them as a simulator profile.
    Profile(profile_cmd::ProfileArgs),
    /// One cold-start measurement for `hyscale profile`, run in a fresh process (internal).
    #[command(hide = true)]
    ProfileColdStart(profile_cmd::ColdStartArgs),
    /// Look at, convert or generate traces.
    Trace(trace_cmd::TraceArgs),
    /// Replay a trace against an Open Inference Protocol v2 endpoint, open loop, and report as the simulator does.
    Replay(replay_cmd::ReplayArgs),
    /// Serve ONNX models over the Open Inference Protocol v2 (KServe / Triton REST), with dynamic batching.
    Serve(serve_cmd::ServeArgs),
    /// Keep-alive policies of "Serverless in the Wild" on a scenario: fixed windows of 5 to 120 minutes and the
    /// hybrid histogram policy; 75th-percentile per-function cold-start % against wasted memory.
    Keepalive(keepalive_cmd::KeepaliveArgs),
    /// Does the simulator predict the live system? Profile the model, simulate a trace window and run it on
    /// the live cluster under the same policies; print both with each figure's error.
    Fidelity(fidelity::FidelityArgs),
    /// Draw reports (or a fidelity.json) as SVG and PNG: latency CDFs overlaid, cost by kind, timelines.
    Plot(plot::PlotArgs),
    /// FSD-Inference: a model partitioned over P function workers exchanging activations through a queue or
    /// object storage, against one function and a VM; simulated, and with --live run here for real.
    Fsd(fsd_cmd::FsdArgs),
    /// Run a grid of simulations (scenarios × traces × parameters × policies × seeds) on every core, or one
    /// shard of it (--shard K/N, an array job's task); `sweep merge` joins the shards.
    Sweep(sweep::SweepArgs),
    /// The simulator's speed on two standard workloads (functions: an Azure-Functions-shaped 24 h trace;
    /// vm: the same volume under MArk): requests/s, events/s and peak memory, median of several runs.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    #[arg(long)]
    scenario: PathBuf,
    /// Replace the scenario's trace: FILE.csv (Azure LLM or canonical), FILE.jsonl, FILE.toml (a trace spec),
    /// azure-functions:SPREAD:FILE, count-series:SPREAD:FILE, poisson:RATE:SECONDS or gen:KIND:key=value,...
    #[arg(long)]
    trace: Option<String>,
    /// Replace the scenario's policy; a comma-separated list (or `all`) runs each and prints one comparison
    /// table with the offline oracle's lower bound.
    #[arg(long)]
    policy: Option<String>,
    /// With several policies: write the comparison table here (.csv or .json).
    #[arg(long)]
    table: Option<PathBuf>,
    /// Replace the scenario's master seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report to standard output instead of the table.
    #[arg(long)]
    json: bool,
}

/// Errors in what the user gave (exit code 2), as opposed to failures of the tool (exit code 1).
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A spinner with an elapsed time and `message`, drawn on standard error only when it is a terminal.
fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Creates the folder `path` will be written into, if it names one.
fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `path` through `write` into a temporary file beside it, renamed over `path` only when `write`
/// succeeds: a command that fails half way leaves no partial output file.
fn write_atomically<T>(path: &Path, write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<T>) -> anyhow::Result<T> {
    create_parent(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    let value = write(file.as_file_mut())?;
    file.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

fn bad_input(e: SimError) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.to_string()))
}

/// A failed run's error, naming where the bad input is: the `--trace` argument (a spec file, say) or the
/// scenario's `[trace]`, the scenario's `[policies.NAME]` section.
fn run_error(e: SimError, scenario: &Scenario, trace_arg: Option<&str>, policy: &str) -> anyhow::Error {
    let where_ = |section: String| format!("{}: {section}", scenario.path.display());
    let message = match e {
        SimError::Trace(t) => match trace_arg {
            Some(arg) => format!("--trace {arg}: {t}"),
            None => format!("{}: {t}", where_("[trace]".into())),
        },
        SimError::Policy(p) => format!("{}: {p}", where_(format!("[policies.{policy}]"))),
        other => other.to_string(),
    };
    anyhow::Error::new(BadInput(message))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate(args),
        Command::Predict(args) => predict::run(args),
        Command::Profile(args) => profile_cmd::run(args),
        Command::ProfileColdStart(args) => profile_cmd::cold_start(args),
        Command::Trace(args) => trace_cmd::run(args),
        Command::Replay(args) => replay_cmd::run(args),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Keepalive(args) => keepalive_cmd::run(args),
        Command::Fidelity(args) => fidelity::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Fsd(args) => fsd_cmd::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() { ExitCode::from(2) } else { ExitCode::from(1) }
        }
    }
}

fn load_scenario(args: &SimulateArgs) -> anyhow::Result<Scenario> {
    let text =
        std::fs::read_to_string(&args.scenario).map_err(|e| BadInput(format!("{}: {e}", args.scenario.display())))?;
    let mut file: hyscale_sim::scenario::ScenarioFile =
        toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", args.scenario.display())))?;
    override_scenario(&mut file, args.trace.as_deref(), "--trace", args.policy.as_deref(), args.seed)?;
    let base = args.scenario.parent().map(Path::to_path_buf).unwrap_or_default();
    Scenario::from_file(&args.scenario, base, file).map_err(bad_input)
}

/// Replaces a parsed scenario's trace (a `--trace` argument; `what` names where it came from in errors),
/// policy and seed, as `simulate` and `sweep` take them.
fn override_scenario(
    file: &mut hyscale_sim::scenario::ScenarioFile,
    trace: Option<&str>,
    what: &str,
    policy: Option<&str>,
    seed: Option<u64>,
) -> anyhow::Result<()> {
    if let Some(t) = trace {
        let mut spec = TraceSpec::from_arg(t).map_err(|e| BadInput(format!("{what}: {e}")))?;
        // A path on the command line is relative to the working directory, not to the scenario.
        spec.rebase(&std::env::current_dir().context("reading the working directory")?);
        file.trace = spec;
    }
    if let Some(p) = policy {
        file.policy = p.to_string();
    }
    if let Some(s) = seed {
        file.seed = s;
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(list) = args.policy.as_deref().filter(|p| p.contains(',') || *p == "all") {
        let policies = compare::names(list)?;
        if args.out.is_some() || args.json {
            return Err(
                BadInput("--out and --json take one policy; for several, use --table FILE.csv|.json".into()).into()
            );
        }
        let table = args.table.clone();
        if let Some(t) = &table {
            compare::table_format(t)?;
        }
        let trace = args.trace.clone();
        let scenario = load_scenario(&SimulateArgs { policy: None, ..args })?;
        return compare::run(&scenario, &policies, table.as_deref(), trace.as_deref());
    }
    let scenario = load_scenario(&args)?;
    let policy = scenario.file.policy.clone();
    let started = Instant::now();
    // On a terminal only (indicatif draws nothing when standard error is not one): simulated time, requests,
    // and their rate.
    let bar = spinner("simulating");
    let mut progress = |t: hyscale_policies::Nanos, arrivals: u64| {
        let rate = arrivals as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "simulated {:.0} s, {arrivals} requests ({:.2}M requests/s)",
            t.as_secs_f64(),
            rate / 1e6
        ));
    };
    let report = hyscale_sim::run_scenario_with(&scenario, &policy, Some(&mut progress))
        .map_err(|e| run_error(e, &scenario, args.trace.as_deref(), &policy))?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        crate::create_parent(out)?;
        std::fs::write(out, format!("{json}\n")).with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_table(&report);
        if let Some(out) = &args.out {
            println!("report written to {}", out.display());
        }
    }
    let rate = report.requests.arrivals as f64 / wall.max(1e-9);
    eprintln!("simulated {:.0} s of traffic in {wall:.3} s of wall time ({rate:.0} requests/s)", report.duration_s);
    Ok(())
}

fn print_table(r: &Report) {
    let q = &r.requests;
    println!("scenario {}  policy {}  seed {}  model {}", r.scenario, r.policy, r.seed, r.model);
    let how = if r.mode == "simulation" { "simulated" } else { "replayed" };
    println!("trace    {}  ({:.0} s {how})", r.trace, r.duration_s);
    println!();
    println!("requests      {:>10}", q.arrivals);
    println!("  completed   {:>10}", q.completed);
    println!("  rejected    {:>10}  {}", q.rejected, reasons(&q.rejected_by_reason));
    println!("  dropped     {:>10}  {}", q.dropped, reasons(&q.dropped_by_reason));
    println!(
        "SLO           {:>9.3}%  of requests within {} ms (target {:.1}%: {})",
        r.slo.attainment * 100.0,
        r.slo.rt_max_ms,
        r.slo.sl_min * 100.0,
        if r.slo.met { "met" } else { "MISSED" }
    );
    if !r.slo.misses_by_cause.is_empty() {
        let late: u64 = r.slo.misses_by_cause.values().sum();
        println!("  late        {late:>10}  {}", reasons(&r.slo.misses_by_cause));
    }
    let l = &r.latency_ms;
    println!(
        "latency ms    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    let c = &r.cost;
    println!(
        "cost $        {:.4} total = VM on-demand {:.4} + VM spot {:.4} + fn compute {:.4} + fn requests {:.4}{}  ({:.2} per 1M)",
        c.total,
        c.vm_on_demand,
        c.vm_spot,
        c.function_compute,
        c.function_requests,
        if c.pods > 0.0 { format!(" + pods {:.4}", c.pods) } else { String::new() },
        c.per_million_completed
    );
    let i = &r.instances;
    println!(
        "instances     VM h on-demand {:.2}, spot {:.2}; spot interruptions {}; fn cold starts {}, peak {}",
        i.vm_hours_on_demand, i.vm_hours_spot, i.spot_interruptions, i.function_cold_starts, i.function_instances_peak
    );
    let m = &r.model_memory;
    if m.copies_peak > 0 {
        println!(
            "model copies  peak {} (one per request: {}); {:.4} GB-h held (one per request in service: {:.4}), {:.0} MB each",
            m.copies_peak, m.one_copy_per_request_peak, m.gb_hours, m.one_copy_per_request_gb_hours, m.model_size_mb
        );
    }
    if !r.actions.refused.is_empty() {
        println!("actions       {} applied, refused: {}", r.actions.applied, reasons(&r.actions.refused));
    }
}

fn reasons(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}
