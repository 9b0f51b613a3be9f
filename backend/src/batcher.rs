//! Dynamic batching of one model's requests, on tokio.
//!
//! Requests join a bounded queue. One executor (the model's [`Session`]) takes batches from the head of the
//! queue as [`BatchRule::decide`] says: as soon as `max_batch` requests wait, or once the **oldest** has
//! waited `max_wait` — or at once when the rule has idle start and the request found the executor idle. That
//! rule is the simulator's (one definition, in `hyscale-policies`), so a batch forms
//! live exactly when it would in simulation; this module only feeds it the queue length, the oldest request's
//! arrival and the wall-clock time.
//!
//! Batches run on the model's own executor thread, one after another (inference is CPU work; the async
//! runtime keeps accepting requests meanwhile, and the next batch is taken the moment one ends). Requests' inputs are concatenated along the batch dimension, shaped as the model's
//! [`BatchDim`] requires:
//! - dynamic batch: one engine run over all rows;
//! - fixed batch `b`: runs of exactly `b` rows, the last padded with zeros (so a model fixed to batch 1 runs
//!   the requests one by one);
//! - no common batch dimension: each request runs alone, unchanged.
//!
//! Requests whose non-batch dimensions differ (a model with other dynamic dimensions) run in separate engine
//! runs of the same batch. Each request gets its own rows of every output back through a oneshot channel.
//! A full queue refuses at once with [`BatchError::QueueFull`]; nothing waits for room.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hyscale_policies::{BatchDecision, BatchRule, Clock, Nanos};
use tokio::sync::oneshot;

use crate::WallClock;
use crate::engine::{BatchDim, EngineError, ModelMetadata, Session, Tensor};

/// Settings of one model's batcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// When a batch starts (the shared rule).
    pub rule: BatchRule,
    /// Most requests waiting in the queue (not counting the batch running), places reserved for admitted
    /// requests included ([`Batcher::reserve`]); more are refused.
    pub queue_capacity: usize,
}

impl BatcherConfig {
    /// Batches of up to `max_batch` requests, the oldest waiting at most `max_wait`, at most `queue_capacity`
    /// requests queued.
    pub fn new(max_batch: u32, max_wait: Nanos, queue_capacity: usize) -> BatcherConfig {
        BatcherConfig { rule: BatchRule::new(max_batch, max_wait), queue_capacity }
    }

    /// The same with the rule's idle start on or off (`BatchRule::idle_start`).
    pub fn with_idle_start(self, idle_start: bool) -> BatcherConfig {
        BatcherConfig { rule: self.rule.with_idle_start(idle_start), ..self }
    }
}

/// Why a request got no result.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue was full when the request arrived.
    #[error("model {model}: queue full ({capacity} requests waiting)")]
    QueueFull {
        /// The model.
        model: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The batcher has stopped (its session failed, or it was shut down).
    #[error("model {model}: batcher stopped")]
    Stopped {
        /// The model.
        model: String,
    },
    /// The request was malformed, or the engine failed on its batch.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What happened to one batch, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRecord {
    /// Requests in the batch.
    pub requests: u32,
    /// Rows over all requests (a request may carry several).
    pub rows: usize,
    /// Engine runs it took (more than one with a fixed batch size, or mixed shapes).
    pub engine_runs: usize,
    /// How long each request waited in the queue, in queue order: the first is the oldest's wait.
    pub queue_waits: Vec<Nanos>,
    /// Time from the batch's start to its results (inference plus concatenation and splitting).
    pub service: Nanos,
    /// Requests still queued when the batch started.
    pub queue_depth: usize,
    /// Whether every request of the batch got a result.
    pub ok: bool,
}

/// Receives per-batch figures (batch size, queue waits, service time) and refusals; the server turns them
/// into Prometheus metrics. Called on the batcher's task: keep it quick.
pub trait BatchObserver: Send + Sync + 'static {
    /// A batch has finished.
    fn on_batch(&self, model: &str, record: &BatchRecord);
    /// A request was refused because the queue was full.
    fn on_queue_full(&self, _model: &str) {}
}

