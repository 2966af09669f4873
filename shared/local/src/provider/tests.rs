//! Real redis-server, valkey-server and memcached processes on 127.0.0.1,
//! each test under its own temporary root; a guard kills and reaps whatever
//! a test leaves running, even when it fails.

use super::*;
use broker_core::domain::Plan;
use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
use broker_testing::MemorySecrets;
use tokio::io::AsyncReadExt;

const ADMIN_SECRET: &str = "laptop/admin";

/// A provider with its own root and admin password. Dropping it SIGKILLs
/// every server under that root, so a failing test leaves no process behind.
struct Fixture {
    provider: LocalCacheProvider,
    secrets: Arc<MemorySecrets>,
    admin_password: SecretString,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Plain text: these tests read the servers' own replies on raw TCP
    /// sessions. TLS has tests of its own (`topology`, and end to end).
    async fn new() -> Fixture {
        Fixture::with_tls(false).await
    }

    async fn with_tls(tls: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(MemorySecrets::default());
        let admin_password = generate_password(PASSWORD_LEN);
        secrets.create(ADMIN_SECRET, &admin_password).await.unwrap();
        let provider = LocalCacheProvider::new(dir.path().join("caches"), secrets.clone()).with_tls(tls);
        Fixture { provider, secrets, admin_password, dir }
    }

    /// Creates the instance, insists it is done, and returns its port.
    async fn created(&self, instance_id: &str, engine: Engine) -> u16 {
        assert_eq!(self.provider.create(&spec(instance_id, engine)).await, Ok(Progress::Done));
        self.provider.endpoint(instance_id).await.unwrap().port
    }

    fn record(&self, instance_id: &str) -> Record {
        self.provider.existing(instance_id).unwrap().1
    }

    fn running_pid(&self, instance_id: &str) -> Option<u32> {
        let (paths, record) = self.provider.existing(instance_id).unwrap();
        self.provider.node_pid(&record, &record.nodes[0], &paths)
    }

    fn pid(&self, instance_id: &str) -> u32 {
        self.running_pid(instance_id).expect("the server runs")
    }

