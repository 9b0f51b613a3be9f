//! `hyscale simulate --policy a,b,c` (or `--policy all`): every policy on the same scenario, one table, with
//! the offline oracle's lower bound as the yardstick.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use hyscale_policies::oracle::{OracleBound, lower_bound};
use hyscale_policies::spec::POLICY_NAMES;
use hyscale_sim::Scenario;
use serde::Serialize;

use crate::{BadInput, run_error};

/// One row of the comparison.
#[derive(Serialize)]
struct Row {
    policy: String,
    cost: f64,
    cost_vs_oracle: f64,
    slo_attainment: f64,
    slo_met: bool,
    p50_ms: f64,
    p99_ms: f64,
    rejected: u64,
    dropped: u64,
    vm_hours_on_demand: f64,
    vm_hours_spot: f64,
    function_instance_hours: f64,
    function_cold_starts: u64,
}

#[derive(Serialize)]
struct Comparison<'a> {
    scenario: &'a str,
    trace: &'a str,
    seed: u64,
    requests: u64,
    /// A lower bound on the cost of meeting the SLO, not a policy's result.
    oracle_lower_bound: &'a OracleBound,
    policies: &'a [Row],
}

/// The policy names a `--policy` value lists (`all` for every policy).
pub fn names(arg: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = if arg == "all" {
        POLICY_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        arg.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    if let Some(bad) = names.iter().find(|n| !POLICY_NAMES.contains(&n.as_str())) {
        return Err(
            BadInput(format!("--policy: no policy '{bad}'; the policies are: {}", POLICY_NAMES.join(", "))).into()
        );
    }
    Ok(names)
}

/// Runs `policies` on `scenario` (in parallel, one thread per core), prints the table and writes it to
/// `table` (`.csv` or `.json`) when given.
pub fn run(
    scenario: &Scenario,
    policies: &[String],
    table: Option<&Path>,
    trace_arg: Option<&str>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let reports = run_parallel(
        policies,
        |name| name.clone(),
        |name| {
            hyscale_sim::run_scenario_with(scenario, name, None).map_err(|e| run_error(e, scenario, trace_arg, name))
        },
    )?;
    let requests = reports.first().map_or(0, |r| r.requests.arrivals);
    let oracle = lower_bound(&scenario.catalog, &scenario.slo, requests);
    let rows: Vec<Row> = reports
        .iter()
        .map(|r| Row {
            policy: r.policy.clone(),
            cost: r.cost.total,
            cost_vs_oracle: if oracle.cost > 0.0 { r.cost.total / oracle.cost } else { f64::NAN },
            slo_attainment: r.slo.attainment,
            slo_met: r.slo.met,
            p50_ms: r.latency_ms.p50,
            p99_ms: r.latency_ms.p99,
            rejected: r.requests.rejected,
            dropped: r.requests.dropped,
            vm_hours_on_demand: r.instances.vm_hours_on_demand,
            vm_hours_spot: r.instances.vm_hours_spot,
            function_instance_hours: r.instances.function_instance_hours,
            function_cold_starts: r.instances.function_cold_starts,
        })
        .collect();
    let first = reports.first();
    println!(
        "scenario {}  seed {}  {} requests  trace {}",
        scenario.file.name,
        scenario.file.seed,
        requests,
        first.map_or("", |r| r.trace.as_str())
    );
    println!(
        "SLO: {:.1}% of requests within {} ms\n",
        scenario.slo.sl_min * 100.0,
        scenario.slo.rt_max.as_secs_f64() * 1000.0
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "policy",
        "cost $",
        "x oracle",
        "SLO %",
        "met",
        "p50 ms",
        "p99 ms",
        "rej+drop",
        "VM-h od",
        "VM-h spt",
        "fn-h",
        "cold"
    );
    for r in &rows {
        println!(
            "{:<16} {:>9.4} {:>9.2} {:>9.3} {:>6} {:>8.1} {:>9.1} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            r.policy,
            r.cost,
            r.cost_vs_oracle,
            r.slo_attainment * 100.0,
            if r.slo_met { "yes" } else { "NO" },
            r.p50_ms,
            r.p99_ms,
            r.rejected + r.dropped,
            r.vm_hours_on_demand,
            r.vm_hours_spot,
            r.function_instance_hours,
            r.function_cold_starts
        );
    }
    println!(
        "{:<16} {:>9.4} {:>9.2}   (a lower bound, not a policy: {} of {} requests at ${:.3} per 1M, {})",
        "oracle (bound)",
        oracle.cost,
        1.0,
        oracle.requests_needed,
        requests,
        oracle.cost_per_request * 1e6,
        oracle.cheapest
    );
    if let Some(path) = table {
        write_table(path, scenario, requests, &oracle, &rows, first.map_or("", |r| r.trace.as_str()))?;
        println!("table written to {}", path.display());
    }
    eprintln!("{} policies in {:.2} s", policies.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `f` on every item, one thread per core, and returns the results in the items' order (so the output
/// does not depend on which thread finished first). Prints each item's wall time as it ends.
pub fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    label: impl Fn(&T) -> String + Sync,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    use rayon::prelude::*;
    items
        .par_iter()
        .map(|item| {
            let t = Instant::now();
            let r = f(item);
            eprintln!("  {}: done in {:.2} s", label(item), t.elapsed().as_secs_f64());
            r.with_context(|| label(item))
        })
        .collect()
}

/// Where a table goes: `.csv` or `.json`, nothing else (a `.txt` would silently get CSV).
pub fn table_format(path: &Path) -> anyhow::Result<bool> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => Ok(true),
        Some("csv") => Ok(false),
        _ => Err(BadInput(format!("--table {}: the file must end in .csv or .json", path.display())).into()),
    }
}

fn write_table(
    path: &Path,
    scenario: &Scenario,
    requests: u64,
    oracle: &OracleBound,
    rows: &[Row],
    trace: &str,
) -> anyhow::Result<()> {
    crate::create_parent(path)?;
    let text = if table_format(path)? {
        let c = Comparison {
            scenario: &scenario.file.name,
            trace,
            seed: scenario.file.seed,
            requests,
            oracle_lower_bound: oracle,
            policies: rows,
        };
        format!("{}\n", serde_json::to_string_pretty(&c)?)
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in rows {
            w.serialize(r)?;
        }
        // The bound goes in as its own, labelled row.
        w.write_record(
            [
                "oracle (lower bound)".to_string(),
                oracle.cost.to_string(),
                "1".into(),
                scenario.slo.sl_min.to_string(),
                "true".into(),
            ]
            .into_iter()
            .chain(std::iter::repeat_n(String::new(), 8)),
        )?;
        String::from_utf8(w.into_inner()?)?
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
