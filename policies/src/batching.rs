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
    /// Start at once when the executor is idle: a request that finds nothing running starts its batch
    /// without waiting `max_wait` (Triton's dynamic batcher with no queue delay does so always), so a lone
    /// client pays no batching delay; requests that arrive while a batch runs still gather, under the usual
    /// rule, into the next one.
    pub idle_start: bool,
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
    pub const NONE: BatchRule = BatchRule { max_batch: 1, max_wait: Nanos::ZERO, idle_start: false };

    /// A rule; `max_batch` of 0 is raised to 1. Without idle start.
    pub fn new(max_batch: u32, max_wait: Nanos) -> BatchRule {
        BatchRule { max_batch: max_batch.max(1), max_wait, idle_start: false }
    }

    /// The same rule with idle start on or off.
    pub fn with_idle_start(self, idle_start: bool) -> BatchRule {
        BatchRule { idle_start, ..self }
    }

    /// The rule as a platform applies it: idle start where the rule asks for it or the platform always
    /// starts idle executors at once (`sim.batch_idle_start`, a live cluster's `batch_idle_start`).
    pub fn with_platform_idle_start(self, platform: bool) -> BatchRule {
        self.with_idle_start(self.idle_start || platform)
    }

    /// The decision for a free executor at `now`, with `queued` requests whose oldest joined at `oldest`, not
    /// knowing since when the executor has been idle (so idle start never applies).
    pub fn decide(&self, queued: usize, oldest: Nanos, now: Nanos) -> BatchDecision {
        self.decide_at(queued, oldest, now, None)
    }

    /// The decision for a free executor at `now` that has run nothing since `idle_since` (`None`: it has just
    /// finished a batch, or cannot tell), with `queued` requests whose oldest joined at `oldest`. With idle
    /// start, a queue whose oldest request arrived while the executor was idle starts at once.
    #[inline]
    pub fn decide_at(&self, queued: usize, oldest: Nanos, now: Nanos, idle_since: Option<Nanos>) -> BatchDecision {
        if queued == 0 {
            return BatchDecision::Idle;
        }
        let max = self.max_batch.max(1);
        if queued >= max as usize {
            return BatchDecision::Start(max);
        }
        if self.idle_start && idle_since.is_some_and(|t| oldest >= t) {
            return BatchDecision::Start(queued as u32);
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
    fn idle_start_runs_a_request_that_finds_the_executor_idle_at_once() {
        let r = BatchRule::new(4, Nanos(50 * MS)).with_idle_start(true);
        // Idle since 5 ms; a request at 10 ms starts now, not at 60 ms.
        assert_eq!(r.decide_at(1, Nanos(10 * MS), Nanos(10 * MS), Some(Nanos(5 * MS))), BatchDecision::Start(1));
        // Requests that queued while a batch ran (the executor is free only now, at 30 ms) wait as usual.
        assert_eq!(
            r.decide_at(2, Nanos(12 * MS), Nanos(30 * MS), Some(Nanos(30 * MS))),
            BatchDecision::WaitUntil(Nanos(62 * MS))
        );
        assert_eq!(r.decide_at(2, Nanos(12 * MS), Nanos(30 * MS), None), BatchDecision::WaitUntil(Nanos(62 * MS)));
        // Off: the same lone request waits for its batch to fill.
        let off = BatchRule::new(4, Nanos(50 * MS));
        assert_eq!(
            off.decide_at(1, Nanos(10 * MS), Nanos(10 * MS), Some(Nanos(5 * MS))),
            BatchDecision::WaitUntil(Nanos(60 * MS))
        );
        assert_eq!(r.decide_at(0, Nanos(0), Nanos(10 * MS), Some(Nanos(0))), BatchDecision::Idle);
    }

    #[test]
    fn a_platforms_idle_start_adds_to_the_rules_own() {
        let r = BatchRule::new(4, Nanos(50 * MS));
        assert!(!r.with_platform_idle_start(false).idle_start);
        assert!(r.with_platform_idle_start(true).idle_start);
        assert!(r.with_idle_start(true).with_platform_idle_start(false).idle_start);
    }

    #[test]
    fn no_batching_starts_every_request_alone() {
        assert_eq!(BatchRule::NONE.decide(1, Nanos(5), Nanos(5)), BatchDecision::Start(1));
        assert_eq!(BatchRule::NONE.decide(3, Nanos(5), Nanos(5)), BatchDecision::Start(1));
    }
}
