//! `hyscale fsd`: FSD-Inference's trade-off for a model — P function workers exchanging activations through
//! a queue or object storage, against one function holding the whole model and a VM — simulated (channel
//! figures from `data/fsd_channels.toml`) and, with `--live`, run for real on this machine (workers in the
//! local Lambda service, a Redis broker and an S3 API on loopback).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyscale_backend::engine::{Engine, EngineChoice, EngineConfig, Tensor};
use hyscale_backend::fsd::channel::{ChannelSetup, ChannelTimes};
use hyscale_backend::fsd::live::{LiveSetup, run_live};
use hyscale_backend::fsd::model::Mlp;
use hyscale_backend::fsd::services::{self, LocalService};
use hyscale_policies::fsd::{FsdRow, Latency};
use hyscale_sim::Scenario;
use hyscale_sim::dist::DistSpec;
use hyscale_sim::fsd::{Channel, ChannelsFile, FsdModel, FsdRun, Layer, simulate_fsd, vm_baseline};
use serde::Serialize;

use crate::BadInput;

#[derive(clap::Args)]
pub struct FsdArgs {
    /// The model: an ONNX chain of fully-connected layers (Gemm, or MatMul + Add, with Relu).
    #[arg(long, conflicts_with = "mlp", required_unless_present = "mlp")]
    model: Option<PathBuf>,
    /// Or generate an MLP of these widths: inputs, then each layer's outputs (e.g. 1024,4096,4096,10).
    #[arg(long, value_delimiter = ',')]
    mlp: Option<Vec<usize>>,
    /// Workers per request, comma-separated (1 is one function holding the whole model).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8])]
    parallelism: Vec<usize>,
    /// Channels, comma-separated: queue (SNS + SQS) and/or object (S3).
    #[arg(long, value_delimiter = ',', default_values_t = ["queue".to_string(), "object".to_string()])]
    channel: Vec<String>,
    /// Also run each configuration live here (Redis and an S3 API on loopback).
    #[arg(long)]
    live: bool,
    /// Requests simulated.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Requests run live per configuration.
    #[arg(long, default_value_t = 20)]
    live_requests: u64,
    /// Mean arrival rate, requests per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Each worker's memory, MB (1,769 MB buys one vCPU).
    #[arg(long, default_value_t = 1769)]
    memory_mb: u32,
    /// The channels' figures.
    #[arg(long, default_value = "data/fsd_channels.toml")]
    channels: PathBuf,
    /// The scenario whose catalog prices the functions and the VM.
    #[arg(long, default_value = "scenarios/fsd.toml")]
    scenario: PathBuf,
    /// The VM type the whole model is compared on.
    #[arg(long, default_value = "c5.large")]
    vm: String,
    /// Redis for the live queue channel (default: start `redis-server` on loopback).
    #[arg(long)]
    redis: Option<String>,
    /// S3 API endpoint for the live object channel, with a bucket `fsd` (default: start moto's server).
    #[arg(long)]
    s3: Option<String>,
    /// Master seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the table as JSON here (`hyscale plot` draws it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --live: write the channel latencies measured here as a channels file.
    #[arg(long)]
    profile_out: Option<PathBuf>,
}

/// `hyscale fsd`'s JSON.
#[derive(Serialize)]
struct FsdReport {
    fsd: FsdModelInfo,
    rows: Vec<FsdRow>,
}

#[derive(Serialize)]
struct FsdModelInfo {
    model: String,
    layers: Vec<Layer>,
    weights_mb: f64,
    whole_ms: f64,
    rate_per_s: f64,
    channels: String,
    live_max_abs_error: Option<f32>,
}

fn bad(m: String) -> anyhow::Error {
    anyhow::Error::new(BadInput(m))
}

fn start_redis() -> anyhow::Result<(LocalService, String)> {
    let service =
        services::start_redis(Path::new("redis-server")).map_err(|e| bad(format!("{e}, or pass --redis URL")))?;
    eprintln!("started redis-server on 127.0.0.1:{}", service.port);
    let url = format!("redis://127.0.0.1:{}", service.port);
    Ok((service, url))
}

fn start_moto() -> anyhow::Result<(LocalService, String)> {
    let local = PathBuf::from(".venv/bin/moto_server");
    let bin = if local.exists() { local } else { PathBuf::from("moto_server") };
    let service = services::start_moto(&bin).map_err(|e| bad(format!("{e}, or pass --s3 URL")))?;
    services::create_bucket(&service, "fsd").map_err(|e| anyhow::anyhow!(e))?;
    eprintln!("started moto's S3 API on 127.0.0.1:{}", service.port);
    let url = service.http_url();
    Ok((service, url))
}

