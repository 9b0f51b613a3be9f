//! `hyscale profile`: measure a model's batch-latency curve and cold start on this machine, and write them as
//! the simulator's latency profile (`profiles/README.md`), so a simulation can be calibrated from reality.
//!
//! - **Latency per batch size**: batch sizes 1, 2, 4, ... up to `--max-batch` (and `--max-batch` itself); for
//!   each, `--warmup` untimed runs, then the median of `--repeats` timed runs of the engine (inputs built from
//!   a fixed pattern, outputs copied out, as the batcher does). A model with a fixed batch size `b` runs a
//!   batch of n as ceil(n / b) engine runs, as the batcher would.
//! - **Cold start**: process-level. The current executable is spawned with the hidden `profile-cold-start`
//!   subcommand, so each measurement is a real cold process: start, engine start (opening ONNX Runtime),
//!   session creation, first inference at batch 1, exit. The median of `--cold-starts` processes is reported
//!   and written in the profile's comments, with the implied model-load rate; the profile format itself has
//!   no cold-start field (the simulator derives a function's cold start from `model.size_mb` and the
//!   catalog's load rate).
//!
//! The profile's `cv` is the measured coefficient of variation of the timed runs (robust: from the
//! interquartile range; mean over batch sizes); `max_vcpus_per_request` is `--threads`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use hyscale_backend::engine::{BatchDim, Dim, Engine, EngineChoice, EngineConfig, Session, Tensor};
use hyscale_policies::profile::{HardwareProfile, ModelProfile, ProfileFile};
use serde::{Deserialize, Serialize};

use crate::BadInput;

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// The ONNX model to profile.
    #[arg(long)]
    model: PathBuf,
    /// Engine: auto (ONNX Runtime when installed, else tract), tract or onnxruntime.
    #[arg(long, default_value = "auto")]
    engine: EngineChoice,
    /// Largest batch size measured (sizes 1, 2, 4, ... up to it, and it).
    #[arg(long, default_value_t = 32)]
    max_batch: u32,
    /// Timed runs per batch size; the median is written.
    #[arg(long, default_value_t = 30)]
    repeats: u32,
    /// Untimed warm-up runs per batch size.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Cold starts to measure, each a fresh process (0: none).
    #[arg(long, default_value_t = 3)]
    cold_starts: u32,
    /// Threads one inference may use (ONNX Runtime's intra-op threads; tract uses one). The default, 1, is
    /// what the profile's `function` entry means: one vCPU per request.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hardware names to write the measured table under, comma-separated: `function` and/or catalog VM types
    /// (the same measurement for each: profile on the hardware you name).
    #[arg(long, value_delimiter = ',', default_value = "function")]
    hardware: Vec<String>,
    /// The model's name in the profile (default: the file name without its extension).
    #[arg(long)]
    name: Option<String>,
    /// Write the profile here (TOML).
    #[arg(long)]
    out: PathBuf,
}

/// The hidden subcommand behind one cold-start measurement.
#[derive(clap::Args)]
pub struct ColdStartArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    engine: EngineChoice,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What the cold-start child process reports on its standard output, one JSON line.
#[derive(Debug, Deserialize, Serialize)]
struct ColdStartReport {
    engine: String,
    engine_start_ms: f64,
    session_ms: f64,
    first_inference_ms: f64,
}

/// One batch size's measurement.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    batch: u32,
    median_ms: f64,
    cv: f64,
}

pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    if args.max_batch == 0 {
        return Err(BadInput("--max-batch must be at least 1".into()).into());
    }
    if args.repeats == 0 {
        return Err(BadInput("--repeats must be at least 1".into()).into());
    }
    if args.threads == 0 {
        return Err(BadInput("--threads must be at least 1".into()).into());
    }
    if args.hardware.iter().any(|h| h.trim().is_empty()) {
        return Err(BadInput("--hardware names must not be empty".into()).into());
    }
    let size_bytes =
        std::fs::metadata(&args.model).map_err(|e| BadInput(format!("--model {}: {e}", args.model.display())))?.len();
    let engine = start_engine(args.engine, args.threads)?;
    eprintln!("engine: {} on {} thread(s)", engine.describe(), args.threads);
    for note in engine.notes() {
        eprintln!("note: {note}");
    }
    let mut session = engine.load(&args.model).map_err(|e| BadInput(e.to_string()))?;
    let inputs = session.metadata().inputs.iter().map(|i| format!("{} {}", i.name, i.shape_string()));
    eprintln!(
        "model: {} ({:.3} MB), inputs {}, batch dimension {:?}, on {}",
        args.model.display(),
        size_bytes as f64 / 1e6,
        inputs.collect::<Vec<_>>().join(", "),
        session.metadata().batch_dim(),
        session.device().name()
    );

    let sizes = batch_sizes(args.max_batch, session.metadata().batch_dim());
    let mut points = Vec::with_capacity(sizes.len());
    println!("{:>6} {:>14} {:>8} {:>14}", "batch", "median ms", "cv", "samples/s");
    for &b in &sizes {
        let point = measure(&mut session, b, args.warmup, args.repeats)?;
        println!(
            "{:>6} {:>14.4} {:>8.3} {:>14.0}",
            b,
            point.median_ms,
            point.cv,
            f64::from(b) / (point.median_ms / 1e3)
        );
        points.push(point);
    }

    let mut cold = Vec::new();
    for i in 0..args.cold_starts {
        let c = measure_cold_start(engine, &args.model, args.threads)
            .with_context(|| format!("cold start {} of {}", i + 1, args.cold_starts))?;
        cold.push(c);
    }
    let cold = summarise_cold(&cold);
    if let Some(c) = &cold {
        println!(
            "cold start (median of {} processes): {:.1} ms from spawn to exit; in process: engine start {:.1} ms + \
             session {:.1} ms + first inference {:.2} ms",
            args.cold_starts, c.process_ms, c.engine_start_ms, c.session_ms, c.first_inference_ms
        );
    }

    let name = args.name.clone().unwrap_or_else(|| session.name().to_string());
    let header = Header {
        engine: engine.describe(),
        threads: args.threads,
        device: session.device().name(),
        model_path: &args.model,
        size_bytes,
        warmup: args.warmup,
        repeats: args.repeats,
        cold,
    };
    let (text, adjusted) = profile_toml(&name, size_bytes, &args.hardware, args.threads, &points, &header)?;
    for (b, from, to) in &adjusted {
        eprintln!("note: batch {b} measured {from:.4} ms, below a smaller batch's; written as {to:.4} ms");
    }
    crate::create_parent(&args.out)?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("profile written to {} (engine {})", args.out.display(), engine.name());
    Ok(())
}

/// The hidden `profile-cold-start` subcommand: start the engine, load the model, run one inference at batch 1,
/// and print the times as one JSON line.
pub fn cold_start(args: ColdStartArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let engine = start_engine(args.engine, args.threads)?;
    let t1 = Instant::now();
    let mut session = engine.load(&args.model)?;
    let t2 = Instant::now();
    let inputs = batch_inputs(&session, 1)?;
    for run in inputs {
        session.run(&run)?;
    }
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let report = ColdStartReport {
        engine: engine.name().to_string(),
        engine_start_ms: ms(t0, t1),
        session_ms: ms(t1, t2),
        first_inference_ms: ms(t2, t3),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn start_engine(choice: EngineChoice, threads: usize) -> anyhow::Result<&'static Engine> {
    let config = EngineConfig { engine: choice, intra_threads: Some(threads), ..EngineConfig::default() };
    Engine::init(&config).map_err(|e| BadInput(format!("--engine {choice}: {e}")).into())
}

/// 1, 2, 4, ... below `max`, then `max` (for a model with a fixed batch size too: a batch of n is several
/// engine runs). A model without a batch dimension is measured at batch 1 only.
fn batch_sizes(max: u32, batch_dim: BatchDim) -> Vec<u32> {
    if batch_dim == BatchDim::None {
        return vec![1];
    }
    let mut sizes: Vec<u32> =
        std::iter::successors(Some(1u32), |b| b.checked_mul(2)).take_while(|&b| b < max).collect();
    sizes.push(max);
    sizes
}

/// The engine runs of one batch of `batch` rows: one run for a dynamic batch, ceil(batch / b) runs of b rows
/// for a fixed batch b; inputs follow gen_models.py's fixed pattern.
fn batch_inputs(session: &Session, batch: u32) -> anyhow::Result<Vec<Vec<Tensor>>> {
    let meta = session.metadata();
    let (run_rows, runs) = match meta.batch_dim() {
        BatchDim::Dynamic => (batch as usize, 1),
        BatchDim::Fixed(b) => (b, (batch as usize).div_ceil(b.max(1))),
        BatchDim::None => (1, 1),
    };
    let mut tensors = Vec::with_capacity(meta.inputs.len());
    for (k, info) in meta.inputs.iter().enumerate() {
        let mut shape = Vec::with_capacity(info.shape.len());
        for (d, dim) in info.shape.iter().enumerate() {
            match (d, dim) {
                (0, Dim::Dynamic(_)) => shape.push(run_rows),
                (_, Dim::Fixed(n)) => shape.push(*n),
                (_, Dim::Dynamic(_)) => {
                    return Err(BadInput(format!(
                        "input '{}' {} has a dynamic dimension besides the batch: cannot choose an input size \
                         to profile",
                        info.name,
                        info.shape_string()
                    ))
                    .into());
                }
            }
        }
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| (((i + k) * 37) % 101) as f32 / 50.0 - 1.0).collect();
        tensors.push(Tensor { shape, data });
    }
    Ok(vec![tensors; runs])
}

