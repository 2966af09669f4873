//! The OSB HTTP API, driven through the axum Router: every status code the
//! broker answers, the body each error carries, and the order of the checks
//! (basic auth, then `X-Broker-API-Version`, then the request itself, then the
//! broker's own rules such as 422 AsyncRequired, 409 and 422 ConcurrencyError).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use broker_core::domain::SpareState;
use broker_core::ports::ProviderError;
use broker_core::ports::{SecretStore, StateStore};
use broker_testing::Call;
use broker_tests::test_broker::{PASSWORD, TestBroker, USERNAME, basic, request, send};
use serde_json::{Value, json};
use tower::ServiceExt;

const REDIS: &str = "elasticache-redis";
const MEMCACHED: &str = "elasticache-memcached";
const ASYNC: &str = "accepts_incomplete=true";

// ------------------------------------------------------------------ helpers

fn instance_uri(id: &str) -> String {
    format!("/v2/service_instances/{id}")
}

fn binding_uri(instance: &str, binding: &str) -> String {
    format!("/v2/service_instances/{instance}/service_bindings/{binding}")
}

/// The body of a provision or bind request for plan `plan` of `service`
/// (with the organization and space a provision needs).
fn plan_body(tb: &TestBroker, service: &str, plan: &str) -> Value {
    let (service_id, plan_id) = tb.plan_id(service, plan);
    json!({ "service_id": service_id, "plan_id": plan_id, "organization_guid": "org-1", "space_guid": "space-1" })
}

/// Plan `plan` of `service` keeps `n` spare binding users from now on.
async fn spares(tb: &TestBroker, service: &str, plan: &str, n: u8) {
    tb.change_plan(service, plan, |p| p.spare_binding_users = n).await;
}

fn with_parameters(mut body: Value, parameters: Value) -> Value {
    body["parameters"] = parameters;
    body
}

/// `service_id=..&plan_id=..&accepts_incomplete=true`, as DELETE takes them.
fn delete_query(tb: &TestBroker, service: &str, plan: &str) -> String {
    let (service_id, plan_id) = tb.plan_id(service, plan);
    format!("service_id={service_id}&plan_id={plan_id}&{ASYNC}")
}

/// Asserts an OSB error: the status, the `error` key, a non-empty
/// description, and that the description mentions each of `mentions`.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, key: &str, mentions: &[&str]) {
    let (actual, body) = got;
    assert_eq!(*actual, status, "unexpected status; body: {body}");
    assert_eq!(body["error"], key, "unexpected error key; body: {body}");
    let description =
        body["description"].as_str().unwrap_or_else(|| panic!("the error body has no description: {body}"));
    assert!(!description.trim().is_empty(), "empty description: {body}");
    for m in mentions {
        assert!(description.contains(m), "the description {description:?} should mention {m:?}");
    }
}

/// The operation of a 202 answer.
#[track_caller]
fn accepted_operation(got: &(StatusCode, Value)) -> String {
    assert_eq!(got.0, StatusCode::ACCEPTED, "expected 202; body: {}", got.1);
    let op = got.1["operation"].as_str().unwrap_or_else(|| panic!("202 without an operation: {}", got.1));
    assert!(!op.is_empty());
    op.to_string()
}

async fn respond(tb: &TestBroker, req: Request<Body>) -> Response {
    tb.router.clone().oneshot(req).await.expect("router")
}

async fn put_instance(tb: &TestBroker, id: &str, body: Value) -> (StatusCode, Value) {
    tb.call("PUT", &format!("{}?{ASYNC}", instance_uri(id)), Some(body)).await
}

async fn patch_instance(tb: &TestBroker, id: &str, body: Value) -> (StatusCode, Value) {
    tb.call("PATCH", &format!("{}?{ASYNC}", instance_uri(id)), Some(body)).await
}

async fn delete_instance(tb: &TestBroker, id: &str, service: &str, plan: &str) -> (StatusCode, Value) {
    let uri = format!("{}?{}", instance_uri(id), delete_query(tb, service, plan));
    tb.call("DELETE", &uri, None).await
}

async fn fetch_instance(tb: &TestBroker, id: &str) -> (StatusCode, Value) {
    tb.call("GET", &instance_uri(id), None).await
}

async fn last_operation(tb: &TestBroker, id: &str) -> (StatusCode, Value) {
    tb.call("GET", &format!("{}/last_operation", instance_uri(id)), None).await
}

async fn last_operation_of(tb: &TestBroker, id: &str, operation: &str) -> (StatusCode, Value) {
    tb.call("GET", &format!("{}/last_operation?operation={operation}", instance_uri(id)), None).await
}

async fn put_binding(tb: &TestBroker, instance: &str, binding: &str, body: Value) -> (StatusCode, Value) {
    tb.call("PUT", &format!("{}?{ASYNC}", binding_uri(instance, binding)), Some(body)).await
}

async fn delete_binding(
    tb: &TestBroker,
    instance: &str,
    binding: &str,
    service: &str,
    plan: &str,
) -> (StatusCode, Value) {
    let uri = format!("{}?{}", binding_uri(instance, binding), delete_query(tb, service, plan));
    tb.call("DELETE", &uri, None).await
}

async fn fetch_binding(tb: &TestBroker, instance: &str, binding: &str) -> (StatusCode, Value) {
    tb.call("GET", &binding_uri(instance, binding), None).await
}

async fn binding_last_operation(tb: &TestBroker, instance: &str, binding: &str) -> (StatusCode, Value) {
    tb.call("GET", &format!("{}/last_operation", binding_uri(instance, binding)), None).await
}

async fn binding_last_operation_of(
    tb: &TestBroker,
    instance: &str,
    binding: &str,
    op: &str,
) -> (StatusCode, Value) {
    let uri = format!("{}/last_operation?operation={op}", binding_uri(instance, binding));
    tb.call("GET", &uri, None).await
}

#[track_caller]
fn assert_state(got: &(StatusCode, Value), state: &str) {
    assert_eq!(got.0, StatusCode::OK, "last_operation: {}", got.1);
    assert_eq!(got.1["state"], state, "last_operation: {}", got.1);
    let description = got.1["description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "last_operation without a description: {}", got.1);
}

/// Provisions `id` and runs the worker until it is ready.
async fn ready_instance(tb: &TestBroker, id: &str, service: &str, plan: &str, parameters: Value) -> Value {
    let body = with_parameters(plan_body(tb, service, plan), parameters);
    accepted_operation(&put_instance(tb, id, body.clone()).await);
    tb.drain(100).await;
    assert_state(&last_operation(tb, id).await, "succeeded");
    body
}

fn bind_body(tb: &TestBroker, service: &str, plan: &str, app_guid: &str) -> Value {
    let mut body = plan_body(tb, service, plan);
    body["app_guid"] = json!(app_guid);
    body
}

/// Binds `binding` to ready instance `instance`: at once (201) when a spare
/// user is free, else through the worker (202); then runs the worker.
async fn ready_binding(tb: &TestBroker, instance: &str, binding: &str, service: &str, plan: &str) -> Value {
    let body = bind_body(tb, service, plan, "app-1");
    let got = put_binding(tb, instance, binding, body.clone()).await;
    assert!(matches!(got.0, StatusCode::CREATED | StatusCode::ACCEPTED), "bind: {got:?}");
    tb.drain(100).await;
    assert_state(&binding_last_operation(tb, instance, binding).await, "succeeded");
    body
}

async fn put_binding_sync(
    tb: &TestBroker,
    instance: &str,
    binding: &str,
    body: Value,
) -> (StatusCode, Value) {
    tb.call("PUT", &binding_uri(instance, binding), Some(body)).await
}

async fn delete_binding_sync(
    tb: &TestBroker,
    instance: &str,
    binding: &str,
    service: &str,
    plan: &str,
) -> (StatusCode, Value) {
    let (service_id, plan_id) = tb.plan_id(service, plan);
    let uri = format!("{}?service_id={service_id}&plan_id={plan_id}", binding_uri(instance, binding));
    tb.call("DELETE", &uri, None).await
}

/// The instance's spare users, as (name, state).
async fn spare_users(tb: &TestBroker, instance: &str) -> Vec<(String, SpareState)> {
    let i = tb.store.instance(instance).await.unwrap().expect("instance");
    i.spares.into_iter().map(|s| (s.username, s.state)).collect()
}

fn ready_spares(names: &[&str]) -> Vec<(String, SpareState)> {
    names.iter().map(|n| (n.to_string(), SpareState::Ready)).collect()
}

fn raw_request(method: &str, uri: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, basic(USERNAME, PASSWORD))
        .header("x-broker-api-version", "2.17")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request")
}

// ------------------------------------------------------------------ authentication

#[tokio::test]
async fn a_request_without_basic_auth_is_401_with_a_www_authenticate_header() {
    let tb = TestBroker::new().await;
    let resp = respond(&tb, request("GET", "/v2/catalog", None, false, Some("2.17"))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers().get(header::WWW_AUTHENTICATE).expect("WWW-Authenticate header");
    assert!(challenge.to_str().unwrap().starts_with("Basic"), "{challenge:?}");

    let got = send(&tb.router, request("GET", "/v2/catalog", None, false, Some("2.17"))).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "Unauthorized", &[]);
}

#[tokio::test]
async fn wrong_credentials_are_401_whatever_is_wrong_with_them() {
    let tb = TestBroker::new().await;
    for authorization in [
        basic(USERNAME, "wrong-password"),
        basic("someone-else", PASSWORD),
        basic(USERNAME, ""),
        format!("Bearer {PASSWORD}"),
        "Basic not-base64!!".to_string(),
        basic(USERNAME, &format!("{PASSWORD}x")),
    ] {
        let req = Request::builder()
            .uri("/v2/catalog")
            .header(header::AUTHORIZATION, &authorization)
            .header("x-broker-api-version", "2.17")
            .body(Body::empty())
            .unwrap();
        let resp = respond(&tb, req).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{authorization}");
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE), "{authorization}");
    }
}