/// An observer that ignores everything.
impl BatchObserver for () {
    fn on_batch(&self, _model: &str, _record: &BatchRecord) {}
}

type Reply = oneshot::Sender<Result<Vec<Tensor>, BatchError>>;

struct Pending {
    inputs: Vec<Tensor>,
    enqueued: Nanos,
    reply: Reply,
}

struct Queue {
    pending: VecDeque<Pending>,
    /// Places held in the queue for requests being decoded ([`Batcher::reserve`]): they count against
    /// `queue_capacity` as if queued, so a burst cannot have more requests decoding at once than the queue
    /// would hold.
    reserved: usize,
    closed: bool,
    /// The batch rule in force (it can change while the batcher runs, as a policy's `SetBatching` asks).
    rule: BatchRule,
}

impl Queue {
    /// Room left of `capacity`: less the requests waiting and the places held (the one rule `room`,
    /// `reserve` and a request without a place follow).
    fn room(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.pending.len() + self.reserved)
    }
}

struct Shared {
    model: String,
    metadata: ModelMetadata,
    batch_dim: BatchDim,
    config: BatcherConfig,
    clock: WallClock,
    queue: Mutex<Queue>,
    /// Wakes the executor thread: a request queued, the rule changed, or closed.
    wake: Condvar,
    observer: Arc<dyn BatchObserver>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent (pushes and pops only).
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.wake.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_timeout<'a>(&self, queue: MutexGuard<'a, Queue>, d: Duration) -> MutexGuard<'a, Queue> {
        match self.wake.wait_timeout(queue, d) {
            Ok((q, _)) => q,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

/// Stops the batcher's task when the last [`Batcher`] handle is dropped.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A place held in one batcher's queue ([`Batcher::reserve`]); given back when dropped unused.
pub struct Place {
    shared: Arc<Shared>,
    held: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.held {
            self.shared.lock().reserved -= 1;
        }
    }
}

