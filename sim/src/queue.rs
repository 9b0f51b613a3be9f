//! The event queue: events keyed by (time, sequence number).
//!
//! Same-time events run in the order they were scheduled (the sequence number breaks ties), so the order
//! of events is fully specified and a run is reproducible. The queue holds only pending events: the trace
//! contributes one arrival at a time, never its future (the engine keeps that one beside the queue, with a
//! sequence number taken from it, see [`EventQueue::take_seq`]).
//!
//! The heap compares one `u128` key (time in the high half, sequence number in the low half): the profile
//! showed the generic tuple comparison of `(time, seq, event)` costing more than the heap's own moves.
//!
//! Most events are scheduled less than a few seconds ahead (a batch's end, a batching deadline, a cold start's
//! end) and pop in a steady stream, one per request: they go on a timing wheel of 8.4 ms slots, unsorted, and
//! a slot's few events are sorted when time reaches it ([`EventQueue`] says how the parts stay in order). Before
//! the wheel, one 4-ary heap held them all — about 1,500 entries on the standard function workload, a pop a
//! chain of dependent loads through 5–6 levels, 18% of `hyscale bench`'s time in `perf`. Long timers (a
//! keep-alive check, armed per idle instance, minutes ahead and mostly re-armed rather than fired; a spot VM's
//! sampled interruption, hours ahead; the drain deadline) and events beyond the wheel's 17 s wait in a heap of
//! their own. Tried before and measured no better: a radix heap for the near events, the `radix-heap` crate
//! for all (25% slower: its refill scans the 64 buckets of the key's sequence half), an 8-ary heap. Tried and
//! measured worse: a wheel of 8,192 slots (69 s), which keeps three in four of the function workload's long
//! executions out of the far heap (1.6% fewer instructions there) but cycles through four times the slot
//! buffers, past the L2 cache: the VM workload ran 4.5% slower. An outer wheel of a slot per 17 s block for the
//! next 18 minutes' events (long executions, keep-alive checks), moved onto the wheel block by block: the far
//! heap's pops had been 3% of the 24 h function workload's instructions; 1.9% fewer instructions on the 2 h
//! function workload and 0.9% more on the VM one, no difference in either's wall time (7 pairs each).
//! Tried and measured no better: parking the far heap's events 34 s to 18 minutes ahead in unsorted lists, one
//! per 17 s block, moved into the heap block by block, so that the heap holds the next half minute's few
//! hundred events, not 6,000 (its pops are 8% of the function workload's time in `perf`, half of that with
//! the parking): 2.6% faster on the function workload and 4-5% slower on the VM one at first, 0.99 and 1.01
//! of the time per request on a later build (9 pairs each). And the wheel's events in one flat array, eight in
//! place per slot (their place known from the slot's count in a 2 KB array, where a list per slot has a push
//! load the list's header, a likely cache miss, before its store): 0.99 and 1.01 (9 pairs each).

use std::cmp::Ordering;

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

/// Bits of a time (ns) below a wheel slot's: a slot spans 2^23 ns, about 8.4 ms.
const SLOT_SHIFT: u32 = 23;
/// Slots on the wheel (a power of two): 2,048 slots of 8.4 ms span 17.2 s ahead of the horizon.
const SLOTS: usize = 2048;
const SLOT_WIDTH: u64 = 1 << SLOT_SHIFT;
const WHEEL_SPAN: u64 = SLOT_WIDTH * SLOTS as u64;
/// The start of the last slot's worth of time (times saturate at `Nanos::MAX`): events there go to the far
/// heap, so the horizon never has to move past the end of time.
const TOP_SLOT: u64 = !(SLOT_WIDTH - 1);

