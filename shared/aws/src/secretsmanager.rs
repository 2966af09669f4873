//! The AWS secret store: owns the broker's passwords in Secrets Manager (one
//! secret per instance admin and per binding, with Secrets Manager's version
//! stages), and reading the broker's own basic-auth credentials.
//!
//! Records elsewhere hold only the secret's ARN. Values leave this module only
//! as [`SecretString`]s and never appear in errors, logs or `Debug` output.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;
use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;
use aws_sdk_secretsmanager::operation::describe_secret::{DescribeSecretError, DescribeSecretOutput};
use aws_sdk_secretsmanager::operation::get_secret_value::{GetSecretValueError, GetSecretValueOutput};
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;
use aws_sdk_secretsmanager::operation::rotate_secret::RotateSecretError;
use aws_sdk_secretsmanager::operation::update_secret_version_stage::UpdateSecretVersionStageError;
use aws_sdk_secretsmanager::types::{RotationRulesType, Tag};
use secrecy::{ExposeSecret, SecretString};

use super::aws_terms;
use broker_core::ports::{SecretError, SecretInfo, SecretStore, SecretVersion, Stage};

/// The recovery window `new` uses: the shortest Secrets Manager allows, so a
/// deleted password lingers as little as possible.
pub const DEFAULT_RECOVERY_WINDOW_DAYS: i64 = 7;

/// The tag whose value is the broker's name prefix, on every secret it
/// creates (the ElastiCache resources carry the same).
pub const OWNER_TAG: &str = "broker";

/// The recovery windows Secrets Manager accepts.
const RECOVERY_WINDOW_DAYS: std::ops::RangeInclusive<i64> = 7..=30;

/// The rotation intervals Secrets Manager accepts (AutomaticallyAfterDays).
pub const ROTATION_DAYS: std::ops::RangeInclusive<u32> = 1..=1000;

/// Secrets in Secrets Manager; the reference of a secret is its ARN.
#[derive(Clone)]
pub struct SecretsManagerStore {
    client: Client,
    recovery_window_days: i64,
    /// The Lambda function Secrets Manager invokes to rotate a secret.
    rotation_function: Option<String>,
    /// The broker's name prefix: secrets are created with the tag
    /// `broker` = this, and the orphan sweep lists only those.
    owner: Option<String>,
}

/// Shows how the store deletes, never what it holds.
impl std::fmt::Debug for SecretsManagerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerStore")
            .field("recovery_window_days", &self.recovery_window_days)
            .field("rotation_function", &self.rotation_function)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// What a failed call means for the caller: [`SecretError::Refused`] when
/// Secrets Manager says the request is not allowed or not valid (an IAM
/// policy or the broker must change first, so a retry until the deadline
/// would only delay the failure), else [`SecretError::Unavailable`].
fn failed<E: aws_sdk_secretsmanager::error::ProvideErrorMetadata>(err: &E, message: String) -> SecretError {
    match err.code() {
        Some("AccessDeniedException" | "ValidationException" | "InvalidParameterException") => {
            SecretError::Refused(message)
        }
        _ => SecretError::Unavailable(message),
    }
}

impl SecretsManagerStore {
    /// A store whose deletes keep the secret recoverable for
    /// [`DEFAULT_RECOVERY_WINDOW_DAYS`].
    pub fn new(client: Client) -> SecretsManagerStore {
        SecretsManagerStore {
            client,
            recovery_window_days: DEFAULT_RECOVERY_WINDOW_DAYS,
            rotation_function: None,
            owner: None,
        }
    }

    /// Tags the secrets it creates `broker` = `prefix` (the broker's name
    /// prefix, which starts their names too), so the orphan sweep can tell
    /// them from anyone else's.
    pub fn with_owner(mut self, prefix: &str) -> SecretsManagerStore {
        self.owner = Some(prefix.to_string());
        self
    }

    /// The ARN of the Lambda function Secrets Manager invokes to rotate the
    /// secrets (ROTATION_FUNCTION_ARN: the provisioner). Without one,
    /// [`SecretStore::schedule_rotation`] refuses and [`Self::rotate_now`]
    /// relies on the function the secret already names.
    pub fn with_rotation_function(mut self, arn: Option<String>) -> SecretsManagerStore {
        self.rotation_function = arn.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        self
    }

