//! The two channels a worker sends and gathers slices through, each counting its calls by the rules of
//! `hyscale_policies::fsd` and timing them (the figures `hyscale fsd --live --profile-out` writes).
//!
//! - **Queue** (Redis lists on loopback, standing in for SNS + one SQS queue per worker): a slice is cut into
//!   messages of at most `max_message_bytes`, each pushed to every receiver's list (`fsd:REQUEST:LAYER:TO`);
//!   one publish is counted per message. A receiver's receive call is a blocking pop of one message (as a
//!   long poll) followed by a pop of up to `receive_batch - 1` more, billed by the bytes it returned.
//! - **Object** (an S3-compatible store through the S3 API): a slice is one object
//!   (`fsd/REQUEST/LAYER/FROM`); a receiver GETs each sender's object, every `poll_ms` until it exists
//!   (a 404 counts as a miss, billed like a GET).
//!
//! Every message carries its sender, its part number, the number of parts and the time it was sent, so a
//! duplicate is ignored, a lost one is a timeout naming the sender, and delivery latency is measured.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyscale_policies::fsd::{ChannelCounts, QueuePrices, billed_requests, message_sizes};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use super::FsdError;

/// How a worker reaches its channel (passed to it as JSON in `HYSCALE_FSD_CHANNEL`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelSetup {
    /// Redis at `url` (`redis://127.0.0.1:PORT`), with the queue service's limits.
    Queue {
        /// The broker.
        url: String,
        /// Limits and prices (prices unused here).
        limits: QueuePrices,
    },
    /// An S3-compatible store.
    Object {
        /// The endpoint (`http://127.0.0.1:PORT`).
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// The region the store is asked for.
        region: String,
        /// Between polls for an object not there yet, ms.
        poll_ms: f64,
    },
}

/// Latency samples of channel operations, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelTimes {
    /// Publish calls (one per message and receiver push).
    pub publish_ms: Vec<f64>,
    /// From a message's sending to its receipt.
    pub delivery_ms: Vec<f64>,
    /// PUTs.
    pub put_ms: Vec<f64>,
    /// GETs (found or not).
    pub get_ms: Vec<f64>,
}

impl ChannelTimes {
    /// Adds another worker's samples.
    pub fn add(&mut self, o: &ChannelTimes) {
        self.publish_ms.extend(&o.publish_ms);
        self.delivery_ms.extend(&o.delivery_ms);
        self.put_ms.extend(&o.put_ms);
        self.get_ms.extend(&o.get_ms);
    }
}

/// What a worker's channel calls came to: their count (priced by the shared rules) and their latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    /// Calls, by kind.
    pub counts: ChannelCounts,
    /// Latencies.
    pub times: ChannelTimes,
}

/// A connected channel.
pub enum Channel {
    /// Redis lists.
    Queue {
        /// The connection.
        conn: redis::aio::MultiplexedConnection,
        /// Limits.
        limits: QueuePrices,
    },
    /// S3.
    Object {
        /// The store.
        store: object_store::aws::AmazonS3,
        /// Poll interval.
        poll: Duration,
    },
}

const HEADER: usize = 20;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn queue_key(request: &str, layer: usize, to: usize) -> String {
    format!("fsd:{request}:{layer}:{to}")
}

fn object_key(request: &str, layer: usize, from: usize) -> ObjectPath {
    ObjectPath::from(format!("fsd/{request}/{layer}/{from}"))
}