/// A handle to one model's batcher; cheap to clone. The batcher stops when the last handle is dropped
/// (requests still queued then get [`BatchError::Stopped`]).
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl Batcher {
    /// Starts the batcher's executor thread for `session` (no runtime needed; requesters await their answers
    /// on whatever tokio runtime they run on).
    pub fn spawn(session: Session, config: BatcherConfig, observer: Arc<dyn BatchObserver>) -> Batcher {
        let metadata = session.metadata().clone();
        let shared = Arc::new(Shared {
            model: session.name().to_string(),
            batch_dim: metadata.batch_dim(),
            metadata,
            config,
            clock: WallClock::start(),
            queue: Mutex::new(Queue { pending: VecDeque::new(), reserved: 0, closed: false, rule: config.rule }),
            wake: Condvar::new(),
            observer,
        });
        let executor = Arc::clone(&shared);
        let spawned =
            std::thread::Builder::new().name(format!("batcher-{}", shared.model)).spawn(move || run(executor, session));
        if let Err(e) = spawned {
            // No thread, no executor: every request is answered `Stopped`.
            tracing::error!(model = %shared.model, "cannot start the batcher's thread: {e}");
            shared.close();
        }
        Batcher { _closer: Arc::new(Closer(Arc::clone(&shared))), shared }
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.shared.model
    }

    /// The model's declared inputs and outputs.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.shared.metadata
    }

    /// The settings, with the batch rule in force now.
    pub fn config(&self) -> BatcherConfig {
        BatcherConfig { rule: self.shared.lock().rule, ..self.shared.config }
    }

    /// Changes the batch rule from the next decision on (the batch running, if any, is not affected); the
    /// waiting requests are looked at again at once under the new rule.
    pub fn set_rule(&self, rule: BatchRule) {
        self.shared.lock().rule = rule;
        self.shared.wake.notify_one();
    }

    /// Requests waiting now (not counting the batch running).
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Room left in the queue: its capacity less the requests waiting and the places held.
    pub fn room(&self) -> usize {
        self.shared.lock().room(self.shared.config.queue_capacity)
    }

    /// Holds a place in the queue for a request about to be decoded, as a server does once its body is read:
    /// `None`, counted as a refusal, when the queue and the places already held fill its capacity. The place
    /// is given back when the [`Place`] is dropped unused, or taken by [`Self::infer_in`].
    pub fn reserve(&self) -> Option<Place> {
        let mut queue = self.shared.lock();
        if queue.room(self.shared.config.queue_capacity) == 0 {
            drop(queue);
            self.shared.observer.on_queue_full(&self.shared.model);
            return None;
        }
        queue.reserved += 1;
        Some(Place { shared: Arc::clone(&self.shared), held: true })
    }

    /// Runs one request: one tensor per model input, in the model's order, each with the same number of rows
    /// in its first dimension (for a model with a batch dimension). Returns one tensor per output, holding this
    /// request's rows. Malformed inputs are refused before queueing; so is a request that finds the queue
    /// full ([`BatchError::QueueFull`]).
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BatchError> {
        self.infer_in(None, inputs).await
    }

    /// As [`Self::infer`], in `place` when the request holds one in this queue already (then never refused
    /// as full).
    pub async fn infer_in(&self, place: Option<Place>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BatchError> {
        // A place held in another batcher's queue is given back now (before this queue's lock is taken): this
        // request waits for room here like any other.
        let place = place.filter(|p| Arc::ptr_eq(&p.shared, &self.shared));
        self.check(&inputs)?;
        let (reply, result) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(self.stopped());
            }
            match place {
                // Its place becomes the queued request (under the same lock: never counted twice or not at all).
                Some(mut place) => {
                    place.held = false;
                    queue.reserved -= 1;
                }
                None if queue.room(self.shared.config.queue_capacity) == 0 => {
                    drop(queue);
                    self.shared.observer.on_queue_full(&self.shared.model);
                    return Err(BatchError::QueueFull {
                        model: self.shared.model.clone(),
                        capacity: self.shared.config.queue_capacity,
                    });
                }
                None => {}
            }
            queue.pending.push_back(Pending { inputs, enqueued: self.shared.clock.now(), reply });
        }
        self.shared.wake.notify_one();
        result.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> BatchError {
        BatchError::Stopped { model: self.shared.model.clone() }
    }

    fn check(&self, inputs: &[Tensor]) -> Result<(), EngineError> {
        let bad = |reason: String| EngineError::BadInput { model: self.shared.model.clone(), reason };
        let declared = &self.shared.metadata.inputs;
        if inputs.len() != declared.len() {
            return Err(bad(format!("{} inputs given, the model takes {}", inputs.len(), declared.len())));
        }
        let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
        for (info, t) in declared.iter().zip(inputs) {
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(bad(format!("input '{}' has {} values for shape {:?}", info.name, t.data.len(), t.shape)));
            }
            // The batch dimension is the batcher's business: any row count fits a dynamic or fixed batch.
            let mut probe = t.shape.clone();
            match (self.shared.batch_dim, probe.first_mut()) {
                (BatchDim::None, _) | (_, None) => {}
                (BatchDim::Dynamic, Some(first)) | (BatchDim::Fixed(_), Some(first)) if *first == 0 => {
                    return Err(bad(format!("input '{}' has no rows", info.name)));
                }
                (BatchDim::Dynamic, Some(_)) => {}
                (BatchDim::Fixed(b), Some(first)) => *first = b,
            }
            if let Some(reason) = info.shape_mismatch(&probe) {
                return Err(bad(reason));
            }
            if self.shared.batch_dim != BatchDim::None && t.rows() != rows {
                return Err(bad(format!(
                    "input '{}' has {} rows, the first input has {rows}: all inputs share the batch dimension",
                    info.name,
                    t.rows()
                )));
            }
        }
        Ok(())
    }
}

