//! FSD-Inference in the simulator: one model served by `P` function workers that exchange activations
//! through a queue (pub-sub) or object storage.
//!
//! The model is a chain of fully-connected layers (what FSD partitions). Every layer's output rows are split
//! over the workers by [`split_rows`] (the same split the live partitioner writes): worker `i` computes its
//! rows of layer `l` from the whole previous activation, then the workers exchange their slices (an
//! all-gather) before the next layer; after the last layer the slices go to worker 0, which answers. A
//! request's workers are function instances with their own cold starts, keep-alive, memory and billing: a
//! worker is billed from its start to its last send (worker 0 to the answer), waiting on the channel
//! included. Channel figures (latencies, prices, limits) come from `data/fsd_channels.toml`; calls are
//! counted and priced by `hyscale_policies::fsd`.
//!
//! Compute: a worker's share of a layer takes the whole model's measured single-request time (one vCPU)
//! times its share of the multiply-adds, divided by its vCPUs (at most one: the inference is one thread).
//! A cold start takes the platform's mean cold start. Requests arrive as a Poisson stream at `rate_per_s`.
//!
//! Compared, on the same arrivals: one function holding the whole model (`P = 1`, no channel) and a VM
//! serving the whole model, kept on for the window.

use std::path::Path;

use hyscale_policies::fsd::{
    ChannelCounts, CostParts, FsdRow, Latency, ObjectPrices, QueuePrices, message_sizes, split_rows,
};
use hyscale_policies::{FunctionPlatform, Nanos, VmType, billing};
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::dist::DistSpec;
use crate::rng::SeedFan;

/// A runtime's own memory beside the weights, MB (an assumption: a small native runtime and its buffers).
pub const RUNTIME_MB: f64 = 128.0;

/// `[queue]` of the channels file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// SNS publishes, $ per million billed requests.
    pub publish_price_per_million: f64,
    /// SQS requests, $ per million billed requests.
    pub request_price_per_million: f64,
    /// Bytes billed as one request.
    pub billing_chunk_bytes: u64,
    /// Largest message, bytes.
    pub max_message_bytes: u64,
    /// Most messages one receive returns.
    pub receive_batch: u32,
    /// One publish call, ms.
    pub publish_ms: DistSpec,
    /// From publish to received, ms.
    pub delivery_ms: DistSpec,
    /// A worker's throughput to the service, MB/s.
    pub bandwidth_mb_per_s: f64,
}

/// `[object]` of the channels file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    /// PUTs, $ per thousand.
    pub put_price_per_thousand: f64,
    /// GETs, $ per thousand.
    pub get_price_per_thousand: f64,
    /// Largest object, bytes.
    pub max_object_bytes: u64,
    /// One PUT, ms.
    pub put_ms: DistSpec,
    /// One GET, ms (found or not).
    pub get_ms: DistSpec,
    /// Between a worker's polls for an object not there yet, ms.
    pub poll_interval_ms: f64,
    /// A worker's throughput to the store, MB/s.
    pub bandwidth_mb_per_s: f64,
}

/// `data/fsd_channels.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelsFile {
    /// The pub-sub/queue channel.
    pub queue: QueueSpec,
    /// The object-storage channel.
    pub object: ObjectSpec,
}

impl QueueSpec {
    /// The prices and limits.
    pub fn prices(&self) -> QueuePrices {
        QueuePrices {
            publish_price_per_million: self.publish_price_per_million,
            request_price_per_million: self.request_price_per_million,
            billing_chunk_bytes: self.billing_chunk_bytes,
            max_message_bytes: self.max_message_bytes,
            receive_batch: self.receive_batch,
        }
    }
}

impl ObjectSpec {
    /// The prices and limits.
    pub fn prices(&self) -> ObjectPrices {
        ObjectPrices {
            put_price_per_thousand: self.put_price_per_thousand,
            get_price_per_thousand: self.get_price_per_thousand,
            max_object_bytes: self.max_object_bytes,
        }
    }
}

