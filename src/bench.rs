//! `hyscale bench`: the simulator's speed on two standard workloads anyone can regenerate, so users can check
//! their machine and changes can be compared.
//!
//! - **functions**: an Azure-Functions-2019-shaped synthetic trace — 1,000 apps of 1–4 functions, Zipf-like
//!   popularity (weight 1/rank), each function's execution time drawn from LogNormal(μ −0.38, σ 2.36) s
//!   (Shahrad et al.'s fit, capped at Lambda's 900 s), 100–400 MB per app, 200 requests/s for `--hours`
//!   (24 h: 17.28M requests), each minute's count spread as a Poisson process; served by `function-only`
//!   with a 10-minute keep-alive, each function's times and memory from the trace.
//! - **vm**: the same volume as a Poisson stream served by MArk re-planning every second (VMs with batching,
//!   functions for bursts) on the Inception v3 profile.
//!
//! Each run is a child process (`hyscale bench --one KIND`) so that its peak memory (VmHWM) is its own; the
//! table gives the median of `--runs` runs: simulated requests per second, events per second, peak memory.
//! Everything is accounted as in any run (every request in the latency histogram, cost, timeline).
//!
//! `--against OTHER` compares this build with another `hyscale` executable (an older build, say) on the same
//! workload files: their runs alternate, pair by pair (which goes first alternates too), and the table adds the
//! other's median and the median of the per-pair ratios of requests per second. On a shared machine, whose
//! speed drifts from minute to minute, a ratio between runs seconds apart says more than two medians taken
//! at different times.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use serde::{Deserialize, Serialize};

use crate::BadInput;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `serve`: the live server under load instead (see `hyscale bench serve --help`).
    #[command(subcommand)]
    what: Option<BenchWhat>,
    /// Hours of traffic in each workload (24: 17.28M requests each).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Runs of each workload; the median is printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Workloads: functions and/or vm.
    #[arg(long, value_delimiter = ',', default_values_t = ["functions".to_string(), "vm".to_string()])]
    workloads: Vec<String>,
    /// Where the generated workload files are kept (regenerated when missing).
    #[arg(long, default_value = "out/bench")]
    dir: PathBuf,
    /// Write the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Another hyscale executable to compare with (an older build, say): its runs alternate with this build's
    /// on the same workloads, and the table adds its median and the median of the per-pair speed ratios.
    #[arg(long, value_name = "EXECUTABLE")]
    against: Option<PathBuf>,
    /// One run of one workload, in this process (what the parent starts).
    #[arg(long, hide = true)]
    one: Option<String>,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// The live server under load (closed or open loop; REST JSON, REST binary, gRPC) against the engine alone,
    /// measured in the same run: throughput, p50/p90/p99, served/raw and the server's overhead.
    Serve(crate::bench_serve::ServeBenchArgs),
}

/// One run's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunFigures {
    workload: String,
    requests: u64,
    events: u64,
    wall_s: f64,
    peak_rss_mb: f64,
    /// Most events pending at once (the event queue's size).
    #[serde(default)]
    queue_peak: usize,
}

impl RunFigures {
    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall_s
    }
}

const APPS: usize = 1000;
const RATE_PER_S: f64 = 200.0;

fn bad(m: String) -> anyhow::Error {
    anyhow::Error::new(BadInput(m))
}

