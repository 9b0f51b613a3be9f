//! Upkeep of the view a policy sees: counts by pool, state and market, and the free sets of function
//! instances, brought in line after every change (never rebuilt).

use super::*;

impl World<'_> {
    /// Brings the view in line with VM `i` after a change from `before`.
    #[inline(always)]
    pub(super) fn vm_sync(&mut self, i: u32, before: (Option<VmState>, u32, u32)) {
        // VM `i` read once (each `self.vms[i]` after a write elsewhere is a reload and a bounds check again).
        let vm = &self.vms[i as usize];
        let after = vm.snapshot();
        let (vm_type, market, view_idx) = (vm.vm_type, vm.market, vm.view_idx);
        // A ready VM's load counts only its requests' total (a batch starting moves them, it changes nothing).
        let (load_before, load_after) = (before.1 + before.2, after.1 + after.2);
        let moved = (before.0, load_before) != (after.0, load_after);
        // What the dispatch rule reads is the state, that total and the notice (which only `spot_notice`
        // changes, and syncs itself): unchanged, the VM stays in or out of the outright set.
        if moved {
            self.set_dispatch(i, vm_type, dispatch_candidate(vm, i));
        }
        let pool = &mut self.view.pools[vm_type.0 as usize];
        if before.0 != after.0 {
            if let Some(s) = before.0 {
                *state_counts(pool, s).get_mut(market) -= 1;
            }
            if let Some(s) = after.0 {
                *state_counts(pool, s).get_mut(market) += 1;
            }
        }
        if moved {
            if before.0 == Some(VmState::Ready) {
                pool.remove_ready_load(load_before);
            }
            if after.0 == Some(VmState::Ready) {
                pool.add_ready_load(load_after);
            }
        }
        pool.queued = pool.queued + after.1 as u64 - before.1 as u64;
        pool.in_service = pool.in_service + after.2 as u64 - before.2 as u64;
        match after.0 {
            Some(state) => {
                let v = &mut self.view.vms[view_idx];
                v.state = state;
                v.queued = after.1;
                v.in_service = after.2;
            }
            None if before.0.is_some() => {
                self.view.vms.swap_remove(view_idx);
                if let Some(moved) = self.view.vms.get(view_idx) {
                    self.vms[moved.id.0 as usize].view_idx = view_idx;
                }
                self.pool_members[vm_type.0 as usize].retain(|&m| m != i);
                self.view.notices.retain(|n| n.instance.0 != i as u64);
            }
            None => {}
        }
    }

    /// Brings what the dispatch rule reads of VM `i` in line (after any change of its state, load or notice).
    pub(super) fn sync_dispatch(&mut self, i: u32) {
        let vm = &self.vms[i as usize];
        self.set_dispatch(i, vm.vm_type, dispatch_candidate(vm, i));
    }

    /// Puts VM `i` of type `vm_type` in its pool's outright set or takes it out, by `candidate`, what the
    /// dispatch rule reads of it now.
    #[inline(always)]
    fn set_dispatch(&mut self, i: u32, vm_type: VmTypeId, candidate: Option<DispatchCandidate<u32>>) {
        let outright = &mut self.outright[vm_type.0 as usize];
        if candidate.is_some_and(|c| c.wins_outright(self.sc.file.sim.vm_queue_limit as usize)) {
            outright.insert(i);
        } else {
            outright.remove(i);
        }
    }

    /// Brings counts and the free sets in line with instance `idx` after a change from `before`.
    #[inline(always)]
    pub(super) fn fn_sync(&mut self, idx: u32, before: FnClass) {
        // The instance read once (each `self.fns[idx]` after a write elsewhere is a reload and a bounds check
        // again; twice per request, they showed in the profile).
        let inst = &self.fns[idx as usize];
        let after = inst.class();
        let (memory_mb, function, slot, from, pos) =
            (inst.memory_mb, inst.function, inst.slot as usize, inst.free_in, inst.free_pos);
        let wanted = match inst.phase {
            FnPhase::Warm | FnPhase::Cold if !inst.stale && inst.outstanding() < self.fn_capacity(inst) => {
                Some(inst.phase)
            }
            _ => None,
        };
        if before != after {
            if (before == FnClass::Idle) != (after == FnClass::Idle) {
                let mb = if after == FnClass::Idle { i64::from(memory_mb) } else { -i64::from(memory_mb) };
                self.fn_idle_mb = self.fn_idle_mb.wrapping_add_signed(mb);
                self.usage.fn_idle_mb_ns.change(mb, self.now);
            }
            if (before == FnClass::Gone) != (after == FnClass::Gone) {
                let c = self.view.functions.per_function.get_mut(function);
                if after == FnClass::Gone {
                    c.instances -= 1;
                } else {
                    c.instances += 1;
                }
            }
            let f = &mut self.view.functions;
            // The two changes of every request on a warm instance first, without `class_count`'s two matches
            // (0.55% of the 2 h function workload's instructions); any other pair of classes through it.
            match (before, after) {
                (FnClass::Idle, FnClass::Busy) => {
                    f.idle_warm -= 1;
                    f.busy += 1;
                }
                (FnClass::Busy, FnClass::Idle) => {
                    f.busy -= 1;
                    f.idle_warm += 1;
                }
                _ => {
                    if let Some(n) = class_count(f, before) {
                        *n -= 1;
                    }
                    if let Some(n) = class_count(f, after) {
                        *n += 1;
                    }
                }
            }
        }
        if wanted == from {
            return;
        }
        let f = &mut self.functions[slot];
        // Stacks: the most recently freed instance is taken first (the others' keep-alive runs out), and any
        // one leaves in O(1) by its recorded position.
        match from {
            Some(FnPhase::Warm) => free_remove(&mut f.warm_free, &mut self.fns, idx, pos),
            Some(FnPhase::Cold) => free_remove(&mut f.cold_free, &mut self.fns, idx, pos),
            _ => {}
        }
        let pos = match wanted {
            Some(FnPhase::Warm) => free_push(&mut f.warm_free, idx),
            Some(FnPhase::Cold) => free_push(&mut f.cold_free, idx),
            _ => pos,
        };
        if from == Some(FnPhase::Warm) || wanted == Some(FnPhase::Warm) {
            f.warm_last = f.warm_free.last().copied().unwrap_or(NO_INSTANCE);
        }
        let inst = &mut self.fns[idx as usize];
        inst.free_in = wanted;
        inst.free_pos = pos;
    }
}

