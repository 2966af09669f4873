//! Faults for the chaos test of AWS mode: an HTTP client that answers a
//! share of AWS requests with throttling or a 5xx (before the request
//! reaches AWS, or after AWS has acted on it and the answer is lost), and a
//! store and a queue that abort the worker once at every step boundary
//! (before a record write, and between a record write and the enqueue that
//! follows it). Each counts what it injected, for the test to print.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use broker_core::domain::{Binding, Instance, Operation, Plan, Pool, Service, Sweep};
use broker_core::ports::{
    CatalogStore, Job, JobQueue, PoolChange, QueueError, StateStore, Store, StoreError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- HTTP

/// What a faulty answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// 400 with the service's throttling code.
    Throttling,
    /// 503 Service Unavailable.
    Unavailable,
}

/// The shared dice and tally of [`FaultyHttp`].
#[derive(Debug)]
pub struct HttpFaults {
    rate: f64,
    on: AtomicBool,
    rng: Mutex<StdRng>,
    /// (service, operation, kind, after AWS acted) → count.
    tally: Mutex<BTreeMap<(String, String, FaultKind, bool), u64>>,
    requests: Mutex<u64>,
    /// (service, operation) → requests seen while on.
    calls: Mutex<BTreeMap<(String, String), u64>>,
}

impl HttpFaults {
    /// Faults in `rate` (0 to 1) of the requests, from dice seeded with `seed`;
    /// off until [`HttpFaults::set_on`].
    pub fn new(rate: f64, seed: u64) -> Arc<HttpFaults> {
        Arc::new(HttpFaults {
            rate,
            on: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            tally: Mutex::default(),
            requests: Mutex::new(0),
            calls: Mutex::default(),
        })
    }

    /// Counts requests and injects nothing: for tests that count what a
    /// lifecycle costs in AWS requests.
    pub fn counter() -> Arc<HttpFaults> {
        let counter = HttpFaults::new(0.0, 0);
        counter.set_on(true);
        counter
    }

    /// Requests seen while on, by (service, operation), and forgets them.
    pub fn take_calls(&self) -> BTreeMap<(String, String), u64> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// Requests seen while on.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }

    /// Faults injected: (service, operation, kind, after AWS acted) → count.
    pub fn tally(&self) -> BTreeMap<(String, String, FaultKind, bool), u64> {
        self.tally.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.tally.lock().unwrap().values().sum()
    }

    fn draw(&self, service: &str, operation: &str) -> Option<(FaultKind, bool)> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        *self.requests.lock().unwrap() += 1;
        *self.calls.lock().unwrap().entry((service.to_string(), operation.to_string())).or_default() += 1;
        if self.rate <= 0.0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        if !rng.random_bool(self.rate) {
            return None;
        }
        let kind = if rng.random_bool(0.5) { FaultKind::Throttling } else { FaultKind::Unavailable };
        let after = rng.random_bool(0.5);
        *self
            .tally
            .lock()
            .unwrap()
            .entry((service.to_string(), operation.to_string(), kind, after))
            .or_default() += 1;
        Some((kind, after))
    }
}

/// An HTTP client that passes requests to `inner` except for the share
/// [`HttpFaults`] picks, which it answers with a fault: either without
/// sending the request, or after sending it (AWS acted; the caller never
/// learns it did).
#[derive(Debug, Clone)]
pub struct FaultyHttp {
    inner: SharedHttpClient,
    faults: Arc<HttpFaults>,
}

impl FaultyHttp {
    pub fn wrap(inner: SharedHttpClient, faults: Arc<HttpFaults>) -> SharedHttpClient {
        SharedHttpClient::new(FaultyHttp { inner, faults })
    }
}

impl HttpClient for FaultyHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            faults: self.faults.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    faults: Arc<HttpFaults>,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (service, operation) = identify(&request);
        let Some((kind, after)) = self.faults.draw(service.name(), &operation) else {
            return self.inner.call(request);
        };
        let answer = fault_response(service, kind);
        if after {
            let sent = self.inner.call(request);
            HttpConnectorFuture::new(async move {
                let _ = sent.await;
                Ok(answer)
            })
        } else {
            HttpConnectorFuture::new(async move { Ok(answer) })
        }
    }
}

/// The AWS services the broker calls, by protocol.
#[derive(Debug, Clone, Copy)]
enum AwsService {
    DynamoDb,
    Sqs,
    SecretsManager,
    /// CloudWatch Logs (the caches' log groups).
    Logs,
    /// The query protocol: `Action=...` in a form body.
    ElastiCache,
}

