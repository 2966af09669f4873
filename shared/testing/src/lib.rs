//! Test doubles and harnesses, a dev-dependency only: a scripted cache
//! provider ([`FakeProvider`]), an in-memory secret store
//! ([`MemorySecrets`]), sample records ([`records`]), moto in server mode
//! ([`MotoServer`]), and ([`aws`]) the stand-ins for the ElastiCache calls
//! moto lacks and a recorder of Secrets Manager requests, and
//! ([`cloudwatch`]) a CloudWatch alarms stand-in.

pub mod aws;
pub mod chaos;
pub mod cloudwatch;
pub mod contract;
mod logs;

pub use logs::LogCapture;

/// The processes whose working directory or command line is inside `dir`
/// (a laptop state directory's cache servers run in their data directory,
/// and Redis rewrites its command line), as `/proc/<pid>: <command line>`.
pub fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let cwd = std::fs::read_link(path.join("cwd")).ok();
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cwd.is_some_and(|c| c.starts_with(dir)) || cmdline.contains(&*dir.to_string_lossy()) {
            found.push(format!("{}: {cmdline}", path.display()));
        }
    }
    found
}

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use broker_core::domain::{Action, ActionStep, CacheUser, Endpoint, Snapshot, SnapshotKind};
use broker_core::ports::{CacheNode, CacheProvider, CacheSpec, Principal, Progress, ProviderError};
use secrecy::SecretString;

/// A provider call, as the fake records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create(String),
    Progress(String),
    Endpoint(String),
    Modify(String),
    /// The cache and the tags given.
    Retag {
        instance: String,
        tags: Vec<(String, String)>,
    },
    /// `final_snapshot` is the key the worker gave for one (the deprovision's
    /// operation id), when the plan keeps a final snapshot.
    Delete {
        instance: String,
        final_snapshot: Option<String>,
    },
    PutUser {
        instance: String,
        username: String,
        passwords: usize,
    },
    DeleteUser {
        instance: String,
        username: String,
    },
    UserProgress {
        instance: String,
        username: String,
    },
    SetPasswords {
        instance: String,
        principal: Principal,
        passwords: usize,
    },
    PasswordsProgress {
        instance: String,
        principal: Principal,
        passwords: usize,
    },
    /// An action started on one of its units.
    StartAction {
        instance: String,
        action: Action,
        target: String,
    },
    ActionProgress {
        instance: String,
        action: Action,
        target: String,
    },
    /// The restore a create was given (`CacheSpec::restore`).
    Restore {
        instance: String,
        reference: String,
    },
}

/// A cache provider whose answers a test scripts: each call takes the next
/// scripted answer for its kind, or `Done` when none is left.
#[derive(Default)]
pub struct FakeProvider {
    /// What `users_change_at_once` answers: like laptop mode's processes
    /// when true, like ElastiCache (spare users) when false.
    pub users_at_once: bool,
    calls: Mutex<Vec<Call>>,
    script: Mutex<HashMap<&'static str, VecDeque<Result<Progress, ProviderError>>>>,
    /// Live caches and their users, to assert what exists.
    caches: Mutex<HashMap<String, Vec<String>>>,
    /// Each cache's snapshots, by cache key: what `snapshot` actions took
    /// and what a test added; they outlive the cache, as ElastiCache's do.
    snapshots: Mutex<HashMap<String, Vec<Snapshot>>>,
    /// The settings of the last create or modify of each cache.
    settings: Mutex<HashMap<String, broker_core::domain::settings::CacheSettings>>,
    /// The service updates a maintenance finds pending (see
    /// [`FakeProvider::set_service_updates`]).
    service_updates: Mutex<Vec<String>>,
    /// The engine and version of the last create or modify of each cache.
    engines: Mutex<HashMap<String, (broker_core::domain::Engine, String)>>,
}

impl FakeProvider {
    /// A provider whose users change at once (laptop mode's) or take time
    /// to add (ElastiCache's), as `users_at_once` says.
    pub fn new(users_at_once: bool) -> FakeProvider {
        FakeProvider { users_at_once, ..FakeProvider::default() }
    }

