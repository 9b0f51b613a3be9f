//! What the run costs, by `policies::billing`: VMs when they end (who ended a spot instance decides its
//! bill), provisioned capacity per configured period, and the running total for the timeline.

use super::*;

impl World<'_> {
    pub(super) fn bill_vm(&mut self, vm_type: VmTypeId, market: Market, ran: Nanos, end: VmEnd) {
        let price = self.sc.catalog.vm(vm_type).price_per_h(market).unwrap_or(0.0);
        let charge = billing::vm_charge(price, market, ran, end);
        // Hours the instances ran (what was used), whatever the bill made of them.
        let hours = ran.as_secs_f64() / 3600.0;
        self.usage.cost.add_vm(market, charge);
        self.usage.vm_hours[market as usize] += hours;
    }

    /// Bills pre-warmed (provisioned) capacity held since the last settlement, at the amount in force; when
    /// `disabling` (the amount goes to 0, or the run ends), the whole enabled period is rounded up to the
    /// platform's provisioned granularity, the extra billed at that amount.
    pub(super) fn settle_prewarm(&mut self, disabling: bool) {
        let s = self.view.functions.settings;
        let platform = &self.sc.catalog.functions;
        let charge = self.prewarm_meter.settle(platform, s.prewarm, s.memory_mb, self.now, disabling);
        if self.fn_billing == FunctionBilling::Lambda {
            self.usage.cost.function_compute += charge;
        }
    }

    /// Bills the instance `idx` that ends now, when instances are billed as pods (their whole life).
    pub(super) fn bill_pod(&mut self, idx: u32) {
        if let FunctionBilling::Pods { price_per_gb_s, .. } = self.fn_billing {
            let inst = &self.fns[idx as usize];
            self.usage.cost.pods += billing::pod_charge(price_per_gb_s, inst.memory_mb, self.now - inst.spawned_at);
        }
    }

    /// Cost so far, counting live VMs and pre-warmed capacity up to now (without minimums).
    pub(super) fn cost_so_far(&self) -> f64 {
        let mut total = self.usage.cost.total();
        for vm in &self.view.vms {
            let price = self.sc.catalog.vm(vm.vm_type).price_per_h(vm.market).unwrap_or(0.0);
            total += price * (self.now - vm.launched_at).as_secs_f64() / 3600.0;
        }
        match self.fn_billing {
            FunctionBilling::Lambda => {
                let s = self.view.functions.settings;
                total + self.prewarm_meter.held(&self.sc.catalog.functions, s.prewarm, s.memory_mb, self.now)
            }
            FunctionBilling::Pods { price_per_gb_s, .. } => {
                let live = self.fns.iter().filter(|i| i.phase != FnPhase::Gone);
                total
                    + live
                        .map(|i| billing::pod_charge(price_per_gb_s, i.memory_mb, self.now - i.spawned_at))
                        .sum::<f64>()
            }
        }
    }
}