/// The batcher's executor thread: decide, wait or run, until closed. One OS thread per model runs its
/// batches back to back: when one ends, the next is decided and taken under the same lock, with no task hop
/// in between (the `spawn_blocking` round trip per batch it replaced left the engine idle for about a third
/// of each CNN batch, measured by `hyscale bench serve`).
fn run(shared: Arc<Shared>, mut session: Session) {
    // The executor has run nothing since this time (for the rule's idle start); the end of each batch.
    let mut free_since = Nanos::ZERO;
    loop {
        let (batch, depth, started) = {
            let mut queue = shared.lock();
            loop {
                if queue.closed {
                    // Requests still queued are answered `Stopped` by dropping their reply senders.
                    queue.pending.clear();
                    return;
                }
                let oldest = queue.pending.front().map_or(Nanos::ZERO, |p| p.enqueued);
                let now = shared.clock.now();
                match queue.rule.decide_at(queue.pending.len(), oldest, now, Some(free_since)) {
                    BatchDecision::Idle => queue = shared.wait(queue),
                    // Woken early by a new request (the batch may now be full) or at the deadline; either
                    // way, decide again.
                    BatchDecision::WaitUntil(t) => {
                        queue = shared.wait_timeout(queue, Duration::from_nanos(t.saturating_sub(now).0))
                    }
                    BatchDecision::Start(n) => {
                        let n = (n as usize).min(queue.pending.len());
                        let batch: Vec<Pending> = queue.pending.drain(..n).collect();
                        break (batch, queue.pending.len(), now);
                    }
                }
            }
        };
        let queue_waits: Vec<Nanos> = batch.iter().map(|p| started.saturating_sub(p.enqueued)).collect();
        let (replies, inputs): (Vec<Reply>, Vec<Vec<Tensor>>) = batch.into_iter().map(|p| (p.reply, p.inputs)).unzip();
        let rows = inputs.iter().map(|i| i.first().map(Tensor::rows).unwrap_or(1)).sum();
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(&mut session, shared.batch_dim, inputs)));
        free_since = shared.clock.now();
        let record = |ok, engine_runs| BatchRecord {
            requests: u32::try_from(replies.len()).unwrap_or(u32::MAX),
            rows,
            engine_runs,
            queue_waits: queue_waits.clone(),
            service: free_since.saturating_sub(started),
            queue_depth: depth,
            ok,
        };
        match ran {
            Ok((results, runs)) => {
                let ok = results.iter().all(Result::is_ok);
                // Metrics first, so that they include a batch by the time its requesters have answers.
                shared.observer.on_batch(&shared.model, &record(ok, runs));
                for (reply, result) in replies.into_iter().zip(results) {
                    // A requester that gave up (dropped its future) is no error.
                    let _ = reply.send(result.map_err(BatchError::from));
                }
            }
            Err(panic) => {
                // The engine panicked: its session cannot be trusted; fail this batch and stop.
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let e = EngineError::Run { model: shared.model.clone(), reason: format!("engine panicked: {why}") };
                shared.observer.on_batch(&shared.model, &record(false, 0));
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Engine(e.clone())));
                }
                shared.close();
            }
        }
    }
}