impl ChannelsFile {
    /// Reads and checks a channels file.
    pub fn load(path: &Path) -> Result<ChannelsFile, SimError> {
        let bad = |reason: String| SimError::Config { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: ChannelsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        file.check().map_err(bad)?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        let (q, o) = (&self.queue, &self.object);
        let prices = [
            ("queue.publish_price_per_million", q.publish_price_per_million),
            ("queue.request_price_per_million", q.request_price_per_million),
            ("object.put_price_per_thousand", o.put_price_per_thousand),
            ("object.get_price_per_thousand", o.get_price_per_thousand),
        ];
        for (name, v) in prices {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a non-negative price, got {v}"));
            }
        }
        let positive = [
            ("queue.bandwidth_mb_per_s", q.bandwidth_mb_per_s),
            ("object.bandwidth_mb_per_s", o.bandwidth_mb_per_s),
            ("object.poll_interval_ms", o.poll_interval_ms),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
        if q.billing_chunk_bytes == 0 || q.max_message_bytes == 0 || q.receive_batch == 0 || o.max_object_bytes == 0 {
            return Err(
                "billing_chunk_bytes, max_message_bytes, receive_batch and max_object_bytes must be at least 1".into(),
            );
        }
        for (name, d) in [
            ("queue.publish_ms", &q.publish_ms),
            ("queue.delivery_ms", &q.delivery_ms),
            ("object.put_ms", &o.put_ms),
            ("object.get_ms", &o.get_ms),
        ] {
            d.build().map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

/// A fully-connected layer: `outputs` rows of `inputs` weights each (and a bias per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Inputs (the previous activation's width).
    pub inputs: usize,
    /// Outputs (rows of the weight matrix).
    pub outputs: usize,
}

/// The model as FSD sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsdModel {
    /// Its layers, in order.
    pub layers: Vec<Layer>,
    /// One request (one row) through the whole model on one vCPU, ms (measured: `hyscale fsd` runs it).
    pub whole_ms: f64,
}

impl FsdModel {
    /// Multiply-adds of one row through the whole model.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| (l.inputs * l.outputs) as u64).sum()
    }

    /// Bytes of weights and biases (FP32) a worker holds: its rows of every layer.
    pub fn slice_bytes(&self, workers: usize, worker: usize) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let rows = split_rows(l.outputs, workers)[worker].1;
                (rows * (l.inputs + 1) * 4) as u64
            })
            .sum()
    }

    fn check(&self, workers: usize) -> Result<(), String> {
        if self.layers.is_empty() {
            return Err("the model has no layers".into());
        }
        if !(self.whole_ms.is_finite() && self.whole_ms > 0.0) {
            return Err(format!("the model's measured time must be positive, got {} ms", self.whole_ms));
        }
        if let Some((l, layer)) = self.layers.iter().enumerate().find(|(_, l)| l.outputs < workers) {
            return Err(format!(
                "parallelism {workers} exceeds layer {}'s {} outputs: a worker would have no rows",
                l + 1,
                layer.outputs
            ));
        }
        Ok(())
    }
}

/// The channel activations go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Pub-sub + queues (SNS + SQS).
    Queue,
    /// Object storage (S3).
    Object,
}

impl Channel {
    /// Its name in tables and arguments.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Queue => "queue",
            Channel::Object => "object",
        }
    }

    /// From its name.
    pub fn parse(name: &str) -> Result<Channel, String> {
        match name.trim() {
            "queue" => Ok(Channel::Queue),
            "object" => Ok(Channel::Object),
            other => Err(format!("no such channel '{other}' (queue or object)")),
        }
    }
}

/// One configuration to simulate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FsdRun {
    /// Workers per request.
    pub parallelism: usize,
    /// The channel (ignored at parallelism 1).
    pub channel: Channel,
    /// Each worker's memory, MB.
    pub memory_mb: u32,
    /// Requests.
    pub requests: u64,
    /// Their mean arrival rate (Poisson), per second.
    pub rate_per_s: f64,
    /// Master seed.
    pub seed: u64,
}

