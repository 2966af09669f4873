//! The OSB HTTP API: one axum `Router` for every route. lambda_http runs it in
//! Lambda; a plain listener runs the same Router in laptop mode.
//!
//! Checks run in this order: basic auth (401), `X-Broker-API-Version` (400
//! when missing, 412 when unsupported), then the body and query (400), then
//! the broker's own checks (422 AsyncRequired, 409, 422 ConcurrencyError; a
//! bind, which answers at once whenever it can, is 422 AsyncRequired only
//! after the state checks, when it would have to wait).
//! Every request gets one audit log line; `X-Broker-API-Request-Identity` is
//! echoed in the response.

pub mod dashboard;
mod handlers;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tracing::{error, info, warn};

use broker_core::broker::Broker;
use broker_core::osb::OsbError;
use broker_core::osb::headers::{
    API_VERSION, ORIGINATING_IDENTITY, OriginatingIdentity, REQUEST_IDENTITY, check_api_version,
};
use broker_core::ports::{Metrics, RequestSample};

/// The platform's credentials for this broker. `Debug` hides the password.
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl BasicAuth {
    /// Compares in constant time, so the answer's timing says nothing about
    /// how much of a guess was right.
    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = user.ct_eq(self.username.as_bytes());
        let pass_ok = pass.ct_eq(self.password.expose_secret().as_bytes());
        bool::from(user_ok & pass_ok)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub auth: Arc<BasicAuth>,
    /// Every request is counted here, by route template, method and status.
    pub metrics: Arc<dyn Metrics>,
}

/// An OSB error on its way out as an HTTP response. (`OsbError` is the
/// core's; the response is this crate's.)
#[derive(Debug)]
pub struct ApiError(pub OsbError);

impl From<OsbError> for ApiError {
    fn from(e: OsbError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        match &err {
            // The cause goes to the log, never to the caller.
            OsbError::Internal(detail) => error!(error = %detail, "request failed"),
            // The caller reads it without account ids and laptop paths
            // (domain::public); the log keeps it whole.
            OsbError::Unavailable(detail) => warn!(error = %detail, "request failed; the caller may retry"),
            _ => {}
        }
        let mut response = (err.status(), axum::Json(err.body())).into_response();
        match &err {
            OsbError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"osb\""));
            }
            OsbError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(header::ALLOW, v);
                }
            }
            _ => {}
        }
        response
    }
}

/// The Router with every OSB route and the checks in front of them.
pub fn router(state: AppState) -> Router {
    use handlers::*;
    let key = Arc::new(dashboard::DashboardKey::from_secret(&state.auth.password));
    // The dashboard page is for a browser: its token stands for basic auth,
    // and it has no API version.
    let page = Router::new()
        .route(dashboard::DASHBOARD, get(dashboard::dashboard))
        .with_state(dashboard::DashboardState { broker: state.broker.clone(), key: key.clone() });
    let routes = Router::new()
        .route(CATALOG, get(catalog))
        .route(INSTANCE, get(fetch_instance).put(provision).patch(update).delete(deprovision))
        .route(INSTANCE_LAST_OPERATION, get(instance_last_operation))
        .route(BINDING, get(fetch_binding).put(bind).delete(unbind))
        .route(BINDING_LAST_OPERATION, get(binding_last_operation))
        .route(METRICS, get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Layers run outermost first: observe, then auth, then the version check.
    routes
        .layer(middleware::from_fn(api_version))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::Extension(key))
        .merge(page)
        .layer(middleware::from_fn_with_state(state, observe))
}

const CATALOG: &str = "/v2/catalog";
const INSTANCE: &str = "/v2/service_instances/{instance_id}";
const INSTANCE_LAST_OPERATION: &str = "/v2/service_instances/{instance_id}/last_operation";
const BINDING: &str = "/v2/service_instances/{instance_id}/service_bindings/{binding_id}";
const BINDING_LAST_OPERATION: &str =
    "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation";
/// The broker's own metrics in Prometheus' text format, behind the same
/// basic auth as the OSB routes but without `X-Broker-API-Version` (a
/// scraper sends none).
const METRICS: &str = "/metrics";

