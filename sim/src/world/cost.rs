//! What the run costs, by `policies::billing`: VMs when they end (who ended a spot instance decides its
//! bill), provisioned capacity per configured period, and the running total for the timeline.

use super::*;

impl World<'_> {
    pub(super) fn bill_vm(&mut self, vm_type: VmTypeId, market: Market, ran: Nanos, end: VmEnd) {
        let price = self.sc.catalog.vm(vm_type).price_per_h(market).unwrap_or(0.0);
        let charge = billing::vm_charge(price, market, ran, end);
        // Hours the instances ran (what was used), whatever the bill made of them.
        let hours = ran.as_secs_f64() / 3600.0;
        match market {
            Market::OnDemand => self.usage.cost.vm_on_demand += charge,
            Market::Spot => self.usage.cost.vm_spot += charge,
        }
        self.usage.vm_hours[market as usize] += hours;
    }

    /// Bills pre-warmed capacity held since the last settlement.
    pub(super) fn settle_prewarm(&mut self) {
        let s = self.view.functions.settings;
        if s.prewarm > 0 {
            let held = self.now - self.prewarm_since;
            self.usage.cost.function_compute +=
                s.prewarm as f64 * billing::function_provisioned_charge(&self.sc.catalog.functions, s.memory_mb, held);
        }
        self.prewarm_since = self.now;
    }

    /// Cost so far, counting live VMs and pre-warmed capacity up to now (without minimums).
    pub(super) fn cost_so_far(&self) -> f64 {
        let mut total = self.usage.cost.total();
        for vm in &self.view.vms {
            let price = self.sc.catalog.vm(vm.vm_type).price_per_h(vm.market).unwrap_or(0.0);
            total += price * (self.now - vm.launched_at).as_secs_f64() / 3600.0;
        }
        let s = self.view.functions.settings;
        total
            + s.prewarm as f64
                * billing::function_provisioned_charge(
                    &self.sc.catalog.functions,
                    s.memory_mb,
                    self.now - self.prewarm_since,
                )
    }
}