#[tokio::test]
async fn auth_is_checked_before_routing_so_unknown_routes_and_wrong_methods_are_401() {
    let tb = TestBroker::new().await;
    for (method, uri) in [
        ("GET", "/no/such/route"),
        ("GET", "/v2/nothing-here"),
        ("POST", "/v2/catalog"),
        ("POST", "/v2/service_instances/x"),
        ("DELETE", "/v2/catalog"),
    ] {
        let got = send(&tb.router, request(method, uri, None, false, Some("2.17"))).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "Unauthorized", &[]);
    }
}

#[tokio::test]
async fn auth_is_checked_before_the_api_version() {
    let tb = TestBroker::new().await;
    let got = send(&tb.router, request("GET", "/v2/catalog", None, false, None)).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "Unauthorized", &[]);
    let got = send(&tb.router, request("GET", "/v2/catalog", None, false, Some("1.0"))).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "Unauthorized", &[]);
}

// ------------------------------------------------------------------ API version

#[tokio::test]
async fn a_missing_api_version_header_is_400_naming_the_header() {
    let tb = TestBroker::new().await;
    let got = send(&tb.router, request("GET", "/v2/catalog", None, true, None)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["X-Broker-API-Version"]);
}

#[tokio::test]
async fn an_unsupported_api_version_is_412_precondition_failed() {
    let tb = TestBroker::new().await;
    for version in ["2.12", "3.0", "abc", "1.14"] {
        let got = send(&tb.router, request("GET", "/v2/catalog", None, true, Some(version))).await;
        assert_error(&got, StatusCode::PRECONDITION_FAILED, "PreconditionFailed", &[version]);
    }
}

#[tokio::test]
async fn api_versions_2_13_to_2_17_and_later_2_x_are_served() {
    let tb = TestBroker::new().await;
    for version in ["2.13", "2.17", "2.20"] {
        let (status, body) = send(&tb.router, request("GET", "/v2/catalog", None, true, Some(version))).await;
        assert_eq!(status, StatusCode::OK, "version {version}: {body}");
        assert!(body["services"].is_array());
    }
}

#[tokio::test]
async fn the_api_version_is_checked_before_routing() {
    let tb = TestBroker::new().await;
    let got = send(&tb.router, request("POST", "/v2/catalog", None, true, Some("2.12"))).await;
    assert_error(&got, StatusCode::PRECONDITION_FAILED, "PreconditionFailed", &[]);
}

// ------------------------------------------------------------------ identity headers

#[tokio::test]
async fn the_request_identity_is_echoed_in_the_response() {
    let tb = TestBroker::new().await;
    let id = "e26cfe5c-1f2b-4b8e-9e30-62f7e4c7a4b1";
    let mut req = request("GET", "/v2/catalog", None, true, Some("2.17"));
    req.headers_mut().insert("x-broker-api-request-identity", id.parse().unwrap());
    let resp = respond(&tb, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("x-broker-api-request-identity").unwrap(), id);
}

#[tokio::test]
async fn the_request_identity_is_echoed_even_on_an_error() {
    let tb = TestBroker::new().await;
    let mut req = request("GET", "/v2/catalog", None, false, Some("2.17"));
    req.headers_mut().insert("x-broker-api-request-identity", "req-42".parse().unwrap());
    let resp = respond(&tb, req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers().get("x-broker-api-request-identity").unwrap(), "req-42");
}

#[tokio::test]
async fn a_malformed_originating_identity_does_not_fail_the_request() {
    let tb = TestBroker::new().await;
    for identity in ["cloudfoundry", "cloudfoundry !!!not-base64", "kubernetes bm90IGpzb24=", " x"] {
        let mut req = request("GET", "/v2/catalog", None, true, Some("2.17"));
        req.headers_mut().insert("x-broker-api-originating-identity", identity.parse().unwrap());
        let (status, body) = send(&tb.router, req).await;
        assert_eq!(status, StatusCode::OK, "identity {identity:?}: {body}");
    }
    // A well-formed one is fine too.
    let mut req = request("GET", "/v2/catalog", None, true, Some("2.17"));
    let identity = "cloudfoundry eyJ1c2VyX2lkIjoiNjgzZWE3NDgifQ==";
    req.headers_mut().insert("x-broker-api-originating-identity", identity.parse().unwrap());
    assert_eq!(send(&tb.router, req).await.0, StatusCode::OK);
}

// ------------------------------------------------------------------ catalog

