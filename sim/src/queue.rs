//! The event queue: heaps keyed by (time, sequence number).
//!
//! Same-time events run in the order they were scheduled (the sequence number breaks ties), so the order
//! of events is fully specified and a run is reproducible. The queue holds only pending events: the trace
//! contributes one arrival at a time, never its future (the engine keeps that one beside the queue, with a
//! sequence number taken from it, see [`EventQueue::take_seq`]).
//!
//! The heap compares one `u128` key (time in the high half, sequence number in the low half): the profile
//! showed the generic tuple comparison of `(time, seq, event)` costing more than the heap's own moves.
//!
//! Long timers wait in a heap of their own ([`EventQueue::push_timer`]): a keep-alive check (one armed per
//! idle instance, minutes ahead and mostly re-armed rather than fired), a spot VM's sampled interruption
//! (hours ahead, and stale once the VM is released: under a policy that re-plans every second they piled up
//! in the one heap, a thousand after 2 simulated hours), a listed interruption, the drain deadline. The heap
//! of near events that pops on every request stays small and in cache: a 4-ary heap (`dary_heap`), half
//! the levels of a binary one, since a pop is a chain of dependent loads, one per level (measured against
//! the binary heap in alternating runs of `hyscale bench`, 24 h: VM workload +2–4%, functions +0.5%). Both
//! share the sequence numbers and a pop takes the smaller key of the two tops, so the order of events is
//! exactly that of one heap. Tried and measured no better: a radix heap for the near events, the
//! `radix-heap` crate for all (25% slower: its refill scans the 64 buckets of the key's sequence half).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use hyscale_policies::Nanos;

/// A heap entry: ordered by `key` alone, reversed so the max-heaps pop the smallest.
#[derive(Debug)]
struct Entry<E> {
    key: u128,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

/// The key of an event at `time` scheduled as the `seq`-th: earlier times first, then scheduling order.
pub fn key(time: Nanos, seq: u64) -> u128 {
    (u128::from(time.0) << 64) | u128::from(seq)
}

/// A min-heap of events by `(time, seq)`.
#[derive(Debug)]
pub struct EventQueue<E> {
    /// Near events.
    heap: dary_heap::QuaternaryHeap<Entry<E>>,
    /// Long timers, apart from the near events (same order as if they were in `heap`).
    timers: BinaryHeap<Entry<E>>,
    seq: u64,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue { heap: dary_heap::QuaternaryHeap::new(), timers: BinaryHeap::new(), seq: 0 }
    }

    /// Schedules `event` at `time`.
    pub fn push(&mut self, time: Nanos, event: E) {
        let seq = self.take_seq();
        self.heap.push(Entry { key: key(time, seq), event });
    }

    /// Schedules a long timer `event` at `time`: ordered exactly as [`Self::push`] would, kept apart so that
    /// the near events' heap stays small.
    pub fn push_timer(&mut self, time: Nanos, event: E) {
        let seq = self.take_seq();
        self.timers.push(Entry { key: key(time, seq), event });
    }

    /// A sequence number for an event kept outside the queue, so that it orders against the queued ones
    /// exactly as if it had been pushed now.
    pub fn take_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// The key of the earliest event, if any.
    pub fn peek_key(&self) -> Option<u128> {
        if self.timer_first() { self.timers.peek() } else { self.heap.peek() }.map(|e| e.key)
    }

    /// The earliest event (first scheduled among equals).
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let e = if self.timer_first() { self.timers.pop() } else { self.heap.pop() };
        e.map(|e| (Nanos((e.key >> 64) as u64), e.event))
    }

    /// Whether the earliest event is a long timer's (the one rule both `peek_key` and `pop` follow).
    fn timer_first(&self) -> bool {
        match (self.heap.peek(), self.timers.peek()) {
            (Some(a), Some(b)) => b.key < a.key,
            (a, b) => a.is_none() && b.is_some(),
        }
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len() + self.timers.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty() && self.timers.is_empty()
    }

    /// Events scheduled so far (sequence numbers taken).
    pub fn scheduled(&self) -> u64 {
        self.seq
    }
}

impl<E> Default for EventQueue<E> {
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

    #[test]
    fn an_event_kept_outside_orders_by_its_taken_sequence_number() {
        let mut q = EventQueue::new();
        q.push(Nanos(5), 'a');
        let outside = key(Nanos(5), q.take_seq());
        q.push(Nanos(5), 'b');
        // 'a' was scheduled first, the outside event second, 'b' third.
        assert!(q.peek_key().unwrap() < outside);
        assert_eq!(q.pop(), Some((Nanos(5), 'a')));
        assert!(outside < q.peek_key().unwrap());
        assert_eq!(key(Nanos(4), u64::MAX).cmp(&key(Nanos(5), 0)), Ordering::Less);
    }

    proptest::proptest! {
        /// Against a sort by (time, sequence): pushes to either lane at or after the last popped time (many
        /// equal, some far ahead), peeks and pops in any interleaving pop in that order.
        #[test]
        fn pops_in_time_then_scheduling_order(ops in proptest::collection::vec((0u64..48, 0u8..4), 1..300)) {
            let mut q = EventQueue::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut now = 0u64;
            for (delta, op) in ops {
                let seq = q.scheduled();
                let t = now + if delta % 3 == 0 { delta } else { 1 << delta };
                match op {
                    0 => q.push(Nanos(t), seq),
                    1 => q.push_timer(Nanos(t), seq),
                    _ => {
                        model.sort_unstable();
                        if op == 3 {
                            proptest::prop_assert_eq!(q.peek_key(), model.first().map(|&(t, s)| key(Nanos(t), s)));
                        }
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        let got = q.pop().map(|(t, s)| (t.0, s));
                        proptest::prop_assert_eq!(got, want);
                        if let Some((t, _)) = got {
                            now = t;
                        }
                        continue;
                    }
                }
                model.push((t, seq));
                proptest::prop_assert_eq!(q.len(), model.len());
            }
            model.sort_unstable();
            let rest: Vec<(u64, u64)> = std::iter::from_fn(|| q.pop().map(|(t, s)| (t.0, s))).collect();
            proptest::prop_assert_eq!(rest, model);
        }
    }

    #[test]
    fn timers_order_with_near_events_as_in_one_heap() {
        let mut q = EventQueue::new();
        q.push_timer(Nanos(5), 'a');
        q.push(Nanos(5), 'b');
        q.push_timer(Nanos(3), 'c');
        q.push(Nanos(9), 'd');
        q.push_timer(Nanos(9), 'e');
        q.push(Nanos(1), 'f');
        assert_eq!(q.len(), 6);
        assert_eq!(q.peek_key(), Some(key(Nanos(1), 5)));
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['f', 'c', 'a', 'b', 'd', 'e']);
        assert!(q.is_empty());
    }
}
