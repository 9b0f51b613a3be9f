//! Spot interruptions: the notice (the policy hears of it; the instance takes no new requests) and, at its
//! deadline, the loss of the instance, whose work is routed again.

use super::*;

impl World<'_> {
    pub(super) fn spot_notice(&mut self, i: u32) {
        let vm = &mut self.vms[i as usize];
        if vm.state.is_none() || vm.noticed {
            return;
        }
        vm.noticed = true;
        let deadline = self.now.saturating_add(self.spot_notice);
        let notice = SpotNotice { instance: InstanceId(i as u64), vm_type: vm.vm_type, deadline };
        let view_idx = vm.view_idx;
        self.view.vms[view_idx].interruption_at = Some(deadline);
        self.view.notices.push(notice);
        self.sync_dispatch(i);
        self.queue.push(deadline, Event::SpotTerminate(i));
        let mut actions = mem::take(&mut self.actions);
        self.policy.on_spot_notice(&notice, &self.view, &mut actions);
        self.apply_all(&mut actions);
        self.actions = actions;
    }
}