#[tokio::test]
async fn the_catalog_lists_three_services_declaring_retrievability_and_plan_updates() {
    let tb = TestBroker::new().await;
    let (status, catalog) = tb.call("GET", "/v2/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    let services = catalog["services"].as_array().expect("services");
    assert_eq!(services.len(), 3);
    for s in services {
        assert_eq!(s["instances_retrievable"], true, "{}", s["name"]);
        assert_eq!(s["bindings_retrievable"], true, "{}", s["name"]);
        assert!(s["plan_updateable"].is_boolean(), "{}", s["name"]);
        assert!(!s["plans"].as_array().unwrap().is_empty(), "{}", s["name"]);
    }
    let updateable =
        |name: &str| services.iter().find(|s| s["name"] == name).unwrap()["plan_updateable"].clone();
    assert_eq!(updateable(REDIS), true);
    assert_eq!(updateable("elasticache-valkey"), true);
    assert_eq!(updateable(MEMCACHED), false);
}

/// The body is serialized once and served from memory; a change written to
/// the store (as `catalog apply` does) shows at the very next request.
#[tokio::test]
async fn the_catalog_is_json_and_a_plan_change_shows_at_the_next_request() {
    let tb = TestBroker::new().await;
    let resp = respond(&tb, request("GET", "/v2/catalog", None, true, Some("2.17"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let description = |catalog: &Value| {
        let s = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == REDIS).unwrap();
        s["plans"].as_array().unwrap().iter().find(|p| p["name"] == "small").unwrap()["description"].clone()
    };
    let (_, before) = tb.call("GET", "/v2/catalog", None).await;
    assert_eq!(tb.call("GET", "/v2/catalog", None).await.1, before);
    tb.change_plan(REDIS, "small", |p| p.description = "Changed by catalog apply".into()).await;
    let (_, after) = tb.call("GET", "/v2/catalog", None).await;
    assert_eq!(description(&after), "Changed by catalog apply");
    assert_ne!(description(&before), description(&after));
}

#[tokio::test]
async fn the_catalog_lists_services_and_plans_in_the_order_of_the_catalog_file() {
    let tb = TestBroker::new().await;
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    let services = catalog["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["elasticache-redis", "elasticache-valkey", "elasticache-memcached"]);
    let plans: Vec<&str> =
        services[0]["plans"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(plans, ["dev", "small", "medium", "large", "ha-3", "ha-5", "cluster-3x2", "serverless"]);
}

#[tokio::test]
async fn every_catalog_plan_carries_its_schemas_and_maximum_polling_duration() {
    let tb = TestBroker::new().await;
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    let mut plans = 0;
    for s in catalog["services"].as_array().unwrap() {
        for p in s["plans"].as_array().unwrap() {
            plans += 1;
            let name = format!("{}/{}", s["name"], p["name"]);
            assert!(p["maximum_polling_duration"].as_u64().is_some_and(|d| d > 0), "{name}");
            let instance = &p["schemas"]["service_instance"];
            for action in ["create", "update"] {
                let schema = &instance[action]["parameters"];
                assert_eq!(schema["type"], "object", "{name} {action}");
                assert!(schema["properties"]["engine_version"]["enum"].is_array(), "{name} {action}");
            }
            assert!(p["schemas"]["service_binding"]["create"]["parameters"].is_object(), "{name}");
        }
    }
    assert_eq!(plans, 15);
    let (_, small) = tb.plan_id(REDIS, "small");
    let redis_small = catalog["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["plans"].as_array().unwrap())
        .find(|p| p["id"] == small.as_str())
        .expect("redis small is in the catalog")
        .clone();
    assert_eq!(
        redis_small["schemas"]["service_instance"]["create"]["parameters"]["properties"]["engine_version"]["enum"],
        json!(["6.0", "6.2", "7.0", "7.1"])
    );
}

// ------------------------------------------------------------------ 404 and 405

#[tokio::test]
async fn a_wrong_method_is_405_with_an_allow_header_and_an_osb_error_body() {
    let tb = TestBroker::new().await;
    for (method, uri, must_allow) in [
        ("POST", "/v2/catalog", vec!["GET"]),
        ("DELETE", "/v2/catalog", vec!["GET"]),
        ("POST", "/v2/service_instances/x", vec!["GET", "PUT", "PATCH", "DELETE"]),
        ("PATCH", "/v2/service_instances/x/service_bindings/b", vec!["GET", "PUT", "DELETE"]),
    ] {
        let resp = respond(&tb, request(method, uri, None, true, Some("2.17"))).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .unwrap_or_else(|| panic!("{method} {uri}: no Allow header"))
            .to_str()
            .unwrap()
            .to_string();
        for m in must_allow {
            assert!(allow.split(',').any(|a| a.trim() == m), "{method} {uri}: Allow {allow:?} lacks {m}");
        }
        assert!(!allow.split(',').any(|a| a.trim() == method), "{method} {uri}: Allow {allow:?}");
        let got = send(&tb.router, request(method, uri, None, true, Some("2.17"))).await;
        assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &[]);
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_with_a_json_error_body() {
    let tb = TestBroker::new().await;
    for uri in ["/v2/nothing", "/v1/catalog", "/", "/v2/service_instances/x/service_bindings"] {
        let got = tb.call("GET", uri, None).await;
        assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &[]);
    }
}

// ------------------------------------------------------------------ provision: 400

/// Ids are parsed where the request enters, for every route, before the
/// broker sees them: 400 naming the id at fault, and nothing recorded.
#[tokio::test]
async fn an_id_that_is_not_one_is_400_naming_it_on_every_route_and_records_nothing() {
    let tb = TestBroker::new().await;
    let long = "x".repeat(129);
    for bad in ["a%2Fb", "a%20b", "%C3%A9", "..%2Fetc", long.as_str()] {
        let instance = instance_uri(bad);
        let body = plan_body(&tb, REDIS, "small");
        for (method, uri, body) in [
            ("PUT", format!("{instance}?{ASYNC}"), Some(body.clone())),
            ("PATCH", format!("{instance}?{ASYNC}"), Some(body.clone())),
            ("DELETE", format!("{instance}?{}", delete_query(&tb, REDIS, "small")), None),
            ("GET", instance.clone(), None),
            ("GET", format!("{instance}/last_operation"), None),
            ("PUT", format!("{}?{ASYNC}", binding_uri(bad, "b-1")), Some(body.clone())),
            ("GET", binding_uri(bad, "b-1"), None),
        ] {
            let got = tb.call(method, &uri, body).await;
            assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["instance_id must be 1 to 128"]);
        }
        for (method, uri, body) in [
            ("PUT", format!("{}?{ASYNC}", binding_uri("i-1", bad)), Some(body.clone())),
            ("DELETE", format!("{}?{}", binding_uri("i-1", bad), delete_query(&tb, REDIS, "small")), None),
            ("GET", binding_uri("i-1", bad), None),
            ("GET", format!("{}/last_operation", binding_uri("i-1", bad)), None),
        ] {
            let got = tb.call(method, &uri, body).await;
            assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["binding_id must be 1 to 128"]);
        }
    }
    // A segment that is not UTF-8 once decoded is refused before any id rule.
    let got = tb.call("GET", &instance_uri("%FF"), None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["request path"]);
    // The operation a platform echoes, and a rotation's predecessor.
    let got = tb.call("GET", &format!("{}/last_operation?operation=a%2Fb", instance_uri("i-1")), None).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["'operation'"]);
    let got = tb
        .call(
            "PUT",
            &format!("{}?{ASYNC}", binding_uri("i-1", "b-2")),
            Some(json!({"predecessor_binding_id": "a/b"})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["predecessor_binding_id must be 1 to 128"]);
    assert!(tb.store.instances().await.unwrap().is_empty());
}

/// What the broker stores as the platform sent it has limits: a context,
/// parameters or bind_resource over 64 KB or nested over 32 levels is a
/// 400 naming the field and the limit, and nothing is recorded. An
/// operation longer than an id may be is a 400 too (it would be a key).
#[tokio::test]
async fn objects_too_large_or_too_deep_to_store_are_400_naming_the_field_and_the_limit() {
    let tb = TestBroker::new().await;
    let big = json!({ "blob": "x".repeat(70_000) });
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let provision = |field: &str, value: &Value| {
        let mut body = plan_body(&tb, REDIS, "small");
        body[field] = value.clone();
        body
    };
    for (field, value, mentions) in [
        ("context", &big, ["context is 70", "at most 65536"]),
        ("parameters", &big, ["parameters is 70", "at most 65536"]),
        ("context", &deep, ["context nests 40 levels", "at most 32"]),
        ("parameters", &deep, ["parameters nests 40 levels", "at most 32"]),
    ] {
        let got = put_instance(&tb, "i-1", provision(field, value)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &mentions);
    }
    assert!(tb.store.instances().await.unwrap().is_empty(), "nothing recorded");

    // 32 levels are fine.
    let mut ok = json!("bottom");
    for _ in 0..32 {
        ok = json!({ "a": ok });
    }
    let (status, body) = put_instance(&tb, "i-1", provision("context", &ok)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    tb.drain(100).await;

    let mut bind = bind_body(&tb, REDIS, "small", "app-1");
    bind["bind_resource"] = json!({ "app_guid": "app-1", "extra": "x".repeat(70_000) });
    let got = put_binding(&tb, "i-1", "b-1", bind).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["bind_resource is 70", "at most 65536"]);
    assert!(tb.store.bindings("i-1").await.unwrap().is_empty(), "no binding recorded");

    let long = "o".repeat(3000);
    let got = last_operation_of(&tb, "i-1", &long).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["'operation'"]);
}

#[tokio::test]
async fn provision_without_service_id_is_400_naming_service_id() {
    let tb = TestBroker::new().await;
    let (_, plan_id) = tb.plan_id(REDIS, "small");
    let got = put_instance(&tb, "i-1", json!({ "plan_id": plan_id })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["service_id"]);
}

#[tokio::test]
async fn provision_without_plan_id_is_400_naming_plan_id() {
    let tb = TestBroker::new().await;
    let (service_id, _) = tb.plan_id(REDIS, "small");
    let got = put_instance(&tb, "i-1", json!({ "service_id": service_id })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["plan_id"]);
}

#[tokio::test]
async fn provision_without_an_organization_or_space_guid_is_400_naming_it_and_creates_nothing() {
    let tb = TestBroker::new().await;
    for (field, value) in [
        ("organization_guid", None),
        ("organization_guid", Some(json!(""))),
        ("space_guid", None),
        ("space_guid", Some(json!(" "))),
    ] {
        let mut body = plan_body(&tb, REDIS, "small");
        match value {
            None => body.as_object_mut().unwrap().remove(field),
            Some(v) => body.as_object_mut().unwrap().insert(field.to_string(), v),
        };
        let got = put_instance(&tb, "i-1", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &[field]);
    }
    assert!(tb.store.instance("i-1").await.unwrap().is_none(), "no instance is recorded");
    assert!(tb.drain(10).await.is_empty(), "no job is queued");
}

#[tokio::test]
async fn the_engine_version_may_be_given_as_engine_version_or_engine_version_camel_case() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({"engineVersion": "6.2"})).await;
    assert_eq!(tb.store.instance("i-1").await.unwrap().unwrap().engine_version, "6.2");
    ready_instance(&tb, "i-2", REDIS, "small", json!({"engineVersion": "6.0", "engine_version": "6.0"}))
        .await;
    assert_eq!(tb.store.instance("i-2").await.unwrap().unwrap().engine_version, "6.0");
    let body = with_parameters(
        plan_body(&tb, REDIS, "small"),
        json!({"engineVersion": "6.2", "engine_version": "7.0"}),
    );
    let got = put_instance(&tb, "i-3", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["'engine_version'", "'engineVersion'"]);
    // An update in the other spelling replaces the first.
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({"engine_version": "7.0"}));
    accepted_operation(&patch_instance(&tb, "i-1", body).await);
    tb.drain(100).await;
    let (_, fetched) = fetch_instance(&tb, "i-1").await;
    assert_eq!(fetched["parameters"], json!({"engine_version": "7.0"}));
}

#[tokio::test]
async fn provision_with_a_body_that_is_not_json_is_400() {
    let tb = TestBroker::new().await;
    let uri = format!("{}?{ASYNC}", instance_uri("i-1"));
    for body in ["{\"service_id\": ", "not json", ""] {
        let got = send(&tb.router, raw_request("PUT", &uri, body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &[]);
    }
}

#[tokio::test]
async fn provision_of_an_unknown_plan_is_400_naming_plan_id() {
    let tb = TestBroker::new().await;
    let (service_id, _) = tb.plan_id(REDIS, "small");
    let got = put_instance(&tb, "i-1", json!({ "service_id": service_id, "plan_id": "no-such-plan", "organization_guid": "o", "space_guid": "s" })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["plan_id", "no-such-plan"]);
    // A plan of another service is unknown to this one.
    let (_, memcached_plan) = tb.plan_id(MEMCACHED, "dev");
    let got = put_instance(&tb, "i-1", json!({ "service_id": service_id, "plan_id": memcached_plan, "organization_guid": "o", "space_guid": "s" })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["plan_id"]);
}

#[tokio::test]
async fn provision_of_an_unknown_service_is_400_naming_service_id() {
    let tb = TestBroker::new().await;
    let (_, plan_id) = tb.plan_id(REDIS, "small");
    let got = put_instance(&tb, "i-1", json!({ "service_id": "no-such-service", "plan_id": plan_id, "organization_guid": "o", "space_guid": "s" })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["service_id"]);
}

#[tokio::test]
async fn provision_with_an_engine_version_that_is_not_an_offered_major_string_is_400_listing_the_offered_ones()
 {
    let tb = TestBroker::new().await;
    for bad in [json!(6.2), json!("6.2.1"), json!("5.0"), json!(7)] {
        let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "engine_version": bad }));
        let got = put_instance(&tb, "i-1", body).await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &["engine_version", "\"6.2\"", "\"7.0\"", "\"7.1\""],
        );
    }
    assert_eq!(fetch_instance(&tb, "i-1").await.0, StatusCode::NOT_FOUND, "nothing was recorded");
}

#[tokio::test]
async fn provision_with_an_unknown_parameter_is_400_naming_it() {
    let tb = TestBroker::new().await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "maxmemory": "1gb" }));
    let got = put_instance(&tb, "i-1", body).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &["maxmemory", "engine_version", "maxmemory_policy"],
    );
}

#[tokio::test]
async fn provision_with_parameters_that_are_not_an_object_is_400() {
    let tb = TestBroker::new().await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!(["engine_version", "7.1"]));
    let got = put_instance(&tb, "i-1", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["parameters"]);
}

#[tokio::test]
async fn provision_with_accepts_incomplete_not_true_or_false_is_400_naming_it() {
    let tb = TestBroker::new().await;
    let body = plan_body(&tb, REDIS, "small");
    let got = tb.call("PUT", "/v2/service_instances/i-1?accepts_incomplete=yes", Some(body)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["accepts_incomplete"]);
}

