//! Plan parameters: the JSON Schemas each plan publishes, validation of requests
//! against them (jsonschema), and errors that name the parameter and the values
//! the plan allows.

use serde_json::{Map, Value, json};

use super::day2::{
    ACTION_PARAMETERS, DELETE_SNAPSHOT, LATEST, MAX_SNAPSHOT_NAME, RESTART, RESTORE_FROM, SNAPSHOT,
    TEST_FAILOVER, snapshot_name_problem,
};
pub use super::parameter::{LOG_DELIVERY, ParameterError};
use super::settings;
use super::{Engine, LogType, Plan};

/// The parameter that picks the engine's major version.
pub const ENGINE_VERSION: &str = "engine_version";

/// Another name for [`ENGINE_VERSION`]: cloud.gov's documentation tells users
/// `-c '{"engineVersion": "6.2"}'`. Either may be given; both only when they
/// agree.
pub const ENGINE_VERSION_ALIAS: &str = "engineVersion";

/// The version a request's parameters ask for, under either name.
pub fn requested_version(parameters: &Map<String, Value>) -> Option<&str> {
    parameters.get(ENGINE_VERSION).or_else(|| parameters.get(ENGINE_VERSION_ALIAS)).and_then(Value::as_str)
}

/// Takes out of `parameters` every name of the engine version, so that a
/// new request's spelling replaces the old one's.
pub fn forget_version(parameters: &mut Map<String, Value>) {
    parameters.remove(ENGINE_VERSION);
    parameters.remove(ENGINE_VERSION_ALIAS);
}

/// The update parameter that moves a Redis OSS cache to Valkey in place.
pub const ENGINE: &str = "engine";

/// The major Valkey versions a catalog offers (its Valkey plans'), which a
/// Redis OSS instance may move to in place.
pub fn valkey_versions(services: &[super::Service], plans: &[Plan]) -> Vec<String> {
    let mut versions: Vec<String> = plans
        .iter()
        .filter(|p| services.iter().any(|s| s.id == p.service_id && s.engine == Engine::Valkey))
        .flat_map(|p| p.engine_versions.iter().cloned())
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions.dedup();
    versions
}

/// The logs an instance's cache delivers: its `log_delivery` parameter
/// when given, else its plan's.
pub fn log_delivery(plan: &Plan, parameters: &Map<String, Value>) -> Vec<LogType> {
    let mut logs: Vec<LogType> = match parameters.get(LOG_DELIVERY) {
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
        None => plan.log_delivery.clone(),
    };
    logs.sort();
    logs.dedup();
    logs
}

/// A `log_delivery` the engine version cannot deliver, as a refusal that
/// names the parameter.
pub fn check_log_delivery(engine: Engine, version: &str, logs: &[LogType]) -> Result<(), ParameterError> {
    match logs.iter().find_map(|l| l.refusal(engine, version)) {
        Some(why) => Err(ParameterError(format!(
            "parameter '{LOG_DELIVERY}': {why}; ask for a later 'engine_version', or leave the log out"
        ))),
        None => Ok(()),
    }
}

/// The schema of `parameters` on provision (`create`) and on update: the same
/// for both, since every parameter can be changed later. Memcached delivers
/// no logs, so its plans take no `log_delivery`.
pub fn parameters_schema(engine: Engine, plan: &Plan) -> Value {
    let mut schema = version_schema(plan);
    super::settings::add_to_schema(engine, plan, &mut schema["properties"]);
    if engine.speaks_redis() && !plan.serverless {
        schema["properties"][LOG_DELIVERY] = json!({
            "description": format!(
                "Logs the cache delivers to a CloudWatch Logs group of its own, in JSON: any of slow-log (Redis OSS 6.0 and later, Valkey), engine-log (Redis OSS 6.2 and later, Valkey); [] for none. Default: the plan's ({}).",
                if plan.log_delivery.is_empty() {
                    "none".to_string()
                } else {
                    plan.log_delivery.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ")
                }
            ),
            "type": "array",
            "items": { "type": "string", "enum": LogType::ALL.iter().map(|l| l.as_str()).collect::<Vec<_>>() },
            "uniqueItems": true,
        });
    }
    schema
}

