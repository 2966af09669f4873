//! The orphan sweep: resources the broker made that no record names, such
//! as a binding user created just before a crash and then left when its
//! instance was deprovisioned, a cache whose record was purged while it
//! still existed, or a secret whose step crashed before its reference was
//! saved.
//!
//! Each pass lists a few pages ([`PAGES_PER_PASS`]) of the inventories
//! (the cache provider's replication groups, cache clusters, user groups
//! and users and the caches' log groups, or laptop caches; the secret
//! store's secrets; the caches' CloudWatch alarms), so a round
//! over everything spans passes when there is a lot, and a new round starts
//! at most every [`SweepSettings::every_secs`]. An inventory leaves out
//! what the live caches' own names and user groups hold; the sweep checks
//! the rest against the records (the instances read at the pass's start,
//! and the bindings of the few instances a candidate points at). What no
//! record names is recorded as sighted ([`crate::domain::sweep`]) and
//! deleted once a later round still finds it unnamed after the grace
//! period: a record written after the pass read the records (DynamoDB's
//! index is eventually consistent) names its resources long before then.
//!
//! Deletion is the inventory's: it first checks the resource's tags name
//! this broker and leaves it alone otherwise; a replication group keeps a
//! final snapshot. At most [`MAX_REMOVALS`] deletions per pass. Every
//! sighting, deletion and refusal is logged with the resource's name.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Reconciler, Report};
use crate::domain::{Binding, BindingState, Instance, InstanceState, Sweep, Timestamp};
use crate::ports::{Claim, Inventory, Leftover, LiveCaches, Removal, StateStore, StoreError};
use crate::rotation::Target;

/// Listing pages per pass, over all kinds: more than AWS mode's seven
/// listings (four of ElastiCache, the log groups, the secrets and the
/// alarms), so a round over a small account takes one pass.
pub const PAGES_PER_PASS: usize = 8;

/// Deletions per pass; more orphans wait for the next.
pub const MAX_REMOVALS: usize = 10;

/// What the sweep lists and how patient it is.
#[derive(Clone)]
pub struct SweepSettings {
    /// The cache provider's and the secret store's inventories.
    pub inventories: Vec<Arc<dyn Inventory>>,
    /// Prefix of secret names (see [`Target::secret_name`]).
    pub secret_prefix: String,
    /// How long a resource stays unnamed before it is deleted.
    pub grace_secs: i64,
    /// A new round starts at most this often.
    pub every_secs: i64,
}

impl std::fmt::Debug for SweepSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepSettings")
            .field("inventories", &self.inventories.len())
            .field("secret_prefix", &self.secret_prefix)
            .field("grace_secs", &self.grace_secs)
            .field("every_secs", &self.every_secs)
            .finish()
    }
}

impl Reconciler {
    /// The sweep's part of a pass over `instances` (every record not yet
    /// purged). A store or listing that fails ends it; the next pass goes
    /// on from where the record says.
    pub(super) async fn sweep_orphans(&self, instances: &[Instance], now: Timestamp, report: &mut Report) {
        let Some(settings) = &self.sweep else { return };
        let steps: Vec<(usize, crate::domain::ResourceKind)> = settings
            .inventories
            .iter()
            .enumerate()
            .flat_map(|(n, inventory)| inventory.kinds().iter().map(move |kind| (n, *kind)))
            .collect();
        if steps.is_empty() {
            return;
        }
        let mut sweep = match self.store.sweep().await {
            Ok(sweep) => sweep.unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "sweep: could not read its record; the next pass tries again");
                return;
            }
        };
        if !sweep.due(now, settings.every_secs) {
            return;
        }
        if sweep.step >= steps.len() {
            // The inventories changed since the record was written.
            sweep.step = 0;
            sweep.token = None;
        }
        if !sweep.in_round() {
            sweep.round_started_at = now;
        }
        let mut records = Records::new(self.store.as_ref(), instances);
        let live = records.live_caches();
        let mut removals = 0;
        for _ in 0..PAGES_PER_PASS {
            let (n, kind) = steps[sweep.step];
            let inventory = &settings.inventories[n];
            let page = match inventory.leftovers(kind, sweep.token.as_deref(), &live).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(kind = kind.describe(), error = %e, "sweep: could not list; the next pass goes on from here");
                    break;
                }
            };
            for leftover in &page.leftovers {
                let key = Sweep::key(leftover.kind, &leftover.id);
                match records.names(leftover, &settings.secret_prefix).await {
                    Ok(true) => {
                        sweep.sightings.remove(&key);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(kind = kind.describe(), id = %leftover.id, error = %e, "sweep: could not read the records that might name it");
                        continue;
                    }
                }
                report.orphans_seen += 1;
                let Some(sighting) = sweep.sight(key, now) else {
                    warn!(kind = kind.describe(), id = %leftover.id, "sweep: too many orphans recorded; this one waits");
                    continue;
                };
                if sighting.left_alone {
                    continue;
                }
                let unnamed_for = now - sighting.first_seen;
                if unnamed_for < settings.grace_secs {
                    if unnamed_for == 0 {
                        info!(
                            kind = kind.describe(),
                            id = %leftover.id,
                            grace_secs = settings.grace_secs,
                            "sweep: no record names it; it is deleted after the grace period unless one does by then"
                        );
                    }
                    continue;
                }
                if removals >= MAX_REMOVALS {
                    continue;
                }
                removals += 1;
                match inventory.remove(leftover).await {
                    Ok(Removal::Removed) => {
                        report.orphans_removed += 1;
                        info!(kind = kind.describe(), id = %leftover.id, unnamed_for, "sweep: deleted an orphan no record names");
                    }
                    Ok(Removal::Gone) => {}
                    Ok(Removal::NotOurs) => {
                        sighting.left_alone = true;
                        report.orphans_left_alone += 1;
                        warn!(kind = kind.describe(), id = %leftover.id, "sweep: its tags do not name this broker; left alone");
                    }
                    Err(e) => {
                        warn!(kind = kind.describe(), id = %leftover.id, error = %e, "sweep: could not delete it; the next round tries again")
                    }
                }
            }
            if sweep.advance(page.next, steps.len()) {
                info!(round = sweep.round - 1, orphans = sweep.sightings.len(), "sweep: round done");
                break;
            }
        }
        if let Err(e) = self.store.save_sweep(&mut sweep).await {
            warn!(error = %e, "sweep: could not save its record (another pass wrote it first?); the next pass goes on");
        }
    }
}

