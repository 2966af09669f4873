//! An instance's own cache parameter group, for the settings ElastiCache
//! keeps only in parameter groups: today `maxmemory-policy` (ElastiCache
//! disables CONFIG SET, and no default group can be changed).
//!
//! A cache whose instance never chose an eviction policy uses its family's
//! default group, as before. One that did gets `{cache id}-{family}` (the
//! family with `.` as `-`: `redis7`, `redis6-x`, `valkey8`), made from the
//! family's defaults, with `cluster-enabled yes` set before first use for a
//! cluster-mode cache (a cluster-mode group needs it, and it cannot change
//! once a cache uses the group), then the policy; ElastiCache applies a
//! `maxmemory-policy` change at once, without a reboot. An engine upgrade
//! to another family makes that family's group the same way. Every group
//! of the cache is deleted once the cache is gone.
//!
//! These calls go through the provider's second client with the user-group
//! calls: moto lacks them too, and its stand-in answers them in tests.

use aws_sdk_elasticache::types::ParameterNameValue;

use super::failure::{Kind, classify};
use super::versions::parameter_group_family;
use super::{ElastiCacheProvider, tag};
use broker_core::ports::{CacheSpec, ProviderError};

impl ElastiCacheProvider {
    /// The name of the cache's own parameter group for `spec`'s engine
    /// version, when the instance chose an eviction policy.
    pub(super) fn own_parameter_group(&self, spec: &CacheSpec) -> Option<String> {
        spec.settings.maxmemory_policy.as_ref()?;
        let family = parameter_group_family(spec.engine, &spec.engine_version)?;
        Some(format!("{}-{}", self.names.cache(&spec.cache_key), family.replace('.', "-")))
    }

    /// Makes the cache's own parameter group for `spec` (when it has one)
    /// and sets its policy; returns its name. Repeating it changes nothing.
    pub(super) async fn ensure_parameter_group(
        &self,
        spec: &CacheSpec,
    ) -> Result<Option<String>, ProviderError> {
        let (Some(name), Some(policy)) = (self.own_parameter_group(spec), &spec.settings.maxmemory_policy)
        else {
            return Ok(None);
        };
        let family = parameter_group_family(spec.engine, &spec.engine_version).unwrap_or_default();
        let made = self
            .rbac
            .create_cache_parameter_group()
            .cache_parameter_group_name(&name)
            .cache_parameter_group_family(&family)
            .description(format!("maxmemory-policy of cache {}", self.names.cache(&spec.cache_key)))
            .set_tags(Some(vec![
                tag(super::OWNER_TAG, self.names.prefix()),
                tag(super::CACHE_TAG, &spec.cache_key),
            ]))
            .send()
            .await;
        let mut values = Vec::new();
        match made {
            Ok(_) => {
                tracing::info!(parameter_group = %name, family = %family, "created the cache's parameter group");
                // Only a group no cache uses yet takes cluster-enabled.
                if spec.plan.cluster_mode {
                    values.push(value("cluster-enabled", "yes"));
                }
            }
            Err(e) => match classify("CreateCacheParameterGroup", e) {
                f if f.is(Kind::AlreadyExists) => {}
                f => return Err(f.into()),
            },
        }
        values.push(value("maxmemory-policy", policy));
        self.rbac
            .modify_cache_parameter_group()
            .cache_parameter_group_name(&name)
            .set_parameter_name_values(Some(values))
            .send()
            .await
            .map_err(|e| classify("ModifyCacheParameterGroup", e))?;
        Ok(Some(name))
    }

    /// Deletes every parameter group of the (deleted) cache of
    /// `instance_id`: the listing is one page for any account that keeps
    /// ElastiCache's default groups and a few of its own.
    pub(super) async fn delete_parameter_groups(&self, instance_id: &str) -> Result<(), ProviderError> {
        let prefix = format!("{}-", self.names.cache(instance_id));
        let mut marker: Option<String> = None;
        let mut ours = Vec::new();
        loop {
            let page = self
                .rbac
                .describe_cache_parameter_groups()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| classify("DescribeCacheParameterGroups", e))?;
            ours.extend(
                page.cache_parameter_groups()
                    .iter()
                    .filter_map(|g| g.cache_parameter_group_name())
                    .filter(|n| n.starts_with(&prefix))
                    .map(str::to_string),
            );
            marker = page.marker().filter(|m| !m.is_empty()).map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        for name in ours {
            match self.rbac.delete_cache_parameter_group().cache_parameter_group_name(&name).send().await {
                Ok(_) => {
                    tracing::info!(instance_id, parameter_group = %name, "deleted the cache's parameter group")
                }
                Err(e) => match classify("DeleteCacheParameterGroup", e) {
                    f if f.is(Kind::NotFound) => {}
                    f => return Err(f.into()),
                },
            }
        }
        Ok(())
    }
}

fn value(name: &str, value: &str) -> ParameterNameValue {
    ParameterNameValue::builder().parameter_name(name).parameter_value(value).build()
}
