//! `hyscale predict`: how well each arrival predictor forecasts a trace's per-interval counts.
//!
//! The trace is binned into request counts per interval; the first `--train-fraction` of the intervals
//! fit each predictor, and the rest are walked one interval at a time (forecast, then observe), as a
//! proactive scaler would use it. The last interval, cut short by the end of the trace, is left out.

use std::path::Path;
use std::time::Instant;

use hyscale_policies::predict::{Accuracy, PREDICTOR_NAMES, PredictorSpec, walk_forward};
use hyscale_traces::TraceSpec;

use crate::BadInput;

/// Arguments of `hyscale predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// The trace, as `simulate --trace` takes it: FILE.csv (Azure LLM or canonical), poisson:RATE:SECONDS, ...
    #[arg(long)]
    trace: String,
    /// Predictors to compare, comma-separated, or `all`
    /// (last-value, moving-max, ewma, holt-winters, lstm).
    #[arg(long, value_delimiter = ',', required = true)]
    predictor: Vec<String>,
    /// Length of an interval, seconds.
    #[arg(long, default_value_t = 60.0)]
    interval_s: f64,
    /// Share of the intervals to fit on; the rest are the test.
    #[arg(long, default_value_t = 0.7)]
    train_fraction: f64,
    /// How many intervals ahead each scored forecast is.
    #[arg(long, default_value_t = 1)]
    horizon: usize,
    /// Seed of generated traces and of the LSTM's initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One predictor's result.
struct Row {
    name: &'static str,
    accuracy: Accuracy,
    train_s: f64,
    test_s: f64,
}

/// Runs `hyscale predict`.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let specs = predictors(&args.predictor)?;
    if !(args.interval_s.is_finite() && args.interval_s > 0.0) {
        return Err(
            BadInput(format!("--interval-s must be a positive number of seconds, not {}", args.interval_s)).into()
        );
    }
    if !(args.train_fraction > 0.0 && args.train_fraction < 1.0) {
        return Err(BadInput(format!(
            "--train-fraction must lie strictly between 0 and 1, not {}",
            args.train_fraction
        ))
        .into());
    }
    if args.horizon == 0 {
        return Err(BadInput("--horizon must be at least 1 interval".into()).into());
    }
    let spec = TraceSpec::from_arg(&args.trace).map_err(|e| BadInput(format!("--trace: {e}")))?;
    let counts = bin(&spec, args.interval_s, args.seed)?;
    let train_len = (counts.len() as f64 * args.train_fraction).round() as usize;
    if train_len == 0 || counts.len() - train_len < args.horizon {
        return Err(BadInput(format!(
            "the trace has {} full intervals of {} s: too few to fit on {:.0}% and forecast {} ahead; try a shorter --interval-s",
            counts.len(),
            args.interval_s,
            args.train_fraction * 100.0,
            args.horizon
        ))
        .into());
    }
    let (train, test) = counts.split_at(train_len);

    let mut rows = Vec::with_capacity(specs.len());
    for spec in &specs {
        let mut predictor = spec.build(args.seed).map_err(|e| BadInput(format!("--predictor: {e}")))?;
        let started = Instant::now();
        let bar = crate::spinner(&format!("fitting {} on {} intervals", spec.name(), train.len()));
        let fitted = predictor.fit(train);
        bar.finish_and_clear();
        fitted?;
        let train_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let accuracy = walk_forward(predictor.as_mut(), test, args.horizon);
        let test_s = started.elapsed().as_secs_f64();
        rows.push(Row { name: spec.name(), accuracy, train_s, test_s });
    }

    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    if args.json {
        let predictors: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "forecasts": r.accuracy.forecasts,
                    "mape_pct": r.accuracy.mape_pct,
                    "zero_actuals_skipped": r.accuracy.zero_actuals_skipped,
                    "rmse": r.accuracy.rmse,
                    "mae": r.accuracy.mae,
                    "train_s": r.train_s,
                    "test_s": r.test_s,
                })
            })
            .collect();
        let report = serde_json::json!({
            "trace": spec.describe(),
            "interval_s": args.interval_s,
            "intervals": counts.len(),
            "train_intervals": train.len(),
            "test_intervals": test.len(),
            "train_mean_count": mean(train),
            "test_mean_count": mean(test),
            "horizon": args.horizon,
            "seed": args.seed,
            "predictors": predictors,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }

    println!("trace      {}", spec.describe());
    println!(
        "intervals  {} of {} s: {} to fit (mean {:.1}), {} to test (mean {:.1}); forecasting {} ahead; seed {}",
        counts.len(),
        args.interval_s,
        train.len(),
        mean(train),
        test.len(),
        mean(test),
        args.horizon,
        args.seed
    );
    println!();
    println!("{:<14} {:>9} {:>10} {:>10} {:>9} {:>9}", "predictor", "MAPE %", "RMSE", "MAE", "train s", "test s");
    for r in &rows {
        let mape = r.accuracy.mape_pct.map_or_else(|| "-".to_string(), |m| format!("{m:.2}"));
        println!(
            "{:<14} {:>9} {:>10.2} {:>10.2} {:>9.3} {:>9.3}",
            r.name, mape, r.accuracy.rmse, r.accuracy.mae, r.train_s, r.test_s
        );
    }
    let skipped = rows.first().map_or(0, |r| r.accuracy.zero_actuals_skipped);
    let forecasts = rows.first().map_or(0, |r| r.accuracy.forecasts);
    println!();
    println!("{forecasts} forecasts each; MAPE leaves out the {skipped} whose actual count was zero.");
    Ok(())
}

/// The specs of the named predictors, `all` standing for every one; an unknown name is the user's error.
fn predictors(names: &[String]) -> anyhow::Result<Vec<PredictorSpec>> {
    let mut specs = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        if name == "all" {
            for &n in PREDICTOR_NAMES {
                specs.push(PredictorSpec::from_name(n)?);
            }
        } else {
            specs.push(PredictorSpec::from_name(name).map_err(|e| BadInput(format!("--predictor: {e}, or all")))?);
        }
    }
    Ok(specs)
}

/// The trace's arrivals counted per interval of `interval_s`, from time zero; the last interval, cut short
/// by the end of the trace, is left out.
fn bin(spec: &TraceSpec, interval_s: f64, seed: u64) -> anyhow::Result<Vec<f64>> {
    let interval_ns = ((interval_s * 1e9).round() as u64).max(1);
    let mut counts: Vec<f64> = Vec::new();
    for arrival in spec.open(Path::new(""), seed).map_err(|e| BadInput(format!("--trace: {e}")))? {
        let arrival = arrival.map_err(|e| BadInput(format!("--trace: {e}")))?;
        let index = usize::try_from(arrival.time.0 / interval_ns)?;
        if index >= counts.len() {
            counts.resize(index + 1, 0.0);
        }
        counts[index] += 1.0;
    }
    counts.pop();
    Ok(counts)
}