impl AwsService {
    fn name(self) -> &'static str {
        match self {
            AwsService::DynamoDb => "dynamodb",
            AwsService::Sqs => "sqs",
            AwsService::SecretsManager => "secretsmanager",
            AwsService::Logs => "logs",
            AwsService::ElastiCache => "elasticache",
        }
    }
}

/// The service and operation of a request: the `X-Amz-Target` header of the
/// JSON protocols (`DynamoDB_20120810.PutItem`), or the `Action` of a query
/// protocol body.
fn identify(request: &HttpRequest) -> (AwsService, String) {
    if let Some(target) = request.headers().get("x-amz-target") {
        let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
        let service = if prefix.starts_with("DynamoDB") {
            AwsService::DynamoDb
        } else if prefix.starts_with("AmazonSQS") {
            AwsService::Sqs
        } else if prefix.starts_with("Logs_") {
            AwsService::Logs
        } else {
            AwsService::SecretsManager
        };
        return (service, operation.to_string());
    }
    let body = request.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
    let action =
        body.split('&').find_map(|pair| pair.strip_prefix("Action=")).unwrap_or("unknown").to_string();
    (AwsService::ElastiCache, action)
}

/// A fault as the service would send it: its protocol's error shape and a
/// code the SDKs classify as throttling or as a transient server error.
fn fault_response(service: AwsService, kind: FaultKind) -> HttpResponse {
    let (status, code) = match kind {
        FaultKind::Throttling => (400, "ThrottlingException"),
        FaultKind::Unavailable => (503, "ServiceUnavailable"),
    };
    let (content_type, body) = match service {
        AwsService::ElastiCache => {
            let code = if kind == FaultKind::Throttling { "Throttling" } else { code };
            (
                "text/xml",
                format!(
                    "<ErrorResponse xmlns=\"http://elasticache.amazonaws.com/doc/2015-02-02/\">\
                     <Error><Type>{}</Type><Code>{code}</Code><Message>injected by the chaos test</Message></Error>\
                     <RequestId>chaos</RequestId></ErrorResponse>",
                    if status == 400 { "Sender" } else { "Receiver" }
                ),
            )
        }
        AwsService::SecretsManager | AwsService::Logs => (
            "application/x-amz-json-1.1",
            format!("{{\"__type\":\"{code}\",\"message\":\"injected by the chaos test\"}}"),
        ),
        AwsService::DynamoDb | AwsService::Sqs => (
            "application/x-amz-json-1.0",
            format!("{{\"__type\":\"{code}\",\"message\":\"injected by the chaos test\"}}"),
        ),
    };
    let mut response =
        HttpResponse::new(StatusCode::try_from(status).expect("a valid status"), SdkBody::from(body));
    response.headers_mut().insert("content-type", content_type);
    response.headers_mut().insert("x-amzn-requestid", "chaos");
    response
}

// ---------------------------------------------------------------- aborts

/// The step boundaries at which the worker was aborted, each once: the
/// first time the worker reaches one, the write (or the enqueue) fails.
#[derive(Debug, Default)]
pub struct Aborts {
    seen: Mutex<BTreeSet<String>>,
}

impl Aborts {
    pub fn new() -> Arc<Aborts> {
        Arc::default()
    }

    /// Every boundary aborted at, as `before write: provision CreateCache`
    /// or `before enqueue: bind WaitUserActive`.
    pub fn boundaries(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether to abort at `boundary`: only the first time.
    fn first(&self, boundary: String) -> bool {
        self.seen.lock().unwrap().insert(boundary)
    }
}

fn at(op: &Operation) -> String {
    format!("{} {:?}", op.kind.as_str(), op.step)
}

/// A store whose record writes from the worker fail once at every step
/// boundary, before anything is written: the AWS call of the step has been
/// made and its result is not recorded.
pub struct AbortingStore {
    inner: Arc<dyn Store>,
    aborts: Arc<Aborts>,
}

impl AbortingStore {
    pub fn new(inner: Arc<dyn Store>, aborts: Arc<Aborts>) -> AbortingStore {
        AbortingStore { inner, aborts }
    }

