//! The broker: one method per OSB endpoint. Each validates, records the
//! operation with conditional writes, enqueues a job and returns a fact
//! (`Accepted`, `AlreadyExists`, ...). The API layer turns facts into status
//! codes; errors come from the OSB error catalog. The broker never waits on a
//! cache: the worker does the work.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::catalog::{bind_parameters_schema, binding_rotatable, osb_catalog, plan_updateable};
use crate::domain::binding::BindingEvent;
use crate::domain::instance::{InstanceEvent, PendingUpdate};
use crate::domain::params::{self, compare_versions, parameters_schema};
use crate::domain::spare::{self, SPARES_DEADLINE_SECS};
use crate::domain::{
    Binding, BindingId, BindingState, Credentials, Engine, Instance, InstanceId, InstanceState,
    InvalidTransition, Machine, Operation, OperationKind, OperationState, Plan, Refusal, RotationPolicy,
    Service, now,
};
use crate::osb::OsbError;
use crate::osb::types::{
    BindRequest, BindingMetadata, BindingResponse, EndpointObject, InstanceResponse, LastOperation,
    MaintenanceInfo, ProvisionRequest, Query, UpdateRequest,
};
use crate::ports::{CacheProvider, Job, JobQueue, ProviderError, SecretStore, Stage, Store, StoreError};
use crate::worker::Worker;

/// What a provision request led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Provisioned {
    /// 202: in progress, poll this operation.
    Accepted { operation: String },
    /// 200: the same instance exists and is provisioned.
    AlreadyExists,
}

/// What an update request led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    Accepted {
        operation: String,
    },
    /// 200: nothing to change (a context-only update is recorded at once).
    Unchanged,
}

/// What a bind request led to.
#[derive(Debug, Clone)]
pub enum Bound {
    /// 201: bound now; here are its credentials.
    Created(BindingResponse),
    /// 202: in progress, poll this operation.
    Accepted { operation: String },
    /// 200: the same binding exists; here are its credentials.
    AlreadyExists(BindingResponse),
}

/// What an unbind request led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Unbound {
    /// 200: the binding is gone (its user may still be being removed, which
    /// the worker finishes).
    Done,
    /// 202: in progress, poll this operation.
    Accepted { operation: String },
}

/// How a job run within the request ended.
enum Inline {
    Done,
    /// It waits for something; the worker goes on with it.
    Pending,
}

/// 202 with this operation (deprovision, unbind).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub operation: String,
}

/// The deadline of a deprovision or unbind whose plan has left the catalog.
const DEADLINE_WITHOUT_PLAN_SECS: u64 = 3600;

/// How many times a request re-reads and retries after losing a race with a
/// concurrent request on the same record.
const RACE_RETRIES: usize = 3;

/// The broker's dependencies and settings.
pub struct Broker {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    provider: Arc<dyn CacheProvider>,
    secrets: Arc<dyn SecretStore>,
    /// Runs bind and unbind jobs within the request when the provider's
    /// users change at once (laptop mode), so both answer synchronously.
    worker: Arc<Worker>,
    settings: BrokerSettings,
    /// The catalog as last read: served from memory until the store says it
    /// changed, or, when the store cannot tell, for `catalog_ttl`.
    catalog_cache: std::sync::Mutex<Option<Arc<CatalogSnapshot>>>,
}

/// The catalog as read from the store, with its `GET /v2/catalog` body
/// serialized once.
struct CatalogSnapshot {
    read_at: std::time::Instant,
    /// The store's [`CatalogStore::catalog_version`] when it was read.
    version: Option<u64>,
    services: Vec<Service>,
    plans: Vec<Plan>,
    body: Arc<[u8]>,
}

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// An operation in progress whose record has not changed for this long is
    /// taken to have lost its job, and a repeated request enqueues it again.
    pub stall_secs: i64,
    /// How long a catalog read from the store is reused when the store
    /// cannot tell that it changed (zero: every request reads it again).
    pub catalog_ttl: std::time::Duration,
    /// The credential rotation policy: bind and fetch responses derive
    /// `metadata.renew_before` and `metadata.expires_at` from it.
    pub rotation: RotationPolicy,
}

