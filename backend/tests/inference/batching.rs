//! Dynamic batching with the real MLP on tract: batches form by the shared rule (full batch, or the oldest
//! request's wait), rows are concatenated and split back correctly, and a full queue refuses at once.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyscale_backend::batcher::{BatchError, BatchObserver, BatchRecord, Batcher, BatcherConfig};
use hyscale_backend::engine::Tensor;
use hyscale_policies::Nanos;

use crate::support::{self, fixed_input, model, rows};

/// Records every batch.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<BatchRecord>>,
    refused: Mutex<u32>,
}

impl BatchObserver for Recorder {
    fn on_batch(&self, _model: &str, record: &BatchRecord) {
        self.batches.lock().unwrap().push(record.clone());
    }

    fn on_queue_full(&self, _model: &str) {
        *self.refused.lock().unwrap() += 1;
    }
}

impl Recorder {
    fn batches(&self) -> Vec<BatchRecord> {
        self.batches.lock().unwrap().clone()
    }
}

fn batcher(model_file: &str, max_batch: u32, max_wait: Duration, capacity: usize) -> (Batcher, Arc<Recorder>) {
    let session = support::tract().load(&model(model_file)).unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = BatcherConfig::new(max_batch, Nanos(max_wait.as_nanos() as u64), capacity);
    (Batcher::spawn(session, config, recorder.clone()), recorder)
}

/// The MLP's outputs for `input`, run directly (no batcher).
fn direct(model_file: &str, input: &Tensor) -> Tensor {
    let mut session = support::tract().load(&model(model_file)).unwrap();
    session.run(std::slice::from_ref(input)).unwrap().remove(0)
}

fn assert_close(got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape);
    let diff = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-5, "max |diff| {diff}");
}