    pub fn rotation_function(&self) -> Option<&str> {
        self.rotation_function.as_deref()
    }

    /// Rotates the secret now, on an operator's demand: RotateSecret with
    /// RotateImmediately, after which Secrets Manager invokes the rotation
    /// function for each step (createSecret ... finishSecret) under a new
    /// token. The schedule stays as it is. Names the configured rotation
    /// function when there is one; otherwise the secret must name one
    /// already. Secrets Manager refuses while an earlier rotation is
    /// unfinished (an AWSPENDING version that is not AWSCURRENT).
    pub async fn rotate_now(&self, reference: &str) -> Result<(), SecretError> {
        let rotated = self
            .client
            .rotate_secret()
            .secret_id(reference)
            .set_rotation_lambda_arn(self.rotation_function.clone())
            .rotate_immediately(true)
            .send()
            .await;
        match rotated {
            Ok(_) => {
                tracing::info!(secret = %reference, "asked Secrets Manager to rotate the secret now");
                Ok(())
            }
            Err(err) => Err(self.rotate_failed(reference, "now", err).await),
        }
    }

    /// What a failed RotateSecret means: `NotFound` for a missing or deleted
    /// secret, else `Unavailable` with Secrets Manager's reason (a rotation
    /// still in progress, a function it cannot invoke ...).
    async fn rotate_failed(
        &self,
        reference: &str,
        what: &str,
        err: aws_sdk_secretsmanager::error::SdkError<
            RotateSecretError,
            aws_sdk_secretsmanager::config::http::HttpResponse,
        >,
    ) -> SecretError {
        let why = aws_terms(&err);
        match err.into_service_error() {
            RotateSecretError::ResourceNotFoundException(_) => SecretError::NotFound(reference.to_string()),
            RotateSecretError::InvalidRequestException(_)
                if self.is_scheduled_for_deletion(reference).await.unwrap_or(false) =>
            {
                SecretError::NotFound(reference.to_string())
            }
            other => failed(&other, format!("RotateSecret {reference} ({what}) failed: {why}")),
        }
    }

    /// How many days a deleted secret stays recoverable, kept within the 7 to
    /// 30 Secrets Manager accepts.
    pub fn with_recovery_window_days(mut self, days: i64) -> SecretsManagerStore {
        self.recovery_window_days = days.clamp(*RECOVERY_WINDOW_DAYS.start(), *RECOVERY_WINDOW_DAYS.end());
        self
    }

    pub fn recovery_window_days(&self) -> i64 {
        self.recovery_window_days
    }

    /// DescribeSecret; `None` when there is no such secret.
    async fn lookup(&self, id: &str) -> Result<Option<DescribeSecretOutput>, SecretError> {
        match self.client.describe_secret().secret_id(id).send().await {
            Ok(out) => Ok(Some(out)),
            Err(err) => {
                let why = aws_terms(&err);
                match err.into_service_error() {
                    DescribeSecretError::ResourceNotFoundException(_) => Ok(None),
                    other => Err(failed(&other, format!("DescribeSecret {id} failed: {why}"))),
                }
            }
        }
    }

    /// Whether `id` names a secret waiting out its recovery window: Secrets
    /// Manager answers InvalidRequestException for most calls on one, and so
    /// does it for many other mistakes; only DescribeSecret tells them apart.
    async fn is_scheduled_for_deletion(&self, id: &str) -> Result<bool, SecretError> {
        Ok(self.lookup(id).await?.is_some_and(|d| d.deleted_date.is_some()))
    }

    /// The ARN of the existing secret `name`, after CreateSecret found it
    /// there. One scheduled for deletion (an instance or binding id used
    /// again after its deprovision or unbind) is restored and given `value`:
    /// its old password belonged to the deleted cache user.
    /// `why` is CreateSecret's answer, for when no secret is there after all.
    async fn adopt(&self, name: &str, value: &SecretString, why: &str) -> Result<String, SecretError> {
        let existing = self.lookup(name).await?.ok_or_else(|| {
            SecretError::Unavailable(format!(
                "CreateSecret {name} failed ({why}) and DescribeSecret finds no such secret"
            ))
        })?;
        let arn = existing
            .arn
            .ok_or_else(|| SecretError::Unavailable(format!("DescribeSecret {name} returned no ARN")))?;
        if existing.deleted_date.is_none() {
            return Ok(arn);
        }
        self.client
            .restore_secret()
            .secret_id(&arn)
            .send()
            .await
            .map_err(|err| failed(&err, format!("RestoreSecret {arn} failed: {}", aws_terms(&err))))?;
        self.client
            .put_secret_value()
            .secret_id(&arn)
            .secret_string(value.expose_secret())
            .send()
            .await
            .map_err(|err| failed(&err, format!("PutSecretValue {arn} failed: {}", aws_terms(&err))))?;
        tracing::info!(secret = %arn, "restored a secret scheduled for deletion and gave it a new value");
        Ok(arn)
    }

