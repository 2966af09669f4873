//! The orphan sweep's view of Secrets Manager: ListSecrets under the
//! broker's name prefix, keeping only secrets tagged `broker` = that
//! prefix; the sweep judges them by name. A secret made before secrets
//! were tagged is never listed, so never deleted. Deleting one schedules
//! its deletion with the store's recovery window, as every delete does.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use broker_core::domain::ResourceKind;
use broker_core::ports::{Claim, Inventory, Leftover, LeftoverPage, LiveCaches, ProviderError, Removal};

use super::*;

/// Secrets listed per page (ListSecrets allows 100).
const PAGE: i32 = 100;

#[async_trait]
impl Inventory for SecretsManagerStore {
    fn kinds(&self) -> &'static [ResourceKind] {
        &[ResourceKind::Secret]
    }

    async fn leftovers(
        &self,
        _kind: ResourceKind,
        token: Option<&str>,
        _live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError> {
        // Without an owner nothing can be told apart from anyone else's.
        let Some(prefix) = &self.owner else { return Ok(LeftoverPage::default()) };
        let filter = Filter::builder().key(FilterNameStringType::Name).values(format!("{prefix}/")).build();
        let listed = self
            .client
            .list_secrets()
            .filters(filter)
            .max_results(PAGE)
            .set_next_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|err| {
                let why = aws_terms(&err);
                ProviderError::Retryable(format!("ListSecrets failed: {why}"))
            })?;
        let ours =
            |tags: &[Tag]| tags.iter().any(|t| t.key() == Some(OWNER_TAG) && t.value() == Some(prefix));
        let leftovers = listed
            .secret_list()
            .iter()
            .filter(|s| s.deleted_date().is_none() && ours(s.tags()))
            // The name filter matches prefixes of words anywhere in the
            // name; only names that start with it are the broker's.
            .filter(|s| s.name().is_some_and(|n| n.starts_with(&format!("{prefix}/"))))
            .filter_map(|s| {
                Some(Leftover {
                    kind: ResourceKind::Secret,
                    id: s.name()?.to_string(),
                    reference: s.arn()?.to_string(),
                    claim: Claim::SecretName,
                })
            })
            .collect();
        Ok(LeftoverPage { leftovers, next: listed.next_token().map(str::to_string) })
    }

    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        match self.delete(&leftover.reference).await {
            Ok(()) => Ok(Removal::Removed),
            Err(SecretError::NotFound(_)) => Ok(Removal::Gone),
            Err(e @ SecretError::Refused(_)) => Err(ProviderError::Permanent(e.to_string())),
            Err(e) => Err(ProviderError::Retryable(e.to_string())),
        }
    }
}
