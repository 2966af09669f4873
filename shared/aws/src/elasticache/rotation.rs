//! `set_passwords` and `passwords_progress`: the cache side of a credential
//! rotation. With RBAC users (Redis OSS 6 and later, Valkey) the admin or a
//! binding's user gets exactly the passwords given through ModifyUser; a
//! replication group without users (Redis OSS before 6) has its AUTH token
//! rotated (`ROTATE`: old and new accepted) or set (`SET`: only the new one).
//!
//! The passwords go only into request builders; errors are redacted.

use aws_sdk_elasticache::types::{AuthTokenUpdateStrategyType, ReplicationGroup};
use secrecy::{ExposeSecret, SecretString};

use super::failure::{Kind, classify};
use super::{Cache, ElastiCacheProvider, working};
use broker_core::domain::credentials::{ADMIN_USER, passwords_fit};
use broker_core::ports::{Principal, Progress, ProviderError};

/// How an instance's cache authenticates.
enum Auth {
    /// RBAC: the principal is this ElastiCache user; the user group is
    /// the replication group's.
    User { user_id: String, user_group_id: String },
    /// The AUTH token of a replication group without users.
    Token(Box<ReplicationGroup>),
}

impl ElastiCacheProvider {
    pub(super) async fn set_principal_passwords(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        check(principal, passwords)?;
        let redact: Vec<&SecretString> = passwords.iter().collect();
        let values = || passwords.iter().map(|p| p.expose_secret().to_string()).collect::<Vec<_>>();
        match self.auth_of(instance_id, principal).await? {
            Auth::User { user_id, .. } => {
                // Only the passwords: the access string stays as it is.
                let request = self.rbac.modify_user().user_id(&user_id).set_passwords(Some(values()));
                if let Err(e) = request.send().await {
                    let failure = classify("ModifyUser", e).redacting(&redact);
                    if failure.is(Kind::NotFound) {
                        return Err(ProviderError::Permanent(format!(
                            "user {user_id} of {} does not exist: {}",
                            principal.describe(),
                            failure.description
                        )));
                    }
                    return Err(failure.into());
                }
                tracing::info!(instance_id, user_id = %user_id, passwords = passwords.len(), "setting the passwords of a user");
                Ok(working(format!(
                    "setting {} of {} ({user_id})",
                    count(passwords.len()),
                    principal.describe()
                )))
            }
            Auth::Token(group) => {
                let id = group.replication_group_id().unwrap_or_default().to_string();
                let status = group.status().unwrap_or("unknown");
                if status != "available" {
                    return Err(ProviderError::Retryable(format!(
                        "replication group {id} is {status}; its AUTH token can change once it is available"
                    )));
                }
                // ROTATE keeps the old token working beside the new one; SET
                // (allowed only after a ROTATE) leaves only the new one.
                let (strategy, what) = if passwords.len() == 2 {
                    (AuthTokenUpdateStrategyType::Rotate, "rotating (old and new accepted)")
                } else {
                    (AuthTokenUpdateStrategyType::Set, "setting (only the new one accepted)")
                };
                let request = self
                    .client
                    .modify_replication_group()
                    .replication_group_id(&id)
                    .auth_token(passwords[0].expose_secret())
                    .auth_token_update_strategy(strategy.clone())
                    .apply_immediately(true);
                if let Err(e) = request.send().await {
                    return Err(classify("ModifyReplicationGroup", e).redacting(&redact).into());
                }
                tracing::info!(instance_id, replication_group = %id, strategy = %strategy.as_str(), "changing the AUTH token");
                Ok(working(format!("{what} the AUTH token of replication group {id}")))
            }
        }
    }

