//! The warm pool, seen from the broker: a provision that claims a ready
//! cache of its plan's pool, and the refill that brings a pool back to its
//! plan's `warm_pool_size` (after every claim, and on every reconciler
//! pass). See [`crate::domain::pool`] for the records.

use super::*;
use crate::domain::pool::{self, MAX_CHANGES_PER_REFILL, Pool};
use crate::domain::{Step, Timestamp};
use crate::ports::PoolChange;

/// How a claim from the pool went.
pub(super) enum Claim {
    /// The instance took a pooled cache; its provision operation succeeded.
    Claimed { operation: String },
    /// No ready member: the provision makes a cache of its own.
    NoneReady,
    /// Someone wrote the instance's record first: read it again.
    Raced,
}

/// What one refill of one plan's pool did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Refill {
    /// Members started.
    pub added: usize,
    /// Members deleted because the pool holds more than its plan asks for,
    /// or because their provision failed.
    pub retired: usize,
    /// Members taken off the list because they are gone.
    pub dropped: usize,
}

impl Broker {
    /// Hands `instance` (built from the request, `Provisioning`) a ready
    /// cache of `plan`'s pool, in one conditional write of the pool, the
    /// member and the instance, so a member never goes to two instances.
    /// The instance is `Ready` at once; a `spares` operation then tags the
    /// cache with its ids, and a replacement member is started.
    pub(super) async fn claim_from_pool(
        &self,
        template: &Instance,
        plan: &Plan,
        engine: Engine,
        replacing: Option<u64>,
    ) -> Result<Claim, OsbError> {
        for _ in 0..RACE_RETRIES {
            let Some(mut pool) = self.store.pool(&plan.id).await.map_err(store_err)? else {
                return Ok(Claim::NoneReady);
            };
            let mut chosen = None;
            for key in &pool.members {
                if let Some(m) = self.store.instance(key).await.map_err(store_err)?
                    && pool::claimable(&m, plan, &template.engine_version)
                {
                    chosen = Some(m);
                    break;
                }
            }
            let Some(mut member) = chosen else { return Ok(Claim::NoneReady) };
            let t = now();
            let id = template.id.as_str();
            let mut provision =
                Operation::start(OperationKind::Provision, id, None, t, plan.maximum_polling_duration);
            provision
                .succeed(
                    t,
                    &format!(
                        "provisioned from the warm pool: {} {} on plan {}, a cache made in advance",
                        engine.as_str(),
                        member.engine_version,
                        plan.name
                    ),
                )
                .map_err(|e| refused(e, id))?;
            let mut tagging = Operation::start(OperationKind::Spares, id, None, t, SPARES_DEADLINE_SECS);
            tagging.advance(Step::TagCache).map_err(|e| refused(e, id))?;
            let mut instance = template.clone();
            instance.state = InstanceState::Ready;
            instance.last_operation_id = provision.id.clone();
            instance.cache = Some(member.id.clone());
            instance.admin_secret = member.admin_secret.clone();
            instance.endpoint = member.endpoint.clone();
            instance.spares = member.spares.clone();
            instance.spare_seq = member.spare_seq;
            instance.spares_operation = Some(tagging.id.clone());
            instance.rotated_at = member.rotated_at;
            instance.created_at = t;
            instance.updated_at = t;
            member.apply(InstanceEvent::Claimed).map_err(|e| refused(e, &member.id))?;
            member.claimed_by = Some(id.to_string());
            member.updated_at = t;
            pool.remove(&member.id);
            let change = PoolChange::Claim {
                member: &mut member,
                instance: &mut instance,
                provision: &mut provision,
                tagging: &mut tagging,
                replacing,
            };
            match self.store.save_pool(&mut pool, change).await {
                Ok(()) => {
                    info!(instance = %id, plan = %plan.name, cache = %member.id, "provisioned from the warm pool");
                    if let Err(e) = self.enqueue(&tagging).await {
                        // The reconciler enqueues it again.
                        warn!(instance = %id, error = %e, "could not enqueue the tagging of the claimed cache");
                    }
                    if let Err(e) = self.refill_pool(plan).await {
                        warn!(plan = %plan.name, error = %e, "could not start a replacement for the claimed cache; the reconciler will");
                    }
                    return Ok(Claim::Claimed { operation: provision.id });
                }
                // The instance's record changed under us: the caller reads it again.
                Err(StoreError::AlreadyExists(what) | StoreError::Conflict(what))
                    if what == format!("service instance {id}") =>
                {
                    return Ok(Claim::Raced);
                }
                // Another claim or refill changed the pool, or the member: read both again.
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(Claim::NoneReady)
    }

    /// Brings `plan`'s pool to `warm_pool_size` ready or starting members:
    /// takes gone members off the list, deprovisions failed ones, starts
    /// missing ones, and deprovisions the newest when there are too many
    /// (a lowered `warm_pool_size`). At most [`MAX_CHANGES_PER_REFILL`]
    /// changes; the next refill goes on.
    pub async fn refill_pool(&self, plan: &Plan) -> Result<Refill, OsbError> {
        let wanted = usize::from(plan.warm_pool_size);
        let mut refill = Refill::default();
        let mut pool = match self.store.pool(&plan.id).await.map_err(store_err)? {
            Some(p) => p,
            None if wanted == 0 => return Ok(refill),
            None => Pool::empty(&plan.id),
        };
        let mut attempts = 0;
        while attempts < MAX_CHANGES_PER_REFILL + RACE_RETRIES {
            attempts += 1;
            let mut live = Vec::new();
            let mut dead = None;
            for key in &pool.members {
                match self.store.instance(key).await.map_err(store_err)? {
                    Some(m) if pool::live(&m) => live.push(m),
                    other => {
                        dead = Some((key.clone(), other));
                        break;
                    }
                }
            }
            let t = now();
            let (result, op, counter) = if let Some((key, record)) = dead {
                pool.remove(&key);
                match record {
                    Some(mut m) if m.state == InstanceState::ProvisionFailed => {
                        let mut op = retire_member(&mut m, plan, t)?;
                        let change = PoolChange::Retire { member: &mut m, operation: &mut op };
                        (self.store.save_pool(&mut pool, change).await, Some(op), &mut refill.retired)
                    }
                    _ => (
                        self.store.save_pool(&mut pool, PoolChange::Nothing).await,
                        None,
                        &mut refill.dropped,
                    ),
                }
            } else if live.len() < wanted {
                let (mut member, mut op) = pool_member(plan, t);
                pool.members.push(member.id.clone());
                let change = PoolChange::Add { member: &mut member, operation: &mut op };
                (self.store.save_pool(&mut pool, change).await, Some(op), &mut refill.added)
            } else if live.len() > wanted
                && let Some(mut m) = live.pop()
            {
                pool.remove(&m.id);
                let mut op = retire_member(&mut m, plan, t)?;
                let change = PoolChange::Retire { member: &mut m, operation: &mut op };
                (self.store.save_pool(&mut pool, change).await, Some(op), &mut refill.retired)
            } else {
                break;
            };
            match result {
                Ok(()) => {
                    *counter += 1;
                    if let Some(op) = op {
                        info!(plan = %plan.name, member = %op.instance_id, kind = op.kind.as_str(), "warm pool changed");
                        if let Err(e) = self.enqueue(&op).await {
                            warn!(operation = %op.id, error = %e, "could not enqueue a warm-pool operation; the reconciler will");
                        }
                    }
                    if refill.added + refill.retired + refill.dropped >= MAX_CHANGES_PER_REFILL {
                        break;
                    }
                }
                Err(e) if e.is_race() => {
                    pool = self
                        .store
                        .pool(&plan.id)
                        .await
                        .map_err(store_err)?
                        .unwrap_or_else(|| Pool::empty(&plan.id));
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(refill)
    }
}

/// A new member of `plan`'s pool and its provision: the plan's default
/// engine version, no parameters, no tenant, its cache named by its own id.
fn pool_member(plan: &Plan, t: Timestamp) -> (Instance, Operation) {
    let id = pool::member_id();
    let op = Operation::start(OperationKind::Provision, &id, None, t, plan.maximum_polling_duration);
    (Instance { pooled: true, ..Instance::provisioning(&id, plan, &op.id, t) }, op)
}

/// Moves a member to deprovisioning (as a deprovision request would) and
/// returns that operation, which deletes its cache and secrets.
fn retire_member(m: &mut Instance, plan: &Plan, t: Timestamp) -> Result<Operation, OsbError> {
    start_deprovision(m, plan.maximum_polling_duration, t).map_err(|e| refused(e, &m.id))
}
