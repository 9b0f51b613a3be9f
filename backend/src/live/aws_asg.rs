//! The Auto Scaling VM provider (the `aws` feature, `[cluster.aws] vm_provider = "asg"`): [`AsgVms`] runs
//! the VM workers as the instances of one Auto Scaling group per catalog VM type (`[cluster.aws] asg`, by
//! the type's name). Only how instances come and go differs from [`super::aws::Ec2Vms`]; readiness,
//! dispatch (`http://PRIVATE_IP:PORT/v2/models/NAME/infer`), draining and the view are the same code
//! ([`CloudVms`] over the [`AsgFleet`]).
//!
//! - `Provision` raises the group's desired capacity by the count (`SetDesiredCapacity` with
//!   `HonorCooldown = false`, after reading it with `DescribeAutoScalingGroups`; the adapter's own changes
//!   are serialised, changes made by others at the same moment are not). Each poll reads the groups'
//!   instances and lifecycle states: an instance not yet known, pending or in service, is given to the
//!   oldest provisioning worker of the group's VM type still waiting for one (instances already in the
//!   group are adopted this way too); a known instance leaving the group (terminating, detaching, standby,
//!   warm pool) takes its worker away and its requests route again. Private addresses and readiness come
//!   from the EC2 poll `Ec2Vms` does.
//! - `Release` / `ReleaseVms`: `TerminateInstanceInAutoScalingGroup` with
//!   `ShouldDecrementDesiredCapacity = true` (a ready instance after it drains); a worker with no instance
//!   yet lowers the desired capacity by one.
//! - Spot is refused: it would need the group's mixed-instances policy, which is not read or changed (the
//!   group's own purchase options apply). Spot interruption notices are refused as in `Ec2Vms`.
//!
//! Nothing here has run against AWS from this repository (no credentials, no network); only the group
//! configuration and the lifecycle-state mapping are tested.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_autoscaling::error::DisplayErrorContext as AsgErr;
use aws_sdk_autoscaling::types::LifecycleState;
use hyscale_policies::{Catalog, InstanceId, Market, VmState, VmTypeId};

use super::aws::{CloudVms, Ec2Setup, Fleet, Inner};
use super::provider::BoxFuture;
use crate::WallClock;

/// VM workers as the instances of Auto Scaling groups (see the module documentation).
pub type AsgVms = CloudVms<AsgFleet>;

impl AsgVms {
    /// The adapter for the catalog's VM types, on the groups named in `setup.config.asg`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        setup: Ec2Setup,
        catalog: &Catalog,
        clock: WallClock,
    ) -> Result<AsgVms, String> {
        let names: Vec<&str> = catalog.vm_types.iter().map(|t| t.name.as_str()).collect();
        let groups = groups_by_type(&names, &setup.config.asg)?;
        let fleet = AsgFleet {
            client: aws_sdk_autoscaling::Client::new(sdk),
            groups,
            serial: Arc::new(tokio::sync::Mutex::new(())),
        };
        Ok(CloudVms::with_fleet(fleet, setup, catalog, clock))
    }
}

/// The group of each VM type (indexed like the catalog) from `[cluster.aws] asg`: every name must be a
/// catalog VM type and at least one type must have a group.
pub fn groups_by_type(type_names: &[&str], asg: &BTreeMap<String, String>) -> Result<Vec<Option<String>>, String> {
    if let Some(unknown) = asg.keys().find(|k| !type_names.contains(&k.as_str())) {
        return Err(format!("asg: {unknown:?} is not a VM type of the catalog"));
    }
    if let Some((name, _)) = asg.iter().find(|(_, g)| g.is_empty()) {
        return Err(format!("asg: empty group name for {name:?}"));
    }
    if asg.is_empty() {
        return Err("vm_provider = \"asg\" needs an Auto Scaling group per VM type in asg = { ... }".into());
    }
    Ok(type_names.iter().map(|t| asg.get(*t).cloned()).collect())
}

/// What an instance's Auto Scaling lifecycle state means for its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsgPhase {
    /// Launching (lifecycle hooks included): it may be given to a worker waiting for one.
    Starting,
    /// In service (a root volume replacement keeps it): readiness is the worker's own endpoint.
    InService,
    /// Leaving the group's capacity: terminating, detaching, standby, warm pool, quarantined.
    Leaving,
}

