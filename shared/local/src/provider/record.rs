//! Each instance's directory: its record (`instance.json`), the paths of
//! its files, and the server log's tail that explains a failed start (to
//! the broker's log, not to the platform).

use super::*;

/// `instance.json`: what the provider needs to find an instance's server again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) instance_id: String,
    pub(super) engine: Engine,
    pub(super) engine_version: String,
    pub(super) port: u16,
    /// The pid of the server last started; `server.pid` is the fallback.
    #[serde(default)]
    pub(super) pid: Option<u32>,
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

/// The files of one instance.
pub(super) struct Paths {
    pub(super) dir: PathBuf,
    pub(super) record: PathBuf,
    pub(super) data: PathBuf,
    pub(super) log: PathBuf,
    pub(super) conf: PathBuf,
    pub(super) acl: PathBuf,
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
        Paths {
            record: dir.join("instance.json"),
            data: dir.join("data"),
            log: dir.join("server.log"),
            conf: dir.join("server.conf"),
            acl: dir.join("users.acl"),
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
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ProviderError::Permanent(format!(
                "{} is not a valid instance record ({e}); fix or remove it",
                paths.record.display()
            ))
        }),
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

/// The last lines `server.log` got since `offset`.
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
pub(super) fn exited(record: &Record, paths: &Paths, log_start: u64) -> ProviderError {
    tracing::error!(
        instance_id = %record.instance_id,
        engine = record.engine.as_str(),
        port = record.port,
        log = %paths.log.display(),
        last_lines = %log_tail(&paths.log, log_start),
        "the cache server is not running"
    );
    ProviderError::Permanent(format!(
        "{} for instance {} is not running (port {}); the broker's log quotes the last lines of its server.log",
        record.engine.as_str(),
        record.instance_id,
        record.port,
    ))
}