/// Writes the synthetic Azure Functions files (invocations per minute, durations, memory) into `dir`.
fn generate_functions(dir: &Path, minutes: usize, seed: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    // Functions, each with its app.
    let mut functions: Vec<(usize, usize)> = Vec::new();
    for app in 0..APPS {
        for f in 0..rng.random_range(1..=4) {
            functions.push((app, f));
        }
    }
    // Zipf-like popularity over a random ranking.
    let mut ranks: Vec<usize> = (1..=functions.len()).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.random_range(0..=i));
    }
    let weights: Vec<f64> = ranks.iter().map(|&r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let exec: LogNormal<f64> = LogNormal::new(-0.38, 2.36).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app_mb: Vec<f64> = (0..APPS).map(|_| rng.random_range(100.0..=400.0)).collect();
    let hash = |kind: &str, i: usize| format!("{kind}{i:08x}");
    let write = |name: &str, body: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| -> anyhow::Result<()> {
        crate::write_atomically(&dir.join(name), |f| {
            let mut w = std::io::BufWriter::new(f);
            body(&mut w)?;
            w.flush()?;
            Ok(())
        })
    };
    let mut counts: Vec<Vec<u64>> = Vec::with_capacity(functions.len());
    for w in &weights {
        let per_minute = RATE_PER_S * 60.0 * w / total;
        let poisson = Poisson::new(per_minute.max(1e-9)).map_err(|e| anyhow::anyhow!("{e}"))?;
        counts.push((0..minutes).map(|_| poisson.sample(&mut rng) as u64).collect());
    }
    let exec_ms: Vec<f64> = functions.iter().map(|_| (exec.sample(&mut rng) * 1e3).clamp(1.0, 900_000.0)).collect();
    write("invocations.csv", &|w| {
        write!(w, "HashOwner,HashApp,HashFunction,Trigger")?;
        for m in 1..=minutes {
            write!(w, ",{m}")?;
        }
        writeln!(w)?;
        for (i, &(app, _)) in functions.iter().enumerate() {
            write!(w, "{},{},{},http", hash("o", app), hash("a", app), hash("f", i))?;
            for c in &counts[i] {
                write!(w, ",{c}")?;
            }
            writeln!(w)?;
        }
        Ok(())
    })?;
    write("durations.csv", &|w| {
        writeln!(
            w,
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,\
             percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100"
        )?;
        for (i, &(app, _)) in functions.iter().enumerate() {
            let a = exec_ms[i];
            let n: u64 = counts[i].iter().sum();
            let p = |k: f64| (a * k).round().max(1.0);
            writeln!(
                w,
                "{},{},{},{a:.1},{n},{},{},{},{},{},{},{},{},{}",
                hash("o", app),
                hash("a", app),
                hash("f", i),
                p(0.5),
                p(2.0),
                p(0.5),
                p(0.6),
                p(0.9),
                p(1.0),
                p(1.1),
                p(1.5),
                p(2.0)
            )?;
        }
        Ok(())
    })?;
    write("memory.csv", &|w| {
        writeln!(
            w,
            "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,\
             AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,\
             AverageAllocatedMb_pct99,AverageAllocatedMb_pct100"
        )?;
        for (i, &(app, _)) in functions.iter().enumerate() {
            let m = app_mb[app];
            writeln!(
                w,
                "{},{},{},1,{m:.1},{m:.1},{m:.1},{m:.1},{m:.1},{m:.1},{m:.1},{m:.1},{m:.1}",
                hash("f", i),
                hash("o", app),
                hash("a", app)
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The scenario file of a workload, written beside its trace files.
fn scenario(kind: &str, dir: &Path, hours: f64) -> anyhow::Result<PathBuf> {
    let root = std::path::absolute(".")?;
    let catalog = root.join("data/aws_us_east_1.toml");
    let profile = root.join("profiles/inception_v3.toml");
    if !catalog.exists() || !profile.exists() {
        return Err(bad(format!(
            "{} has no data/aws_us_east_1.toml and profiles/inception_v3.toml: run hyscale bench from the repository's root",
            root.display()
        )));
    }
    let text = match kind {
        "functions" => format!(
            "name = \"bench-functions\"\nseed = 1\npolicy = \"function-only\"\ncatalog = {catalog:?}\nprofile = {profile:?}\n\n\
             [trace]\nkind = \"azure-functions\"\npath = \"invocations.csv\"\ndurations = \"durations.csv\"\n\
             memory = \"memory.csv\"\nspread = \"poisson\"\n\n[sim]\nfunctions_from_trace = true\n\n\
             [policies.function-only]\nkeep_alive_s = 600.0\n"
        ),
        "vm" => format!(
            "name = \"bench-vm\"\nseed = 1\npolicy = \"mark\"\ncatalog = {catalog:?}\nprofile = {profile:?}\n\n\
             [trace]\nkind = \"poisson\"\nrate_per_s = {RATE_PER_S}\nduration_s = {}\n\n[policies.mark]\ncontrol_interval_s = 1.0\n",
            hours * 3600.0
        ),
        other => return Err(bad(format!("--workloads: no workload '{other}' (functions or vm)"))),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{kind}.toml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(str::to_owned)))
        .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

fn run_one(kind: &str, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{kind}.toml"));
    let scenario = hyscale_sim::Scenario::load(&path).map_err(|e| bad(e.to_string()))?;
    let mut policy = scenario.file.policies.build(&scenario.file.policy, &scenario.catalog)?;
    let arrivals = scenario
        .file
        .trace
        .open(&scenario.base_dir, hyscale_sim::rng::SeedFan::new(scenario.file.seed).seed("arrivals"))
        .map_err(|e| bad(e.to_string()))?;
    let started = Instant::now();
    let (report, stats) = hyscale_sim::simulate_with_stats(&scenario, policy.as_mut(), arrivals, None)?;
    let wall_s = started.elapsed().as_secs_f64();
    let figures = RunFigures {
        workload: kind.into(),
        requests: report.requests.arrivals,
        events: stats.events,
        wall_s,
        peak_rss_mb: peak_rss_mb(),
        queue_peak: stats.queue_peak,
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// One run of workload `kind` by executable `exe` (this build or the one compared with), in a child process.
fn run_child(exe: &Path, kind: &str, args: &BenchArgs) -> anyhow::Result<RunFigures> {
    let out = Command::new(exe)
        .args(["bench", "--one", kind, "--hours", &args.hours.to_string(), "--dir"])
        .arg(&args.dir)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        anyhow::bail!("{kind} run of {} failed: {}", exe.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str::<RunFigures>(line.trim())
        .with_context(|| format!("{} gave no benchmark figures for {kind}: {}", exe.display(), line.trim()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchWhat::Serve(a)) = args.what {
        return crate::bench_serve::run(a);
    }
    if !(args.hours.is_finite() && args.hours > 0.0 && args.hours <= 24.0 * 14.0) || args.runs == 0 {
        return Err(bad(format!(
            "--hours must be in (0, 336] and --runs at least 1, got {} and {}",
            args.hours, args.runs
        )));
    }
    if let Some(other) = &args.against
        && !other.is_file()
    {
        return Err(bad(format!("--against {}: no such executable", other.display())));
    }
    let dir = args.dir.join(format!("{}h", args.hours));
    if let Some(kind) = &args.one {
        return run_one(kind, &dir);
    }
    let minutes = (args.hours * 60.0).ceil() as usize;
    for kind in &args.workloads {
        scenario(kind, &dir, args.hours)?;
        if kind == "functions" && !dir.join("invocations.csv").exists() {
            eprintln!("generating the functions workload ({minutes} minutes of 1,000 apps) in {}", dir.display());
            generate_functions(&dir, minutes, 1)?;
        }
    }
    let exe = std::env::current_exe()?;
    let mut table = Vec::new();
    let header = format!(
        "{:<10} {:>12} {:>14} {:>14} {:>12} {:>10}",
        "workload", "requests", "requests/s", "events/s", "peak MB", "wall s"
    );
    match &args.against {
        Some(_) => println!("{header} {:>14} {:>8} {:>8}", "other req/s", "ratio", "faster"),
        None => println!("{header}"),
    }
    for kind in &args.workloads {
        let (mut runs, mut others) = (Vec::new(), Vec::new());
        for r in 0..args.runs {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprint!("\r{kind}: run {}/{}", r + 1, args.runs);
            }
            match &args.against {
                // Alternating which goes first, so that neither always meets the machine warmer.
                Some(other) if r % 2 == 0 => {
                    others.push(run_child(other, kind, &args)?);
                    runs.push(run_child(&exe, kind, &args)?);
                }
                Some(other) => {
                    runs.push(run_child(&exe, kind, &args)?);
                    others.push(run_child(other, kind, &args)?);
                }
                None => runs.push(run_child(&exe, kind, &args)?),
            }
        }
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\r");
        }
        let rps = median(runs.iter().map(RunFigures::requests_per_s).collect());
        let eps = median(runs.iter().map(|r| r.events as f64 / r.wall_s).collect());
        let peak = median(runs.iter().map(|r| r.peak_rss_mb).collect());
        let wall = median(runs.iter().map(|r| r.wall_s).collect());
        let row =
            format!("{kind:<10} {:>12} {:>14.0} {:>14.0} {:>12.1} {:>10.2}", runs[0].requests, rps, eps, peak, wall);
        let mut entry = serde_json::json!({
            "workload": kind, "runs": runs, "median_requests_per_s": rps, "median_events_per_s": eps,
            "median_peak_rss_mb": peak, "median_wall_s": wall,
        });
        match &args.against {
            Some(other) => {
                if others[0].requests != runs[0].requests {
                    eprintln!(
                        "note: {} simulated {} requests of the {kind} workload, this build {}: its trace reading differs",
                        other.display(),
                        others[0].requests,
                        runs[0].requests
                    );
                }
                let other_rps = median(others.iter().map(RunFigures::requests_per_s).collect());
                let ratios: Vec<f64> =
                    runs.iter().zip(&others).map(|(r, o)| r.requests_per_s() / o.requests_per_s()).collect();
                let faster = ratios.iter().filter(|&&x| x > 1.0).count();
                let ratio = median(ratios.clone());
                println!("{row} {other_rps:>14.0} {ratio:>8.3} {:>8}", format!("{faster}/{}", ratios.len()));
                entry["against"] = serde_json::json!({
                    "executable": other, "runs": others, "median_requests_per_s": other_rps,
                    "speed_ratios": ratios, "median_speed_ratio": ratio, "pairs_faster": faster,
                });
            }
            None => println!("{row}"),
        }
        table.push(entry);
    }
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "hours": args.hours, "workloads": table }))?;
        crate::write_atomically(out, |f| Ok(f.write_all(format!("{json}\n").as_bytes())?))?;
    }
    Ok(())
}
