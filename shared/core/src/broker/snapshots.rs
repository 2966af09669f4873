//! What the broker checks of day-2 requests before it accepts them (see
//! [`crate::domain::day2`]): which snapshot a restore names, and whether a
//! snapshot action fits the instance's snapshots. Both ask the provider
//! for the snapshots, so a name that cannot work is a 400 at once rather
//! than an operation that fails later.

use super::*;
use crate::domain::day2::{Snapshot, SnapshotKind, SnapshotView};
use crate::domain::{Restored, Timestamp};

impl Broker {
    /// The snapshot `from` names, when its instance is of `service` and in
    /// the same organization and space as the new one. An unknown
    /// instance and another tenant's get the same answer, so a request
    /// learns nothing of instances it may not use.
    pub(super) async fn resolve_restore(
        &self,
        from: &RestoreFrom,
        service: &Service,
        organization_guid: &str,
        space_guid: &str,
    ) -> Result<Restored, OsbError> {
        let refused = || {
            OsbError::BadRequest(format!(
                "parameter '{}': no instance {:?} of service {} in this organization and space has \
                 snapshots to restore from; name one of yours",
                day2::RESTORE_FROM,
                from.instance_id,
                service.name
            ))
        };
        let source = match InstanceId::parse(&from.instance_id) {
            Ok(id) => self.store.instance(&id).await.map_err(store_err)?,
            Err(_) => None,
        };
        let Some(source) = source else { return Err(refused()) };
        let same_tenant = source.service_id == service.id
            && source.organization_guid.as_deref() == Some(organization_guid)
            && source.space_guid.as_deref() == Some(space_guid)
            && !source.pooled;
        if !same_tenant {
            info!(source = %source.id, "restore_from names an instance of another service or tenant; refused");
            return Err(refused());
        }
        let snapshots = self.snapshots_of(&source).await?;
        let chosen = day2::choose(&snapshots, &from.snapshot).map_err(|why| {
            OsbError::BadRequest(format!("parameter '{}': instance {}: {why}", day2::RESTORE_FROM, source.id))
        })?;
        Ok(Restored {
            instance_id: source.id.clone(),
            snapshot: chosen.name.clone(),
            reference: chosen.reference.clone(),
        })
    }

    /// Refuses a snapshot action that cannot work on the instance's
    /// snapshots as they are: a name already taken, or one to delete that
    /// it does not have (only named snapshots are the platform's to
    /// delete).
    pub(super) async fn check_action(
        &self,
        instance: &Instance,
        engine: Engine,
        action: &Action,
    ) -> Result<(), OsbError> {
        let (Action::Snapshot { name } | Action::DeleteSnapshot { name }) = action else { return Ok(()) };
        if !engine.speaks_redis() {
            return Ok(());
        }
        let snapshots = self.snapshots_of(instance).await?;
        let named: Vec<&Snapshot> = snapshots.iter().filter(|s| s.kind == SnapshotKind::Named).collect();
        let exists = named.iter().any(|s| s.name == *name);
        match action {
            Action::Snapshot { .. } if exists => Err(OsbError::BadRequest(format!(
                "parameter '{}': instance {} has a snapshot named {name} already; choose another name, \
                 or delete that one first with '{}'",
                day2::SNAPSHOT,
                instance.id,
                day2::DELETE_SNAPSHOT
            ))),
            Action::DeleteSnapshot { .. } if !exists => Err(OsbError::BadRequest(format!(
                "parameter '{}': instance {} has no snapshot named {name}; {}",
                day2::DELETE_SNAPSHOT,
                instance.id,
                if named.is_empty() {
                    "it has no named snapshots".to_string()
                } else {
                    format!(
                        "its named snapshots: {}",
                        named.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                }
            ))),
            _ => Ok(()),
        }
    }

    /// The snapshots of an instance's cache, newest first, as fetching it
    /// lists them; `None` (with the cause logged) when the provider cannot
    /// say now, so the fetch still answers.
    pub(super) async fn snapshot_views(
        &self,
        instance: &Instance,
        engine: Engine,
    ) -> Option<Vec<SnapshotView>> {
        if !engine.speaks_redis() {
            return None;
        }
        match self.provider.snapshots(instance.cache_key(), None).await {
            Ok(mut snapshots) => {
                snapshots.sort_by_key(|s| std::cmp::Reverse(s.created_at.unwrap_or(Timestamp::MAX)));
                Some(snapshots.iter().map(SnapshotView::from).collect())
            }
            Err(e) => {
                warn!(instance = %instance.id, error = %e, "could not list the cache's snapshots; answering without them");
                None
            }
        }
    }

    /// The provider's snapshots of `instance`'s cache; a provider that
    /// cannot answer now is a 503 the platform retries.
    async fn snapshots_of(&self, instance: &Instance) -> Result<Vec<Snapshot>, OsbError> {
        // A deleted instance's last operation is the deprovision that took
        // its final snapshot.
        let final_key =
            (instance.state == InstanceState::Deleted).then_some(instance.last_operation_id.as_str());
        self.provider.snapshots(instance.cache_key(), final_key).await.map_err(|e| {
            warn!(instance = %instance.id, error = %e, "could not list the cache's snapshots");
            match e {
                ProviderError::Retryable(_) => OsbError::Unavailable(format!(
                    "the snapshots of instance {} cannot be listed now; repeat the request",
                    instance.id
                )),
                ProviderError::Permanent(_) => {
                    OsbError::Internal(format!("listing the snapshots of instance {}: {e}", instance.id))
                }
            }
        })
    }
}
