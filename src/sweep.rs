//! `hyscale sweep GRID.toml`: a grid of simulations (scenarios × traces × parameter sets × policies × seeds)
//! run on every core (rayon) with a progress bar and an ETA on a terminal (indicatif), written as one table
//! (CSV and JSON). `--shard K/N` runs the cells whose index is K modulo N, so a grid spreads over many
//! machines as an array job (Slurm job arrays, Kubernetes Indexed Jobs: examples in `sweeps/`);
//! `hyscale sweep merge` joins the shards' tables into the table the whole grid gives, byte for byte.
//!
//! ```toml
//! scenarios = ["../scenarios/conv4x_compare.toml"]   # relative to the grid file
//! policies = ["static", "mark"]
//! seeds = [1, 2, 3]
//! traces = ["poisson:50:600"]                         # optional: replace the scenarios' traces
//!
//! [[params]]                                          # optional: named overrides of scenario keys
//! name = "fn-2048"
//! set = { "policies.function-only.memory_mb" = 2048 }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyscale_policies::report::Report;
use hyscale_sim::Scenario;
use hyscale_sim::scenario::ScenarioFile;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::BadInput;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    merge: Option<SweepCommand>,
    /// The grid (TOML; see `sweeps/README.md`).
    grid: Option<PathBuf>,
    /// Run only the cells whose index is K modulo N (K counts from 0): one task of an array job.
    #[arg(long)]
    shard: Option<String>,
    /// Write the table here: `sweep.csv` and `sweep.json` (a shard: `shard-K-of-N.json` and `.csv`).
    #[arg(long, default_value = "out/sweep")]
    out: PathBuf,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Join shards' tables (`shard-K-of-N.json`) into the whole grid's table.
    Merge {
        /// The shards' JSON tables.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Write `sweep.csv` and `sweep.json` here.
        #[arg(long, default_value = "out/sweep")]
        out: PathBuf,
    },
}

/// A grid file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grid {
    scenarios: Vec<PathBuf>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    traces: Vec<String>,
    #[serde(default)]
    params: Vec<ParamSet>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamSet {
    name: String,
    #[serde(default)]
    set: toml::Table,
}

/// One cell of the grid.
#[derive(Clone)]
struct Cell {
    index: usize,
    scenario: PathBuf,
    trace: Option<String>,
    params: Option<ParamSet>,
    policy: Option<String>,
    seed: Option<u64>,
}

/// One row of the table: the cell and its figures (no wall-clock figure: a row is the same whoever runs it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub cell: usize,
    pub scenario: String,
    pub trace: String,
    pub params: String,
    pub policy: String,
    pub seed: u64,
    pub requests: u64,
    pub completed: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub slo_attainment: f64,
    pub slo_met: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cost_total: f64,
    pub cost_vm: f64,
    pub cost_functions: f64,
    pub vm_hours: f64,
    pub cold_starts: u64,
}

/// A table file: the grid it is of (its cell count and a fingerprint of its cells), which shard, the rows.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Table {
    grid_cells: usize,
    grid_fingerprint: String,
    shard: Option<(usize, usize)>,
    rows: Vec<Row>,
}

fn bad(m: String) -> anyhow::Error {
    anyhow::Error::new(BadInput(m))
}

fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = s.split_once('/').and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((k, n)) if n > 0 && k < n => Ok((k, n)),
        _ => Err(bad(format!("--shard {s:?}: expected K/N with 0 <= K < N, e.g. 0/4"))),
    }
}

