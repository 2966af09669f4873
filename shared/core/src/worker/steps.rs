//! The steps of every operation, one at a time: what each asks of the cache,
//! the secret store and the records, and which step comes next.

use super::*;

impl Worker {
    /// Runs the operation's current step once.
    pub(super) async fn run_step(
        &self,
        op: &mut Operation,
        ctx: &mut Context,
    ) -> Result<StepResult, StepError> {
        let id = ctx.instance.id.clone();
        // What the provider's calls name: the cache's key, which is the
        // instance id unless the cache came from the warm pool.
        let cache = ctx.instance.cache_key().to_string();
        match op.step {
            // ---------------------------------------------------- provision
            Step::CreateAdminSecret => {
                if !ctx.instance.engine_of(ctx.service()?).speaks_redis()
                    || ctx.instance.admin_secret.is_some()
                {
                    return Ok(StepResult::Next(Step::CreateSpareSecrets));
                }
                let reference = self.create_secret(&Target::Admin { instance_id: id.clone() }, true).await?;
                ctx.instance.admin_secret = Some(reference);
                ctx.instance.updated_at = now();
                self.store.save_instance(&mut ctx.instance, None).await?;
                Ok(StepResult::Next(Step::CreateSpareSecrets))
            }
            Step::CreateSpareSecrets => {
                // Recorded first, so that clean-up finds every secret made.
                let wanted = u32::try_from(self.spares_wanted(ctx)?).unwrap_or(u32::MAX);
                let i = &mut ctx.instance;
                if i.spare_seq < wanted {
                    while i.spare_seq < wanted {
                        i.spare_seq += 1;
                        i.spares.push(SpareUser::numbered(i.spare_seq));
                    }
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                    return Ok(StepResult::Next(Step::CreateSpareSecrets));
                }
                let mut made = false;
                for n in 0..i.spares.len() {
                    if i.spares[n].secret.is_some() {
                        continue;
                    }
                    let target =
                        Target::Spare { instance_id: id.clone(), username: i.spares[n].username.clone() };
                    // Scheduled for rotation once a bind claims it: nobody
                    // holds a spare's password before.
                    i.spares[n].secret = Some(self.create_secret(&target, false).await?);
                    made = true;
                }
                if made {
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                }
                Ok(StepResult::Next(Step::CreateCache))
            }
            Step::CreateCache => {
                let mut spec = self.spec(ctx)?;
                spec.spare_users = self.spare_users(ctx).await?;
                Ok(then(self.provider.create(&spec).await?, Step::WaitCacheAvailable))
            }
            Step::WaitCacheAvailable => match self.provider.progress(&cache).await? {
                Progress::Done => Ok(StepResult::Next(Step::PutAlarms)),
                Progress::Working { detail } => Ok(StepResult::Wait(detail)),
            },
            Step::PutAlarms => {
                let note = self.put_alarms(ctx).await?;
                match op.kind {
                    OperationKind::Provision => self.provisioned(ctx, &cache, note).await,
                    OperationKind::Update => {
                        // A plan change can move or add endpoints (a reader
                        // once there are replicas), and a restart a laptop
                        // server's port: saved with the success.
                        ctx.instance.endpoint = Some(self.provider.endpoint(&cache).await?);
                        let plan = ctx.plan()?;
                        let moved = plan.id != ctx.instance.plan_id;
                        let moved_engine = ctx.instance.pending_update.as_ref().and_then(|p| p.engine);
                        let said = match ctx.action() {
                            _ if moved_engine.is_some() => format!(
                                "updated: now {} {} on plan {}",
                                moved_engine.map(|e| e.as_str()).unwrap_or_default(),
                                ctx.instance
                                    .pending_update
                                    .as_ref()
                                    .map(|p| p.engine_version.as_str())
                                    .unwrap_or_default(),
                                plan.name
                            ),
                            Some(action) if !moved => action.done(op.action_steps.len()),
                            Some(action) => {
                                format!(
                                    "updated: now on plan {}; {}",
                                    plan.name,
                                    action.done(op.action_steps.len())
                                )
                            }
                            None => format!("updated: now on plan {}", plan.name),
                        };
                        Ok(StepResult::Finished(said + &note.unwrap_or_default()))
                    }
                    _ => {
                        if let Some(note) = note {
                            warn!(operation = %op.id, instance = %id, "the claimed cache{note}");
                        }
                        Ok(StepResult::Next(Step::ScheduleSpareRotation))
                    }
                }
            }
            // ---------------------------------------------------- update
            // A plan change can take several changes, one at a time (add
            // replicas, then change the node type ...): modify starts the next
            // one, and is asked again each time the cache is available, until
            // it has nothing left to do.
            Step::ModifyCache => match self.provider.modify(&self.spec(ctx)?).await? {
                // The changes are in: the update's action, if it has one.
                Progress::Done if ctx.action().is_some() => Ok(StepResult::Next(Step::PlanAction)),
                Progress::Done => Ok(StepResult::Next(Step::PutAlarms)),
                working @ Progress::Working { .. } => Ok(then(working, Step::WaitCacheModified)),
            },
            Step::PlanAction | Step::StartAction | Step::WaitAction => self.action_step(op, ctx).await,
            Step::WaitCacheModified => match self.provider.progress(&cache).await? {
                Progress::Done => Ok(StepResult::Next(Step::ModifyCache)),
                Progress::Working { detail } => Ok(StepResult::Wait(detail)),
            },
            // ---------------------------------------------------- deprovision
            Step::DeleteCache => {
                if let Some(waiting) = self.superseded_running(op).await? {
                    return Ok(StepResult::Wait(waiting));
                }
                let final_snapshot = ctx.final_snapshot();
                if ctx.plan.is_none() {
                    warn!(operation = %op.id, instance = %id, plan = %ctx.instance.plan_id,
                        "the instance's plan has left the catalog; deleting without a final snapshot");
                }
                let snapshot = final_snapshot.then_some(op.id.as_str());
                Ok(then(self.provider.delete(&cache, snapshot).await?, Step::WaitCacheDeleted))
            }
            Step::WaitCacheDeleted => {
                match self.provider.delete(&cache, ctx.final_snapshot().then_some(op.id.as_str())).await? {
                    Progress::Done => Ok(StepResult::Next(Step::DeleteAlarms)),
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::DeleteAlarms => {
                match self.alarms.delete(&cache).await {
                    Ok(()) => {}
                    // The orphan sweep finds alarms whose cache is gone.
                    Err(ProviderError::Permanent(why)) => {
                        warn!(operation = %op.id, instance = %id, error = %why,
                        "the cache's CloudWatch alarms could not be deleted; the orphan sweep deletes them later")
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(StepResult::Next(Step::DeleteUsers))
            }
            Step::DeleteUsers => {
                // The cache took the users its user group held. A user made
                // but not yet added (a crash in between) would outlive it:
                // every user the records name is deleted by name.
                let mut names: Vec<String> = self
                    .store
                    .bindings(&id)
                    .await?
                    .into_iter()
                    .filter(|b| b.state != BindingState::Deleted)
                    .filter_map(|b| b.username)
                    .collect();
                names.extend(ctx.instance.spares.iter().map(|s| s.username.clone()));
                let mut waiting = Vec::new();
                for name in &names {
                    if let Progress::Working { detail } = self.provider.delete_user(&cache, name).await? {
                        waiting.push(detail);
                    }
                }
                if !waiting.is_empty() {
                    return Ok(StepResult::Wait(waiting.join("; ")));
                }
                Ok(StepResult::Next(Step::DeleteSecrets))
            }
            Step::DeleteSecrets => {
                // The cache and its users are gone: close the bindings and
                // delete their secrets, the spares' and the admin secret. By
                // name, so a secret whose reference was never recorded goes too.
                for mut b in self.store.bindings(&id).await? {
                    if b.state == BindingState::Deleted {
                        continue;
                    }
                    self.delete_secret(&Target::of_binding(&b), b.secret.as_deref()).await?;
                    b.apply(BindingEvent::InstanceDeleted)?;
                    b.secret = None;
                    b.updated_at = now();
                    b.expires_at = Some(now() + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                    self.store.save_binding(&mut b, None).await?;
                }
                for s in &ctx.instance.spares {
                    let target = Target::Spare { instance_id: id.clone(), username: s.username.clone() };
                    self.delete_secret(&target, s.secret.as_deref()).await?;
                }
                let admin = ctx.instance.admin_secret.as_deref();
                self.delete_secret(&Target::Admin { instance_id: id.clone() }, admin).await?;
                if cache != id {
                    self.release_pool_record(&cache, &id).await?;
                }
                Ok(StepResult::Finished("deprovisioned: the cache and its credentials are deleted".into()))
            }
            // ---------------------------------------------------- bind
            Step::CreateUserSecret => {
                let engine = ctx.instance.engine_of(ctx.service()?);
                let binding =
                    ctx.binding.as_mut().ok_or(StepError::Permanent("bind without a binding".into()))?;
                if !engine.speaks_redis() {
                    return Ok(StepResult::Finished(
                        "bound: Memcached has no users; the credentials name the endpoint".into(),
                    ));
                }
                if binding.secret.is_none() {
                    let target = Target::Binding { instance_id: id.clone(), binding_id: binding.id.clone() };
                    binding.secret = Some(self.create_secret(&target, true).await?);
                    binding.username = Some(Binding::username_for(&binding.id));
                    binding.updated_at = now();
                    self.store.save_binding(binding, None).await?;
                }
                Ok(StepResult::Next(Step::CreateUser))
            }
            Step::CreateUser => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("bind without a binding".into()))?;
                let (Some(username), Some(reference)) = (&binding.username, &binding.secret) else {
                    return Ok(StepResult::Next(Step::CreateUserSecret));
                };
                let password = self.current(reference).await?;
                let user = CacheUser::new(username.clone(), password, ctx.plan()?.access_string.clone());
                Ok(then(self.provider.put_user(&cache, &user).await?, Step::WaitUserActive))
            }
            Step::WaitUserActive => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("bind without a binding".into()))?;
                let username = binding.username.clone().unwrap_or_default();
                match self.provider.user_progress(&cache, &username).await? {
                    Progress::Done => {
                        Ok(StepResult::Finished(format!("bound: cache user {username} is active")))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            // ---------------------------------------------------- unbind
            Step::DeleteUser => {
                if let Some(waiting) = self.superseded_running(op).await? {
                    return Ok(StepResult::Wait(waiting));
                }
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                if let Some(username) = &binding.username
                    && ctx.instance.engine_of(ctx.service()?).speaks_redis()
                    && ctx.instance.state != InstanceState::Deleted
                {
                    return Ok(then(
                        self.provider.delete_user(&cache, username).await?,
                        Step::WaitUserDeleted,
                    ));
                }
                Ok(StepResult::Next(Step::DeleteUserSecret))
            }
            Step::WaitUserDeleted => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                let username = binding.username.clone().unwrap_or_default();
                match self.provider.delete_user(&cache, &username).await? {
                    Progress::Done => Ok(StepResult::Next(Step::DeleteUserSecret)),
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::DeleteUserSecret => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                self.delete_secret(&Target::of_binding(binding), binding.secret.as_deref()).await?;
                Ok(StepResult::Finished(
                    "unbound: the binding's cache user and credential are deleted".into(),
                ))
            }
            // ---------------------------------------------------- rotate
            Step::WaitGraceEnd => {
                let ends = rotation_of(ctx)?.grace_ends_at.unwrap_or_default();
                let left = ends - now();
                if left > 0 {
                    let detail =
                        format!("the previous password works until {}", crate::domain::iso8601(ends));
                    return Ok(StepResult::WaitFor(detail, u32::try_from(left.min(900)).unwrap_or(900)));
                }
                Ok(StepResult::Next(Step::RemoveOldPassword))
            }
            Step::RemoveOldPassword => {
                let (principal, current) = self.current_password(ctx).await?;
                Ok(then(
                    self.provider.set_passwords(&cache, &principal, &[current]).await?,
                    Step::WaitOldPasswordRemoved,
                ))
            }
            Step::WaitOldPasswordRemoved => {
                let (principal, current) = self.current_password(ctx).await?;
                match self.provider.passwords_progress(&cache, &principal, &[current]).await? {
                    Progress::Done => Ok(StepResult::Finished(format!(
                        "rotated: the previous password of {} no longer works",
                        principal.describe()
                    ))),
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            // ---------------------------------------------------- spares
            // A provision that took a warm-pool cache: its tags name the
            // pool member until now.
            Step::TagCache => Ok(then(self.provider.retag(&self.spec(ctx)?).await?, Step::PutAlarms)),
            Step::ScheduleSpareRotation => {
                // Spares claimed since: their binding holds the password now.
                if !ctx.instance.spares_to_schedule.is_empty() {
                    for reference in &ctx.instance.spares_to_schedule {
                        self.schedule_rotation(reference).await?;
                    }
                    ctx.instance.spares_to_schedule.clear();
                    ctx.instance.updated_at = now();
                    self.store.save_instance(&mut ctx.instance, None).await?;
                }
                Ok(StepResult::Next(Step::MakeSpare))
            }
            Step::MakeSpare => self.make_spare(ctx).await,
            Step::WaitSpareActive => {
                let i = &mut ctx.instance;
                let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Creating) else {
                    return Ok(StepResult::Next(Step::MakeSpare));
                };
                let username = i.spares[n].username.clone();
                match self.provider.user_progress(&cache, &username).await? {
                    Progress::Done => {
                        info!(operation = %op.id, instance = %id, user = %username, "spare user ready");
                        i.spares[n].state = SpareState::Ready;
                        i.updated_at = now();
                        self.store.save_instance(i, None).await?;
                        Ok(StepResult::Next(Step::MakeSpare))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::RetireSpare => {
                let i = &mut ctx.instance;
                let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Retiring) else {
                    return Ok(StepResult::Next(Step::MakeSpare));
                };
                let username = i.spares[n].username.clone();
                match self.provider.delete_user(&cache, &username).await? {
                    Progress::Done => {
                        let target = Target::Spare { instance_id: id.clone(), username: username.clone() };
                        self.delete_secret(&target, i.spares[n].secret.as_deref()).await?;
                        info!(operation = %op.id, instance = %id, user = %username, "spare user deleted");
                        i.spares.remove(n);
                        i.updated_at = now();
                        self.store.save_instance(i, None).await?;
                        Ok(StepResult::Next(Step::MakeSpare))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::Done => Ok(StepResult::Finished(op.description.clone())),
        }
    }

    /// A provision's cache is available: its endpoint and spare users are
    /// saved with the operation's success, which says what was made.
    async fn provisioned(
        &self,
        ctx: &mut Context,
        cache: &str,
        note: Option<String>,
    ) -> Result<StepResult, StepError> {
        // The spare users were made with the cache, so they are ready with it.
        ctx.instance.endpoint = Some(self.provider.endpoint(cache).await?);
        for s in &mut ctx.instance.spares {
            s.state = SpareState::Ready;
        }
        let (plan, i) = (ctx.plan()?, &ctx.instance);
        let what =
            format!("{} {} on plan {}", i.engine_of(ctx.service()?).as_str(), i.engine_version, plan.name);
        let said = if i.pooled {
            format!("provisioned for the warm pool: {what}")
        } else if plan.warm_pool_size == 0 {
            format!("provisioned: {what}")
        } else if i.engine_version != plan.default_engine_version {
            format!(
                "provisioned: {what}, a cache of its own (the warm pool holds version {} only)",
                plan.default_engine_version
            )
        } else {
            format!("provisioned: {what}, a cache of its own (the warm pool had no ready cache)")
        };
        Ok(StepResult::Finished(said + &note.unwrap_or_default()))
    }

    /// Brings the cache's alarms to what its plan asks for. A cache waiting
    /// in the warm pool has none until a provision claims it. A refusal
    /// retrying cannot mend (CloudWatch denies the call, say) leaves a
    /// working cache working: it is logged and returned as a note for the
    /// operation's description.
    async fn put_alarms(&self, ctx: &Context) -> Result<Option<String>, StepError> {
        if ctx.instance.pooled {
            return Ok(None);
        }
        let spec = self.spec(ctx)?;
        let nodes = self.provider.nodes(&spec.cache_key).await?;
        let alarms = AlarmSpec {
            cache_key: spec.cache_key,
            engine: spec.engine,
            nodes,
            thresholds: spec.plan.alarms,
            tags: spec.tags,
        };
        match self.alarms.put(&alarms).await {
            Ok(_) => Ok(None),
            Err(ProviderError::Permanent(why)) => {
                warn!(instance = %ctx.instance.id, error = %why, "the cache's CloudWatch alarms could not be set");
                Ok(Some(format!("; its CloudWatch alarms could not be set: {why}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One move towards the plan's number of spare users: go on making the
    /// one being made, record a new one, retire one too many, or finish.
    async fn make_spare(&self, ctx: &mut Context) -> Result<StepResult, StepError> {
        let wanted = self.spares_wanted(ctx)?;
        let access = ctx.plan()?.access_string.clone();
        let id = ctx.instance.id.clone();
        let cache = ctx.instance.cache_key().to_string();
        let i = &mut ctx.instance;
        if let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Creating) {
            let username = i.spares[n].username.clone();
            let reference = match i.spares[n].secret.clone() {
                Some(reference) => reference,
                None => {
                    let target = Target::Spare { instance_id: id.clone(), username: username.clone() };
                    let reference = self.create_secret(&target, false).await?;
                    i.spares[n].secret = Some(reference.clone());
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                    reference
                }
            };
            let user = CacheUser::new(username, self.current(&reference).await?, access);
            return Ok(then(self.provider.put_user(&cache, &user).await?, Step::WaitSpareActive));
        }
        if i.spares.iter().any(|s| s.state == SpareState::Retiring) {
            return Ok(StepResult::Next(Step::RetireSpare));
        }
        if i.spares_kept() < wanted {
            // Recorded before anything is made, so clean-up finds it.
            i.spare_seq += 1;
            i.spares.push(SpareUser::numbered(i.spare_seq));
            i.updated_at = now();
            self.store.save_instance(i, None).await?;
            return Ok(StepResult::Next(Step::MakeSpare));
        }
        let ready = i.spares.iter().filter(|s| s.state == SpareState::Ready).count();
        if ready > wanted
            && let Some(last) = i.spares.iter_mut().rev().find(|s| s.state == SpareState::Ready)
        {
            last.state = SpareState::Retiring;
            i.updated_at = now();
            self.store.save_instance(i, None).await?;
            return Ok(StepResult::Next(Step::RetireSpare));
        }
        Ok(StepResult::Finished(format!("spares: {ready} spare binding users ready")))
    }

    /// The cache of a deprovisioned instance came from the warm pool: the
    /// pool member's record, kept while the instance lived (its secrets are
    /// named under the member's id), may go now.
    async fn release_pool_record(&self, member_id: &str, instance_id: &str) -> Result<(), StepError> {
        if let Some(mut m) = self.store.instance(member_id).await?
            && m.claimed_by.as_deref() == Some(instance_id)
            && m.expires_at.is_none()
        {
            let t = now();
            m.expires_at = Some(t + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
            m.updated_at = t;
            self.store.save_instance(&mut m, None).await?;
        }
        Ok(())
    }

    /// Whose password a rotate operation changes, and its current password.
    async fn current_password(&self, ctx: &Context) -> Result<(Principal, SecretString), StepError> {
        let (principal, reference) = match &ctx.binding {
            Some(b) => (
                Principal::User(b.username.clone().ok_or_else(|| {
                    StepError::Permanent(format!("service binding {} has no cache user", b.id))
                })?),
                b.secret.clone(),
            ),
            None => (Principal::Admin, ctx.instance.admin_secret.clone()),
        };
        let reference = reference
            .ok_or_else(|| StepError::Permanent(format!("{} has no secret", principal.describe())))?;
        let password = self.secrets.read(&reference, Stage::Current).await?.ok_or_else(|| {
            StepError::Permanent(format!("{} has no current password", principal.describe()))
        })?;
        Ok((principal, password))
    }

    /// While the operation this one overtook is still running, a create or a
    /// user put may be in flight: deleting now could leave what it makes
    /// behind. Wait for it to stop (its own worker cancels it at its next
    /// step); if its record has not moved for [`SUPERSEDED_STALL_SECS`], its
    /// job is lost and no call of it can be in flight, so cancel it here.
    async fn superseded_running(&self, op: &Operation) -> Result<Option<String>, StepError> {
        let Some(prev_id) = &op.supersedes else { return Ok(None) };
        let Some(mut prev) = self.store.operation(prev_id).await? else { return Ok(None) };
        if prev.is_finished() {
            return Ok(None);
        }
        if now() - prev.updated_at > SUPERSEDED_STALL_SECS {
            prev.fail(now(), format!("{} cancelled: overtaken by {}", prev.kind.as_str(), op.id))?;
            self.store.save_operation(&mut prev).await?;
            return Ok(None);
        }
        Ok(Some(format!("waiting for the cancelled {} to stop", prev.kind.as_str())))
    }
}
