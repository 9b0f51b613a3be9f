//! FSD-Inference's channels: how an exchange of activations between function workers is counted and
//! priced. Written once: the simulator's model (`hyscale_sim::fsd`) and the live channels (`hyscale_backend::fsd`)
//! count their calls with these rules, so the two tables compare like with like.
//!
//! - **Queue** (SNS topic fanned out to one SQS queue per worker): a payload over `max_message_bytes` is sent
//!   as several messages ([`messages_for`]); each publish is billed one SNS request per 64 KB chunk; deliveries
//!   to the queues are free (SNS pricing page); a receiver takes its messages in ReceiveMessage calls of at
//!   most `receive_batch` messages, each billed one SQS request per 64 KB chunk of what it returned, and deletes
//!   them with one DeleteMessageBatch per receive (one request).
//! - **Object** (S3 Standard): one PUT per object; a receiver GETs it, polling until it exists: every GET is
//!   billed, found or not (`get_misses` counts the 404s).
//!
//! Prices and limits come from `data/fsd_channels.toml`, each with its source.

use serde::{Deserialize, Serialize};

/// The queue channel's prices and limits.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct QueuePrices {
    /// SNS publishes, $ per million billed requests.
    pub publish_price_per_million: f64,
    /// SQS requests, $ per million billed requests.
    pub request_price_per_million: f64,
    /// Bytes billed as one request (64 KB).
    pub billing_chunk_bytes: u64,
    /// Largest message, bytes (256 KiB).
    pub max_message_bytes: u64,
    /// Most messages one ReceiveMessage returns (10).
    pub receive_batch: u32,
}

/// The object channel's prices and limits.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct ObjectPrices {
    /// PUT requests, $ per thousand.
    pub put_price_per_thousand: f64,
    /// GET requests, $ per thousand.
    pub get_price_per_thousand: f64,
    /// Largest object one PUT writes, bytes.
    pub max_object_bytes: u64,
}

/// Messages a payload of `bytes` is sent as: at least one, none over `max`.
pub fn messages_for(bytes: u64, max: u64) -> u64 {
    bytes.div_ceil(max.max(1)).max(1)
}

/// Requests one API call carrying `bytes` is billed as: one per started chunk, at least one.
pub fn billed_requests(bytes: u64, chunk: u64) -> u64 {
    bytes.div_ceil(chunk.max(1)).max(1)
}

/// The sizes of the messages a payload of `bytes` is cut into (all full but the last).
pub fn message_sizes(bytes: u64, max: u64) -> impl Iterator<Item = u64> {
    let n = messages_for(bytes, max);
    let max = max.max(1);
    (0..n).map(move |k| if k + 1 < n { max } else { bytes - max * (n - 1) })
}

/// Calls made on the channels (and what they are billed as), summed over requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCounts {
    /// SNS Publish calls (one per message).
    pub publishes: u64,
    /// What the publishes are billed as (64 KB chunks).
    pub publish_billed: u64,
    /// Messages delivered to receivers' queues (free).
    pub deliveries: u64,
    /// SQS ReceiveMessage calls that returned messages.
    pub receives: u64,
    /// What the receives are billed as (64 KB chunks).
    pub receive_billed: u64,
    /// SQS DeleteMessageBatch calls.
    pub deletes: u64,
    /// S3 PUTs.
    pub puts: u64,
    /// S3 GETs that found their object.
    pub gets: u64,
    /// S3 GETs of an object not there yet (404, billed as GETs).
    pub get_misses: u64,
}

impl ChannelCounts {
    /// Adds another count.
    pub fn add(&mut self, o: &ChannelCounts) {
        self.publishes += o.publishes;
        self.publish_billed += o.publish_billed;
        self.deliveries += o.deliveries;
        self.receives += o.receives;
        self.receive_billed += o.receive_billed;
        self.deletes += o.deletes;
        self.puts += o.puts;
        self.gets += o.gets;
        self.get_misses += o.get_misses;
    }

    /// Counts one publish of a payload of `bytes` (as many messages as it needs), delivered to `receivers`.
    pub fn publish(&mut self, q: &QueuePrices, bytes: u64, receivers: u64) {
        for size in message_sizes(bytes, q.max_message_bytes) {
            self.publishes += 1;
            self.publish_billed += billed_requests(size, q.billing_chunk_bytes);
            self.deliveries += receivers;
        }
    }

    /// Counts one receiver taking messages of these sizes from its queue, in arrival order, `receive_batch`
    /// at a time, each receive followed by one batch delete.
    pub fn receive(&mut self, q: &QueuePrices, sizes: &[u64]) {
        for call in sizes.chunks(q.receive_batch.max(1) as usize) {
            self.receives += 1;
            self.receive_billed += billed_requests(call.iter().sum(), q.billing_chunk_bytes);
            self.deletes += 1;
        }
    }

    /// Messages' cost, $ (SNS publishes and SQS requests).
    pub fn queue_cost(&self, q: &QueuePrices) -> f64 {
        self.publish_billed as f64 * q.publish_price_per_million / 1e6
            + (self.receive_billed + self.deletes) as f64 * q.request_price_per_million / 1e6
    }

