//! Laptop mode with ElastiCache's shape, end to end with real servers and
//! the `redis` crate's cluster and TLS clients: a cluster-mode instance is
//! a TLS cluster of three shards that a cluster client discovers from the
//! configuration endpoint, refuses cross-slot commands, and keeps replicas
//! in sync; plain text is refused; a replicated instance serves reads at
//! its reader endpoint and fails over behind the same endpoints; unbind
//! refuses the user on every node; a broker started again adopts every
//! server of a cluster.

use axum::http::StatusCode;
use broker_tests::clients::{cluster_connection, connection, redis_client, with_uri};
use broker_tests::laptop_osb::{bind, deprovision, provision, unbind};
use broker_tests::{LocalBroker, ProcessGuard, port_open};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// A connection to one server (not a cluster client) with the binding's
/// login, at `port`.
async fn node(credentials: &Value, port: u16) -> redis::RedisResult<MultiplexedConnection> {
    let uri = credentials["uri"].as_str().unwrap();
    let at = format!("{}:{port}", uri.rsplit_once(':').unwrap().0);
    connection(&redis_client(&with_uri(credentials, &at))?).await
}

/// The ports of an instance's servers, as the provider records them.
fn ports(b: &LocalBroker, instance: &str) -> Vec<u16> {
    let server = b.laptop.provider.servers().into_iter().find(|s| s.instance_id == instance).unwrap();
    server.nodes.iter().map(|n| n.port).collect()
}

fn pids(b: &LocalBroker, instance: &str) -> Vec<Option<u32>> {
    let server = b.laptop.provider.servers().into_iter().find(|s| s.instance_id == instance).unwrap();
    server.nodes.iter().map(|n| n.pid).collect()
}

