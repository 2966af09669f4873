//! The binding endpoints: bind (at once where it can: Memcached, users made
//! at once, a spare user claimed), unbind, fetch and last_operation, and the
//! credentials a binding returns.

use super::*;

impl Broker {
    /// `PUT /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
    ///
    /// Answers with the credentials at once (201) whenever it can: Memcached
    /// has no users to make; a provider whose users change at once (laptop
    /// mode) makes the user within the request; otherwise the bind claims one
    /// of the instance's spare users. Only when no spare is free does it wait
    /// for a new user: 202 with `accepts_incomplete=true`, else 422
    /// `AsyncRequired` saying so.
    pub async fn bind(
        &self,
        instance_id: &InstanceId,
        binding_id: &BindingId,
        req: BindRequest,
        q: &Query,
    ) -> Result<Bound, OsbError> {
        // A rotation request names its predecessor and may leave everything
        // else to it: the successor is bound like the predecessor, with
        // fresh credentials.
        let req = match &req.predecessor_binding_id {
            Some(predecessor) => {
                self.successor_request(instance_id, binding_id, predecessor, req.clone()).await?
            }
            None => req,
        };
        let service_id = require("service_id", &req.service_id)?;
        let plan_id = require("plan_id", &req.plan_id)?;
        let (service, plan) = self.service_plan(&service_id, &plan_id).await?;
        let parameters = parameters_object(&plan, &bind_parameters_schema(), req.parameters.clone())?;
        let bind_resource = req.bind_resource.clone().unwrap_or(Value::Null);
        let app_guid = req
            .app_guid
            .clone()
            .or_else(|| bind_resource.get("app_guid").and_then(Value::as_str).map(str::to_string));

        for _ in 0..RACE_RETRIES {
            let mut instance = match self.store.instance(instance_id).await.map_err(store_err)? {
                Some(i) if i.state != InstanceState::Deleted => i,
                _ => {
                    return Err(OsbError::NotFound(format!("service instance {instance_id} does not exist")));
                }
            };
            if instance.service_id != service_id {
                return Err(OsbError::BadRequest(format!(
                    "service_id {service_id:?} is not the service of instance {instance_id}"
                )));
            }
            instance.state.on(InstanceEvent::Bind).map_err(|e| refused(e, instance_id))?;
            let existing = self.store.binding(instance_id, binding_id).await.map_err(store_err)?;
            let replacing = match &existing {
                None => None,
                Some(b) if matches!(b.state, BindingState::Deleted) => Some(b.version),
                Some(b) => {
                    let same = b.service_id == service_id
                        && b.plan_id == plan_id
                        && b.app_guid == app_guid
                        && b.bind_resource == bind_resource
                        && b.parameters == parameters;
                    if !same {
                        return Err(OsbError::Conflict(format!(
                            "service binding {binding_id} already exists with different attributes"
                        )));
                    }
                    match b.state {
                        BindingState::Creating => return self.bind_in_progress(&instance, b, q).await,
                        BindingState::Ready => {
                            return Ok(Bound::AlreadyExists(self.binding_response(&instance, b).await?));
                        }
                        // A retry of a failed bind, or refused.
                        _ => {
                            b.state.on(BindingEvent::Bind).map_err(|e| refused(e, binding_id))?;
                            Some(b.version)
                        }
                    }
                }
            };
            let t = now();
            let mut op = Operation::start(
                OperationKind::Bind,
                instance_id,
                Some(binding_id),
                t,
                plan.maximum_polling_duration,
            );
            let mut binding = Binding {
                id: binding_id.to_string(),
                instance_id: instance_id.to_string(),
                service_id: service_id.clone(),
                plan_id: plan_id.clone(),
                parameters: parameters.clone(),
                bind_resource: bind_resource.clone(),
                context: req.context.clone().unwrap_or(Value::Null),
                app_guid: app_guid.clone(),
                state: BindingState::Creating,
                username: None,
                secret: None,
                from_spare: false,
                last_operation_id: op.id.clone(),
                rotation: None,
                rotated_at: None,
                created_at: t,
                updated_at: t,
                expires_at: None,
                version: 0,
            };
            let predecessor = req.predecessor_binding_id.as_deref().unwrap_or("");

            // Memcached has no users: nothing to make, ready at once.
            if !instance.engine_of(&service).speaks_redis() {
                op.succeed(t, "bound: Memcached has no users; the credentials name the endpoint")
                    .map_err(|e| refused(e, &op.id))?;
                binding.state = BindingState::Ready;
                match self.store.create_binding(&mut binding, &mut op, replacing).await {
                    Ok(()) => {
                        info!(instance = %instance_id, binding = %binding_id, operation = %op.id, "bound (no user to make)");
                        return Ok(Bound::Created(self.binding_response(&instance, &binding).await?));
                    }
                    Err(e) if e.is_race() => continue,
                    Err(e) => return Err(store_err(e)),
                }
            }

            // Users made at once (laptop mode): the bind runs now.
            if self.provider.users_change_at_once() {
                match self.store.create_binding(&mut binding, &mut op, replacing).await {
                    Ok(()) => {
                        info!(instance = %instance_id, binding = %binding_id, operation = %op.id,
                            predecessor, "binding accepted; making its user now");
                        return self.finish_bind_inline(&op, q).await;
                    }
                    Err(e) if e.is_race() => continue,
                    Err(e) => return Err(store_err(e)),
                }
            }

            // A spare user, made in advance, becomes the binding's.
            if let Some(spare) = instance.take_spare() {
                let username = spare.username.clone();
                op.succeed(t, &format!("bound: spare cache user {username} was ready in the cache"))
                    .map_err(|e| refused(e, &op.id))?;
                binding.state = BindingState::Ready;
                binding.username = Some(spare.username);
                binding.secret = spare.secret;
                binding.from_spare = true;
                // Its binding holds the password now: put it on the schedule.
                instance.spares_to_schedule.extend(binding.secret.clone());
                let mut refill = match instance.spares_operation {
                    Some(_) => None,
                    None => {
                        let o = Operation::start(
                            OperationKind::Spares,
                            instance_id,
                            None,
                            t,
                            SPARES_DEADLINE_SECS,
                        );
                        instance.spares_operation = Some(o.id.clone());
                        Some(o)
                    }
                };
                instance.updated_at = t;
                match self
                    .store
                    .claim_spare(&mut instance, refill.as_mut(), &mut binding, &mut op, replacing)
                    .await
                {
                    Ok(()) => {
                        info!(instance = %instance_id, binding = %binding_id, user = %username, operation = %op.id,
                            predecessor, "bound: spare user claimed");
                        self.after_claim(&instance, refill.as_ref()).await;
                        return Ok(Bound::Created(self.binding_response(&instance, &binding).await?));
                    }
                    // Another bind took it, or the worker changed the
                    // instance: read again and take another.
                    Err(e) if e.is_race() => continue,
                    Err(e) => return Err(store_err(e)),
                }
            }

            // No spare is free: the bind waits for a new user.
            self.start_spares_if_short(instance.clone(), &plan, instance.engine_of(&service)).await;
            if !q.accepts_incomplete {
                return Err(OsbError::AsyncRequired(no_spare_free(&instance, &plan)));
            }
            match self.store.create_binding(&mut binding, &mut op, replacing).await {
                Ok(()) => {
                    info!(instance = %instance_id, binding = %binding_id, operation = %op.id,
                        predecessor, "binding accepted; its user is made by the worker");
                    self.enqueue(&op).await?;
                    return Ok(Bound::Accepted { operation: op.id });
                }
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OsbError::Concurrency(format!(
            "service binding {binding_id} is being changed by concurrent requests; retry"
        )))
    }

    /// A repeated bind of a binding still being created: the same operation
    /// (202) when the platform polls; where users change at once, the job is
    /// run again now; otherwise the platform has to poll.
    async fn bind_in_progress(&self, instance: &Instance, b: &Binding, q: &Query) -> Result<Bound, OsbError> {
        if self.provider.users_change_at_once()
            && let Some(op) = self.store.operation(&b.last_operation_id).await.map_err(store_err)?
        {
            return self.finish_bind_inline(&op, q).await;
        }
        if !q.accepts_incomplete {
            return Err(OsbError::AsyncRequired(format!(
                "service binding {} of service instance {} is being created, which takes minutes; send the request with ?accepts_incomplete=true and poll its last_operation",
                b.id, instance.id
            )));
        }
        self.resend(&b.last_operation_id).await?;
        Ok(Bound::Accepted { operation: b.last_operation_id.clone() })
    }

    /// Runs a bind's job here and now (users change at once) and answers
    /// with its outcome: 201 with the credentials, or the same operation
    /// (202) when it had to wait and the platform polls.
    async fn finish_bind_inline(&self, op: &Operation, q: &Query) -> Result<Bound, OsbError> {
        match self.run_inline(op, q).await? {
            Inline::Done => {
                let not_found = || OsbError::Internal(format!("binding of operation {} vanished", op.id));
                let binding_id = op.binding_id.as_deref().unwrap_or_default();
                let binding = self
                    .store
                    .binding(&op.instance_id, binding_id)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(not_found)?;
                let instance =
                    self.store.instance(&op.instance_id).await.map_err(store_err)?.ok_or_else(not_found)?;
                Ok(Bound::Created(self.binding_response(&instance, &binding).await?))
            }
            Inline::Pending => Ok(Bound::Accepted { operation: op.id.clone() }),
        }
    }

    /// Runs the job of `op` in this request, for a provider whose users
    /// change at once, and reads how it ended. Not finished: the worker
    /// enqueued it to go on, and the platform polls (`accepts_incomplete`)
    /// or is told to retry. Failed: the description says what failed.
    async fn run_inline(&self, op: &Operation, q: &Query) -> Result<Inline, OsbError> {
        let job = Job::for_operation(op);
        if let Err(e) = self.worker.handle(&job).await {
            // The store or queue failed under the worker: leave the job to it.
            warn!(operation = %op.id, error = %e, "could not run the job in the request; it is queued");
            let _ = self.enqueue(op).await;
            return Err(OsbError::Unavailable(format!(
                "the broker could not finish {} {} right now; retry",
                op.kind.as_str(),
                op.binding_id.as_deref().unwrap_or(&op.instance_id)
            )));
        }
        let after = self.store.operation(&op.id).await.map_err(store_err)?;
        let after = after.ok_or_else(|| OsbError::Internal(format!("operation {} vanished", op.id)))?;
        match after.state {
            OperationState::Succeeded => Ok(Inline::Done),
            OperationState::Failed => Err(OsbError::Unavailable(format!(
                "{} failed: {}; send the request again to retry",
                after.kind.as_str(),
                after.description
            ))),
            OperationState::InProgress if q.accepts_incomplete => Ok(Inline::Pending),
            OperationState::InProgress => Err(OsbError::Unavailable(format!(
                "{} is not finished yet ({}); send the request again in a few seconds",
                after.kind.as_str(),
                after.description
            ))),
        }
    }

    /// After a claim: start the `spares` operation it recorded, or nudge the
    /// one that runs. A failure here does not fail the bind (it has its
    /// user): the next bind or poll enqueues the operation again.
    async fn after_claim(&self, instance: &Instance, started: Option<&Operation>) {
        let result = match (started, &instance.spares_operation) {
            (Some(op), _) => self.enqueue(op).await,
            (None, Some(running)) => self.heal(running).await,
            (None, None) => Ok(()),
        };
        if let Err(e) = result {
            warn!(instance = %instance.id, error = %e, "could not enqueue the making of spare users");
        }
    }

    /// Starts a `spares` operation when the instance keeps fewer spare users
    /// than its plan asks for and none runs (an instance made before spares
    /// existed, or one whose last attempt failed); nudges a running one.
    /// Best effort: a lost race means someone else did it.
    /// Returns whether it started one.
    async fn start_spares_if_short(&self, mut instance: Instance, plan: &Plan, engine: Engine) -> bool {
        if let Some(running) = &instance.spares_operation {
            if let Err(e) = self.heal(running).await {
                warn!(instance = %instance.id, error = %e, "could not enqueue the making of spare users");
            }
            return false;
        }
        let wanted =
            spare::wanted(plan, engine, &instance.engine_version, self.provider.users_change_at_once());
        if instance.spares_kept() >= wanted {
            return false;
        }
        let t = now();
        let mut op = Operation::start(OperationKind::Spares, &instance.id, None, t, SPARES_DEADLINE_SECS);
        instance.spares_operation = Some(op.id.clone());
        instance.updated_at = t;
        match self.store.save_instance(&mut instance, Some(&mut op)).await {
            Ok(()) => {
                info!(instance = %instance.id, operation = %op.id, wanted, "making spare users");
                if let Err(e) = self.enqueue(&op).await {
                    warn!(instance = %instance.id, error = %e, "could not enqueue the making of spare users");
                }
                true
            }
            Err(e) => {
                warn!(instance = %instance.id, error = %e, "did not start making spare users");
                false
            }
        }
    }

    /// The reconciler's look at a ready instance: starts its `spares` when
    /// it keeps fewer spare users than its plan asks for (a refill that
    /// failed, a plan that now asks for more). Returns whether it started one.
    pub async fn refill_spares(&self, instance: Instance) -> Result<bool, OsbError> {
        let (service, plan) = self.service_plan(&instance.service_id, &instance.plan_id).await?;
        let engine = instance.engine_of(&service);
        Ok(self.start_spares_if_short(instance, &plan, engine).await)
    }

    /// A rotation request completed from its predecessor: the same service,
    /// plan, parameters, bind resource, context and app, unless the request
    /// gives its own. The predecessor must be a ready binding of the same
    /// instance, on a plan whose bindings are rotatable.
    async fn successor_request(
        &self,
        instance_id: &InstanceId,
        binding_id: &BindingId,
        predecessor_id: &BindingId,
        mut req: BindRequest,
    ) -> Result<BindRequest, OsbError> {
        if predecessor_id == binding_id {
            return Err(OsbError::BadRequest(
                "predecessor_binding_id names the binding being created; name the binding it succeeds".into(),
            ));
        }
        let predecessor = match self.store.binding(instance_id, predecessor_id).await.map_err(store_err)? {
            Some(b) if b.state == BindingState::Ready => b,
            Some(b) => {
                return Err(OsbError::BadRequest(format!(
                    "predecessor_binding_id {predecessor_id} is {}; only a ready binding can be rotated",
                    b.state.as_str()
                )));
            }
            None => {
                return Err(OsbError::BadRequest(format!(
                    "predecessor_binding_id {predecessor_id} is not a binding of service instance {instance_id}"
                )));
            }
        };
        let (service, plan) = self.service_plan(&predecessor.service_id, &predecessor.plan_id).await?;
        if !binding_rotatable(&service) {
            return Err(OsbError::BadRequest(format!(
                "plan {} does not support binding rotation (binding_rotatable is false): {} bindings have no credentials of their own",
                plan.name,
                service.engine.as_str()
            )));
        }
        req.service_id.get_or_insert(predecessor.service_id);
        req.plan_id.get_or_insert(predecessor.plan_id);
        if req.parameters.is_none() {
            req.parameters = Some(Value::Object(predecessor.parameters));
        }
        if req.bind_resource.is_none() && !predecessor.bind_resource.is_null() {
            req.bind_resource = Some(predecessor.bind_resource);
        }
        if req.context.is_none() && !predecessor.context.is_null() {
            req.context = Some(predecessor.context);
        }
        if req.app_guid.is_none() {
            req.app_guid = predecessor.app_guid;
        }
        Ok(req)
    }

    /// `DELETE /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
    ///
    /// During creation this halts it: the binding moves to deleting and the
    /// worker cancels the bind operation when it next looks at it.
    ///
    /// Synchronous where it can be: a binding with nothing to remove
    /// (Memcached), and a provider whose users change at once, end within the
    /// request (200). Otherwise the binding is marked deleted (its
    /// credentials are no longer returned) and the worker removes its user:
    /// 202 to a platform that polls, 200 to one that cannot
    /// (`accepts_incomplete` absent), whose app may then reach the cache
    /// until ElastiCache has removed the user from the user group.
    pub async fn unbind(
        &self,
        instance_id: &InstanceId,
        binding_id: &BindingId,
        q: &Query,
    ) -> Result<Unbound, OsbError> {
        require("service_id", &q.service_id)?;
        require("plan_id", &q.plan_id)?;
        for _ in 0..RACE_RETRIES {
            let mut binding = match self.store.binding(instance_id, binding_id).await.map_err(store_err)? {
                Some(b) if b.state != BindingState::Deleted => b,
                _ => return Err(OsbError::Gone(format!("service binding {binding_id} does not exist"))),
            };
            if binding.state == BindingState::Deleting {
                let op = self.store.operation(&binding.last_operation_id).await.map_err(store_err)?;
                return match op {
                    Some(op) => self.unbind_answer(&op, q).await,
                    None => Ok(Unbound::Done),
                };
            }
            let timeout = match self.service_plan(&binding.service_id, &binding.plan_id).await {
                Ok((_, p)) => p.maximum_polling_duration,
                Err(_) => DEADLINE_WITHOUT_PLAN_SECS,
            };
            let t = now();
            let mut op = Operation::start(OperationKind::Unbind, instance_id, Some(binding_id), t, timeout);
            if binding.state == BindingState::Creating {
                op.supersedes = Some(binding.last_operation_id.clone());
            }
            // A ready binding without a user or a secret (Memcached) has
            // nothing to remove.
            let nothing_to_remove = binding.state == BindingState::Ready
                && binding.username.is_none()
                && binding.secret.is_none()
                && binding.rotation.is_none();
            binding.apply(BindingEvent::Unbind).map_err(|e| refused(e, binding_id))?;
            binding.last_operation_id = op.id.clone();
            binding.updated_at = t;
            if nothing_to_remove {
                op.succeed(t, "unbound: the binding had no user or credential of its own")
                    .map_err(|e| refused(e, &op.id))?;
                binding.apply(BindingEvent::Deleted).map_err(|e| refused(e, binding_id))?;
                binding.expires_at = Some(t + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
            }
            match self.store.save_binding(&mut binding, Some(&mut op)).await {
                Ok(()) if nothing_to_remove => {
                    info!(instance = %instance_id, binding = %binding_id, operation = %op.id, "unbound (nothing to remove)");
                    return Ok(Unbound::Done);
                }
                Ok(()) => {
                    info!(instance = %instance_id, binding = %binding_id, operation = %op.id, "unbinding accepted");
                    if !self.provider.users_change_at_once() {
                        self.enqueue(&op).await?;
                    }
                    return self.unbind_answer(&op, q).await;
                }
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OsbError::Concurrency(format!(
            "service binding {binding_id} is being changed by concurrent requests; retry"
        )))
    }

    /// How an unbind whose operation `op` is recorded answers: where users
    /// change at once its job runs now; otherwise the worker has it, and the
    /// binding is already gone as far as the platform can see.
    async fn unbind_answer(&self, op: &Operation, q: &Query) -> Result<Unbound, OsbError> {
        if op.is_finished() {
            return Ok(Unbound::Done);
        }
        if self.provider.users_change_at_once() {
            return Ok(match self.run_inline(op, q).await? {
                Inline::Done => Unbound::Done,
                Inline::Pending => Unbound::Accepted { operation: op.id.clone() },
            });
        }
        self.heal_op(op).await?;
        if q.accepts_incomplete {
            Ok(Unbound::Accepted { operation: op.id.clone() })
        } else {
            Ok(Unbound::Done)
        }
    }

    /// `GET /v2/service_instances/{instance_id}/service_bindings/{binding_id}`:
    /// the current credentials, read from the secret store each time.
    pub async fn fetch_binding(
        &self,
        instance_id: &InstanceId,
        binding_id: &BindingId,
    ) -> Result<BindingResponse, OsbError> {
        let not_found = || OsbError::NotFound(format!("service binding {binding_id} does not exist"));
        let (binding, instance) =
            self.store.binding_and_instance(instance_id, binding_id).await.map_err(store_err)?;
        let binding = binding.ok_or_else(not_found)?;
        match binding.state {
            BindingState::Ready => {}
            BindingState::Creating => {
                return Err(OsbError::NotFound(format!(
                    "service binding {binding_id} is still being created"
                )));
            }
            _ => return Err(not_found()),
        }
        let instance = instance.ok_or_else(not_found)?;
        self.binding_response(&instance, &binding).await
    }

    /// `GET .../service_bindings/{binding_id}/last_operation`
    pub async fn binding_last_operation(
        &self,
        instance_id: &InstanceId,
        binding_id: &BindingId,
        q: &Query,
    ) -> Result<LastOperation, OsbError> {
        let Some(binding) = self.store.binding(instance_id, binding_id).await.map_err(store_err)? else {
            return Err(OsbError::NotFound(format!("service binding {binding_id} does not exist")));
        };
        let op_id = q.operation.as_ref().map_or(binding.last_operation_id, |o| o.to_string());
        match self.store.operation(&op_id).await.map_err(store_err)? {
            Some(op)
                if op.binding_id.as_deref() == Some(binding_id.as_str())
                    && op.instance_id == *instance_id =>
            {
                self.heal_op(&op).await?;
                Ok(last_operation(&op))
            }
            _ => Err(OsbError::BadRequest(format!(
                "operation {op_id:?} is not an operation of service binding {binding_id}"
            ))),
        }
    }

    async fn binding_response(
        &self,
        instance: &Instance,
        binding: &Binding,
    ) -> Result<BindingResponse, OsbError> {
        let (service, _) = self.service_plan(&instance.service_id, &instance.plan_id).await?;
        let credentials = self.credentials(&service, instance, binding).await?;
        let endpoint = &credentials.endpoint;
        let mut endpoints = vec![EndpointObject {
            host: endpoint.host.clone(),
            ports: vec![endpoint.port.to_string()],
            protocol: "tcp",
        }];
        if let Some(reader) = &endpoint.reader {
            endpoints.push(EndpointObject {
                host: reader.host.clone(),
                ports: vec![reader.port.to_string()],
                protocol: "tcp",
            });
        }
        // Credentials last issued (created, or rotated) at `issued` work until
        // the next scheduled rotation plus its grace period.
        let metadata = binding.secret.as_ref().and_then(|_| {
            let issued = binding.rotated_at.unwrap_or(binding.created_at);
            let policy = &self.settings.rotation;
            let renew_before = policy.renew_before(issued).map(crate::domain::iso8601);
            let expires_at = policy.expires_at(issued).map(crate::domain::iso8601);
            renew_before.is_some().then_some(BindingMetadata { expires_at, renew_before })
        });
        Ok(BindingResponse {
            metadata,
            credentials: credentials.to_json(),
            parameters: binding.parameters.clone(),
            endpoints,
        })
    }

    async fn credentials(
        &self,
        service: &Service,
        instance: &Instance,
        binding: &Binding,
    ) -> Result<Credentials, OsbError> {
        // Recorded when the cache became available; only an instance made
        // before endpoints were recorded asks the provider.
        let endpoint = match &instance.endpoint {
            Some(e) => e.clone(),
            None => self.provider.endpoint(instance.cache_key()).await.map_err(|e| match e {
                ProviderError::Retryable(m) => OsbError::Unavailable(format!(
                    "the cache of service instance {} cannot be reached right now ({m}); retry",
                    instance.id
                )),
                ProviderError::Permanent(m) => {
                    OsbError::Internal(format!("endpoint of {}: {m}", instance.id))
                }
            })?,
        };
        let password: Option<SecretString> = match &binding.secret {
            Some(reference) => Some(
                self.secrets
                    .read(reference, Stage::Current)
                    .await
                    .map_err(|e| OsbError::Internal(format!("binding {} secret: {e}", binding.id)))?
                    .ok_or_else(|| {
                        OsbError::Internal(format!("binding {} has no current password", binding.id))
                    })?,
            ),
            None => None,
        };
        Ok(Credentials {
            // Valkey's once a Redis OSS instance moved to it.
            engine: instance.engine_of(service),
            engine_version: instance.engine_version.clone(),
            endpoint,
            username: binding.username.clone(),
            password,
        })
    }
}