/// Sends one request per input concurrently; returns the results in input order.
async fn concurrently(b: &Batcher, inputs: Vec<Tensor>) -> Vec<Result<Vec<Tensor>, BatchError>> {
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|x| {
            let b = b.clone();
            tokio::spawn(async move { b.infer(vec![x]).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_requests_with_max_batch_four_run_as_two_full_batches() {
    // A long max wait: only full batches can start.
    let (b, recorder) = batcher("mlp.onnx", 4, Duration::from_secs(30), 64);
    let x = fixed_input(&[8, 64]);
    let want = direct("mlp.onnx", &x);
    let results = concurrently(&b, (0..8).map(|i| rows(&x, i, i + 1)).collect()).await;
    for (i, r) in results.into_iter().enumerate() {
        let out = r.expect("served");
        assert_close(&out[0], &rows(&want, i, i + 1));
    }
    let batches = recorder.batches();
    assert_eq!(batches.len(), 2, "{batches:?}");
    for batch in &batches {
        assert_eq!((batch.requests, batch.rows, batch.engine_runs), (4, 4, 1));
        assert!(batch.ok);
        assert_eq!(batch.queue_waits.len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_is_served_once_it_has_waited_max_wait() {
    let (b, recorder) = batcher("mlp.onnx", 4, Duration::from_millis(50), 64);
    let started = Instant::now();
    let out = b.infer(vec![fixed_input(&[1, 64])]).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(50), "served after {elapsed:?}");
    assert_eq!(out[0].shape, [1, 10]);
    let batches = recorder.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].requests, 1);
    assert!(batches[0].queue_waits[0] >= Nanos::from_millis(50), "{:?}", batches[0].queue_waits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_idle_start_a_lone_request_runs_at_once_and_a_burst_still_batches() {
    // A 2 s max wait: without idle start a lone request would wait it out.
    let session = support::tract().load(&model("mlp.onnx")).unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = BatcherConfig::new(4, Nanos::from_secs(2), 64).with_idle_start(true);
    let b = Batcher::spawn(session, config, recorder.clone());
    let started = Instant::now();
    let out = b.infer(vec![fixed_input(&[1, 64])]).await.unwrap();
    assert_eq!(out[0].shape, [1, 10]);
    assert!(started.elapsed() < Duration::from_secs(1), "served after {:?}", started.elapsed());
    // Eight at once: the first to reach the idle model starts at once, with whatever is queued by then; the
    // others queue while it runs and still gather into batches under the usual rule.
    let results = concurrently(&b, (0..8).map(|_| fixed_input(&[1, 64])).collect()).await;
    assert!(results.iter().all(Result::is_ok));
    let sizes: Vec<u32> = recorder.batches().iter().map(|r| r.requests).collect();
    assert_eq!(sizes.iter().sum::<u32>(), 9, "{sizes:?}");
    assert!(sizes.iter().skip(1).any(|&n| n > 1), "a burst still batches: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_batch_rule_applies_to_the_requests_already_waiting() {
    // Batches of 4 waiting up to 30 s: a lone request would wait 30 s. The rule changes to batches of one
    // after 100 ms, and the waiting request runs at once.
    let (b, recorder) = batcher("mlp.onnx", 4, Duration::from_secs(30), 64);
    let started = Instant::now();
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.infer(vec![fixed_input(&[1, 64])]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.set_rule(hyscale_policies::BatchRule::new(1, Nanos::ZERO));
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(out[0].shape, [1, 10]);
    assert!(started.elapsed() < Duration::from_secs(10), "served after {:?}", started.elapsed());
    assert_eq!(b.config().rule.max_batch, 1);
    assert_eq!(recorder.batches().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_several_rows_are_concatenated_and_split_back() {
    let (b, recorder) = batcher("mlp.onnx", 3, Duration::from_secs(30), 64);
    let x = fixed_input(&[6, 64]);
    let want = direct("mlp.onnx", &x);
    // Rows 0..1, 1..4 and 4..6 as three requests of 1, 3 and 2 rows.
    let cuts = [(0, 1), (1, 4), (4, 6)];
    let results = concurrently(&b, cuts.iter().map(|&(f, t)| rows(&x, f, t)).collect()).await;
    for (&(f, t), r) in cuts.iter().zip(results) {
        assert_close(&r.unwrap()[0], &rows(&want, f, t));
    }
    let batches = recorder.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].requests, batches[0].rows, batches[0].engine_runs), (3, 6, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_fixed_batch_of_one_runs_the_requests_one_by_one() {
    let (b, recorder) = batcher("mlp_batch1.onnx", 4, Duration::from_secs(30), 64);
    let x = fixed_input(&[5, 64]);
    // Same weights as mlp.onnx, so the dynamic model's outputs are the reference.
    let want = direct("mlp.onnx", &x);
    let cuts = [(0, 1), (1, 2), (2, 4), (4, 5)];
    let results = concurrently(&b, cuts.iter().map(|&(f, t)| rows(&x, f, t)).collect()).await;
    for (&(f, t), r) in cuts.iter().zip(results) {
        assert_close(&r.unwrap()[0], &rows(&want, f, t));
    }
    let batches = recorder.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].requests, batches[0].rows, batches[0].engine_runs), (4, 5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let (b, recorder) = batcher("mlp.onnx", 8, Duration::from_millis(300), 2);
    // Two requests join the queue (a request is queued when its future is first polled) and wait there: the
    // batch is not full and the oldest has not waited 300 ms.
    let mut first = Box::pin(b.infer(vec![fixed_input(&[1, 64])]));
    let mut second = Box::pin(b.infer(vec![fixed_input(&[1, 64])]));
    assert!(poll_once(&mut first).await.is_none());
    assert!(poll_once(&mut second).await.is_none());
    assert_eq!(b.queue_depth(), 2);
    let e = b.infer(vec![fixed_input(&[1, 64])]).await.unwrap_err();
    assert!(matches!(e, BatchError::QueueFull { capacity: 2, .. }), "{e}");
    assert!(e.to_string().contains("queue full"), "{e}");
    assert_eq!(*recorder.refused.lock().unwrap(), 1);
    // The two queued requests are still served, together, once the oldest has waited 300 ms.
    assert!(first.await.is_ok());
    assert!(second.await.is_ok());
    assert_eq!(recorder.batches().iter().map(|r| r.requests).collect::<Vec<_>>(), [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_held_for_admitted_requests_count_against_the_queue() {
    // Batches of two, the oldest waiting up to 60 s: nothing starts in this test until a batch is full.
    let (b, recorder) = batcher("mlp.onnx", 2, Duration::from_secs(60), 2);
    // A server holds a place for each request it has read and is decoding: two fill a queue of two.
    let held = b.reserve().expect("a place in an empty queue");
    let other = b.reserve().expect("a second place");
    assert!(b.reserve().is_none(), "a third place in a queue of two");
    assert_eq!(b.room(), 0);
    let e = b.infer(vec![fixed_input(&[1, 64])]).await.unwrap_err();
    assert!(matches!(e, BatchError::QueueFull { capacity: 2, .. }), "{e}");
    assert_eq!(*recorder.refused.lock().unwrap(), 2);
    // A place given back unused (the request was malformed, or its client went away) frees it.
    drop(other);
    assert_eq!(b.room(), 1);
    let again = b.reserve().expect("the place given back");
    // A malformed request gives its place back too.
    let e = b.infer_in(Some(again), vec![fixed_input(&[1, 32])]).await.unwrap_err();
    assert!(matches!(e, BatchError::Engine(_)), "{e}");
    assert_eq!(b.room(), 1);
    // A held place is used even though the queue and the places fill it: the request is queued.
    let mut first = Box::pin(b.infer_in(Some(held), vec![fixed_input(&[1, 64])]));
    assert!(poll_once(&mut first).await.is_none());
    assert_eq!((b.queue_depth(), b.room()), (1, 1));
    let third = b.reserve().expect("one place left: one queued, none held");
    assert!(b.reserve().is_none());
    // The second request fills the batch: both are served together.
    let (first, second) = tokio::join!(first, b.infer_in(Some(third), vec![fixed_input(&[1, 64])]));
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(recorder.batches().iter().map(|r| r.requests).collect::<Vec<_>>(), [2]);
    assert_eq!(b.room(), 2);
}

/// Polls a future once: its output if it is ready, `None` if it is pending.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_before_queueing() {
    let (b, recorder) = batcher("mlp.onnx", 4, Duration::from_millis(1), 64);
    let e = b.infer(vec![fixed_input(&[1, 32])]).await.unwrap_err().to_string();
    assert!(e.contains("'input'") && e.contains("dimension 1 must be 64"), "{e}");
    let e = b.infer(vec![]).await.unwrap_err().to_string();
    assert!(e.contains("0 inputs given"), "{e}");
    let e = b.infer(vec![fixed_input(&[0, 64])]).await.unwrap_err().to_string();
    assert!(e.contains("no rows"), "{e}");
    assert!(recorder.batches().is_empty());
    assert_eq!(b.queue_depth(), 0);
}