fn measure(session: &mut Session, batch: u32, warmup: u32, repeats: u32) -> anyhow::Result<Point> {
    let runs = batch_inputs(session, batch)?;
    let once = |session: &mut Session| -> anyhow::Result<f64> {
        let t = Instant::now();
        for inputs in &runs {
            session.run(inputs)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..warmup {
        once(session)?;
    }
    let mut samples = Vec::with_capacity(repeats as usize);
    for _ in 0..repeats {
        samples.push(once(session)?);
    }
    Ok(Point { batch, median_ms: median(&mut samples), cv: cv(&samples) })
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 }
}

/// The coefficient of variation, robustly: the interquartile range over 1.349 (the standard deviation of a
/// normal distribution with that IQR), over the median. A plain standard deviation lets one scheduling
/// hiccup among 30 runs of 0.01 ms multiply the CV tenfold.
fn cv(samples: &[f64]) -> f64 {
    if samples.len() < 4 {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    let median = quantile(0.5);
    if median > 0.0 { (quantile(0.75) - quantile(0.25)) / 1.349 / median } else { 0.0 }
}

/// Medians of the cold-start measurements.
#[derive(Clone, Debug, PartialEq)]
struct ColdStart {
    process_ms: f64,
    engine_start_ms: f64,
    session_ms: f64,
    first_inference_ms: f64,
}

fn measure_cold_start(engine: &Engine, model: &Path, threads: usize) -> anyhow::Result<ColdStart> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("profile-cold-start").arg("--model").arg(model).arg("--engine").arg(engine.name());
    cmd.arg("--threads").arg(threads.to_string());
    // The child opens the very library this process runs.
    if let Some(lib) = engine.library() {
        cmd.env("ORT_DYLIB_PATH", lib);
    }
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {}", exe.display()))?;
    let process_ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        anyhow::bail!("{} profile-cold-start failed: {}", exe.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: ColdStartReport =
        serde_json::from_str(line).with_context(|| format!("reading the cold-start report {line:?}"))?;
    Ok(ColdStart {
        process_ms,
        engine_start_ms: r.engine_start_ms,
        session_ms: r.session_ms,
        first_inference_ms: r.first_inference_ms,
    })
}

fn summarise_cold(all: &[ColdStart]) -> Option<ColdStart> {
    if all.is_empty() {
        return None;
    }
    let m = |f: fn(&ColdStart) -> f64| median(&mut all.iter().map(f).collect::<Vec<_>>());
    Some(ColdStart {
        process_ms: m(|c| c.process_ms),
        engine_start_ms: m(|c| c.engine_start_ms),
        session_ms: m(|c| c.session_ms),
        first_inference_ms: m(|c| c.first_inference_ms),
    })
}

/// What the profile's comments record about the measurement.
struct Header<'a> {
    engine: String,
    threads: usize,
    device: &'static str,
    model_path: &'a Path,
    size_bytes: u64,
    warmup: u32,
    repeats: u32,
    cold: Option<ColdStart>,
}

/// A latency written higher than measured: (batch, measured ms, written ms).
type Raised = (u32, f64, f64);

/// The profile file's text, checked by the simulator's own loader, and the latencies raised so that they do
/// not fall as the batch grows (batch, measured, written).
fn profile_toml(
    name: &str,
    size_bytes: u64,
    hardware: &[String],
    threads: usize,
    points: &[Point],
    h: &Header<'_>,
) -> anyhow::Result<(String, Vec<Raised>)> {
    // Latencies in ms with 0.1 µs resolution (the test MLP takes ~0.01 ms at batch 1).
    let round = |ms: f64| ((ms * 1e4).round() / 1e4).max(1e-4);
    let mut latency_ms = Vec::with_capacity(points.len());
    let mut adjusted = Vec::new();
    for p in points {
        let measured = round(p.median_ms);
        // Measurement noise can make a larger batch look faster; the profile format (and reality) say it is not.
        let floor = latency_ms.last().copied().unwrap_or(0.0);
        if measured < floor {
            adjusted.push((p.batch, measured, floor));
        }
        latency_ms.push(measured.max(floor));
    }
    let cv = points.iter().map(|p| p.cv).sum::<f64>() / points.len().max(1) as f64;
    let size_mb = size_bytes as f64 / 1e6;
    let file = ProfileFile {
        model: ModelProfile {
            name: name.to_string(),
            // Rounded up to 1 kB so that a tiny model still has a positive size.
            size_mb: ((size_mb * 1e3).ceil() / 1e3).max(0.001),
            per_request_mb: 0.0,
            max_vcpus_per_request: threads as f64,
            // Deserialise + first inference, scaled to one vCPU (measured with `threads`; assumes the load
            // parallelises over them, so one vCPU takes `threads` times as long). The file was on local disk:
            // fetching it from storage is the catalog's part of a cold start.
            load_s: h
                .cold
                .as_ref()
                .map_or(0.0, |c| ((c.session_ms + c.first_inference_ms) * threads as f64 / 1e3 * 1e6).ceil() / 1e6),
        },
        hardware: hardware
            .iter()
            .map(|hw| HardwareProfile {
                hardware: hw.trim().to_string(),
                batch: points.iter().map(|p| p.batch).collect(),
                latency_ms: latency_ms.clone(),
                cv: (cv * 1e3).round() / 1e3,
                // Measured on fixed-size inputs: size does not change the latency here.
                input_ms: 0.0,
                output_ms: 0.0,
                // The engine alone: the serving path's share is measured live (`hyscale fidelity`).
                overhead_ms: 0.0,
                overhead_p99_ms: 0.0,
            })
            .collect(),
    };
    let body = toml::to_string(&file).context("writing the profile as TOML")?;
    // The simulator's loader must accept what we write.
    let back: ProfileFile = toml::from_str(&body).context("reading the written profile back")?;
    for entry in &back.hardware {
        entry.table().map_err(|e| anyhow::anyhow!("the written profile is invalid: {e}"))?;
    }

    let mut text = String::new();
    let _ = writeln!(text, "# Latency profile measured by `hyscale profile` (format: profiles/README.md).");
    let _ = writeln!(text, "# model file: {} ({} bytes)", h.model_path.display(), h.size_bytes);
    let _ = writeln!(text, "# engine: {} on {}, {} thread(s) per inference", h.engine, h.device, h.threads);
    let _ = writeln!(
        text,
        "# latency_ms: median of {} timed runs after {} warm-up runs per batch size; cv: mean over batch sizes of \
         the runs' coefficient of variation (interquartile range / 1.349 / median)",
        h.repeats, h.warmup
    );
    for (b, from, to) in &adjusted {
        let _ = writeln!(
            text,
            "# batch {b}: measured {from} ms, written {to} ms (a batch is never faster than a smaller one)"
        );
    }
    let _ = writeln!(text, "# throughput, samples/s at each batch size:");
    for (p, l) in points.iter().zip(&latency_ms) {
        let _ = writeln!(text, "#   batch {:>4}: {:.0}", p.batch, f64::from(p.batch) / (l / 1e3));
    }
    match &h.cold {
        Some(c) => {
            let _ = writeln!(
                text,
                "# cold start (median, fresh processes): {:.1} ms from spawn to exit; in process: engine start \
                 {:.1} ms + session creation {:.1} ms + first inference {:.2} ms",
                c.process_ms, c.engine_start_ms, c.session_ms, c.first_inference_ms
            );
            let _ = writeln!(
                text,
                "# load_s: session creation + first inference, x {threads} thread(s) for one vCPU; a cold start in \
                 the simulator adds it to the sandbox, the runtime and the fetch (size_mb / the catalog's \
                 model_load_mb_per_s)"
            );
        }
        None => {
            let _ = writeln!(text, "# cold start: not measured (--cold-starts 0)");
        }
    }
    let _ = writeln!(text, "# size_mb: the ONNX file's size; per_request_mb: not measured (0).");
    text.push('\n');
    text.push_str(&body);
    Ok((text, adjusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_double_up_to_the_maximum() {
        assert_eq!(batch_sizes(32, BatchDim::Dynamic), [1, 2, 4, 8, 16, 32]);
        assert_eq!(batch_sizes(12, BatchDim::Fixed(1)), [1, 2, 4, 8, 12]);
        assert_eq!(batch_sizes(1, BatchDim::Dynamic), [1]);
        assert_eq!(batch_sizes(32, BatchDim::None), [1]);
    }

    #[test]
    fn medians_and_cvs() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(cv(&[2.0, 2.0, 2.0, 2.0]), 0.0);
        // Quartiles 3 and 7 around a median of 5; the outlier does not count.
        let samples = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1000.0];
        assert!((cv(&samples) - (7.0 - 3.0) / 1.349 / 5.0).abs() < 1e-12, "{}", cv(&samples));
    }

    fn header(path: &Path) -> Header<'_> {
        Header {
            engine: "tract 0.5.0+0.23 (pure Rust)".into(),
            threads: 1,
            device: "cpu",
            model_path: path,
            size_bytes: 38_705,
            warmup: 3,
            repeats: 30,
            cold: Some(ColdStart { process_ms: 40.0, engine_start_ms: 1.0, session_ms: 5.0, first_inference_ms: 0.1 }),
        }
    }

    #[test]
    fn the_written_profile_is_what_the_simulator_reads_with_noise_made_monotone() {
        let points = [
            Point { batch: 1, median_ms: 0.01234, cv: 0.1 },
            Point { batch: 2, median_ms: 0.0119, cv: 0.2 },
            Point { batch: 4, median_ms: 0.03, cv: 0.3 },
        ];
        let hardware = vec!["c5.large".to_string(), "function".to_string()];
        let path = PathBuf::from("mlp.onnx");
        let (text, adjusted) = profile_toml("mlp", 38_705, &hardware, 1, &points, &header(&path)).unwrap();
        assert_eq!(adjusted, [(2, 0.0119, 0.0123)]);
        let file: ProfileFile = toml::from_str(&text).unwrap();
        assert_eq!(file.model.name, "mlp");
        assert_eq!(file.model.size_mb, 0.039);
        let f = file.entry("function").unwrap();
        assert_eq!(f.batch, [1, 2, 4]);
        assert_eq!(f.latency_ms, [0.0123, 0.0123, 0.03]);
        assert_eq!(f.cv, 0.2);
        let table = f.table().unwrap();
        assert_eq!(table.latency(4), hyscale_policies::Nanos(30_000));
        assert_eq!(file.entry("c5.large").unwrap().latency_ms, f.latency_ms);
        assert!(text.contains("# cold start (median, fresh processes): 40.0 ms"), "{text}");
    }

    /// End to end on the generated MLP with tract (no cold start: this test binary is not `hyscale`), then a
    /// short simulation that uses the written profile through the simulator's scenario loader.
    #[test]
    fn profiles_the_generated_mlp_and_the_simulator_runs_on_the_profile() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mlp.toml");
        run(ProfileArgs {
            model: root.join("backend/models/mlp.onnx"),
            engine: EngineChoice::Tract,
            max_batch: 8,
            repeats: 5,
            warmup: 1,
            cold_starts: 0,
            threads: 1,
            hardware: vec!["c5.large".into(), "function".into()],
            name: None,
            out: out.clone(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let profile: ProfileFile = toml::from_str(&text).unwrap();
        assert_eq!(profile.model.name, "mlp");
        assert_eq!(profile.entry("function").unwrap().batch, [1, 2, 4, 8]);
        assert!(text.contains("# engine: tract"), "{text}");

        let scenario = dir.path().join("scenario.toml");
        let catalog = root.join("data/aws_us_east_1.toml");
        std::fs::write(
            &scenario,
            format!(
                "name = \"profiled-mlp\"\nseed = 1\npolicy = \"function-only\"\ncatalog = {:?}\nprofile = \
                 \"mlp.toml\"\n\n[trace]\nkind = \"poisson\"\nrate_per_s = 5.0\nduration_s = 30.0\n",
                catalog.display().to_string()
            ),
        )
        .unwrap();
        let loaded = hyscale_sim::Scenario::load(&scenario).unwrap();
        let report = hyscale_sim::run_scenario_with(&loaded, "function-only", None).unwrap();
        assert!(report.requests.arrivals > 0);
        assert_eq!(
            report.requests.arrivals,
            report.requests.completed + report.requests.rejected + report.requests.dropped
        );
    }
}
