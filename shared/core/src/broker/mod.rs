//! The broker: one method per OSB endpoint. Each validates, records the
//! operation with conditional writes, enqueues a job and returns a fact
//! (`Accepted`, `AlreadyExists`, ...). The API layer turns facts into status
//! codes; errors come from the OSB error catalog. The broker never waits on a
//! cache: the worker does the work.
//!
//! Here: the facts, the catalog and what every endpoint shares; the
//! instance endpoints are in `instances`, the binding endpoints in
//! `bindings`.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::catalog::{bind_parameters_schema, binding_rotatable, osb_catalog, plan_updateable};
use crate::domain::binding::BindingEvent;
use crate::domain::day2::{self, RestoreFrom};
use crate::domain::instance::{InstanceEvent, PendingUpdate};
use crate::domain::params::{self, compare_versions, create_schema, update_schema};
use crate::domain::settings;
use crate::domain::spare::{self, SPARES_DEADLINE_SECS};
use crate::domain::{
    Action, Binding, BindingId, BindingState, Credentials, Engine, Instance, InstanceId, InstanceState,
    InvalidTransition, Machine, Operation, OperationKind, OperationState, Plan, Refusal, RotationPolicy,
    Service, now,
};
use crate::osb::OsbError;
use crate::osb::types::{
    BindRequest, BindingMetadata, BindingResponse, EndpointObject, InstanceAttributes, InstanceMetadata,
    InstanceResponse, LastOperation, MaintenanceInfo, ProvisionRequest, Query, RestoredFromView,
    UpdateRequest,
};
use crate::ports::{CacheProvider, Job, JobQueue, ProviderError, SecretStore, Stage, Store, StoreError};
use crate::worker::Worker;

mod bindings;
mod dashboard;
mod instances;
mod pool;
mod snapshots;

pub use dashboard::{CHART_SECS, DashboardView, OperationLine};
pub use pool::Refill;

/// What a provision request led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Provisioned {
    /// 201: provisioned now (a cache from the plan's warm pool); the
    /// operation, already succeeded, says so.
    Created { operation: String },
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
    /// What the dashboard page charts.
    cache_metrics: Arc<dyn crate::ports::CacheMetrics>,
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
        // Throttled, timed out or down: the platform retries, which is what
        // a 503 asks of it. The cause is the operator's, in the log.
        StoreError::Unavailable(msg) => {
            warn!(error = %msg, "the state store is unavailable");
            OsbError::Unavailable("the broker's state store is unavailable; retry the request".into())
        }
        StoreError::Refused(msg) => OsbError::Internal(format!("store: {msg}")),
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

/// Moves `instance` to deprovisioning at time `t` and returns the new
/// operation (a deprovision request's, or a retired warm-pool member's). It
/// waits for what may still be making things in the cache: the provision it
/// cancels, or the making of spare users.
fn start_deprovision(
    instance: &mut Instance,
    max_secs: u64,
    t: crate::domain::Timestamp,
) -> Result<Operation, InvalidTransition> {
    let mut op = Operation::start(OperationKind::Deprovision, &instance.id, None, t, max_secs);
    op.supersedes = if instance.state == InstanceState::Provisioning {
        Some(instance.last_operation_id.clone())
    } else {
        instance.spares_operation.clone()
    };
    instance.apply(InstanceEvent::Deprovision)?;
    instance.last_operation_id = op.id.clone();
    instance.updated_at = t;
    Ok(op)
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
            cache_metrics: Arc::new(crate::ports::NoCacheMetrics),
        }
    }

    /// Charts on the dashboard page what `metrics` measured of each cache.
    pub fn with_cache_metrics(mut self, metrics: Arc<dyn crate::ports::CacheMetrics>) -> Broker {
        self.cache_metrics = metrics;
        self
    }

    /// Where the broker and its worker count: a job the broker enqueues
    /// again (a repeated request, a poll of a stalled operation, the
    /// reconcile pass) counts as requeued, as the worker's own do.
    pub fn metrics(&self) -> &dyn crate::ports::Metrics {
        self.worker.metrics()
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
    /// The Valkey versions the catalog offers, which a Redis OSS instance
    /// may move to in place.
    async fn valkey_versions(&self) -> Result<Vec<String>, OsbError> {
        let catalog = self.catalog_snapshot().await?;
        Ok(params::valkey_versions(&catalog.services, &catalog.plans))
    }

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
        self.queue.enqueue(&Job::for_operation(op), 0).await.map_err(|e| {
            warn!(operation = %op.id, error = %e, "could not enqueue the operation's job");
            OsbError::Unavailable(
                "the broker's job queue is unavailable; the request was recorded, repeat it to go on".into(),
            )
        })
    }

    /// A platform repeats a request (the same provision, update, deprovision
    /// or bind) when it did not get the answer to the first, which is also
    /// what it sees when the first request's enqueue failed after its record
    /// was written: so the operation's job is enqueued again, whatever its
    /// age. Jobs are idempotent; a duplicate costs one extra look.
    async fn resend(&self, operation_id: &str) -> Result<(), OsbError> {
        match self.store.operation(operation_id).await.map_err(store_err)? {
            Some(op) if !op.is_finished() => {
                info!(operation = %op.id, "the request is repeated; enqueueing its job again");
                self.enqueue(&op).await?;
                self.metrics().job_requeued(op.kind);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// An operation in progress that something else depends on (a bind
    /// nudging its instance's `spares`): if its record has not moved for a
    /// while its job may be lost, so enqueue it again.
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
            self.metrics().job_requeued(op.kind);
        }
        Ok(())
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