/// The schema of a provision's parameters: the settings, and for Redis OSS
/// and Valkey `restore_from`, the snapshot a new cache starts from.
pub fn create_schema(engine: Engine, plan: &Plan) -> Value {
    let mut schema = parameters_schema(engine, plan);
    if engine.speaks_redis() {
        schema["properties"][RESTORE_FROM] = json!({
            "description": format!(
                "Make the cache from a snapshot of another instance of this service in the same organization and space: the instance's id, and the snapshot's name as fetching that instance lists it, or \"{LATEST}\" for its newest. Final snapshots of deprovisioned instances count too."
            ),
            "type": "object",
            "additionalProperties": false,
            "required": ["instance_id", "snapshot"],
            "properties": {
                "instance_id": { "type": "string", "minLength": 1, "maxLength": 128 },
                "snapshot": { "type": "string", "minLength": 1, "maxLength": 255 },
            },
        });
    }
    schema
}

/// The schema of an update's parameters: the settings, and the one-off
/// actions the plan can run (see [`super::day2`]), which are never kept.
pub fn update_schema(engine: Engine, plan: &Plan, valkey_versions: &[String]) -> Value {
    let mut schema = parameters_schema(engine, plan);
    if engine == Engine::Redis && !valkey_versions.is_empty() {
        in_place_to_valkey(&mut schema, plan, valkey_versions);
    }
    let props = &mut schema["properties"];
    if !plan.cluster_mode && !plan.serverless {
        props[RESTART] = json!({
            "description": "true: reboot every node now (replicas first, one at a time, so a replicated cache keeps serving). Runs once per request.",
            "const": true,
        });
    }
    if failover_capable(plan) {
        props[TEST_FAILOVER] = json!({
            "description": "true: fail over each shard's primary to a replica, one shard at a time, and wait until each has a new primary. Runs once per request.",
            "const": true,
        });
    }
    if engine.speaks_redis() {
        let name = json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SNAPSHOT_NAME,
            "pattern": "^[a-z]([a-z0-9]|-[a-z0-9])*$",
            "not": { "const": LATEST },
        });
        props[SNAPSHOT] = json!({
            "description": format!("Take a snapshot of the data now, under this name (1 to {MAX_SNAPSHOT_NAME} lowercase letters, digits and single hyphens, starting with a letter). Fetching the instance lists its snapshots."),
        });
        props[DELETE_SNAPSHOT] = json!({
            "description": "Delete the instance's snapshot of this name (one the snapshot parameter took).",
        });
        for p in [SNAPSHOT, DELETE_SNAPSHOT] {
            for (k, v) in name.as_object().into_iter().flatten() {
                props[p][k] = v.clone();
            }
        }
    }
    schema
}

/// A Redis OSS plan's update schema takes `engine` (`"valkey"` moves the
/// cache to Valkey in place, ElastiCache's ModifyReplicationGroup with
/// Engine=valkey), and then an `engine_version` among Valkey's.
fn in_place_to_valkey(schema: &mut Value, plan: &Plan, valkey_versions: &[String]) {
    schema["properties"][ENGINE] = json!({
        "description": format!(
            "\"valkey\" moves this Redis OSS cache to Valkey in place, keeping its data, endpoints and credentials; give engine_version too (Valkey: {}). It cannot move back.",
            valkey_versions.join(", ")
        ),
        "type": "string",
        "enum": ["redis", "valkey"],
    });
    let mut all = plan.engine_versions.clone();
    all.extend(valkey_versions.iter().cloned());
    let only = |versions: &[String]| json!({ "properties": { ENGINE_VERSION: { "enum": versions }, ENGINE_VERSION_ALIAS: { "enum": versions } } });
    for name in [ENGINE_VERSION, ENGINE_VERSION_ALIAS] {
        schema["properties"][name]["enum"] = json!(all);
    }
    schema["allOf"] = json!([{
        "if": { "properties": { ENGINE: { "const": "valkey" } }, "required": [ENGINE] },
        "then": only(valkey_versions),
        "else": only(&plan.engine_versions),
    }]);
}

