//! `hyscale keepalive --scenario FILE`: the keep-alive experiment of "Serverless in the Wild" (Shahrad et al.,
//! ATC'20) on a scenario's functions. Each fixed keep-alive (5 to 120 minutes by default) and the hybrid
//! histogram policy run on the same scenario, trace and seed; the table gives, per keep-alive, the 75th
//! percentile over functions of the share of each function's invocations that met a cold instance, against
//! the memory time of instances loaded but idle (wasted memory, GB·s). The paper's result: the hybrid policy
//! reaches a lower 75th-percentile cold-start rate than the 10-minute fixed policy for less wasted memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hyscale_policies::keepalive::{FIXED_MINUTES, HybridConfig, KeepAliveSpec};
use hyscale_policies::report::Report;
use hyscale_sim::Scenario;
use serde::Serialize;

use crate::compare::{run_parallel, table_format};
use crate::{BadInput, bad_input};

#[derive(clap::Args)]
pub struct KeepaliveArgs {
    /// The scenario (its policy serves functions; `scenarios/azf_keepalive.toml` is the paper's setting).
    #[arg(long)]
    scenario: PathBuf,
    /// Fixed keep-alive lengths to run, minutes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = FIXED_MINUTES.map(f64::from))]
    minutes: Vec<f64>,
    /// Replace the scenario's master seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the table here (.csv or .json).
    #[arg(long)]
    table: Option<PathBuf>,
}

/// One keep-alive's figures.
#[derive(Serialize)]
struct Row {
    keep_alive: String,
    functions: u64,
    invocations: u64,
    cold_invocations: u64,
    cold_pct_p50: f64,
    cold_pct_p75: f64,
    cold_pct_p90: f64,
    wasted_memory_gb_s: f64,
    function_cold_starts: u64,
    cost: f64,
    slo_attainment: f64,
    p99_ms: f64,
}

impl Row {
    fn of(r: &Report) -> Row {
        let f = &r.functions;
        Row {
            keep_alive: f.keep_alive.clone(),
            functions: f.functions,
            invocations: f.invocations,
            cold_invocations: f.cold_invocations,
            cold_pct_p50: f.cold_pct_p50,
            cold_pct_p75: f.cold_pct_p75,
            cold_pct_p90: f.cold_pct_p90,
            wasted_memory_gb_s: f.wasted_memory_gb_s,
            function_cold_starts: r.instances.function_cold_starts,
            cost: r.cost.total,
            slo_attainment: r.slo.attainment,
            p99_ms: r.latency_ms.p99,
        }
    }
}

#[derive(Serialize)]
struct Table<'a> {
    scenario: &'a str,
    trace: &'a str,
    seed: u64,
    /// Whether the hybrid policy has both a lower 75th-percentile cold-start % and less wasted memory than
    /// the 10-minute fixed keep-alive (absent when 10 minutes was not run).
    hybrid_beats_fixed_10min: Option<bool>,
    rows: &'a [Row],
}

pub fn run(args: KeepaliveArgs) -> anyhow::Result<()> {
    if let Some(t) = &args.table {
        table_format(t)?;
    }
    if args.minutes.is_empty() || args.minutes.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return Err(BadInput(format!("--minutes: positive numbers of minutes, got {:?}", args.minutes)).into());
    }
    let text =
        std::fs::read_to_string(&args.scenario).map_err(|e| BadInput(format!("{}: {e}", args.scenario.display())))?;
    let mut file: hyscale_sim::scenario::ScenarioFile =
        toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", args.scenario.display())))?;
    if let Some(s) = args.seed {
        file.seed = s;
    }
    let base = args.scenario.parent().map(Path::to_path_buf).unwrap_or_default();
    let scenario = Scenario::from_file(&args.scenario, base, file).map_err(bad_input)?;
    let mut specs: Vec<KeepAliveSpec> = args.minutes.iter().map(|&m| KeepAliveSpec::Fixed { minutes: m }).collect();
    specs.push(KeepAliveSpec::Hybrid(HybridConfig::default()));
    let started = Instant::now();
    eprintln!("{} keep-alive policies on {} ...", specs.len(), scenario.file.name);
    let reports = run_parallel(
        &specs,
        |s| match s {
            KeepAliveSpec::Fixed { minutes } => format!("fixed {minutes} min"),
            KeepAliveSpec::Hybrid(_) => "hybrid".into(),
        },
        |spec| {
            let mut sc = scenario.clone();
            sc.file.keep_alive = Some(spec.clone());
            let policy = sc.file.policy.clone();
            hyscale_sim::run_scenario(&sc).map_err(|e| crate::run_error(e, &sc, None, &policy))
        },
    )?;
    let rows: Vec<Row> = reports.iter().map(Row::of).collect();
    let trace = reports.first().map_or(String::new(), |r| r.trace.clone());
    println!("scenario {}  seed {}  policy {}", scenario.file.name, scenario.file.seed, scenario.file.policy);
    println!("trace    {trace}\n");
    println!(
        "{:<14} {:>9} {:>11} {:>9} {:>9} {:>9} {:>13} {:>10} {:>9}",
        "keep-alive", "functions", "cold inv.", "cold p50%", "cold p75%", "cold p90%", "wasted GB-s", "cost $", "SLO %"
    );
    for r in &rows {
        println!(
            "{:<14} {:>9} {:>11} {:>9.2} {:>9.2} {:>9.2} {:>13.0} {:>10.4} {:>9.3}",
            r.keep_alive,
            r.functions,
            r.cold_invocations,
            r.cold_pct_p50,
            r.cold_pct_p75,
            r.cold_pct_p90,
            r.wasted_memory_gb_s,
            r.cost,
            r.slo_attainment * 100.0
        );
    }
    let ten = rows.iter().find(|r| r.keep_alive == "fixed-10min");
    let hybrid = rows.iter().find(|r| r.keep_alive == "hybrid");
    let beats =
        ten.zip(hybrid).map(|(t, h)| h.cold_pct_p75 < t.cold_pct_p75 && h.wasted_memory_gb_s < t.wasted_memory_gb_s);
    if let (Some(t), Some(h)) = (ten, hybrid) {
        println!(
            "\nhybrid vs fixed 10 min: 75th-percentile cold starts {:.2}% vs {:.2}%, wasted memory {:.0} vs {:.0} GB-s ({:+.1}%): {}",
            h.cold_pct_p75,
            t.cold_pct_p75,
            h.wasted_memory_gb_s,
            t.wasted_memory_gb_s,
            100.0 * (h.wasted_memory_gb_s / t.wasted_memory_gb_s.max(1e-12) - 1.0),
            if beats == Some(true) { "hybrid better on both" } else { "hybrid NOT better on both" }
        );
    }
    if let Some(path) = &args.table {
        crate::create_parent(path)?;
        let text = if table_format(path)? {
            let t = Table {
                scenario: &scenario.file.name,
                trace: &trace,
                seed: scenario.file.seed,
                hybrid_beats_fixed_10min: beats,
                rows: &rows,
            };
            format!("{}\n", serde_json::to_string_pretty(&t)?)
        } else {
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in &rows {
                w.serialize(r)?;
            }
            String::from_utf8(w.into_inner()?)?
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("table written to {}", path.display());
    }
    eprintln!("{} runs in {:.2} s", specs.len(), started.elapsed().as_secs_f64());
    Ok(())
}
