//! The catalog: the seed file shipped in the repo (`catalog/catalog.json`),
//! its validation, and the OSB `GET /v2/catalog` document built from the
//! services and plans the store holds.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::params::{compare_versions, create_schema, update_schema, valkey_versions};
use crate::domain::plan::{MAX_SPARE_BINDING_USERS, is_cli_friendly};
use crate::domain::{Engine, Plan, Service};
use crate::ports::StoreError;

/// The catalog built into the binary; `CATALOG_FILE` can name another seed.
pub const DEFAULT_CATALOG: &str = include_str!("../../../catalog/catalog.json");

/// Why a catalog cannot be used; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the catalog file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}the catalog is not in the format of catalog/catalog.json", in_file(path.as_deref()))]
    Syntax {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },
    /// The document parses but an entry is wrong: `reason` names it.
    #[error("{}{reason}", in_file(path.as_deref()))]
    Invalid { path: Option<PathBuf>, reason: String },
    #[error("the catalog cannot be written to the store")]
    Store(#[from] StoreError),
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

impl CatalogError {
    /// The same error, naming the file it came from.
    fn in_file(self, file: &Path) -> CatalogError {
        match self {
            CatalogError::Syntax { source, .. } => CatalogError::Syntax { path: Some(file.into()), source },
            CatalogError::Invalid { reason, .. } => CatalogError::Invalid { path: Some(file.into()), reason },
            other => other,
        }
    }
}

/// Services and plans as the seed file holds them.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogFile {
    pub services: Vec<Service>,
    pub plans: Vec<Plan>,
}

impl CatalogFile {
    /// Parses and validates a catalog document; the error names the entry
    /// at fault and what is wrong with it.
    pub fn parse(text: &str) -> Result<CatalogFile, CatalogError> {
        let mut file: CatalogFile =
            serde_json::from_str(text).map_err(|source| CatalogError::Syntax { path: None, source })?;
        file.validate().map_err(|reason| CatalogError::Invalid { path: None, reason })?;
        for (n, s) in file.services.iter_mut().enumerate() {
            s.position = u32::try_from(n).unwrap_or(u32::MAX);
        }
        for (n, p) in file.plans.iter_mut().enumerate() {
            p.position = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(file)
    }

    /// Reads and parses the catalog file at `path`; the error names the file.
    pub fn from_file(path: &Path) -> Result<CatalogFile, CatalogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CatalogError::Read { path: path.into(), source })?;
        CatalogFile::parse(&text).map_err(|e| e.in_file(path))
    }

    /// The catalog at `path`, or the built-in one.
    pub fn from_file_or_builtin(path: Option<&Path>) -> Result<CatalogFile, CatalogError> {
        path.map_or_else(|| Ok(CatalogFile::builtin()), CatalogFile::from_file)
    }

    pub fn builtin() -> CatalogFile {
        CatalogFile::parse(DEFAULT_CATALOG).expect("the built-in catalog is valid (tested)")
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for s in &self.services {
            if !is_cli_friendly(&s.name) {
                return Err(format!(
                    "service name {:?} must be lowercase letters, digits and hyphens",
                    s.name
                ));
            }
            if !ids.insert(s.id.clone()) {
                return Err(format!("service id {} is used twice", s.id));
            }
        }
        for p in &self.plans {
            let what = format!("plan {:?} ({})", p.name, p.id);
            if !is_cli_friendly(&p.name) {
                return Err(format!("{what}: name must be lowercase letters, digits and hyphens"));
            }
            if !ids.insert(p.id.clone()) {
                return Err(format!("{what}: id is used twice"));
            }
            let Some(service) = self.services.iter().find(|s| s.id == p.service_id) else {
                return Err(format!("{what}: service_id {} is not a service", p.service_id));
            };
            if self.plans.iter().filter(|o| o.service_id == p.service_id && o.name == p.name).count() > 1 {
                return Err(format!("{what}: name is used twice in service {}", service.name));
            }
            if p.engine_versions.is_empty() {
                return Err(format!("{what}: engine_versions is empty"));
            }
            for v in &p.engine_versions {
                let parts: Vec<&str> = v.split('.').collect();
                if parts.len() != 2 || parts.iter().any(|x| x.parse::<u32>().is_err()) {
                    return Err(format!("{what}: engine version {v:?} is not a major version like \"7.1\""));
                }
            }
            if let Some((floor, why)) = lowest_version(service.engine)
                && let Some(v) = p.engine_versions.iter().find(|v| compare_versions(v, floor).is_lt())
            {
                return Err(format!(
                    "{what}: engine version {v:?} is below {floor:?}, the lowest {} version a plan may offer: {why}",
                    service.engine.as_str()
                ));
            }
            if !p.engine_versions.contains(&p.default_engine_version) {
                return Err(format!(
                    "{what}: default_engine_version {:?} is not among engine_versions",
                    p.default_engine_version
                ));
            }
            if p.maximum_polling_duration == 0 {
                return Err(format!("{what}: maximum_polling_duration must be positive"));
            }
            if p.cluster_mode && service.engine == Engine::Memcached {
                return Err(format!("{what}: Memcached has no cluster mode"));
            }
            if p.final_snapshot && service.engine == Engine::Memcached {
                return Err(format!("{what}: final_snapshot is not possible, Memcached has no snapshots"));
            }
            if p.spare_binding_users > MAX_SPARE_BINDING_USERS {
                return Err(format!(
                    "{what}: spare_binding_users is {}; it must be 0 to {MAX_SPARE_BINDING_USERS}",
                    p.spare_binding_users
                ));
            }
            if p.warm_pool_size > crate::domain::pool::MAX_WARM_POOL_SIZE {
                return Err(format!(
                    "{what}: warm_pool_size is {}; it must be 0 to {}",
                    p.warm_pool_size,
                    crate::domain::pool::MAX_WARM_POOL_SIZE
                ));
            }
            p.alarms.check().map_err(|e| format!("{what}: {e}"))?;
            for log in &p.log_delivery {
                if let Some(why) = p.engine_versions.iter().find_map(|v| log.refusal(service.engine, v)) {
                    return Err(format!("{what}: log_delivery {}: {why}", log.as_str()));
                }
            }
            if !p.cluster_mode && p.shards != 1 && service.engine != Engine::Memcached {
                return Err(format!("{what}: more than one shard needs cluster_mode"));
            }
            crate::domain::serverless::check(p, service.engine).map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(())
    }
}

