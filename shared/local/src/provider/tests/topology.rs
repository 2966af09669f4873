//! Plans of several servers and TLS: a cluster's shards and replicas, a
//! primary with replicas, Memcached nodes, records from before, and plan
//! changes, on real servers under the test's own root.

use super::*;

/// A plan of `shards` x (1 + `replicas`) servers (Memcached: `nodes`).
fn layout_plan(shards: u8, replicas: u8, cluster_mode: bool, nodes: u8) -> Plan {
    let mut plan = plan();
    plan.shards = shards;
    plan.replicas_per_shard = replicas;
    plan.cluster_mode = cluster_mode;
    plan.cache_nodes = nodes;
    plan
}

fn layout_spec(instance_id: &str, engine: Engine, plan: Plan) -> CacheSpec {
    CacheSpec { plan, ..spec(instance_id, engine) }
}

impl Fixture {
    fn tls(&self) -> Tls {
        Tls::under(self.provider.root()).unwrap()
    }

    /// An admin connection over TLS to the server on `port`.
    async fn admin_to(&self, port: u16) -> MultiplexedConnection {
        connect(port, Some(&self.tls()), ADMIN_USER, &self.admin_password).await.unwrap()
    }

    /// Polls `progress` (as the worker does) until `first` and what follows
    /// are `Done`.
    async fn until_done(&self, instance_id: &str, first: Result<Progress, ProviderError>) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut progress = first;
        while let Ok(Progress::Working { detail }) = &progress {
            assert!(Instant::now() < deadline, "{instance_id} still working: {detail}");
            sleep(Duration::from_millis(200)).await;
            progress = self.provider.progress(instance_id).await;
        }
        assert_eq!(progress, Ok(Progress::Done), "{instance_id}");
    }

    async fn made(&self, spec: &CacheSpec) -> Record {
        self.until_done(&spec.cache_key, self.provider.create(spec).await).await;
        self.record(&spec.cache_key)
    }

    /// Runs an action the way the worker does: plan, then each step started
    /// and polled until done.
    async fn act(&self, instance_id: &str, action: &Action) -> Vec<ActionStep> {
        let steps = self.provider.plan_action(instance_id, action).await.unwrap();
        for step in &steps {
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut progress = self.provider.start_action(instance_id, action, step).await;
            loop {
                match progress {
                    Ok(Progress::Done) => break,
                    Ok(Progress::Working { detail }) | Err(ProviderError::Retryable(detail)) => {
                        assert!(Instant::now() < deadline, "{action:?} {step:?}: {detail}");
                        sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{action:?} {step:?}: {e}"),
                }
                progress = self.provider.action_progress(instance_id, action, step).await;
            }
        }
        steps
    }
}

async fn query<T: redis::FromRedisValue>(c: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn info<'a>(text: &'a str, field: &str) -> &'a str {
    info_field(text, field)
}

