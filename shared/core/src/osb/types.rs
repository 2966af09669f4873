//! OSB request and response bodies. Unknown fields in requests are ignored, as
//! the spec requires of receivers.

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::ids::{BindingId, MAX_ID_LEN, OperationId};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `PUT /v2/service_instances/{instance_id}`
#[derive(Debug, Clone, Deserialize)]
pub struct ProvisionRequest {
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub organization_guid: Option<String>,
    #[serde(default)]
    pub space_guid: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// `PATCH /v2/service_instances/{instance_id}`
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateRequest {
    pub service_id: String,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub previous_values: Option<Value>,
    #[serde(default)]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// `PUT /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
#[derive(Debug, Clone, Deserialize)]
pub struct BindRequest {
    /// Required, except in a rotation request (`predecessor_binding_id`),
    /// which may leave it to the predecessor.
    #[serde(default)]
    pub service_id: Option<String>,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub app_guid: Option<String>,
    #[serde(default)]
    pub bind_resource: Option<Value>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default, deserialize_with = "predecessor_binding_id")]
    pub predecessor_binding_id: Option<BindingId>,
}

/// `predecessor_binding_id`, refused with its own name when it is not a
/// binding id.
fn predecessor_binding_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BindingId>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => {
            BindingId::parse_field("predecessor_binding_id", &s).map(Some).map_err(serde::de::Error::custom)
        }
    }
}

/// Query parameters the routes take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub accepts_incomplete: bool,
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub operation: Option<OperationId>,
}

/// `{"operation": ...}` of a 202.
#[derive(Debug, Clone, Serialize)]
pub struct AsyncResponse {
    pub operation: String,
}

/// `last_operation` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastOperation {
    pub state: &'static str,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}

/// Fetch-instance body.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceResponse {
    pub service_id: String,
    pub plan_id: String,
    pub parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<InstanceMetadata>,
}

/// The fetch-instance `metadata`: OSB's `attributes` are the broker's own
/// key-value pairs, which a platform shows or ignores.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceMetadata {
    pub attributes: InstanceAttributes,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceAttributes {
    /// Each CloudWatch alarm on the cache's nodes and its state; absent
    /// where the backend keeps no alarms (laptop mode) or cannot say now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Vec<crate::ports::AlarmStatus>>,
    /// The cache's snapshots, newest first (Redis OSS and Valkey): named,
    /// automatic and final ones, with their status and time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<Vec<crate::domain::day2::SnapshotView>>,
    /// What the instance was restored from, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFromView>,
}

/// The snapshot an instance was made from, as fetching it shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredFromView {
    pub instance_id: String,
    pub snapshot: String,
}

/// Bind and fetch-binding body. `Debug` leaves the credentials out.
#[derive(Clone, Serialize)]
pub struct BindingResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BindingMetadata>,
    pub credentials: Value,
    pub parameters: Map<String, Value>,
    pub endpoints: Vec<EndpointObject>,
}

impl std::fmt::Debug for BindingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingResponse")
            .field("metadata", &self.metadata)
            .field("credentials", &"[redacted]")
            .field("parameters", &self.parameters)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// A binding's `metadata`: when its credentials should be renewed and when
/// they stop working (`yyyy-mm-ddThh:mm:ss.sZ`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointObject {
    pub host: String,
    pub ports: Vec<String>,
    pub protocol: &'static str,
}

/// The largest `context`, `parameters` or `bind_resource` a request may
/// carry, as compact JSON: the three together stay well inside a DynamoDB
/// item (400 KB) with the rest of the record.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// How deeply those objects may nest (the object itself is depth 1).
pub const MAX_OBJECT_DEPTH: usize = 32;
/// The request fields the broker stores as the platform sent them.
const STORED_OBJECTS: [&str; 3] = ["context", "parameters", "bind_resource"];

/// Refuses a request body whose `context`, `parameters` or `bind_resource`
/// is larger than [`MAX_OBJECT_BYTES`] or deeper than [`MAX_OBJECT_DEPTH`];
/// the message names the field, its size or depth and the limit.
pub fn check_stored_objects(body: &Value) -> Result<(), String> {
    for field in STORED_OBJECTS {
        let Some(value) = body.get(field) else { continue };
        let depth = depth(value);
        if depth > MAX_OBJECT_DEPTH {
            return Err(format!(
                "{field} nests {depth} levels deep; the broker stores at most {MAX_OBJECT_DEPTH}"
            ));
        }
        let bytes = value.to_string().len();
        if bytes > MAX_OBJECT_BYTES {
            return Err(format!(
                "{field} is {bytes} bytes as JSON; the broker stores at most {MAX_OBJECT_BYTES}"
            ));
        }
    }
    Ok(())
}

/// How deeply `value` nests: 0 for a scalar, 1 for an object or array of
/// scalars. serde_json's own recursion limit (128) bounds the recursion.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses a query string strictly: `accepts_incomplete` must be `true` or
/// `false`; empty `service_id`, `plan_id` or `operation` are refused.
pub fn parse_query(raw: Option<&str>) -> Result<Query, String> {
    let mut q = Query::default();
    let Some(raw) = raw else { return Ok(q) };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .ok_or_else(|| format!("query parameter '{k}' is not valid percent-encoding"))?;
        match k {
            "accepts_incomplete" => {
                q.accepts_incomplete = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!(
                            "query parameter 'accepts_incomplete' must be true or false, not '{other}'"
                        ));
                    }
                }
            }
            "service_id" | "plan_id" => {
                if v.is_empty() {
                    return Err(format!("query parameter '{k}' must not be empty"));
                }
                let slot = if k == "service_id" { &mut q.service_id } else { &mut q.plan_id };
                *slot = Some(v);
            }
            "operation" => {
                let id = OperationId::parse(&v).map_err(|_| {
                    format!(
                        "query parameter 'operation' must be the operation a 202 returned: 1 to \
                         {MAX_ID_LEN} characters of letters, digits, '-', '_' or '.'"
                    )
                })?;
                q.operation = Some(id);
            }
            _ => {}
        }
    }
    Ok(q)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_incomplete_must_be_true_or_false() {
        assert!(parse_query(Some("accepts_incomplete=true")).unwrap().accepts_incomplete);
        assert!(!parse_query(Some("accepts_incomplete=false")).unwrap().accepts_incomplete);
        let err = parse_query(Some("accepts_incomplete=yes")).unwrap_err();
        assert!(err.contains("accepts_incomplete"), "{err}");
        assert!(parse_query(Some("accepts_incomplete=")).is_err());
    }

    #[test]
    fn ids_are_decoded_and_must_not_be_empty() {
        let q = parse_query(Some("service_id=a%2Db&plan_id=p&operation=op-1&other=x")).unwrap();
        assert_eq!(q.service_id.as_deref(), Some("a-b"));
        assert_eq!(q.plan_id.as_deref(), Some("p"));
        assert_eq!(q.operation.as_deref(), Some("op-1"));
        assert!(parse_query(Some("plan_id=")).unwrap_err().contains("plan_id"));
    }

    #[test]
    fn a_binding_response_never_prints_its_credentials() {
        let r = BindingResponse {
            metadata: None,
            credentials: serde_json::json!({"password": "hunter2hunter2", "uri": "redis://u:hunter2hunter2@h:1"}),
            parameters: Map::new(),
            endpoints: vec![],
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_request_fields_are_ignored() {
        let r: ProvisionRequest = serde_json::from_str(
            r#"{"service_id":"s","plan_id":"p","x-vendor":{"a":1},"organization_guid":"o"}"#,
        )
        .unwrap();
        assert_eq!(r.service_id, "s");
    }
}