/// The lowest major version a plan of `engine` may offer, and why.
fn lowest_version(engine: Engine) -> Option<(&'static str, &'static str)> {
    match engine {
        // ElastiCache changes an AUTH token (ROTATE, then SET) only from
        // Redis OSS 5.0.6, which is the 5.0 the broker creates.
        Engine::Redis => Some((
            "5.0",
            "the AUTH token of an older Redis OSS cannot change, so its credentials could never rotate",
        )),
        // Every cache has in-transit encryption, which Memcached has from
        // 1.6.12; 1.6 is created as the newest 1.6 release.
        Engine::Memcached => {
            Some(("1.6", "in-transit encryption, which every cache has, needs Memcached 1.6.12 or later"))
        }
        Engine::Valkey => Some(("7.2", "7.2 is the first Valkey ElastiCache runs")),
    }
}

/// A plan can change to another plan of its service, except Memcached plans
/// (ElastiCache cannot change a Memcached cluster's node type).
pub fn plan_updateable(service: &Service) -> bool {
    service.engine != Engine::Memcached
}

/// Whether a binding can be rotated (OSB `binding_rotatable`): a successor
/// binding gets fresh credentials, which Memcached (no users) has none of.
pub fn binding_rotatable(service: &Service) -> bool {
    service.engine.speaks_redis()
}

/// The schema for bind parameters: none are accepted.
pub fn bind_parameters_schema() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": {}
    })
}

/// The OSB catalog document: services and plans in the order of the catalog
/// file they came from (entries of an older seed, all at position 0, by name).
pub fn osb_catalog(services: &[Service], plans: &[Plan]) -> Value {
    let valkey = valkey_versions(services, plans);
    let mut services: Vec<&Service> = services.iter().collect();
    services.sort_by(|a, b| (a.position, &a.name, &a.id).cmp(&(b.position, &b.name, &b.id)));
    let mut plans: Vec<&Plan> = plans.iter().collect();
    plans.sort_by(|a, b| (a.position, &a.name, &a.id).cmp(&(b.position, &b.name, &b.id)));
    let services: Vec<Value> = services
        .into_iter()
        .map(|s| {
            let plans: Vec<Value> =
                plans.iter().filter(|p| p.service_id == s.id).map(|p| osb_plan(s, p, &valkey)).collect();
            json!({
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "tags": s.tags,
                "bindable": true,
                "instances_retrievable": true,
                "bindings_retrievable": true,
                "plan_updateable": plan_updateable(s),
                "allow_context_updates": true,
                "metadata": s.metadata,
                "plans": plans,
            })
        })
        .collect();
    json!({ "services": services })
}