#[tokio::test]
async fn instance_ids_outside_letters_digits_dot_dash_underscore_or_over_128_chars_are_400() {
    let tb = TestBroker::new().await;
    let long = "a".repeat(129);
    for id in ["a%2Fb", "bad!id", "a%20b", "caf%C3%A9", long.as_str()] {
        let got = put_instance(&tb, id, plan_body(&tb, REDIS, "small")).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["instance_id"]);
    }
    let longest = "a".repeat(128);
    let ok = put_instance(&tb, &longest, plan_body(&tb, REDIS, "small")).await;
    accepted_operation(&ok);
    accepted_operation(&put_instance(&tb, "A.b_c-9", plan_body(&tb, REDIS, "small")).await);
}

// ------------------------------------------------------------------ provision: 422

#[tokio::test]
async fn provision_without_accepts_incomplete_is_422_async_required() {
    let tb = TestBroker::new().await;
    for uri in ["/v2/service_instances/i-1", "/v2/service_instances/i-1?accepts_incomplete=false"] {
        let got = tb.call("PUT", uri, Some(plan_body(&tb, REDIS, "small"))).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "AsyncRequired", &["accepts_incomplete=true"]);
    }
    assert!(tb.drain(10).await.is_empty(), "no job was enqueued");
}

#[tokio::test]
async fn a_bad_provision_request_without_accepts_incomplete_is_400_not_422() {
    let tb = TestBroker::new().await;
    let (service_id, _) = tb.plan_id(REDIS, "small");
    let cases = [
        ("i-1", json!({ "service_id": service_id }), "plan_id"),
        (
            "i-1",
            json!({ "service_id": service_id, "plan_id": "nope", "organization_guid": "o", "space_guid": "s" }),
            "plan_id",
        ),
        ("i-1", json!({ "service_id": service_id, "plan_id": "nope" }), "organization_guid"),
        ("i-1", with_parameters(plan_body(&tb, REDIS, "small"), json!({ "x": 1 })), "'x'"),
        ("bad!id", plan_body(&tb, REDIS, "small"), "instance_id"),
    ];
    for (id, body, field) in cases {
        let got = tb.call("PUT", &instance_uri(id), Some(body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &[field]);
    }
}

#[tokio::test]
async fn provision_with_another_maintenance_info_version_is_422_maintenance_info_conflict() {
    let tb = TestBroker::new().await;
    let mut body = plan_body(&tb, REDIS, "small");
    body["maintenance_info"] = json!({ "version": "0.9.0" });
    let got = put_instance(&tb, "i-1", body.clone()).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "MaintenanceInfoConflict", &["0.9.0"]);

    body["maintenance_info"] = json!({ "version": "1.0.0" });
    accepted_operation(&put_instance(&tb, "i-1", body).await);
}

// ------------------------------------------------------------------ provision: 202, 200, 409

#[tokio::test]
async fn first_provision_is_202_with_an_operation_in_progress() {
    let tb = TestBroker::new().await;
    let op = accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    assert_state(&last_operation(&tb, "i-1").await, "in progress");
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "in progress");
}

#[tokio::test]
async fn an_identical_provision_while_in_progress_is_202_with_the_same_operation() {
    let tb = TestBroker::new().await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "engine_version": "7.0" }));
    let first = accepted_operation(&put_instance(&tb, "i-1", body.clone()).await);
    let again = accepted_operation(&put_instance(&tb, "i-1", body).await);
    assert_eq!(first, again);
}

#[tokio::test]
async fn an_identical_provision_after_the_worker_finished_is_200_with_only_its_dashboard_url() {
    let tb = TestBroker::new().await;
    let body = ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let (status, answer) = put_instance(&tb, "i-1", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dashboard_url"], "{answer}");
    assert!(answer["dashboard_url"].as_str().unwrap().starts_with("http://127.0.0.1/dashboard/i-1?token="));
}

#[tokio::test]
async fn provisioning_an_existing_id_with_another_plan_or_parameters_is_409() {
    let tb = TestBroker::new().await;
    // While it is being provisioned ...
    accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    let got = put_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &["i-1"]);
    // ... and once it is ready.
    tb.drain(100).await;
    let got = put_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &["i-1"]);
    let other_params = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "engine_version": "6.2" }));
    let got = put_instance(&tb, "i-1", other_params).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &["i-1"]);
    let other_service = plan_body(&tb, MEMCACHED, "dev");
    let got = put_instance(&tb, "i-1", other_service).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &[]);
}

// ------------------------------------------------------------------ last_operation

#[tokio::test]
async fn last_operation_of_an_unknown_instance_is_404() {
    let tb = TestBroker::new().await;
    let got = last_operation(&tb, "nobody").await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["nobody"]);
}

#[tokio::test]
async fn last_operation_is_in_progress_then_succeeded_with_a_description_once_the_worker_ran() {
    let tb = TestBroker::new().await;
    let op = accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "in progress");
    tb.drain(100).await;
    let got = last_operation_of(&tb, "i-1", &op).await;
    assert_state(&got, "succeeded");
    assert_state(&last_operation(&tb, "i-1").await, "succeeded");
}

#[tokio::test]
async fn last_operation_with_the_operation_of_another_instance_is_400() {
    let tb = TestBroker::new().await;
    accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    let other = accepted_operation(&put_instance(&tb, "i-2", plan_body(&tb, REDIS, "small")).await);
    let got = last_operation_of(&tb, "i-1", &other).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &[other.as_str()]);
    let got = last_operation_of(&tb, "i-1", "no-such-operation").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["no-such-operation"]);
}

// ------------------------------------------------------------------ fetch instance

#[tokio::test]
async fn fetching_an_instance_is_404_while_it_is_being_provisioned() {
    let tb = TestBroker::new().await;
    accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    let got = fetch_instance(&tb, "i-1").await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["i-1"]);
    let got = fetch_instance(&tb, "nobody").await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["nobody"]);
}

#[tokio::test]
async fn fetching_a_provisioned_instance_gives_its_service_plan_and_parameters() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({ "engine_version": "7.0" })).await;
    let (status, body) = fetch_instance(&tb, "i-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    assert_eq!(body["service_id"], service_id.as_str());
    assert_eq!(body["plan_id"], plan_id.as_str());
    assert_eq!(body["parameters"], json!({ "engine_version": "7.0" }));
    assert_eq!(body["maintenance_info"]["version"], "1.0.0");
}

#[tokio::test]
async fn fetching_an_instance_while_it_is_being_updated_is_422_concurrency_error() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    accepted_operation(&patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await);
    let got = fetch_instance(&tb, "i-1").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", &["i-1"]);
}

// ------------------------------------------------------------------ update

#[tokio::test]
async fn updating_an_unknown_instance_is_404() {
    let tb = TestBroker::new().await;
    let got = patch_instance(&tb, "nobody", plan_body(&tb, REDIS, "medium")).await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["nobody"]);
}

#[tokio::test]
async fn a_plan_change_within_the_service_is_202_then_succeeds_and_fetch_shows_the_new_plan() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let op = accepted_operation(&patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await);
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "in progress");
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "succeeded");
    let (status, body) = fetch_instance(&tb, "i-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["plan_id"], tb.plan_id(REDIS, "medium").1.as_str());
}

#[tokio::test]
async fn a_repeated_identical_update_while_in_progress_is_202_with_the_same_operation_and_another_is_422() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let first = accepted_operation(&patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await);
    let again = accepted_operation(&patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await);
    assert_eq!(first, again);
    let got = patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "large")).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", &["i-1"]);
}

#[tokio::test]
async fn a_memcached_plan_change_is_422_plan_change_not_supported_and_not_repeatable() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "m-1", MEMCACHED, "dev", json!({})).await;
    let (status, body) = patch_instance(&tb, "m-1", plan_body(&tb, MEMCACHED, "small")).await;
    assert_error(
        &(status, body.clone()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "PlanChangeNotSupported",
        &["Memcached"],
    );
    assert_eq!(body["update_repeatable"], false, "{body}");
    assert_eq!(fetch_instance(&tb, "m-1").await.1["plan_id"], tb.plan_id(MEMCACHED, "dev").1.as_str());
}

#[tokio::test]
async fn changing_between_cluster_mode_and_non_cluster_redis_plans_is_422_either_way() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "small-1", REDIS, "small", json!({})).await;
    ready_instance(&tb, "cluster-1", REDIS, "cluster-3x2", json!({})).await;
    for (id, to) in [("small-1", "cluster-3x2"), ("cluster-1", "small")] {
        let (status, body) = patch_instance(&tb, id, plan_body(&tb, REDIS, to)).await;
        assert_error(
            &(status, body.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PlanChangeNotSupported",
            &[to],
        );
        assert_eq!(body["update_repeatable"], false, "{body}");
    }
}

#[tokio::test]
async fn an_engine_version_downgrade_is_400_naming_the_running_version_and_what_to_ask_for() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({ "engine_version": "7.0" })).await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "engine_version": "6.2" }));
    let (status, answer) = patch_instance(&tb, "i-1", body).await;
    assert_error(&(status, answer.clone()), StatusCode::BAD_REQUEST, "BadRequest", &[]);
    assert_eq!(
        answer["description"],
        "parameter 'engine_version' is \"6.2\", older than the redis 7.0 instance i-1 runs; ElastiCache only upgrades, so ask for 7.0 or 7.1"
    );
}

#[tokio::test]
async fn an_engine_version_upgrade_is_accepted() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({ "engine_version": "7.0" })).await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "engine_version": "7.1" }));
    accepted_operation(&patch_instance(&tb, "i-1", body).await);
    tb.drain(100).await;
    assert_eq!(fetch_instance(&tb, "i-1").await.1["parameters"]["engine_version"], "7.1");
}

#[tokio::test]
async fn an_update_with_the_same_plan_and_parameters_is_200_with_an_empty_object() {
    let tb = TestBroker::new().await;
    let body = ready_instance(&tb, "i-1", REDIS, "small", json!({ "engine_version": "7.0" })).await;
    let (status, answer) = patch_instance(&tb, "i-1", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({}));
    assert!(tb.drain(10).await.is_empty(), "nothing to do, so no job");
}