/// The ports of the primary serving `slot` and of its replica, from
/// `CLUSTER NODES` (`<id> <ip:port@bus> <flags> <primary id> <ping> <pong>
/// <epoch> <link> <slots>...`).
fn shard_of(nodes: &str, slot: u16) -> (u16, u16) {
    let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split_whitespace().collect()).collect();
    let port = |fields: &[&str]| -> u16 {
        fields[1].split('@').next().unwrap().rsplit(':').next().unwrap().parse().unwrap()
    };
    let serves = |fields: &[&str]| {
        fields[8..].iter().any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        })
    };
    let primary = lines.iter().find(|f| f.len() > 8 && serves(f)).expect("the slot is served");
    let replica = lines.iter().find(|f| f[3] == primary[0]).expect("the shard has a replica");
    (port(primary), port(replica))
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("Z"),
    }
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_mode_instance_is_a_tls_cluster_of_three_shards_a_cluster_client_discovers() {
    let b = LocalBroker::start().await;
    let guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-valkey", "cluster-3x2", "topology-cluster", json!({})).await;
    let creds = bind(&b, &p, "cluster-binding").await;
    assert_eq!(creds["cluster_mode"], true, "{creds}");
    assert_eq!(creds["CACHE_MODE"], "cluster");
    assert!(creds["uri"].as_str().unwrap().starts_with("rediss://"), "{creds}");
    assert!(creds["ca_certificate"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(creds["CACHE_CA_CERT_BASE64"].is_string());
    let servers = ports(&b, &p.instance);
    assert_eq!(servers.len(), 6, "3 shards of a primary and a replica");

    // TLS only: the same login in plain text gets nowhere.
    let plain = creds["uri"].as_str().unwrap().replacen("rediss://", "redis://", 1);
    let refused = async {
        let mut c = redis::Client::open(plain.as_str())?.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    assert!(refused.await.is_err(), "a plain-text client was served");

    // A cluster client finds the three shards from the configuration endpoint.
    let mut cluster = cluster_connection(&creds).await.unwrap();
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut cluster).await.unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
    let _: () = redis::cmd("MSET")
        .arg("{user:1}.name")
        .arg("ada")
        .arg("{user:1}.lang")
        .arg("rust")
        .query_async(&mut cluster)
        .await
        .unwrap();
    let got: Vec<String> =
        redis::cmd("MGET").arg("{user:1}.name").arg("{user:1}.lang").query_async(&mut cluster).await.unwrap();
    assert_eq!(got, ["ada", "rust"], "keys with one hash tag share a slot");

    // Keys of different slots in one command are refused, as ElastiCache's
    // cluster mode refuses them.
    let mut one = node(&creds, creds["port"].as_u64().unwrap() as u16).await.unwrap();
    let crossed =
        redis::cmd("MSET").arg("a").arg("1").arg("b").arg("2").query_async::<()>(&mut one).await.unwrap_err();
    assert_eq!(crossed.code(), Some("CROSSSLOT"), "{crossed}");

    // Keys spread over the shards: one node holds only its share.
    for n in 0..30 {
        let _: () =
            redis::cmd("SET").arg(format!("spread-{n}")).arg(n).query_async(&mut cluster).await.unwrap();
    }
    let here: u64 = redis::cmd("DBSIZE").query_async(&mut one).await.unwrap();
    assert!(here < 32, "one node holds every key ({here}): SCAN would see them all");

    // A write through the cluster client reaches its shard's replica.
    let _: () = redis::cmd("SET").arg("replicated").arg("yes").query_async(&mut cluster).await.unwrap();
    let slot: u16 =
        redis::cmd("CLUSTER").arg("KEYSLOT").arg("replicated").query_async(&mut one).await.unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut one).await.unwrap();
    let (primary, replica) = shard_of(&nodes, slot);
    let mut primary = node(&creds, primary).await.unwrap();
    let copies: u64 = redis::cmd("WAIT").arg(1).arg(2000).query_async(&mut primary).await.unwrap();
    assert_eq!(copies, 1, "the shard's replica acknowledged the write");
    let mut replica = node(&creds, replica).await.unwrap();
    let _: () = redis::cmd("READONLY").query_async(&mut replica).await.unwrap();
    let read: String = redis::cmd("GET").arg("replicated").query_async(&mut replica).await.unwrap();
    assert_eq!(read, "yes");

    // An idle cluster of six servers on a laptop.
    let rss: u64 = pids(&b, &p.instance).into_iter().flatten().map(rss_kib).sum();
    println!("idle cluster-3x2 (6 valkey-server processes, TLS): {:.1} MiB resident", rss as f64 / 1024.0);

    // A broker started again adopts the six servers as they run; one that
    // was killed meanwhile starts again with every user.
    let before = pids(&b, &p.instance);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let killed = before[5].unwrap();
    let stopped_port = ports(&b, &p.instance)[5];
    let (state, dir) = b.stop();
    let _ = std::process::Command::new("kill").args(["-KILL", &killed.to_string()]).status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while port_open(stopped_port) || !exited(killed) {
        assert!(std::time::Instant::now() < deadline, "the stopped server still runs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let b = LocalBroker::open(state).await;
    let after = pids(&b, &p.instance);
    assert_eq!(after[..5], before[..5], "the running servers were adopted, not started again");
    let log = std::fs::read_to_string(b.state.join("caches/topology-cluster/node-5/server.log"))
        .unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(8).collect();
    assert!(
        after[5].is_some_and(|pid| pid != killed),
        "the killed server runs again: {after:?}; its log ends {tail:#?}"
    );
    let mut back =
        node(&creds, ports(&b, &p.instance)[5]).await.expect("the binding's user is on the restarted node");
    let _: String = redis::cmd("PING").query_async(&mut back).await.unwrap();

    // Unbound: the user is refused on every node.
    unbind(&b, &p, "cluster-binding").await;
    for port in ports(&b, &p.instance) {
        let refused = node(&creds, port).await.err().unwrap_or_else(|| panic!("the user logs in on {port}"));
        assert_eq!(refused.kind(), redis::ErrorKind::AuthenticationFailed, "{port}: {refused}");
    }

    deprovision(&b, &p).await;
    for port in servers {
        assert!(!port_open(port), "a server still listens on {port}");
    }
    drop(guard);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_instance_reads_at_its_reader_and_fails_over_behind_the_same_endpoints() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-redis", "ha-3", "topology-ha", json!({})).await;
    let creds = bind(&b, &p, "ha-binding").await;
    assert_eq!(creds["cluster_mode"], false);
    let reader = creds["reader_port"].as_u64().expect("a reader endpoint") as u16;
    assert_ne!(reader, creds["port"].as_u64().unwrap() as u16);

    let mut primary = connection(&redis_client(&creds).unwrap()).await.unwrap();
    let _: () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut primary).await.unwrap();
    let copies: u64 = redis::cmd("WAIT").arg(2).arg(2000).query_async(&mut primary).await.unwrap();
    assert_eq!(copies, 2, "both replicas acknowledged the write");
    let mut read = node(&creds, reader).await.unwrap();
    let got: String = redis::cmd("GET").arg("greeting").query_async(&mut read).await.unwrap();
    assert_eq!(got, "hello");
    let refused = redis::cmd("SET").arg("x").arg("y").query_async::<()>(&mut read).await.unwrap_err();
    assert_eq!(refused.code(), Some("READONLY"), "{refused}");

    // A failover test promotes a replica; the endpoints stay and nothing
    // acknowledged is lost.
    let (status, body) = b
        .call(
            "PATCH",
            &format!("/v2/service_instances/{}?accepts_incomplete=true", p.instance),
            Some(json!({"service_id": p.service_id, "parameters": {"test_failover": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = b.wait_for(&format!("/v2/service_instances/{}/last_operation", p.instance)).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, fetched) = b
        .call("GET", &format!("/v2/service_instances/{}/service_bindings/ha-binding", p.instance), None)
        .await;
    assert_eq!(fetched["credentials"], creds, "the same endpoints after the failover");
    let mut primary = connection(&redis_client(&creds).unwrap()).await.unwrap();
    let got: String = redis::cmd("GET").arg("greeting").query_async(&mut primary).await.unwrap();
    assert_eq!(got, "hello");
    let _: () = redis::cmd("SET").arg("after").arg("failover").query_async(&mut primary).await.unwrap();
    let _: u64 = redis::cmd("WAIT").arg(2).arg(2000).query_async(&mut primary).await.unwrap();
    let mut read = node(&creds, reader).await.unwrap();
    let got: String = redis::cmd("GET").arg("after").query_async(&mut read).await.unwrap();
    assert_eq!(got, "failover");

    unbind(&b, &p, "ha-binding").await;
    for port in ports(&b, &p.instance) {
        assert!(node(&creds, port).await.is_err(), "the user still logs in on {port}");
    }
    deprovision(&b, &p).await;
}
