//! `hyscale trace stats|convert|gen`: look at a trace, turn it into the canonical CSV, or generate one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyscale_traces::{ArrivalStream, BinStats, GeneratorSpec, TraceError, TraceSpec, TraceStats, write_canonical};

use crate::BadInput;

#[derive(Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Requests, span, mean rate, and burstiness (peak/mean, CV, idle share) at 1 s and 60 s.
    Stats(StatsArgs),
    /// Write any trace as the canonical per-request CSV (time_s,model,input_size,output_size).
    Convert(ConvertArgs),
    /// Write a generated trace as the canonical per-request CSV.
    Gen(GenArgs),
}

/// A trace, as `--trace` of `hyscale simulate` takes it.
const SOURCE_HELP: &str = "A trace: FILE.csv (Azure LLM or canonical), FILE.jsonl, FILE.toml (a trace spec), \
    azure-functions:SPREAD:FILE, count-series:SPREAD:FILE (SPREAD = even|uniform|poisson), poisson:RATE:SECONDS, \
    or gen:KIND:key=value,...";

#[derive(Args)]
struct StatsArgs {
    #[arg(help = SOURCE_HELP)]
    source: String,
    /// Seed for the random choices of generators and spreads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConvertArgs {
    #[arg(help = SOURCE_HELP)]
    source: String,
    /// The CSV to write.
    #[arg(long)]
    out: PathBuf,
    /// Seed for the random choices of generators and spreads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct GenArgs {
    /// The generator: poisson, mmpp, diurnal, surge or gamma.
    kind: String,
    /// Its parameters as key=value (e.g. rate_per_s=5 duration_s=3600); see traces/README.md.
    params: Vec<String>,
    /// The CSV to write.
    #[arg(long)]
    out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Stats(a) => stats(a),
        TraceCommand::Convert(a) => {
            let spec = parse(&a.source)?;
            convert(&spec, &a.out, a.seed)
        }
        TraceCommand::Gen(a) => {
            if !GeneratorSpec::NAMES.contains(&a.kind.as_str()) {
                return Err(BadInput(format!(
                    "no generator '{}'; the generators are: {}",
                    a.kind,
                    GeneratorSpec::NAMES.join(", ")
                ))
                .into());
            }
            let spec = parse(&format!("gen:{}:{}", a.kind, a.params.join(",")))?;
            convert(&spec, &a.out, a.seed)
        }
    }
}

fn parse(source: &str) -> anyhow::Result<TraceSpec> {
    let mut spec = TraceSpec::from_arg(source).map_err(|e| BadInput(e.to_string()))?;
    spec.rebase(&std::env::current_dir().context("reading the working directory")?);
    Ok(spec)
}

fn open(spec: &TraceSpec, seed: u64) -> anyhow::Result<ArrivalStream> {
    spec.open(std::path::Path::new(""), seed).map_err(|e| BadInput(e.to_string()).into())
}

/// Errors met while reading a stream are the input's fault (a malformed row), except I/O failures.
fn stream_error(e: TraceError) -> anyhow::Error {
    match e {
        TraceError::Io { .. } => anyhow::Error::new(e),
        other => BadInput(other.to_string()).into(),
    }
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let spec = parse(&args.source)?;
    let started = Instant::now();
    let stats = TraceStats::compute(open(&spec, args.seed)?).map_err(stream_error)?;
    let wall = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("trace       {}", spec.describe());
        println!("requests    {}", stats.requests);
        println!(
            "span        {:.1} s ({:.2} h), first at {:.3} s, last at {:.3} s",
            stats.span_s,
            stats.span_s / 3600.0,
            stats.first_s,
            stats.last_s
        );
        println!("mean rate   {:.4} requests/s", stats.mean_rate_per_s);
        println!("models      {}", stats.models);
        println!("bin        bins        mean/bin      peak   peak/mean      CV   idle share");
        for b in [&stats.per_second, &stats.per_minute] {
            print_bins(b);
        }
    }
    eprintln!(
        "read {} arrivals in {wall:.3} s ({:.0} arrivals/s)",
        stats.requests,
        stats.requests as f64 / wall.max(1e-9)
    );
    Ok(())
}

fn print_bins(b: &BinStats) {
    println!(
        "{:<6} {:>9} {:>15.3} {:>9} {:>11.2} {:>7.3} {:>11.2}%",
        format!("{} s", b.bin_s),
        b.bins,
        b.mean,
        b.peak,
        b.peak_to_mean,
        b.cv,
        b.idle_share * 100.0
    );
}

fn convert(spec: &TraceSpec, out: &std::path::Path, seed: u64) -> anyhow::Result<()> {
    let stream = open(spec, seed)?;
    let started = Instant::now();
    let n = crate::write_atomically(out, |file| write_canonical(stream, file, out).map_err(stream_error))?;
    let wall = started.elapsed().as_secs_f64();
    println!("wrote {n} arrivals of {} to {}", spec.describe(), out.display());
    eprintln!("in {wall:.3} s ({:.0} arrivals/s)", n as f64 / wall.max(1e-9));
    Ok(())
}