/// A min-queue of events by `(time, seq)`.
///
/// Four parts, and the order of pops is exactly that of one heap (the property test below checks it):
/// - a timing wheel of `SLOTS` unsorted slots for events from `horizon` to `horizon + WHEEL_SPAN`, each slot
///   one `SLOT_WIDTH` of time: an event scheduled there is pushed on its slot's list, no heap work;
/// - `current`: the events of the slot the horizon last passed, sorted once when it was taken off the wheel
///   (latest first: a pop takes the last);
/// - `soon`: events scheduled before the horizon after that (less than a slot ahead), in a 4-ary heap;
/// - `far`: events further ahead than the wheel when scheduled, and long timers, in a 4-ary heap of their own.
///
/// Events before the horizon are all in `current`, `soon` or `far`, and those on the wheel come after every
/// one of them; so the earliest event is the smallest of the three tops, once `current` has been refilled
/// from the wheel when it and `soon` are empty.
#[derive(Debug)]
pub struct EventQueue<E> {
    current: Vec<Entry<E>>,
    soon: dary_heap::QuaternaryHeap<Entry<E>>,
    wheel: Vec<Vec<Entry<E>>>,
    /// Which slots hold events, a bit per slot: the next one is found without visiting the empty ones.
    occupied: [u64; SLOTS / 64],
    /// Events on the wheel.
    in_wheel: usize,
    /// Events pending in all four parts, and the most there have been (kept by the pushes: nothing between
    /// two pops can exceed the count a push left).
    len: usize,
    peak: usize,
    /// A multiple of `SLOT_WIDTH`: events before it are in `current`, `soon` or `far`; the wheel holds those
    /// from it to `horizon + WHEEL_SPAN`.
    horizon: u64,
    far: dary_heap::QuaternaryHeap<Entry<E>>,
    seq: u64,
}

