//! The instance endpoints: provision, update, deprovision, fetch and
//! last_operation.

use super::pool::Claim;
use super::*;
use crate::domain::pool;

impl Broker {
    /// `PUT /v2/service_instances/{instance_id}`
    pub async fn provision(
        &self,
        id: &InstanceId,
        req: ProvisionRequest,
        q: &Query,
    ) -> Result<Provisioned, OsbError> {
        let organization_guid = required_guid("organization_guid", &req.organization_guid)?;
        let space_guid = required_guid("space_guid", &req.space_guid)?;
        let (service, plan) = self.service_plan(&req.service_id, &req.plan_id).await?;
        if let Some(Value::Object(given)) = &req.parameters {
            params::unavailable(service.engine, &plan, given, false)
                .map_err(|e| OsbError::BadRequest(e.0))?;
        }
        let parameters =
            parameters_object(&plan, &create_schema(service.engine, &plan), req.parameters.clone())?;
        check_maintenance(&plan, &req.maintenance_info)?;
        settings::check(service.engine, &plan, &parameters).map_err(|e| OsbError::BadRequest(e.0))?;
        let engine_version = params::engine_version(&plan, &parameters);
        params::check_log_delivery(
            service.engine,
            &engine_version,
            &params::log_delivery(&plan, &parameters),
        )
        .map_err(|e| OsbError::BadRequest(e.0))?;
        // Which snapshot, resolved now: a retried create restores the same
        // one even after a newer one was taken.
        let restored_from = match RestoreFrom::from_parameters(&parameters) {
            Some(from) => Some(self.resolve_restore(&from, &service, &organization_guid, &space_guid).await?),
            None => None,
        };
        // A cache from the warm pool is ready at once, so a platform that
        // cannot poll gets it too; anything else is asynchronous. A
        // restore makes a cache of its own.
        let pooled = restored_from.is_none() && pool::serves(&plan, &engine_version);
        if !pooled {
            async_required(q, "provisioning")?;
        }

        for _ in 0..RACE_RETRIES {
            let existing = self.store.instance(id).await.map_err(store_err)?;
            let replacing = match &existing {
                None => None,
                Some(i) if i.state == InstanceState::Deleted => Some(i.version),
                Some(i) => {
                    let same = i.service_id == req.service_id
                        && i.plan_id == req.plan_id
                        && i.parameters == parameters
                        && i.organization_guid.as_deref() == Some(organization_guid.as_str())
                        && i.space_guid.as_deref() == Some(space_guid.as_str());
                    if !same {
                        return Err(OsbError::Conflict(format!(
                            "service instance {id} already exists with a different service, plan or parameters"
                        )));
                    }
                    match i.state {
                        InstanceState::Provisioning => {
                            async_required(q, "provisioning")?;
                            self.resend(&i.last_operation_id).await?;
                            return Ok(Provisioned::Accepted { operation: i.last_operation_id.clone() });
                        }
                        InstanceState::Ready | InstanceState::Updating => {
                            return Ok(Provisioned::AlreadyExists);
                        }
                        // A retry of a failed provision, or refused.
                        _ => {
                            i.state.on(InstanceEvent::Provision).map_err(|e| refused(e, id))?;
                            None
                        }
                    }
                }
            };

            let t = now();
            let mut op =
                Operation::start(OperationKind::Provision, id, None, t, plan.maximum_polling_duration);
            let result = match existing {
                // A failed provision retried with the same attributes.
                Some(mut i) if i.state == InstanceState::ProvisionFailed => {
                    async_required(q, "provisioning")?;
                    i.apply(InstanceEvent::Provision).map_err(|e| refused(e, id))?;
                    i.last_operation_id = op.id.clone();
                    i.updated_at = t;
                    self.store.save_instance(&mut i, Some(&mut op)).await
                }
                _ => {
                    let mut instance = Instance {
                        engine_version: engine_version.clone(),
                        parameters: parameters.clone(),
                        context: req.context.clone().unwrap_or(Value::Null),
                        organization_guid: Some(organization_guid.clone()),
                        space_guid: Some(space_guid.clone()),
                        restored_from: restored_from.clone(),
                        ..Instance::provisioning(id, &plan, &op.id, t)
                    };
                    if pooled {
                        match self.claim_from_pool(&instance, &plan, service.engine, replacing).await? {
                            Claim::Claimed { operation } => return Ok(Provisioned::Created { operation }),
                            Claim::Raced => continue,
                            Claim::NoneReady => async_required(q, "provisioning")?,
                        }
                    }
                    self.store.create_instance(&mut instance, &mut op, replacing).await
                }
            };
            match result {
                Ok(()) => {
                    info!(instance = %id, plan = %plan.name, operation = %op.id, "provisioning accepted");
                    self.enqueue(&op).await?;
                    return Ok(Provisioned::Accepted { operation: op.id });
                }
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OsbError::Concurrency(format!(
            "service instance {id} is being changed by concurrent requests; retry"
        )))
    }

    /// `PATCH /v2/service_instances/{instance_id}`
    pub async fn update(&self, id: &InstanceId, req: UpdateRequest, q: &Query) -> Result<Updated, OsbError> {
        for _ in 0..RACE_RETRIES {
            let mut instance = match self.store.instance(id).await.map_err(store_err)? {
                Some(i) if i.state != InstanceState::Deleted => i,
                _ => return Err(OsbError::NotFound(format!("service instance {id} does not exist"))),
            };
            if instance.service_id != req.service_id {
                return Err(OsbError::BadRequest(format!(
                    "service_id {:?} is not the service of instance {id}",
                    req.service_id
                )));
            }
            let target_plan_id = req.plan_id.clone().unwrap_or_else(|| instance.plan_id.clone());
            let (service, plan) = self.service_plan(&req.service_id, &target_plan_id).await?;
            let (_, current_plan) = self.service_plan(&instance.service_id, &instance.plan_id).await?;
            let plan_changes = plan.id != instance.plan_id;
            // Parameters given in the request replace the ones the instance
            // had; an action runs once and is not kept; what the instance
            // was restored from stays as it was provisioned.
            let given = match req.parameters.clone() {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => return Err(OsbError::BadRequest("parameters must be a JSON object".into())),
            };
            params::unavailable(service.engine, &plan, &given, true)
                .map_err(|e| OsbError::BadRequest(e.0))?;
            if instance.engine == Some(Engine::Valkey)
                && given.get(params::ENGINE).and_then(Value::as_str) == Some("redis")
            {
                return Err(OsbError::BadRequest(format!(
                    "parameter '{}': instance {id} runs Valkey now, and Valkey caches do not move back to Redis OSS; create a Redis OSS instance instead",
                    params::ENGINE
                )));
            }
            let mut merged = instance.parameters.clone();
            let restore_from = merged.remove(day2::RESTORE_FROM);
            if params::requested_version(&given).is_some() {
                // The request's spelling of the version replaces the old one.
                params::forget_version(&mut merged);
            }
            merged.extend(given.clone());
            let valkey_versions = self.valkey_versions().await?;
            let mut merged = parameters_object(
                &plan,
                &update_schema(service.engine, &plan, &valkey_versions),
                Some(Value::Object(merged)),
            )?;
            let action = Action::from_parameters(&given).map_err(|e| OsbError::BadRequest(e.0))?;
            for p in day2::ACTION_PARAMETERS {
                merged.remove(p);
            }
            if let Some(r) = restore_from {
                merged.insert(day2::RESTORE_FROM.to_string(), r);
            }
            let current_engine = instance.engine.unwrap_or(service.engine);
            let (engine, engine_version) =
                engine_and_version(&instance, current_engine, &plan, &given, &merged, &valkey_versions)?;
            check_maintenance(&plan, &req.maintenance_info)?;
            settings::check(engine, &plan, &merged).map_err(|e| OsbError::BadRequest(e.0))?;
            params::check_log_delivery(engine, &engine_version, &params::log_delivery(&plan, &merged))
                .map_err(|e| OsbError::BadRequest(e.0))?;
            async_required(q, "updating")?;
            // What the request asks is well-formed; can it be done?
            if plan_changes {
                if !plan_updateable(&service) {
                    return Err(OsbError::Unprocessable {
                        error: "PlanChangeNotSupported",
                        description: format!(
                            "plans of {} cannot be changed: ElastiCache cannot change a Memcached cluster's node type; create a new instance instead",
                            service.name
                        ),
                        update_repeatable: Some(false),
                    });
                }
                if plan.serverless != current_plan.serverless {
                    let (from, to) = if plan.serverless {
                        ("a cache of nodes", "a serverless one")
                    } else {
                        ("a serverless cache", "one of nodes")
                    };
                    return Err(OsbError::Unprocessable {
                        error: "PlanChangeNotSupported",
                        description: format!(
                            "plan {} cannot change to plan {}: ElastiCache cannot turn {from} into {to}; create a new instance (restore_from a snapshot to take the data along)",
                            current_plan.name, plan.name
                        ),
                        update_repeatable: Some(false),
                    });
                }
                if plan.cluster_mode != current_plan.cluster_mode {
                    return Err(OsbError::Unprocessable {
                        error: "PlanChangeNotSupported",
                        description: format!(
                            "plan {} cannot change to plan {}: moving between cluster mode and non-cluster mode needs a new instance",
                            current_plan.name, plan.name
                        ),
                        update_repeatable: Some(false),
                    });
                }
            }

            // A newer maintenance_info applies the cache's pending service
            // updates: the update's action, so not beside another one.
            let maintenance_changes = req
                .maintenance_info
                .as_ref()
                .is_some_and(|m| instance.maintenance_version.as_deref() != Some(m.version.as_str()));
            let action = match (maintenance_changes, action) {
                (true, Some(other)) => {
                    return Err(OsbError::BadRequest(format!(
                        "maintenance_info: this update asks for maintenance version {} and for the action '{}'; send them as two updates",
                        plan.maintenance_version.as_deref().unwrap_or_default(),
                        other.parameter()
                    )));
                }
                (true, None) => Some(Action::Maintenance),
                (false, action) => action,
            };
            let pending = PendingUpdate {
                plan_id: plan.id.clone(),
                parameters: merged.clone(),
                engine_version,
                action: action.clone(),
                engine: (engine != current_engine).then_some(engine),
                maintenance_version: if maintenance_changes {
                    plan.maintenance_version.clone()
                } else {
                    None
                },
            };
            if instance.state == InstanceState::Updating && instance.pending_update.as_ref() == Some(&pending)
            {
                self.resend(&instance.last_operation_id).await?;
                return Ok(Updated::Accepted { operation: instance.last_operation_id });
            }
            instance.state.on(InstanceEvent::Update).map_err(|e| refused(e, id))?;
            if let Some(action) = &action {
                self.check_action(&instance, current_engine, action).await?;
            }

            let t = now();
            let unchanged = !plan_changes
                && action.is_none()
                && merged == instance.parameters
                && pending.engine_version == instance.engine_version
                && !maintenance_changes;
            if unchanged {
                if let Some(ctx) = &req.context
                    && *ctx != instance.context
                {
                    instance.context = ctx.clone();
                    instance.updated_at = t;
                    match self.store.save_instance(&mut instance, None).await {
                        Ok(()) => {}
                        Err(e) if e.is_race() => continue,
                        Err(e) => return Err(store_err(e)),
                    }
                }
                return Ok(Updated::Unchanged);
            }

            let mut op = Operation::start(OperationKind::Update, id, None, t, plan.maximum_polling_duration);
            instance.apply(InstanceEvent::Update).map_err(|e| refused(e, id))?;
            instance.pending_update = Some(pending);
            instance.last_operation_id = op.id.clone();
            instance.updated_at = t;
            if let Some(ctx) = req.context.clone() {
                instance.context = ctx;
            }
            match self.store.save_instance(&mut instance, Some(&mut op)).await {
                Ok(()) => {
                    info!(instance = %id, plan = %plan.name, operation = %op.id, "update accepted");
                    self.enqueue(&op).await?;
                    return Ok(Updated::Accepted { operation: op.id });
                }
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OsbError::Concurrency(format!(
            "service instance {id} is being changed by concurrent requests; retry"
        )))
    }

    /// `DELETE /v2/service_instances/{instance_id}`
    ///
    /// During provisioning this stops the creation: the instance moves to
    /// deprovisioning, the worker cancels the provision operation when it
    /// next looks at it, and the deprovision removes whatever was created.
    pub async fn deprovision(&self, id: &InstanceId, q: &Query) -> Result<Accepted, OsbError> {
        require("service_id", &q.service_id)?;
        require("plan_id", &q.plan_id)?;
        async_required(q, "deprovisioning")?;
        for _ in 0..RACE_RETRIES {
            let mut instance = match self.store.instance(id).await.map_err(store_err)? {
                Some(i) if i.state != InstanceState::Deleted => i,
                _ => return Err(OsbError::Gone(format!("service instance {id} does not exist"))),
            };
            if instance.state == InstanceState::Deprovisioning {
                self.resend(&instance.last_operation_id).await?;
                return Ok(Accepted { operation: instance.last_operation_id });
            }
            instance.state.on(InstanceEvent::Deprovision).map_err(|e| refused(e, id))?;
            let plan_timeout = match self.service_plan(&instance.service_id, &instance.plan_id).await {
                Ok((_, p)) => p.maximum_polling_duration,
                Err(_) => DEADLINE_WITHOUT_PLAN_SECS,
            };
            let was = instance.state;
            let mut op = start_deprovision(&mut instance, plan_timeout, now()).map_err(|e| refused(e, id))?;
            match self.store.save_instance(&mut instance, Some(&mut op)).await {
                Ok(()) => {
                    info!(instance = %id, operation = %op.id, was = was.as_str(), "deprovisioning accepted");
                    self.enqueue(&op).await?;
                    return Ok(Accepted { operation: op.id });
                }
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(OsbError::Concurrency(format!(
            "service instance {id} is being changed by concurrent requests; retry"
        )))
    }

    /// `GET /v2/service_instances/{instance_id}`
    pub async fn fetch_instance(&self, id: &InstanceId) -> Result<InstanceResponse, OsbError> {
        let instance = self.store.instance(id).await.map_err(store_err)?;
        let instance = match instance {
            Some(i) => i,
            None => return Err(OsbError::NotFound(format!("service instance {id} does not exist"))),
        };
        match instance.state {
            InstanceState::Ready | InstanceState::Deprovisioning | InstanceState::DeprovisionFailed => {}
            InstanceState::Updating => {
                return Err(OsbError::Concurrency(format!(
                    "service instance {id} is being updated; fetch it when the update has finished"
                )));
            }
            InstanceState::Provisioning => {
                return Err(OsbError::NotFound(format!("service instance {id} is still being provisioned")));
            }
            InstanceState::ProvisionFailed | InstanceState::Deleted => {
                return Err(OsbError::NotFound(format!("service instance {id} does not exist")));
            }
        }
        // What CloudWatch says of the cache's alarms; a fetch still answers
        // when it cannot say, without them.
        let alarms = match self.worker.alarms().states(instance.cache_key()).await {
            Ok(alarms) => alarms,
            Err(e) => {
                warn!(instance = %id, error = %e, "could not read the cache's alarm states; answering without them");
                None
            }
        };
        let service_plan = self.service_plan(&instance.service_id, &instance.plan_id).await.ok();
        let engine = service_plan.as_ref().map(|(s, _)| instance.engine_of(s));
        let plan = service_plan.map(|(_, p)| p);
        let snapshots = match engine {
            Some(engine) => self.snapshot_views(&instance, engine).await,
            None => None,
        };
        let restored_from = instance
            .restored_from
            .as_ref()
            .map(|r| RestoredFromView { instance_id: r.instance_id.clone(), snapshot: r.snapshot.clone() });
        let metadata = (alarms.is_some() || snapshots.is_some() || restored_from.is_some()).then_some(
            InstanceMetadata { attributes: InstanceAttributes { alarms, snapshots, restored_from } },
        );
        Ok(InstanceResponse {
            service_id: instance.service_id,
            plan_id: instance.plan_id,
            parameters: instance.parameters,
            maintenance_info: instance.maintenance_version.map(|version| MaintenanceInfo {
                // What the plan says of the version, while it is the plan's.
                description: plan
                    .as_ref()
                    .filter(|p| p.maintenance_version.as_deref() == Some(version.as_str()))
                    .and_then(|p| p.maintenance_description.clone()),
                version,
            }),
            metadata,
        })
    }

    /// `GET /v2/service_instances/{instance_id}/last_operation`
    pub async fn instance_last_operation(
        &self,
        id: &InstanceId,
        q: &Query,
    ) -> Result<LastOperation, OsbError> {
        let asked = q.operation.as_ref().map(|o| o.to_string());
        let (instance, op) =
            self.store.instance_and_operation(id, asked.as_deref()).await.map_err(store_err)?;
        let Some(instance) = instance else {
            return Err(OsbError::NotFound(format!("service instance {id} does not exist")));
        };
        let op_id = asked.unwrap_or(instance.last_operation_id);
        match op {
            Some(op) if op.instance_id == *id && op.binding_id.is_none() => {
                // Platforms poll; a poll of an operation that stopped moving
                // (its job lost or dead-lettered) enqueues it again.
                self.heal_op(&op).await?;
                Ok(last_operation(&op))
            }
            _ => Err(OsbError::BadRequest(format!(
                "operation {op_id:?} is not an operation of service instance {id}"
            ))),
        }
    }
}

/// The engine and major version an update asks for: Valkey's versions when
/// it moves a Redis OSS cache to Valkey (`engine`), else the plan's; the
/// instance's own version when the request names none and it still fits.
/// Refused with a 400 naming the parameter: a move of a cache without users (Redis OSS before 6, whose AUTH token
/// Valkey's user model replaces), and a version older than the running one
/// (ElastiCache only upgrades).
fn engine_and_version(
    instance: &Instance,
    current: Engine,
    plan: &Plan,
    given: &Map<String, Value>,
    merged: &Map<String, Value>,
    valkey_versions: &[String],
) -> Result<(Engine, String), OsbError> {
    let engine = match merged.get(params::ENGINE).and_then(Value::as_str) {
        Some("valkey") => Engine::Valkey,
        Some("redis") => Engine::Redis,
        _ => current,
    };
    // (A move back to Redis OSS was refused before the schema's check.)
    let engine = if current == Engine::Valkey { Engine::Valkey } else { engine };
    let moving = engine != current;
    if moving && !current.has_users(&instance.engine_version) {
        return Err(OsbError::BadRequest(format!(
            "parameter '{}': instance {} runs Redis OSS {}, which authenticates with one AUTH token; upgrade its engine_version to 6.0 or later first, then move it to Valkey",
            params::ENGINE,
            instance.id,
            instance.engine_version
        )));
    }
    // Valkey's versions for a Redis OSS instance that moves or moved.
    let allowed: &[String] =
        if instance.engine == Some(Engine::Valkey) || (moving && engine == Engine::Valkey) {
            valkey_versions
        } else {
            &plan.engine_versions
        };
    let version = match params::requested_version(given) {
        Some(v) => v.to_string(),
        None if !moving && allowed.contains(&instance.engine_version) => instance.engine_version.clone(),
        None => {
            return Err(OsbError::BadRequest(format!(
                "plan {}{} does not offer engine version {}; add parameter '{}' with one of {}",
                plan.name,
                if engine == Engine::Valkey && plan.engine_versions != allowed { " on Valkey" } else { "" },
                instance.engine_version,
                params::ENGINE_VERSION,
                allowed.join(", ")
            )));
        }
    };
    if compare_versions(&version, &instance.engine_version).is_lt() {
        let later: Vec<&str> = allowed
            .iter()
            .filter(|v| !compare_versions(v, &instance.engine_version).is_lt())
            .map(String::as_str)
            .collect();
        return Err(OsbError::BadRequest(format!(
            "parameter '{}' is \"{version}\", older than the {} {} instance {} runs; ElastiCache only upgrades, so ask for {}",
            params::ENGINE_VERSION,
            current.as_str(),
            instance.engine_version,
            instance.id,
            if later.is_empty() { "no other version".to_string() } else { later.join(" or ") }
        )));
    }
    Ok((engine, version))
}