/// The view's count of function instances in `class` (none for the gone).
fn class_count(f: &mut hyscale_policies::FunctionView, class: FnClass) -> Option<&mut u32> {
    match class {
        FnClass::Cold => Some(&mut f.cold_starting),
        FnClass::Idle => Some(&mut f.idle_warm),
        FnClass::Busy => Some(&mut f.busy),
        FnClass::Gone => None,
    }
}

/// Pushes instance `idx` on a free list; its position there.
fn free_push(list: &mut Vec<u32>, idx: u32) -> u32 {
    list.push(idx);
    list.len() as u32 - 1
}

/// Takes instance `idx`, at position `at`, off a free list (the last takes its place).
fn free_remove(list: &mut Vec<u32>, fns: &mut [FnInst], idx: u32, at: u32) {
    let at = at as usize;
    debug_assert_eq!(list.get(at), Some(&idx), "free list position out of date");
    list.swap_remove(at);
    if let Some(&moved) = list.get(at) {
        fns[moved as usize].free_pos = at as u32;
    }
}

pub(super) fn state_counts(pool: &mut hyscale_policies::PoolView, state: VmState) -> &mut MarketCounts {
    match state {
        VmState::Provisioning => &mut pool.provisioning,
        VmState::Ready => &mut pool.ready,
        VmState::Draining => &mut pool.draining,
    }
}

/// What the dispatch rule reads of `vm`, VM `i` (`None` once gone).
#[inline(always)]
pub(super) fn dispatch_candidate(vm: &Vm, i: u32) -> Option<DispatchCandidate<u32>> {
    vm.state.map(|state| DispatchCandidate {
        key: i,
        state,
        outstanding: vm.queue.len() + vm.batch.len(),
        noticed: vm.noticed,
    })
}
