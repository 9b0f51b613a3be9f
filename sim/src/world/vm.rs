//! VMs: provisioning, admission (least outstanding among instances in service, a provisioning one only
//! when none has room, none under an interruption notice), batches by the shared rule, release and drain.

use hyscale_policies::rules::{ReleaseStep, dispatch_to_in_key_order, release_order, release_step};

use super::*;

impl World<'_> {
    pub(super) fn vm_snapshot(&self, i: u32) -> (Option<VmState>, u32, u32) {
        self.vms[i as usize].snapshot()
    }

    pub(super) fn provision(&mut self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), Refusal> {
        let t = self.sc.catalog.vm_types.get(vm_type.0 as usize).ok_or(Refusal::UnknownVmType)?;
        if t.price_per_h(market).is_none() {
            return Err(Refusal::NotSoldOnMarket);
        }
        let model = &self.sc.vm_models[vm_type.0 as usize];
        *self.usage.launched.entry(format!("{}/{}", t.name, market.name())).or_insert(0) += count as u64;
        for _ in 0..count {
            let i = self.vms.len() as u32;
            let boot = Nanos::from_secs_f64(model.launch_boot_s.sample(&mut self.rng_provision));
            let ready_at = self.now.saturating_add(boot).saturating_add(model.model_load);
            self.vms.push(Vm {
                vm_type,
                market,
                state: None,
                launched: self.now,
                queue: VecDeque::new(),
                batch: Vec::new(),
                timer: None,
                free_since: Nanos::MAX,
                view_idx: self.view.vms.len(),
                noticed: false,
                loaded: vec![(BOOT_MODEL, self.now)],
            });
            self.view.vms.push(VmInstanceView {
                id: InstanceId(i as u64),
                vm_type,
                market,
                state: VmState::Provisioning,
                launched_at: self.now,
                queued: 0,
                in_service: 0,
                interruption_at: None,
                models: vec![BOOT_MODEL],
            });
            let before = self.vm_snapshot(i);
            self.vms[i as usize].state = Some(VmState::Provisioning);
            self.vm_sync(i, before);
            self.pool_members[vm_type.0 as usize].push(i);
            self.queue.push(ready_at, Event::VmReady(i));
            if market == Market::Spot && model.spot_hazard_per_h > 0.0 {
                // The hazard is positive and finite (checked at load), so the rate is valid.
                if let Ok(exp) = Exp::new(model.spot_hazard_per_h) {
                    let hours: f64 = exp.sample(&mut self.rng_spot);
                    let at = self.now.saturating_add(Nanos::from_secs_f64(hours * 3600.0));
                    if at < Nanos::MAX {
                        self.queue.push_timer(at, Event::SpotNotice(i));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn vm_admit(&mut self, vm_type: VmTypeId, req: Req) -> Result<(), RejectReason> {
        let members = self.pool_members.get(vm_type.0 as usize).ok_or(RejectReason::Policy("unknown VM type"))?;
        // A model with its own profile must be profiled on the type (`Scenario::vm_service`) and fit the
        // instance's memory; the scenario's own profile covers every type (there is a pool of this one) and is
        // what it boots with. One lookup of the model for both.
        if let Some(spec) = self.sc.catalog.models.get(&req.model) {
            if spec.vm_service.get(vm_type.0 as usize).is_none_or(Option::is_none) {
                return Err(RejectReason::Policy("model not profiled on this VM type"));
            }
            if spec.size_mb > self.sc.catalog.vm(vm_type).memory_gib * 1024.0 {
                return Err(RejectReason::Policy("model larger than the VM type's memory"));
            }
        }
        let limit = self.sc.file.sim.vm_queue_limit as usize;
        // The dispatch rule both halves follow (`policies::rules::dispatch_to`): the smallest VM it takes
        // outright when there is one, else a scan of the pool, which lists its VMs by launch, so in key order.
        let scan = |vms: &[Vm]| {
            let candidates = members.iter().filter_map(|&m| view::dispatch_candidate(&vms[m as usize], m));
            dispatch_to_in_key_order(candidates, limit)
        };
        let i = match self.outright[vm_type.0 as usize].first() {
            Some(i) => {
                debug_assert_eq!(scan(&self.vms), Ok(i), "the outright set disagrees with the rule");
                i
            }
            None => scan(&self.vms)?,
        };
        let vm = &mut self.vms[i as usize];
        let before = vm.snapshot();
        let mut req = req;
        if vm.state == Some(VmState::Provisioning) {
            req.waited = req.waited.and_vm();
        }
        vm.queue.push_back(req);
        self.vm_sync(i, before);
        self.vm_try_start(i);
        Ok(())
    }

    /// Starts VM `i`'s next batch if the batch rule says so now, arms its batching deadline if it says to wait,
    /// and lets a draining VM with nothing left go. Inline: most calls find nothing to do (busy, not ready, or
    /// ready with nothing queued) or a deadline to arm; only a batch starting pays for a call.
    #[inline(always)]
    pub(super) fn vm_try_start(&mut self, i: u32) {
        let vm = &self.vms[i as usize];
        let busy_or_unready = !matches!(vm.state, Some(VmState::Ready | VmState::Draining)) || !vm.batch.is_empty();
        if busy_or_unready || (vm.state == Some(VmState::Ready) && vm.queue.is_empty()) {
            return;
        }
        let rule = self.view.pools[vm.vm_type.0 as usize].batching;
        let oldest = vm.queue.front().map_or(self.now, |r| r.enqueued);
        match rule.decide_at(vm.queue.len(), oldest, self.now, Some(vm.free_since)) {
            BatchDecision::Idle => {
                if vm.state == Some(VmState::Draining) {
                    self.vm_gone(i, VmEnd::Released);
                }
            }
            BatchDecision::Start(n) => self.vm_start_batch(i, n),
            BatchDecision::WaitUntil(t) => {
                if vm.timer != Some(t) {
                    self.vms[i as usize].timer = Some(t);
                    self.queue.push(t, Event::VmBatchTimer(i));
                }
            }
        }
    }

    /// Starts a batch of the rule's `n` on VM `i` (ready or draining, no batch running, requests queued).
    fn vm_start_batch(&mut self, i: u32, n: u32) {
        let now = self.now;
        let vm = &mut self.vms[i as usize];
        let t = vm.vm_type.0 as usize;
        let before = vm.snapshot();
        // A batch holds one model: the oldest request's, and the requests of that model right behind it.
        let model = vm.queue.front().map_or(BOOT_MODEL, |r| r.model);
        let (n, mut k) = (n as usize, 1);
        // Indexed, not an iterator chain over the queue's two halves (40 instructions for a batch of one).
        while k < n && vm.queue.get(k).is_some_and(|r| r.model == model) {
            k += 1;
        }
        let n = k;
        // One at a time from the front: `extend` from a drain checks capacity per request, and a drain
        // itself (set up, then the queue mended when it is dropped) cost 100 instructions for the usual
        // batch of one in the profile.
        for _ in 0..n {
            let Some(r) = vm.queue.pop_front() else { break };
            vm.batch.push(Req { started: now, ..r });
        }
        vm.timer = None;
        // Admission refuses a model without a table for the type; the type's own is the fallback.
        let sc = self.sc;
        let table = sc.vm_service(model, VmTypeId(t as u16)).unwrap_or(&sc.catalog.vm_types[t].service);
        // Only a table that charges for sizes needs them summed (with none, the sums change nothing).
        let (input, output) = if table.sized() { sizes(&vm.batch) } else { (0, 0) };
        let mut service = table.latency_sized(n as u32, input, output);
        if let Some(noise) = &self.vm_noise[t] {
            service = service.scaled_by(noise.sample(&mut self.rng_service));
        }
        service = service.saturating_add(self.vm_load_model(i, model));
        self.vm_sync(i, before);
        self.queue.push(self.now + service, Event::VmBatchDone(i));
    }

    /// Makes sure VM `i` holds `model` before a batch of it runs: nothing to do when loaded (its last use is
    /// now); otherwise the least recently used models are evicted until it fits in the instance's memory and
    /// it is loaded (fetch at the type's bandwidth, then deserialise + first inference). Returns the load time,
    /// which delays the batch. As SageMaker multi-model endpoints load models on demand and unload the least
    /// recently used when memory runs short. Inline: loaded already is the usual case (a call per batch showed
    /// in the profile); only a load is a call.
    #[inline(always)]
    fn vm_load_model(&mut self, i: u32, model: u32) -> Nanos {
        let now = self.now;
        match self.vms[i as usize].loaded.iter_mut().find(|(m, _)| *m == model) {
            Some(entry) => {
                entry.1 = now;
                Nanos::ZERO
            }
            None => self.vm_fetch_model(i, model),
        }
    }

    /// As [`Self::vm_load_model`] for a model VM `i` does not hold: evicts, loads, and returns the load time.
    #[cold]
    fn vm_fetch_model(&mut self, i: u32, model: u32) -> Nanos {
        let now = self.now;
        let size_of = |m: u32| self.sc.model(m).size_mb;
        let vm = &mut self.vms[i as usize];
        let t = vm.vm_type.0 as usize;
        let capacity = self.sc.catalog.vm_types[t].memory_gib * 1024.0;
        let size = size_of(model);
        while !vm.loaded.is_empty() && vm.loaded.iter().map(|&(m, _)| size_of(m)).sum::<f64>() + size > capacity {
            if let Some(lru) = vm.loaded.iter().enumerate().min_by_key(|(_, (m, used))| (*used, *m)).map(|(k, _)| k) {
                vm.loaded.remove(lru);
            }
        }
        vm.loaded.push((model, now));
        vm.loaded.sort_unstable();
        let view_idx = vm.view_idx;
        self.view.vms[view_idx].models = vm.loaded.iter().map(|&(m, _)| m).collect();
        self.usage.vm_model_loads += 1;
        Nanos::from_secs_f64(size / self.sc.vm_models[t].load_mb_per_s.max(1e-9) + self.sc.model(model).load_s)
    }

    /// VM `i` is gone now, ended by `end`: billed, removed, its queued and in-service requests routed again.
    pub(super) fn vm_gone(&mut self, i: u32, end: VmEnd) {
        let before = self.vm_snapshot(i);
        if before.0.is_none() {
            return;
        }
        let vm = &mut self.vms[i as usize];
        let mut orphans: Vec<Req> = mem::take(&mut vm.batch);
        orphans.extend(mem::take(&mut vm.queue));
        vm.state = None;
        vm.timer = None;
        let (vm_type, market, ran) = (vm.vm_type, vm.market, self.now - vm.launched);
        self.bill_vm(vm_type, market, ran, end);
        self.vm_sync(i, before);
        if !orphans.is_empty() {
            self.reroute(orphans);
        }
    }

    /// Releases VM `i` by the shared rule ([`hyscale_policies::rules::release_step`]).
    pub(super) fn release(&mut self, i: u32) -> Result<(), Refusal> {
        let state = self.vms.get(i as usize).and_then(|vm| vm.state);
        match release_step(state)? {
            ReleaseStep::GoneNow => self.vm_gone(i, VmEnd::Released),
            ReleaseStep::Drain => {
                let before = self.vm_snapshot(i);
                self.vms[i as usize].state = Some(VmState::Draining);
                self.vm_sync(i, before);
                self.vm_try_start(i);
            }
        }
        Ok(())
    }

    /// Releases `count` VMs of a type and market in the shared order ([`hyscale_policies::rules::release_order`]);
    /// with fewer than `count`, releases those there are and is refused.
    pub(super) fn release_vms(&mut self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), Refusal> {
        let members = self.pool_members.get(vm_type.0 as usize).ok_or(Refusal::UnknownVmType)?;
        let mine = members.iter().filter_map(|&i| {
            let vm = &self.vms[i as usize];
            let state = vm.state.filter(|_| vm.market == market)?;
            Some((InstanceId(u64::from(i)), state, (vm.queue.len() + vm.batch.len()) as u32))
        });
        let chosen = release_order(mine, count);
        let short = (chosen.len() as u32) < count;
        for id in chosen {
            self.release(id.0 as u32)?;
        }
        if short { Err(Refusal::FewerInstancesThanAsked) } else { Ok(()) }
    }
}
