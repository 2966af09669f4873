//! The orphan sweep's view of the local caches: every instance directory
//! under the root with a readable `instance.json` (the root is this
//! broker's alone, as the prefix and tag are in AWS) whose instance no
//! live record names. A directory without a readable record is never
//! listed, so never touched.

use std::collections::BTreeSet;

use broker_core::domain::ResourceKind;
use broker_core::ports::{Claim, Inventory, Leftover, LeftoverPage, Removal};

use super::*;

#[async_trait]
impl Inventory for LocalCacheProvider {
    fn kinds(&self) -> &'static [ResourceKind] {
        &[ResourceKind::LocalCache]
    }

    /// One page: the whole root (a laptop holds a handful of caches).
    async fn leftovers(
        &self,
        _kind: ResourceKind,
        _token: Option<&str>,
        live: &BTreeSet<String>,
    ) -> Result<LeftoverPage, ProviderError> {
        let leftovers = self
            .records()
            .into_iter()
            .filter(|(record, _)| !live.contains(&record.instance_id))
            .map(|(record, _)| Leftover {
                kind: ResourceKind::LocalCache,
                reference: record.instance_id.clone(),
                id: record.instance_id,
                claim: Claim::Nobody,
            })
            .collect();
        Ok(LeftoverPage { leftovers, next: None })
    }

    /// Stops the server and removes the directory, as a deprovision does.
    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        let paths = Paths::of(&self.root, &leftover.reference)?;
        if !paths.record.exists() {
            return Ok(Removal::Gone);
        }
        self.delete(&leftover.reference, None).await?;
        Ok(Removal::Removed)
    }
}