/// The phase of an Auto Scaling lifecycle state (a state this SDK does not know counts as starting: it is
/// neither taken away nor served before its endpoint answers).
pub fn lifecycle_phase(state: &LifecycleState) -> AsgPhase {
    match state {
        LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed => AsgPhase::Starting,
        LifecycleState::InService
        | LifecycleState::ReplacingRootVolume
        | LifecycleState::ReplacingRootVolumeProceed
        | LifecycleState::ReplacingRootVolumeWait
        | LifecycleState::RootVolumeReplaced => AsgPhase::InService,
        LifecycleState::Detached
        | LifecycleState::Detaching
        | LifecycleState::EnteringStandby
        | LifecycleState::Standby
        | LifecycleState::Quarantined
        | LifecycleState::Terminated
        | LifecycleState::Terminating
        | LifecycleState::TerminatingProceed
        | LifecycleState::TerminatingRetained
        | LifecycleState::TerminatingWait
        | LifecycleState::WarmedHibernated
        | LifecycleState::WarmedPending
        | LifecycleState::WarmedPendingProceed
        | LifecycleState::WarmedPendingRetained
        | LifecycleState::WarmedPendingWait
        | LifecycleState::WarmedRunning
        | LifecycleState::WarmedStopped
        | LifecycleState::WarmedTerminated
        | LifecycleState::WarmedTerminating
        | LifecycleState::WarmedTerminatingProceed
        | LifecycleState::WarmedTerminatingRetained
        | LifecycleState::WarmedTerminatingWait => AsgPhase::Leaving,
        _ => AsgPhase::Starting,
    }
}

/// The [`Fleet`] that starts and stops workers through one Auto Scaling group per VM type.
pub struct AsgFleet {
    client: aws_sdk_autoscaling::Client,
    /// The group of each VM type, indexed like the catalog.
    groups: Vec<Option<String>>,
    /// Serialises the adapter's read-then-set of desired capacities.
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl AsgFleet {
    /// Changes a group's desired capacity by `delta` (read, then set, without honouring the cooldown).
    fn adjust(&self, group: String, delta: i32) -> impl Future<Output = Result<i32, String>> + Send + 'static {
        let (client, serial) = (self.client.clone(), Arc::clone(&self.serial));
        async move {
            let _serial = serial.lock().await;
            let answer = client
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&group)
                .send()
                .await
                .map_err(|e| format!("DescribeAutoScalingGroups: {}", AsgErr(&e)))?;
            let desired = answer
                .auto_scaling_groups()
                .first()
                .and_then(|g| g.desired_capacity())
                .ok_or_else(|| format!("no Auto Scaling group {group:?}"))?;
            let target = desired.saturating_add(delta).max(0);
            client
                .set_desired_capacity()
                .auto_scaling_group_name(&group)
                .desired_capacity(target)
                .honor_cooldown(false)
                .send()
                .await
                .map_err(|e| format!("SetDesiredCapacity: {}", AsgErr(&e)))?;
            Ok(target)
        }
    }

    fn group(&self, vm_type: VmTypeId) -> Option<&String> {
        self.groups.get(vm_type.0 as usize).and_then(Option::as_ref)
    }
}

impl Fleet for AsgFleet {
    fn check(&self, vm_type: VmTypeId, type_name: &str, market: Market) -> Result<(), String> {
        if self.group(vm_type).is_none() {
            tracing::warn!(vm_type = type_name, "no Auto Scaling group for the type in [cluster.aws] asg");
            return Err(hyscale_policies::Refusal::UnknownVmType.to_string());
        }
        if market == Market::Spot {
            // Spot through a group needs its mixed-instances policy, which is not supported (the group's own
            // purchase options apply).
            return Err(hyscale_policies::Refusal::NotSoldOnMarket.to_string());
        }
        Ok(())
    }