#[tokio::test]
async fn an_update_without_accepts_incomplete_is_422_async_required() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let got = tb.call("PATCH", &instance_uri("i-1"), Some(plan_body(&tb, REDIS, "medium"))).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "AsyncRequired", &["accepts_incomplete"]);
}

#[tokio::test]
async fn an_update_with_an_unknown_parameter_is_400_naming_it() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let body = with_parameters(plan_body(&tb, REDIS, "small"), json!({ "shards": 4 }));
    let got = patch_instance(&tb, "i-1", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["shards"]);
}

// ------------------------------------------------------------------ deprovision

#[tokio::test]
async fn deprovision_without_service_id_or_plan_id_is_400_naming_it() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let uri = format!("{}?plan_id={plan_id}&{ASYNC}", instance_uri("i-1"));
    assert_error(
        &tb.call("DELETE", &uri, None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &["service_id"],
    );
    let uri = format!("{}?service_id={service_id}&{ASYNC}", instance_uri("i-1"));
    assert_error(&tb.call("DELETE", &uri, None).await, StatusCode::BAD_REQUEST, "BadRequest", &["plan_id"]);
    // The query is checked before the instance is looked up.
    let uri = format!("{}?{ASYNC}", instance_uri("nobody"));
    assert_error(
        &tb.call("DELETE", &uri, None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &["service_id"],
    );
}

#[tokio::test]
async fn deprovisioning_an_unknown_instance_is_410_gone() {
    let tb = TestBroker::new().await;
    let got = delete_instance(&tb, "nobody", REDIS, "small").await;
    assert_error(&got, StatusCode::GONE, "Gone", &["nobody"]);
}

#[tokio::test]
async fn deprovision_without_accepts_incomplete_is_422_async_required() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let uri = format!("{}?service_id={service_id}&plan_id={plan_id}", instance_uri("i-1"));
    let got = tb.call("DELETE", &uri, None).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "AsyncRequired", &["accepts_incomplete"]);
}

#[tokio::test]
async fn deprovisioning_a_ready_instance_is_202_then_succeeds_and_the_record_still_answers_last_operation() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let op = accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    assert_state(&last_operation(&tb, "i-1").await, "in progress");
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "succeeded");
    assert!(tb.provider.caches().is_empty(), "the cache is deleted");
    // A platform that polls late still hears "succeeded".
    assert_state(&last_operation(&tb, "i-1").await, "succeeded");
    assert_state(&last_operation(&tb, "i-1").await, "succeeded");
    assert_error(&fetch_instance(&tb, "i-1").await, StatusCode::NOT_FOUND, "NotFound", &["i-1"]);
    // Deleting it again: there is nothing left.
    let got = delete_instance(&tb, "i-1", REDIS, "small").await;
    assert_error(&got, StatusCode::GONE, "Gone", &["i-1"]);
}

#[tokio::test]
async fn a_deprovisioned_id_can_be_provisioned_again() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    tb.drain(100).await;
    ready_instance(&tb, "i-1", REDIS, "medium", json!({})).await;
    assert_eq!(fetch_instance(&tb, "i-1").await.1["plan_id"], tb.plan_id(REDIS, "medium").1.as_str());
}

#[tokio::test]
async fn a_delete_while_the_delete_is_in_progress_is_202_with_the_same_operation() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let first = accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    let again = accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    assert_eq!(first, again);
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &first).await, "succeeded");
}

#[tokio::test]
async fn a_delete_during_an_update_is_422_concurrency_error() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    accepted_operation(&patch_instance(&tb, "i-1", plan_body(&tb, REDIS, "medium")).await);
    let got = delete_instance(&tb, "i-1", REDIS, "small").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", &["i-1"]);
}

#[tokio::test]
async fn a_delete_during_provisioning_cancels_the_provision_and_removes_everything() {
    let tb = TestBroker::new().await;
    let provision = accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    let deprovision = accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    assert_ne!(provision, deprovision);
    tb.drain(100).await;

    let (status, body) = last_operation_of(&tb, "i-1", &provision).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed", "{body}");
    assert!(body["description"].as_str().unwrap().contains("cancelled"), "{body}");
    assert_state(&last_operation_of(&tb, "i-1", &deprovision).await, "succeeded");
    assert_state(&last_operation(&tb, "i-1").await, "succeeded");
    assert!(tb.provider.caches().is_empty(), "caches left: {:?}", tb.provider.caches());
}

// ------------------------------------------------------------------ bind

#[tokio::test]
async fn binding_to_an_unknown_instance_is_404() {
    let tb = TestBroker::new().await;
    let got = put_binding(&tb, "nobody", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["nobody"]);
}

#[tokio::test]
async fn binding_to_an_instance_still_being_provisioned_is_422_concurrency_error() {
    let tb = TestBroker::new().await;
    accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, REDIS, "small")).await);
    let got = put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", &["i-1"]);
}

#[tokio::test]
async fn bind_with_any_parameter_is_400_naming_it() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let body = with_parameters(bind_body(&tb, REDIS, "small", "app-1"), json!({ "read_only": true }));
    let got = put_binding(&tb, "i-1", "b-1", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["read_only"]);
    // Empty parameters are fine.
    let body = with_parameters(bind_body(&tb, REDIS, "small", "app-1"), json!({}));
    assert_eq!(put_binding(&tb, "i-1", "b-1", body).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn binding_ids_outside_the_safe_alphabet_are_400() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let got = put_binding(&tb, "i-1", "b%2F1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["binding_id"]);
}

// --------------------------------------- bind: spare users (users take time, as in ElastiCache)

#[tokio::test]
async fn a_redis_instance_is_provisioned_with_its_plans_spare_users_ready() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    // Made with the cache (in the user group it creates), each with a secret.
    assert_eq!(spare_users(&tb, "i-1").await, ready_spares(&["s-1", "s-2"]));
    assert_eq!(tb.provider.users("i-1"), ["s-1", "s-2"]);
    let i = tb.store.instance("i-1").await.unwrap().unwrap();
    for s in &i.spares {
        let secret = s.secret.as_deref().expect("a secret");
        assert!(tb.secrets.read(secret, broker_core::ports::Stage::Current).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_bind_without_accepts_incomplete_claims_a_spare_user_and_is_201_with_its_credentials() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let spare_secret = tb.store.instance("i-1").await.unwrap().unwrap().spares[0].secret.clone().unwrap();
    let calls_before = tb.provider.calls().len();

    let (status, body) = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    let c = &body["credentials"];
    assert_eq!(c["username"], "s-1");
    let password = tb.secrets.read(&spare_secret, broker_core::ports::Stage::Current).await.unwrap().unwrap();
    assert_eq!(c["password"], secrecy::ExposeSecret::expose_secret(&password));
    assert_eq!(c["CACHE_USERNAME"], "s-1");
    // The claim asked nothing of the cache.
    assert_eq!(tb.provider.calls().len(), calls_before, "{:?}", &tb.provider.calls()[calls_before..]);
    let b = tb.store.binding("i-1", "b-1").await.unwrap().unwrap();
    assert!(b.from_spare);
    assert_eq!(b.secret.as_deref(), Some(spare_secret.as_str()));
    assert_state(&binding_last_operation(&tb, "i-1", "b-1").await, "succeeded");
    assert_eq!(fetch_binding(&tb, "i-1", "b-1").await.1["credentials"], body["credentials"]);
}

#[tokio::test]
async fn a_bind_with_accepts_incomplete_is_201_too_when_a_spare_is_free() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let (status, body) = put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["credentials"]["password"].is_string(), "{body}");
}

#[tokio::test]
async fn the_worker_makes_a_new_spare_for_each_one_claimed_and_schedules_the_claimed_ones_rotation() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    for b in ["b-1", "b-2"] {
        assert_eq!(put_binding_sync(&tb, "i-1", b, bind_body(&tb, REDIS, "small", "app-1")).await.0, 201);
    }
    assert!(spare_users(&tb, "i-1").await.is_empty(), "both spares are claimed");

    tb.drain(100).await;

    assert_eq!(spare_users(&tb, "i-1").await, ready_spares(&["s-3", "s-4"]));
    let i = tb.store.instance("i-1").await.unwrap().unwrap();
    assert_eq!(i.spares_operation, None, "the spares operation ended");
    assert!(i.spares_to_schedule.is_empty());
    for b in ["b-1", "b-2"] {
        let secret = tb.store.binding("i-1", b).await.unwrap().unwrap().secret.unwrap();
        let info = tb.secrets.describe(&secret).await.unwrap();
        assert_eq!(info.rotation_days, Some(30), "{b}'s password rotates on the schedule");
    }
    // Unclaimed spares are not on the schedule: nobody holds their password.
    let spare = i.spares[0].secret.clone().unwrap();
    assert_eq!(tb.secrets.describe(&spare).await.unwrap().rotation_days, None);
    // The users made for them carry the plan's rules, like any binding's.
    assert!(tb.provider.users("i-1").contains(&"s-3".to_string()));
}

#[tokio::test]
async fn with_no_spare_free_a_bind_without_accepts_incomplete_is_422_saying_why_and_makes_nothing() {
    let tb = TestBroker::new().await;
    spares(&tb, REDIS, "small", 1).await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    assert_eq!(put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await.0, 201);

    let got = put_binding_sync(&tb, "i-1", "b-2", bind_body(&tb, REDIS, "small", "app-2")).await;

    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "AsyncRequired",
        &["accepts_incomplete=true", "spare"],
    );
    assert!(tb.store.binding("i-1", "b-2").await.unwrap().is_none(), "no binding is recorded");
    // Once the worker has made a new spare, the same request succeeds.
    tb.drain(100).await;
    let (status, body) = put_binding_sync(&tb, "i-1", "b-2", bind_body(&tb, REDIS, "small", "app-2")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["credentials"]["username"], "s-2");
}

