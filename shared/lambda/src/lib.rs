//! AWS mode: the same broker and worker over DynamoDB, SQS, ElastiCache and
//! Secrets Manager. Built once per cold start from [`AwsSettings`] (read from
//! the environment) and one SDK configuration; the Lambda entry points lend
//! the parts to lambda_http and lambda_runtime.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;

use broker_aws::cloudwatch::CloudWatchAlarms;
use broker_aws::config::AwsSettings;
use broker_aws::dynamodb::DynamoStore;
use broker_aws::elasticache::{ElastiCacheProvider, ElastiCacheSettings, LogSettings};
use broker_aws::secretsmanager::{SecretsManagerStore, read_broker_credentials};
use broker_aws::sqs::SqsQueue;
use broker_core::broker::Broker;
use broker_core::catalog::CatalogFile;
use broker_core::domain::RotationPolicy;
use broker_core::ports::{CatalogStore, Metrics, SecretError, StoreError};
use broker_core::reconcile::Reconciler;
use broker_core::rotation::{RotationError, Rotator, Target};
use broker_core::services::{Adapters, ServiceSettings, Services};
use broker_core::worker::Worker;
use broker_http::{AppState, BasicAuth, router};

/// Why AWS mode cannot start or a command cannot run; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum AwsModeError {
    /// A setting is wrong: the message names the variable and what it takes.
    #[error("{0}")]
    Setting(String),
    #[error("BROKER_CREDENTIALS_SECRET_ARN: the broker's own credentials cannot be read")]
    BrokerCredentials(#[source] SecretError),
    #[error("the secret of the credential to rotate")]
    Secret(#[from] SecretError),
    #[error("the credential to rotate")]
    Rotation(#[from] RotationError),
    #[error("the DynamoDB table")]
    Store(#[from] StoreError),
}

/// The AWS adapters and the broker and worker over them.
pub struct AwsParts {
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub secrets: Arc<SecretsManagerStore>,
    pub provider: Arc<ElastiCacheProvider>,
    pub broker: Arc<Broker>,
    pub worker: Arc<Worker>,
    /// The rotation function of the broker's secrets.
    pub rotator: Arc<Rotator>,
    /// The schedule's pass over what was left (`{"Reconcile": {}}`).
    pub reconciler: Arc<Reconciler>,
    /// Embedded Metric Format lines on standard output, for the API and
    /// the worker alike.
    pub metrics: Arc<dyn Metrics>,
    /// The caches' CloudWatch alarms, for the worker and fetch-instance.
    pub alarms: Arc<CloudWatchAlarms>,
    adapters: Adapters,
    secrets_client: aws_sdk_secretsmanager::Client,
}

/// Clients that replace the ones built from the SDK configuration; tests use
/// them to stand in for what moto lacks. Production passes the default (none).
#[derive(Default)]
pub struct ClientOverrides {
    /// The ElastiCache client for every call but the user-group ones.
    pub elasticache: Option<aws_sdk_elasticache::Client>,
    /// The ElastiCache client for the user-group calls and ModifyUser.
    pub elasticache_rbac: Option<aws_sdk_elasticache::Client>,
    /// The Secrets Manager client (a test's, with its interceptors).
    pub secretsmanager: Option<aws_sdk_secretsmanager::Client>,
    /// The CloudWatch client of the caches' alarms (moto speaks an older
    /// CloudWatch protocol than the SDK's: tests give a stand-in).
    pub cloudwatch: Option<aws_sdk_cloudwatch::Client>,
}

impl AwsParts {
    /// Builds every client and adapter; makes no AWS call.
    pub fn new(settings: &AwsSettings, sdk: &SdkConfig, overrides: ClientOverrides) -> AwsParts {
        let store =
            Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), settings.table_name.clone()));
        let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), settings.queue_url.clone()));
        let secrets_client =
            overrides.secretsmanager.unwrap_or_else(|| aws_sdk_secretsmanager::Client::new(sdk));
        let secrets = Arc::new(
            SecretsManagerStore::new(secrets_client.clone())
                .with_owner(&settings.name_prefix)
                .with_recovery_window_days(settings.secret_recovery_window_days)
                .with_rotation_function(settings.rotation_function_arn.clone()),
        );
        let elasticache = overrides.elasticache.unwrap_or_else(|| aws_sdk_elasticache::Client::new(sdk));
        let mut provider =
            ElastiCacheProvider::new(elasticache, secrets.clone(), ElastiCacheSettings::from(settings));
        if let Some(client) = overrides.elasticache_rbac {
            provider = provider.with_rbac_client(client);
        }
        provider = provider.with_logs(LogSettings {
            client: aws_sdk_cloudwatchlogs::Client::new(sdk),
            retention_days: i32::try_from(settings.cache_log_retention_days).unwrap_or(30),
        });
        let provider = Arc::new(provider);
        let metrics: Arc<dyn Metrics> = Arc::new(broker_aws::emf::EmfMetrics::stdout(&settings.name_prefix));
        let cloudwatch = overrides.cloudwatch.unwrap_or_else(|| aws_sdk_cloudwatch::Client::new(sdk));
        let alarms = Arc::new(CloudWatchAlarms::new(
            cloudwatch,
            &settings.name_prefix,
            settings.alarm_actions.clone(),
        ));
        let parts = Adapters {
            store: store.clone(),
            queue: queue.clone(),
            provider: provider.clone(),
            secrets: secrets.clone(),
            inventories: vec![provider.clone(), secrets.clone(), alarms.clone()],
            metrics: metrics.clone(),
            alarms: alarms.clone(),
            cache_metrics: alarms.clone(),
        };
        let adapters = parts.clone();
        let Services { broker, worker, rotator, reconciler } =
            Services::new(&adapters, &service_settings(settings));
        AwsParts {
            store,
            queue,
            secrets,
            provider,
            broker,
            worker,
            rotator,
            reconciler,
            metrics,
            alarms,
            adapters: parts,
            secrets_client,
        }
    }

    /// The adapters the services are built on, for a test that builds a
    /// worker of its own over some of them.
    pub fn adapters(&self) -> Adapters {
        self.adapters.clone()
    }

    /// The API Router, with the broker's own credentials read from the secret
    /// named by `BROKER_CREDENTIALS_SECRET_ARN` (never from a plain variable).
    pub async fn router(&self, settings: &AwsSettings) -> Result<axum::Router, AwsModeError> {
        let (username, password) =
            read_broker_credentials(&self.secrets_client, &settings.credentials_secret_arn)
                .await
                .map_err(AwsModeError::BrokerCredentials)?;
        let auth = BasicAuth { username, password };
        Ok(router(AppState {
            broker: self.broker.clone(),
            auth: Arc::new(auth),
            metrics: self.metrics.clone(),
        }))
    }

    /// `broker-api rotate`: asks Secrets Manager to rotate `target`'s
    /// secret now (it invokes the provisioner's rotation steps), naming it
    /// by the ARN its record holds; returns that ARN.
    pub async fn rotate_now(&self, target: &Target) -> Result<String, AwsModeError> {
        let secret = self.rotator.secret_reference(target).await?;
        self.secrets.rotate_now(&secret).await?;
        Ok(secret)
    }

    /// Seeds the table with the catalog's services and plans that are not
    /// there yet (idempotent: entries already present are left alone).
    pub async fn seed_catalog(&self, catalog: &CatalogFile) -> Result<usize, AwsModeError> {
        Ok(self.store.seed(&catalog.services, &catalog.plans).await?)
    }
}