fn store_err(e: StoreError) -> OsbError {
    match e {
        StoreError::Conflict(what) | StoreError::AlreadyExists(what) => OsbError::Concurrency(format!(
            "another request changed {what} at the same time; retry the request"
        )),
        StoreError::Unavailable(msg) => OsbError::Internal(format!("store: {msg}")),
    }
}

/// `parameters` as an object; absent or null is empty.
fn parameters_object(plan: &Plan, schema: &Value, p: Option<Value>) -> Result<Map<String, Value>, OsbError> {
    let value = match p {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v) => v,
    };
    params::validate(plan, schema, &value).map_err(|e| OsbError::BadRequest(e.0))?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(OsbError::BadRequest("parameters must be a JSON object".into())),
    }
}

fn require(name: &str, v: &Option<String>) -> Result<String, OsbError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(OsbError::BadRequest(format!("query parameter '{name}' is required"))),
    }
}

/// `organization_guid` and `space_guid` of a provision: the spec says each
/// "MUST be a non-empty string".
fn required_guid(name: &str, v: &Option<String>) -> Result<String, OsbError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(OsbError::BadRequest(format!(
            "{name} must be a non-empty string: the GUID of the platform's {}",
            if name == "organization_guid" { "organization" } else { "space" }
        ))),
        None => Err(OsbError::BadRequest(format!(
            "{name} is required: send the GUID of the platform's {} (the spec's provision request requires it)",
            if name == "organization_guid" { "organization" } else { "space" }
        ))),
    }
}

fn async_required(q: &Query, what: &str) -> Result<(), OsbError> {
    if q.accepts_incomplete {
        Ok(())
    } else {
        Err(OsbError::AsyncRequired(format!(
            "{what} is asynchronous: send the request again with ?accepts_incomplete=true"
        )))
    }
}

fn check_maintenance(plan: &Plan, m: &Option<MaintenanceInfo>) -> Result<(), OsbError> {
    if let Some(m) = m
        && plan.maintenance_version.as_deref() != Some(m.version.as_str())
    {
        return Err(OsbError::MaintenanceInfoConflict(format!(
            "maintenance_info.version {:?} does not match plan {}'s {}; fetch the catalog again",
            m.version,
            plan.name,
            plan.maintenance_version.as_deref().map_or("(none)".to_string(), |v| format!("{v:?}"))
        )));
    }
    Ok(())
}

/// Why a bind without `accepts_incomplete` cannot be answered now.
fn no_spare_free(instance: &Instance, plan: &Plan) -> String {
    if plan.spare_binding_users == 0 {
        format!(
            "plan {} keeps no spare cache users (spare_binding_users is 0), so a bind waits minutes for ElastiCache to add a new user: send the request with ?accepts_incomplete=true and poll its last_operation",
            plan.name
        )
    } else {
        format!(
            "no spare cache user of service instance {} is free right now and adding one to its ElastiCache user group takes minutes (new spares are being made): send the request with ?accepts_incomplete=true and poll its last_operation, or retry in a few minutes",
            instance.id
        )
    }
}

/// A request the domain's state machines refused, as the platform hears
/// it: the one place where a refused transition becomes an OSB error.
fn refused(e: InvalidTransition, id: &str) -> OsbError {
    let InvalidTransition { entity, event, state, refusal } = e;
    let binding = entity == <BindingState as Machine>::ENTITY;
    match refusal {
        Refusal::InProgress => OsbError::Concurrency(format!(
            "{entity} {id} is {state} and cannot {event} now; retry when that has finished"
        )),
        Refusal::Failed => OsbError::Unprocessable {
            error: if binding { "BindingNotUsable" } else { "InstanceNotUsable" },
            description: format!(
                "{entity} {id} is {state} and cannot {event}; {} it",
                if binding { "unbind" } else { "deprovision" }
            ),
            update_repeatable: None,
        },
        Refusal::Gone => OsbError::NotFound(format!("{entity} {id} does not exist")),
        // The broker asked what its own checks rule out: a fault, not the
        // platform's.
        Refusal::Settled | Refusal::Finished => {
            OsbError::Internal(format!("{entity} {id} cannot {event} while {state}"))
        }
    }
}

