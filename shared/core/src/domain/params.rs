//! Plan parameters: the JSON Schemas each plan publishes, validation of requests
//! against them (jsonschema), and errors that name the parameter and the values
//! the plan allows.

use serde_json::{Map, Value, json};

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

/// The parameter that picks the logs the cache delivers (Redis OSS, Valkey).
pub const LOG_DELIVERY: &str = "log_delivery";

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
    if engine.speaks_redis() {
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

/// Why parameters were refused; the text is shown to the developer as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParameterError(pub String);

/// Validates `parameters` against `schema`; the first problem found is
/// described so that a person knows what to send instead.
pub fn validate(plan: &Plan, schema: &Value, parameters: &Value) -> Result<(), ParameterError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ParameterError(format!("plan {} has an invalid parameter schema: {e}", plan.name)))?;
    let mut errors: Vec<String> =
        validator.iter_errors(parameters).map(|e| describe(plan, schema, &e)).collect();
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

fn describe(plan: &Plan, schema: &Value, e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let path = e.instance_path().to_string();
    let name = path.trim_start_matches('/').replace('/', ".");
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
            format!(
                "parameter '{name}' is {got}{hint}; plan {} allows {}",
                plan.name,
                plan.engine_versions.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
            )
        }
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
            "unknown parameter 'maxmemory' for plan small; allowed parameters: engine_version, engineVersion, log_delivery"
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