    /// Queues answers for calls of `kind` ("create", "progress", "modify",
    /// "delete", "put_user", "delete_user", "user_progress", "set_passwords",
    /// "passwords_progress").
    pub fn script(&self, kind: &'static str, answers: Vec<Result<Progress, ProviderError>>) {
        self.script.lock().unwrap().entry(kind).or_default().extend(answers);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| pred(c)).count()
    }

    pub fn caches(&self) -> Vec<String> {
        let mut v: Vec<String> = self.caches.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// Gives cache `instance` an available snapshot of `kind` named `name`,
    /// taken at `at`; its reference is `{instance}/{name}`.
    pub fn add_snapshot(&self, instance: &str, name: &str, kind: SnapshotKind, at: i64) {
        self.snapshots.lock().unwrap().entry(instance.to_string()).or_default().push(Snapshot {
            name: name.to_string(),
            kind,
            status: "available".to_string(),
            created_at: Some(at),
            reference: format!("{instance}/{name}"),
        });
    }

    /// The settings the last create or modify of cache `instance` asked for.
    pub fn settings(&self, instance: &str) -> Option<broker_core::domain::settings::CacheSettings> {
        self.settings.lock().unwrap().get(instance).cloned()
    }

    /// The service updates every cache has pending for a maintenance.
    pub fn set_service_updates(&self, names: &[&str]) {
        *self.service_updates.lock().unwrap() = names.iter().map(|n| n.to_string()).collect();
    }

    /// The engine and version the last create or modify of cache
    /// `instance` asked for.
    pub fn engine(&self, instance: &str) -> Option<(broker_core::domain::Engine, String)> {
        self.engines.lock().unwrap().get(instance).cloned()
    }

    /// The names of cache `instance`'s snapshots.
    pub fn snapshot_names(&self, instance: &str) -> Vec<String> {
        self.snapshots
            .lock()
            .unwrap()
            .get(instance)
            .map(|v| v.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    pub fn users(&self, instance: &str) -> Vec<String> {
        self.caches.lock().unwrap().get(instance).cloned().unwrap_or_default()
    }

    fn answer(&self, kind: &'static str, call: Call) -> Result<Progress, ProviderError> {
        self.calls.lock().unwrap().push(call);
        self.script.lock().unwrap().get_mut(kind).and_then(VecDeque::pop_front).unwrap_or(Ok(Progress::Done))
    }
}

#[async_trait]
impl CacheProvider for FakeProvider {
    fn users_change_at_once(&self) -> bool {
        self.users_at_once
    }
    async fn create(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        if let Some(reference) = &spec.restore {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Restore { instance: spec.cache_key.clone(), reference: reference.clone() });
        }
        self.settings.lock().unwrap().insert(spec.cache_key.clone(), spec.settings.clone());
        self.engines
            .lock()
            .unwrap()
            .insert(spec.cache_key.clone(), (spec.engine, spec.engine_version.clone()));
        let r = self.answer("create", Call::Create(spec.cache_key.clone()));
        if r.is_ok() {
            let mut caches = self.caches.lock().unwrap();
            let users = caches.entry(spec.cache_key.clone()).or_default();
            for spare in &spec.spare_users {
                if !users.contains(&spare.username) {
                    users.push(spare.username.clone());
                }
            }
        }
        r
    }
    async fn progress(&self, id: &str) -> Result<Progress, ProviderError> {
        self.answer("progress", Call::Progress(id.into()))
    }
    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.settings.lock().unwrap().insert(spec.cache_key.clone(), spec.settings.clone());
        self.engines
            .lock()
            .unwrap()
            .insert(spec.cache_key.clone(), (spec.engine, spec.engine_version.clone()));
        self.answer("modify", Call::Modify(spec.cache_key.clone()))
    }
    async fn retag(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.answer("retag", Call::Retag { instance: spec.cache_key.clone(), tags: spec.tags.clone() })
    }
    async fn delete(&self, id: &str, final_snapshot: Option<&str>) -> Result<Progress, ProviderError> {
        let call = Call::Delete { instance: id.into(), final_snapshot: final_snapshot.map(str::to_string) };
        let r = self.answer("delete", call);
        if let Ok(Progress::Done) = r {
            self.caches.lock().unwrap().remove(id);
        }
        r
    }
    async fn endpoint(&self, id: &str) -> Result<Endpoint, ProviderError> {
        self.calls.lock().unwrap().push(Call::Endpoint(id.into()));
        Ok(Endpoint::single("127.0.0.1", 6379, false))
    }
    async fn nodes(&self, id: &str) -> Result<Vec<CacheNode>, ProviderError> {
        let exists = self.caches.lock().unwrap().contains_key(id);
        Ok(if exists { vec![CacheNode { cluster_id: format!("{id}-001"), node_id: None }] } else { vec![] })
    }
    async fn put_user(&self, id: &str, user: &CacheUser) -> Result<Progress, ProviderError> {
        let call = Call::PutUser {
            instance: id.into(),
            username: user.username.clone(),
            passwords: user.passwords.len(),
        };
        let r = self.answer("put_user", call);
        if r.is_ok() {
            let mut caches = self.caches.lock().unwrap();
            let users = caches.entry(id.to_string()).or_default();
            if !users.contains(&user.username) {
                users.push(user.username.clone());
            }
        }
        r
    }
    async fn delete_user(&self, id: &str, username: &str) -> Result<Progress, ProviderError> {
        let call = Call::DeleteUser { instance: id.into(), username: username.into() };
        let r = self.answer("delete_user", call);
        if let Ok(Progress::Done) = r
            && let Some(users) = self.caches.lock().unwrap().get_mut(id)
        {
            users.retain(|u| u != username);
        }
        r
    }
    async fn user_progress(&self, id: &str, username: &str) -> Result<Progress, ProviderError> {
        let call = Call::UserProgress { instance: id.into(), username: username.into() };
        self.answer("user_progress", call)
    }
    async fn set_passwords(
        &self,
        id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let call = Call::SetPasswords {
            instance: id.into(),
            principal: principal.clone(),
            passwords: passwords.len(),
        };
        self.answer("set_passwords", call)
    }
    async fn passwords_progress(
        &self,
        id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let call = Call::PasswordsProgress {
            instance: id.into(),
            principal: principal.clone(),
            passwords: passwords.len(),
        };
        self.answer("passwords_progress", call)
    }
    /// A restart reboots the cache's one node; a failover test fails over
    /// node group 0001; a snapshot action has its snapshot as its unit.
    async fn plan_action(&self, id: &str, action: &Action) -> Result<Vec<ActionStep>, ProviderError> {
        Ok(match action {
            Action::Restart => {
                self.nodes(id).await?.into_iter().map(|n| ActionStep::on(n.cluster_id)).collect()
            }
            Action::TestFailover => {
                vec![ActionStep { target: "0001".into(), before: Some(format!("{id}-001")) }]
            }
            Action::Snapshot { name } | Action::DeleteSnapshot { name } => vec![ActionStep::on(name.clone())],
            Action::Maintenance => {
                self.service_updates.lock().unwrap().iter().map(|u| ActionStep::on(u.clone())).collect()
            }
        })
    }
    /// Scripted as "start_action"; a snapshot taken or deleted when the
    /// answer is `Ok`.
    async fn start_action(
        &self,
        id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        let call =
            Call::StartAction { instance: id.into(), action: action.clone(), target: step.target.clone() };
        let r = self.answer("start_action", call);
        if r.is_ok() {
            let mut snapshots = self.snapshots.lock().unwrap();
            let list = snapshots.entry(id.to_string()).or_default();
            match action {
                Action::Snapshot { name } if !list.iter().any(|s| &s.name == name) => list.push(Snapshot {
                    name: name.clone(),
                    kind: SnapshotKind::Named,
                    status: "available".into(),
                    created_at: Some(broker_core::domain::now()),
                    reference: format!("{id}/{name}"),
                }),
                Action::DeleteSnapshot { name } => list.retain(|s| &s.name != name),
                _ => {}
            }
        }
        r
    }
    async fn action_progress(
        &self,
        id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        let call =
            Call::ActionProgress { instance: id.into(), action: action.clone(), target: step.target.clone() };
        self.answer("action_progress", call)
    }
    async fn snapshots(&self, id: &str, _final_key: Option<&str>) -> Result<Vec<Snapshot>, ProviderError> {
        Ok(self.snapshots.lock().unwrap().get(id).cloned().unwrap_or_default())
    }
}