    fn check(&self, what: &str, op: Option<&Operation>) -> Result<(), StoreError> {
        let boundary = match op {
            Some(op) => format!("before write: {what} of {}", at(op)),
            None => format!("before write: {what}"),
        };
        if self.aborts.first(boundary.clone()) {
            return Err(StoreError::Unavailable(format!("chaos: aborted {boundary}")));
        }
        Ok(())
    }
}

#[async_trait]
impl CatalogStore for AbortingStore {
    async fn services(&self) -> Result<Vec<Service>, StoreError> {
        self.inner.services().await
    }
    async fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        self.inner.plans().await
    }
    async fn catalog_version(&self) -> Result<Option<u64>, StoreError> {
        self.inner.catalog_version().await
    }
    async fn seed(&self, services: &[Service], plans: &[Plan]) -> Result<usize, StoreError> {
        self.inner.seed(services, plans).await
    }
    async fn put_service(&self, service: &Service) -> Result<(), StoreError> {
        self.inner.put_service(service).await
    }
    async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.inner.put_plan(plan).await
    }
}

#[async_trait]
impl StateStore for AbortingStore {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        self.inner.instance(id).await
    }
    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.inner.instances().await
    }
    async fn create_instance(
        &self,
        instance: &mut Instance,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner.create_instance(instance, operation, replacing).await
    }
    async fn save_instance(
        &self,
        instance: &mut Instance,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let what = format!("instance {}", instance.state.as_str());
        self.check(&what, operation.as_deref())?;
        self.inner.save_instance(instance, operation).await
    }
    async fn binding(&self, instance_id: &str, binding_id: &str) -> Result<Option<Binding>, StoreError> {
        self.inner.binding(instance_id, binding_id).await
    }
    async fn bindings(&self, instance_id: &str) -> Result<Vec<Binding>, StoreError> {
        self.inner.bindings(instance_id).await
    }
    async fn create_binding(
        &self,
        binding: &mut Binding,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner.create_binding(binding, operation, replacing).await
    }
    async fn save_binding(
        &self,
        binding: &mut Binding,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let what = format!("binding {}", binding.state.as_str());
        self.check(&what, operation.as_deref())?;
        self.inner.save_binding(binding, operation).await
    }
    async fn claim_spare(
        &self,
        instance: &mut Instance,
        spares_op: Option<&mut Operation>,
        binding: &mut Binding,
        bind_op: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner.claim_spare(instance, spares_op, binding, bind_op, replacing).await
    }
    async fn pool(&self, plan_id: &str) -> Result<Option<Pool>, StoreError> {
        self.inner.pool(plan_id).await
    }
    async fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        self.inner.pools().await
    }
    async fn save_pool(&self, pool: &mut Pool, change: PoolChange<'_>) -> Result<(), StoreError> {
        self.check("pool", None)?;
        self.inner.save_pool(pool, change).await
    }
    async fn sweep(&self) -> Result<Option<Sweep>, StoreError> {
        self.inner.sweep().await
    }
    async fn save_sweep(&self, sweep: &mut Sweep) -> Result<(), StoreError> {
        self.inner.save_sweep(sweep).await
    }
    async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        self.inner.operation(id).await
    }
    async fn operations_in_progress(&self) -> Result<Vec<Operation>, StoreError> {
        self.inner.operations_in_progress().await
    }
    async fn save_operation(&self, operation: &mut Operation) -> Result<(), StoreError> {
        self.check("operation", Some(operation))?;
        self.inner.save_operation(operation).await
    }
    async fn purge_expired(&self, now: i64) -> Result<usize, StoreError> {
        self.inner.purge_expired(now).await
    }
}

/// A queue whose enqueues from the worker fail once per step boundary: the
/// record of the step is written, the job that carries on from it is not
/// sent.
pub struct AbortingQueue {
    inner: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    aborts: Arc<Aborts>,
}

impl AbortingQueue {
    pub fn new(inner: Arc<dyn JobQueue>, store: Arc<dyn Store>, aborts: Arc<Aborts>) -> AbortingQueue {
        AbortingQueue { inner, store, aborts }
    }
}

#[async_trait]
impl JobQueue for AbortingQueue {
    async fn enqueue(&self, job: &Job, delay_secs: u32) -> Result<(), QueueError> {
        let op = self.store.operation(&job.operation_id).await.ok().flatten();
        let boundary = format!(
            "before enqueue: {}",
            op.as_ref().map_or_else(|| "an operation it could not read".to_string(), at)
        );
        if self.aborts.first(boundary.clone()) {
            return Err(QueueError(format!("chaos: aborted {boundary}")));
        }
        self.inner.enqueue(job, delay_secs).await
    }
}
