//! Function instances (sandboxes): one pool per function, cold starts of measured parts, concurrency and
//! batching slots, the account and per-function scaling limits, keep-alive (one armed check per instance, the
//! scenario's keep-alive policy and its pre-warms), provisioned capacity, and reconfiguration.

use super::*;

impl World<'_> {
    pub(super) fn fn_capacity(&self, inst: &FnInst) -> u32 {
        inst.concurrency.saturating_mul(self.view.functions.settings.batching.max_batch)
    }

    pub(super) fn fn_class(&self, idx: u32) -> FnClass {
        self.fns[idx as usize].class()
    }

    /// Function `id`'s slot in `functions`, added on first sight.
    #[inline(always)]
    pub(super) fn function_slot(&mut self, id: u32) -> u32 {
        match self.fn_slot_of.get(id).checked_sub(1) {
            Some(slot) => slot,
            None => self.add_function(id),
        }
    }

    /// Adds function `id` to `functions` (seen for the first time); its slot.
    #[cold]
    fn add_function(&mut self, id: u32) -> u32 {
        let slot = self.functions.len() as u32;
        let sc = self.sc;
        let traits = sc.function_traits.get(&id);
        self.functions.push(FnFunction {
            has_duration: traits.is_some_and(|t| t.duration.is_some()),
            duration: traits.and_then(|t| t.duration).unwrap_or(hyscale_traces::DurationPercentiles::ZERO),
            memory_mb: traits.and_then(|t| t.memory_mb),
            model: sc.model(id),
            warm_last: NO_INSTANCE,
            warm_free: Vec::new(),
            cold_free: Vec::new(),
            last_end: None,
            scale_since: Nanos::ZERO,
            scale_base: 0,
            invocations: 0,
            cold_invocations: 0,
        });
        self.fn_slot_of.insert(id, slot + 1);
        slot
    }

    /// Admits `req` to its function's instances, or refuses it. The account limit is checked here, inline in
    /// the dispatch: a throttled request (38% of the standard function workload's) costs no call.
    #[inline(always)]
    pub(super) fn fn_admit(&mut self, req: Req) -> Result<(), RejectReason> {
        // AWS's account concurrency counts executions in flight, not instances ("Lambda function scaling",
        // Lambda developer guide: concurrency is the number of in-flight requests).
        if self.view.functions.in_flight >= self.sc.catalog.functions.regional_concurrency as u64 {
            self.view.functions.throttled_total += 1;
            return Err(RejectReason::Throttled);
        }
        self.fn_admit_within_limit(req)
    }

    /// [`Self::fn_admit`] past the account limit: the function's scaling limit, then an instance.
    #[inline(never)]
    fn fn_admit_within_limit(&mut self, req: Req) -> Result<(), RejectReason> {
        let function = req.model;
        let platform = &self.sc.catalog.functions;
        // Its requests in flight, as the view counts them.
        let in_flight = self.view.functions.per_function.get(function).in_flight;
        let slot = self.function_slot(function);
        let f = &mut self.functions[slot as usize];
        if self.now >= f.scale_since.saturating_add(platform.function_scale_interval) {
            f.scale_since = self.now;
            f.scale_base = in_flight;
        }
        if in_flight >= f.scale_base.saturating_add(platform.function_scale_step) {
            return Err(RejectReason::FunctionScaling);
        }
        // No instance with room: a new one, whatever the instances alive. They do not count against the account
        // limit, only executions do (checked above): an idle instance of another function holds nothing.
        debug_assert_eq!(f.warm_last, f.warm_free.last().copied().unwrap_or(NO_INSTANCE), "warm_last out of date");
        let idx = if f.warm_last != NO_INSTANCE {
            f.warm_last
        } else if let Some(&i) = f.cold_free.last() {
            i
        } else {
            self.fn_spawn(function, false)
        };
        let (now, rule) = (self.now, self.view.functions.settings.batching);
        // The instance read once for all this needs of it (see `fn_sync`).
        let inst = &mut self.fns[idx as usize];
        let cold = inst.phase == FnPhase::Cold;
        let before = inst.class();
        inst.idle_since = OptTime::NONE;
        // A warm instance with nothing queued that the batch rule would start on at once, with a free slot:
        // the request starts there directly, as `fn_try_start_since` would start it from the queue.
        let direct = if inst.phase == FnPhase::Warm && inst.queue.is_empty() {
            match inst.decide(&rule, 1, req.enqueued, now) {
                BatchDecision::Start(n) => free_slot(inst).map(|slot| (slot, n)),
                _ => None,
            }
        } else {
            None
        };
        let f = &mut self.functions[slot as usize];
        // Read (and written when its execution ends) only for a keep-alive policy: otherwise the line it sits on
        // is not touched for it (6% of the function workload's first-level cache write misses were its writes).
        if let Some(k) = self.keep_alive.as_mut()
            && let Some(end) = f.last_end
        {
            k.observe_idle(function, now.saturating_sub(end));
        }
        f.invocations += 1;
        f.cold_invocations += cold as u64;
        let mut req = req;
        if cold {
            req.waited = req.waited.and_cold();
        }
        self.view.functions.in_flight += 1;
        self.view.functions.per_function.get_mut(function).in_flight += 1;
        if let Some((slot, n)) = direct {
            self.fn_start_batch(idx, slot, n, Some(req));
            // Nothing is queued and a slot is busy: `fn_try_start_since` would find nothing to do.
            self.fn_sync(idx, before);
            return Ok(());
        }
        self.fns[idx as usize].queue.push_back(req);
        self.fn_try_start_since(idx, before);
        Ok(())
    }

    pub(super) fn fn_spawn(&mut self, function: u32, provisioned: bool) -> u32 {
        let settings = self.view.functions.settings;
        let slot = self.function_slot(function);
        let f = &self.functions[slot as usize];
        let memory_mb = f.memory_mb.unwrap_or(settings.memory_mb);
        let model = f.model;
        let m = &self.sc.function_model;
        let platform = &self.sc.catalog.functions;
        // A cold start of measured parts: the sandbox, the language runtime, fetching the model's bytes, and
        // loading it (deserialise + first inference), which is CPU-bound and gets the vCPU share its memory buys.
        let sandbox = m.sandbox_init_s.sample(&mut self.rng_cold);
        let bandwidth = m.model_load_mb_per_s.sample(&mut self.rng_cold).max(1e-9);
        let vcpus = platform.vcpus(memory_mb).min(model.max_vcpus_per_request).max(1e-6);
        let cold = Nanos::from_secs_f64(sandbox + model.size_mb / bandwidth + model.load_s / vcpus)
            .saturating_add(m.runtime_init);
        let idx = match self.fn_free.pop() {
            Some(i) => i,
            None => {
                self.fns.push(FnInst {
                    function,
                    epoch: 0,
                    phase: FnPhase::Gone,
                    memory_mb: 0,
                    concurrency: 0,
                    stale: false,
                    provisioned: false,
                    prewarmed_for: OptTime::NONE,
                    queue: VecDeque::new(),
                    slots: Default::default(),
                    busy_slots: 0,
                    in_service: 0,
                    busy_since: Nanos::ZERO,
                    idle_since: OptTime::NONE,
                    expire_at: Nanos::ZERO,
                    spawned_at: Nanos::ZERO,
                    armed: OptTime::NONE,
                    timer: OptTime::NONE,
                    cold_time: Nanos::ZERO,
                    free_since: Nanos::MAX,
                    slot,
                    free_in: None,
                    free_pos: 0,
                });
                (self.fns.len() - 1) as u32
            }
        };
        let inst = &mut self.fns[idx as usize];
        inst.function = function;
        inst.slot = slot;
        inst.spawned_at = self.now;
        inst.epoch = inst.epoch.wrapping_add(1);
        inst.phase = FnPhase::Cold;
        inst.memory_mb = memory_mb;
        inst.concurrency = settings.concurrency.max(1);
        inst.stale = false;
        inst.provisioned = provisioned;
        inst.prewarmed_for = OptTime::NONE;
        self.fn_provisioned_live += provisioned as u32;
        inst.slots.reset(inst.concurrency as usize);
        inst.busy_slots = 0;
        inst.in_service = 0;
        inst.idle_since = OptTime::NONE;
        inst.armed = OptTime::NONE;
        inst.timer = OptTime::NONE;
        inst.cold_time = cold;
        inst.free_since = Nanos::MAX;
        let epoch = inst.epoch;
        self.fn_live += 1;
        self.usage.fn_live_ns.change(1, self.now);
        self.usage.fn_live_peak = self.usage.fn_live_peak.max(self.fn_live as u64);
        self.view.functions.cold_starts_total += 1;
        self.fn_sync(idx, FnClass::Gone);
        self.queue.push(self.now + cold, Event::FnWarm { idx, epoch });
        idx
    }

    pub(super) fn fn_try_start(&mut self, idx: u32) {
        self.fn_try_start_since(idx, self.fn_class(idx));
    }

    /// As [`Self::fn_try_start`] for an instance whose class was `before` when the view last saw it: the
    /// changes since are synced with those of starting its work, once.
    pub(super) fn fn_try_start_since(&mut self, idx: u32, before: FnClass) {
        loop {
            let inst = &self.fns[idx as usize];
            if inst.phase != FnPhase::Warm {
                break;
            }
            let oldest = inst.queue.front().map_or(self.now, |r| r.enqueued);
            match inst.decide(&self.view.functions.settings.batching, inst.queue.len(), oldest, self.now) {
                BatchDecision::Idle => {
                    if inst.busy_slots == 0 && inst.idle_since.is_none() {
                        if inst.stale {
                            self.fn_sync(idx, before);
                            self.fn_retire(idx);
                            return;
                        }
                        let function = inst.function;
                        let keep_alive = match (inst.prewarmed_for.get(), inst.provisioned, self.keep_alive.as_mut()) {
                            (Some(k), _, _) => k,
                            (None, false, Some(policy)) => {
                                let d = policy.decide(function);
                                if d.prewarm > Nanos::ZERO {
                                    // Unload now; load again at the pre-warm time.
                                    self.fn_sync(idx, before);
                                    self.fn_retire(idx);
                                    let at = self.now.saturating_add(d.prewarm);
                                    self.queue.push(at, Event::FnPrewarm { function, keep_alive: d.keep_alive });
                                    return;
                                }
                                d.keep_alive
                            }
                            _ => self.view.functions.settings.keep_alive,
                        };
                        let (now, inst) = (self.now, &mut self.fns[idx as usize]);
                        inst.idle_since = OptTime::some(now);
                        arm(inst, &mut self.queue, idx, now.saturating_add(keep_alive));
                    }
                    break;
                }
                BatchDecision::WaitUntil(t) => {
                    // Scheduled at the time kept (a nanosecond early at the end of time), so that it matches.
                    let t = OptTime::some(t);
                    if inst.timer != t {
                        let epoch = inst.epoch;
                        self.fns[idx as usize].timer = t;
                        self.queue.push(t.0, Event::FnBatchTimer { idx, epoch });
                    }
                    break;
                }
                BatchDecision::Start(n) => {
                    let Some(slot) = free_slot(inst) else {
                        break;
                    };
                    self.fn_start_batch(idx, slot, n, None);
                }
            }
        }
        self.fn_sync(idx, before);
    }

    /// Starts a batch of the rule's `n` on free slot `slot` of warm instance `idx`: the first `n` requests
    /// queued there, or `arriving`, a request that found the instance free with nothing queued (it goes
    /// straight to the slot: the instance's queue is never touched, nor allocated, on that path).
    #[inline(always)]
    fn fn_start_batch(&mut self, idx: u32, slot: usize, n: u32, arriving: Option<Req>) {
        let inst = &self.fns[idx as usize];
        let platform = &self.sc.catalog.functions;
        let f = &self.functions[inst.slot as usize];
        // The model's figures are read only where used: a batch of one with the trace's times needs none.
        let service = match f.duration() {
            // The trace's execution time of one invocation, the batch's as the profile scales it.
            Some(d) => {
                let u: f64 = self.rng_service.random();
                let mut ms = d.at_quantile(u);
                if n > 1 {
                    let table = f.model.function_service;
                    ms = ms * table.latency(n).as_secs_f64() / table.latency(1).as_secs_f64();
                }
                Nanos::from_millis_f64(ms).max(Nanos(1))
            }
            None => {
                let (input, output) = match &arriving {
                    Some(r) => sizes([r]),
                    None => sizes(inst.queue.range(..(n as usize).min(inst.queue.len()))),
                };
                let (table, max_vcpus) = (f.model.function_service, f.model.max_vcpus_per_request);
                let mut service =
                    platform.service_time_of(table, max_vcpus, n, inst.memory_mb, inst.concurrency, (input, output));
                if let Some(noise) = &self.fn_noise {
                    service = service.scaled_by(noise.sample(&mut self.rng_service));
                }
                service
            }
        };
        if self.fn_billing == FunctionBilling::Lambda {
            self.usage.cost.function_requests += platform.price_per_request;
        }
        let now = self.now;
        let inst = &mut self.fns[idx as usize];
        inst.prewarmed_for = OptTime::NONE;
        let batch = inst.slots.at(slot);
        match arriving {
            Some(r) => batch.push(Req { started: now, ..r }),
            None => {
                // One at a time from the front, as a VM's batch (a drain's set-up costs more than the move).
                for _ in 0..n {
                    let Some(r) = inst.queue.pop_front() else { break };
                    batch.push(Req { started: now, ..r });
                }
            }
        }
        let n = batch.len();
        if inst.busy_slots == 0 {
            inst.busy_since = now;
        }
        inst.busy_slots += 1;
        inst.in_service += n as u32;
        inst.timer = OptTime::NONE;
        inst.idle_since = OptTime::NONE;
        let epoch = inst.epoch;
        self.fn_in_service += n as u64;
        self.usage.fn_in_service_ns.change(n as i64, now);
        self.usage.fn_in_service_peak = self.usage.fn_in_service_peak.max(self.fn_in_service);
        self.queue.push(now + service, Event::FnBatchDone { idx, epoch, slot: slot as u32 });
    }

    pub(super) fn fn_batch_done(&mut self, idx: u32, epoch: u32, slot: u32) {
        let now = self.now;
        let inst = &mut self.fns[idx as usize];
        if inst.epoch != epoch || inst.phase != FnPhase::Warm {
            return;
        }
        let before = inst.class();
        let n = inst.slots.get(slot as usize).map_or(0, |b| b.len());
        if n == 0 {
            return;
        }
        inst.busy_slots -= 1;
        if inst.busy_slots == 0 {
            inst.free_since = now;
        }
        inst.in_service -= n as u32;
        let busy_period = (inst.busy_slots == 0).then(|| (inst.memory_mb, now - inst.busy_since, inst.provisioned));
        let (function, function_slot) = (inst.function, inst.slot);
        self.fn_in_service -= n as u64;
        self.usage.fn_in_service_ns.change(-(n as i64), now);
        self.view.functions.in_flight -= n as u64;
        self.view.functions.per_function.get_mut(function).in_flight -= n as u32;
        if let Some((memory, ran, provisioned)) = busy_period
            && self.fn_billing == FunctionBilling::Lambda
        {
            self.usage.cost.function_compute +=
                billing::function_compute_charge_on(&self.sc.catalog.functions, memory, ran, provisioned);
        }
        let sc = self.sc;
        // The batch's requests are booked where they lie, and the slot emptied after.
        let batch = self.fns[idx as usize].slots.at(slot as usize);
        for r in batch.iter() {
            let o = sc.function_model.overhead.sample(&mut self.rng_overhead);
            book(&mut self.ledger, &mut self.recent_latency_max, now, r, o);
        }
        batch.clear();
        if self.keep_alive.is_some() {
            self.functions[function_slot as usize].last_end = Some(now);
        }
        // The view catches up with the finished batch and whatever starts next in one sync.
        self.fn_try_start_since(idx, before);
    }

    /// Instance `idx`, idle, expires at `at`: at most one keep-alive event is armed per instance; a later
    /// deadline is picked up when the armed one fires.
    #[inline(always)]
    pub(super) fn arm_expiry(&mut self, idx: u32, at: Nanos) {
        arm(&mut self.fns[idx as usize], &mut self.queue, idx, at);
    }

    pub(super) fn fn_retire(&mut self, idx: u32) {
        let before = self.fn_class(idx);
        if before == FnClass::Gone {
            return;
        }
        self.bill_pod(idx);
        let inst = &mut self.fns[idx as usize];
        debug_assert_eq!(inst.outstanding(), 0, "retiring a function instance with work");
        inst.phase = FnPhase::Gone;
        if inst.stale {
            self.fn_stale_live -= 1;
        }
        if inst.provisioned {
            inst.provisioned = false;
            self.fn_provisioned_live -= 1;
        }
        self.fn_live -= 1;
        self.usage.fn_live_ns.change(-1, self.now);
        self.fn_sync(idx, before);
        self.fn_free.push(idx);
    }

    pub(super) fn configure_functions(
        &mut self,
        memory_mb: Option<u32>,
        concurrency: Option<u32>,
        keep_alive: Option<Nanos>,
        prewarm: Option<u32>,
    ) -> Result<(), Refusal> {
        let old = self.view.functions.settings;
        let memory = memory_mb.unwrap_or(old.memory_mb);
        let conc = concurrency.unwrap_or(old.concurrency);
        self.sc.catalog.functions.check_settings(memory, conc).map_err(|_| Refusal::InvalidFunctionSettings)?;
        let new_prewarm = prewarm.unwrap_or(old.prewarm);
        if new_prewarm != old.prewarm || memory != old.memory_mb {
            // A configured amount of provisioned capacity is billed when it changes; going to 0 disables it.
            self.settle_prewarm(new_prewarm == 0);
        }
        let settings = &mut self.view.functions.settings;
        settings.memory_mb = memory;
        settings.concurrency = conc;
        settings.keep_alive = keep_alive.unwrap_or(old.keep_alive);
        settings.prewarm = prewarm.unwrap_or(old.prewarm);
        if memory != old.memory_mb || conc != old.concurrency {
            // As when a function's configuration is published: running instances finish their work under
            // the old settings and retire; new requests get new instances.
            for idx in 0..self.fns.len() as u32 {
                let inst = &mut self.fns[idx as usize];
                if inst.phase == FnPhase::Gone || inst.stale {
                    continue;
                }
                inst.stale = true;
                self.fn_stale_live += 1;
                if inst.provisioned {
                    // Provisioned capacity moves to the new version; this one finishes on demand.
                    inst.provisioned = false;
                    self.fn_provisioned_live -= 1;
                }
                let before = self.fn_class(idx);
                self.fn_sync(idx, before);
                if before == FnClass::Idle {
                    self.fn_retire(idx);
                }
            }
        }
        let target = self.view.functions.settings.prewarm;
        // Fewer provisioned instances than before: the surplus become on-demand instances (idle ones start
        // their keep-alive now).
        for idx in 0..self.fns.len() as u32 {
            if self.fn_provisioned_live <= target {
                break;
            }
            let inst = &mut self.fns[idx as usize];
            if inst.phase != FnPhase::Gone && inst.provisioned && !inst.stale {
                inst.provisioned = false;
                self.fn_provisioned_live -= 1;
                if inst.phase == FnPhase::Warm && inst.outstanding() == 0 {
                    inst.idle_since = OptTime::some(self.now);
                    let at = self.now.saturating_add(self.view.functions.settings.keep_alive);
                    self.arm_expiry(idx, at);
                }
            }
        }
        // More: live on-demand instances of the current version are adopted first (they are initialised
        // already), then new ones start; so `prewarm` is also the number of instances kept alive at least.
        for idx in 0..self.fns.len() as u32 {
            if self.fn_provisioned_live >= target {
                break;
            }
            let inst = &mut self.fns[idx as usize];
            if inst.phase != FnPhase::Gone && !inst.provisioned && !inst.stale {
                inst.provisioned = true;
                self.fn_provisioned_live += 1;
            }
        }
        while self.fn_provisioned_live < target {
            // Provisioned concurrency is allocated from the account's limit; on-demand instances, busy or idle,
            // do not stand in its way (their executions are throttled at admission).
            if self.fn_provisioned_live >= self.sc.catalog.functions.regional_concurrency {
                return Err(Refusal::PrewarmOverLimit);
            }
            self.fn_spawn(PROVISIONED_FUNCTION, true);
        }
        Ok(())
    }

    pub(super) fn set_batching(&mut self, pool: Pool, rule: hyscale_policies::BatchRule) -> Result<(), Refusal> {
        let rule = hyscale_policies::BatchRule::new(rule.max_batch, rule.max_wait)
            .with_idle_start(rule.idle_start)
            .with_platform_idle_start(self.sc.file.sim.batch_idle_start);
        match pool {
            Pool::Vm(t) => {
                let p = self.view.pools.get_mut(t.0 as usize).ok_or(Refusal::UnknownVmType)?;
                p.batching = rule;
                for i in self.pool_members[t.0 as usize].clone() {
                    self.vm_try_start(i);
                }
            }
            Pool::Functions => {
                self.view.functions.settings.batching = rule;
                for idx in 0..self.fns.len() as u32 {
                    let before = self.fn_class(idx);
                    self.fn_sync(idx, before);
                    self.fn_try_start(idx);
                }
            }
        }
        Ok(())
    }
}

/// [`World::arm_expiry`] for instance `inst`, number `idx`, already at hand.
#[inline(always)]
fn arm(inst: &mut FnInst, queue: &mut EventQueue<Event>, idx: u32, at: Nanos) {
    // The time `armed` can hold (a nanosecond early at the end of time), so that the event finds it there.
    let kept = OptTime::some(at);
    inst.expire_at = kept.0;
    if inst.armed.get().is_none_or(|t| t > kept.0) {
        inst.armed = kept;
        let epoch = inst.epoch;
        queue.push_timer(kept.0, Event::FnExpire { idx, epoch });
    }
}

/// An instance's first free concurrency slot.
fn free_slot(inst: &FnInst) -> Option<usize> {
    inst.slots.free()
}
