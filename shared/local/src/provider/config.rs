//! What a server is started with (its config file and first ACL file) and
//! the checks of ACL user names and passwords.

use super::*;
use broker_core::domain::settings::{DEFAULT_MAXMEMORY_POLICY, MAXMEMORY_POLICIES};

/// `users.acl` before the first `ACL SAVE`: the default user is off (every
/// client must log in as a named user) and the admin is known by the SHA-256
/// of its password only.
pub(super) fn initial_acl(admin_sha256_hex: &str) -> String {
    format!(
        "user default off resetpass nocommands\n\
         user {ADMIN_USER} on #{admin_sha256_hex} ~* &* +@all\n"
    )
}

/// `server.conf` of one Redis OSS or Valkey server (same format),
/// rewritten at every start because the port may change. A server
/// restoring a snapshot starts without its append-only file, or it would
/// ignore the dump. With TLS the server listens on its TLS port only, and
/// replicates and talks to its cluster over TLS. Replication is not in
/// the file: the primary's password is not written anywhere, so the
/// provider sets it, and `REPLICAOF`, once the server answers (see
/// `replication`).
pub(super) fn redis_config(
    record: &Record,
    node: &Node,
    node_paths: &NodePaths,
    paths: &Paths,
    tls: Option<&Tls>,
) -> Result<String, ProviderError> {
    let policy = record.maxmemory_policy.as_deref().unwrap_or(DEFAULT_MAXMEMORY_POLICY);
    if !MAXMEMORY_POLICIES.contains(&policy) {
        return Err(ProviderError::Permanent(format!("{policy:?} is not an eviction policy")));
    }
    let (port, restoring) = (node.port, record.restoring);
    let listen = match tls {
        Some(tls) => format!(
            "# TLS only, as ElastiCache: clients trust the CA that credentials carry.\n\
             port 0\n\
             tls-port {port}\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients no\n\
             tls-replication yes\n\
             tls-cluster yes",
            cert = config_path(&tls.cert_file)?,
            key = config_path(&tls.key_file)?,
            ca = config_path(&tls.ca_file)?,
        ),
        None => format!("port {port}"),
    };
    let cluster = match (record.cluster_mode, node.bus_port) {
        (true, Some(bus)) => format!(
            "# A cluster node: its state is in nodes.conf in its data directory.\n\
             cluster-enabled yes\n\
             cluster-config-file nodes.conf\n\
             cluster-port {bus}\n\
             cluster-node-timeout 5000"
        ),
        (true, None) => {
            return Err(ProviderError::Permanent(format!(
                "instance {}: a cluster node needs a cluster bus port",
                record.instance_id
            )));
        }
        (false, _) => "# Not a cluster node.".to_string(),
    };
    Ok(format!(
        "# Written by the broker's laptop mode at every start: edits are lost.\n\
         bind {HOST}\n\
         {listen}\n\
         {cluster}\n\
         protected-mode yes\n\
         daemonize no\n\
         supervised no\n\
         dir {data}\n\
         # The append-only file has every write, so data survives a restart or kill -9.\n\
         appendonly {appendonly}\n\
         save \"\"\n\
         # A new replica is sent the data at once, not after waiting 5 s for others.\n\
         repl-diskless-sync-delay 0\n\
         # ElastiCache's default eviction policy, or the instance's.\n\
         maxmemory-policy {policy}\n\
         {maxmemory}\n\
         aclfile {acl}\n\
         pidfile {pidfile}\n\
         logfile {log}\n",
        appendonly = if restoring { "no" } else { "yes" },
        maxmemory = match record.maxmemory_gb {
            Some(gb) => format!("# A serverless plan's data storage limit.\nmaxmemory {gb}gb"),
            None => "# No memory limit: the laptop's.".to_string(),
        },
        data = config_path(&node_paths.data)?,
        acl = config_path(&paths.acl)?,
        pidfile = config_path(&node_paths.pidfile)?,
        log = config_path(&node_paths.log)?,
    ))
}

/// A path as a double-quoted Redis config value.
pub(super) fn config_path(path: &Path) -> Result<String, ProviderError> {
    match path.to_str() {
        Some(text) if !text.chars().any(|c| c.is_control() || c == '"' || c == '\\') => {
            Ok(format!("\"{text}\""))
        }
        _ => Err(ProviderError::Permanent(format!(
            "{} cannot go into a Redis config file: use a state directory whose path is \
             plain UTF-8 without quotes, backslashes or control characters",
            path.display()
        ))),
    }
}

/// The SHA-256 of the password in lowercase hex, as Redis ACLs take it (`#hex`).
/// The crate has no SHA-256 implementation, so `sha256sum` computes it, reading
/// the password from a pipe: it never touches a file or a command line.
pub(super) async fn sha256_hex(password: &SecretString) -> Result<String, ProviderError> {
    let failed = |e: io::Error| {
        ProviderError::Permanent(format!(
            "could not hash the admin password with sha256sum (install coreutils): {e}"
        ))
    };
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(password.expose_secret().as_bytes()).await.map_err(failed)?;
        // Dropping `stdin` here closes the pipe: sha256sum sees the end of input.
    }
    let output = child.wait_with_output().await.map_err(failed)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !output.status.success() || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ProviderError::Permanent(
            "sha256sum did not print a SHA-256 digest of the admin password".into(),
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The ACL user a principal is.
pub(super) fn acl_name(principal: &Principal) -> Result<String, ProviderError> {
    match principal {
        Principal::Admin => Ok(ADMIN_USER.to_string()),
        Principal::User(name) => {
            check_username(name)?;
            Ok(name.clone())
        }
    }
}

/// One or two passwords, none empty: what a rotation gives a user.
pub(super) fn check_passwords(username: &str, passwords: &[SecretString]) -> Result<(), ProviderError> {
    if !passwords_fit(passwords) {
        return Err(ProviderError::Permanent(format!(
            "{username} needs one or two passwords, and no empty one"
        )));
    }
    Ok(())
}

/// How many passwords the ACL user holds (`ACL GETUSER` lists their
/// hashes); `None` when there is no such user.
pub(super) async fn acl_password_count(
    connection: &mut MultiplexedConnection,
    username: &str,
) -> Result<Option<usize>, RedisError> {
    let found =
        redis::cmd("ACL").arg("GETUSER").arg(username).query_async::<redis::Value>(connection).await?;
    let fields: Vec<redis::Value> = match found {
        redis::Value::Nil => return Ok(None),
        redis::Value::Array(items) => items,
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Ok(Some(0)),
    };
    for pair in fields.chunks(2) {
        if let [key, value] = pair
            && redis::from_redis_value::<String>(key.clone()).is_ok_and(|k| k == "passwords")
        {
            return Ok(Some(match value {
                redis::Value::Array(items) => items.len(),
                _ => 0,
            }));
        }
    }
    Ok(Some(0))
}

pub(super) fn check_username(username: &str) -> Result<(), ProviderError> {
    if username.is_empty() || username.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProviderError::Permanent(format!("{username:?} is not a valid cache user name")));
    }
    if username == "default" || username == ADMIN_USER {
        return Err(ProviderError::Permanent(format!(
            "the cache user name {username} is reserved for the broker"
        )));
    }
    Ok(())
}