/// Every route, as the metrics label it.
const ROUTES: [&str; 7] = [
    CATALOG,
    INSTANCE,
    INSTANCE_LAST_OPERATION,
    BINDING,
    BINDING_LAST_OPERATION,
    METRICS,
    dashboard::DASHBOARD,
];

/// The route a request matched, as a label; "unmatched" for a 404 of the
/// fallback, so that a path never becomes a label value.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m.as_str())).copied().unwrap_or("unmatched")
}

/// The method as a label; any method HTTP does not define is "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.prometheus_text() {
        Some(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        None => ApiError(OsbError::NotFound(
            "this broker's metrics are written to CloudWatch (Embedded Metric Format on the function's log \
             stream); /metrics is served in laptop mode"
                .into(),
        ))
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError(OsbError::NotFound("no such route; the OSB API lives under /v2".into()))
}

/// 405 with the OSB body; the `Allow` header is filled in by axum from the
/// methods the route has, and restated here if it is missing.
async fn method_not_allowed(req: Request) -> Response {
    let allow = allowed_methods(req.uri().path());
    ApiError(OsbError::MethodNotAllowed { allow: allow.to_string() }).into_response()
}

fn allowed_methods(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v2", "catalog"] => "GET,HEAD",
        ["v2", "service_instances", _] => "GET,HEAD,PUT,PATCH,DELETE",
        ["v2", "service_instances", _, "service_bindings", _] => "GET,HEAD,PUT,DELETE",
        _ => "GET,HEAD",
    }
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.accepts(req.headers()) {
        next.run(req).await
    } else {
        ApiError(OsbError::Unauthorized).into_response()
    }
}

async fn api_version(req: Request, next: Next) -> Response {
    if req.uri().path() == METRICS {
        return next.run(req).await;
    }
    match req.headers().get(API_VERSION).map(|v| v.to_str().unwrap_or("")) {
        None => ApiError(OsbError::BadRequest(
            "the X-Broker-API-Version header is required; send X-Broker-API-Version: 2.17".into(),
        ))
        .into_response(),
        Some(v) => match check_api_version(v) {
            Ok(()) => next.run(req).await,
            Err(why) => ApiError(OsbError::PreconditionFailed(why)).into_response(),
        },
    }
}

/// `query` with the value of every `token` parameter blanked out.
fn without_tokens(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=[redacted]",
            _ => pair,
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One audit line per request (who, what, outcome, how long) and the request
/// identity echoed back. Never logs bodies or the Authorization header.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method: Method = req.method().clone();
    // The template, never the ids in the path: a bounded set of labels.
    let route = route_label(req.extensions().get::<MatchedPath>());
    let path = req.uri().path().to_string();
    let request_id = req.headers().get(REQUEST_IDENTITY).cloned();
    // A dashboard token opens a page: it stays out of the log.
    let query = without_tokens(req.uri().query().unwrap_or(""));
    let (platform, identity, identity_error) = match req.headers().get(ORIGINATING_IDENTITY) {
        None => (None, None, None),
        Some(v) => match OriginatingIdentity::parse(v.to_str().unwrap_or("")) {
            Ok(id) => (Some(id.platform.clone()), Some(id.value.to_string()), None),
            Err(e) => (None, None, Some(e)),
        },
    };
    // Every log line of this request, the 500's cause included, carries its id.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
    );
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    let status: StatusCode = response.status();
    let elapsed = started.elapsed();
    state.metrics.request(&RequestSample {
        route,
        method: method_label(&method),
        status: status.as_u16(),
        elapsed,
    });
    info!(
        target: "audit",
        method = %method,
        path = %path,
        query = %query,
        status = status.as_u16(),
        elapsed_ms = elapsed.as_millis() as u64,
        request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
        platform = platform.as_deref().unwrap_or("-"),
        identity = identity.as_deref().unwrap_or("-"),
        identity_error = identity_error.as_deref().unwrap_or("-"),
        "request"
    );
    if let Some(id) = request_id {
        response.headers_mut().insert(REQUEST_IDENTITY, id);
    }
    response
}