impl Broker {
    /// A broker over these parts; `worker` is the worker over the same
    /// parts (see [`Broker::bind`] for when it runs jobs in the request).
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        provider: Arc<dyn CacheProvider>,
        secrets: Arc<dyn SecretStore>,
        worker: Arc<Worker>,
        settings: BrokerSettings,
    ) -> Broker {
        Broker {
            store,
            queue,
            provider,
            secrets,
            worker,
            settings,
            catalog_cache: std::sync::Mutex::new(None),
        }
    }

    /// `GET /v2/catalog`: the body, serialized once per catalog change.
    pub async fn catalog(&self) -> Result<Arc<[u8]>, OsbError> {
        Ok(self.catalog_snapshot().await?.body.clone())
    }

    /// The catalog from memory when it is known not to have changed: the
    /// store's version is unchanged, or (a store without one) it was read
    /// less than `catalog_ttl` ago. Otherwise it reads the store again.
    async fn catalog_snapshot(&self) -> Result<Arc<CatalogSnapshot>, OsbError> {
        let version = self.store.catalog_version().await.map_err(store_err)?;
        let cached = self.catalog_cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(snapshot) = cached {
            let fresh = match version {
                Some(_) => snapshot.version == version,
                None => snapshot.read_at.elapsed() < self.settings.catalog_ttl,
            };
            if fresh {
                return Ok(snapshot);
            }
        }
        let services = self.store.services().await.map_err(store_err)?;
        let plans = self.store.plans().await.map_err(store_err)?;
        let body = serde_json::to_vec(&osb_catalog(&services, &plans))
            .map_err(|e| OsbError::Internal(format!("serialize the catalog: {e}")))?;
        let snapshot = Arc::new(CatalogSnapshot {
            read_at: std::time::Instant::now(),
            version,
            services,
            plans,
            body: body.into(),
        });
        *self.catalog_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The service and plan a request names; 400 naming the field otherwise.
    async fn service_plan(&self, service_id: &str, plan_id: &str) -> Result<(Service, Plan), OsbError> {
        let catalog = self.catalog_snapshot().await?;
        let service = catalog.services.iter().find(|s| s.id == service_id).ok_or_else(|| {
            OsbError::BadRequest(format!("service_id {service_id:?} is not a service in the catalog"))
        })?;
        let plan = catalog.plans.iter().find(|p| p.id == plan_id && p.service_id == service.id).ok_or_else(
            || OsbError::BadRequest(format!("plan_id {plan_id:?} is not a plan of service {}", service.name)),
        )?;
        Ok((service.clone(), plan.clone()))
    }

    async fn enqueue(&self, op: &Operation) -> Result<(), OsbError> {
        self.queue
            .enqueue(&Job::for_operation(op), 0)
            .await
            .map_err(|e| OsbError::Internal(format!("enqueue {}: {e}", op.id)))
    }

    /// A repeated request for an operation in progress: if its record has not
    /// moved for a while its job may be lost, so enqueue it again. Jobs are
    /// idempotent, so a duplicate costs one extra look.
    async fn heal(&self, operation_id: &str) -> Result<(), OsbError> {
        match self.store.operation(operation_id).await.map_err(store_err)? {
            Some(op) => self.heal_op(&op).await,
            None => Ok(()),
        }
    }

    /// [`Broker::heal`] for an operation already read (a poll has it).
    async fn heal_op(&self, op: &Operation) -> Result<(), OsbError> {
        if !op.is_finished() && now() - op.updated_at >= self.settings.stall_secs {
            warn!(operation = %op.id, "operation has not progressed; enqueueing its job again");
            self.enqueue(op).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ instances

    /// `PUT /v2/service_instances/{instance_id}`
    pub async fn provision(
        &self,
        id: &InstanceId,
        req: ProvisionRequest,
        q: &Query,
    ) -> Result<Provisioned, OsbError> {
        let organization_guid = required_guid("organization_guid", &req.organization_guid)?;
        let space_guid = required_guid("space_guid", &req.space_guid)?;
        let (_service, plan) = self.service_plan(&req.service_id, &req.plan_id).await?;
        let parameters = parameters_object(&plan, &parameters_schema(&plan), req.parameters.clone())?;
        check_maintenance(&plan, &req.maintenance_info)?;
        async_required(q, "provisioning")?;

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
                            self.heal(&i.last_operation_id).await?;
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
                    i.apply(InstanceEvent::Provision).map_err(|e| refused(e, id))?;
                    i.last_operation_id = op.id.clone();
                    i.updated_at = t;
                    self.store.save_instance(&mut i, Some(&mut op)).await
                }
                _ => {
                    let mut instance = Instance {
                        id: id.to_string(),
                        service_id: req.service_id.clone(),
                        plan_id: req.plan_id.clone(),
                        engine_version: params::engine_version(&plan, &parameters),
                        parameters: parameters.clone(),
                        context: req.context.clone().unwrap_or(Value::Null),
                        organization_guid: Some(organization_guid.clone()),
                        space_guid: Some(space_guid.clone()),
                        maintenance_version: plan.maintenance_version.clone(),
                        state: InstanceState::Provisioning,
                        last_operation_id: op.id.clone(),
                        pending_update: None,
                        admin_secret: None,
                        endpoint: None,
                        spares: Vec::new(),
                        spare_seq: 0,
                        spares_operation: None,
                        spares_to_schedule: Vec::new(),
                        rotation: None,
                        rotated_at: None,
                        created_at: t,
                        updated_at: t,
                        expires_at: None,
                        version: 0,
                    };
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
            // Parameters given in the request replace the ones the instance had.
            let given = match req.parameters.clone() {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => return Err(OsbError::BadRequest("parameters must be a JSON object".into())),
            };
            let mut merged = instance.parameters.clone();
            if params::requested_version(&given).is_some() {
                // The request's spelling of the version replaces the old one.
                params::forget_version(&mut merged);
            }
            merged.extend(given.clone());
            let merged = parameters_object(&plan, &parameters_schema(&plan), Some(Value::Object(merged)))?;
            let engine_version = match params::requested_version(&given) {
                Some(v) => v.to_string(),
                None if plan.engine_versions.contains(&instance.engine_version) => {
                    instance.engine_version.clone()
                }
                None => {
                    return Err(OsbError::BadRequest(format!(
                        "plan {} does not offer engine version {}; add parameter 'engine_version' with one of {}",
                        plan.name,
                        instance.engine_version,
                        plan.engine_versions.join(", ")
                    )));
                }
            };
            check_maintenance(&plan, &req.maintenance_info)?;
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
            if compare_versions(&engine_version, &instance.engine_version).is_lt() {
                return Err(OsbError::Unprocessable {
                    error: "EngineDowngradeNotSupported",
                    description: format!(
                        "engine_version cannot go down from {} to {engine_version}: ElastiCache only upgrades",
                        instance.engine_version
                    ),
                    update_repeatable: Some(false),
                });
            }

            let pending =
                PendingUpdate { plan_id: plan.id.clone(), parameters: merged.clone(), engine_version };
            if instance.state == InstanceState::Updating && instance.pending_update.as_ref() == Some(&pending)
            {
                self.heal(&instance.last_operation_id).await?;
                return Ok(Updated::Accepted { operation: instance.last_operation_id });
            }
            instance.state.on(InstanceEvent::Update).map_err(|e| refused(e, id))?;

            let t = now();
            let maintenance_changes = req
                .maintenance_info
                .as_ref()
                .is_some_and(|m| instance.maintenance_version.as_deref() != Some(m.version.as_str()));
            let unchanged = !plan_changes
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
            if maintenance_changes {
                instance.maintenance_version = plan.maintenance_version.clone();
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
                self.heal(&instance.last_operation_id).await?;
                return Ok(Accepted { operation: instance.last_operation_id });
            }
            instance.state.on(InstanceEvent::Deprovision).map_err(|e| refused(e, id))?;
            let plan_timeout = match self.service_plan(&instance.service_id, &instance.plan_id).await {
                Ok((_, p)) => p.maximum_polling_duration,
                Err(_) => DEADLINE_WITHOUT_PLAN_SECS,
            };
            let t = now();
            let mut op = Operation::start(OperationKind::Deprovision, id, None, t, plan_timeout);
            let was = instance.state;
            // Wait for what may still be making things in the cache: the
            // provision this cancels, or the making of spare users.
            op.supersedes = if was == InstanceState::Provisioning {
                Some(instance.last_operation_id.clone())
            } else {
                instance.spares_operation.clone()
            };
            instance.apply(InstanceEvent::Deprovision).map_err(|e| refused(e, id))?;
            instance.last_operation_id = op.id.clone();
            instance.updated_at = t;
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
        Ok(InstanceResponse {
            service_id: instance.service_id,
            plan_id: instance.plan_id,
            parameters: instance.parameters,
            maintenance_info: instance
                .maintenance_version
                .map(|version| MaintenanceInfo { version, description: None }),
        })
    }

    /// `GET /v2/service_instances/{instance_id}/last_operation`
    pub async fn instance_last_operation(
        &self,
        id: &InstanceId,
        q: &Query,
    ) -> Result<LastOperation, OsbError> {
        let Some(instance) = self.store.instance(id).await.map_err(store_err)? else {
            return Err(OsbError::NotFound(format!("service instance {id} does not exist")));
        };
        let op_id = q.operation.as_ref().map_or(instance.last_operation_id, |o| o.to_string());
        let op = self.store.operation(&op_id).await.map_err(store_err)?;
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

    // ------------------------------------------------------------ bindings

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
            if !service.engine.speaks_redis() {
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
            self.start_spares_if_short(instance.clone(), &plan, service.engine).await;
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
        self.heal(&b.last_operation_id).await?;
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
    async fn start_spares_if_short(&self, mut instance: Instance, plan: &Plan, engine: Engine) {
        if let Some(running) = &instance.spares_operation {
            if let Err(e) = self.heal(running).await {
                warn!(instance = %instance.id, error = %e, "could not enqueue the making of spare users");
            }
            return;
        }
        let wanted =
            spare::wanted(plan, engine, &instance.engine_version, self.provider.users_change_at_once());
        if instance.spares_kept() >= wanted {
            return;
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
            }
            Err(e) => warn!(instance = %instance.id, error = %e, "did not start making spare users"),
        }
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
        let binding =
            self.store.binding(instance_id, binding_id).await.map_err(store_err)?.ok_or_else(not_found)?;
        match binding.state {
            BindingState::Ready => {}
            BindingState::Creating => {
                return Err(OsbError::NotFound(format!(
                    "service binding {binding_id} is still being created"
                )));
            }
            _ => return Err(not_found()),
        }
        let instance = self.store.instance(instance_id).await.map_err(store_err)?.ok_or_else(not_found)?;
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
            None => self.provider.endpoint(&instance.id).await.map_err(|e| match e {
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
            engine: service.engine,
            engine_version: instance.engine_version.clone(),
            endpoint,
            username: binding.username.clone(),
            password,
        })
    }
}

fn last_operation(op: &Operation) -> LastOperation {
    LastOperation {
        state: op.state.osb(),
        description: op.description.clone(),
        instance_usable: if op.state == crate::domain::OperationState::Failed {
            op.instance_usable
        } else {
            None
        },
        update_repeatable: if op.state == crate::domain::OperationState::Failed {
            op.update_repeatable
        } else {
            None
        },
    }
}
