//! FSD-Inference live: one fully-connected model partitioned over `P` function workers (each a sandbox of
//! the local Lambda service running `hyscale-fsd-worker`) that exchange their slices of every layer's
//! activations through a real channel on loopback: a Redis broker's lists for the queue channel (standing in
//! for an SNS topic fanned out to one SQS queue per worker) or an S3-compatible object store reached through
//! the S3 API (the `object_store` crate, so the same code talks to AWS S3).
//!
//! - [`model`]: read, generate and partition the model into each worker's ONNX slices;
//! - [`channel`]: the two channels, counting their calls by `hyscale_policies::fsd`'s rules;
//! - [`worker`]: what one worker does with a request (run its slice of each layer, send it, gather the
//!   others', answer) — the function binary's handler;
//! - [`services`]: Redis and moto started on loopback (for `--live` runs and the tests);
//! - [`live`]: the coordinator — starts the workers' functions, invokes the `P` workers of each request
//!   at once, checks the answer and measures latency, billing and channel calls.
//!
//! Failures never hang a request: every wait on the channel has a deadline, and a request whose worker
//! failed (its sandbox killed, a message lost, the broker or store down) fails with the reason.

pub mod channel;
pub mod live;
pub mod model;
pub mod services;
pub mod worker;

/// Why an FSD run or request failed.
#[derive(Debug, thiserror::Error)]
pub enum FsdError {
    /// The model cannot be read or partitioned.
    #[error("model: {0}")]
    Model(String),
    /// A file could not be written or read.
    #[error("{0}")]
    Io(String),
    /// The channel (broker or store) failed or is unreachable.
    #[error("channel: {0}")]
    Channel(String),
    /// A slice did not arrive in time (a worker died, a message was lost).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A worker failed.
    #[error("worker {worker}: {reason}")]
    Worker {
        /// The worker.
        worker: usize,
        /// Why.
        reason: String,
    },
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(String),
}

/// Rows of `parts` (each `rows` × its width, row-major) side by side: row `r` of the result is row `r` of
/// every part in order. How the workers' slices of a layer make the whole layer's output.
pub fn concat_columns(parts: &[Vec<f32>], rows: usize) -> Vec<f32> {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / rows.max(1)).collect();
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for r in 0..rows {
        for (p, &w) in parts.iter().zip(&widths) {
            out.extend_from_slice(&p[r * w..(r + 1) * w]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_side_by_side_make_the_rows() {
        // Two rows; worker 0 has 2 columns, worker 1 has 1.
        let parts = vec![vec![1.0, 2.0, 4.0, 5.0], vec![3.0, 6.0]];
        assert_eq!(concat_columns(&parts, 2), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
