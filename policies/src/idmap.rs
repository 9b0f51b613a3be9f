//! [`IdMap`]: values by integer id, for ids that are mostly small and dense (a trace's function or model
//! ids), looked up on every request.
//!
//! Ids below [`IdMap::DENSE`] index a `Vec` directly, one load that stays in cache; larger ids (a trace may
//! use any `u32`) go to a fast hash. A value equal to `V::default()` counts as absent: [`IdMap::iter`] skips
//! it, and two maps are equal when they hold the same non-default values. The profile of the simulator's
//! function workload showed the hash lookups of per-function counts (three per request) as its largest
//! cache misses.

use rustc_hash::FxHashMap;

/// Values by `u32` id; `V::default()` is "absent".
#[derive(Clone, Debug, Default)]
pub struct IdMap<V> {
    dense: Vec<V>,
    sparse: FxHashMap<u32, V>,
}

impl<V: Copy + Default + PartialEq> IdMap<V> {
    /// Ids below this (1 Mi) are held in a `Vec`, the rest in a hash.
    pub const DENSE: u32 = 1 << 20;

    /// An empty map.
    pub fn new() -> Self {
        IdMap { dense: Vec::new(), sparse: FxHashMap::default() }
    }

    /// The value of `id` (the default when absent).
    #[inline]
    pub fn get(&self, id: u32) -> V {
        if id < Self::DENSE {
            self.dense.get(id as usize).copied().unwrap_or_default()
        } else {
            self.sparse.get(&id).copied().unwrap_or_default()
        }
    }

    /// The value of `id`, to change in place (added as the default when absent; set back to the default,
    /// it counts as absent again).
    #[inline]
    pub fn get_mut(&mut self, id: u32) -> &mut V {
        if id < Self::DENSE {
            let at = id as usize;
            if at >= self.dense.len() {
                self.dense.resize(at + 1, V::default());
            }
            &mut self.dense[at]
        } else {
            self.sparse.entry(id).or_default()
        }
    }

    /// Sets the value of `id`.
    pub fn insert(&mut self, id: u32, value: V) {
        *self.get_mut(id) = value;
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }

    /// The ids and values present (not the default): small ids in increasing order, then the others in no
    /// meaningful order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, V)> + '_ {
        let absent = V::default();
        let dense = self.dense.iter().enumerate().map(|(i, v)| (i as u32, *v));
        dense.chain(self.sparse.iter().map(|(k, v)| (*k, *v))).filter(move |(_, v)| *v != absent)
    }

    /// The values present.
    pub fn values(&self) -> impl Iterator<Item = V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// How many values are present.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no value is present.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<V: Copy + Default + PartialEq> PartialEq for IdMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(id, v)| other.get(id) == v)
    }
}

impl<V: Copy + Default + PartialEq> FromIterator<(u32, V)> for IdMap<V> {
    fn from_iter<I: IntoIterator<Item = (u32, V)>>(items: I) -> Self {
        let mut map = IdMap::new();
        for (id, v) in items {
            map.insert(id, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_ids_round_trip_and_defaults_are_absent() {
        let mut m: IdMap<u32> = IdMap::new();
        assert!(m.is_empty());
        m.insert(3, 30);
        *m.get_mut(u32::MAX) += 7;
        *m.get_mut(IdMap::<u32>::DENSE) = 1;
        m.insert(5, 0); // the default: grows the table, holds nothing
        assert_eq!((m.get(3), m.get(4), m.get(5), m.get(u32::MAX)), (30, 0, 0, 7));
        let mut items: Vec<_> = m.iter().collect();
        items.sort_unstable();
        assert_eq!(items, [(3, 30), (IdMap::<u32>::DENSE, 1), (u32::MAX, 7)]);
        assert_eq!(m.len(), 3);
        *m.get_mut(3) -= 30;
        assert_eq!(m.len(), 2);
        // Equality ignores where a value is held and any defaults left behind.
        let same: IdMap<u32> = [(u32::MAX, 7), (IdMap::<u32>::DENSE, 1)].into_iter().collect();
        assert_eq!(m, same);
        assert_ne!(m, IdMap::new());
        m.clear();
        assert_eq!(m, IdMap::new());
    }
}
