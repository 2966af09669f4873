//! Each instance's directory: its record (`instance.json`), the paths of
//! its files, and the server log's tail that explains a failed start (to
//! the broker's log, not to the platform).

use super::*;

/// `instance.json`: what the provider needs to find an instance's servers
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) instance_id: String,
    pub(super) engine: Engine,
    pub(super) engine_version: String,
    /// Every server of the instance: shard by shard, each shard's primary
    /// first (as the plan laid them out; see [`Node::replica`]). Records
    /// written before instances had several nodes name one server by
    /// `port` and `pid`, which [`read_record`] turns into node 0.
    #[serde(default)]
    pub(super) nodes: Vec<Node>,
    /// The servers form a Redis OSS or Valkey cluster (`cluster-enabled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) cluster_mode: bool,
    /// The servers speak TLS only. Records from before TLS have none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) tls: bool,
    /// The cluster was formed (slots assigned, nodes met, replicas
    /// attached) once: a later start leaves that to `nodes.conf`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) formed: bool,
    /// Node 0's port and pid in a record of one server (read, never written).
    #[serde(default, rename = "port", skip_serializing)]
    pub(super) legacy_port: Option<u16>,
    #[serde(default, rename = "pid", skip_serializing)]
    pub(super) legacy_pid: Option<u32>,
    /// Reference into the secret store, never the password itself.
    #[serde(default)]
    pub(super) admin_secret: Option<String>,
    #[serde(default)]
    pub(super) admin_user: Option<String>,
    /// The data directory holds a restored snapshot (`dump.rdb`) that the
    /// server has not yet written to its append-only file: it starts with
    /// `appendonly no` (so it loads the dump) until the provider has
    /// turned the append-only file on (see `day2::finish_restore`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) restoring: bool,
    /// The eviction policy the instance chose (Redis OSS and Valkey);
    /// ElastiCache's default when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) maxmemory_policy: Option<String>,
    /// The memory limit in gigabytes: a serverless plan's data storage
    /// maximum (ElastiCache evicts or refuses writes past it, and so does
    /// the server). None for a plan of nodes: the laptop's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) maxmemory_gb: Option<u32>,
}

/// One server of an instance: a place in the instance's layout (its port,
/// shard and role, which stay), and the data directory that serves it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Node {
    /// The port clients reach it on: its TLS port when the record says TLS.
    pub(super) port: u16,
    /// Its cluster bus port (cluster mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) bus_port: Option<u16>,
    /// The pid of the server last started; its pid file is the fallback.
    #[serde(default)]
    pub(super) pid: Option<u32>,
    /// Its shard: 0 without cluster mode; for Memcached, its own number.
    #[serde(default)]
    pub(super) shard: u8,
    /// A replica of its shard's primary. Without cluster mode, a failover
    /// swaps the directories of two places and their roles stay (see
    /// `replication`); in cluster mode this is the role the node was made
    /// with, and the cluster knows who is primary now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) replica: bool,
    /// The node directory that serves this place ([`Paths::node`]).
    #[serde(default)]
    pub(super) dir: usize,
}

impl Node {
    pub(super) fn new(shard: u8, replica: bool, dir: usize) -> Node {
        Node { port: 0, bus_port: None, pid: None, shard, replica, dir }
    }
}

/// The files of one instance.
pub(super) struct Paths {
    pub(super) dir: PathBuf,
    pub(super) record: PathBuf,
    /// The ACL file every server of the instance shares: a user set on
    /// every running server and saved once is there for a server that was
    /// down, when it starts.
    pub(super) acl: PathBuf,
}

/// The files of one server of an instance.
pub(super) struct NodePaths {
    pub(super) dir: PathBuf,
    pub(super) data: PathBuf,
    pub(super) log: PathBuf,
    pub(super) conf: PathBuf,
    pub(super) pidfile: PathBuf,
}

impl Paths {
    pub(super) fn of(root: &Path, instance_id: &str) -> Result<Paths, ProviderError> {
        if instance_id.is_empty() {
            return Err(ProviderError::Permanent("an instance id is required".into()));
        }
        Ok(Paths::in_dir(root.join(dir_name(instance_id))))
    }

    pub(super) fn in_dir(dir: PathBuf) -> Paths {
        Paths { record: dir.join("instance.json"), acl: dir.join("users.acl"), dir }
    }