/// moto in server mode on a free 127.0.0.1 port, stopped when dropped. The
/// binary is `$MOTO_SERVER`, else `.venv/bin/moto_server` at the workspace
/// root (the test command installs it there), else `moto_server` on PATH.
pub struct MotoServer {
    child: std::process::Child,
    pub endpoint: String,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
        let bin = std::env::var_os("MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| if venv.exists() { venv } else { std::path::PathBuf::from("moto_server") });
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} ({e}); run scripts/test.sh once to install moto", bin.display())
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start on {endpoint}");
            std::thread::sleep(Duration::from_millis(100));
        }
        MotoServer { child, endpoint }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain records for the stores' tests: an instance provisioning, a binding
/// being created, an operation, a Redis OSS service and plan. Suites that
/// need richer data (the DynamoDB round trips) start from these.
pub mod records {
    use broker_core::domain::plan::PlanMetadata;
    use broker_core::domain::{
        Binding, BindingState, Engine, Instance, Operation, OperationKind, Plan, Service,
    };

    pub fn instance(id: &str) -> Instance {
        Instance {
            context: serde_json::json!({"platform": "cloudfoundry"}),
            organization_guid: Some("org".into()),
            space_guid: Some("space".into()),
            ..Instance::provisioning(id, &plan("plan-small", "small"), "", 1_000)
        }
    }