#[tokio::test]
async fn a_plan_without_spare_users_says_so_and_binds_through_the_worker_when_the_platform_polls() {
    let tb = TestBroker::new().await;
    spares(&tb, REDIS, "small", 0).await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    assert!(spare_users(&tb, "i-1").await.is_empty());

    let got = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "AsyncRequired", &["spare_binding_users is 0"]);

    let body = bind_body(&tb, REDIS, "small", "app-1");
    let first = accepted_operation(&put_binding(&tb, "i-1", "b-1", body.clone()).await);
    let again = accepted_operation(&put_binding(&tb, "i-1", "b-1", body.clone()).await);
    assert_eq!(first, again);
    // Repeated without accepts_incomplete while it runs: the platform must poll.
    let got = put_binding_sync(&tb, "i-1", "b-1", body).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "AsyncRequired", &["being created"]);
    assert_state(&binding_last_operation(&tb, "i-1", "b-1").await, "in progress");
    assert_error(&fetch_binding(&tb, "i-1", "b-1").await, StatusCode::NOT_FOUND, "NotFound", &["b-1"]);
    tb.drain(100).await;
    assert_state(&binding_last_operation_of(&tb, "i-1", "b-1", &first).await, "succeeded");
    let (status, fetched) = fetch_binding(&tb, "i-1", "b-1").await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert!(fetched["credentials"]["username"].as_str().unwrap().starts_with("b-"), "{fetched}");
    // Once made, the same bind is 200 with the same credentials; another app's is 409.
    let (status, again) = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!((status, &again["credentials"]), (StatusCode::OK, &fetched["credentials"]));
    let got = put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-2")).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &["b-1"]);
}

#[tokio::test]
async fn two_binds_racing_for_one_spare_one_gets_it_and_the_other_is_422_or_waits() {
    for accepts_incomplete in [false, true] {
        let tb = TestBroker::new().await;
        spares(&tb, REDIS, "small", 1).await;
        ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
        let (a, b) = (bind_body(&tb, REDIS, "small", "app-1"), bind_body(&tb, REDIS, "small", "app-2"));
        let (ra, rb) = if accepts_incomplete {
            tokio::join!(put_binding(&tb, "i-1", "b-a", a), put_binding(&tb, "i-1", "b-b", b))
        } else {
            tokio::join!(put_binding_sync(&tb, "i-1", "b-a", a), put_binding_sync(&tb, "i-1", "b-b", b))
        };
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        let loser = if accepts_incomplete { StatusCode::ACCEPTED } else { StatusCode::UNPROCESSABLE_ENTITY };
        let mut expected = [StatusCode::CREATED, loser];
        expected.sort();
        assert_eq!(statuses, expected, "accepts_incomplete={accepts_incomplete}: {ra:?} {rb:?}");
        let claimed: Vec<String> = [&ra, &rb]
            .iter()
            .filter(|r| r.0 == StatusCode::CREATED)
            .map(|r| r.1["credentials"]["username"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(claimed, ["s-1"]);
        // Whatever waited gets its own user, never the claimed one.
        tb.drain(100).await;
        let users: Vec<Option<String>> =
            [tb.store.binding("i-1", "b-a").await.unwrap(), tb.store.binding("i-1", "b-b").await.unwrap()]
                .into_iter()
                .map(|b| b.and_then(|b| b.username))
                .collect();
        assert_eq!(users.iter().filter(|u| u.as_deref() == Some("s-1")).count(), 1, "{users:?}");
    }
}

#[tokio::test]
async fn a_claimed_binding_repeated_is_200_with_the_same_credentials_and_for_another_app_409() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let body = bind_body(&tb, REDIS, "small", "app-1");
    let (status, first) = put_binding_sync(&tb, "i-1", "b-1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = put_binding_sync(&tb, "i-1", "b-1", body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["credentials"], first["credentials"]);
    let got = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-2")).await;
    assert_error(&got, StatusCode::CONFLICT, "Conflict", &["b-1"]);
    assert_eq!(spare_users(&tb, "i-1").await.len(), 1, "the repeat claimed nothing");
}

#[tokio::test]
async fn lowering_a_plans_spare_users_retires_the_surplus_once_a_bind_runs() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    spares(&tb, REDIS, "small", 0).await;
    assert_eq!(put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await.0, 201);
    let left = tb.store.instance("i-1").await.unwrap().unwrap().spares[0].clone();

    tb.drain(100).await;

    assert!(spare_users(&tb, "i-1").await.is_empty());
    assert!(!tb.provider.users("i-1").contains(&left.username), "{:?}", tb.provider.users("i-1"));
    let read = tb.secrets.read(left.secret.as_deref().unwrap(), broker_core::ports::Stage::Current).await;
    assert!(matches!(read, Ok(None) | Err(_)), "the retired spare's secret is deleted");
}

#[tokio::test]
async fn deprovisioning_deletes_the_spare_users_and_their_secrets() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    assert_eq!(put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await.0, 201);
    let i = tb.store.instance("i-1").await.unwrap().unwrap();
    let secrets: Vec<String> = i.spares.iter().filter_map(|s| s.secret.clone()).collect();
    let claimed = tb.store.binding("i-1", "b-1").await.unwrap().unwrap().secret.unwrap();

    // The deprovision comes before the worker made the replacement spare.
    accepted_operation(&delete_instance(&tb, "i-1", REDIS, "small").await);
    tb.drain(100).await;

    assert_state(&last_operation(&tb, "i-1").await, "succeeded");
    assert!(tb.provider.caches().is_empty(), "{:?}", tb.provider.caches());
    for secret in secrets.iter().chain([&claimed]) {
        let read = tb.secrets.read(secret, broker_core::ports::Stage::Current).await;
        assert!(matches!(read, Ok(None) | Err(_)), "{secret} is left behind");
    }
    let deleted: Vec<String> = tb
        .provider
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::DeleteUser { username, .. } => Some(username),
            _ => None,
        })
        .collect();
    assert!(deleted.contains(&"s-1".to_string()) && deleted.contains(&"s-2".to_string()), "{deleted:?}");
    assert!(tb.store.operations_in_progress().await.unwrap().is_empty());
}

// --------------------------------------- bind: users made at once (laptop mode)

#[tokio::test]
async fn where_users_are_made_at_once_bind_and_unbind_finish_within_the_request() {
    let tb = TestBroker::users_at_once().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    assert!(spare_users(&tb, "i-1").await.is_empty(), "no spares where users are made at once");

    let (status, body) = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let username = body["credentials"]["username"].as_str().unwrap().to_string();
    assert!(tb.provider.users("i-1").contains(&username), "the user exists when the answer comes");
    assert!(tb.drain(10).await.is_empty(), "nothing is left for the worker");
    let (status, again) = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!((status, &again["credentials"]), (StatusCode::OK, &body["credentials"]));

    let (status, body) = delete_binding_sync(&tb, "i-1", "b-1", REDIS, "small").await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    assert!(!tb.provider.users("i-1").contains(&username), "the user is gone when the answer comes");
    assert_error(&fetch_binding(&tb, "i-1", "b-1").await, StatusCode::NOT_FOUND, "NotFound", &["b-1"]);
    let got = delete_binding_sync(&tb, "i-1", "b-1", REDIS, "small").await;
    assert_error(&got, StatusCode::GONE, "Gone", &["b-1"]);
}