/// The versions `parameters` may name under `schema`: Valkey's when they
/// move the cache to Valkey, else the plan's.
fn allowed_versions(plan: &Plan, schema: &Value, parameters: &Value) -> Vec<String> {
    let valkey = schema["allOf"][0]["then"]["properties"][ENGINE_VERSION]["enum"].as_array();
    match (parameters.get(ENGINE).and_then(Value::as_str), valkey) {
        (Some("valkey"), Some(versions)) => {
            versions.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        _ => plan.engine_versions.clone(),
    }
}

/// Whether the plan's caches can fail over: replicas and automatic
/// failover.
pub fn failover_capable(plan: &Plan) -> bool {
    plan.automatic_failover && plan.replicas_per_shard > 0
}

/// A parameter the request gives that the plan's schema leaves out for a
/// reason worth saying (an action the plan cannot run, a provision-only
/// parameter in an update), as a refusal that names it and says why:
/// clearer than "unknown parameter".
pub fn unavailable(
    engine: Engine,
    plan: &Plan,
    given: &Map<String, Value>,
    updating: bool,
) -> Result<(), ParameterError> {
    let why = |p: &str| -> Option<String> {
        if let Some(why) = super::serverless::refusal(plan, p) {
            return Some(why);
        }
        match p {
            // The ElastiCache API reference, RebootCacheCluster: "Rebooting
            // is not supported on Valkey or Redis OSS (cluster mode enabled)
            // clusters."
            RESTART if plan.cluster_mode => Some(format!(
                "plan {} runs in cluster mode, whose nodes ElastiCache cannot reboot; use test_failover, which replaces each shard's primary",
                plan.name
            )),
            TEST_FAILOVER if !failover_capable(plan) => Some(format!(
                "plan {} has no replicas to fail over to; only plans with replicas and automatic failover can test it",
                plan.name
            )),
            SNAPSHOT | DELETE_SNAPSHOT | RESTORE_FROM | settings::SNAPSHOT_WINDOW
            | settings::SNAPSHOT_RETENTION_DAYS
                if !engine.speaks_redis() =>
            {
                Some("Memcached keeps no snapshots (its data lives in memory only)".to_string())
            }
            settings::MAXMEMORY_POLICY if !engine.speaks_redis() => Some(
                "Memcached has no eviction policy to choose: it evicts the least recently used items when full"
                    .to_string(),
            ),
            RESTORE_FROM if updating => Some(
                "it is for provisioning only: it makes a new instance from a snapshot; provision one with it"
                    .to_string(),
            ),
            ENGINE if !updating => Some(
                "it is for updating a Redis OSS instance in place; to make a Valkey cache, provision the Valkey service"
                    .to_string(),
            ),
            ENGINE if engine == Engine::Valkey => Some(
                "Valkey caches do not move to Redis OSS (ElastiCache rolls back only Valkey 7.2 to Redis OSS 7.1, which the broker does not offer); create a Redis OSS instance instead".to_string(),
            ),
            ENGINE if engine == Engine::Memcached => Some("Memcached has one engine".to_string()),
            RESTART | TEST_FAILOVER | SNAPSHOT | DELETE_SNAPSHOT if !updating => Some(
                "it is an action of an update (PATCH); provision first, then update the instance with it"
                    .to_string(),
            ),
            _ => None,
        }
    };
    let mut names: Vec<&str> = ACTION_PARAMETERS.to_vec();
    names.push(RESTORE_FROM);
    names.push(ENGINE);
    names.push(LOG_DELIVERY);
    names.extend(settings::SETTINGS);
    match names.into_iter().filter(|p| given.contains_key(*p)).find_map(|p| why(p).map(|w| (p, w))) {
        Some((p, why)) => Err(ParameterError(format!("parameter '{p}': {why}"))),
        None => Ok(()),
    }
}

fn version_schema(plan: &Plan) -> Value {
    let allowed = plan.engine_versions.join(", ");
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            ENGINE_VERSION: {
                "description": format!(
                    "Major engine version, as a string. Allowed: {allowed}. Default: {}.",
                    plan.default_engine_version
                ),
                "type": "string",
                "enum": plan.engine_versions,
            },
            ENGINE_VERSION_ALIAS: {
                "description": format!(
                    "Another name for {ENGINE_VERSION} (both given: they must agree). Allowed: {allowed}."
                ),
                "type": "string",
                "enum": plan.engine_versions,
            }
        }
    })
}