/// The rotation policy the settings give. Scheduled rotation needs the
/// rotation function's ARN: without one, secrets get no schedule (and
/// bindings no expiry), though on-demand rotation still works.
/// What the broker, the worker and the rotation function of AWS mode run
/// with.
pub fn service_settings(settings: &AwsSettings) -> ServiceSettings {
    ServiceSettings {
        secret_prefix: settings.name_prefix.clone(),
        rotation: rotation_policy(settings),
        poll_delay_secs: settings.poll_delay_secs,
        max_retry_delay_secs: 900,
        // Longer than the longest back-off (900 s) plus a poll, so a job
        // merely waiting is never taken for a lost one.
        stall_secs: 900 + i64::from(settings.poll_delay_secs) + 60,
        catalog_ttl: Duration::from_secs(settings.catalog_cache_secs),
        test_wait: Duration::from_secs(60),
        test_poll: Duration::from_secs(5),
        orphan_grace_secs: settings.orphan_grace_secs,
        sweep_every_secs: settings.sweep_every_secs,
    }
}

pub fn rotation_policy(settings: &AwsSettings) -> RotationPolicy {
    let days = match (&settings.rotation_function_arn, settings.rotation_days) {
        (Some(_), days) => days,
        (None, 0) => 0,
        (None, days) => {
            tracing::warn!(
                rotation_days = days,
                "ROTATION_FUNCTION_ARN is not set: secrets get no rotation schedule (rotate on demand with broker-api rotate)"
            );
            0
        }
    };
    RotationPolicy { days, grace_secs: settings.rotation_grace_secs }
}

/// Reads the settings and the SDK configuration of the Lambda environment.
pub async fn from_env() -> Result<(AwsSettings, SdkConfig), AwsModeError> {
    let settings = AwsSettings::from_env().map_err(AwsModeError::Setting)?;
    Ok((settings, load_sdk().await))
}

/// The SDK configuration every client is built from, with [`sdk_timeouts`].
pub async fn load_sdk() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(sdk_timeouts()).load().await
}

/// The limits of every AWS call: 3 s to connect, 10 s for one attempt, 20 s
/// for the call with its retries. Without them a call that hangs holds the
/// function until Lambda's own timeout, and the provisioner's deadline
/// margin (`invocation::DEADLINE_MARGIN`, 30 s) assumes a job's calls end.
pub fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(20))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client AwsParts builds takes the SDK configuration's timeouts.
    #[tokio::test]
    async fn every_aws_call_is_bounded_in_time() {
        let sdk = load_sdk().await;
        let timeouts = sdk.timeout_config().expect("a timeout configuration");
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(20)));
        assert!(timeouts.operation_timeout().unwrap() < broker_core::invocation::DEADLINE_MARGIN);
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        assert_eq!(
            client.config().timeout_config().and_then(|t| t.operation_timeout()),
            timeouts.operation_timeout()
        );
    }
}