/// Binding ids that differ only in case or punctuation name different
/// bindings (the spec compares ids as they are): each gets a cache user of
/// its own, and unbinding one leaves the others' users in place.
#[tokio::test]
async fn binding_ids_alike_but_for_case_or_punctuation_get_users_of_their_own() {
    let tb = TestBroker::users_at_once().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let ids = ["ABC", "abc", "a_bc", "a.bc"];
    let mut usernames = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let body = bind_body(&tb, REDIS, "small", &format!("app-{n}"));
        let (status, body) = put_binding_sync(&tb, "i-1", id, body).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
        usernames.push(body["credentials"]["username"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::HashSet<_> = usernames.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{usernames:?}");
    assert_eq!(tb.provider.users("i-1").len(), ids.len(), "one user per binding");

    let (status, _) = delete_binding_sync(&tb, "i-1", "abc", REDIS, "small").await;
    assert_eq!(status, StatusCode::OK);
    let left = tb.provider.users("i-1");
    assert!(!left.contains(&usernames[1]), "abc's user is gone");
    for (id, name) in [(ids[0], &usernames[0]), (ids[2], &usernames[2]), (ids[3], &usernames[3])] {
        assert!(left.contains(name), "{id}'s user survives the unbind of abc: {left:?}");
        let (status, body) =
            tb.call("GET", &format!("/v2/service_instances/i-1/service_bindings/{id}"), None).await;
        assert_eq!((status, body["credentials"]["username"].as_str()), (StatusCode::OK, Some(name.as_str())));
    }
}

#[tokio::test]
async fn where_users_are_made_at_once_accepts_incomplete_still_gets_201_and_200() {
    let tb = TestBroker::users_at_once().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let (status, body) = put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = delete_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_bind_made_at_once_that_fails_says_what_failed_and_can_be_sent_again() {
    let tb = TestBroker::users_at_once().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    tb.provider.script("put_user", vec![Err(ProviderError::Permanent("the cache process exited".into()))]);
    let got = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &["the cache process exited"]);
    let (status, body) = put_binding_sync(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

// --------------------------------------- bind: Memcached (no users to make)

#[tokio::test]
async fn a_memcached_bind_is_201_at_once_in_both_modes_and_names_the_endpoint_without_a_password() {
    for tb in [TestBroker::new().await, TestBroker::users_at_once().await] {
        ready_instance(&tb, "m-1", MEMCACHED, "dev", json!({})).await;
        let (status, body) =
            put_binding_sync(&tb, "m-1", "b-1", bind_body(&tb, MEMCACHED, "dev", "app-1")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(tb.drain(10).await.is_empty(), "no job for a bind that makes nothing");
        let c = &fetch_binding(&tb, "m-1", "b-1").await.1["credentials"];
        let expected = format!("{}:{}", c["host"].as_str().unwrap(), c["port"]);
        assert_eq!(c["uri"], expected.as_str());
        assert_eq!(c["MEMCACHED_URL"], expected.as_str());
        assert_eq!(c["engine"], "memcached");
        for key in ["password", "REDIS_URL", "CACHE_ADDRS"] {
            assert!(c.get(key).is_none(), "{key}: {c}");
        }
        let (status, body) = delete_binding_sync(&tb, "m-1", "b-1", MEMCACHED, "dev").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(fetch_binding(&tb, "m-1", "b-1").await.0, StatusCode::NOT_FOUND);
        assert!(tb.drain(10).await.is_empty(), "no job for an unbind that removes nothing");
    }
}

// --------------------------------------- credentials

#[tokio::test]
async fn a_redis_binding_carries_every_credential_key_apps_read() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let (status, body) = fetch_binding(&tb, "i-1", "b-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c = &body["credentials"];
    let uri = c["uri"].as_str().expect("uri");
    let username = c["username"].as_str().expect("username");
    assert!(uri.starts_with(&format!("redis://{username}:")), "{uri}");
    let password = c["password"].as_str().expect("password");
    assert!(password.len() >= 32, "password of {} chars", password.len());
    assert!(uri.contains(password), "the uri carries the password");
    assert!(c["host"].is_string() && !c["host"].as_str().unwrap().is_empty());
    assert_eq!(c["hostname"], c["host"]);
    assert!(c["port"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(c["tls_enabled"], false);
    assert_eq!(c["engine"], "redis");
    assert_eq!(c["engine_version"], "7.1");
    assert_eq!(c["REDIS_URL"], c["uri"]);
    assert_eq!(c["cluster_mode"], false);
    assert_eq!(c["CACHE_MODE"], "single");
    assert_eq!(c["CACHE_ADDRS"], format!("{}:{}", c["host"].as_str().unwrap(), c["port"]));
    assert_eq!(c["CACHE_USERNAME"], username);
    assert_eq!(c["CACHE_PASSWORD"], password);
    assert_eq!(c["CACHE_TLS_ENABLED"], "false");
    assert!(tb.provider.users("i-1").contains(&username.to_string()), "the cache user exists");
}

#[tokio::test]
async fn fetching_a_binding_reads_the_recorded_endpoint_and_asks_the_provider_nothing() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let endpoints = |tb: &TestBroker| tb.provider.count(|c| matches!(c, Call::Endpoint(_)));
    let before = endpoints(&tb);
    assert_eq!(before, 1, "the endpoint was read once, when the cache became available");
    for _ in 0..3 {
        assert_eq!(fetch_binding(&tb, "i-1", "b-1").await.0, StatusCode::OK);
    }
    assert_eq!(endpoints(&tb), before);
}

#[tokio::test]
async fn the_last_operation_of_an_unknown_binding_is_404() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let got = binding_last_operation(&tb, "i-1", "nobody").await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["nobody"]);
}

// ------------------------------------------------------------------ unbind

#[tokio::test]
async fn unbind_without_service_id_or_plan_id_is_400_naming_it() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let uri = format!("{}?plan_id={plan_id}&{ASYNC}", binding_uri("i-1", "b-1"));
    assert_error(
        &tb.call("DELETE", &uri, None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &["service_id"],
    );
    let uri = format!("{}?service_id={service_id}&{ASYNC}", binding_uri("i-1", "b-1"));
    assert_error(&tb.call("DELETE", &uri, None).await, StatusCode::BAD_REQUEST, "BadRequest", &["plan_id"]);
}

#[tokio::test]
async fn unbinding_an_unknown_binding_is_410_gone_whatever_accepts_incomplete_says() {
    for tb in [TestBroker::new().await, TestBroker::users_at_once().await] {
        ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
        let got = delete_binding(&tb, "i-1", "nobody", REDIS, "small").await;
        assert_error(&got, StatusCode::GONE, "Gone", &["nobody"]);
        let got = delete_binding_sync(&tb, "i-1", "nobody", REDIS, "small").await;
        assert_error(&got, StatusCode::GONE, "Gone", &["nobody"]);
    }
}

#[tokio::test]
async fn unbind_is_202_then_deletes_the_cache_user_and_the_secret() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let (_, fetched) = fetch_binding(&tb, "i-1", "b-1").await;
    let username = fetched["credentials"]["username"].as_str().unwrap().to_string();
    let secret = tb.store.binding("i-1", "b-1").await.unwrap().unwrap().secret.expect("secret reference");

    let op = accepted_operation(&delete_binding(&tb, "i-1", "b-1", REDIS, "small").await);
    tb.drain(100).await;
    assert_state(&binding_last_operation_of(&tb, "i-1", "b-1", &op).await, "succeeded");
    assert!(!tb.provider.users("i-1").contains(&username), "users: {:?}", tb.provider.users("i-1"));
    let read = tb.secrets.read(&secret, broker_core::ports::Stage::Current).await;
    assert!(matches!(read, Ok(None) | Err(_)), "the password is still readable");
    let got = fetch_binding(&tb, "i-1", "b-1").await;
    assert_error(&got, StatusCode::NOT_FOUND, "NotFound", &["b-1"]);
    let got = delete_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    assert_error(&got, StatusCode::GONE, "Gone", &["b-1"]);
}

#[tokio::test]
async fn unbind_without_accepts_incomplete_is_200_at_once_and_the_worker_removes_the_user() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let username =
        fetch_binding(&tb, "i-1", "b-1").await.1["credentials"]["username"].as_str().unwrap().to_string();

    let (status, body) = delete_binding_sync(&tb, "i-1", "b-1", REDIS, "small").await;

    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    // Its credentials are no longer handed out ...
    assert_error(&fetch_binding(&tb, "i-1", "b-1").await, StatusCode::NOT_FOUND, "NotFound", &["b-1"]);
    // ... a repeat is answered the same way, and the user goes in the worker.
    assert_eq!(delete_binding_sync(&tb, "i-1", "b-1", REDIS, "small").await.0, StatusCode::OK);
    assert!(tb.provider.users("i-1").contains(&username), "removal is the worker's");
    tb.drain(100).await;
    assert!(!tb.provider.users("i-1").contains(&username), "users: {:?}", tb.provider.users("i-1"));
    let got = delete_binding_sync(&tb, "i-1", "b-1", REDIS, "small").await;
    assert_error(&got, StatusCode::GONE, "Gone", &["b-1"]);
}

#[tokio::test]
async fn unbind_during_binding_cancels_the_bind_and_no_user_is_left() {
    let tb = TestBroker::new().await;
    spares(&tb, REDIS, "small", 0).await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let bind =
        accepted_operation(&put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await);
    let unbind = accepted_operation(&delete_binding(&tb, "i-1", "b-1", REDIS, "small").await);
    tb.drain(100).await;

    let (status, body) = binding_last_operation_of(&tb, "i-1", "b-1", &bind).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed", "{body}");
    assert!(body["description"].as_str().unwrap().contains("cancelled"), "{body}");
    assert_state(&binding_last_operation_of(&tb, "i-1", "b-1", &unbind).await, "succeeded");
    assert!(tb.provider.users("i-1").is_empty(), "users left: {:?}", tb.provider.users("i-1"));
    assert_eq!(fetch_binding(&tb, "i-1", "b-1").await.0, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------------------ refused by the state machines

/// A record an earlier operation left failed: each request the state
/// machine refuses is 422 naming the state and what to send instead, and a
/// busy record is 422 ConcurrencyError. Nothing changes.
#[tokio::test]
async fn requests_a_failed_or_busy_record_refuses_say_what_to_send_instead() {
    let tb = TestBroker::new().await;
    let body = ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    let mut b = tb.store.binding("i-1", "b-1").await.unwrap().unwrap();
    b.state = broker_core::domain::BindingState::DeleteFailed;
    tb.store.save_binding(&mut b, None).await.unwrap();
    let got = put_binding(&tb, "i-1", "b-1", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "BindingNotUsable",
        &["service binding b-1 is not fully deleted", "unbind it"],
    );

    let mut i = tb.store.instance("i-1").await.unwrap().unwrap();
    i.state = broker_core::domain::InstanceState::DeprovisionFailed;
    tb.store.save_instance(&mut i, None).await.unwrap();
    let (_, medium) = tb.plan_id(REDIS, "medium");
    for got in [
        patch_instance(&tb, "i-1", json!({"service_id": body["service_id"], "plan_id": medium})).await,
        put_instance(&tb, "i-1", body.clone()).await,
        put_binding(&tb, "i-1", "b-2", bind_body(&tb, REDIS, "small", "app-1")).await,
    ] {
        assert_error(
            &got,
            StatusCode::UNPROCESSABLE_ENTITY,
            "InstanceNotUsable",
            &["service instance i-1 is not fully deprovisioned", "deprovision it"],
        );
    }

    i = tb.store.instance("i-1").await.unwrap().unwrap();
    i.state = broker_core::domain::InstanceState::Updating;
    tb.store.save_instance(&mut i, None).await.unwrap();
    let got = delete_instance(&tb, "i-1", REDIS, "small").await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ConcurrencyError",
        &["being updated", "be deprovisioned", "retry when that has finished"],
    );
    let got = put_binding(&tb, "i-1", "b-2", bind_body(&tb, REDIS, "small", "app-1")).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", &["take a new binding"]);
    assert_eq!(tb.store.instance("i-1").await.unwrap().unwrap().version, i.version);
    assert!(tb.store.binding("i-1", "b-2").await.unwrap().is_none());
}

// ------------------------------------------------------------------ 500

#[tokio::test]
async fn a_500_reveals_nothing_internal() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    ready_binding(&tb, "i-1", "b-1", REDIS, "small").await;
    // GIVEN the binding's password vanished from the secret store behind the broker's back
    let secret = tb.store.binding("i-1", "b-1").await.unwrap().unwrap().secret.unwrap();
    tb.secrets.delete(&secret).await.unwrap();
    // WHEN the platform fetches the binding
    let got = fetch_binding(&tb, "i-1", "b-1").await;
    // THEN it gets a 500 that says where to look, not what broke
    assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &["log"]);
    let text = got.1.to_string();
    for secret_word in ["b-1", "i-1", "secret", "password", "local:", "test/"] {
        assert!(!text.contains(secret_word), "the 500 body mentions {secret_word:?}: {text}");
    }
}

#[tokio::test]
async fn binding_with_another_services_ids_is_400_naming_service_id() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", "elasticache-redis", "small", json!({})).await;
    let body = bind_body(&tb, "elasticache-memcached", "dev", "app-1");
    let got = put_binding(&tb, "i-1", "b-1", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["service_id"]);
}

