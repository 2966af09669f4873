//! One handler per OSB route: parse the path, query and body (400 naming the
//! bad field), call the broker, and turn its fact into a status code. This is
//! the one place where outcomes become 200, 201 or 202.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use std::sync::Arc;

use axum::Extension;
use axum::http::HeaderMap;

use super::dashboard::{DashboardKey, dashboard_url};
use super::{ApiError, AppState};
use broker_core::broker::{Accepted, Bound, Provisioned, Unbound, Updated};
use broker_core::domain::now;
use broker_core::domain::{BindingId, InstanceId};
use broker_core::osb::OsbError;
use broker_core::osb::types::{AsyncResponse, Query, parse_query};

/// `{instance_id}`, parsed: 400 naming it when it is not an id.
pub struct InstancePath(InstanceId);

/// `{instance_id}` and `{binding_id}`, parsed: 400 naming the one at fault.
pub struct BindingPath(InstanceId, BindingId);

/// The path's segments as sent; a segment that is not UTF-8 once
/// percent-decoded is refused here.
async fn segments<T, S>(parts: &mut Parts, state: &S) -> Result<T, ApiError>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    let Path(raw) = Path::<T>::from_request_parts(parts, state).await.map_err(|e| {
        ApiError(OsbError::BadRequest(format!("the request path is not valid: {}", e.body_text())))
    })?;
    Ok(raw)
}

fn bad_id(e: broker_core::domain::InvalidId) -> ApiError {
    ApiError(OsbError::BadRequest(e.to_string()))
}

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<InstancePath, ApiError> {
        let raw: String = segments(parts, state).await?;
        Ok(InstancePath(InstanceId::parse(&raw).map_err(bad_id)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BindingPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<BindingPath, ApiError> {
        let (instance, binding): (String, String) = segments(parts, state).await?;
        Ok(BindingPath(
            InstanceId::parse(&instance).map_err(bad_id)?,
            BindingId::parse(&binding).map_err(bad_id)?,
        ))
    }
}

fn query(raw: Option<String>) -> Result<Query, OsbError> {
    parse_query(raw.as_deref()).map_err(OsbError::BadRequest)
}

/// Parses a JSON body; the error names the field at fault.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, OsbError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(OsbError::BadRequest("the request body must be a JSON object".into()));
    }
    let words = |e: serde_json::Error| {
        let text = e.to_string();
        // serde says "missing field `plan_id` at line 1 column 30": keep the words.
        let words = text.split(" at line ").next().unwrap_or(&text).to_string();
        OsbError::BadRequest(format!("request body: {words}"))
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(words)?;
    broker_core::osb::types::check_stored_objects(&value).map_err(OsbError::BadRequest)?;
    serde_json::from_value(value).map_err(words)
}

fn accepted(operation: String) -> Response {
    (StatusCode::ACCEPTED, Json(AsyncResponse { operation })).into_response()
}

fn empty(status: StatusCode) -> Response {
    (status, Json(json!({}))).into_response()
}

/// `GET /v2/catalog`
pub async fn catalog(State(s): State<AppState>) -> Result<Response, ApiError> {
    let body = axum::body::Bytes::from_owner(s.broker.catalog().await?);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `PUT /v2/service_instances/{instance_id}`: every answer carries the
/// instance's `dashboard_url`.
pub async fn provision(
    State(s): State<AppState>,
    Extension(key): Extension<Arc<DashboardKey>>,
    headers: HeaderMap,
    InstancePath(instance_id): InstancePath,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = body(&bytes)?;
    let dashboard_url = dashboard_url(&headers, &key, instance_id.as_str(), now());
    Ok(match s.broker.provision(&instance_id, req, &q).await? {
        // OSB's 201 body has no `operation`: the instance is there; its
        // last_operation (no operation given) tells how it was made.
        Provisioned::Created { .. } => {
            (StatusCode::CREATED, Json(json!({ "dashboard_url": dashboard_url }))).into_response()
        }
        Provisioned::Accepted { operation } => {
            (StatusCode::ACCEPTED, Json(json!({ "operation": operation, "dashboard_url": dashboard_url })))
                .into_response()
        }
        Provisioned::AlreadyExists => {
            (StatusCode::OK, Json(json!({ "dashboard_url": dashboard_url }))).into_response()
        }
    })
}

/// `PATCH /v2/service_instances/{instance_id}`
pub async fn update(
    State(s): State<AppState>,
    InstancePath(instance_id): InstancePath,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = body(&bytes)?;
    Ok(match s.broker.update(&instance_id, req, &q).await? {
        Updated::Accepted { operation } => accepted(operation),
        Updated::Unchanged => empty(StatusCode::OK),
    })
}

/// `DELETE /v2/service_instances/{instance_id}`
pub async fn deprovision(
    State(s): State<AppState>,
    InstancePath(instance_id): InstancePath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let Accepted { operation } = s.broker.deprovision(&instance_id, &q).await?;
    Ok(accepted(operation))
}

/// `GET /v2/service_instances/{instance_id}`, with a fresh `dashboard_url`.
pub async fn fetch_instance(
    State(s): State<AppState>,
    Extension(key): Extension<Arc<DashboardKey>>,
    headers: HeaderMap,
    InstancePath(instance_id): InstancePath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    query(q)?;
    let fetched = s.broker.fetch_instance(&instance_id).await?;
    let mut body = serde_json::to_value(&fetched)
        .map_err(|e| ApiError(OsbError::Internal(format!("the instance does not serialize: {e}"))))?;
    body["dashboard_url"] = json!(dashboard_url(&headers, &key, instance_id.as_str(), now()));
    Ok(Json(body).into_response())
}

/// `GET /v2/service_instances/{instance_id}/last_operation`
pub async fn instance_last_operation(
    State(s): State<AppState>,
    InstancePath(instance_id): InstancePath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(Json(s.broker.instance_last_operation(&instance_id, &q).await?).into_response())
}

/// `PUT /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
pub async fn bind(
    State(s): State<AppState>,
    BindingPath(instance_id, binding_id): BindingPath,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req = body(&bytes)?;
    Ok(match s.broker.bind(&instance_id, &binding_id, req, &q).await? {
        Bound::Created(resp) => (StatusCode::CREATED, Json(resp)).into_response(),
        Bound::Accepted { operation } => accepted(operation),
        Bound::AlreadyExists(resp) => (StatusCode::OK, Json(resp)).into_response(),
    })
}

/// `DELETE /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
pub async fn unbind(
    State(s): State<AppState>,
    BindingPath(instance_id, binding_id): BindingPath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(match s.broker.unbind(&instance_id, &binding_id, &q).await? {
        Unbound::Done => empty(StatusCode::OK),
        Unbound::Accepted { operation } => accepted(operation),
    })
}

/// `GET /v2/service_instances/{instance_id}/service_bindings/{binding_id}`
pub async fn fetch_binding(
    State(s): State<AppState>,
    BindingPath(instance_id, binding_id): BindingPath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    query(q)?;
    Ok(Json(s.broker.fetch_binding(&instance_id, &binding_id).await?).into_response())
}

/// `GET .../service_bindings/{binding_id}/last_operation`
pub async fn binding_last_operation(
    State(s): State<AppState>,
    BindingPath(instance_id, binding_id): BindingPath,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(Json(s.broker.binding_last_operation(&instance_id, &binding_id, &q).await?).into_response())
}