#[tokio::test]
async fn a_cluster_mode_plan_runs_its_shards_and_replicas_over_tls_and_keeps_users_on_every_node() {
    let f = Fixture::with_tls(true).await;
    let spec = layout_spec("cluster-1", Engine::Valkey, layout_plan(3, 1, true, 1));
    let record = f.made(&spec).await;
    assert_eq!(record.nodes.len(), 6);
    let paths = Paths::of(f.provider.root(), "cluster-1").unwrap();
    let pids: Vec<u32> =
        f.provider.node_pids(&record, &paths).into_iter().map(|p| p.expect("runs")).collect();

    let endpoint = f.provider.endpoint("cluster-1").await.unwrap();
    assert!(endpoint.cluster_mode && endpoint.tls, "{endpoint:?}");
    assert_eq!(endpoint.ca_certificate.as_deref(), Some(f.tls().ca_pem.as_str()));
    assert_eq!(endpoint.reader, None, "a cluster has no reader endpoint");
    let mut admin = f.admin_to(endpoint.port).await;
    let cluster: String = query(&mut admin, &["CLUSTER", "INFO"]).await;
    assert_eq!(info(&cluster, "cluster_state"), "ok", "{cluster}");
    assert_eq!(info(&cluster, "cluster_size"), "3", "three shards serve slots: {cluster}");
    assert_eq!(info(&cluster, "cluster_known_nodes"), "6", "{cluster}");
    let nodes = parse_cluster_nodes(&query::<String>(&mut admin, &["CLUSTER", "NODES"]).await);
    assert_eq!(nodes.iter().filter(|n| n.has("master")).count(), 3);
    assert_eq!(nodes.iter().filter(|n| n.has("slave")).count(), 3);
    let served: u32 = nodes.iter().flat_map(|n| &n.slots).map(|(a, b)| b - a + 1).sum();
    assert_eq!(served, 16_384);

    // TLS only: a plain-text client gets nowhere.
    let plain = connect(endpoint.port, None, ADMIN_USER, &f.admin_password).await;
    assert!(plain.is_err(), "a plain-text connection was accepted");

    // Users are on every node, and a node that was down gets them when it
    // comes back.
    let password = generate_password(PASSWORD_LEN);
    assert_eq!(f.provider.put_user("cluster-1", &user("app", &[&password])).await, Ok(Progress::Done));
    assert_eq!(f.provider.user_progress("cluster-1", "app").await, Ok(Progress::Done));
    for node in &record.nodes {
        let mut app = connect(node.port, Some(&f.tls()), "app", &password).await.unwrap();
        assert_eq!(query::<String>(&mut app, &["PING"]).await, "PONG");
    }
    // Killed, as a crash would.
    kill_now(pids[5]);
    while f.provider.node_pid(&record, &record.nodes[5], &paths).is_some() {
        sleep(POLL).await;
    }
    let late = generate_password(PASSWORD_LEN);
    assert_eq!(f.provider.put_user("cluster-1", &user("late", &[&late])).await, Ok(Progress::Done));
    assert_eq!(f.provider.delete_user("cluster-1", "app").await, Ok(Progress::Done));
    f.until_done("cluster-1", f.provider.adopt("cluster-1").await).await;
    let record = f.record("cluster-1");
    for node in &record.nodes {
        let mut c = connect(node.port, Some(&f.tls()), "late", &late).await.unwrap();
        assert_eq!(query::<String>(&mut c, &["PING"]).await, "PONG", "port {}", node.port);
        let refused = connect(node.port, Some(&f.tls()), "app", &password).await.expect_err("app is gone");
        assert_eq!(refused.kind(), ErrorKind::AuthenticationFailed, "{refused}");
    }

    // A broker started again adopts all six servers as they run.
    let pids: Vec<Option<u32>> = f.provider.node_pids(&record, &paths);
    let restarted = LocalCacheProvider::new(f.provider.root().to_path_buf(), f.secrets.clone());
    assert_eq!(restarted.adopt("cluster-1").await, Ok(Progress::Done));
    assert_eq!(restarted.node_pids(&record, &paths), pids, "no server started twice");
    assert_eq!(restarted.servers()[0].running(), 6);

    // Test failover moves each shard's primary to its replica.
    let before: Vec<String> =
        f.act("cluster-1", &Action::TestFailover).await.iter().map(|s| s.target.clone()).collect();
    assert_eq!(before, ["0001", "0002", "0003"]);
    let nodes = parse_cluster_nodes(
        &query::<String>(&mut f.admin_to(endpoint.port).await, &["CLUSTER", "NODES"]).await,
    );
    for node in record.nodes.iter().filter(|n| n.replica) {
        let now = nodes.iter().find(|n| n.port == node.port).unwrap();
        assert!(now.has("master"), "the replica at {} was promoted: {now:?}", node.port);
    }
}

