//! The reconciler: a bounded pass that finishes what was left. In AWS an
//! EventBridge schedule invokes the provisioner with `{"Reconcile": {}}`
//! every few minutes; laptop mode runs it every minute in the process; the
//! operator runs it by hand with `broker-api reconcile`. Each pass:
//!
//! - enqueues again every operation in progress whose job should have come
//!   back by now and has not written since (its job was lost: an enqueue
//!   that failed after the record write, a message dead-lettered). A
//!   rotation's finishing job lost that way would leave the old password
//!   valid for ever and block every later rotation of the secret; a spares
//!   refill nobody polls would never run;
//! - enqueues every operation past its deadline, which the worker then ends
//!   as failed, saying what timed out;
//! - starts the spare binding users of ready instances that keep fewer than
//!   their plan asks for;
//! - brings every plan's warm pool to its `warm_pool_size`: starts missing
//!   members, deletes failed ones and, when the size was lowered, surplus
//!   ones (one Query for every pool and one for the plans, then only the
//!   plans that keep a pool or still list members; at most
//!   [`crate::domain::pool::MAX_CHANGES_PER_REFILL`] changes per plan);
//! - sweeps for orphans ([`orphans`]): the broker's replication groups,
//!   cache clusters, user groups, users and secrets (laptop mode: cache
//!   directories and secrets) that no record names, each deleted once it
//!   has stayed unnamed for a grace period, never one without the broker's
//!   prefix and tag.
//!
//! Jobs are idempotent, so a job enqueued twice costs one extra look. The
//! pass reads the operations in progress (an index query, no scan) and the
//! instances, and enqueues at most [`MAX_ENQUEUES`] jobs; the rest wait for
//! the next pass.

mod orphans;

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::domain::{InstanceState, Timestamp};
use crate::ports::{Job, JobQueue, Store, StoreError};

pub use orphans::{MAX_REMOVALS, PAGES_PER_PASS, SweepSettings};

/// At most this many jobs per pass.
pub const MAX_ENQUEUES: usize = 200;

/// What one pass did, as the invocation answers and the log line says.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Operations in progress when the pass began.
    pub in_progress: usize,
    /// Enqueued again because their job was overdue.
    pub stalled: usize,
    /// Enqueued to be ended as failed.
    pub past_deadline: usize,
    /// Due, but over [`MAX_ENQUEUES`]: the next pass takes them.
    pub left_for_next_pass: usize,
    /// `spares` operations started.
    pub spares_started: usize,
    /// Warm-pool members started.
    pub pool_added: usize,
    /// Warm-pool members being deleted (surplus or failed).
    pub pool_retired: usize,
    /// Resources of the broker's that no record names, seen in this pass.
    pub orphans_seen: usize,
    /// Of those, deleted (or their deletion started) after their grace
    /// period.
    pub orphans_removed: usize,
    /// Of those, left alone because their tags do not name this broker.
    pub orphans_left_alone: usize,
}

pub struct Reconciler {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    broker: Arc<Broker>,
    /// How long after its job was due an operation that has not written is
    /// taken to have lost it: longer than the queue takes to deliver a job
    /// again after a failed attempt (its visibility timeout).
    stall_secs: i64,
    /// The orphan sweep; `None` turns it off.
    sweep: Option<SweepSettings>,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        broker: Arc<Broker>,
        stall_secs: i64,
    ) -> Reconciler {
        Reconciler { store, queue, broker, stall_secs, sweep: None }
    }

    /// Sweeps for orphans too (see [`orphans`]).
    pub fn with_sweep(mut self, sweep: SweepSettings) -> Reconciler {
        self.sweep = Some(sweep);
        self
    }

    /// One pass at time `now`. A store that cannot be read ends it (the
    /// next pass tries again); a job that cannot be enqueued is logged and
    /// counted as left.
    pub async fn run(&self, now: Timestamp) -> Result<Report, StoreError> {
        let mut report = Report::default();
        let operations = self.store.operations_in_progress().await?;
        report.in_progress = operations.len();
        let mut sent = 0;
        for op in operations {
            let overdue = op.past_deadline(now);
            let stalled = now >= op.due() + self.stall_secs;
            if !overdue && !stalled {
                continue;
            }
            if sent >= MAX_ENQUEUES {
                report.left_for_next_pass += 1;
                continue;
            }
            match self.queue.enqueue(&Job::for_operation(&op), 0).await {
                Ok(()) => {
                    sent += 1;
                    self.broker.metrics().job_requeued(op.kind);
                    if overdue {
                        report.past_deadline += 1;
                        info!(operation = %op.id, step = ?op.step, "reconcile: past its deadline; enqueued to be ended");
                    } else {
                        report.stalled += 1;
                        info!(
                            operation = %op.id,
                            step = ?op.step,
                            due_secs_ago = now - op.due(),
                            "reconcile: its job did not come back; enqueued again"
                        );
                    }
                }
                Err(e) => {
                    report.left_for_next_pass += 1;
                    warn!(operation = %op.id, error = %e, "reconcile: could not enqueue; the next pass tries again");
                }
            }
        }
        let instances = self.store.instances().await?;
        for instance in &instances {
            // A running `spares` is an operation in progress: the loop above
            // already enqueued it if its job was lost.
            if instance.state != InstanceState::Ready || instance.spares_operation.is_some() {
                continue;
            }
            let id = instance.id.clone();
            match self.broker.refill_spares(instance.clone()).await {
                Ok(true) => report.spares_started += 1,
                Ok(false) => {}
                Err(e) => warn!(instance = %id, error = %e, "reconcile: could not look at the spare users"),
            }
        }
        match self.pool_plans().await {
            Ok(plans) => {
                for plan in plans {
                    match self.broker.refill_pool(&plan).await {
                        Ok(refill) => {
                            report.pool_added += refill.added;
                            report.pool_retired += refill.retired;
                        }
                        Err(e) => {
                            warn!(plan = %plan.name, error = %e, "reconcile: could not refill the warm pool")
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "reconcile: could not read the plans or pools; the warm pools wait for the next pass")
            }
        }
        // After the refills, on the instances read before them: what a
        // refill starts is recorded before anything is made, and the
        // sweep's grace period outlasts the making.
        self.sweep_orphans(&instances, now, &mut report).await;
        info!(
            in_progress = report.in_progress,
            stalled = report.stalled,
            past_deadline = report.past_deadline,
            left_for_next_pass = report.left_for_next_pass,
            spares_started = report.spares_started,
            pool_added = report.pool_added,
            pool_retired = report.pool_retired,
            orphans_seen = report.orphans_seen,
            orphans_removed = report.orphans_removed,
            orphans_left_alone = report.orphans_left_alone,
            "reconcile pass done"
        );
        Ok(report)
    }
}

impl Reconciler {
    /// The plans whose pool may need a change: those that keep one, and
    /// those with a stored pool that still lists members (a size lowered to
    /// 0 leaves members to delete). Two reads, whatever the catalog holds.
    async fn pool_plans(&self) -> Result<Vec<crate::domain::Plan>, StoreError> {
        let pools = self.store.pools().await?;
        let plans = self.store.plans().await?;
        Ok(plans
            .into_iter()
            .filter(|p| {
                p.warm_pool_size > 0
                    || pools.iter().any(|pool| pool.plan_id == p.id && !pool.members.is_empty())
            })
            .collect())
    }
}
