//! End to end through the real laptop mode: provision, bind, use the cache
//! with the returned credentials, unbind (the credentials are refused at
//! once), deprovision (the process is gone), for Redis OSS, Valkey and
//! Memcached; a broker restart that adopts the running caches; and a
//! credential rotation that a client using the old password never notices
//! until the grace period ends.

use std::time::Duration;

use axum::http::StatusCode;
use broker_core::ports::{CatalogStore, StateStore};
use broker_tests::clients::{memcached_session, redis_client, with_uri};
use broker_tests::laptop_osb::{Provisioned, bind, deprovision, provision, redis_get, unbind};
use broker_tests::{LocalBroker, ProcessGuard, port_open};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// SET then GET with a client made from `credentials`, as an app makes it.
async fn redis_set_get(credentials: &Value) -> redis::RedisResult<String> {
    let client = redis_client(credentials)?;
    let mut con = broker_tests::clients::connection(&client).await?;
    redis::cmd("SET").arg("greeting").arg("hello").query_async::<()>(&mut con).await?;
    redis::cmd("GET").arg("greeting").query_async::<String>(&mut con).await
}

/// One memcached text-protocol exchange with the node `host_port` of
/// `credentials` (over TLS when they say so): set then get.
async fn memcached_set_get(credentials: &Value, host_port: &str) -> std::io::Result<String> {
    let session = memcached_session(credentials, host_port).await?;
    let (r, mut w) = tokio::io::split(session);
    let mut r = BufReader::new(r);
    w.write_all(b"set greeting 0 0 5\r\nhello\r\n").await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    assert_eq!(line.trim(), "STORED");
    w.write_all(b"get greeting\r\n").await?;
    let mut value = String::new();
    line.clear();
    r.read_line(&mut line).await?; // VALUE greeting 0 5
    r.read_line(&mut value).await?;
    Ok(value.trim().to_string())
}