    /// Storage requests' cost, $ (S3 PUTs and GETs, found or not).
    pub fn object_cost(&self, o: &ObjectPrices) -> f64 {
        self.puts as f64 * o.put_price_per_thousand / 1e3
            + (self.gets + self.get_misses) as f64 * o.get_price_per_thousand / 1e3
    }
}

/// How a layer's `outputs` rows are split over `workers`: worker `i` computes rows `start..start + len`;
/// the first `outputs % workers` workers take one row more. The simulator and the live partitioner use the
/// same split, so a worker's work and its slice's size are the same in both.
pub fn split_rows(outputs: usize, workers: usize) -> Vec<(usize, usize)> {
    let workers = workers.max(1);
    let (base, extra) = (outputs / workers, outputs % workers);
    let mut start = 0;
    (0..workers)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let slice = (start, len);
            start += len;
            slice
        })
        .collect()
}

/// Latency summary, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The summary of `samples` (sorted here).
    pub fn of(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Latency { p50: at(0.5), p99: at(0.99), mean: samples.iter().sum::<f64>() / samples.len() as f64 }
    }
}

/// Cost per 1,000 requests, $, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostParts {
    /// Function duration (GB-s) or VM time.
    pub compute: f64,
    /// Function invocation fees.
    pub invocations: f64,
    /// Queue messages (SNS publishes, SQS requests).
    pub messages: f64,
    /// Storage requests (S3 PUTs and GETs).
    pub storage: f64,
    /// The sum.
    pub total: f64,
}

impl CostParts {
    /// Per 1,000 requests from totals over `requests`.
    pub fn per_thousand(compute: f64, invocations: f64, messages: f64, storage: f64, requests: u64) -> CostParts {
        let k = 1000.0 / requests.max(1) as f64;
        let (compute, invocations, messages, storage) = (compute * k, invocations * k, messages * k, storage * k);
        CostParts { compute, invocations, messages, storage, total: compute + invocations + messages + storage }
    }
}

/// One row of the FSD table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsdRow {
    /// What served: `functions` (P workers) or `vm`.
    pub kind: String,
    /// Workers per request (1: one function holding the whole model).
    pub parallelism: usize,
    /// `queue`, `object`, or `none` (one worker, or the VM).
    pub channel: String,
    /// `simulated` or `live`.
    pub mode: String,
    /// Requests served.
    pub requests: u64,
    /// Each worker's memory, MB (0 for the VM).
    pub memory_mb: u32,
    /// Latency of a request, ms.
    pub latency_ms: Latency,
    /// Cost per 1,000 requests.
    pub cost_per_1000: CostParts,
    /// Channel calls over all requests.
    pub counts: ChannelCounts,
    /// Worker cold starts.
    pub cold_starts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: QueuePrices = QueuePrices {
        publish_price_per_million: 0.50,
        request_price_per_million: 0.40,
        billing_chunk_bytes: 65536,
        max_message_bytes: 262144,
        receive_batch: 10,
    };
    const S3: ObjectPrices =
        ObjectPrices { put_price_per_thousand: 0.005, get_price_per_thousand: 0.0004, max_object_bytes: 5_000_000_000 };

    #[test]
    fn payloads_are_cut_at_256_kib_and_billed_per_64_kb_chunk() {
        assert_eq!(messages_for(0, 262144), 1);
        assert_eq!(messages_for(262144, 262144), 1);
        assert_eq!(messages_for(262145, 262144), 2);
        assert_eq!(message_sizes(600_000, 262144).collect::<Vec<_>>(), [262144, 262144, 75712]);
        // A 256 KiB publish is 4 requests (the SNS pricing page's own example); 1 byte is 1.
        assert_eq!(billed_requests(262144, 65536), 4);
        assert_eq!(billed_requests(1, 65536), 1);
    }

    #[test]
    fn an_all_gather_over_the_queue_is_counted_and_priced_by_hand() {
        // 4 workers each publish a 100 KB slice to the 3 others; each receives 3 messages in one call.
        let mut c = ChannelCounts::default();
        for _ in 0..4 {
            c.publish(&Q, 100_000, 3);
        }
        for _ in 0..4 {
            c.receive(&Q, &[100_000; 3]);
        }
        assert_eq!((c.publishes, c.publish_billed, c.deliveries), (4, 8, 12));
        // 300,000 bytes in one receive: 5 chunks of 64 KB; one delete each.
        assert_eq!((c.receives, c.receive_billed, c.deletes), (4, 20, 4));
        // 8 × $0.50/M + (20 + 4) × $0.40/M = $0.000004 + $0.0000096.
        assert!((c.queue_cost(&Q) - 0.0000136).abs() < 1e-15);
        // The same exchange through S3: 4 PUTs, 12 GETs, 5 of them misses while polling.
        let s = ChannelCounts { puts: 4, gets: 12, get_misses: 5, ..Default::default() };
        // 4 × $0.005/1000 + 17 × $0.0004/1000 = $0.00002 + $0.0000068.
        assert!((s.object_cost(&S3) - 0.0000268).abs() < 1e-15);
    }

    #[test]
    fn rows_are_split_evenly_with_the_remainder_first() {
        assert_eq!(split_rows(10, 4), [(0, 3), (3, 3), (6, 2), (8, 2)]);
        assert_eq!(split_rows(128, 1), [(0, 128)]);
        assert_eq!(split_rows(8, 8).iter().map(|s| s.1).sum::<usize>(), 8);
    }
}