    pub fn binding(instance_id: &str, id: &str) -> Binding {
        Binding {
            id: id.into(),
            instance_id: instance_id.into(),
            service_id: "svc-redis".into(),
            plan_id: "plan-small".into(),
            parameters: serde_json::Map::new(),
            bind_resource: serde_json::Value::Null,
            context: serde_json::Value::Null,
            app_guid: Some("app".into()),
            state: BindingState::Creating,
            username: Some(Binding::username_for(id)),
            secret: None,
            from_spare: false,
            last_operation_id: String::new(),
            rotation: None,
            rotated_at: None,
            created_at: 1_000,
            updated_at: 1_000,
            expires_at: None,
            version: 0,
        }
    }

    pub fn op(kind: OperationKind, instance_id: &str, binding_id: Option<&str>) -> Operation {
        Operation::start(kind, instance_id, binding_id, 1_000, 1_800)
    }

    pub fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            name: name.into(),
            description: "d".into(),
            engine: Engine::Redis,
            tags: vec![],
            metadata: serde_json::Value::Null,
            position: 0,
        }
    }

    pub fn plan(id: &str, name: &str) -> Plan {
        Plan {
            id: id.into(),
            service_id: "svc-redis".into(),
            name: name.into(),
            description: "d".into(),
            free: false,
            node_type: "cache.t4g.small".into(),
            serverless: false,
            usage_limits: None,
            daily_snapshot_time: None,
            shards: 1,
            replicas_per_shard: 0,
            cache_nodes: 1,
            cluster_mode: false,
            multi_az: false,
            automatic_failover: false,
            engine_versions: vec!["7.1".into()],
            default_engine_version: "7.1".into(),
            maximum_polling_duration: 1800,
            snapshot_retention_days: 0,
            final_snapshot: false,
            maintenance_version: None,
            maintenance_description: None,
            access_string: "~* +@all".into(),
            spare_binding_users: 0,
            warm_pool_size: 0,
            alarms: Default::default(),
            log_delivery: vec![],
            metadata: PlanMetadata::default(),
            position: 0,
        }
    }
}

/// A secret store in memory for the cache providers' tests: current versions
/// only, which is all a provider reads; references are the names. It does not
/// rotate (the real stores' tests cover stage moves).
#[derive(Default)]
pub struct MemorySecrets(Mutex<HashMap<String, SecretString>>);

#[async_trait]
impl broker_core::ports::SecretStore for MemorySecrets {
    async fn create(
        &self,
        name: &str,
        value: &SecretString,
    ) -> Result<String, broker_core::ports::SecretError> {
        self.0.lock().unwrap().entry(name.to_string()).or_insert_with(|| value.clone());
        Ok(name.to_string())
    }

    async fn read(
        &self,
        reference: &str,
        stage: broker_core::ports::Stage,
    ) -> Result<Option<SecretString>, broker_core::ports::SecretError> {
        match self.0.lock().unwrap().get(reference) {
            Some(value) => Ok((stage == broker_core::ports::Stage::Current).then(|| value.clone())),
            None => Err(broker_core::ports::SecretError::NotFound(reference.to_string())),
        }
    }

    async fn delete(&self, reference: &str) -> Result<(), broker_core::ports::SecretError> {
        self.0.lock().unwrap().remove(reference);
        Ok(())
    }

    async fn put_pending(
        &self,
        reference: &str,
        _: &str,
        _: &SecretString,
    ) -> Result<(), broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Unavailable(format!(
            "the test secret store does not rotate {reference}"
        )))
    }

    async fn promote(&self, reference: &str, _: &str) -> Result<(), broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Unavailable(format!(
            "the test secret store does not rotate {reference}"
        )))
    }

    async fn describe(
        &self,
        reference: &str,
    ) -> Result<broker_core::ports::SecretInfo, broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Unavailable(format!(
            "the test secret store does not describe {reference}"
        )))
    }

    async fn read_version(
        &self,
        reference: &str,
        _: &str,
    ) -> Result<Option<SecretString>, broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Unavailable(format!(
            "the test secret store has no versions of {reference}"
        )))
    }

    async fn schedule_rotation(
        &self,
        reference: &str,
        _: u32,
    ) -> Result<(), broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Unavailable(format!(
            "the test secret store does not rotate {reference}"
        )))
    }
}