/// Validates `parameters` against `schema`; the first problem found is
/// described so that a person knows what to send instead.
pub fn validate(plan: &Plan, schema: &Value, parameters: &Value) -> Result<(), ParameterError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ParameterError(format!("plan {} has an invalid parameter schema: {e}", plan.name)))?;
    let allowed = allowed_versions(plan, schema, parameters);
    let mut errors: Vec<String> =
        validator.iter_errors(parameters).map(|e| describe(plan, schema, &allowed, &e)).collect();
    if let (Some(a), Some(b)) = (parameters.get(ENGINE_VERSION), parameters.get(ENGINE_VERSION_ALIAS))
        && a != b
    {
        errors.push(format!(
            "parameters '{ENGINE_VERSION}' ({a}) and '{ENGINE_VERSION_ALIAS}' ({b}) name different versions; give one of them"
        ));
    }
    errors.sort();
    errors.dedup();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(ParameterError(errors.join("; "))),
    }
}

fn allowed_names(schema: &Value) -> String {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn describe(plan: &Plan, schema: &Value, allowed: &[String], e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let path = e.instance_path().to_string();
    let name = path.trim_start_matches('/').replace('/', ".");
    if !matches!(e.kind(), K::AdditionalProperties { .. })
        && let Some(said) = settings::describe(&name, e.instance().as_ref(), plan)
    {
        return said;
    }
    match e.kind() {
        K::AdditionalProperties { unexpected } => format!(
            "unknown parameter{} {} for plan {}; allowed parameters: {}",
            if unexpected.len() > 1 { "s" } else { "" },
            unexpected.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", "),
            plan.name,
            allowed_names(schema)
        ),
        K::Type { .. } if name.is_empty() => "parameters must be a JSON object".to_string(),
        _ if name == ENGINE_VERSION || name == ENGINE_VERSION_ALIAS => {
            let got = e.instance();
            let hint = match got.as_ref() {
                Value::String(s) if s.matches('.').count() > 1 => {
                    " (give the major version only, not a minor version)"
                }
                Value::String(_) => "",
                _ => " (it must be a quoted string, e.g. \"7.0\")",
            };
            let whose = if allowed == plan.engine_versions.as_slice() {
                format!("plan {}", plan.name)
            } else {
                format!("plan {} on Valkey", plan.name)
            };
            format!(
                "parameter '{name}' is {got}{hint}; {whose} allows {}",
                allowed.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
            )
        }
        _ if name == ENGINE => format!(
            "parameter '{ENGINE}' is {}; it takes \"valkey\" (to move this Redis OSS cache to Valkey in place)",
            e.instance()
        ),
        _ if name == RESTART || name == TEST_FAILOVER => {
            format!("parameter '{name}' is {}; it takes true (send it to run the action once)", e.instance())
        }
        _ if name == SNAPSHOT || name == DELETE_SNAPSHOT => match e.instance().as_ref() {
            Value::String(s) => {
                format!("parameter '{name}': {}", snapshot_name_problem(s).unwrap_or_default())
            }
            other => format!("parameter '{name}' is {other}; it takes a snapshot's name, as a string"),
        },
        _ if name == RESTORE_FROM || name.starts_with(&format!("{RESTORE_FROM}.")) => format!(
            "parameter '{RESTORE_FROM}' is {}; it takes {{\"instance_id\": \"<an instance of this service>\", \"snapshot\": \"<its snapshot's name>\" or \"{LATEST}\"}}",
            e.instance()
        ),
        _ if name == LOG_DELIVERY || name.starts_with(&format!("{LOG_DELIVERY}.")) => format!(
            "parameter '{LOG_DELIVERY}' is {}; it takes a list of \"slow-log\" and \"engine-log\", each once (or [] for none)",
            e.instance()
        ),
        _ => format!("parameter '{name}': {e}"),
    }
}

/// The engine version an instance gets: the requested one, or the plan's default.
pub fn engine_version(plan: &Plan, parameters: &Map<String, Value>) -> String {
    requested_version(parameters).map(str::to_string).unwrap_or_else(|| plan.default_engine_version.clone())
}