fn cells(grid: &Grid, base: &Path) -> Vec<Cell> {
    let opt = |v: &[String]| if v.is_empty() { vec![None] } else { v.iter().cloned().map(Some).collect() };
    let seeds: Vec<Option<u64>> =
        if grid.seeds.is_empty() { vec![None] } else { grid.seeds.iter().copied().map(Some).collect() };
    let params: Vec<Option<ParamSet>> =
        if grid.params.is_empty() { vec![None] } else { grid.params.iter().cloned().map(Some).collect() };
    let mut out = Vec::new();
    for s in &grid.scenarios {
        for t in opt(&grid.traces) {
            for p in &params {
                for policy in opt(&grid.policies) {
                    for &seed in &seeds {
                        out.push(Cell {
                            index: out.len(),
                            scenario: base.join(s),
                            trace: t.clone(),
                            params: p.clone(),
                            policy: policy.clone(),
                            seed,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Names the cells in order, hashed (FNV-1a): shards of different grids are not merged.
fn fingerprint(cells: &[Cell]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in cells {
        let key = format!(
            "{}|{:?}|{}|{:?}|{:?};",
            c.scenario.display(),
            c.trace,
            c.params.as_ref().map_or("", |p| p.name.as_str()),
            c.policy,
            c.seed
        );
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Sets `dotted.key = value` in a TOML table, creating tables on the way.
fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|l| !l.is_empty()).ok_or_else(|| format!("empty key {key:?}"))?;
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{key}: '{p}' is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn load(cell: &Cell) -> anyhow::Result<Scenario> {
    let path = &cell.scenario;
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if let Some(p) = &cell.params {
        for (k, v) in &p.set {
            set_key(&mut table, k, v.clone()).map_err(|e| bad(format!("params '{}': {e}", p.name)))?;
        }
    }
    let mut file: ScenarioFile = table.try_into().map_err(|e| {
        bad(format!("{} with params '{}': {e}", path.display(), cell.params.as_ref().map_or("", |p| &p.name)))
    })?;
    crate::override_scenario(&mut file, cell.trace.as_deref(), "traces", cell.policy.as_deref(), cell.seed)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Scenario::from_file(path, base, file).map_err(|e| bad(e.to_string()))
}

fn row(cell: &Cell, r: &Report) -> Row {
    let c = &r.cost;
    Row {
        cell: cell.index,
        scenario: cell.scenario.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
        trace: r.trace.clone(),
        params: cell.params.as_ref().map_or_else(|| "-".into(), |p| p.name.clone()),
        policy: r.policy.clone(),
        seed: r.seed,
        requests: r.requests.arrivals,
        completed: r.requests.completed,
        rejected: r.requests.rejected,
        dropped: r.requests.dropped,
        slo_attainment: r.slo.attainment,
        slo_met: r.slo.met,
        p50_ms: r.latency_ms.p50,
        p99_ms: r.latency_ms.p99,
        cost_total: c.total,
        cost_vm: c.vm_on_demand + c.vm_spot,
        cost_functions: c.function_compute + c.function_requests + c.pods,
        vm_hours: r.instances.vm_hours_on_demand + r.instances.vm_hours_spot,
        cold_starts: r.instances.function_cold_starts,
    }
}

fn write_table(dir: &Path, stem: &str, table: &Table) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(table)?;
    crate::write_atomically(&dir.join(format!("{stem}.json")), |f| {
        Ok(std::io::Write::write_all(f, format!("{json}\n").as_bytes())?)
    })?;
    crate::write_atomically(&dir.join(format!("{stem}.csv")), |f| {
        let mut w = csv::Writer::from_writer(f);
        for r in &table.rows {
            w.serialize(r)?;
        }
        w.flush()?;
        Ok(())
    })?;
    println!("wrote {} rows to {}/{stem}.csv and .json", table.rows.len(), dir.display());
    Ok(())
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    if let Some(SweepCommand::Merge { shards, out }) = args.merge {
        return merge(&shards, &out);
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let grid_path = args.grid.ok_or_else(|| bad("give a grid file: hyscale sweep GRID.toml".into()))?;
    let text = std::fs::read_to_string(&grid_path).map_err(|e| bad(format!("{}: {e}", grid_path.display())))?;
    let grid: Grid = toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", grid_path.display())))?;
    if grid.scenarios.is_empty() {
        return Err(bad(format!("{}: `scenarios` names no scenario", grid_path.display())));
    }
    let base = grid_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let all = cells(&grid, &base);
    let mine: Vec<&Cell> = all.iter().filter(|c| shard.is_none_or(|(k, n)| c.index % n == k)).collect();
    // Every cell is loaded before anything runs: a bad cell stops the sweep at once, naming it.
    let scenarios: Vec<Scenario> =
        mine.iter().map(|c| load(c).with_context(|| format!("cell {}", c.index))).collect::<anyhow::Result<_>>()?;
    let threads = args.threads.unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting the worker threads")?;
    let bar = ProgressBar::new(mine.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} cells, ETA {eta} {msg}")
            .map_err(|e| anyhow::anyhow!("progress style: {e}"))?
            .progress_chars("=> "),
    );
    let requests = AtomicU64::new(0);
    let started = Instant::now();
    let rows: Vec<Row> = pool.install(|| {
        mine.par_iter()
            .zip(&scenarios)
            .map(|(cell, scenario)| {
                let policy = scenario.file.policy.clone();
                let report = hyscale_sim::run_scenario_with(scenario, &policy, None)
                    .map_err(|e| bad(format!("cell {} ({} {policy}): {e}", cell.index, cell.scenario.display())))?;
                let done = requests.fetch_add(report.requests.arrivals, Ordering::Relaxed) + report.requests.arrivals;
                bar.set_message(format!("{:.1}M requests", done as f64 / 1e6));
                bar.inc(1);
                Ok(row(cell, &report))
            })
            .collect::<anyhow::Result<Vec<Row>>>()
    })?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let total = requests.load(Ordering::Relaxed);
    eprintln!(
        "{} cells, {total} simulated requests in {wall:.1} s on {} threads ({:.2}M requests/s)",
        rows.len(),
        pool.current_num_threads(),
        total as f64 / wall.max(1e-9) / 1e6
    );
    let table = Table { grid_cells: all.len(), grid_fingerprint: fingerprint(&all), shard, rows };
    let stem = match shard {
        Some((k, n)) => format!("shard-{k}-of-{n}"),
        None => "sweep".into(),
    };
    write_table(&args.out, &stem, &table)
}

fn merge(paths: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut tables = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
        let t: Table =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: not a sweep table: {e}", p.display())))?;
        tables.push((p, t));
    }
    let (first_path, first) = &tables[0];
    let (cells, print) = (first.grid_cells, first.grid_fingerprint.clone());
    if let Some((p, _)) = tables.iter().find(|(_, t)| t.grid_cells != cells || t.grid_fingerprint != print) {
        return Err(bad(format!("{} is of another grid than {}", p.display(), first_path.display())));
    }
    let mut rows: Vec<Row> = tables.iter().flat_map(|(_, t)| t.rows.iter().cloned()).collect();
    rows.sort_by_key(|r| r.cell);
    if let Some(w) = rows.windows(2).find(|w| w[0].cell == w[1].cell) {
        return Err(bad(format!("cell {} is in two shards", w[0].cell)));
    }
    let have: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.cell).collect();
    let missing: Vec<usize> = (0..cells).filter(|c| !have.contains(c)).collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "{} of the grid's {cells} cells are in no shard given (first: {:?}); give every shard",
            missing.len(),
            &missing[..missing.len().min(5)]
        )));
    }
    let table = Table { grid_cells: cells, grid_fingerprint: print, shard: None, rows };
    write_table(out, "sweep", &table)
}