    /// The string a GetSecretValue of `reference` (`which`: "at AWSCURRENT",
    /// "version …") returned; `None` when the secret, or that stage or
    /// version of it, does not exist or the secret is scheduled for deletion.
    async fn value_of(
        &self,
        got: Result<
            GetSecretValueOutput,
            SdkError<GetSecretValueError, aws_sdk_secretsmanager::config::http::HttpResponse>,
        >,
        reference: &str,
        which: &str,
    ) -> Result<Option<SecretString>, SecretError> {
        let err = match got {
            Ok(out) => {
                return match out.secret_string {
                    Some(value) => Ok(Some(SecretString::from(value))),
                    None => Err(SecretError::Unavailable(format!(
                        "secret {reference} holds binary data {which}, not a string"
                    ))),
                };
            }
            Err(err) => err,
        };
        let why = aws_terms(&err);
        match err.into_service_error() {
            // Both a missing secret and a stage or version it does not have.
            GetSecretValueError::ResourceNotFoundException(_) => Ok(None),
            GetSecretValueError::InvalidRequestException(_)
                if self.is_scheduled_for_deletion(reference).await? =>
            {
                Ok(None)
            }
            other => Err(failed(&other, format!("GetSecretValue {reference} {which} failed: {why}"))),
        }
    }