    pub(super) async fn principal_passwords_progress(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        check(principal, passwords)?;
        match self.auth_of(instance_id, principal).await? {
            Auth::User { user_id, user_group_id } => {
                let who = match principal {
                    Principal::Admin => format!("admin user {ADMIN_USER}"),
                    Principal::User(name) => format!("user {name}"),
                };
                let Some(user) = self.find_user(&user_id).await? else {
                    return Err(ProviderError::Permanent(format!(
                        "{who} ({user_id}) of instance {instance_id} does not exist"
                    )));
                };
                let status = user.status().unwrap_or("unknown");
                if status != "active" {
                    return Ok(working(format!("{who} is {status}")));
                }
                // Not every answer says how many passwords a user has.
                let held = user.authentication().and_then(|a| a.password_count());
                if let Some(held) = held
                    && usize::try_from(held).ok() != Some(passwords.len())
                {
                    return Ok(working(format!(
                        "{who} holds {}, {} expected",
                        count(usize::try_from(held).unwrap_or(0)),
                        passwords.len()
                    )));
                }
                if let Principal::User(_) = principal {
                    let user_group = self.find_user_group(&user_group_id).await?.ok_or_else(|| {
                        ProviderError::Permanent(format!("user group {user_group_id} does not exist"))
                    })?;
                    let group_status = user_group.status().unwrap_or("unknown");
                    if group_status != "active" {
                        return Ok(working(format!("user group {user_group_id} of {who} is {group_status}")));
                    }
                }
                Ok(Progress::Done)
            }
            Auth::Token(group) => {
                let id = group.replication_group_id().unwrap_or_default();
                let status = group.status().unwrap_or("unknown");
                let changing = group.pending_modified_values().and_then(|p| p.auth_token_status());
                if let Some(change) = changing {
                    return Ok(working(format!(
                        "replication group {id} is {status}: AUTH token {}",
                        change.as_str().to_ascii_lowercase()
                    )));
                }
                if status != "available" {
                    return Ok(working(format!("replication group {id} is {status}")));
                }
                if group.auth_token_enabled() != Some(true) {
                    return Ok(working(format!("replication group {id} has no AUTH token enabled yet")));
                }
                Ok(Progress::Done)
            }
        }
    }

    /// How `principal` authenticates to the cache of `instance_id`; a
    /// permanent error when it has no password at all (Memcached, no cache,
    /// a binding user on a cache without users).
    async fn auth_of(&self, instance_id: &str, principal: &Principal) -> Result<Auth, ProviderError> {
        let id = self.names.cache(instance_id);
        let group = match self.find(&id).await? {
            Some(Cache::Group(group)) => group,
            // RBAC is a serverless cache's only access control.
            Some(cache @ Cache::Serverless(_)) => {
                let user_group_id = cache.user_group_id().unwrap_or(&id).to_string();
                let user_id = match principal {
                    Principal::Admin => self.names.admin_user(instance_id),
                    Principal::User(name) => self.names.binding_user(instance_id, name),
                };
                return Ok(Auth::User { user_id, user_group_id });
            }
            Some(Cache::Cluster(_)) => {
                return Err(ProviderError::Permanent(format!(
                    "cache cluster {id} runs Memcached, which has no passwords: {} cannot change",
                    principal.describe()
                )));
            }
            None => {
                return Err(ProviderError::Permanent(format!(
                    "no replication group {id} (nor cache cluster) exists"
                )));
            }
        };
        match (group.user_group_ids().first(), principal) {
            (Some(user_group_id), Principal::Admin) => Ok(Auth::User {
                user_id: self.names.admin_user(instance_id),
                user_group_id: user_group_id.clone(),
            }),
            (Some(user_group_id), Principal::User(name)) => Ok(Auth::User {
                user_id: self.names.binding_user(instance_id, name),
                user_group_id: user_group_id.clone(),
            }),
            (None, Principal::Admin) => Ok(Auth::Token(group)),
            (None, Principal::User(name)) => Err(ProviderError::Permanent(format!(
                "replication group {id} has no users (Redis OSS before 6 has only an AUTH token): cache user {name} has no password to change"
            ))),
        }
    }
}

/// One or two passwords, none empty, as the port demands.
fn check(principal: &Principal, passwords: &[SecretString]) -> Result<(), ProviderError> {
    if !passwords_fit(passwords) {
        return Err(ProviderError::Permanent(format!(
            "{} needs one or two passwords, and no empty one (got {})",
            principal.describe(),
            passwords.len()
        )));
    }
    Ok(())
}

fn count(n: usize) -> String {
    if n == 1 { "1 password".to_string() } else { format!("{n} passwords") }
}
