//! A set of small integer keys (VM indices) whose smallest member is asked for often: a bitmap, a summary
//! bitmap of its non-zero words, and the summary word where the search for the smallest starts (no key
//! before it).
//!
//! The engine keeps one per VM pool, holding the VMs the dispatch rule takes outright
//! ([`hyscale_policies::rules::DispatchCandidate::wins_outright`]): the smallest is the rule's choice, found
//! without scanning the pool (the profile showed that scan as 11% of the VM workload's instructions, a few
//! dozen VMs per request). VM indices only grow, so the search starts past the keys of VMs long gone; when a
//! low key comes back (a long-lived VM idle again), the search from it reads one summary bit per 64 keys, one
//! summary word per 4,096, never every key since.

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    words: Vec<u64>,
    /// Bit `w` is set when `words[w]` is not zero.
    summary: Vec<u64>,
    /// No summary word before this one has a bit set.
    low: usize,
}

impl KeySet {
    #[inline]
    pub(crate) fn insert(&mut self, key: u32) {
        let w = key as usize / 64;
        if self.words.len() <= w {
            self.grow(w);
        }
        self.words[w] |= 1 << (key % 64);
        self.summary[w / 64] |= 1 << (w % 64);
        self.low = self.low.min(w / 64);
    }

    /// Room for word `w` (a key past any before: once per 64 VMs launched).
    #[cold]
    fn grow(&mut self, w: usize) {
        self.words.resize(w + 1, 0);
        self.summary.resize(w / 64 + 1, 0);
    }

    #[inline]
    pub(crate) fn remove(&mut self, key: u32) {
        let w = key as usize / 64;
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1 << (key % 64));
            if *word == 0 {
                self.summary[w / 64] &= !(1 << (w % 64));
            }
        }
    }

    /// The smallest key in the set.
    #[inline]
    pub(crate) fn first(&mut self) -> Option<u32> {
        while let Some(&bits) = self.summary.get(self.low) {
            if bits != 0 {
                let w = self.low * 64 + bits.trailing_zeros() as usize;
                return Some((w * 64) as u32 + self.words[w].trailing_zeros());
            }
            self.low += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Any sequence of inserts, removes and lookups: the smallest key is a `BTreeSet`'s.
        #[test]
        fn the_smallest_key_is_a_sorted_sets(ops in proptest::collection::vec((0u8..3, prop_oneof![0u32..400, 0u32..20_000]), 0..300)) {
            let (mut set, mut model) = (KeySet::default(), BTreeSet::new());
            for (op, key) in ops {
                match op {
                    0 => { set.insert(key); model.insert(key); }
                    1 => { set.remove(key); model.remove(&key); }
                    _ => prop_assert_eq!(set.first(), model.first().copied()),
                }
            }
            prop_assert_eq!(set.first(), model.first().copied());
        }
    }

    #[test]
    fn a_key_below_the_start_word_is_found_again() {
        let mut set = KeySet::default();
        set.insert(700);
        set.insert(3);
        set.remove(3);
        assert_eq!(set.first(), Some(700));
        set.insert(64);
        assert_eq!(set.first(), Some(64));
        set.remove(64);
        set.remove(700);
        assert_eq!(set.first(), None);
        set.remove(100_000);
        assert_eq!(set.first(), None);
        // Keys in different summary words, a low one coming back after the search moved past it.
        set.insert(300_000);
        set.insert(5);
        assert_eq!(set.first(), Some(5));
        set.remove(5);
        assert_eq!(set.first(), Some(300_000));
        set.insert(4_096);
        assert_eq!(set.first(), Some(4_096));
        set.insert(4_097);
        set.remove(4_096);
        assert_eq!(set.first(), Some(4_097));
    }
}