async fn redis_like_lifecycle(service: &str, plan: &str, version: &str) {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, service, plan, "e2e-instance-1", json!({"engine_version": version})).await;

    let creds = bind(&b, &p, "e2e-binding-1").await;
    let uri = creds["uri"].as_str().unwrap().to_string();
    let user = broker_core::domain::Binding::username_for("e2e-binding-1");
    assert!(uri.starts_with(&format!("rediss://{user}:")), "{uri}");
    assert_eq!(creds["REDIS_URL"], creds["uri"]);
    assert_eq!(creds["tls_enabled"], true, "{creds}");
    assert!(creds["password"].as_str().unwrap().len() >= 32);
    assert_eq!(creds["engine_version"], version);
    let port = creds["port"].as_u64().unwrap() as u16;

    // GIVEN the binding's credentials, THEN SET/GET works.
    assert_eq!(redis_set_get(&creds).await.unwrap(), "hello");
    // AND the default user is disabled: no password, no access.
    let anonymous = with_uri(&creds, &format!("rediss://127.0.0.1:{port}"));
    assert!(redis_set_get(&anonymous).await.is_err(), "the default user must be disabled");

    // A second binding has its own user and password.
    let other = bind(&b, &p, "e2e-binding-2").await;
    assert_ne!(other["password"], creds["password"]);
    assert_ne!(other["username"], creds["username"]);

    // An open connection of the first binding, to see it cut on unbind.
    let client = redis_client(&creds).unwrap();
    let mut open_con = broker_tests::clients::connection(&client).await.unwrap();
    redis::cmd("PING").query_async::<String>(&mut open_con).await.unwrap();

    // WHEN unbound, THEN the same credentials are refused at once ...
    unbind(&b, &p, "e2e-binding-1").await;
    let refused = redis_set_get(&creds).await.unwrap_err();
    assert!(
        refused.to_string().contains("WRONGPASS") || refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );
    // ... the open connection is closed ...
    assert!(redis::cmd("PING").query_async::<String>(&mut open_con).await.is_err());
    // ... and the other binding still works.
    assert_eq!(redis_set_get(&other).await.unwrap(), "hello");

    // WHEN deprovisioned, THEN the process is gone and its data removed.
    deprovision(&b, &p).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!port_open(port), "the cache still listens on {port}");
    assert!(
        !b.state.join("caches").join("e2e-instance-1").exists(),
        "the cache's data directory is left behind"
    );
    let (status, _) = b.call("GET", "/v2/service_instances/e2e-instance-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The flow of an OSB 2.13 platform (Akkeris, whose add-on guide asks for
/// "at least" 2.13, which has no asynchronous bindings): an asynchronous
/// provision polled until done, a bind without `accepts_incomplete`, the
/// app's SET and GET through the returned `REDIS_URL`, a fetch of the binding
/// (as at every release), an unbind without `accepts_incomplete` after which
/// the credentials are refused at once, and the deprovision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osb_2_13_platform_binds_and_unbinds_synchronously() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let v = "2.13";
    let (service_id, plan_id) = b.plan("elasticache-redis", "small").await;
    let instance = "/v2/service_instances/akkeris-1";
    let (status, body) = b
        .call_as(
            v,
            "PUT",
            &format!("{instance}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "akkeris-org", "space_guid": "akkeris-space"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, op) = b.call_as(v, "GET", &format!("{instance}/last_operation"), None).await;
        assert_eq!(status, StatusCode::OK, "{op}");
        if op["state"] == "succeeded" {
            break;
        }
        assert_eq!(op["state"], "in progress", "{op}");
        assert!(Instant::now() < deadline, "provisioning never finished: {op}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let binding = format!("{instance}/service_bindings/akkeris-app-1");
    let bind_body = json!({"service_id": service_id, "plan_id": plan_id,
                           "bind_resource": {"app_guid": "akkeris-app-1"}});
    let (status, bound) = b.call_as(v, "PUT", &binding, Some(bind_body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let url = bound["credentials"]["REDIS_URL"].as_str().expect("REDIS_URL").to_string();
    // The app's client on the `REDIS_URL` it reads (with the CA it is given).
    let app = with_uri(&bound["credentials"], &url);
    assert_eq!(redis_set_get(&app).await.unwrap(), "hello");
    let (status, again) = b.call_as(v, "PUT", &binding, Some(bind_body)).await;
    assert_eq!((status, &again["credentials"]), (StatusCode::OK, &bound["credentials"]));
    let (status, fetched) = b.call_as(v, "GET", &binding, None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched["credentials"], bound["credentials"], "every release gets the same credentials");

    let query = format!("service_id={service_id}&plan_id={plan_id}");
    let (status, body) = b.call_as(v, "DELETE", &format!("{binding}?{query}"), None).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    let refused = redis_set_get(&app).await.unwrap_err().to_string();
    assert!(refused.contains("WRONGPASS") || refused.to_lowercase().contains("auth"), "{refused}");
    let (status, body) = b.call_as(v, "DELETE", &format!("{binding}?{query}"), None).await;
    assert_eq!(status, StatusCode::GONE, "{body}");

    let (status, body) =
        b.call_as(v, "DELETE", &format!("{instance}?accepts_incomplete=true&{query}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(b.wait_for(&format!("{instance}/last_operation")).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_provision_bind_use_unbind_deprovision() {
    redis_like_lifecycle("elasticache-redis", "small", "7.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_provision_bind_use_unbind_deprovision() {
    redis_like_lifecycle("elasticache-valkey", "dev", "8.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_provision_bind_use_unbind_deprovision() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-memcached", "dev", "e2e-mc-1", json!({})).await;
    let creds = bind(&b, &p, "e2e-mc-binding").await;
    let uri = creds["uri"].as_str().unwrap().to_string();
    assert_eq!(creds["MEMCACHED_URL"], creds["uri"]);
    assert_eq!(creds["nodes"], json!([creds["uri"].clone()]));
    assert!(uri.starts_with("127.0.0.1:"), "{uri}");
    assert_eq!(creds["tls_enabled"], true, "{creds}");
    assert_eq!(memcached_set_get(&creds, &uri).await.unwrap(), "hello");
    unbind(&b, &p, "e2e-mc-binding").await;
    deprovision(&b, &p).await;
    let port: u16 = uri.rsplit(':').next().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!port_open(port), "memcached still listens on {port}");

    // The worker loop counted what it ran: both operations through the
    // queue started and succeeded, and each job's age at receipt was seen.
    let metrics = b.metrics_text().await;
    let value = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    for kind in ["provision", "deprovision"] {
        assert_eq!(value(&format!(r#"broker_operations_started_total{{kind="{kind}""#)), 1.0, "{metrics}");
        let done = format!(r#"broker_operations_finished_total{{kind="{kind}",plan="#);
        assert!(
            metrics.lines().any(|l| l.starts_with(&done) && l.contains(r#"state="succeeded"} 1"#)),
            "{metrics}"
        );
    }
    assert!(value("broker_job_age_at_receipt_seconds_count") >= 2.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_adopts_its_caches_and_restarts_dead_ones() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-redis", "dev", "e2e-restart-1", json!({})).await;
    let creds = bind(&b, &p, "e2e-restart-b").await;
    assert_eq!(redis_set_get(&creds).await.unwrap(), "hello");

    // The broker stops; the cache process dies too (a reboot, a kill).
    let (state, dir) = b.stop();
    let _ = std::process::Command::new("pkill").arg("-9").arg("-f").arg(state.as_os_str()).status();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // WHEN the broker starts again on the same state
    let b = LocalBroker::open(state).await;
    // THEN the instance, the binding and the data are back.
    let (status, body) =
        b.call("GET", "/v2/service_instances/e2e-restart-1/service_bindings/e2e-restart-b", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(redis_get(&body["credentials"], "greeting").await.unwrap().as_deref(), Some("hello"));
    deprovision(&b, &p).await;
    drop(dir);
}

/// A stop while a provision waits for its server stops that server too; the
/// next start runs it again, or the provision would find it dead and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_stopped_while_its_instance_was_provisioning_runs_again_at_the_next_start() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    provision(&b, "elasticache-valkey", "dev", "e2e-mid-provision", json!({})).await;
    // GIVEN the instance is still provisioning when the broker stops its caches
    let mut i = b.laptop.store.instance("e2e-mid-provision").await.unwrap().unwrap();
    i.state = broker_core::domain::InstanceState::Provisioning;
    b.laptop.store.save_instance(&mut i, None).await.unwrap();
    let stopped = b.laptop.provider.stop_all().await;
    assert_eq!(stopped.len(), 1);
    let (state, dir) = b.stop();

    // WHEN the broker starts again, THEN the server runs
    let b = LocalBroker::open(state).await;
    let servers = b.laptop.provider.servers();
    assert_eq!(servers.len(), 1);
    assert!(servers[0].pid.is_some(), "{servers:?}");
    drop(b);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_and_changes_plans_without_a_release() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    // GIVEN the built-in catalog with one plan changed and one plan added
    let mut catalog: Value = serde_json::from_str(broker_core::catalog::DEFAULT_CATALOG).unwrap();
    let plans = catalog["plans"].as_array_mut().unwrap();
    let mut xl = plans.iter().find(|p| p["name"] == "large").unwrap().clone();
    xl["id"] = json!("operator-added-xlarge");
    xl["name"] = json!("xlarge");
    xl["node_type"] = json!("cache.r7g.2xlarge");
    plans.push(xl);
    for p in plans.iter_mut().filter(|p| p["name"] == "small") {
        p["description"] = json!("Small, now with 7 days of snapshots");
    }
    let file = b.state.join("operator-catalog.json");
    std::fs::write(&file, catalog.to_string()).unwrap();

    // WHEN the operator applies it while the broker runs
    let config = broker_laptop::LaptopConfig {
        port: 0,
        state_dir: b.state.clone(),
        credentials: None,
        catalog_file: None,
        poll_delay_secs: 1,
        rotation: Default::default(),
        cache_tls: true,
    };
    broker_laptop::apply_catalog(&config, &file).await.unwrap();

    // THEN the catalog serves both changes at once, and the new plan provisions
    let (_, served) = b.call("GET", "/v2/catalog", None).await;
    let redis =
        served["services"].as_array().unwrap().iter().find(|s| s["name"] == "elasticache-redis").unwrap();
    let names: Vec<&str> =
        redis["plans"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"xlarge"), "{names:?}");
    let small = redis["plans"].as_array().unwrap().iter().find(|p| p["name"] == "small").unwrap();
    assert_eq!(small["description"], "Small, now with 7 days of snapshots");
    let p = provision(&b, "elasticache-redis", "xlarge", "e2e-xl-1", json!({})).await;
    deprovision(&b, &p).await;
}

/// One use of the cache as a client that connects afresh each time: log in
/// (the credentials' `uri` carries the user and password), SET, GET. `who`
/// keeps the keys of clients running side by side apart.
async fn use_cache(credentials: &Value, who: &str, n: u64) -> Result<(), String> {
    let key = format!("rotation-{who}");
    let value = format!("v{n}");
    let client = redis_client(credentials).map_err(|e| e.to_string())?;
    let mut con = broker_tests::clients::connection(&client).await.map_err(|e| e.to_string())?;
    redis::cmd("SET").arg(&key).arg(&value).query_async::<()>(&mut con).await.map_err(|e| e.to_string())?;
    let got: String = redis::cmd("GET").arg(&key).query_async(&mut con).await.map_err(|e| e.to_string())?;
    if got != value {
        return Err(format!("GET returned {got:?}, not {value:?}"));
    }
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The proof of "without downtime": a client keeps using the old credentials
/// through a whole rotation (the operator's `broker-api rotate`, run against
/// the same state directory as the running broker). Not one of its requests
/// fails before the grace period ends; the new credentials work as soon as
/// the rotation is finished; the old ones are refused once the grace period
/// is over. The admin credential rotates too, and the broker keeps managing
/// the cache with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_old_password_never_fails_before_the_grace_period_ends() {
    use broker_core::domain::RotationPolicy;
    use broker_core::rotation::Target;

    const GRACE_SECS: u64 = 3;
    let b = LocalBroker::start_with_rotation(RotationPolicy { days: 30, grace_secs: GRACE_SECS }).await;
    let _guard = ProcessGuard(b.state.clone());
    let p =
        provision(&b, "elasticache-valkey", "dev", "rot-instance-1", json!({"engine_version": "8.0"})).await;
    let old = bind(&b, &p, "rot-binding-1").await;
    let old_uri = old["uri"].as_str().unwrap().to_string();

    // The client: a fresh login, SET and GET, every 20 ms, recording when
    // each ended and how.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = tokio::spawn({
        let (old, stop) = (old.clone(), stop.clone());
        async move {
            let mut log: Vec<(f64, Result<(), String>)> = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let result = use_cache(&old, "loop", n).await;
                log.push((unix_now(), result));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            log
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let target = Target::Binding { instance_id: p.instance.clone(), binding_id: "rot-binding-1".into() };
    broker_laptop::rotate(&b.config, &target).await.expect("the rotation runs");
    let finished = unix_now();

    // The platform fetching the binding gets the new password, which works now.
    let base = format!("/v2/service_instances/{}/service_bindings/rot-binding-1", p.instance);
    let (status, fetched) = b.call("GET", &base, None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let new = fetched["credentials"].clone();
    assert_ne!(new["uri"].as_str().unwrap(), old_uri);
    assert_eq!(fetched["credentials"]["username"], old["username"], "the same user, a new password");
    use_cache(&new, "new", 0).await.expect("the new credentials work at once");
    let binding = b.laptop.store.binding(&p.instance, "rot-binding-1").await.unwrap().unwrap();
    let rotation = binding.rotation.expect("the grace period is in the binding's state");
    let grace_ends = rotation.grace_ends_at.expect("and its end") as f64;

    // Wait for the worker to remove the old password after the grace period.
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 20);
    while use_cache(&old, "probe", 0).await.is_ok() {
        assert!(Instant::now() < deadline, "the old password still works long after the grace period");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_at = unix_now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = client.await.unwrap();

    let failures: Vec<&(f64, Result<(), String>)> = log.iter().filter(|(_, r)| r.is_err()).collect();
    let first_failure = failures.first().map(|(t, _)| *t).unwrap_or(f64::MAX);
    assert!(
        first_failure >= grace_ends,
        "the old credentials failed at {first_failure:.3}, before the grace period ended at {grace_ends}: {:?}",
        failures.first()
    );
    let during_grace = log.iter().filter(|(t, r)| *t > finished && *t < grace_ends && r.is_ok()).count();
    assert!(during_grace > 10, "the old credentials kept working after the rotation ({during_grace} uses)");
    assert!(log.iter().filter(|(t, _)| *t < finished).count() > 10, "the client ran before the rotation");
    assert!(refused_at >= grace_ends);
    for (_, result) in log.iter().filter(|(t, _)| *t > refused_at) {
        let err = result.as_ref().expect_err("after the grace period the old password is refused");
        assert!(err.contains("WRONGPASS") || err.contains("AuthenticationFailed"), "{err}");
    }
    use_cache(&new, "new", 1).await.expect("the new credentials still work");
    let binding = b.laptop.store.binding(&p.instance, "rot-binding-1").await.unwrap().unwrap();
    assert_eq!(binding.rotation, None, "the rotation is over");

    // The admin credential: rotated, and the broker keeps managing the cache
    // with it (a bind and an unbind after the grace period).
    let admin = Target::Admin { instance_id: p.instance.clone() };
    broker_laptop::rotate(&b.config, &admin).await.expect("the admin rotation runs");
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 20);
    while b.laptop.store.instance(&p.instance).await.unwrap().unwrap().rotation.is_some() {
        assert!(Instant::now() < deadline, "the admin rotation's grace period never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = bind(&b, &p, "rot-binding-2").await;
    use_cache(&second, "second", 2).await.expect("a binding made after the admin rotation works");
    unbind(&b, &p, "rot-binding-2").await;
    deprovision(&b, &p).await;
}

/// The warm pool with real processes: the reconciler starts a server for
/// the pool, a provision takes it and answers 201 at once, the credentials
/// work, a restart adopts the claimed cache under its pool key, and a
/// deprovision stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_laptop_cache_is_handed_out_at_once_and_adopted_after_a_restart() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let (service_id, plan_id) = b.plan("elasticache-redis", "dev").await;
    let mut plan = b.laptop.store.plans().await.unwrap().into_iter().find(|p| p.id == plan_id).unwrap();
    plan.warm_pool_size = 1;
    b.laptop.store.put_plan(&plan).await.unwrap();

    // The reconciler starts a member; the worker makes its server.
    let report = b.laptop.reconciler.run(broker_core::domain::now()).await.unwrap();
    assert_eq!(report.pool_added, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let member = loop {
        let pool = b.laptop.store.pool(&plan_id).await.unwrap().unwrap();
        let m = b.laptop.store.instance(&pool.members[0]).await.unwrap().unwrap();
        if m.state == broker_core::domain::InstanceState::Ready {
            break m;
        }
        assert!(Instant::now() < deadline, "the pooled cache never became ready: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let started = Instant::now();
    let (status, body) = b
        .call(
            "PUT",
            "/v2/service_instances/e2e-pool-1?accepts_incomplete=true",
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "org", "space_guid": "space"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p = Provisioned { instance: "e2e-pool-1".into(), service_id, plan_id };
    let creds = bind(&b, &p, "e2e-pool-b").await;
    println!("laptop mode, pooled plan: provision to bindable in {:?}", started.elapsed());
    assert_eq!(redis_set_get(&creds).await.unwrap(), "hello");
    let claimed = b.laptop.store.instance("e2e-pool-1").await.unwrap().unwrap();
    assert_eq!(claimed.cache_key(), member.id);

    // A restart adopts the claimed cache by its key.
    let (state, dir) = b.stop();
    let b = LocalBroker::open(state).await;
    let (status, body) =
        b.call("GET", "/v2/service_instances/e2e-pool-1/service_bindings/e2e-pool-b", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(redis_get(&body["credentials"], "greeting").await.unwrap().as_deref(), Some("hello"));
    let servers = b.laptop.provider.servers();
    assert!(servers.iter().any(|s| s.instance_id == member.id && s.pid.is_some()), "{servers:?}");

    deprovision(&b, &p).await;
    let servers = b.laptop.provider.servers();
    assert!(!servers.iter().any(|s| s.instance_id == member.id && s.pid.is_some()), "{servers:?}");
    drop(dir);
}

/// What a crash can leave in laptop mode: a cache server and secrets whose
/// record no longer names them (here: the record marked deleted as a purge
/// would leave it). The reconciler deletes them after the grace period,
/// stopping the server; the instance next to it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_cache_and_secrets_no_record_names_go_after_the_grace_period() {
    use broker_core::ports::{SecretError, SecretStore, Stage};
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let keep = provision(&b, "elasticache-redis", "dev", "e2e-orphan-keep", json!({})).await;
    let kept = bind(&b, &keep, "e2e-orphan-keep-b").await;
    let lost = provision(&b, "elasticache-valkey", "dev", "e2e-orphan-lost", json!({})).await;
    bind(&b, &lost, "e2e-orphan-lost-b").await;
    let mut record = b.laptop.store.instance(&lost.instance).await.unwrap().unwrap();
    record.state = broker_core::domain::InstanceState::Deleted;
    b.laptop.store.save_instance(&mut record, None).await.unwrap();
    let admin = record.admin_secret.clone().unwrap();
    let port = b.laptop.provider.servers().into_iter().find(|s| s.instance_id == lost.instance).unwrap().port;
    assert!(port_open(port));

    let t0 = broker_core::domain::now();
    let first = b.laptop.reconciler.run(t0).await.unwrap();
    assert_eq!(
        (first.orphans_seen, first.orphans_removed),
        (3, 0),
        "its cache, admin and binding secrets: {first:?}"
    );
    assert!(port_open(port), "kept through the grace period");

    let later = b.laptop.reconciler.run(t0 + broker_laptop::ORPHAN_GRACE_SECS).await.unwrap();
    assert_eq!((later.orphans_seen, later.orphans_removed), (3, 3), "{later:?}");
    assert!(!port_open(port), "the orphan's server is stopped");
    assert!(!b.laptop.provider.servers().iter().any(|s| s.instance_id == lost.instance));
    let read = b.laptop.secrets.read(&admin, Stage::Current).await;
    assert!(matches!(read, Ok(None) | Err(SecretError::NotFound(_))), "the admin secret is deleted");
    assert_eq!(redis_set_get(&kept).await.unwrap(), "hello", "the named instance keeps serving");
    deprovision(&b, &keep).await;
}

/// Chromium, headless, on `url` with `extra` arguments; its standard output.
/// It may reach 127.0.0.1 only: every other host name resolves to nothing,
/// and its background services (updates, sync, safe browsing) are off.
fn chromium(url: &str, profile: &std::path::Path, extra: &[String]) -> String {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-pings",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--safebrowsing-disable-auto-update",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=412,915",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/install-servers.sh installs it)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The dashboard page in a real browser: laptop mode serves it on
/// 127.0.0.1, chromium renders it at a phone's width, the screenshot goes
/// to `target/test-output/dashboard.png`, and the page it rendered shows the
/// instance's state and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_renders_in_a_browser_with_the_state_and_no_password() {
    let b = LocalBroker::start().await;
    let p = provision(&b, "elasticache-valkey", "dev", "dash-1", json!({})).await;
    let credentials = bind(&b, &p, "app-1").await;
    let password = credentials["password"].as_str().expect("a password").to_string();
    let (status, fetched) = b.call("GET", "/v2/service_instances/dash-1", None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let url = fetched["dashboard_url"].as_str().expect("dashboard_url").to_string();
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap());
    // The charts: the samples the broker takes every minute, taken here a
    // second apart so the page has lines to draw.
    for _ in 0..3 {
        b.laptop.cache_metrics.sample_all().await;
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }

    // The broker's Router on a real listener, as `broker-api serve` runs it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = b.laptop.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let page = format!("http://127.0.0.1:{port}{path}");

    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let (dom, wrong) = {
        let (page, shot, profile_dir) = (page.clone(), shot.clone(), profile.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            chromium(&page, &profile_dir, &[format!("--screenshot={}", shot.display())]);
            let dom = chromium(&page, &profile_dir, &["--dump-dom".to_string()]);
            let wrong =
                chromium(&page.replace("token=", "token=1"), &profile_dir, &["--dump-dom".to_string()]);
            (dom, wrong)
        })
        .await
        .unwrap()
    };
    server.abort();
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a rendered page, {} bytes", png.len());
    println!("dashboard screenshot: {}", shot.canonicalize().unwrap().display());
    for shown in ["elasticache-valkey", "dev", "ready", "valkey 8.0", "127.0.0.1:", "bind app-1"] {
        assert!(dom.contains(shown), "the rendered page shows {shown:?}: {dom}");
    }
    for charted in ["EngineCPUUtilization", "CurrConnections", "BytesUsedForCache", "class=\"chart\""] {
        assert!(dom.contains(charted), "the rendered page charts {charted:?}: {dom}");
    }
    assert_eq!(dom.matches("<svg").count(), 3, "a chart per metric: {dom}");
    assert!(dom.contains("<polyline"), "the samples are drawn as lines: {dom}");
    assert!(!dom.contains(&password), "the binding's password is not on the page");
    assert!(wrong.contains("Not allowed") && !wrong.contains("valkey 8.0"), "{wrong}");
    deprovision(&b, &p).await;
}

/// A serverless plan in laptop mode: one server whose memory is the plan's
/// data limit, with the users per binding of any Valkey instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverless_plan_serves_from_one_local_server_with_users_per_binding() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-valkey", "serverless", "serverless-1", json!({})).await;
    let creds = bind(&b, &p, "serverless-binding").await;
    assert_eq!(creds["engine"], "valkey");
    assert_eq!(redis_set_get(&creds).await.unwrap(), "hello");
    let config = std::fs::read_to_string(b.state.join("caches/serverless-1/server.conf")).unwrap();
    assert!(config.contains("\nmaxmemory 10gb\n"), "the plan's data limit: {config}");
    unbind(&b, &p, "serverless-binding").await;
    deprovision(&b, &p).await;
    assert!(!b.state.join("caches/serverless-1").exists());
}