#[tokio::test]
async fn a_replicated_plan_serves_reads_at_its_reader_and_fails_over_behind_the_same_endpoints() {
    let f = Fixture::with_tls(true).await;
    let spec = layout_spec("ha-1", Engine::Redis, layout_plan(1, 2, false, 1));
    let record = f.made(&spec).await;
    assert_eq!(record.nodes.len(), 3);
    let endpoint = f.provider.endpoint("ha-1").await.unwrap();
    let reader = endpoint.reader.clone().expect("a reader endpoint");
    assert!(!endpoint.cluster_mode && endpoint.tls);

    let mut primary = f.admin_to(endpoint.port).await;
    let _: () = query(&mut primary, &["SET", "greeting", "hello"]).await;
    let copies: i64 = query(&mut primary, &["WAIT", "2", "5000"]).await;
    assert_eq!(copies, 2, "both replicas have the write");
    let mut replica = f.admin_to(reader.port).await;
    assert_eq!(query::<String>(&mut replica, &["GET", "greeting"]).await, "hello");
    let refused = redis::cmd("SET").arg("k").arg("v").query_async::<()>(&mut replica).await.unwrap_err();
    assert_eq!(refused.code(), Some("READONLY"), "{refused}");

    let steps = f.act("ha-1", &Action::TestFailover).await;
    assert_eq!(steps.len(), 1);
    let after = f.record("ha-1");
    assert_ne!(after.nodes[0].dir, record.nodes[0].dir, "another server's data is primary now");
    assert_eq!(f.provider.endpoint("ha-1").await.unwrap(), endpoint, "the endpoints stay");
    let mut primary = f.admin_to(endpoint.port).await;
    assert_eq!(query::<String>(&mut primary, &["GET", "greeting"]).await, "hello", "nothing lost");
    let _: () = query(&mut primary, &["SET", "after", "failover"]).await;
    let _: i64 = query(&mut primary, &["WAIT", "2", "5000"]).await;
    let mut replica = f.admin_to(reader.port).await;
    assert_eq!(query::<String>(&mut replica, &["GET", "after"]).await, "failover");
    let role: String = query(&mut replica, &["INFO", "replication"]).await;
    assert_eq!(info(&role, "role"), "slave");
}

#[tokio::test]
async fn a_memcached_plan_of_two_nodes_runs_two_servers_speaking_tls() {
    let f = Fixture::with_tls(true).await;
    let spec = layout_spec("mc-2", Engine::Memcached, layout_plan(1, 0, false, 2));
    let record = f.made(&spec).await;
    let endpoint = f.provider.endpoint("mc-2").await.unwrap();
    let ports: Vec<u16> = record.nodes.iter().map(|n| n.port).collect();
    assert_eq!(endpoint.nodes, ports.iter().map(|p| format!("{HOST}:{p}")).collect::<Vec<_>>());
    assert_eq!(ports.len(), 2);
    assert!(endpoint.tls && endpoint.ca_certificate.is_some());
    for port in ports {
        let version = memcached_version(port, Some(&f.tls())).await.unwrap();
        assert!(version.starts_with("VERSION "), "{version}");
        assert!(memcached_version(port, None).await.is_err(), "plain text answered on {port}");
    }
}

#[tokio::test]
async fn a_plan_change_adds_and_removes_replicas_in_place() {
    let f = Fixture::new().await;
    let small = spec("grows", Engine::Valkey);
    f.made(&small).await;
    let port = f.provider.endpoint("grows").await.unwrap().port;
    let mut c = connect(port, None, ADMIN_USER, &f.admin_password).await.unwrap();
    let _: () = query(&mut c, &["SET", "kept", "yes"]).await;

    let bigger = layout_spec("grows", Engine::Valkey, layout_plan(1, 2, false, 1));
    f.until_done("grows", f.provider.modify(&bigger).await).await;
    let endpoint = f.provider.endpoint("grows").await.unwrap();
    assert_eq!(endpoint.port, port, "the primary stays");
    let reader = endpoint.reader.expect("replicas bring a reader endpoint");
    let mut r = connect(reader.port, None, ADMIN_USER, &f.admin_password).await.unwrap();
    assert_eq!(query::<String>(&mut r, &["GET", "kept"]).await, "yes");
    assert_eq!(f.record("grows").nodes.len(), 3);

    f.until_done("grows", f.provider.modify(&small).await).await;
    let record = f.record("grows");
    assert_eq!(record.nodes.len(), 1);
    assert!(
        !f.provider.root().join("grows/node-1").exists() && !f.provider.root().join("grows/node-2").exists()
    );
    assert!(TcpStream::connect((HOST, reader.port)).await.is_err(), "the replica was stopped");
    assert_eq!(f.provider.endpoint("grows").await.unwrap().reader, None);

    let cluster = layout_spec("grows", Engine::Valkey, layout_plan(2, 0, true, 1));
    let refused = f.provider.modify(&cluster).await.unwrap_err();
    assert!(refused.to_string().contains("restore it from a snapshot"), "{refused}");
}

