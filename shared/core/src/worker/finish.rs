//! How a job ends: waiting for the cache, a retry with back-off, a
//! cancellation, success or failure, each recorded with a conditional write.

use super::*;

impl Worker {
    /// Records what the step waits for and looks again after `delay` seconds.
    pub(super) async fn wait(
        &self,
        job: &Job,
        mut op: Operation,
        detail: &str,
        delay: u32,
    ) -> Result<JobOutcome, WorkerError> {
        op.progress(detail)?;
        op.updated_at = now();
        op.due_at = Some(op.updated_at + i64::from(delay));
        op.retries = 0;
        match self.store.save_operation(&mut op).await {
            Ok(()) => {}
            Err(e) if e.is_race() => return Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => return Err(e.into()),
        }
        self.queue.enqueue(job, delay).await?;
        self.metrics.job_requeued(op.kind);
        Ok(JobOutcome::Requeued { delay_secs: delay })
    }

    /// Back off and try again; the description says what is being retried.
    pub(super) async fn retry(
        &self,
        job: &Job,
        mut op: Operation,
        message: String,
    ) -> Result<JobOutcome, WorkerError> {
        op.retries = op.retries.saturating_add(1);
        let delay = backoff(self.config.poll_delay_secs, self.config.max_retry_delay_secs, op.retries);
        warn!(operation = %op.id, step = ?op.step, retries = op.retries, delay, error = %message, "retryable error");
        op.progress(&format!("retrying in {delay} s after: {message}"))?;
        op.updated_at = now();
        op.due_at = Some(op.updated_at + i64::from(delay));
        match self.store.save_operation(&mut op).await {
            Ok(()) => {}
            Err(e) if e.is_race() => return Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => return Err(e.into()),
        }
        self.metrics.step_retried(op.kind);
        self.queue.enqueue(job, delay).await?;
        self.metrics.job_requeued(op.kind);
        Ok(JobOutcome::Requeued { delay_secs: delay })
    }

