//! Tests of the ElastiCache provider: against moto in server mode for the
//! calls moto implements (`moto.rs`), and against aws-smithy-mocks alone for
//! the states moto never shows and the errors it never returns (`mocks.rs`).
//! Helpers shared by both live here.

mod day2;
mod inventory;
mod mocks;
mod moto;
mod serverless;
mod settings;

use std::sync::Arc;

use aws_sdk_elasticache::Client;

pub use broker_testing::MemorySecrets;
pub use broker_testing::aws::{FakeRbac, meta, mocked};

use super::{ElastiCacheProvider, ElastiCacheSettings};
use broker_core::catalog::CatalogFile;
use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
use broker_core::ports::{CacheSpec, SecretStore};

pub const INSTANCE: &str = "6f1c2a9e-0b7d-4c1e-9a53-2d1f0e8b7c64";
pub const ADMIN_SECRET: &str = "secrets/instances/admin";
/// The deprovision a final snapshot is taken for (its operation id).
pub const DEPROVISION: &str = "op-deprovision-1";

/// A secret store holding an admin password under [`ADMIN_SECRET`].
pub async fn secrets_with_admin() -> Arc<MemorySecrets> {
    let secrets = Arc::new(MemorySecrets::default());
    secrets.create(ADMIN_SECRET, &generate_password(PASSWORD_LEN)).await.unwrap();
    secrets
}

pub fn settings() -> ElastiCacheSettings {
    ElastiCacheSettings {
        name_prefix: "osb".into(),
        cache_subnet_group: "osb-cache".into(),
        memcached_subnet_group: "osb-memcached".into(),
        security_group_ids: vec!["sg-0123".into()],
        subnet_ids: vec!["subnet-0a1".into(), "subnet-0b2".into()],
        kms_key_id: Some("alias/osb-cache".into()),
    }
}

/// The spec the worker builds for plan `plan` of service `service`.
pub fn spec(instance_id: &str, service: &str, plan: &str) -> CacheSpec {
    let catalog = CatalogFile::builtin();
    let service = catalog.services.iter().find(|s| s.name == service).expect("service");
    let plan =
        catalog.plans.iter().find(|p| p.service_id == service.id && p.name == plan).expect("plan").clone();
    CacheSpec {
        cache_key: instance_id.into(),
        engine: service.engine,
        engine_version: plan.default_engine_version.clone(),
        admin_secret: service.engine.speaks_redis().then(|| ADMIN_SECRET.to_string()),
        tags: vec![
            ("broker-instance-id".into(), instance_id.into()),
            ("broker-plan".into(), plan.name.clone()),
            ("organization".into(), "org-1".into()),
        ],
        log_delivery: vec![],
        spare_users: vec![],
        restore: None,
        settings: broker_core::domain::settings::of(service.engine, &plan, &serde_json::Map::new()),
        plan,
    }
}

/// A provider whose every call goes to `client`.
pub fn provider_on(client: Client, secrets: Arc<MemorySecrets>) -> ElastiCacheProvider {
    ElastiCacheProvider::new(client, secrets, settings())
}

/// Every CreateReplicationGroup request a provider sent, whole.
#[derive(Debug, Clone, Default)]
pub struct CreatedGroups(
    pub  std::sync::Arc<
        std::sync::Mutex<
            Vec<aws_sdk_elasticache::operation::create_replication_group::CreateReplicationGroupInput>,
        >,
    >,
);

impl aws_sdk_elasticache::config::Intercept for CreatedGroups {
    fn name(&self) -> &'static str {
        "CreatedGroups"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_elasticache::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_elasticache::config::ConfigBag,
    ) -> Result<(), aws_sdk_elasticache::error::BoxError> {
        use aws_sdk_elasticache::operation::create_replication_group::CreateReplicationGroupInput;
        if let Some(input) = context.input().downcast_ref::<CreateReplicationGroupInput>() {
            self.0.lock().unwrap().push(input.clone());
        }
        Ok(())
    }
}

/// moto, a provider on it whose user-group and parameter-group calls go to
/// their stand-in, and what the tests look through.
pub struct Moto {
    pub _moto: broker_testing::MotoServer,
    /// A plain client on moto.
    pub aws: Client,
    pub provider: ElastiCacheProvider,
    pub rbac: FakeRbac,
    pub created: CreatedGroups,
    /// Replication groups to report gone (moto never finishes a deletion).
    pub gone: broker_testing::aws::GoneGroups,
}

pub async fn moto() -> Moto {
    let moto = broker_testing::MotoServer::start();
    let config = crate::sdk_config_for_endpoint(&moto.endpoint).await;
    let gone: broker_testing::aws::GoneGroups = Arc::default();
    let rbac = FakeRbac::new();
    let created = CreatedGroups::default();
    let client = Client::from_conf(
        broker_testing::aws::moto_elasticache_config(
            &config,
            gone.clone(),
            &rbac,
            &broker_testing::aws::FakeAuthTokens::new(),
        )
        .interceptor(created.clone())
        .build(),
    );
    let provider = ElastiCacheProvider::new(client, secrets_with_admin().await, settings())
        .with_rbac_client(rbac.client.clone());
    Moto { _moto: moto, aws: Client::new(&config), provider, rbac, created, gone }
}

impl Moto {
    /// The replication group of `instance` as moto describes it.
    pub async fn group(&self, instance: &str) -> aws_sdk_elasticache::types::ReplicationGroup {
        let id = self.provider.cache_id(instance);
        let out = self.aws.describe_replication_groups().replication_group_id(&id).send().await.unwrap();
        out.replication_groups()[0].clone()
    }

    /// [`delete_until_done`] on this world.
    pub async fn delete_until_done(&self, instance: &str, final_snapshot: Option<&str>) -> Vec<String> {
        delete_until_done(&self.provider, &self.gone, instance, final_snapshot).await
    }
}

/// Calls `provider.delete` until it is done, telling moto's never-ending
/// deletion of the group to end (through `gone`); returns every `Working`
/// detail on the way.
pub async fn delete_until_done(
    provider: &ElastiCacheProvider,
    gone: &broker_testing::aws::GoneGroups,
    instance: &str,
    final_snapshot: Option<&str>,
) -> Vec<String> {
    use broker_core::ports::{CacheProvider, Progress};
    let mut details = Vec::new();
    for _ in 0..10 {
        match provider.delete(instance, final_snapshot).await.unwrap() {
            Progress::Done => return details,
            Progress::Working { detail } => {
                if detail.starts_with("deleting replication group") {
                    gone.lock().unwrap().insert(provider.cache_id(instance));
                }
                details.push(detail);
            }
        }
    }
    panic!("delete never finished: {details:?}");
}