    /// UpdateSecretVersionStage: moves `stage` to version `to` (if given)
    /// from version `from` (if given).
    async fn move_stage(
        &self,
        reference: &str,
        stage: Stage,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        let moved = self
            .client
            .update_secret_version_stage()
            .secret_id(reference)
            .version_stage(stage.label())
            .set_move_to_version_id(to.map(str::to_string))
            .set_remove_from_version_id(from.map(str::to_string))
            .send()
            .await;
        let Err(err) = moved else {
            return Ok(());
        };
        let why = aws_terms(&err);
        match err.into_service_error() {
            UpdateSecretVersionStageError::ResourceNotFoundException(_) => {
                Err(SecretError::NotFound(reference.to_string()))
            }
            other => Err(failed(
                &other,
                format!(
                    "UpdateSecretVersionStage {reference} {} (to {}, from {}) failed: {why}",
                    stage.label(),
                    to.unwrap_or("none"),
                    from.unwrap_or("none")
                ),
            )),
        }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn create(&self, name: &str, value: &SecretString) -> Result<String, SecretError> {
        let tags =
            self.owner.as_ref().map(|prefix| vec![Tag::builder().key(OWNER_TAG).value(prefix).build()]);
        let created = self
            .client
            .create_secret()
            .name(name)
            .secret_string(value.expose_secret())
            .set_tags(tags)
            .send()
            .await;
        let err = match created {
            Ok(out) => {
                return out
                    .arn
                    .ok_or_else(|| SecretError::Unavailable(format!("CreateSecret {name} returned no ARN")));
            }
            Err(err) => err,
        };
        let why = aws_terms(&err);
        match err.into_service_error() {
            // InvalidRequestException is what a name scheduled for deletion
            // gets; `adopt` looks before deciding, and leaves a live secret
            // (and so the first password of a retried step) alone.
            CreateSecretError::ResourceExistsException(_) | CreateSecretError::InvalidRequestException(_) => {
                self.adopt(name, value, &why).await
            }
            other => Err(failed(&other, format!("CreateSecret {name} failed: {why}"))),
        }
    }

    async fn read(&self, reference: &str, stage: Stage) -> Result<Option<SecretString>, SecretError> {
        // The stage is always named: moto's default-stage read is stale after
        // a stage move, and naming it costs nothing on AWS.
        let label = stage.label();
        let got = self.client.get_secret_value().secret_id(reference).version_stage(label).send().await;
        self.value_of(got, reference, &format!("at {label}")).await
    }

    async fn delete(&self, reference: &str) -> Result<(), SecretError> {
        let deleted = self
            .client
            .delete_secret()
            .secret_id(reference)
            .recovery_window_in_days(self.recovery_window_days)
            .send()
            .await;
        let Err(err) = deleted else {
            return Ok(());
        };
        let why = aws_terms(&err);
        match err.into_service_error() {
            DeleteSecretError::ResourceNotFoundException(_) => Ok(()),
            // A retried deprovision deletes again what it already scheduled.
            DeleteSecretError::InvalidRequestException(_)
                if self.is_scheduled_for_deletion(reference).await? =>
            {
                Ok(())
            }
            other => Err(failed(&other, format!("DeleteSecret {reference} failed: {why}"))),
        }
    }

    async fn put_pending(
        &self,
        reference: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<(), SecretError> {
        // A retried step finds its version and keeps it. Secrets Manager
        // would refuse a second value under the same token anyway
        // (ResourceExistsException, below); not every implementation of its
        // API does (moto replaces the value), and the first value must win.
        if self.read_version(reference, version_id).await?.is_some() {
            return Ok(());
        }
        let put = self
            .client
            .put_secret_value()
            .secret_id(reference)
            .client_request_token(version_id)
            .secret_string(value.expose_secret())
            .version_stages(Stage::Pending.label())
            .send()
            .await;
        let Err(err) = put else {
            return Ok(());
        };
        let why = aws_terms(&err);
        match err.into_service_error() {
            // The token names a version that exists already (a retried step
            // with another value): the first value stays, as the port says.
            PutSecretValueError::ResourceExistsException(_) => Ok(()),
            PutSecretValueError::ResourceNotFoundException(_) => {
                Err(SecretError::NotFound(reference.to_string()))
            }
            other => Err(failed(
                &other,
                format!(
                    "PutSecretValue {reference} version {version_id} at {} failed: {why}",
                    Stage::Pending.label()
                ),
            )),
        }
    }

    async fn promote(&self, reference: &str, version_id: &str) -> Result<(), SecretError> {
        let described =
            self.lookup(reference).await?.ok_or_else(|| SecretError::NotFound(reference.to_string()))?;
        let versions = described.version_ids_to_stages.unwrap_or_default();
        let Some(target_stages) = versions.get(version_id) else {
            return Err(SecretError::NotFound(format!("{reference} version {version_id}")));
        };
        let current = versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == Stage::Current.label()))
            .map(|(id, _)| id.as_str());
        if current != Some(version_id) {
            // Secrets Manager labels the version that loses AWSCURRENT
            // AWSPREVIOUS itself.
            self.move_stage(reference, Stage::Current, Some(version_id), current).await?;
        }
        if target_stages.iter().any(|s| s == Stage::Pending.label()) {
            self.move_stage(reference, Stage::Pending, None, Some(version_id)).await?;
        }
        Ok(())
    }

    async fn describe(&self, reference: &str) -> Result<SecretInfo, SecretError> {
        let described = self
            .lookup(reference)
            .await?
            .filter(|d| d.deleted_date.is_none())
            .ok_or_else(|| SecretError::NotFound(reference.to_string()))?;
        let mut versions: Vec<SecretVersion> = described
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .map(|(id, labels)| SecretVersion {
                id,
                stages: labels.iter().filter_map(|l| stage(l)).collect(),
            })
            .collect();
        // The current version first, then pending, previous, and versions
        // without a stage; the map Secrets Manager returns has no order.
        versions.sort_by_key(|v| (v.stages.iter().map(|s| rank(*s)).min().unwrap_or(3), v.id.clone()));
        let rotation_days = match (described.rotation_enabled, &described.rotation_rules) {
            (Some(true), Some(rules)) => rules.automatically_after_days.and_then(|d| u32::try_from(d).ok()),
            _ => None,
        };
        Ok(SecretInfo {
            name: described.name.unwrap_or_else(|| reference.to_string()),
            versions,
            rotation_days,
        })
    }

    async fn read_version(
        &self,
        reference: &str,
        version_id: &str,
    ) -> Result<Option<SecretString>, SecretError> {
        let got = self.client.get_secret_value().secret_id(reference).version_id(version_id).send().await;
        self.value_of(got, reference, &format!("version {version_id}")).await
    }