    /// SIGKILLs the instance's server and waits until it is gone.
    async fn kill(&self, instance_id: &str) -> u32 {
        let pid = self.pid(instance_id);
        kill_now(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.running_pid(instance_id).is_some() {
            assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
            sleep(POLL).await;
        }
        pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        reap(&self.provider);
    }
}

/// SIGKILLs every server under the provider's root and reaps them.
fn reap(provider: &LocalCacheProvider) {
    let Ok(entries) = fs::read_dir(provider.root()) else { return };
    for entry in entries.flatten() {
        let paths = Paths::in_dir(entry.path());
        if let Ok(Some(record)) = read_record(&paths) {
            for pid in provider.node_pids(&record, &paths).into_iter().flatten() {
                kill_now(pid);
            }
        }
    }
    // Reaps what was killed: no zombie outlives the test.
    let mut children = provider.children.lock().unwrap_or_else(PoisonError::into_inner);
    let deadline = std::time::Instant::now() + KILL_WAIT;
    while std::time::Instant::now() < deadline {
        children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
        if children.is_empty() {
            break;
        }
        std::thread::sleep(POLL);
    }
}

fn kill_now(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

fn plan() -> Plan {
    serde_json::from_value(serde_json::json!({
        "id": "plan-small",
        "service_id": "service-redis",
        "name": "small",
        "description": "one small node",
        "node_type": "cache.t4g.micro",
        "engine_versions": ["7.0"],
        "default_engine_version": "7.0",
        "maximum_polling_duration": 3600,
        "metadata": { "displayName": "Small" }
    }))
    .unwrap()
}

fn spec(instance_id: &str, engine: Engine) -> CacheSpec {
    CacheSpec {
        cache_key: instance_id.to_string(),
        engine,
        engine_version: "7.0".into(),
        plan: plan(),
        admin_secret: engine.speaks_redis().then(|| ADMIN_SECRET.to_string()),
        tags: vec![],
        log_delivery: vec![],
        spare_users: vec![],
        restore: None,
        settings: broker_core::domain::settings::of(engine, &plan(), &serde_json::Map::new()),
    }
}

/// A binding user with the plan's rules.
fn user(name: &str, passwords: &[&SecretString]) -> CacheUser {
    CacheUser {
        username: name.to_string(),
        passwords: passwords.iter().map(|p| (*p).clone()).collect(),
        access_string: plan().access_string,
    }
}

/// The server's own answer to `AUTH name password` on a fresh connection:
/// `+OK`, or the error line (`-WRONGPASS ...`) as the server words it.
async fn auth_reply(port: u16, name: &str, password: &SecretString) -> String {
    let mut stream = TcpStream::connect((HOST, port)).await.unwrap();
    let auth = format!("AUTH {name} {}\r\n", password.expose_secret());
    stream.write_all(auth.as_bytes()).await.unwrap();
    read_until(&mut stream, "\r\n").await.trim_end().to_string()
}

fn is_wrongpass(reply: &str) -> bool {
    reply.starts_with("-WRONGPASS")
}

/// Reads until the text read so far ends with `suffix`, or the peer closes
/// ("" then, or what came before).
async fn read_until(stream: &mut TcpStream, suffix: &str) -> String {
    let mut text = Vec::new();
    let mut buffer = [0u8; 512];
    while !text.ends_with(suffix.as_bytes()) {
        let read =
            timeout(Duration::from_secs(2), stream.read(&mut buffer)).await.expect("an answer within 2 s");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A plain TCP session logged in as `name`, to watch the server close it.
async fn session(port: u16, name: &str, password: &SecretString) -> TcpStream {
    let mut stream = TcpStream::connect((HOST, port)).await.unwrap();
    let auth = format!("AUTH {name} {}\r\n", password.expose_secret());
    stream.write_all(auth.as_bytes()).await.unwrap();
    assert_eq!(read_until(&mut stream, "\r\n").await, "+OK\r\n");
    stream
}

/// The server's answer to PING on `session`; "" once it closed the session.
async fn ping(session: &mut TcpStream) -> String {
    let _ = session.write_all(b"PING\r\n").await;
    read_until(session, "\r\n").await
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

// ------------------------------------------------------------ Redis OSS and Valkey

/// The whole life of a binding user on a Redis-protocol engine.
async fn users_get_exactly_the_passwords_they_are_given(engine: Engine) {
    let f = Fixture::new().await;
    let port = f.created("cache-1", engine).await;
    assert_eq!(f.provider.endpoint("cache-1").await, Ok(Endpoint::single("127.0.0.1", port, false)));

    // The default user is off: nothing runs without logging in, and nobody
    // logs in as it.
    let mut anonymous = redis::Client::open(format!("redis://{HOST}:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused = redis::cmd("PING").query_async::<String>(&mut anonymous).await.unwrap_err();
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    let refused = auth_reply(port, "default", &SecretString::from("guess")).await;
    assert!(is_wrongpass(&refused), "{refused}");

    let first = generate_password(PASSWORD_LEN);
    assert_eq!(f.provider.put_user("cache-1", &user("app", &[&first])).await, Ok(Progress::Done));
    assert_eq!(f.provider.user_progress("cache-1", "app").await, Ok(Progress::Done));
    let mut app = connect(port, None, "app", &first).await.unwrap();
    redis::cmd("SET").arg("greeting").arg("hello").query_async::<()>(&mut app).await.unwrap();
    let greeting: String = redis::cmd("GET").arg("greeting").query_async(&mut app).await.unwrap();
    assert_eq!(greeting, "hello");
    let refused = redis::cmd("FLUSHALL").query_async::<()>(&mut app).await.unwrap_err();
    assert_eq!(refused.code(), Some("NOPERM"), "the plan's -@dangerous applies: {refused}");

    // A rotation: both passwords work during the grace period, then only the new one.
    let second = generate_password(PASSWORD_LEN);
    assert_eq!(f.provider.put_user("cache-1", &user("app", &[&second, &first])).await, Ok(Progress::Done));
    assert_eq!(auth_reply(port, "app", &first).await, "+OK");
    assert_eq!(auth_reply(port, "app", &second).await, "+OK");
    assert_eq!(f.provider.put_user("cache-1", &user("app", &[&second])).await, Ok(Progress::Done));
    let refused = auth_reply(port, "app", &first).await;
    assert!(is_wrongpass(&refused), "{refused}");
    assert_eq!(auth_reply(port, "app", &second).await, "+OK");

    // Deleting the user ends its access at once, open sessions included.
    let mut open = session(port, "app", &second).await;
    assert_eq!(ping(&mut open).await, "+PONG\r\n");
    assert_eq!(f.provider.delete_user("cache-1", "app").await, Ok(Progress::Done));
    let refused = auth_reply(port, "app", &second).await;
    assert!(is_wrongpass(&refused), "{refused}");
    assert_eq!(ping(&mut open).await, "", "the deleted user's session is closed");
    assert!(matches!(f.provider.user_progress("cache-1", "app").await, Err(ProviderError::Retryable(_))));
    assert_eq!(f.provider.delete_user("cache-1", "app").await, Ok(Progress::Done));
}

#[tokio::test]
async fn redis_refuses_the_default_user_and_admits_users_with_exactly_their_current_passwords() {
    users_get_exactly_the_passwords_they_are_given(Engine::Redis).await;
}

#[tokio::test]
async fn valkey_refuses_the_default_user_and_admits_users_with_exactly_their_current_passwords() {
    users_get_exactly_the_passwords_they_are_given(Engine::Valkey).await;
}

/// A rotation through `set_passwords`: both passwords during the grace
/// period, then only the new one; the user's rules stay as they were.
#[tokio::test]
async fn a_rotation_gives_a_user_two_passwords_then_one_and_keeps_its_rules() {
    let f = Fixture::new().await;
    let port = f.created("cache-1", Engine::Valkey).await;
    let app = Principal::User("app".into());
    let (old, new) = (generate_password(PASSWORD_LEN), generate_password(PASSWORD_LEN));
    f.provider.put_user("cache-1", &user("app", &[&old])).await.unwrap();

    let both = [new.clone(), old.clone()];
    assert_eq!(f.provider.set_passwords("cache-1", &app, &both).await, Ok(Progress::Done));
    assert_eq!(f.provider.passwords_progress("cache-1", &app, &both).await, Ok(Progress::Done));
    assert_eq!(auth_reply(port, "app", &old).await, "+OK");
    let mut c = connect(port, None, "app", &new).await.unwrap();
    let refused = redis::cmd("FLUSHALL").query_async::<()>(&mut c).await.unwrap_err();
    assert_eq!(refused.code(), Some("NOPERM"), "the plan's rules survive a rotation: {refused}");
    // Checking for one password while two are held is not done yet.
    let just_new = [new.clone()];
    assert!(matches!(
        f.provider.passwords_progress("cache-1", &app, &just_new).await,
        Ok(Progress::Working { .. })
    ));

    assert_eq!(f.provider.set_passwords("cache-1", &app, &just_new).await, Ok(Progress::Done));
    assert_eq!(f.provider.set_passwords("cache-1", &app, &just_new).await, Ok(Progress::Done));
    assert_eq!(f.provider.passwords_progress("cache-1", &app, &just_new).await, Ok(Progress::Done));
    assert!(is_wrongpass(&auth_reply(port, "app", &old).await));
    assert_eq!(auth_reply(port, "app", &new).await, "+OK");
    let detail = match f.provider.passwords_progress("cache-1", &app, &both).await {
        Ok(Progress::Working { detail }) => detail,
        other => panic!("{other:?}"),
    };
    assert!(!detail.contains(old.expose_secret()) && !detail.contains(new.expose_secret()));
}

/// The admin's password rotates too; the provider still gets in when the
/// secret's current version is the one just removed.
#[tokio::test]
async fn a_rotation_of_the_admin_password_keeps_the_provider_in() {
    let f = Fixture::new().await;
    let port = f.created("cache-1", Engine::Redis).await;
    let new = generate_password(PASSWORD_LEN);
    let both = [new.clone(), f.admin_password.clone()];
    assert_eq!(f.provider.set_passwords("cache-1", &Principal::Admin, &both).await, Ok(Progress::Done));
    assert_eq!(f.provider.passwords_progress("cache-1", &Principal::Admin, &both).await, Ok(Progress::Done));
    let just_new = [new.clone()];
    assert_eq!(f.provider.set_passwords("cache-1", &Principal::Admin, &just_new).await, Ok(Progress::Done));
    assert!(is_wrongpass(&auth_reply(port, ADMIN_USER, &f.admin_password).await));
    assert_eq!(auth_reply(port, ADMIN_USER, &new).await, "+OK");
    // Reserved and Memcached: refused, saying why.
    let reserved = f.provider.set_passwords("cache-1", &Principal::User("default".into()), &just_new).await;
    assert!(matches!(reserved, Err(ProviderError::Permanent(_))), "{reserved:?}");
    f.created("mc-1", Engine::Memcached).await;
    let memcached = f.provider.set_passwords("mc-1", &Principal::Admin, &just_new).await;
    assert!(
        matches!(&memcached, Err(ProviderError::Permanent(m)) if m.contains("Memcached")),
        "{memcached:?}"
    );
    let none = f.provider.set_passwords("cache-1", &Principal::Admin, &[]).await;
    assert!(matches!(none, Err(ProviderError::Permanent(_))), "{none:?}");
}

#[tokio::test]
async fn creating_twice_keeps_the_same_server_on_the_same_port() {
    let f = Fixture::new().await;
    let port = f.created("twice", Engine::Redis).await;
    let pid = f.pid("twice");

    assert_eq!(f.provider.create(&spec("twice", Engine::Redis)).await, Ok(Progress::Done));
    assert_eq!(f.provider.adopt("twice").await, Ok(Progress::Done));
    assert_eq!(f.provider.progress("twice").await, Ok(Progress::Done));

    assert_eq!(f.provider.endpoint("twice").await.unwrap().port, port);
    assert_eq!(f.pid("twice"), pid);
    let Err(ProviderError::Permanent(why)) = f.provider.create(&spec("twice", Engine::Valkey)).await else {
        panic!("another engine under the same id must be refused");
    };
    assert!(why.contains("already runs redis"), "{why}");
}

#[tokio::test]
async fn deleting_stops_the_server_and_removes_its_directory() {
    let f = Fixture::new().await;
    let port = f.created("doomed", Engine::Redis).await;
    let pid = f.pid("doomed");
    let dir = f.provider.root().join("doomed");
    for file in ["instance.json", "data", "server.log", "server.conf", "users.acl"] {
        assert!(dir.join(file).exists(), "{file} is there while the instance lives");
    }

    assert_eq!(f.provider.delete("doomed", None).await, Ok(Progress::Done));

    assert!(!dir.exists());
    assert!(!is_our_server(pid, port, &dir.join("server.conf")));
    assert!(TcpStream::connect((HOST, port)).await.is_err(), "nothing answers on {port}");
    assert_eq!(f.provider.delete("doomed", None).await, Ok(Progress::Done));
    assert_eq!(
        f.provider.progress("doomed").await,
        Err(ProviderError::Permanent("no local cache for instance doomed".into()))
    );
}

#[tokio::test]
async fn adopting_a_killed_server_starts_it_again_with_its_data_and_users() {
    let f = Fixture::new().await;
    let port = f.created("phoenix", Engine::Redis).await;
    let password = generate_password(PASSWORD_LEN);
    f.provider.put_user("phoenix", &user("app", &[&password])).await.unwrap();
    let mut app = connect(port, None, "app", &password).await.unwrap();
    redis::cmd("SET").arg("kept").arg("across restarts").query_async::<()>(&mut app).await.unwrap();

    let old_pid = f.kill("phoenix").await;
    let Err(ProviderError::Permanent(why)) = f.provider.progress("phoenix").await else {
        panic!("a dead server is a failure");
    };
    assert!(why.contains("is not running") && why.contains("server.log"), "{why}");

    assert_eq!(f.provider.adopt("phoenix").await, Ok(Progress::Done));

    assert_ne!(f.pid("phoenix"), old_pid);
    let port = f.provider.endpoint("phoenix").await.unwrap().port;
    let mut app = connect(port, None, "app", &password).await.unwrap();
    let kept: String = redis::cmd("GET").arg("kept").query_async(&mut app).await.unwrap();
    assert_eq!(kept, "across restarts");
}

/// A crash between starting a server and recording it used to leave a
/// server no record named, and the next create started a second one on the
/// same data directory. The record now names the port before the server
/// starts: with a binary whose exec fails (its interpreter is missing) the
/// record is there, port chosen and no pid. And after a crash right after
/// the start, the next create adopts that server by its pid file.
#[tokio::test]
async fn the_record_names_the_port_before_the_server_starts_so_a_crash_between_leaves_no_stray_server() {
    let f = Fixture::new().await;
    let broken = f.dir.path().join("redis-without-interpreter");
    fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o755)).unwrap();
    let failing = LocalCacheProvider::new(f.dir.path().join("failing"), f.secrets.clone())
        .with_binary(Engine::Redis, &broken);
    assert!(failing.create(&spec("never-started", Engine::Redis)).await.is_err());
    let (_, record) = failing.existing("never-started").expect("a record written before the start");
    assert!(record.nodes[0].port > 0 && record.nodes[0].pid.is_none(), "{record:?}");

    let port = f.created("crashy", Engine::Redis).await;
    let pid = f.pid("crashy");
    let (paths, record) = f.provider.existing("crashy").unwrap();
    // What a crash right after the spawn leaves: the record without a pid,
    // and a running server.
    let mut record = record;
    record.nodes[0].pid = None;
    write_record(&paths, &record).unwrap();
    let restarted = LocalCacheProvider::new(f.provider.root().to_path_buf(), f.secrets.clone());
    assert_eq!(restarted.create(&spec("crashy", Engine::Redis)).await, Ok(Progress::Done));
    let (paths, record) = restarted.existing("crashy").unwrap();
    assert_eq!(record.nodes[0].port, port);
    assert_eq!(
        restarted.node_pid(&record, &record.nodes[0], &paths),
        Some(pid),
        "the first server, adopted: no second one"
    );
}

#[tokio::test]
async fn a_restarted_broker_adopts_running_servers_without_restarting_them() {
    let f = Fixture::new().await;
    f.created("survivor", Engine::Redis).await;
    f.created("survivor-mc", Engine::Memcached).await;
    let pids = [f.pid("survivor"), f.pid("survivor-mc")];
    let restarted = LocalCacheProvider::new(f.provider.root().to_path_buf(), f.secrets.clone());

    for (id, pid) in ["survivor", "survivor-mc"].into_iter().zip(pids) {
        assert_eq!(restarted.adopt(id).await, Ok(Progress::Done), "{id}");
        assert_eq!(restarted.progress(id).await, Ok(Progress::Done), "{id}");
        let (paths, record) = restarted.existing(id).unwrap();
        assert_eq!(restarted.node_pid(&record, &record.nodes[0], &paths), Some(pid), "{id} kept its server");
    }
    let port = restarted.endpoint("survivor").await.unwrap().port;
    assert_eq!(restarted.delete("survivor", None).await, Ok(Progress::Done));
    assert!(TcpStream::connect((HOST, port)).await.is_err(), "the adopted server was stopped");
}

#[tokio::test]
async fn adopting_moves_to_a_new_port_when_someone_took_the_old_one() {
    let f = Fixture::new().await;
    let old_port = f.created("moved", Engine::Valkey).await;
    f.kill("moved").await;
    let squatter = std::net::TcpListener::bind((HOST, old_port)).unwrap();

    assert_eq!(f.provider.adopt("moved").await, Ok(Progress::Done));

    let new_port = f.provider.endpoint("moved").await.unwrap().port;
    assert_ne!(new_port, old_port);
    assert_eq!(f.record("moved").nodes[0].port, new_port);
    assert_eq!(auth_reply(new_port, ADMIN_USER, &f.admin_password).await, "+OK");
    drop(squatter);
}

#[tokio::test]
async fn creating_again_after_the_server_died_starts_it_again() {
    let f = Fixture::new().await;
    f.created("retried", Engine::Memcached).await;
    let old_pid = f.kill("retried").await;

    assert_eq!(f.provider.create(&spec("retried", Engine::Memcached)).await, Ok(Progress::Done));

    assert_ne!(f.pid("retried"), old_pid);
}

#[tokio::test]
async fn stop_all_stops_every_server_but_keeps_their_data_for_adoption() {
    let f = Fixture::new().await;
    f.created("first", Engine::Redis).await;
    f.created("second", Engine::Memcached).await;

    f.provider.stop_all().await;

    for id in ["first", "second"] {
        assert_eq!(f.running_pid(id), None, "{id} is stopped");
        assert!(f.provider.root().join(id).join("instance.json").exists(), "{id} is kept");
        assert_eq!(f.provider.adopt(id).await, Ok(Progress::Done), "{id} comes back");
    }
}

#[tokio::test]
async fn no_password_reaches_a_file_or_an_error_message() {
    let f = Fixture::new().await;
    f.created("secretive", Engine::Redis).await;
    let password = generate_password(PASSWORD_LEN);
    f.provider.put_user("secretive", &user("app", &[&password])).await.unwrap();
    let mut bad = user("other", &[&password]);
    bad.access_string = "+@all no-such-rule".into();

    let Err(ProviderError::Permanent(why)) = f.provider.put_user("secretive", &bad).await else {
        panic!("Redis rejects an unknown rule");
    };

    assert!(why.contains("no-such-rule"), "{why}");
    assert!(!why.contains(password.expose_secret()), "{why}");
    let files = files_under(f.provider.root());
    assert!(files.iter().any(|file| file.ends_with("users.acl")));
    for file in files {
        let bytes = fs::read(&file).unwrap();
        for secret in [&f.admin_password, &password] {
            assert!(!contains(&bytes, secret.expose_secret()), "{} holds a password", file.display());
        }
    }
    let acl = fs::read_to_string(f.provider.root().join("secretive/users.acl")).unwrap();
    let admin_hash = sha256_hex(&f.admin_password).await.unwrap();
    assert!(acl.contains(&format!("#{admin_hash}")), "{acl}");
    assert_eq!(f.record("secretive").admin_secret.as_deref(), Some(ADMIN_SECRET));
    assert_eq!(f.record("secretive").admin_user.as_deref(), Some(ADMIN_USER));
}

#[tokio::test]
async fn a_missing_admin_secret_is_a_permanent_error() {
    let f = Fixture::new().await;
    f.secrets.delete(ADMIN_SECRET).await.unwrap();

    let created = f.provider.create(&spec("keyless", Engine::Redis)).await;

    assert_eq!(
        created,
        Err(ProviderError::Permanent(format!("the admin secret {ADMIN_SECRET} does not exist")))
    );
}

// ------------------------------------------------------------ Memcached

#[tokio::test]
async fn memcached_stores_and_returns_values_until_deleted_then_its_port_is_closed() {
    let f = Fixture::new().await;
    let port = f.created("mc", Engine::Memcached).await;
    let mut client = TcpStream::connect((HOST, port)).await.unwrap();
    client.write_all(b"set greeting 0 0 5\r\nhello\r\n").await.unwrap();
    assert_eq!(read_until(&mut client, "\r\n").await, "STORED\r\n");
    client.write_all(b"get greeting\r\n").await.unwrap();
    assert_eq!(read_until(&mut client, "END\r\n").await, "VALUE greeting 0 5\r\nhello\r\nEND\r\n");
    drop(client);

    assert_eq!(f.provider.delete("mc", None).await, Ok(Progress::Done));

    assert!(TcpStream::connect((HOST, port)).await.is_err(), "nothing answers on {port}");
}

#[tokio::test]
async fn memcached_has_no_users_so_user_calls_change_nothing() {
    let f = Fixture::new().await;
    f.created("mc-users", Engine::Memcached).await;
    let password = generate_password(PASSWORD_LEN);

    assert_eq!(f.provider.put_user("mc-users", &user("app", &[&password])).await, Ok(Progress::Done));
    assert_eq!(f.provider.user_progress("mc-users", "app").await, Ok(Progress::Done));
    assert_eq!(f.provider.delete_user("mc-users", "app").await, Ok(Progress::Done));
    assert_eq!(f.provider.progress("mc-users").await, Ok(Progress::Done));
}

#[tokio::test]
async fn modifying_records_the_new_version_and_keeps_the_server() {
    let f = Fixture::new().await;
    f.created("versioned", Engine::Memcached).await;
    let pid = f.pid("versioned");
    let mut newer = spec("versioned", Engine::Memcached);
    newer.engine_version = "1.6".into();

    assert_eq!(f.provider.modify(&newer).await, Ok(Progress::Done));

    assert_eq!(f.record("versioned").engine_version, "1.6");
    assert_eq!(f.pid("versioned"), pid);
}

/// The server's `maxmemory-policy`, asked as the admin.
async fn eviction_policy(f: &Fixture, port: u16) -> String {
    let mut c = connect(port, None, ADMIN_USER, &f.admin_password).await.unwrap();
    let got: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut c).await.unwrap();
    got[1].clone()
}

#[tokio::test]
async fn the_eviction_policy_is_elasticaches_default_or_the_instances_and_survives_a_restart() {
    let f = Fixture::new().await;
    let port = f.created("evicting", Engine::Valkey).await;
    assert_eq!(eviction_policy(&f, port).await, "volatile-lru", "ElastiCache's default, not the server's");

    let mut chosen = spec("evicting", Engine::Valkey);
    chosen.settings.maxmemory_policy = Some("allkeys-lfu".into());
    let pid = f.pid("evicting");
    assert_eq!(f.provider.modify(&chosen).await, Ok(Progress::Done));
    assert_eq!(eviction_policy(&f, port).await, "allkeys-lfu");
    assert_eq!(f.pid("evicting"), pid, "set without a restart");

    f.kill("evicting").await;
    assert_eq!(f.provider.adopt("evicting").await, Ok(Progress::Done));
    let port = f.provider.endpoint("evicting").await.unwrap().port;
    assert_eq!(eviction_policy(&f, port).await, "allkeys-lfu", "written where the next start reads it");
}

#[tokio::test]
async fn a_serverless_plan_runs_one_server_whose_memory_is_the_plans_data_limit() {
    let f = Fixture::new().await;
    let catalog = broker_core::catalog::CatalogFile::builtin();
    let serverless =
        |name: &str| catalog.plans.iter().find(|p| p.name == name && p.serverless).unwrap().clone();
    let mut wanted = spec("scaling", Engine::Valkey);
    wanted.plan = serverless("serverless");
    assert_eq!(f.provider.create(&wanted).await, Ok(Progress::Done));
    let port = f.provider.endpoint("scaling").await.unwrap().port;
    let password = f.admin_password.clone();
    let maxmemory = |port| {
        let password = password.clone();
        async move {
            let mut c = connect(port, None, ADMIN_USER, &password).await.unwrap();
            let got: Vec<String> =
                redis::cmd("CONFIG").arg("GET").arg("maxmemory").query_async(&mut c).await.unwrap();
            got[1].parse::<u64>().unwrap()
        }
    };
    assert_eq!(maxmemory(port).await, 10 << 30, "10 GB");

    // A change to a bigger serverless plan raises it, without a restart.
    let pid = f.pid("scaling");
    wanted.plan = serverless("serverless-large");
    assert_eq!(f.provider.modify(&wanted).await, Ok(Progress::Done));
    assert_eq!(maxmemory(port).await, 100 << 30);
    assert_eq!(f.pid("scaling"), pid);
}

// ------------------------------------------------------------ errors and helpers

#[tokio::test]
async fn a_missing_binary_is_a_permanent_error_naming_the_package_to_install() {
    let f = Fixture::new().await;
    let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
        .with_binary(Engine::Valkey, f.dir.path().join("no-such-valkey-server"));

    let Err(ProviderError::Permanent(why)) = provider.create(&spec("v", Engine::Valkey)).await else {
        panic!("a missing binary cannot be retried away");
    };

    assert!(why.contains("valkey-server") && why.contains("bookworm-backports"), "{why}");
    assert!(!provider.root().join("v").exists(), "nothing is left behind");
}

/// An executable shell script standing in for a server binary.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_port_taken_before_the_server_binds_it_is_retried_on_another() {
    let f = Fixture::new().await;
    let unlucky = script(
        f.dir.path(),
        "unlucky-memcached",
        "if [ ! -e \"$0.tried\" ]; then : > \"$0.tried\"\n\
         echo 'failed to listen on one of interface(s) 127.0.0.1: Address already in use' >&2\n\
         exit 71; fi\n\
         exec memcached \"$@\"",
    );
    let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
        .with_binary(Engine::Memcached, unlucky);

    let created = provider.create(&spec("unlucky", Engine::Memcached)).await;
    let log = fs::read_to_string(provider.root().join("unlucky/server.log")).unwrap_or_default();
    provider.stop_all().await;

    assert_eq!(created, Ok(Progress::Done));
    assert!(log.contains(PORT_TAKEN), "the first attempt failed: {log}");
}

#[tokio::test]
async fn a_server_that_exits_at_once_fails_permanently_and_its_log_goes_to_the_operator() {
    let f = Fixture::new().await;
    let broken = script(f.dir.path(), "broken-redis", "echo '*** FATAL CONFIG FILE ERROR ***' >&2; exit 1");
    let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
        .with_binary(Engine::Redis, broken);

    let logs = broker_testing::LogCapture::start();
    let created = provider.create(&spec("broken", Engine::Redis)).await;

    let Err(ProviderError::Permanent(why)) = created else { panic!("{created:?}") };
    assert!(why.contains("is not running") && why.contains("server.log"), "{why}");
    // The server's own words reach the operator's log, not the platform.
    assert!(!why.contains("FATAL CONFIG FILE ERROR"), "{why}");
    let logged = logs.text();
    assert!(logged.contains("FATAL CONFIG FILE ERROR") && logged.contains("broken"), "{logged}");
    assert!(!why.contains(f.admin_password.expose_secret()));
    assert!(!logged.contains(f.admin_password.expose_secret()));
}

#[test]
fn binaries_missing_from_path_name_their_debian_package_and_variable() {
    let empty = tempfile::tempdir().unwrap();
    for (engine, install, variable) in [
        (Engine::Redis, "apt-get install redis-server", "REDIS_SERVER_BIN"),
        (Engine::Valkey, "apt-get install -t bookworm-backports valkey-server", "VALKEY_SERVER_BIN"),
        (Engine::Memcached, "apt-get install memcached", "MEMCACHED_BIN"),
    ] {
        let found = resolve_binary(engine, None, Some(empty.path().into()));
        let Err(ProviderError::Permanent(why)) = found else { panic!("{found:?}") };
        assert!(why.contains(install) && why.contains(variable), "{why}");
    }
}

#[test]
fn a_configured_binary_wins_over_the_usual_name() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("my-redis");
    fs::write(&binary, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();

    assert_eq!(resolve_binary(Engine::Redis, Some(binary.clone().into()), None), Ok(binary.clone()));
    assert_eq!(resolve_binary(Engine::Redis, Some("my-redis".into()), Some(dir.path().into())), Ok(binary));
}

#[tokio::test]
async fn unknown_instances_are_permanent_errors_except_for_deletes() {
    let f = Fixture::new().await;
    let unknown = Err(ProviderError::Permanent("no local cache for instance nobody".into()));
    let password = generate_password(PASSWORD_LEN);

    assert_eq!(f.provider.progress("nobody").await, unknown);
    assert_eq!(f.provider.adopt("nobody").await, unknown);
    assert_eq!(f.provider.modify(&spec("nobody", Engine::Redis)).await, unknown);
    assert_eq!(f.provider.put_user("nobody", &user("app", &[&password])).await, unknown);
    assert_eq!(f.provider.user_progress("nobody", "app").await, unknown);
    assert!(f.provider.endpoint("nobody").await.is_err());
    assert_eq!(f.provider.delete("nobody", None).await, Ok(Progress::Done));
    assert_eq!(f.provider.delete_user("nobody", "app").await, Ok(Progress::Done));
}

#[tokio::test]
async fn spare_users_are_refused_since_binds_make_users_at_once() {
    let f = Fixture::new().await;
    assert!(f.provider.users_change_at_once());
    let mut s = spec("spares", Engine::Redis);
    s.spare_users = vec![user("s-1", &[&generate_password(PASSWORD_LEN)])];
    let err = f.provider.create(&s).await.unwrap_err();
    assert!(matches!(&err, ProviderError::Permanent(m) if m.contains("no spare users")), "{err:?}");
    assert!(!f.provider.root().join(dir_name("spares")).exists(), "nothing is made");
}

#[test]
fn the_default_and_admin_users_are_reserved() {
    for name in ["default", ADMIN_USER, "", "two words"] {
        assert!(matches!(check_username(name), Err(ProviderError::Permanent(_))), "{name:?}");
    }
    assert_eq!(check_username("binding-1"), Ok(()));
}

#[test]
fn instance_ids_become_distinct_filesystem_safe_directory_names() {
    let guid = "6f1c2a9e-0b7d-4c1e-9a53-2d1f0e8b7c64";
    assert_eq!(dir_name(guid), guid);
    assert_ne!(dir_name("a/b"), dir_name("a_b"));
    for id in [".", "..", "../etc", "a b", "x/y"] {
        let name = dir_name(id);
        assert!(!name.contains('/') && !name.contains('.') && !name.is_empty(), "{id} -> {name}");
    }
    assert!(Paths::of(Path::new("/tmp"), "").is_err());
}

#[test]
fn redaction_blanks_every_password_out_of_a_message() {
    let password = SecretString::from("hunter2hunter2");
    assert_eq!(redact("ERR bad modifier '>hunter2hunter2'", &[password]), "ERR bad modifier '>[redacted]'");
}

#[tokio::test]
async fn admin_passwords_are_hashed_the_way_redis_acls_expect() {
    let digest = sha256_hex(&SecretString::from("abc")).await.unwrap();
    assert_eq!(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn a_process_that_is_not_our_server_is_not_taken_for_it() {
    let me = std::process::id();
    assert!(!is_our_server(me, 1, Path::new("/nonexistent/server.conf")));
    assert!(!is_our_server(u32::MAX, 1, Path::new("/nonexistent/server.conf")));
}

/// The provider contract on real redis-server processes.
/// `stats` reads what each server says of itself, as its admin; a cache
/// whose server is down has nothing to say.
#[tokio::test]
async fn stats_read_each_servers_own_counters() {
    let f = Fixture::new().await;
    f.created("cache-1", Engine::Valkey).await;
    f.created("mc-1", Engine::Memcached).await;
    let valkey = f.provider.stats("cache-1").await.unwrap().expect("the server runs");
    assert!(valkey.connections >= 1, "the connection asking is counted: {valkey:?}");
    assert!(valkey.used_bytes > 0 && valkey.cpu_secs >= 0.0, "{valkey:?}");
    let memcached = f.provider.stats("mc-1").await.unwrap().expect("the server runs");
    assert!(memcached.connections >= 1 && memcached.limit_bytes > 0, "{memcached:?}");
    f.kill("cache-1").await;
    assert_eq!(f.provider.stats("cache-1").await, Ok(None));
    assert_eq!(f.provider.stats("never-made").await, Ok(None));
}

mod contract {
    use super::*;
    use broker_testing::contract::provider::Backend;

    struct Redis;

    impl Backend for Redis {
        fn spec(&self, instance_id: &str) -> CacheSpec {
            spec(instance_id, Engine::Redis)
        }
    }

    /// Stops every server the case started; the root goes with `_root`.
    struct Guard {
        provider: Arc<LocalCacheProvider>,
        _root: tempfile::TempDir,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            reap(&self.provider);
        }
    }

    async fn open() -> (Arc<LocalCacheProvider>, Redis, Guard) {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(MemorySecrets::default());
        secrets.create(ADMIN_SECRET, &generate_password(PASSWORD_LEN)).await.unwrap();
        let provider = Arc::new(LocalCacheProvider::new(dir.path().join("caches"), secrets));
        (provider.clone(), Redis, Guard { provider, _root: dir })
    }

    broker_testing::provider_contract!(open);
}

mod topology;