/// The records a pass judges leftovers by.
struct Records<'a> {
    store: &'a dyn StateStore,
    /// Instances not deleted, by id and by cache key (a claimed pool
    /// member's secrets carry the member's id, its instance's cache key).
    by_id: HashMap<&'a str, &'a Instance>,
    by_key: HashMap<&'a str, &'a Instance>,
    /// Bindings read so far, by instance id.
    bindings: HashMap<String, Vec<Binding>>,
}

impl<'a> Records<'a> {
    fn new(store: &'a dyn StateStore, instances: &'a [Instance]) -> Records<'a> {
        let live: Vec<&Instance> = instances.iter().filter(|i| i.state != InstanceState::Deleted).collect();
        Records {
            store,
            by_id: live.iter().map(|i| (i.id.as_str(), *i)).collect(),
            by_key: live.iter().map(|i| (i.cache_key(), *i)).collect(),
            bindings: HashMap::new(),
        }
    }

    fn live_caches(&self) -> LiveCaches {
        self.by_key.keys().map(|k| k.to_string()).collect()
    }

    /// The live instance `id` names: its own id or its cache's key.
    fn instance(&self, id: &str) -> Option<&'a Instance> {
        self.by_id.get(id).or_else(|| self.by_key.get(id)).copied()
    }

    /// Whether a record names `leftover`.
    async fn names(&mut self, leftover: &Leftover, secret_prefix: &str) -> Result<bool, StoreError> {
        match &leftover.claim {
            Claim::Nobody => Ok(false),
            Claim::UserOf { key, username } => match self.by_key.get(key.as_str()).copied() {
                Some(instance) => self.names_user(instance, username).await,
                None => Ok(false),
            },
            Claim::SecretName => match Target::from_secret_name(secret_prefix, &leftover.id) {
                // Not a name the broker makes: not its to judge.
                None => Ok(true),
                Some(Target::Admin { instance_id }) => Ok(self.instance(&instance_id).is_some()),
                Some(Target::Binding { instance_id, binding_id }) => {
                    match self.by_id.get(instance_id.as_str()).copied() {
                        Some(instance) => {
                            Ok(self.live_bindings(instance).await?.iter().any(|b| b.id == binding_id))
                        }
                        None => Ok(false),
                    }
                }
                Some(Target::Spare { instance_id, username }) => match self.instance(&instance_id) {
                    Some(instance) => self.names_user(instance, &username).await,
                    None => Ok(false),
                },
            },
        }
    }

    /// Whether a spare of `instance`, or one of its bindings, names the
    /// cache user `username`.
    async fn names_user(&mut self, instance: &'a Instance, username: &str) -> Result<bool, StoreError> {
        if instance.spares.iter().any(|s| s.username == username) {
            return Ok(true);
        }
        Ok(self.live_bindings(instance).await?.iter().any(|b| b.username.as_deref() == Some(username)))
    }

    /// The bindings of `instance` not deleted, read once per pass.
    async fn live_bindings(&mut self, instance: &Instance) -> Result<&[Binding], StoreError> {
        if !self.bindings.contains_key(&instance.id) {
            let mut bindings = self.store.bindings(&instance.id).await?;
            bindings.retain(|b| b.state != BindingState::Deleted);
            self.bindings.insert(instance.id.clone(), bindings);
        }
        Ok(self.bindings.get(&instance.id).map(Vec::as_slice).unwrap_or_default())
    }
}