/// Where the earliest event is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    Current,
    Soon,
    Far,
    Nothing,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue {
            current: Vec::new(),
            soon: dary_heap::QuaternaryHeap::new(),
            wheel: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; SLOTS / 64],
            in_wheel: 0,
            len: 0,
            peak: 0,
            horizon: 0,
            far: dary_heap::QuaternaryHeap::new(),
            seq: 0,
        }
    }

    /// Schedules `event` at `time` (inline everywhere: called a few times per request, and as a call its
    /// register saves and restores were a third of its cost in the profile).
    #[inline(always)]
    pub fn push(&mut self, time: Nanos, event: E) {
        let seq = self.take_seq();
        self.len += 1;
        self.peak = self.peak.max(self.len);
        let entry = Entry { key: key(time, seq), event };
        if time.0 < self.horizon {
            self.soon.push(entry);
        } else if time.0 - self.horizon < WHEEL_SPAN && time.0 < TOP_SLOT {
            let slot = slot_of(time.0);
            self.wheel[slot].push(entry);
            self.occupied[slot / 64] |= 1 << (slot % 64);
            self.in_wheel += 1;
        } else {
            self.far.push(entry);
        }
    }

    /// Schedules a long timer `event` at `time` (minutes or hours ahead, mostly superseded before it fires):
    /// ordered exactly as [`Self::push`] would, kept in the far heap whatever its time.
    pub fn push_timer(&mut self, time: Nanos, event: E) {
        let seq = self.take_seq();
        self.len += 1;
        self.peak = self.peak.max(self.len);
        self.far.push(Entry { key: key(time, seq), event });
    }

    /// A sequence number for an event kept outside the queue, so that it orders against the queued ones
    /// exactly as if it had been pushed now.
    pub fn take_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// The key of the earliest event, if any (it may take the wheel's next slot off it).
    #[inline]
    pub fn peek_key(&mut self) -> Option<u128> {
        self.refill();
        let (first, key) = self.first();
        (first != First::Nothing).then_some(key)
    }

    /// The earliest event (first scheduled among equals).
    #[inline]
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        if self.current_first().is_some() {
            return self.pop_current();
        }
        self.refill();
        let (first, _) = self.first();
        self.take(first)
    }

    /// The earliest event if its key comes before `bound`'s (an event kept outside the queue, see
    /// [`Self::take_seq`]); otherwise nothing is taken. One look at the queue, where [`Self::peek_key`]
    /// then [`Self::pop`] take two.
    #[inline]
    pub fn pop_before(&mut self, bound: u128) -> Option<(Nanos, E)> {
        if let Some(key) = self.current_first() {
            return if key < bound { self.pop_current() } else { None };
        }
        self.refill();
        let (first, key) = self.first();
        if first == First::Nothing || key >= bound {
            return None;
        }
        self.take(first)
    }

    /// The key of the current slot's next event when it is the earliest, found without the general search
    /// (the usual case: nothing in `soon`, the far heap's earliest later): `None` otherwise, and then the
    /// general search decides. A pop was some fifty instructions before this, a tenth of a VM workload's.
    #[inline(always)]
    fn current_first(&self) -> Option<u128> {
        if !self.soon.is_empty() {
            return None;
        }
        let key = self.current.last()?.key;
        self.far.peek().is_none_or(|f| key < f.key).then_some(key)
    }

    /// Takes the current slot's next event (when [`Self::current_first`] says it is the earliest). It is
    /// before the horizon, which stays where it is: [`Self::take`] without its horizon check, which cannot fire
    /// here (calling `take` instead measured 0.7% more instructions on the VM workload).
    #[inline(always)]
    fn pop_current(&mut self) -> Option<(Nanos, E)> {
        let e = self.current.pop()?;
        self.len -= 1;
        let time = (e.key >> 64) as u64;
        debug_assert!(time >> SLOT_SHIFT <= self.horizon >> SLOT_SHIFT, "a current event past the horizon");
        Some((Nanos(time), e.event))
    }

    /// Takes the earliest event, held by `first`.
    #[inline]
    fn take(&mut self, first: First) -> Option<(Nanos, E)> {
        let e = match first {
            First::Current => self.current.pop(),
            First::Soon => self.soon.pop(),
            First::Far => self.far.pop(),
            First::Nothing => None,
        }?;
        self.len -= 1;
        let time = (e.key >> 64) as u64;
        if time >> SLOT_SHIFT > self.horizon >> SLOT_SHIFT {
            // From the far heap, past slots that must be empty (their events would come before it): the
            // wheel moves on to it, so that what is scheduled from now on lands on the wheel.
            self.horizon = time & !(SLOT_WIDTH - 1);
        }
        Some((Nanos(time), e.event))
    }

    /// Which part holds the earliest event (after `refill`), and its key: the smallest of the three tops.
    #[inline]
    fn first(&self) -> (First, u128) {
        let mut first = (First::Nothing, u128::MAX);
        if let Some(e) = self.current.last() {
            first = (First::Current, e.key);
        }
        if let Some(e) = self.soon.peek()
            && e.key < first.1
        {
            first = (First::Soon, e.key);
        }
        if let Some(e) = self.far.peek()
            && (e.key < first.1 || first.0 == First::Nothing)
        {
            first = (First::Far, e.key);
        }
        first
    }

    /// When nothing before the horizon is left but the far heap's, takes the wheel's next occupied slot off
    /// it (unless the far heap's earliest comes before that slot, and so before anything on the wheel).
    #[inline]
    fn refill(&mut self) {
        if self.current.is_empty() && self.soon.is_empty() && self.in_wheel > 0 {
            self.refill_from_wheel();
        }
    }

    fn refill_from_wheel(&mut self) {
        let far = self.far.peek().map_or(u64::MAX, |e| (e.key >> 64) as u64);
        // The slots between the horizon and the next occupied one are empty: the horizon moves past them.
        let from = slot_of(self.horizon);
        let slot = self.next_occupied(from);
        let horizon = self.horizon + (slot.wrapping_sub(from) & (SLOTS - 1)) as u64 * SLOT_WIDTH;
        if far < horizon {
            self.horizon = horizon;
            return;
        }
        // The slot's list becomes `current` (and `current`'s empty one, with its room, the slot's).
        std::mem::swap(&mut self.current, &mut self.wheel[slot]);
        if self.current.len() > 1 {
            self.current.sort_unstable_by_key(|e| std::cmp::Reverse(e.key));
        }
        self.in_wheel -= self.current.len();
        self.occupied[slot / 64] &= !(1 << (slot % 64));
        self.horizon = horizon + SLOT_WIDTH;
    }

    /// The first occupied slot at or after `from`, going round the wheel (some slot is occupied).
    fn next_occupied(&self, from: usize) -> usize {
        let words = self.occupied.len();
        let (w0, bit) = (from / 64, from % 64);
        let first = self.occupied[w0] & (u64::MAX << bit);
        if first != 0 {
            return w0 * 64 + first.trailing_zeros() as usize;
        }
        for i in 1..=words {
            let w = (w0 + i) % words;
            // Back at the first word: only its bits below `from` are left.
            let bits = if i == words { self.occupied[w] & !(u64::MAX << bit) } else { self.occupied[w] };
            if bits != 0 {
                return w * 64 + bits.trailing_zeros() as usize;
            }
        }
        unreachable!("the wheel holds {} events in no slot", self.in_wheel)
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        debug_assert_eq!(self.len, self.current.len() + self.soon.len() + self.in_wheel + self.far.len());
        self.len
    }

    /// The most events pending at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events scheduled so far (sequence numbers taken).
    pub fn scheduled(&self) -> u64 {
        self.seq
    }
}