#[test]
fn a_record_of_one_server_from_before_reads_as_node_zero_and_is_written_anew() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::in_dir(dir.path().to_path_buf());
    let old = r#"{"instance_id":"old","engine":"redis","engine_version":"7.0","port":6390,"pid":4242,
                  "admin_secret":"laptop/admin","admin_user":"broker-admin"}"#;
    fs::write(&paths.record, old).unwrap();
    let record = read_record(&paths).unwrap().unwrap();
    assert_eq!(record.nodes, [Node { port: 6390, pid: Some(4242), ..Node::new(0, false, 0) }]);
    assert!(!record.tls && !record.cluster_mode, "a record from before TLS is plain text");
    write_record(&paths, &record).unwrap();
    let written: serde_json::Value = serde_json::from_slice(&fs::read(&paths.record).unwrap()).unwrap();
    assert!(written.get("port").is_none(), "{written}");
    assert_eq!(written["nodes"][0]["port"], 6390);
    assert_eq!(read_record(&paths).unwrap().unwrap(), record);
    assert_eq!(paths.node(0).data, dir.path().join("data"), "node 0's files stay where they were");
}

#[tokio::test]
async fn a_rotation_reaches_every_server_and_replicas_log_in_with_the_new_admin_password() {
    let f = Fixture::with_tls(true).await;
    let spec = layout_spec("rotating", Engine::Valkey, layout_plan(1, 1, false, 1));
    let record = f.made(&spec).await;
    let ports: Vec<u16> = record.nodes.iter().map(|n| n.port).collect();
    let (old, new) = (generate_password(PASSWORD_LEN), generate_password(PASSWORD_LEN));
    assert_eq!(f.provider.put_user("rotating", &user("app", &[&old])).await, Ok(Progress::Done));
    let app = Principal::User("app".into());
    let both = [new.clone(), old.clone()];
    assert_eq!(f.provider.set_passwords("rotating", &app, &both).await, Ok(Progress::Done));
    assert_eq!(f.provider.passwords_progress("rotating", &app, &both).await, Ok(Progress::Done));
    for &port in &ports {
        for password in [&old, &new] {
            assert!(connect(port, Some(&f.tls()), "app", password).await.is_ok(), "port {port}");
        }
    }

    // The admin's new password, then the old one dropped: the servers log
    // in to their primary with the new one from then on.
    let admin = generate_password(PASSWORD_LEN);
    let grace = [admin.clone(), f.admin_password.clone()];
    assert_eq!(f.provider.set_passwords("rotating", &Principal::Admin, &grace).await, Ok(Progress::Done));
    assert_eq!(
        f.provider.set_passwords("rotating", &Principal::Admin, std::slice::from_ref(&admin)).await,
        Ok(Progress::Done)
    );
    assert_eq!(
        f.provider.passwords_progress("rotating", &Principal::Admin, std::slice::from_ref(&admin)).await,
        Ok(Progress::Done)
    );
    for &port in &ports {
        let mut c = connect(port, Some(&f.tls()), ADMIN_USER, &admin).await.unwrap();
        let got: Vec<String> = query(&mut c, &["CONFIG", "GET", "masterauth"]).await;
        assert_eq!(got.get(1).map(String::as_str), Some(admin.expose_secret()), "port {port}");
        assert!(
            connect(port, Some(&f.tls()), ADMIN_USER, &f.admin_password).await.is_err(),
            "old admin password"
        );
    }
    let mut primary = connect(ports[0], Some(&f.tls()), ADMIN_USER, &admin).await.unwrap();
    let _: () = query(&mut primary, &["SET", "after", "rotation"]).await;
    let copies: i64 = query(&mut primary, &["WAIT", "1", "5000"]).await;
    assert_eq!(copies, 1, "the replica still follows its primary");
}