#[tokio::test]
async fn an_update_with_a_bad_parameter_is_400_even_when_the_plan_change_is_not_allowed() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", "elasticache-memcached", "dev", json!({})).await;
    // Memcached plans cannot change (422), but the body is checked first.
    let body = with_parameters(plan_body(&tb, "elasticache-memcached", "small"), json!({"size": "xl"}));
    let got = patch_instance(&tb, "i-1", body).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "BadRequest", &["'size'"]);
}

#[tokio::test]
async fn polling_an_operation_whose_job_was_lost_enqueues_it_again() {
    let tb = TestBroker::new().await;
    let op =
        accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, "elasticache-redis", "small")).await);
    // GIVEN the job is lost (taken off the queue and never handled)
    let lost = tb.queue.receive(std::time::Duration::from_secs(600)).await.unwrap().expect("the job");
    tb.queue.ack(lost.id).await.unwrap();
    assert!(tb.drain(10).await.is_empty());

    // WHEN the platform polls
    assert_state(&last_operation(&tb, "i-1").await, "in progress");

    // THEN the job is back and the operation finishes
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "succeeded");
}

/// A platform repeats a PUT when it did not get the answer, as when the
/// first request's enqueue failed after its record was written: the repeat
/// enqueues the job again at once, without waiting for it to look stalled.
#[tokio::test]
async fn a_repeated_provision_whose_job_was_lost_enqueues_it_again_at_once() {
    let tb = TestBroker::new().await;
    let body = plan_body(&tb, "elasticache-redis", "small");
    let op = accepted_operation(&put_instance(&tb, "i-1", body.clone()).await);
    // GIVEN the job is lost
    let lost = tb.queue.receive(std::time::Duration::from_secs(600)).await.unwrap().expect("the job");
    tb.queue.ack(lost.id).await.unwrap();
    assert!(tb.drain(10).await.is_empty());

    // WHEN the platform repeats the request: the same operation
    assert_eq!(accepted_operation(&put_instance(&tb, "i-1", body).await), op);

    // THEN its job is back and the operation finishes
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "succeeded");
}

/// The record is written and the enqueue after it fails (SQS throttled or
/// down): the platform gets a 503 saying to repeat the request, and the
/// repeat carries the operation on.
#[tokio::test]
async fn a_provision_whose_job_cannot_be_enqueued_is_503_and_its_repeat_goes_on() {
    let tb = TestBroker::first_enqueues_fail().await;
    let body = plan_body(&tb, "elasticache-redis", "small");
    let got = put_instance(&tb, "i-1", body.clone()).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &["repeat"]);
    assert!(!got.1.to_string().contains("chaos"), "the queue's own words stay in the log: {}", got.1);

    let op = accepted_operation(&put_instance(&tb, "i-1", body).await);
    tb.drain(100).await;
    assert_state(&last_operation_of(&tb, "i-1", &op).await, "succeeded");
}

// ------------------------------------------------------------------ reconciler

/// An operation past its deadline whose job is gone is ended by the
/// reconciler, saying what timed out; one whose job is merely waiting (due
/// later) is left alone, so the reconciler adds no duplicate.
#[tokio::test]
async fn the_reconciler_ends_an_operation_past_its_deadline_and_leaves_one_not_yet_due() {
    let tb = TestBroker::new().await;
    let op_id =
        accepted_operation(&put_instance(&tb, "i-1", plan_body(&tb, "elasticache-redis", "small")).await);
    let lost = tb.queue.receive(std::time::Duration::from_secs(600)).await.unwrap().expect("the job");
    tb.queue.ack(lost.id).await.unwrap();

    // Not due yet (the worker said it would look again in ten minutes): left.
    let mut op = tb.store.operation(&op_id).await.unwrap().unwrap();
    op.due_at = Some(broker_core::domain::now() + 600);
    tb.store.save_operation(&mut op).await.unwrap();
    let report = tb.reconciler.run(broker_core::domain::now()).await.unwrap();
    assert_eq!((report.in_progress, report.stalled, report.past_deadline), (1, 0, 0), "{report:?}");
    assert!(tb.drain(10).await.is_empty(), "nothing enqueued");

    // Past its deadline: enqueued, and the worker ends it.
    op.deadline = broker_core::domain::now() - 1;
    tb.store.save_operation(&mut op).await.unwrap();
    let report = tb.reconciler.run(broker_core::domain::now()).await.unwrap();
    assert_eq!(report.past_deadline, 1, "{report:?}");
    tb.drain(10).await;
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!(op.state, broker_core::domain::OperationState::Failed);
    assert!(op.description.contains("timed out"), "{}", op.description);
    let got = last_operation_of(&tb, "i-1", &op_id).await;
    assert_state(&got, "failed");
}

/// A ready instance keeping fewer spare users than its plan asks for (the
/// refill after a claim failed) gets them back from the reconciler.
#[tokio::test]
async fn the_reconciler_refills_the_spare_users_of_a_ready_instance() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1", REDIS, "small", json!({})).await;
    let mut i = tb.store.instance("i-1").await.unwrap().unwrap();
    let kept = i.spares.len();
    assert!(kept > 0);
    i.spares.clear();
    tb.store.save_instance(&mut i, None).await.unwrap();

    let report = tb.reconciler.run(broker_core::domain::now()).await.unwrap();
    assert_eq!(report.spares_started, 1, "{report:?}");
    tb.drain(100).await;
    assert_eq!(tb.store.instance("i-1").await.unwrap().unwrap().spares.len(), kept);
    assert_eq!(tb.reconciler.run(broker_core::domain::now()).await.unwrap().spares_started, 0, "once");
}

// ------------------------------------------------------------------ metrics

/// Laptop mode's `/metrics`: Prometheus text behind basic auth, needing no
/// API version header, counting requests by route template (never the ids)
/// and status.
#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status_behind_basic_auth() {
    let tb = TestBroker::new().await;
    // (path, with the broker's credentials, the status expected)
    let calls = [
        ("/v2/catalog", true, StatusCode::OK),
        ("/v2/catalog", true, StatusCode::OK),
        ("/v2/service_instances/metrics-nobody/last_operation", true, StatusCode::NOT_FOUND),
        ("/v2/catalog", false, StatusCode::UNAUTHORIZED),
        ("/v2/no-such-route-metrics", true, StatusCode::NOT_FOUND),
    ];
    for (path, auth, expected) in calls {
        assert_eq!(
            send(&tb.router, request("GET", path, None, auth, Some("2.17"))).await.0,
            expected,
            "{path}"
        );
    }

    let resp = respond(&tb, request("GET", "/metrics", None, false, None)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "metrics need the broker's credentials");
    let resp = respond(&tb, request("GET", "/metrics", None, true, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let count = |labels: &str| {
        let prefix = format!("broker_request_duration_seconds_count{{{labels}}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|n| n.parse::<f64>().unwrap())
    };
    assert_eq!(count(r#"route="/v2/catalog",method="GET",status="200""#), Some(2.0), "{text}");
    assert_eq!(count(r#"route="/v2/catalog",method="GET",status="401""#), Some(1.0), "{text}");
    let poll = r#"route="/v2/service_instances/{instance_id}/last_operation",method="GET",status="404""#;
    assert_eq!(count(poll), Some(1.0), "{text}");
    assert!(!text.contains("metrics-nobody"), "ids are never labels: {text}");
    assert_eq!(count(r#"route="unmatched",method="GET",status="404""#), Some(1.0), "{text}");
    assert!(!text.contains("no-such-route"), "paths are never labels: {text}");
    assert!(text.contains("broker_request_duration_seconds_bucket{"), "{text}");
}

/// The worker's counts reach `/metrics` too: a provision that ran to the
/// end is one started and one succeeded operation of its kind and plan, with
/// its duration and every job's age at receipt observed.
#[tokio::test]
async fn metrics_count_operations_by_kind_and_plan_as_the_worker_runs_them() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "metrics-i-1", "elasticache-redis", "small", json!({})).await;
    let (_, plan_id) = tb.plan_id("elasticache-redis", "small");
    let resp = respond(&tb, request("GET", "/metrics", None, true, None)).await;
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.strip_prefix(' ')))
            .map(|n| n.parse::<f64>().unwrap())
    };
    let provision = format!(r#"kind="provision",plan="{plan_id}""#);
    assert_eq!(value(&format!("broker_operations_started_total{{{provision}}}")), Some(1.0), "{text}");
    let succeeded = format!(r#"{{{provision},state="succeeded"}}"#);
    assert_eq!(value(&format!("broker_operations_finished_total{succeeded}")), Some(1.0), "{text}");
    assert_eq!(value(&format!("broker_operation_duration_seconds_count{succeeded}")), Some(1.0), "{text}");
    assert!(!text.contains(r#"state="failed""#), "nothing failed: {text}");
    // TestBroker's worker is driven by `drain`, not the laptop loop that
    // observes each job's age; the histogram is there, empty.
    assert!(text.contains("# TYPE broker_job_age_at_receipt_seconds histogram"), "{text}");
}