/// The whole model's single-row time on one thread here, ms (median of 50 after 5 warm-up runs).
fn measure_whole(path: &Path, inputs: usize) -> anyhow::Result<f64> {
    let engine =
        Engine::init(&EngineConfig { engine: EngineChoice::Tract, intra_threads: Some(1), ..Default::default() })?;
    let mut session = engine.load(path)?;
    let x = Tensor::new(vec![1, inputs], vec![0.5; inputs]).context("input")?;
    let mut times = Vec::new();
    for k in 0..55 {
        let t = Instant::now();
        session.run(std::slice::from_ref(&x))?;
        if k >= 5 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A log-normal fitted to measured samples' median and 99th percentile (for `--profile-out`).
fn fitted(samples: &[f64], fallback: &DistSpec) -> DistSpec {
    if samples.len() < 5 {
        return fallback.clone();
    }
    let summary = Latency::of(&mut samples.to_vec());
    let p50 = summary.p50.max(0.001);
    DistSpec::Lognormal { p50, p99: summary.p99.max(p50 * 1.01) }
}

pub fn run(args: FsdArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0) || args.requests == 0 {
        return Err(bad(format!(
            "--rate must be positive and --requests at least 1, got {} and {}",
            args.rate, args.requests
        )));
    }
    if args.parallelism.is_empty() || args.parallelism.contains(&0) {
        return Err(bad("--parallelism takes positive worker counts, e.g. 1,2,4,8".into()));
    }
    let kinds: Vec<Channel> = args.channel.iter().map(|c| Channel::parse(c)).collect::<Result<_, _>>().map_err(bad)?;
    let channels = ChannelsFile::load(&args.channels).map_err(|e| bad(e.to_string()))?;
    let scenario = Scenario::load(&args.scenario).map_err(|e| bad(e.to_string()))?;
    let platform = scenario.catalog.functions.clone();
    let vm = scenario
        .catalog
        .vm_types
        .iter()
        .find(|t| t.name == args.vm)
        .ok_or_else(|| bad(format!("--vm {}: not a VM type of {}'s catalog", args.vm, args.scenario.display())))?
        .clone();
    let work = tempfile::tempdir().context("creating a working folder")?;
    let (mlp, name, path) = match (&args.model, &args.mlp) {
        (Some(p), _) => (Mlp::read(p).map_err(|e| bad(e.to_string()))?, p.display().to_string(), p.clone()),
        (None, Some(widths)) => {
            let mlp = Mlp::generate(widths, args.seed).map_err(|e| bad(format!("--mlp: {e}")))?;
            let path = work.path().join("mlp.onnx");
            std::fs::write(&path, mlp.to_onnx())?;
            let name = format!("generated MLP {}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join("-"));
            (mlp, name, path)
        }
        (None, None) => return Err(bad("give --model FILE.onnx or --mlp WIDTHS".into())),
    };
    let inputs = mlp.layers[0].inputs;
    eprintln!("measuring {name} here (one row, one thread)...");
    let whole_ms = measure_whole(&path, inputs)?;
    let model = FsdModel {
        layers: mlp.layers.iter().map(|d| Layer { inputs: d.inputs, outputs: d.outputs }).collect(),
        whole_ms,
    };
    let weights_mb = mlp.layers.iter().map(|d| (d.outputs * (d.inputs + 1) * 4) as f64).sum::<f64>() / 1e6;
    let mut rows = Vec::new();
    let base = FsdRun {
        parallelism: 1,
        channel: Channel::Queue,
        memory_mb: args.memory_mb,
        requests: args.requests,
        rate_per_s: args.rate,
        seed: args.seed,
    };
    let configs: Vec<(usize, Channel)> = args
        .parallelism
        .iter()
        .flat_map(|&p| if p == 1 { vec![(1, Channel::Queue)] } else { kinds.iter().map(|&c| (p, c)).collect() })
        .collect();
    for &(p, c) in &configs {
        let run = FsdRun { parallelism: p, channel: c, ..base };
        rows.push(simulate_fsd(&model, &channels, &platform, &run).map_err(|e| bad(format!("P = {p}: {e}")))?);
    }
    rows.push(vm_baseline(&model, &vm, &base));
    let mut live_err = None;
    let mut times = ChannelTimes::default();
    if args.live {
        let needs = |k: Channel| configs.iter().any(|&(p, c)| p > 1 && c == k);
        let redis = match (&args.redis, needs(Channel::Queue)) {
            (Some(url), _) => Some((None, url.clone())),
            (None, true) => start_redis().map(|(s, u)| Some((Some(s), u)))?,
            (None, false) => None,
        };
        let s3 = match (&args.s3, needs(Channel::Object)) {
            (Some(url), _) => Some((None, url.clone())),
            (None, true) => start_moto().map(|(s, u)| Some((Some(s), u)))?,
            (None, false) => None,
        };
        let binary =
            std::env::current_exe()?.parent().map(|d| d.join("hyscale-fsd-worker")).filter(|p| p.exists()).ok_or_else(
                || anyhow::anyhow!("hyscale-fsd-worker is not next to this executable: build the workspace's binaries"),
            )?;
        let engine =
            Engine::init(&EngineConfig { engine: EngineChoice::Tract, intra_threads: Some(1), ..Default::default() })?;
        let mut whole = engine.load(&path)?;
        let runtime = tokio::runtime::Runtime::new()?;
        let gap = Duration::from_secs_f64(1.0 / args.rate);
        for &(p, c) in &configs {
            let channel = match c {
                Channel::Queue => ChannelSetup::Queue {
                    url: redis.as_ref().map(|r| r.1.clone()).unwrap_or_default(),
                    limits: channels.queue.prices(),
                },
                Channel::Object => ChannelSetup::Object {
                    endpoint: s3.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                    bucket: "fsd".into(),
                    region: "us-east-1".into(),
                    poll_ms: channels.object.poll_interval_ms,
                },
            };
            let setup = LiveSetup {
                mlp: mlp.clone(),
                workers: p,
                channel,
                dir: work.path().join(format!("p{p}-{}", c.name())),
                binary: binary.clone(),
                memory_mb: args.memory_mb,
                timeout_ms: 10_000,
                platform: platform.clone(),
                prices: (channels.queue.prices(), channels.object.prices()),
                fault: None,
            };
            eprintln!(
                "live: P = {p}{}, {} requests...",
                if p > 1 { format!(", {}", c.name()) } else { String::new() },
                args.live_requests
            );
            let result = runtime.block_on(run_live(&setup, &mut whole, args.live_requests, gap))?;
            if let Some(first) = result.failures.first() {
                eprintln!("  {} of {} requests failed; first: {first}", result.failures.len(), args.live_requests);
            }
            live_err = Some(live_err.unwrap_or(0.0f32).max(result.max_abs_error));
            times.add(&result.times);
            rows.push(result.row);
        }
    }
    print_table(&name, &model, weights_mb, &args, &rows);
    if let Some(e) = live_err {
        println!("live outputs against the whole model: largest difference {e:.2e}");
    }
    if let Some(out) = &args.profile_out {
        if !args.live {
            return Err(bad("--profile-out needs --live (it writes what was measured)".into()));
        }
        let mut measured = channels.clone();
        measured.queue.publish_ms = fitted(&times.publish_ms, &channels.queue.publish_ms);
        measured.queue.delivery_ms = fitted(&times.delivery_ms, &channels.queue.delivery_ms);
        measured.object.put_ms = fitted(&times.put_ms, &channels.object.put_ms);
        measured.object.get_ms = fitted(&times.get_ms, &channels.object.get_ms);
        let text = format!(
            "# Channel latencies measured by `hyscale fsd --live` on this machine (Redis and moto on loopback);\n\
             # prices and limits copied from {}.\n{}",
            args.channels.display(),
            toml::to_string(&measured)?
        );
        crate::write_atomically(out, |f| Ok(std::io::Write::write_all(f, text.as_bytes())?))?;
        println!("wrote the measured channel figures to {}", out.display());
    }
    if let Some(out) = &args.out {
        let report = FsdReport {
            fsd: FsdModelInfo {
                model: name,
                layers: model.layers.clone(),
                weights_mb,
                whole_ms,
                rate_per_s: args.rate,
                channels: args.channels.display().to_string(),
                live_max_abs_error: live_err,
            },
            rows,
        };
        let json = serde_json::to_string_pretty(&report)?;
        crate::write_atomically(out, |f| Ok(std::io::Write::write_all(f, format!("{json}\n").as_bytes())?))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn print_table(name: &str, model: &FsdModel, weights_mb: f64, args: &FsdArgs, rows: &[FsdRow]) {
    println!(
        "FSD-Inference: {name}, {} layers, {weights_mb:.1} MB of weights, {:.3} ms a request whole on one vCPU here; \
         requests at {}/s, workers of {} MB",
        model.layers.len(),
        model.whole_ms,
        args.rate,
        args.memory_mb
    );
    println!(
        "{:<9} {:<13} {:>2} {:<7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>6} {:>6} {:>5}",
        "mode",
        "kind",
        "P",
        "channel",
        "p50 ms",
        "p99 ms",
        "$/1k",
        "compute",
        "invoke",
        "messages",
        "storage",
        "pub/r",
        "SQS/r",
        "PUT/r",
        "GET/r",
        "cold"
    );
    for r in rows {
        let per = |n: u64| n as f64 / r.requests.max(1) as f64;
        let c = &r.counts;
        println!(
            "{:<9} {:<13} {:>2} {:<7} {:>8.2} {:>8.2} {:>9.5} {:>9.5} {:>9.5} {:>9.5} {:>9.5} {:>7.1} {:>8.1} {:>6.1} {:>6.1} {:>5}",
            r.mode,
            r.kind,
            r.parallelism,
            r.channel,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.cost_per_1000.total,
            r.cost_per_1000.compute,
            r.cost_per_1000.invocations,
            r.cost_per_1000.messages,
            r.cost_per_1000.storage,
            per(c.publishes),
            per(c.receive_billed + c.deletes),
            per(c.puts),
            per(c.gets + c.get_misses),
            r.cold_starts
        );
    }
}