    /// The files of node directory `n`: the instance directory itself for
    /// node 0 (where an instance of one server always kept them),
    /// `node-<n>/` under it for the others.
    pub(super) fn node(&self, n: usize) -> NodePaths {
        let dir = if n == 0 { self.dir.clone() } else { self.dir.join(format!("node-{n}")) };
        NodePaths {
            data: dir.join("data"),
            log: dir.join("server.log"),
            conf: dir.join("server.conf"),
            pidfile: dir.join("server.pid"),
            dir,
        }
    }
}

/// A directory name for an instance id: ASCII letters, digits and hyphens stay
/// (so GUIDs read as themselves); every other byte becomes `_xx` in hex. Two ids
/// never share a name, and no name is `.`, `..` or holds a `/`.
pub(super) fn dir_name(instance_id: &str) -> String {
    let mut name = String::with_capacity(instance_id.len());
    for byte in instance_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("_{byte:02x}"));
        }
    }
    name
}

pub(super) fn unknown(instance_id: &str) -> ProviderError {
    ProviderError::Permanent(format!("no local cache for instance {instance_id}"))
}

pub(super) fn read_record(paths: &Paths) -> Result<Option<Record>, ProviderError> {
    match fs::read(&paths.record) {
        Ok(bytes) => {
            let invalid = |why: String| {
                ProviderError::Permanent(format!(
                    "{} is not a valid instance record ({why}); fix or remove it",
                    paths.record.display()
                ))
            };
            let mut record: Record = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            if record.nodes.is_empty() {
                // A record of one server, from before instances had several.
                let port = record.legacy_port.ok_or_else(|| invalid("it names no server".into()))?;
                record.nodes = vec![Node { port, pid: record.legacy_pid, ..Node::new(0, false, 0) }];
            }
            (record.legacy_port, record.legacy_pid) = (None, None);
            Ok(Some(record))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProviderError::Retryable(format!("could not read {}: {e}", paths.record.display()))),
    }
}

pub(super) fn write_record(paths: &Paths, record: &Record) -> Result<(), ProviderError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| ProviderError::Permanent(format!("could not encode the instance record: {e}")))?;
    write_file(&paths.record, &json)
}

/// Writes `contents` readable by the owner only, through a temporary file and
/// a rename, so a reader never sees half a file.
pub(super) fn write_file(path: &Path, contents: &[u8]) -> Result<(), ProviderError> {
    let failed = |e: io::Error| ProviderError::Permanent(format!("could not write {}: {e}", path.display()));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

pub(super) fn create_dir(path: &Path) -> Result<(), ProviderError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ProviderError::Permanent(format!("could not create {}: {e}", path.display())))
}

pub(super) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of `path` from byte `offset` on ("" when there is none).
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_to_end(&mut bytes));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines a `server.log` got since `offset`.
pub(super) fn log_tail(path: &Path, offset: u64) -> String {
    let start = offset.max(file_len(path).saturating_sub(LOG_TAIL_BYTES));
    let text = read_from(path, start);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(server.log is empty)".into();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// The error for a server that is not running. Its log's last lines go to
/// the broker's log, where the operator reads them; the description, which
/// the platform shows its users, says only where to look.
pub(super) fn exited(record: &Record, node: &Node, paths: &NodePaths, log_start: u64) -> ProviderError {
    let tail = log_tail(&paths.log, log_start);
    if tail.contains("corrupted cluster config file") {
        // A cluster node whose saved view of the cluster its server will
        // not load (Valkey 8.0.1 refuses one where a replica's shard id
        // is not its primary's; `replication` waits for every node to
        // agree before an instance is ready, so as not to leave one): it
        // cannot rejoin its cluster by itself.
        tracing::error!(
            instance_id = %record.instance_id,
            port = node.port,
            log = %paths.log.display(),
            last_lines = %tail,
            "a cluster node's nodes.conf is damaged"
        );
        return ProviderError::Permanent(format!(
            "a cluster node of instance {} (port {}) cannot start: its server refuses its saved cluster \
             state (nodes.conf); take a snapshot while the other nodes serve, then provision a new \
             instance and restore it",
            record.instance_id, node.port
        ));
    }
    tracing::error!(
        instance_id = %record.instance_id,
        engine = record.engine.as_str(),
        port = node.port,
        log = %paths.log.display(),
        last_lines = %tail,
        "the cache server is not running"
    );
    ProviderError::Permanent(format!(
        "{} for instance {} is not running (port {}); the broker's log quotes the last lines of its server.log",
        record.engine.as_str(),
        record.instance_id,
        node.port,
    ))
}
