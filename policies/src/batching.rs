//! The batch-formation rule, shared by the simulator and the live backend.
//!
//! Requests wait in a per-instance queue. A free executor starts a batch as soon as the queue holds
//! `max_batch` requests, or once the **oldest** queued request has waited `max_wait` since it joined the
//! queue, whichever comes first; the batch takes up to `max_batch` requests from the head of the queue.
//! `max_batch = 1` with `max_wait = 0` is no batching at all.

use crate::time::Nanos;

/// Batching settings of one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRule {
    /// Largest batch.
    pub max_batch: u32,
    /// Longest the oldest queued request waits for a batch to fill.
    pub max_wait: Nanos,
}

/// What a free executor should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDecision {
    /// Nothing is queued.
    Idle,
    /// Start a batch of this many requests now.
    Start(u32),
    /// Wait: the batch is not full and the oldest request may still wait until this time.
    WaitUntil(Nanos),
}

impl BatchRule {
    /// One request at a time, no waiting.
    pub const NONE: BatchRule = BatchRule { max_batch: 1, max_wait: Nanos::ZERO };

    /// A rule; `max_batch` of 0 is raised to 1.
    pub fn new(max_batch: u32, max_wait: Nanos) -> BatchRule {
        BatchRule { max_batch: max_batch.max(1), max_wait }
    }

    /// The decision for a free executor at `now`, with `queued` requests whose oldest joined at `oldest`.
    pub fn decide(&self, queued: usize, oldest: Nanos, now: Nanos) -> BatchDecision {
        if queued == 0 {
            return BatchDecision::Idle;
        }
        let max = self.max_batch.max(1);
        if queued >= max as usize {
            return BatchDecision::Start(max);
        }
        let deadline = oldest.saturating_add(self.max_wait);
        if now >= deadline { BatchDecision::Start(queued as u32) } else { BatchDecision::WaitUntil(deadline) }
    }
}

impl Default for BatchRule {
    fn default() -> BatchRule {
        BatchRule::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn full_batch_starts_at_once() {
        let r = BatchRule::new(4, Nanos(50 * MS));
        assert_eq!(r.decide(4, Nanos(0), Nanos(1)), BatchDecision::Start(4));
        assert_eq!(r.decide(9, Nanos(0), Nanos(1)), BatchDecision::Start(4));
    }

    #[test]
    fn partial_batch_waits_for_the_oldest_request() {
        let r = BatchRule::new(4, Nanos(50 * MS));
        assert_eq!(r.decide(3, Nanos(10 * MS), Nanos(20 * MS)), BatchDecision::WaitUntil(Nanos(60 * MS)));
        assert_eq!(r.decide(3, Nanos(10 * MS), Nanos(60 * MS)), BatchDecision::Start(3));
        assert_eq!(r.decide(0, Nanos(0), Nanos(60 * MS)), BatchDecision::Idle);
    }

    #[test]
    fn no_batching_starts_every_request_alone() {
        assert_eq!(BatchRule::NONE.decide(1, Nanos(5), Nanos(5)), BatchDecision::Start(1));
        assert_eq!(BatchRule::NONE.decide(3, Nanos(5), Nanos(5)), BatchDecision::Start(1));
    }
}