    fn launch(inner: &Arc<Inner<Self>>, ids: Vec<InstanceId>, vm_type: VmTypeId, _market: Market) {
        let Some(group) = inner.fleet.group(vm_type).cloned() else { return };
        let raise = inner.fleet.adjust(group.clone(), i32::try_from(ids.len()).unwrap_or(i32::MAX));
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            match raise.await {
                Ok(desired) => tracing::info!(%group, desired, "Auto Scaling group raised"),
                Err(e) => {
                    tracing::error!(%group, error = %e, "raising the Auto Scaling group failed");
                    let mut st = inner.lock();
                    for id in ids {
                        if st.workers.get(&id).is_some_and(|w| w.ec2_id.is_none()) {
                            st.load_failures += 1;
                            inner.forget(&mut st, id);
                        }
                    }
                }
            }
        });
    }

    fn stop(inner: &Inner<Self>, vm_type: VmTypeId, instance: Option<String>) {
        let Some(group) = inner.fleet.group(vm_type).cloned() else { return };
        match instance {
            Some(id) => {
                let client = inner.fleet.client.clone();
                tokio::spawn(async move {
                    let answer = client
                        .terminate_instance_in_auto_scaling_group()
                        .instance_id(&id)
                        .should_decrement_desired_capacity(true)
                        .send()
                        .await;
                    if let Err(e) = answer {
                        tracing::error!(%id, %group, error = %AsgErr(&e), "TerminateInstanceInAutoScalingGroup failed");
                    }
                });
            }
            None => {
                let lower = inner.fleet.adjust(group.clone(), -1);
                tokio::spawn(async move {
                    if let Err(e) = lower.await {
                        tracing::error!(%group, error = %e, "lowering the Auto Scaling group failed; lower it by hand");
                    }
                });
            }
        }
    }

    fn refresh(inner: &Inner<Self>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let names: BTreeSet<String> = inner.fleet.groups.iter().flatten().cloned().collect();
            let answer = match inner
                .fleet
                .client
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.into_iter().collect()))
                .send()
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %AsgErr(&e), "DescribeAutoScalingGroups failed");
                    return;
                }
            };
            let mut st = inner.lock();
            for g in answer.auto_scaling_groups() {
                let Some(name) = g.auto_scaling_group_name() else { continue };
                let types: Vec<VmTypeId> = (0..inner.fleet.groups.len())
                    .filter(|&i| inner.fleet.groups[i].as_deref() == Some(name))
                    .map(|i| VmTypeId(i as u16))
                    .collect();
                for i in g.instances() {
                    let (Some(iid), Some(state)) = (i.instance_id(), i.lifecycle_state()) else { continue };
                    let owner = st.workers.iter().find(|(_, w)| w.ec2_id.as_deref() == Some(iid)).map(|(id, _)| *id);
                    match (owner, lifecycle_phase(state)) {
                        (Some(id), AsgPhase::Leaving) => {
                            tracing::warn!(instance = id.0, %iid, ?state, "instance left its Auto Scaling group");
                            inner.forget(&mut st, id);
                        }
                        (None, AsgPhase::Starting | AsgPhase::InService) => {
                            let waiting = st.workers.iter_mut().find(|(_, w)| {
                                types.contains(&w.vm_type) && w.ec2_id.is_none() && w.state == VmState::Provisioning
                            });
                            if let Some((id, w)) = waiting {
                                tracing::info!(instance = id.0, %iid, group = name, "Auto Scaling instance assigned");
                                w.ec2_id = Some(iid.to_owned());
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_indexed_like_the_catalog() {
        let asg: BTreeMap<String, String> =
            [("c5.xlarge".to_owned(), "big".to_owned()), ("c5.large".to_owned(), "small".to_owned())].into();
        let groups = groups_by_type(&["c5.large", "m5.large", "c5.xlarge"], &asg).unwrap();
        assert_eq!(groups, vec![Some("small".to_owned()), None, Some("big".to_owned())]);
        let typo: BTreeMap<String, String> = [("c5.lrage".to_owned(), "g".to_owned())].into();
        assert!(groups_by_type(&["c5.large"], &typo).unwrap_err().contains("c5.lrage"));
        assert!(groups_by_type(&["c5.large"], &BTreeMap::new()).is_err());
        let empty: BTreeMap<String, String> = [("c5.large".to_owned(), String::new())].into();
        assert!(groups_by_type(&["c5.large"], &empty).is_err());
    }

    #[test]
    fn config_selects_the_provider_and_names_the_groups() {
        use super::super::aws::{AwsConfig, VmProviderKind};
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "function_name": "hyscale-fn", "vm_provider": "asg", "asg": {"c5.large": "workers-c5"}
        }))
        .unwrap();
        assert_eq!(c.vm_provider, VmProviderKind::Asg);
        assert_eq!(c.asg.get("c5.large").map(String::as_str), Some("workers-c5"));
        assert!(c.launch_template.is_empty());
        let d: AwsConfig =
            serde_json::from_value(serde_json::json!({"function_name": "f", "launch_template": "lt-1"})).unwrap();
        assert_eq!((d.vm_provider, d.asg.len()), (VmProviderKind::Ec2, 0));
        let bad = serde_json::json!({"function_name": "f", "vm_provider": "ecs"});
        assert!(serde_json::from_value::<AwsConfig>(bad).is_err());
    }

    #[test]
    fn lifecycle_states_map_to_phases() {
        use LifecycleState as L;
        for s in [L::Pending, L::PendingWait, L::PendingProceed] {
            assert_eq!(lifecycle_phase(&s), AsgPhase::Starting, "{s:?}");
        }
        for s in [L::InService, L::ReplacingRootVolume, L::RootVolumeReplaced] {
            assert_eq!(lifecycle_phase(&s), AsgPhase::InService, "{s:?}");
        }
        for s in [L::Terminating, L::TerminatingWait, L::Terminated, L::Detaching, L::Standby, L::WarmedRunning] {
            assert_eq!(lifecycle_phase(&s), AsgPhase::Leaving, "{s:?}");
        }
        assert_eq!(lifecycle_phase(&L::from("SomethingNew")), AsgPhase::Starting);
    }
}
