//! What an instance's dashboard page shows: its plan, engine and state, its
//! endpoints (never a password), how many bindings it has, its last
//! operations, its alarms, what its nodes measured over the last
//! [`CHART_SECS`] and how its data is kept. The HTTP layer checks the
//! page's token and renders this.

use super::*;
use crate::domain::{Endpoint, LogType, Timestamp};
use crate::ports::{AlarmSpec, AlarmStatus, MetricSeries};

/// How far back the page's charts go: three hours.
pub const CHART_SECS: i64 = 3 * 3600;

/// An instance as its dashboard page shows it.
#[derive(Debug, Clone)]
pub struct DashboardView {
    pub instance_id: String,
    pub service: String,
    pub engine: Engine,
    pub engine_version: String,
    pub plan: String,
    pub state: InstanceState,
    /// Where clients connect; `None` until the cache is made.
    pub endpoint: Option<Endpoint>,
    pub bindings: usize,
    /// The instance's last operation, then each binding's, newest first.
    pub operations: Vec<OperationLine>,
    /// `None` where the backend keeps no alarms (laptop mode), or when
    /// their states could not be read.
    pub alarms: Option<Vec<AlarmStatus>>,
    /// CPU, memory and connections per node from `now - CHART_SECS` to
    /// `now`; `None` where nothing is measured (or it could not be read).
    pub charts: Option<Vec<MetricSeries>>,
    /// The end of the charts' window.
    pub now: Timestamp,
    pub snapshot_retention_days: u8,
    pub final_snapshot: bool,
    pub log_delivery: Vec<LogType>,
}

/// One operation, as a line of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationLine {
    /// "provision", or "bind app-1".
    pub what: String,
    /// OSB's words: "in progress", "succeeded", "failed".
    pub state: &'static str,
    pub description: String,
    pub updated_at: Timestamp,
}

fn line(op: &Operation, what: String) -> OperationLine {
    OperationLine {
        what,
        state: op.state.osb(),
        description: op.description.clone(),
        updated_at: op.updated_at,
    }
}

impl Broker {
    /// The dashboard of instance `id`: 404 for an instance that does not
    /// exist (or no longer does).
    pub async fn dashboard(&self, id: &InstanceId) -> Result<DashboardView, OsbError> {
        let instance = match self.store.instance(id).await.map_err(store_err)? {
            Some(i) if i.state != InstanceState::Deleted => i,
            _ => return Err(OsbError::NotFound(format!("service instance {id} does not exist"))),
        };
        let (service, plan) = self.service_plan(&instance.service_id, &instance.plan_id).await?;
        let mut operations = Vec::new();
        if let Some(op) = self.store.operation(&instance.last_operation_id).await.map_err(store_err)? {
            operations.push(line(&op, op.kind.as_str().to_string()));
        }
        let bindings: Vec<_> = self
            .store
            .bindings(id)
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|b| b.state != BindingState::Deleted)
            .collect();
        for b in &bindings {
            if let Some(op) = self.store.operation(&b.last_operation_id).await.map_err(store_err)? {
                operations.push(line(&op, format!("{} {}", op.kind.as_str(), b.id)));
            }
        }
        operations.sort_by_key(|o| std::cmp::Reverse(o.updated_at));
        let alarms = match self.worker.alarms().states(instance.cache_key()).await {
            Ok(alarms) => alarms,
            Err(e) => {
                warn!(instance = %id, error = %e, "could not read the cache's alarm states for its dashboard");
                None
            }
        };
        let t = now();
        let charts = self.charts(&instance, instance.engine_of(&service), &plan, t).await;
        Ok(DashboardView {
            instance_id: instance.id.clone(),
            service: service.name.clone(),
            engine: instance.engine_of(&service),
            engine_version: instance.engine_version.clone(),
            plan: plan.name.clone(),
            state: instance.state,
            endpoint: instance.endpoint.clone(),
            bindings: bindings.len(),
            operations,
            alarms,
            charts,
            now: t,
            snapshot_retention_days: plan.snapshot_retention_days,
            final_snapshot: plan.final_snapshot,
            log_delivery: params::log_delivery(&plan, &instance.parameters),
        })
    }

    /// What the cache's nodes measured for the page, when the cache is
    /// made; a failure is logged and leaves the charts out.
    async fn charts(
        &self,
        instance: &Instance,
        engine: Engine,
        plan: &Plan,
        t: Timestamp,
    ) -> Option<Vec<MetricSeries>> {
        instance.endpoint.as_ref()?;
        let key = instance.cache_key();
        let read = async {
            let nodes = self.provider.nodes(key).await?;
            let spec = AlarmSpec {
                cache_key: key.to_string(),
                engine,
                nodes,
                thresholds: plan.alarms.clone(),
                tags: Vec::new(),
            };
            self.cache_metrics.recent(&spec, t - CHART_SECS, t).await
        };
        match read.await {
            Ok(charts) => charts,
            Err(e) => {
                warn!(instance = %instance.id, error = %e, "could not read the cache's metrics for its dashboard");
                None
            }
        }
    }
}