impl Channel {
    /// Connects (a worker does this at its initialisation: part of its cold start).
    pub async fn connect(setup: &ChannelSetup) -> Result<Channel, FsdError> {
        match setup {
            ChannelSetup::Queue { url, limits } => {
                let client = redis::Client::open(url.as_str()).map_err(|e| FsdError::Channel(format!("{url}: {e}")))?;
                // A receive is a blocking pop that may wait for the request's whole deadline: no response
                // timeout of the client's own (the pop carries its own).
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(None);
                let conn = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| FsdError::Channel(format!("{url}: no answer within 5 s")))?
                .map_err(|e| FsdError::Channel(format!("{url}: {e}")))?;
                Ok(Channel::Queue { conn, limits: *limits })
            }
            ChannelSetup::Object { endpoint, bucket, region, poll_ms } => {
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id("testing")
                    .with_secret_access_key("testing")
                    .with_retry(object_store::RetryConfig { max_retries: 2, ..Default::default() })
                    .build()
                    .map_err(|e| FsdError::Channel(format!("{endpoint}: {e}")))?;
                Ok(Channel::Object { store, poll: Duration::from_secs_f64(poll_ms.max(1.0) / 1e3) })
            }
        }
    }

    /// Sends worker `from`'s slice of layer `layer` to `to`.
    pub async fn send(
        &mut self,
        request: &str,
        layer: usize,
        from: usize,
        to: &[usize],
        slice: &[f32],
        meter: &mut Meter,
    ) -> Result<(), FsdError> {
        let Meter { counts, times } = meter;
        let payload = f32_bytes(slice);
        match self {
            Channel::Queue { conn, limits } => {
                let sizes: Vec<u64> = message_sizes(payload.len() as u64, limits.max_message_bytes).collect();
                let parts = sizes.len() as u32;
                let mut offset = 0usize;
                for (k, &size) in sizes.iter().enumerate() {
                    let chunk = &payload[offset..offset + size as usize];
                    offset += size as usize;
                    let mut message = Vec::with_capacity(HEADER + chunk.len());
                    message.extend_from_slice(&(from as u32).to_le_bytes());
                    message.extend_from_slice(&(k as u32).to_le_bytes());
                    message.extend_from_slice(&parts.to_le_bytes());
                    message.extend_from_slice(&now_us().to_le_bytes());
                    message.extend_from_slice(chunk);
                    counts.publish(limits, size, to.len() as u64);
                    let started = Instant::now();
                    let mut pipe = redis::pipe();
                    for &j in to {
                        pipe.cmd("RPUSH").arg(queue_key(request, layer, j)).arg(&message).ignore();
                    }
                    pipe.query_async::<()>(conn).await.map_err(|e| FsdError::Channel(format!("publish: {e}")))?;
                    times.publish_ms.push(started.elapsed().as_secs_f64() * 1e3);
                }
                Ok(())
            }
            Channel::Object { store, .. } => {
                let started = Instant::now();
                store
                    .put(&object_key(request, layer, from), payload.into())
                    .await
                    .map_err(|e| FsdError::Channel(format!("PUT: {e}")))?;
                counts.puts += 1;
                times.put_ms.push(started.elapsed().as_secs_f64() * 1e3);
                Ok(())
            }
        }
    }

    /// Gathers the slices of layer `layer` sent to worker `me` by `senders`, in the senders' order, by
    /// `deadline`.
    pub async fn gather(
        &mut self,
        request: &str,
        layer: usize,
        me: usize,
        senders: &[usize],
        deadline: Instant,
        meter: &mut Meter,
    ) -> Result<Vec<Vec<f32>>, FsdError> {
        let Meter { counts, times } = meter;
        let missing =
            |have: &[bool]| -> Vec<usize> { senders.iter().zip(have).filter(|(_, h)| !**h).map(|(s, _)| *s).collect() };
        let timeout = |have: &[bool]| {
            FsdError::Timeout(format!(
                "worker {me}, layer {}: no slice from worker(s) {:?} in time",
                layer + 1,
                missing(have)
            ))
        };
        match self {
            Channel::Queue { conn, limits } => {
                let key = queue_key(request, layer, me);
                // Per sender: its parts as they come.
                let mut parts: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); senders.len()];
                let done = |parts: &[Vec<Option<Vec<u8>>>]| {
                    parts.iter().map(|p| !p.is_empty() && p.iter().all(Option::is_some)).collect::<Vec<bool>>()
                };
                while done(&parts).contains(&false) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(timeout(&done(&parts)));
                    }
                    // A long poll: one message, waiting up to the deadline; then what else is there, up to the
                    // batch size.
                    let first: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
                        .arg(&key)
                        .arg(left.as_secs_f64().max(0.01))
                        .query_async(conn)
                        .await
                        .map_err(|e| FsdError::Channel(format!("receive: {e}")))?;
                    let Some((_, first)) = first else { return Err(timeout(&done(&parts))) };
                    let mut batch = vec![first];
                    if limits.receive_batch > 1 {
                        let more: Option<Vec<Vec<u8>>> = redis::cmd("LPOP")
                            .arg(&key)
                            .arg(limits.receive_batch - 1)
                            .query_async(conn)
                            .await
                            .map_err(|e| FsdError::Channel(format!("receive: {e}")))?;
                        batch.extend(more.unwrap_or_default());
                    }
                    let bytes: u64 = batch.iter().map(|m| m.len().saturating_sub(HEADER) as u64).sum();
                    counts.receives += 1;
                    counts.receive_billed += billed_requests(bytes, limits.billing_chunk_bytes);
                    counts.deletes += 1;
                    let received = now_us();
                    for m in batch {
                        if m.len() < HEADER {
                            return Err(FsdError::Channel(format!("a message of {} bytes has no header", m.len())));
                        }
                        let word = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]) as usize;
                        let (from, k, n) = (word(0), word(4), word(8));
                        let sent = u64::from_le_bytes(m[12..20].try_into().unwrap_or([0; 8]));
                        let Some(s) = senders.iter().position(|&x| x == from) else { continue };
                        if parts[s].is_empty() {
                            parts[s] = vec![None; n.max(1)];
                        }
                        // A duplicate (or a part out of range) is ignored.
                        if let Some(slot) = parts[s].get_mut(k).filter(|slot| slot.is_none()) {
                            times.delivery_ms.push(received.saturating_sub(sent) as f64 / 1e3);
                            *slot = Some(m[HEADER..].to_vec());
                        }
                    }
                }
                Ok(parts
                    .into_iter()
                    .map(|p| bytes_f32(&p.into_iter().flatten().flatten().collect::<Vec<u8>>()))
                    .collect())
            }
            Channel::Object { store, poll } => {
                let mut got: Vec<Option<Vec<f32>>> = vec![None; senders.len()];
                loop {
                    for (s, &from) in senders.iter().enumerate() {
                        if got[s].is_some() {
                            continue;
                        }
                        let started = Instant::now();
                        let answer = store.get(&object_key(request, layer, from)).await;
                        let found = match answer {
                            Ok(r) => Some(r.bytes().await.map_err(|e| FsdError::Channel(format!("GET: {e}")))?),
                            Err(object_store::Error::NotFound { .. }) => None,
                            Err(e) => return Err(FsdError::Channel(format!("GET: {e}"))),
                        };
                        times.get_ms.push(started.elapsed().as_secs_f64() * 1e3);
                        match found {
                            Some(bytes) => {
                                counts.gets += 1;
                                got[s] = Some(bytes_f32(&bytes));
                            }
                            None => counts.get_misses += 1,
                        }
                    }
                    if got.iter().all(Option::is_some) {
                        return Ok(got.into_iter().flatten().collect());
                    }
                    if Instant::now() + *poll > deadline {
                        return Err(timeout(&got.iter().map(Option::is_some).collect::<Vec<_>>()));
                    }
                    tokio::time::sleep(*poll).await;
                }
            }
        }
    }

    /// Removes what a request left on the channel (lists of duplicates, objects): free on both services.
    pub async fn clean(&mut self, request: &str, layers: usize, workers: usize) {
        match self {
            Channel::Queue { conn, .. } => {
                let mut pipe = redis::pipe();
                for l in 0..layers {
                    for w in 0..workers {
                        pipe.cmd("DEL").arg(queue_key(request, l, w)).ignore();
                    }
                }
                if let Err(e) = pipe.query_async::<()>(conn).await {
                    tracing::warn!(error = %e, "cleaning the request's lists");
                }
            }
            Channel::Object { store, .. } => {
                for l in 0..layers {
                    for w in 0..workers {
                        let _ = store.delete(&object_key(request, l, w)).await;
                    }
                }
            }
        }
    }
}
