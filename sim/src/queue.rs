//! The event queue: a binary heap keyed by (time, sequence number).
//!
//! Same-time events run in the order they were scheduled (the sequence number breaks ties), so the order
//! of events is fully specified and a run is reproducible. The queue holds only pending events: the trace
//! contributes one arrival at a time, never its future.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hyscale_policies::Nanos;

/// A min-heap of `(time, seq, event)`.
#[derive(Debug)]
pub struct EventQueue<E: Ord> {
    heap: BinaryHeap<Reverse<(Nanos, u64, E)>>,
    seq: u64,
}

impl<E: Ord> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue { heap: BinaryHeap::new(), seq: 0 }
    }

    /// Schedules `event` at `time`.
    pub fn push(&mut self, time: Nanos, event: E) {
        self.heap.push(Reverse((time, self.seq, event)));
        self.seq += 1;
    }

    /// The earliest event (first scheduled among equals).
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        self.heap.pop().map(|Reverse((t, _, e))| (t, e))
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.seq
    }
}

impl<E: Ord> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_by_scheduling_order() {
        let mut q = EventQueue::new();
        q.push(Nanos(5), 'c');
        q.push(Nanos(1), 'z');
        q.push(Nanos(5), 'a');
        q.push(Nanos(1), 'y');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['z', 'y', 'c', 'a']);
    }
}