fn osb_plan(service: &Service, p: &Plan, valkey_versions: &[String]) -> Value {
    let mut plan = json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "free": p.free,
        "bindable": true,
        "plan_updateable": plan_updateable(service),
        "binding_rotatable": binding_rotatable(service),
        "maximum_polling_duration": p.maximum_polling_duration,
        "metadata": {
            "displayName": p.metadata.display_name,
            "bullets": p.metadata.bullets,
            "costs": p.metadata.costs,
        },
        "schemas": {
            "service_instance": {
                "create": { "parameters": create_schema(service.engine, p) },
                "update": { "parameters": update_schema(service.engine, p, valkey_versions) },
            },
            "service_binding": {
                "create": { "parameters": bind_parameters_schema() },
            }
        }
    });
    if let Some(v) = &p.maintenance_version {
        plan["maintenance_info"] = json!({ "version": v });
        if let Some(d) = &p.maintenance_description {
            plan["maintenance_info"]["description"] = json!(d);
        }
    }
    plan
}

/// Writes every entry of `catalog` into `store`, replacing what is there.
pub async fn apply(
    store: &dyn crate::ports::CatalogStore,
    catalog: &CatalogFile,
) -> Result<usize, CatalogError> {
    for service in &catalog.services {
        store.put_service(service).await?;
    }
    for plan in &catalog.plans {
        store.put_plan(plan).await?;
    }
    Ok(catalog.services.len() + catalog.plans.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_valid_and_has_the_three_engines() {
        let c = CatalogFile::builtin();
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["elasticache-redis", "elasticache-valkey", "elasticache-memcached"]);
    }

    #[test]
    fn the_builtin_plans_follow_the_source_documents() {
        let c = CatalogFile::builtin();
        let redis = &c.services[0];
        let plan = |name: &str| c.plans.iter().find(|p| p.service_id == redis.id && p.name == name).unwrap();
        assert_eq!(plan("dev").total_nodes(Engine::Redis), 1);
        for single in ["small", "medium", "large"] {
            assert_eq!(plan(single).total_nodes(Engine::Redis), 1, "{single}");
        }
        for (name, nodes) in [("ha-3", 3), ("ha-5", 5)] {
            let p = plan(name);
            assert_eq!(p.total_nodes(Engine::Redis), nodes);
            assert!(p.multi_az && p.automatic_failover, "{name}");
        }
        let cluster = plan("cluster-3x2");
        assert!(cluster.cluster_mode);
        assert_eq!((cluster.shards, cluster.replicas_per_shard), (3, 1));
        assert_eq!(plan("small").engine_versions, ["6.0", "6.2", "7.0", "7.1"]);
    }

    #[test]
    fn engine_versions_are_the_documented_majors() {
        let c = CatalogFile::builtin();
        let versions = |engine: Engine| {
            let sid = &c.services.iter().find(|s| s.engine == engine).unwrap().id;
            let mut v: Vec<String> = c
                .plans
                .iter()
                .filter(|p| &p.service_id == sid)
                .flat_map(|p| p.engine_versions.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(versions(Engine::Redis), ["6.0", "6.2", "7.0", "7.1"]);
        assert_eq!(versions(Engine::Valkey), ["7.2", "8.0"]);
        assert_eq!(versions(Engine::Memcached), ["1.6"]);
    }

    /// What failed names the file; why it failed is the error's cause,
    /// kept as it was, not flattened into the message.
    #[test]
    fn a_catalog_file_that_cannot_be_used_names_the_file_and_keeps_its_cause() {
        use std::error::Error;
        let dir = std::env::temp_dir().join(format!("catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken.json");
        std::fs::write(&broken, "{ \"services\": [").unwrap();
        let err = CatalogFile::from_file(&broken).unwrap_err();
        assert!(err.to_string().starts_with(&broken.display().to_string()), "{err}");
        let cause = err.source().expect("the JSON error is the cause");
        assert!(cause.is::<serde_json::Error>(), "{cause:?}");
        let report = crate::logging::Report(&err).to_string();
        assert!(report.contains("EOF while parsing"), "{report}");

        let missing = dir.join("missing.json");
        let err = CatalogFile::from_file(&missing).unwrap_err();
        let cause = err.source().and_then(|c| c.downcast_ref::<std::io::Error>()).expect("an io cause");
        assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);

        let invalid = DEFAULT_CATALOG.replacen("\"name\": \"dev\"", "\"name\": \"Dev Plan\"", 1);
        std::fs::write(&broken, invalid).unwrap();
        let err = CatalogFile::from_file(&broken).unwrap_err().to_string();
        assert!(err.starts_with(&broken.display().to_string()) && err.contains("lowercase"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_catalog_with_a_minor_version_is_refused() {
        let text = DEFAULT_CATALOG.replacen("\"6.2\",", "\"6.2.1\",", 1);
        let err = CatalogFile::parse(&text).unwrap_err().to_string();
        assert!(err.contains("not a major version"), "{err}");
    }

    /// ElastiCache User Guide, "Modifying the AUTH token on an existing
    /// cluster" (auth-update): ROTATE and SET need Redis OSS 5.0.6 or later;
    /// "Supported ElastiCache for Memcached versions": in-transit encryption
    /// from 1.6.12.
    #[test]
    fn versions_whose_credentials_could_not_rotate_or_encrypt_in_transit_are_refused() {
        for (engine, low) in [("redis", "4.0"), ("memcached", "1.5"), ("valkey", "7.0")] {
            let mut doc: Value = serde_json::from_str(DEFAULT_CATALOG).unwrap();
            let sid =
                doc["services"].as_array().unwrap().iter().find(|s| s["engine"] == engine).unwrap()["id"]
                    .clone();
            let plan =
                doc["plans"].as_array_mut().unwrap().iter_mut().find(|p| p["service_id"] == sid).unwrap();
            plan["engine_versions"].as_array_mut().unwrap().insert(0, json!(low));
            let err = CatalogFile::parse(&doc.to_string()).unwrap_err().to_string();
            assert!(err.contains(&format!("engine version \"{low}\" is below")), "{engine}: {err}");
        }
        // 5.0 (sent as 5.0.6) is the lowest Redis OSS a plan may offer.
        let text = DEFAULT_CATALOG.replacen("\"6.0\",", "\"5.0\", \"6.0\",", 1);
        assert!(CatalogFile::parse(&text).is_ok());
    }

    #[test]
    fn a_catalog_with_an_unfriendly_name_is_refused() {
        let text = DEFAULT_CATALOG.replacen("\"name\": \"dev\"", "\"name\": \"Dev Plan\"", 1);
        let err = CatalogFile::parse(&text).unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }

    #[test]
    fn final_snapshots_are_kept_for_the_redis_and_valkey_plans_with_daily_snapshots() {
        let c = CatalogFile::builtin();
        for p in &c.plans {
            let engine = c.services.iter().find(|s| s.id == p.service_id).unwrap().engine;
            let expected = engine != Engine::Memcached && p.snapshot_retention_days > 0;
            assert_eq!(p.final_snapshot, expected, "{} plan {}", engine.as_str(), p.name);
        }
    }

    #[test]
    fn a_memcached_plan_with_a_final_snapshot_is_refused_naming_the_plan() {
        let mut doc: Value = serde_json::from_str(DEFAULT_CATALOG).unwrap();
        let memcached =
            doc["services"].as_array().unwrap().iter().find(|s| s["engine"] == "memcached").unwrap()["id"]
                .clone();
        let plan = doc["plans"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["service_id"] == memcached && p["name"] == "small")
            .unwrap();
        plan["final_snapshot"] = json!(true);
        let id = plan["id"].as_str().unwrap().to_string();

        let err = CatalogFile::parse(&doc.to_string()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("plan \"small\" ({id}): final_snapshot")), "{err}");
        assert!(err.contains("Memcached has no snapshots"), "{err}");
    }

    #[test]
    fn the_osb_catalog_lists_services_and_plans_in_the_order_of_the_file() {
        let c = CatalogFile::builtin();
        // The store gives them back in its own order (here: reversed).
        let services: Vec<Service> = c.services.iter().rev().cloned().collect();
        let plans: Vec<Plan> = c.plans.iter().rev().cloned().collect();
        let doc = osb_catalog(&services, &plans);
        let names = |s: &Value| -> Vec<String> {
            s["plans"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
        };
        let service_names: Vec<&str> =
            doc["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(service_names, ["elasticache-redis", "elasticache-valkey", "elasticache-memcached"]);
        assert_eq!(
            names(&doc["services"][0]),
            ["dev", "small", "medium", "large", "ha-3", "ha-5", "cluster-3x2", "serverless"]
        );
        assert_eq!(
            names(&doc["services"][1]),
            ["dev", "staging", "cluster-3x2", "serverless", "serverless-large"]
        );
        assert_eq!(names(&doc["services"][2]), ["dev", "small"]);
    }

    #[test]
    fn the_osb_catalog_declares_retrievability_updates_and_schemas() {
        let c = CatalogFile::builtin();
        let doc = osb_catalog(&c.services, &c.plans);
        let redis = &doc["services"][0];
        assert_eq!(redis["instances_retrievable"], true);
        assert_eq!(redis["bindings_retrievable"], true);
        assert_eq!(redis["plan_updateable"], true);
        let plan = &redis["plans"][0];
        assert!(plan["maximum_polling_duration"].as_u64().unwrap() > 0);
        assert_eq!(
            plan["schemas"]["service_instance"]["create"]["parameters"]["properties"]["engine_version"]["enum"],
            json!(["6.0", "6.2", "7.0", "7.1"])
        );
        assert_eq!(plan["maintenance_info"]["version"], "1.0.0");
        assert_eq!(doc["services"][2]["plan_updateable"], false);
    }
}