/// Orders major versions numerically ("7.10" after "7.2").
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let catalog = crate::catalog::CatalogFile::builtin();
        let mut plan = catalog.plans.into_iter().find(|p| p.name == "small").expect("plan small");
        plan.service_id = "s".into();
        plan.engine_versions = vec!["6.2".into(), "7.0".into(), "7.1".into()];
        plan
    }

    fn check(params: Value) -> Result<(), ParameterError> {
        let plan = plan();
        validate(&plan, &parameters_schema(Engine::Redis, &plan), &params)
    }

    #[test]
    fn an_allowed_major_version_is_accepted() {
        assert_eq!(check(json!({"engine_version": "6.2"})), Ok(()));
        assert_eq!(check(json!({})), Ok(()));
    }

    #[test]
    fn a_number_is_refused_naming_the_parameter_and_allowed_values() {
        let err = check(json!({"engine_version": 6.2})).unwrap_err().0;
        assert!(err.contains("'engine_version'"), "{err}");
        assert!(err.contains("quoted string"), "{err}");
        assert!(err.contains("\"6.2\", \"7.0\", \"7.1\""), "{err}");
    }

    #[test]
    fn a_minor_version_is_refused_with_a_hint() {
        let err = check(json!({"engine_version": "6.2.1"})).unwrap_err().0;
        assert!(err.contains("major version only"), "{err}");
        assert!(err.contains("\"6.2\", \"7.0\", \"7.1\""), "{err}");
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let err = check(json!({"engine_version": "5.0"})).unwrap_err().0;
        assert!(err.contains("\"5.0\""), "{err}");
        assert!(err.contains("allows \"6.2\""), "{err}");
    }

    #[test]
    fn an_unknown_parameter_is_refused_naming_it_and_the_allowed_ones() {
        let err = check(json!({"maxmemory": "1gb"})).unwrap_err().0;
        assert_eq!(
            err,
            "unknown parameter 'maxmemory' for plan small; allowed parameters: engine_version, engineVersion, preferred_maintenance_window, maxmemory_policy, snapshot_window, snapshot_retention_days, log_delivery"
        );
    }

    #[test]
    fn parameters_must_be_an_object() {
        let err = check(json!(["engine_version"])).unwrap_err().0;
        assert_eq!(err, "parameters must be a JSON object");
    }

    #[test]
    fn the_default_engine_version_applies_when_none_is_asked() {
        let plan = plan();
        assert_eq!(engine_version(&plan, &Map::new()), "7.1");
        let mut m = Map::new();
        m.insert(ENGINE_VERSION.into(), json!("6.2"));
        assert_eq!(engine_version(&plan, &m), "6.2");
    }

    #[test]
    fn engine_version_may_be_spelled_as_cloud_gov_documents_it() {
        assert_eq!(check(json!({"engineVersion": "6.2"})), Ok(()));
        assert_eq!(check(json!({"engineVersion": "6.2", "engine_version": "6.2"})), Ok(()));
        let plan = plan();
        let mut m = Map::new();
        m.insert(ENGINE_VERSION_ALIAS.into(), json!("6.2"));
        assert_eq!(engine_version(&plan, &m), "6.2");
    }

    #[test]
    fn both_spellings_naming_different_versions_are_refused_naming_both() {
        let err = check(json!({"engineVersion": "6.2", "engine_version": "7.0"})).unwrap_err().0;
        assert!(err.contains("'engine_version'") && err.contains("'engineVersion'"), "{err}");
        assert!(err.contains("different versions"), "{err}");
    }

    #[test]
    fn a_bad_engine_version_alias_is_refused_under_its_own_name() {
        let err = check(json!({"engineVersion": "6.2.1"})).unwrap_err().0;
        assert!(err.starts_with("parameter 'engineVersion'"), "{err}");
        assert!(err.contains("major version only"), "{err}");
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("7.10", "7.2"), Greater);
        assert_eq!(compare_versions("6.2", "7.0"), Less);
        assert_eq!(compare_versions("7.0", "7.0"), Equal);
    }
}
