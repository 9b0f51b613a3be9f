//! The timeline rows and the final report.

use super::*;

impl World<'_> {
    pub(super) fn sample(&mut self) {
        self.sampled_to = self.now;
        let counts = Counts::of(&self.ledger);
        let c = counts.since(mem::replace(&mut self.sampled_counts, counts));
        let mut provisioning = 0;
        let mut ready = MarketCounts::default();
        let mut draining = 0;
        for p in &self.view.pools {
            provisioning += p.provisioning.total();
            ready.on_demand += p.ready.on_demand;
            ready.spot += p.ready.spot;
            draining += p.draining.total();
        }
        let f = &self.view.functions;
        self.timeline.push(TimelineRow {
            t_s: self.now.as_secs_f64(),
            arrivals: c.arrivals,
            completed: c.completed,
            fulfilled: c.fulfilled,
            rejected: c.rejected,
            dropped: c.dropped,
            vm_provisioning: provisioning,
            vm_ready_on_demand: ready.on_demand,
            vm_ready_spot: ready.spot,
            vm_draining: draining,
            fn_cold_starting: f.cold_starting,
            fn_idle: f.idle_warm,
            fn_busy: f.busy,
            cost_so_far: self.cost_so_far(),
        });
    }

    pub(super) fn finish(mut self) -> Report {
        let now = self.now;
        let fn_live_ns = self.usage.fn_live_ns.to(u64::from(self.fn_live), now);
        let fn_in_service_ns = self.usage.fn_in_service_ns.to(self.fn_in_service, now);
        let fn_idle_mb_ns = self.usage.fn_idle_mb_ns.to(self.fn_idle_mb, now);
        self.settle_prewarm(true);
        // Pods still alive are billed to the end of the run.
        for idx in 0..self.fns.len() as u32 {
            if self.fns[idx as usize].phase != FnPhase::Gone {
                self.bill_pod(idx);
            }
        }
        // Bill functions still mid-batch (only when the drain limit cut the run short).
        for inst in &self.fns {
            if inst.phase == FnPhase::Warm && inst.busy_slots > 0 && self.fn_billing == FunctionBilling::Lambda {
                self.usage.cost.function_compute += billing::function_compute_charge_on(
                    &self.sc.catalog.functions,
                    inst.memory_mb,
                    self.now - inst.busy_since,
                    inst.provisioned,
                );
            }
        }
        let live: Vec<(VmTypeId, Market, Nanos)> =
            self.view.vms.iter().map(|v| (v.vm_type, v.market, self.now - v.launched_at)).collect();
        for (t, m, ran) in live {
            self.bill_vm(t, m, ran, VmEnd::Released);
        }
        if self.timeline.is_empty() || self.now > self.sampled_to {
            self.sample();
        }
        let (requests, slo, latency) = self.ledger.summary();
        let cost = self.usage.cost;
        let total = cost.total();
        let f = &self.sc.catalog.functions;
        let ns_per_h = 3600e9;
        let model_gb = f.model_size_mb / 1024.0;
        Report {
            format: REPORT_FORMAT,
            mode: "simulation".into(),
            scenario: self.sc.file.name.clone(),
            policy: self.policy.name().to_string(),
            seed: self.sc.file.seed,
            trace: self.sc.file.trace.describe(),
            model: self.sc.catalog.model.clone(),
            duration_s: self.now.as_secs_f64(),
            requests,
            slo,
            latency_ms: latency,
            cost: CostSummary {
                vm_on_demand: cost.vm_on_demand,
                vm_spot: cost.vm_spot,
                function_compute: cost.function_compute,
                function_requests: cost.function_requests,
                pods: cost.pods,
                total,
                per_million_completed: if self.ledger.completed() == 0 {
                    0.0
                } else {
                    total * 1e6 / self.ledger.completed() as f64
                },
            },
            instances: InstanceSummary {
                vms_launched: self.usage.launched,
                vm_hours_on_demand: self.usage.vm_hours[Market::OnDemand as usize],
                vm_hours_spot: self.usage.vm_hours[Market::Spot as usize],
                spot_interruptions: self.usage.spot_interruptions,
                rerouted: self.usage.rerouted,
                function_cold_starts: self.view.functions.cold_starts_total,
                function_instance_hours: fn_live_ns as f64 / ns_per_h,
                function_instances_peak: self.usage.fn_live_peak,
                vm_model_loads: self.usage.vm_model_loads,
            },
            model_memory: ModelMemorySummary {
                model_size_mb: f.model_size_mb,
                gb_hours: fn_live_ns as f64 / ns_per_h * model_gb,
                copies_peak: self.usage.fn_live_peak,
                one_copy_per_request_peak: self.usage.fn_in_service_peak,
                one_copy_per_request_gb_hours: fn_in_service_ns as f64 / ns_per_h * model_gb,
            },
            functions: function_stats(
                &self.functions,
                self.keep_alive.as_ref().map_or_else(|| "settings".to_string(), |k| k.name()),
                fn_idle_mb_ns,
            ),
            actions: ActionSummary { applied: self.usage.actions_applied, refused: self.usage.actions_refused },
            timeline: self.timeline,
        }
    }
}

/// The per-function summary: cold-invocation percentages by function, summarised by nearest-rank
/// percentiles, and the idle memory time.
pub(super) fn function_stats(
    functions: &[FnFunction<'_>],
    keep_alive: String,
    idle_mb_ns: u128,
) -> FunctionStatsSummary {
    let mut pct: Vec<f64> = functions
        .iter()
        .filter(|f| f.invocations > 0)
        .map(|f| 100.0 * f.cold_invocations as f64 / f.invocations as f64)
        .collect();
    pct.sort_by(f64::total_cmp);
    let rank = |q: f64| -> f64 {
        if pct.is_empty() {
            return 0.0;
        }
        let k = ((q * pct.len() as f64).ceil() as usize).clamp(1, pct.len());
        pct[k - 1]
    };
    FunctionStatsSummary {
        keep_alive,
        functions: pct.len() as u64,
        invocations: functions.iter().map(|f| f.invocations).sum(),
        cold_invocations: functions.iter().map(|f| f.cold_invocations).sum(),
        cold_pct_p50: rank(0.5),
        cold_pct_p75: rank(0.75),
        cold_pct_p90: rank(0.9),
        wasted_memory_gb_s: idle_mb_ns as f64 / 1024.0 / 1e9,
    }
}
