//! Binding users: an ElastiCache user per binding, in the instance's user
//! group, so each binding has its own credentials and unbind revokes them.
//! Memcached has no users; every call about one is done at once.

use aws_sdk_elasticache::types::UserGroup;
use secrecy::{ExposeSecret, SecretString};

use super::failure::classify;
use super::{Cache, ElastiCacheProvider, working};
use broker_core::domain::CacheUser;
use broker_core::domain::credentials::passwords_fit;
use broker_core::ports::{Progress, ProviderError};

impl ElastiCacheProvider {
    pub(super) async fn put_binding_user(
        &self,
        instance_id: &str,
        user: &CacheUser,
    ) -> Result<Progress, ProviderError> {
        let Some(user_group_id) = self.cache_user_group(instance_id).await? else {
            return Ok(Progress::Done);
        };
        if !passwords_fit(&user.passwords) {
            return Err(ProviderError::Permanent(format!(
                "user {} needs one or two passwords, and no empty one",
                user.username
            )));
        }
        let passwords: Vec<&SecretString> = user.passwords.iter().collect();
        let user_id = self.names.binding_user(instance_id, &user.username);
        let access = with_on(&user.access_string);
        let user_group = self.existing_user_group(&user_group_id).await?;
        let exists = self.find_user(&user_id).await?.is_some();
        if !exists {
            // The user group's engine: a Redis OSS cache moved to Valkey keeps
            // its `redis` user group, which takes only `redis` users.
            self.create_user_once(instance_id, &user_id, user, user_group.engine().unwrap_or("redis"))
                .await?;
        } else {
            // ModifyUser sets the passwords to exactly these: a rotation adds
            // the new one by passing both, and later drops the old one.
            let request =
                self.rbac.modify_user().user_id(&user_id).access_string(&access).set_passwords(Some(
                    user.passwords.iter().map(|p| p.expose_secret().to_string()).collect(),
                ));
            if let Err(e) = request.send().await {
                return Err(classify("ModifyUser", e).redacting(&passwords).into());
            }
        }
        if !lists(&user_group, &user_id) {
            if let Err(e) = self
                .rbac
                .modify_user_group()
                .user_group_id(&user_group_id)
                .user_ids_to_add(&user_id)
                .send()
                .await
            {
                return Err(classify("ModifyUserGroup", e).into());
            }
            tracing::info!(instance_id, user_id = %user_id, user_group = %user_group_id, "adding user to user group");
            return Ok(working(format!("adding user {} to user group {user_group_id}", user.username)));
        }
        Ok(working(format!("updating user {}", user.username)))
    }

    pub(super) async fn binding_user_progress(
        &self,
        instance_id: &str,
        username: &str,
    ) -> Result<Progress, ProviderError> {
        let Some(user_group_id) = self.cache_user_group(instance_id).await? else {
            return Ok(Progress::Done);
        };
        let user_id = self.names.binding_user(instance_id, username);
        let Some(user) = self.find_user(&user_id).await? else {
            return Err(ProviderError::Retryable(format!("user {username} ({user_id}) does not exist")));
        };
        let status = user.status().unwrap_or("unknown");
        if status != "active" {
            return Ok(working(format!("user {username} is {status}")));
        }
        let user_group = self.existing_user_group(&user_group_id).await?;
        let group_status = user_group.status().unwrap_or("unknown");
        if group_status != "active" || !user_group.user_ids().contains(&user_id) {
            return Ok(working(format!("user group {user_group_id} {group_status}: adding user {username}")));
        }
        Ok(Progress::Done)
    }

    pub(super) async fn delete_binding_user(
        &self,
        instance_id: &str,
        username: &str,
    ) -> Result<Progress, ProviderError> {
        let id = self.names.cache(instance_id);
        let user_id = self.names.binding_user(instance_id, username);
        let cache = match self.find(&id).await? {
            Some(Cache::Cluster(_)) => return Ok(Progress::Done),
            Some(cache) => cache,
            // The cache is gone, and with it every user its user group held;
            // a user made but never added (a crash in between) is deleted
            // here by its id.
            None => {
                return match self.remove_user(&user_id).await? {
                    true => Ok(Progress::Done),
                    false => Ok(working(format!("deleting user {username}"))),
                };
            }
        };
        if let Some(user_group_id) = cache.user_group_id()
            && let Some(user_group) = self.find_user_group(user_group_id).await?
        {
            let removing =
                user_group.pending_changes().is_some_and(|p| p.user_ids_to_remove().contains(&user_id));
            if user_group.user_ids().contains(&user_id) && !removing {
                if let Err(e) = self
                    .rbac
                    .modify_user_group()
                    .user_group_id(user_group_id)
                    .user_ids_to_remove(&user_id)
                    .send()
                    .await
                {
                    return Err(classify("ModifyUserGroup", e).into());
                }
                tracing::info!(instance_id, user_id = %user_id, user_group = %user_group_id, "removing user from user group");
                return Ok(working(format!("removing user {username} from user group {user_group_id}")));
            }
            let status = user_group.status().unwrap_or("unknown");
            if status != "active" {
                return Ok(working(format!("user group {user_group_id} {status}: removing user {username}")));
            }
        }
        match self.remove_user(&user_id).await? {
            true => Ok(Progress::Done),
            false => Ok(working(format!("deleting user {username}"))),
        }
    }

    /// The user group of an instance's cache (a replication group or a
    /// serverless cache); `None` for Memcached, which has no users.
    async fn cache_user_group(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        let id = self.names.cache(instance_id);
        let cache = match self.find(&id).await? {
            Some(Cache::Cluster(_)) => return Ok(None),
            Some(cache) => cache,
            None => return Err(ProviderError::Permanent(format!("no cache {id} exists"))),
        };
        match cache.user_group_id() {
            Some(user_group_id) => Ok(Some(user_group_id.to_string())),
            None => Err(ProviderError::Permanent(format!(
                "{} {id} has no user group: users per binding need Redis OSS 6 or later, or Valkey",
                cache.what()
            ))),
        }
    }

    async fn existing_user_group(&self, id: &str) -> Result<UserGroup, ProviderError> {
        self.find_user_group(id)
            .await?
            .ok_or_else(|| ProviderError::Permanent(format!("user group {id} does not exist")))
    }
}

/// Whether the user group holds `user_id` or is adding it.
fn lists(group: &UserGroup, user_id: &str) -> bool {
    group.user_ids().iter().any(|u| u == user_id)
        || group.pending_changes().is_some_and(|p| p.user_ids_to_add().iter().any(|u| u == user_id))
}

/// ElastiCache users, like Redis ACL users, start off unless the access
/// string turns them on; a binding's rules (from the plan) rarely say so.
pub(super) fn with_on(access: &str) -> String {
    if access.split_whitespace().any(|rule| rule == "on" || rule == "off") {
        access.to_string()
    } else {
        format!("on {access}").trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_user_is_switched_on_unless_its_rules_say_otherwise() {
        assert_eq!(with_on("~* &* +@all -@dangerous"), "on ~* &* +@all -@dangerous");
        assert_eq!(with_on("on ~* +@read"), "on ~* +@read");
        assert_eq!(with_on("off ~*"), "off ~*");
    }
}