/// Runs one batch of requests on `session`; returns each request's result and the number of engine runs.
fn execute(
    session: &mut Session,
    batch_dim: BatchDim,
    requests: Vec<Vec<Tensor>>,
) -> (Vec<Result<Vec<Tensor>, EngineError>>, usize) {
    let mut results: Vec<Option<Result<Vec<Tensor>, EngineError>>> = requests.iter().map(|_| None).collect();
    let mut runs = 0;
    match batch_dim {
        BatchDim::None => {
            for (i, inputs) in requests.iter().enumerate() {
                results[i] = Some(session.run(inputs));
                runs += 1;
            }
        }
        BatchDim::Dynamic | BatchDim::Fixed(_) => {
            for group in group_by_trailing_shape(&requests) {
                let members: Vec<&[Tensor]> = group.iter().map(|&i| requests[i].as_slice()).collect();
                let (outcome, group_runs) = run_group(session, batch_dim, &members);
                runs += group_runs;
                match outcome {
                    Ok(per_request) => {
                        for (&i, outputs) in group.iter().zip(per_request) {
                            results[i] = Some(Ok(outputs));
                        }
                    }
                    Err(e) => {
                        for &i in &group {
                            results[i] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(EngineError::Run { model: session.name().to_string(), reason: "request was not run".into() })
            })
        })
        .collect();
    (results, runs)
}

/// Indices of the requests, grouped by the non-batch dimensions of all their inputs, in arrival order.
fn group_by_trailing_shape(requests: &[Vec<Tensor>]) -> Vec<Vec<usize>> {
    let key = |inputs: &[Tensor]| -> Vec<Vec<usize>> {
        inputs.iter().map(|t| t.shape.get(1..).unwrap_or_default().to_vec()).collect()
    };
    let mut groups: Vec<(Vec<Vec<usize>>, Vec<usize>)> = Vec::new();
    for (i, inputs) in requests.iter().enumerate() {
        let k = key(inputs);
        match groups.iter_mut().find(|(gk, _)| *gk == k) {
            Some((_, members)) => members.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Runs requests whose inputs share their non-batch dimensions: rows concatenated, cut into runs the model
/// accepts (all at once, or `b` at a time with zero padding), outputs split back per request.
fn run_group(
    session: &mut Session,
    batch_dim: BatchDim,
    members: &[&[Tensor]],
) -> (Result<Vec<Vec<Tensor>>, EngineError>, usize) {
    let model = session.name().to_string();
    let run_error = |reason: String| EngineError::Run { model: model.clone(), reason };
    let rows_of: Vec<usize> = members.iter().map(|inputs| inputs.first().map(Tensor::rows).unwrap_or(1)).collect();
    let total: usize = rows_of.iter().sum();
    let Some(first) = members.first() else { return (Ok(Vec::new()), 0) };
    // Concatenate each input's rows over the requests.
    let inputs: Vec<(Vec<usize>, usize, Vec<f32>)> = (0..first.len())
        .map(|k| {
            let stacked = Tensor::stack_rows(members, k);
            let trailing = stacked.shape.get(1..).unwrap_or_default().to_vec();
            (trailing.clone(), trailing.iter().product(), stacked.data)
        })
        .collect();
    let chunk = match batch_dim {
        BatchDim::Fixed(b) => b.max(1),
        _ => total.max(1),
    };
    let output_count = session.metadata().outputs.len();
    let mut outputs: Vec<(Vec<usize>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); output_count];
    let mut runs = 0;
    let mut start = 0;
    while start < total {
        let end = (start + chunk).min(total);
        let run_inputs: Vec<Tensor> = inputs
            .iter()
            .map(|(trailing, row_len, data)| {
                let mut part = data[start * row_len..end * row_len].to_vec();
                part.resize(chunk * row_len, 0.0);
                let mut shape = vec![chunk];
                shape.extend_from_slice(trailing);
                Tensor { shape, data: part }
            })
            .collect();
        runs += 1;
        let result = match session.run(&run_inputs) {
            Ok(r) => r,
            Err(e) => return (Err(e), runs),
        };
        for (o, t) in result.into_iter().enumerate() {
            if t.rows() != chunk || t.shape.is_empty() {
                let name = &session.metadata().outputs[o].name;
                return (
                    Err(run_error(format!(
                        "output '{name}' has shape {:?}, not {chunk} rows: it cannot be split into requests",
                        t.shape
                    ))),
                    runs,
                );
            }
            let row_len = t.data.len() / chunk;
            let (shape, data) = &mut outputs[o];
            if shape.is_empty() {
                *shape = t.shape[1..].to_vec();
            }
            // Padding rows are dropped here.
            data.extend_from_slice(&t.data[..(end - start) * row_len]);
        }
        start = end;
    }
    // Split every output back into each request's rows.
    let mut per_request: Vec<Vec<Tensor>> = members.iter().map(|_| Vec::with_capacity(output_count)).collect();
    for (trailing, data) in outputs {
        let whole = Tensor { shape: [&[total][..], &trailing].concat(), data };
        let Some(parts) = whole.split_rows(&rows_of) else {
            return (Err(run_error("an output has fewer rows than the batch's inputs".into())), runs);
        };
        for (r, part) in parts.into_iter().enumerate() {
            per_request[r].push(part);
        }
    }
    (Ok(per_request), runs)
}