    async fn schedule_rotation(&self, reference: &str, days: u32) -> Result<(), SecretError> {
        let Some(function) = self.rotation_function.as_deref() else {
            return Err(SecretError::Unavailable(format!(
                "cannot schedule the rotation of secret {reference}: ROTATION_FUNCTION_ARN is not set"
            )));
        };
        if !ROTATION_DAYS.contains(&days) {
            return Err(SecretError::Unavailable(format!(
                "cannot rotate secret {reference} every {days} days: Secrets Manager takes {} to {}",
                ROTATION_DAYS.start(),
                ROTATION_DAYS.end()
            )));
        }
        let described = self
            .lookup(reference)
            .await?
            .filter(|d| d.deleted_date.is_none())
            .ok_or_else(|| SecretError::NotFound(reference.to_string()))?;
        let scheduled = described.rotation_enabled == Some(true)
            && described.rotation_lambda_arn.as_deref() == Some(function)
            && described.rotation_rules.as_ref().and_then(|r| r.automatically_after_days)
                == Some(i64::from(days));
        if scheduled {
            return Ok(());
        }
        // Without RotateImmediately Secrets Manager rotates first after
        // `days`; it does invoke the function's testSecret step at once.
        let rotated = self
            .client
            .rotate_secret()
            .secret_id(reference)
            .rotation_lambda_arn(function)
            .rotation_rules(RotationRulesType::builder().automatically_after_days(i64::from(days)).build())
            .rotate_immediately(false)
            .send()
            .await;
        match rotated {
            Ok(_) => {
                tracing::info!(secret = %reference, days, "scheduled the rotation of the secret");
                Ok(())
            }
            Err(err) => Err(self.rotate_failed(reference, &format!("every {days} days"), err).await),
        }
    }
}

/// The stage a Secrets Manager label names; `None` for labels of others.
fn stage(label: &str) -> Option<Stage> {
    [Stage::Current, Stage::Pending, Stage::Previous].into_iter().find(|s| s.label() == label)
}

/// The order versions are listed in.
fn rank(stage: Stage) -> u8 {
    match stage {
        Stage::Current => 0,
        Stage::Pending => 1,
        Stage::Previous => 2,
    }
}

/// The broker's own credentials as the secret holds them. No `Debug`: the
/// username would be printed.
#[derive(serde::Deserialize)]
struct BrokerCredentials {
    username: Option<String>,
    password: Option<SecretString>,
}

/// Reads the broker's basic-auth credentials from the JSON secret `arn`
/// (`{"username": ..., "password": ...}`) at AWSCURRENT. Errors name the ARN
/// and what is wrong with it, never a value.
pub async fn read_broker_credentials(
    client: &Client,
    arn: &str,
) -> Result<(String, SecretString), SecretError> {
    let label = Stage::Current.label();
    let out = match client.get_secret_value().secret_id(arn).version_stage(label).send().await {
        Ok(out) => out,
        Err(err) => {
            let why = aws_terms(&err);
            return Err(match err.into_service_error() {
                GetSecretValueError::ResourceNotFoundException(_) => SecretError::NotFound(arn.to_string()),
                other => failed(&other, format!("GetSecretValue {arn} at {label} failed: {why}")),
            });
        }
    };
    let raw = SecretString::from(out.secret_string.ok_or_else(|| {
        SecretError::Unavailable(format!("secret {arn} holds binary data, not JSON broker credentials"))
    })?);
    // serde's message may quote the input, so it is not passed on.
    let parsed: BrokerCredentials = serde_json::from_str(raw.expose_secret()).map_err(|_| {
        SecretError::Unavailable(format!(
            "secret {arn} is not a JSON object {{\"username\": string, \"password\": string}}"
        ))
    })?;
    let missing = |key: &str| SecretError::NotFound(format!("{arn} key \"{key}\" (absent or empty)"));
    let username = parsed.username.filter(|u| !u.is_empty()).ok_or_else(|| missing("username"))?;
    let password =
        parsed.password.filter(|p| !p.expose_secret().is_empty()).ok_or_else(|| missing("password"))?;
    Ok((username, password))
}

mod inventory;

#[cfg(test)]
mod tests;