/// Simulates `run` on `model` with the function `platform` and the `channels`.
pub fn simulate_fsd(
    model: &FsdModel,
    channels: &ChannelsFile,
    platform: &FunctionPlatform,
    run: &FsdRun,
) -> Result<FsdRow, SimError> {
    let bad = |reason: String| SimError::Config { path: "fsd".into(), reason };
    let p = run.parallelism.max(1);
    model.check(p).map_err(bad)?;
    if !(run.rate_per_s.is_finite() && run.rate_per_s > 0.0) || run.requests == 0 {
        return Err(bad(format!("the rate ({}) must be positive and requests at least 1", run.rate_per_s)));
    }
    platform.check_settings(run.memory_mb, 1).map_err(|e| bad(e.to_string()))?;
    let need_mb = (0..p).map(|w| model.slice_bytes(p, w)).max().unwrap_or(0) as f64 / 1e6 + RUNTIME_MB;
    if f64::from(run.memory_mb) < need_mb {
        return Err(bad(format!(
            "a worker at parallelism {p} holds {:.0} MB of weights plus {RUNTIME_MB} MB of runtime: {} MB of memory \
             is too little (raise --memory-mb or the parallelism)",
            need_mb - RUNTIME_MB,
            run.memory_mb
        )));
    }
    let dists = |s: &DistSpec| s.build().map_err(bad);
    let (publish, delivery) = (dists(&channels.queue.publish_ms)?, dists(&channels.queue.delivery_ms)?);
    let (put, get) = (dists(&channels.object.put_ms)?, dists(&channels.object.get_ms)?);
    let q = channels.queue.prices();
    let macs = model.macs().max(1) as f64;
    let speed = platform.vcpus(run.memory_mb).min(1.0);
    let splits: Vec<Vec<(usize, usize)>> = model.layers.iter().map(|l| split_rows(l.outputs, p)).collect();
    let compute_ms =
        |l: usize, w: usize| model.whole_ms * (model.layers[l].inputs * splits[l][w].1) as f64 / macs / speed;
    let transfer_ms = |bytes: u64, mb_per_s: f64| bytes as f64 / (mb_per_s * 1e3);
    let cold_ms = platform.cold_start_mean.as_millis_f64();
    let keep_alive_ms = platform.default_keep_alive.as_millis_f64();

    let fan = SeedFan::new(run.seed);
    let mut arrivals_rng = fan.stream("fsd-arrivals");
    let mut channel_rng = fan.stream("fsd-channel");
    let gaps = Exp::new(run.rate_per_s).map_err(|e| bad(e.to_string()))?;
    // Idle instances of each worker: when each became free, ms.
    let mut idle: Vec<Vec<f64>> = vec![Vec::new(); p];
    let mut counts = ChannelCounts::default();
    let (mut compute_cost, mut cold_starts) = (0.0, 0u64);
    let mut latencies = Vec::with_capacity(run.requests as usize);
    let mut t = 0.0;
    for _ in 0..run.requests {
        t += gaps.sample(&mut arrivals_rng) * 1e3;
        let mut start = vec![t; p];
        for (w, pool) in idle.iter_mut().enumerate() {
            pool.retain(|&free| t - free <= keep_alive_ms || free > t);
            match pool.iter().rposition(|&free| free <= t) {
                Some(k) => {
                    pool.swap_remove(k);
                }
                None => {
                    start[w] += cold_ms;
                    cold_starts += 1;
                }
            }
        }
        let mut ready = start.clone();
        let mut end = start.clone();
        for (l, split) in splits.iter().enumerate() {
            let done: Vec<f64> = (0..p).map(|w| ready[w] + compute_ms(l, w)).collect();
            if p == 1 {
                ready = done.clone();
                end = done;
                continue;
            }
            let last = l + 1 == model.layers.len();
            let bytes: Vec<u64> = split.iter().map(|&(_, rows)| (rows * 4) as u64).collect();
            // Who receives worker w's slice.
            let receivers = |w: usize| -> Vec<usize> {
                if last { if w == 0 { vec![] } else { vec![0] } } else { (0..p).filter(|&j| j != w).collect() }
            };
            // When each sender's slice is out (published or stored), and what each receiver gets when.
            let mut sent = done.clone();
            let mut arrive: Vec<Vec<(f64, u64)>> = vec![Vec::new(); p];
            for w in 0..p {
                let to = receivers(w);
                if to.is_empty() {
                    continue;
                }
                match run.channel {
                    Channel::Queue => {
                        counts.publish(&q, bytes[w], to.len() as u64);
                        for size in message_sizes(bytes[w], q.max_message_bytes) {
                            sent[w] +=
                                publish.sample(&mut channel_rng) + transfer_ms(size, channels.queue.bandwidth_mb_per_s);
                            for &j in &to {
                                arrive[j].push((sent[w] + delivery.sample(&mut channel_rng), size));
                            }
                        }
                    }
                    Channel::Object => {
                        counts.puts += bytes[w].div_ceil(channels.object.max_object_bytes).max(1);
                        sent[w] +=
                            put.sample(&mut channel_rng) + transfer_ms(bytes[w], channels.object.bandwidth_mb_per_s);
                        for &j in &to {
                            // Polls from when the receiver is done with its own slice, every poll interval.
                            let poll = channels.object.poll_interval_ms;
                            let misses = ((sent[w] - done[j]) / poll).ceil().max(0.0);
                            counts.get_misses += misses as u64;
                            counts.gets += 1;
                            let at = done[j] + misses * poll;
                            let got = at
                                + get.sample(&mut channel_rng)
                                + transfer_ms(bytes[w], channels.object.bandwidth_mb_per_s);
                            arrive[j].push((got, bytes[w]));
                        }
                    }
                }
            }
            for j in 0..p {
                let mut got = std::mem::take(&mut arrive[j]);
                if run.channel == Channel::Queue && !got.is_empty() {
                    got.sort_by(|a, b| a.0.total_cmp(&b.0));
                    counts.receive(&q, &got.iter().map(|m| m.1).collect::<Vec<_>>());
                }
                let last_in = got.iter().map(|m| m.0).fold(done[j], f64::max);
                ready[j] = last_in;
                end[j] = if last && j != 0 { sent[j] } else { last_in };
            }
        }
        latencies.push(ready[0] - t);
        for w in 0..p {
            let billed = end[w] - start[w] + if platform.bill_init && start[w] > t { cold_ms } else { 0.0 };
            compute_cost += billing::function_compute_charge(platform, run.memory_mb, Nanos::from_millis_f64(billed));
            idle[w].push(end[w]);
        }
    }
    let invocations = platform.price_per_request * (run.requests * p as u64) as f64;
    let (messages, storage) = (counts.queue_cost(&q), counts.object_cost(&channels.object.prices()));
    Ok(FsdRow {
        kind: "functions".into(),
        parallelism: p,
        channel: if p == 1 { "none".into() } else { run.channel.name().into() },
        mode: "simulated".into(),
        requests: run.requests,
        memory_mb: run.memory_mb,
        latency_ms: Latency::of(&mut latencies),
        cost_per_1000: CostParts::per_thousand(compute_cost, invocations, messages, storage, run.requests),
        counts,
        cold_starts,
    })
}