    pub(super) async fn cancel(
        &self,
        mut op: Operation,
        reason: &str,
        plan_id: &str,
    ) -> Result<JobOutcome, WorkerError> {
        op.fail(now(), format!("{} cancelled: {reason}", op.kind.as_str()))?;
        op.instance_usable = None;
        op.update_repeatable = None;
        match self.store.save_operation(&mut op).await {
            Ok(()) => {
                self.op_ended(&op, plan_id);
                Ok(JobOutcome::Finished(OperationState::Failed))
            }
            Err(e) if e.is_race() => Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn finish_succeeded(
        &self,
        mut op: Operation,
        mut ctx: Context,
        description: String,
    ) -> Result<Option<JobOutcome>, WorkerError> {
        let t = now();
        op.succeed(t, &description)?;
        let result = match op.kind {
            OperationKind::Provision | OperationKind::Update | OperationKind::Deprovision => {
                let i = &mut ctx.instance;
                match op.kind {
                    OperationKind::Provision => {
                        i.apply(InstanceEvent::Provisioned)?;
                    }
                    OperationKind::Update => {
                        if let Some(p) = i.pending_update.take() {
                            i.plan_id = p.plan_id;
                            i.parameters = p.parameters;
                            i.engine_version = p.engine_version;
                            if let Some(engine) = p.engine {
                                i.engine = Some(engine);
                            }
                            if let Some(version) = p.maintenance_version {
                                i.maintenance_version = Some(version);
                            }
                        }
                        i.apply(InstanceEvent::UpdateEnded)?;
                    }
                    _ => {
                        i.apply(InstanceEvent::Deprovisioned)?;
                        i.admin_secret = None;
                        i.endpoint = None;
                        i.spares.clear();
                        i.spares_to_schedule.clear();
                        // A final snapshot is restorable while the record
                        // says whose it is: the plan's snapshot retention,
                        // and never less than any finished record is kept.
                        let snapshot_days = ctx
                            .plan
                            .as_ref()
                            .filter(|p| p.final_snapshot)
                            .map_or(0, |p| i64::from(p.snapshot_retention_days) * 86_400);
                        let keep =
                            snapshot_days.max(crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                        i.expires_at = Some(t + keep);
                    }
                }
                i.updated_at = t;
                self.store.save_instance(i, Some(&mut op)).await
            }
            OperationKind::Bind | OperationKind::Unbind => {
                let Some(b) = ctx.binding.as_mut() else {
                    return Ok(Some(JobOutcome::Skipped("binding vanished")));
                };
                if op.kind == OperationKind::Bind {
                    b.apply(BindingEvent::Created)?;
                } else {
                    b.apply(BindingEvent::Deleted)?;
                    b.secret = None;
                    b.expires_at = Some(t + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                }
                b.updated_at = t;
                self.store.save_binding(b, Some(&mut op)).await
            }
            OperationKind::Spares => {
                ctx.instance.spares_operation = None;
                ctx.instance.updated_at = t;
                self.store.save_instance(&mut ctx.instance, Some(&mut op)).await
            }
            OperationKind::Rotate => match ctx.binding.as_mut() {
                Some(b) => {
                    b.rotation = None;
                    b.updated_at = t;
                    self.store.save_binding(b, Some(&mut op)).await
                }
                None => {
                    ctx.instance.rotation = None;
                    ctx.instance.updated_at = t;
                    self.store.save_instance(&mut ctx.instance, Some(&mut op)).await
                }
            },
        };
        match result {
            Ok(()) => {
                info!(operation = %op.id, kind = op.kind.as_str(), instance = %op.instance_id, "operation succeeded");
                self.op_ended(&op, &ctx.instance.plan_id);
                Ok(Some(JobOutcome::Finished(OperationState::Succeeded)))
            }
            // A concurrent request changed the record (say, a deprovision
            // during provisioning): read everything again, which cancels.
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_failed_operation(&self, mut op: Operation) -> Result<Option<JobOutcome>, WorkerError> {
        match self.store.save_operation(&mut op).await {
            Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the failure ([`Worker::record_failure`]) and counts it.
    pub(super) async fn finish_failed(
        &self,
        op: Operation,
        ctx: Option<Context>,
        description: String,
    ) -> Result<Option<JobOutcome>, WorkerError> {
        let (kind, started_at) = (op.kind, op.started_at);
        // Without a context the plan is not known without another read.
        let plan_id = ctx.as_ref().map_or_else(|| "unknown".to_string(), |c| c.instance.plan_id.clone());
        let outcome = self.record_failure(op, ctx, description).await?;
        if let Some(JobOutcome::Finished(OperationState::Failed)) = outcome {
            self.ended(kind, &plan_id, OperationState::Failed, started_at, now());
        }
        Ok(outcome)
    }

    async fn record_failure(
        &self,
        mut op: Operation,
        ctx: Option<Context>,
        description: String,
    ) -> Result<Option<JobOutcome>, WorkerError> {
        let t = now();
        warn!(operation = %op.id, kind = op.kind.as_str(), step = ?op.step, error = %description, "operation failed");
        op.fail(t, description)?;
        // Without a context (the plan left the catalog, say) the records
        // themselves still move to their failed states, so that nothing stays
        // "in progress" and the platform can try again.
        let (instance, binding) = match ctx {
            Some(ctx) => (Some(ctx.instance), ctx.binding),
            None => {
                let instance = self.store.instance(&op.instance_id).await?;
                let binding = match &op.binding_id {
                    Some(b) => self.store.binding(&op.instance_id, b).await?,
                    None => None,
                };
                (instance, binding)
            }
        };
        if op.kind == OperationKind::Spares {
            // The instance no longer names it, so the next bind that finds
            // too few spares starts another.
            return match instance.filter(|i| i.spares_operation.as_deref() == Some(op.id.as_str())) {
                Some(mut i) => {
                    i.spares_operation = None;
                    i.updated_at = t;
                    match self.store.save_instance(&mut i, Some(&mut op)).await {
                        Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
                        Err(e) if e.is_race() => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                }
                None => self.save_failed_operation(op).await,
            };
        }
        let mut instance = instance.filter(|i| i.last_operation_id == op.id);
        let mut binding = binding.filter(|b| b.last_operation_id == op.id);
        let result = match op.kind {
            OperationKind::Provision | OperationKind::Update | OperationKind::Deprovision => {
                let Some(i) = instance.as_mut() else {
                    return self.save_failed_operation(op).await;
                };
                let event = match op.kind {
                    OperationKind::Provision => InstanceEvent::ProvisionFailed,
                    OperationKind::Update => InstanceEvent::UpdateEnded,
                    _ => InstanceEvent::DeprovisionFailed,
                };
                i.pending_update = None;
                i.apply(event)?;
                i.updated_at = t;
                self.store.save_instance(i, Some(&mut op)).await
            }
            OperationKind::Bind | OperationKind::Unbind => match binding.as_mut() {
                Some(b) => {
                    let event = if op.kind == OperationKind::Bind {
                        BindingEvent::CreateFailed
                    } else {
                        BindingEvent::DeleteFailed
                    };
                    b.apply(event)?;
                    b.updated_at = t;
                    self.store.save_binding(b, Some(&mut op)).await
                }
                None => self.store.save_operation(&mut op).await,
            },
            // The record keeps its rotation (in its grace phase, with this
            // failed operation), so the state shows what is left: the cache
            // still accepts the previous password. A new rotation replaces it.
            OperationKind::Rotate | OperationKind::Spares => self.store.save_operation(&mut op).await,
        };
        match result {
            Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
            // A concurrent request changed the record (say, a deprovision
            // during provisioning): read everything again, which cancels.
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
