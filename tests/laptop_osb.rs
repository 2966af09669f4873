//! The OSB calls a platform makes of laptop mode, as the end-to-end tests
//! make them: provision (and wait), bind, unbind, deprovision, and a read
//! of a key with a binding's credentials.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::LocalBroker;

/// A key's value, read with a client made from a binding's `credentials`
/// (over TLS, trusting their CA, when their `uri` is `rediss://`).
pub async fn redis_get(credentials: &Value, key: &str) -> redis::RedisResult<Option<String>> {
    let client = crate::clients::redis_client(credentials)?;
    let mut con = crate::clients::connection(&client).await?;
    redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut con).await
}

/// An instance laptop mode provisioned, and the ids its requests name.
pub struct Provisioned {
    pub instance: String,
    pub service_id: String,
    pub plan_id: String,
}

/// Provisions in organization `org` and space `space`, and waits for it.
pub async fn provision(b: &LocalBroker, service: &str, plan: &str, id: &str, params: Value) -> Provisioned {
    provision_in(b, service, plan, id, params, "org").await
}

/// [`provision`] in organization `org`.
pub async fn provision_in(
    b: &LocalBroker,
    service: &str,
    plan: &str,
    id: &str,
    params: Value,
    org: &str,
) -> Provisioned {
    let (service_id, plan_id) = b.plan(service, plan).await;
    let (status, body) = b
        .call(
            "PUT",
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id, "parameters": params,
                        "organization_guid": org, "space_guid": "space"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = b.wait_for(&format!("/v2/service_instances/{id}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    Provisioned { instance: id.into(), service_id, plan_id }
}

/// Binds as a platform that polls would, and gets the credentials at once:
/// laptop mode makes the user within the request.
pub async fn bind(b: &LocalBroker, p: &Provisioned, binding: &str) -> Value {
    let base = format!("/v2/service_instances/{}/service_bindings/{binding}", p.instance);
    let (status, body) = b
        .call(
            "PUT",
            &format!("{base}?accepts_incomplete=true"),
            Some(json!({"service_id": p.service_id, "plan_id": p.plan_id, "app_guid": "app-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, fetched) = b.call("GET", &base, None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched["credentials"], body["credentials"], "the bind answered with the credentials");
    body["credentials"].clone()
}

/// Unbinds; laptop mode has deleted the user when the answer comes.
pub async fn unbind(b: &LocalBroker, p: &Provisioned, binding: &str) {
    let base = format!("/v2/service_instances/{}/service_bindings/{binding}", p.instance);
    let (status, body) = b
        .call(
            "DELETE",
            &format!("{base}?accepts_incomplete=true&service_id={}&plan_id={}", p.service_id, p.plan_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let op = b.call("GET", &format!("{base}/last_operation"), None).await.1;
    assert_eq!(op["state"], "succeeded", "{op}");
}

pub async fn deprovision(b: &LocalBroker, p: &Provisioned) {
    let (status, body) = b
        .call(
            "DELETE",
            &format!(
                "/v2/service_instances/{}?accepts_incomplete=true&service_id={}&plan_id={}",
                p.instance, p.service_id, p.plan_id
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = b.wait_for(&format!("/v2/service_instances/{}/last_operation", p.instance)).await;
    assert_eq!(op["state"], "succeeded", "{op}");
}