/// A VM of type `vm` serving the whole model for the window the requests span at `rate_per_s` (kept on,
/// billed on demand), one request at a time on one vCPU.
pub fn vm_baseline(model: &FsdModel, vm: &VmType, run: &FsdRun) -> FsdRow {
    let window_h = run.requests as f64 / run.rate_per_s.max(1e-9) / 3600.0;
    let compute = vm.price_on_demand_per_h * window_h;
    FsdRow {
        kind: format!("vm {}", vm.name),
        parallelism: 1,
        channel: "none".into(),
        mode: "simulated".into(),
        requests: run.requests,
        memory_mb: 0,
        latency_ms: Latency { p50: model.whole_ms, p99: model.whole_ms, mean: model.whole_ms },
        cost_per_1000: CostParts::per_thousand(compute, 0.0, 0.0, 0.0, run.requests),
        counts: ChannelCounts::default(),
        cold_starts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(value: f64) -> DistSpec {
        DistSpec::Fixed { value }
    }

    fn channels() -> ChannelsFile {
        ChannelsFile {
            queue: QueueSpec {
                publish_price_per_million: 0.50,
                request_price_per_million: 0.40,
                billing_chunk_bytes: 65536,
                max_message_bytes: 262144,
                receive_batch: 10,
                publish_ms: fixed(5.0),
                delivery_ms: fixed(10.0),
                bandwidth_mb_per_s: 1e12,
            },
            object: ObjectSpec {
                put_price_per_thousand: 0.005,
                get_price_per_thousand: 0.0004,
                max_object_bytes: 5_000_000_000,
                put_ms: fixed(30.0),
                get_ms: fixed(25.0),
                poll_interval_ms: 20.0,
                bandwidth_mb_per_s: 1e12,
            },
        }
    }

    fn platform() -> FunctionPlatform {
        crate::Scenario::load(Path::new("../scenarios/conv_static.toml")).unwrap().catalog.functions.clone()
    }

    // Two layers, 4 -> 4 -> 2, 10 ms for the whole model on one vCPU: 24 multiply-adds, so a worker's half
    // of layer 1 (8) takes 10/3 ms and its half of layer 2 (4) 5/3 ms.
    fn model() -> FsdModel {
        FsdModel { layers: vec![Layer { inputs: 4, outputs: 4 }, Layer { inputs: 4, outputs: 2 }], whole_ms: 10.0 }
    }

    fn run(channel: Channel, requests: u64) -> FsdRun {
        FsdRun { parallelism: 2, channel, memory_mb: 1769, requests, rate_per_s: 1.0, seed: 1 }
    }

    #[test]
    fn one_request_over_the_queue_by_hand() {
        let f = platform();
        let row = simulate_fsd(&model(), &channels(), &f, &run(Channel::Queue, 1)).unwrap();
        // Cold start, layer 1 (10/3), publish 5 + delivery 10, layer 2 (5/3), publish 5 + delivery 10.
        let want = f.cold_start_mean.as_millis_f64() + 10.0 / 3.0 + 15.0 + 5.0 / 3.0 + 15.0;
        assert!((row.latency_ms.p50 - want).abs() < 1e-6, "{} against {want}", row.latency_ms.p50);
        // Layer 1: two publishes, each read by the other worker; layer 2: worker 1's slice to worker 0.
        let c = row.counts;
        assert_eq!((c.publishes, c.publish_billed, c.deliveries), (3, 3, 3));
        assert_eq!((c.receives, c.receive_billed, c.deletes), (3, 3, 3));
        // 3 × $0.50/M + (3 + 3) × $0.40/M = $0.0000039 a request, $0.0039 per 1,000.
        assert!((row.cost_per_1000.messages - 0.0039).abs() < 1e-12, "{:?}", row.cost_per_1000);
        assert_eq!(row.cost_per_1000.storage, 0.0);
        assert_eq!(row.cold_starts, 2);
        // Two invocations at $0.20 per million.
        assert!((row.cost_per_1000.invocations - 1000.0 * 2.0 * f.price_per_request).abs() < 1e-12);
    }

    #[test]
    fn one_request_through_object_storage_by_hand() {
        let f = platform();
        let row = simulate_fsd(&model(), &channels(), &f, &run(Channel::Object, 1)).unwrap();
        // Each exchange: the PUT takes 30 ms, the receiver polls at +0 and +20 (two misses), finds it at +40,
        // and its GET takes 25 ms: 65 ms.
        let want = f.cold_start_mean.as_millis_f64() + 10.0 / 3.0 + 65.0 + 5.0 / 3.0 + 65.0;
        assert!((row.latency_ms.p50 - want).abs() < 1e-6, "{} against {want}", row.latency_ms.p50);
        let c = row.counts;
        // Three objects (two in the all-gather, one to worker 0), each found on the third poll.
        assert_eq!((c.puts, c.gets, c.get_misses), (3, 3, 6));
        // 3 × $0.005/1000 + 9 × $0.0004/1000 = $0.0000186 a request.
        assert!((row.cost_per_1000.storage - 0.0186).abs() < 1e-12, "{:?}", row.cost_per_1000);
        assert_eq!(row.cost_per_1000.messages, 0.0);
    }

    #[test]
    fn warm_workers_are_reused_and_the_run_repeats_exactly() {
        let f = platform();
        let a = simulate_fsd(&model(), &channels(), &f, &run(Channel::Queue, 50)).unwrap();
        // One request a second on average, a 10-minute keep-alive: the two workers start cold once (a
        // request overlapping another, rare at 50 ms a request, would add a pair).
        assert!(a.cold_starts >= 2 && a.cold_starts <= 6, "{}", a.cold_starts);
        assert_eq!(a, simulate_fsd(&model(), &channels(), &f, &run(Channel::Queue, 50)).unwrap());
    }

    #[test]
    fn impossible_runs_are_refused_with_the_reason() {
        let f = platform();
        let wide = FsdRun { parallelism: 3, ..run(Channel::Queue, 1) };
        let e = simulate_fsd(&model(), &channels(), &f, &wide).unwrap_err().to_string();
        assert!(e.contains("exceeds layer 2's 2 outputs"), "{e}");
        let big = FsdModel { layers: vec![Layer { inputs: 50_000, outputs: 50_000 }], whole_ms: 1.0 };
        let e = simulate_fsd(&big, &channels(), &f, &FsdRun { parallelism: 1, ..run(Channel::Queue, 1) })
            .unwrap_err()
            .to_string();
        assert!(e.contains("too little"), "{e}");
    }

    #[test]
    fn the_shipped_channels_file_loads() {
        let c = ChannelsFile::load(Path::new("../data/fsd_channels.toml")).unwrap();
        assert_eq!(c.queue.max_message_bytes, 262144);
        assert_eq!(c.object.put_price_per_thousand, 0.005);
    }
}