#[tokio::test]
async fn a_cluster_snapshot_restores_each_shard_into_a_new_cluster() {
    let f = Fixture::with_tls(true).await;
    let plan = layout_plan(3, 0, true, 1);
    let record = f.made(&layout_spec("sharded", Engine::Valkey, plan.clone())).await;
    // One key on each shard, written to the node that serves its slot.
    let mut written = Vec::new();
    for node in &record.nodes {
        let mut c = f.admin_to(node.port).await;
        let nodes = parse_cluster_nodes(&query::<String>(&mut c, &["CLUSTER", "NODES"]).await);
        let owned = nodes.into_iter().find(|n| n.has("myself")).unwrap().slots;
        let key = (0..)
            .map(|n| format!("key-{n}"))
            .find(|k| {
                let slot = slot_of(k);
                owned.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .unwrap();
        let _: () = query(&mut c, &["SET", &key, &format!("from {}", node.port)]).await;
        written.push(key);
    }
    f.act("sharded", &Action::Snapshot { name: "nightly".into() }).await;
    let snapshot = f.provider.snapshots("sharded", None).await.unwrap().pop().expect("the snapshot");
    let dumps = fs::read_dir(f.provider.root().join("_snapshots/sharded")).unwrap().count();
    assert_eq!(dumps, 4, "three dumps and the record");

    let restore = CacheSpec {
        restore: Some(snapshot.reference.clone()),
        ..layout_spec("restored", Engine::Valkey, plan)
    };
    let restored = f.made(&restore).await;
    assert!(!restored.restoring);
    let mut c = f.admin_to(restored.nodes[0].port).await;
    let cluster: String = query(&mut c, &["CLUSTER", "INFO"]).await;
    assert_eq!(info(&cluster, "cluster_state"), "ok", "{cluster}");
    for (key, node) in written.iter().zip(&record.nodes) {
        let slot = slot_of(key);
        let serving = restored
            .nodes
            .iter()
            .find(|n| n.shard == record.nodes.iter().find(|o| o.port == node.port).unwrap().shard)
            .unwrap();
        let mut s = f.admin_to(serving.port).await;
        let got: Option<String> = redis::cmd("GET").arg(key).query_async(&mut s).await.unwrap();
        assert_eq!(got, Some(format!("from {}", node.port)), "{key} (slot {slot})");
    }

    let fewer = CacheSpec {
        restore: Some(snapshot.reference),
        ..layout_spec("smaller", Engine::Valkey, layout_plan(2, 0, true, 1))
    };
    let refused = f.provider.create(&fewer).await.unwrap_err();
    assert!(refused.to_string().contains("holds 3 shard(s) and the plan has 2"), "{refused}");
}

/// The hash slot of a key without a hash tag: CRC16 (XMODEM) mod 16384.
fn slot_of(key: &str) -> u32 {
    let mut crc: u16 = 0;
    for &byte in key.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    u32::from(crc) % 16_384
}

#[tokio::test]
async fn a_failover_repeated_after_a_server_went_down_starts_it_and_fails_over() {
    let f = Fixture::new().await;
    let record = f.made(&layout_spec("halfway", Engine::Valkey, layout_plan(1, 1, false, 1))).await;
    let steps = f.provider.plan_action("halfway", &Action::TestFailover).await.unwrap();
    // What a stop that failed half way leaves: the replica down.
    let paths = Paths::of(f.provider.root(), "halfway").unwrap();
    kill_now(f.provider.node_pid(&record, &record.nodes[1], &paths).unwrap());
    while f.provider.node_pid(&record, &record.nodes[1], &paths).is_some() {
        sleep(POLL).await;
    }
    // As the worker does: a start that fails retryably is started again,
    // then the started one is polled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut progress = loop {
        match f.provider.start_action("halfway", &Action::TestFailover, &steps[0]).await {
            Err(ProviderError::Retryable(why)) => {
                assert!(Instant::now() < deadline, "{why}");
                sleep(Duration::from_millis(200)).await;
            }
            started => break started,
        }
    };
    while !matches!(progress, Ok(Progress::Done)) {
        assert!(Instant::now() < deadline, "{progress:?}");
        sleep(Duration::from_millis(200)).await;
        progress = f.provider.action_progress("halfway", &Action::TestFailover, &steps[0]).await;
    }
    let after = f.record("halfway");
    assert_ne!(after.nodes[0].dir, record.nodes[0].dir, "the replica's data is primary now");
    assert!(f.provider.node_pids(&after, &paths).iter().all(Option::is_some), "both servers run");
}
