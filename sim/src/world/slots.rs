//! A function instance's concurrency slots and the batch each runs, laid out for the usual case of AWS
//! Lambda: one slot running a batch of one request. That request sits in the instance's own record, read and
//! written with no pointer to chase and no check of where it lives; only a second request of a batch, or a
//! second slot, goes to the heap. (The `SmallVec`s these replaced, one inside the other, checked twice per
//! access whether they had spilled, through calls the compiler kept out of line: 5% of the function
//! workload's instructions.)

/// The requests of one batch: the first inline, any more after it on the heap. `rest` is empty whenever
/// `first` is (requests are only pushed, and the batch cleared as a whole).
#[derive(Clone, Debug)]
#[repr(C)]
pub(super) struct Batch<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch { first: None, rest: Vec::new() }
    }
}

impl<T: Copy> Batch<T> {
    #[inline]
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    #[inline]
    pub(super) fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push(item);
        }
    }

    /// Its requests in the order pushed.
    #[inline]
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Empties it, keeping the heap part's allocation for the next batch.
    #[inline]
    pub(super) fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

/// An instance's slots, one batch each: the first inline, the others (a concurrency above one) on the heap.
/// In this order (`repr(C)`): the first slot's batch, read on every request, before the others' list.
#[derive(Clone, Debug)]
#[repr(C)]
pub(super) struct Slots<T> {
    first: Batch<T>,
    rest: Vec<Batch<T>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { first: Batch::default(), rest: Vec::new() }
    }
}

impl<T: Copy> Slots<T> {
    /// Makes it `count` (at least one) empty slots.
    pub(super) fn reset(&mut self, count: usize) {
        self.first.clear();
        self.rest.iter_mut().for_each(Batch::clear);
        self.rest.resize_with(count.max(1) - 1, Batch::default);
    }

    /// Slot `slot`, if there is one.
    #[inline]
    pub(super) fn get(&self, slot: usize) -> Option<&Batch<T>> {
        if slot == 0 { Some(&self.first) } else { self.rest.get(slot - 1) }
    }

    /// Slot `slot`, which must exist (as slice indexing).
    #[inline]
    pub(super) fn at(&mut self, slot: usize) -> &mut Batch<T> {
        if slot == 0 { &mut self.first } else { &mut self.rest[slot - 1] }
    }

    /// The first slot running nothing.
    #[inline]
    pub(super) fn free(&self) -> Option<usize> {
        if self.first.is_empty() {
            return Some(0);
        }
        self.rest.iter().position(Batch::is_empty).map(|k| k + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_its_requests_in_order_across_the_inline_one_and_the_heap() {
        let mut b = Batch::default();
        assert!(b.is_empty());
        assert_eq!((b.len(), b.iter().next()), (0, None));
        for k in 1..=4 {
            b.push(k);
            assert_eq!(b.len(), k as usize);
        }
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!((b.len(), b.iter().count()), (0, 0));
        b.push(7);
        assert_eq!((b.len(), b.iter().copied().collect::<Vec<_>>()), (1, vec![7]));
    }

    #[test]
    fn slots_are_found_free_in_order_and_reset_to_any_count() {
        let mut s: Slots<u32> = Slots::default();
        s.reset(3);
        assert_eq!(s.free(), Some(0));
        s.at(0).push(1);
        assert_eq!(s.free(), Some(1));
        s.at(1).push(2);
        s.at(2).push(3);
        assert_eq!(s.free(), None);
        assert!(s.get(3).is_none());
        s.at(1).clear();
        assert_eq!(s.free(), Some(1));
        // Fewer slots: all empty, the others gone; never fewer than one.
        s.reset(2);
        assert_eq!((s.free(), s.get(1).map(Batch::len), s.get(2).is_none()), (Some(0), Some(0), true));
        s.reset(0);
        assert_eq!((s.free(), s.get(1).is_none()), (Some(0), true));
    }
}