/// The wheel's slot for time `t` (ns).
fn slot_of(t: u64) -> usize {
    (t >> SLOT_SHIFT) as usize & (SLOTS - 1)
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
        /// equal, some far ahead, some at the end of time), peeks alone, and pops in any interleaving pop in
        /// that order; the peak is the most the model ever held.
        #[test]
        fn pops_in_time_then_scheduling_order(ops in proptest::collection::vec((0u64..49, 0u8..5), 1..300)) {
            let mut q = EventQueue::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let (mut now, mut peak) = (0u64, 0);
            for (delta, op) in ops {
                let seq = q.scheduled();
                let t = if delta == 48 {
                    (u64::MAX - seq % 3).max(now)
                } else {
                    now.saturating_add(if delta % 3 == 0 { delta } else { 1 << delta })
                };
                match op {
                    0 => q.push(Nanos(t), seq),
                    1 => q.push_timer(Nanos(t), seq),
                    4 => {
                        model.sort_unstable();
                        proptest::prop_assert_eq!(q.peek_key(), model.first().map(|&(t, s)| key(Nanos(t), s)));
                        continue;
                    }
                    2 if delta % 2 == 0 => {
                        // Only before a bound: an event kept outside, scheduled now at `now + delta`.
                        model.sort_unstable();
                        let bound = key(Nanos(now.saturating_add(delta)), q.take_seq());
                        let want = model.first().copied().filter(|&(t, s)| key(Nanos(t), s) < bound);
                        if want.is_some() {
                            model.remove(0);
                        }
                        let got = q.pop_before(bound).map(|(t, s)| (t.0, s));
                        proptest::prop_assert_eq!(got, want);
                        if let Some((t, _)) = got {
                            now = t;
                        }
                        proptest::prop_assert_eq!(q.len(), model.len());
                        continue;
                    }
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
                        proptest::prop_assert_eq!(q.len(), model.len());
                        continue;
                    }
                }
                model.push((t, seq));
                proptest::prop_assert_eq!(q.len(), model.len());
                peak = peak.max(model.len());
                proptest::prop_assert_eq!(q.peak(), peak);
            }
            model.sort_unstable();
            let rest: Vec<(u64, u64)> = std::iter::from_fn(|| q.pop().map(|(t, s)| (t.0, s))).collect();
            proptest::prop_assert_eq!(rest, model);
        }
    }

    #[test]
    fn the_wheel_moves_on_to_a_far_event_and_keeps_ties_in_scheduling_order() {
        let mut q = EventQueue::new();
        let s = Nanos::from_secs;
        q.push(s(30), 'a'); // beyond the wheel's 17 s: the far heap
        q.push(s(1), 'b'); // on the wheel
        q.push(Nanos(s(1).0 + 1), 'c'); // same slot
        q.push(Nanos(5), 'd'); // the first slot
        assert_eq!(q.pop(), Some((Nanos(5), 'd')));
        assert_eq!(q.pop(), Some((s(1), 'b')));
        assert_eq!(q.pop(), Some((Nanos(s(1).0 + 1), 'c')));
        // Only the far event is left: popping it moves the wheel on to its slot.
        assert_eq!(q.pop(), Some((s(30), 'a')));
        // Scheduled from there: a tie at 30 s and events across slots, one past the wheel again.
        q.push(Nanos(s(30).0 + 9_000_000), 'g');
        q.push(s(30), 'e');
        q.push(s(30), 'f');
        q.push(s(60), 'h');
        q.push_timer(s(30), 'i');
        assert_eq!(q.len(), 5);
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['e', 'f', 'i', 'g', 'h']);
        assert!(q.is_empty());
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
