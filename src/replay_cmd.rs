//! `hyscale replay`: replay a trace against an Open Inference Protocol v2 endpoint, open loop, and write the
//! simulator's report format.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyscale_backend::replay::{ReplayConfig, ReplayError, replay};
use hyscale_policies::{Nanos, Slo};
use hyscale_traces::TraceSpec;

use crate::BadInput;

#[derive(Args)]
pub struct ReplayArgs {
    /// The trace (any form `hyscale simulate --trace` takes; see traces/README.md).
    #[arg(long)]
    trace: String,
    /// Base URL of the v2 endpoint, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    endpoint: String,
    /// The model to infer with.
    #[arg(long)]
    model: String,
    /// SLO response-time threshold, ms.
    #[arg(long, default_value_t = 200.0)]
    rt_max_ms: f64,
    /// SLO share of requests that must meet it.
    #[arg(long, default_value_t = 0.98)]
    sl_min: f64,
    /// Drop a request unanswered after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Replay only the first N seconds of the trace.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Seed of the payloads (and of the trace's random choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let bad = |m: String| anyhow::Error::new(BadInput(m));
    let rt_ok = args.rt_max_ms.is_finite() && args.rt_max_ms > 0.0;
    if !rt_ok || !(0.0..=1.0).contains(&args.sl_min) {
        return Err(bad("--rt-max-ms must be positive and --sl-min within 0..1".into()));
    }
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        return Err(bad("--timeout-s must be positive".into()));
    }
    let host = args.endpoint.strip_prefix("http://").or_else(|| args.endpoint.strip_prefix("https://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/') || h.contains(char::is_whitespace)) {
        return Err(bad(format!(
            "--endpoint {:?} is not an http(s) URL of a server, e.g. http://127.0.0.1:8000",
            args.endpoint
        )));
    }
    let mut spec = TraceSpec::from_arg(&args.trace).map_err(|e| bad(format!("--trace: {e}")))?;
    spec.rebase(&std::env::current_dir().context("reading the working directory")?);
    let stream = spec.open(std::path::Path::new(""), args.seed).map_err(|e| bad(format!("--trace: {e}")))?;
    let limit = args.duration_s.map(Nanos::from_secs_f64);
    let arrivals = stream.take_while(move |a| match (a, limit) {
        (Ok(a), Some(limit)) => a.time < limit,
        _ => true,
    });
    let cfg = ReplayConfig {
        endpoint: args.endpoint.clone(),
        model: args.model.clone(),
        slo: Slo { rt_max: Nanos::from_millis_f64(args.rt_max_ms), sl_min: args.sl_min },
        timeout: Duration::from_secs_f64(args.timeout_s),
        seed: args.seed,
        report_interval: Duration::from_secs(10),
        scenario: format!("replay against {}", args.endpoint),
        trace: spec.describe(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let report = runtime
        .block_on(replay(arrivals, &cfg, |t, n| eprintln!("  ... {t:.0} s replayed, {n} requests sent")))
        .map_err(|e| match e {
            ReplayError::Trace(_) | ReplayError::Invalid(_) | ReplayError::Metadata { .. } => bad(e.to_string()),
        })?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        crate::create_parent(out)?;
        std::fs::write(out, format!("{json}\n")).with_context(|| format!("writing {}", out.display()))?;
    }
    crate::print_table(&report);
    if let Some(out) = &args.out {
        println!("report written to {}", out.display());
    }
    Ok(())
}
