//! The server processes: which binary serves an engine, starting one
//! detached, telling whether a pid is still our server, signals and ports.

use super::*;

/// Which binary serves an engine, and how an operator gets it.
pub(super) struct Binary {
    pub(super) name: &'static str,
    pub(super) env: &'static str,
    pub(super) package: &'static str,
    pub(super) install: &'static str,
}

pub(super) fn binary_of(engine: Engine) -> Binary {
    match engine {
        Engine::Redis => Binary {
            name: "redis-server",
            env: "REDIS_SERVER_BIN",
            package: "redis-server",
            install: "apt-get install redis-server",
        },
        Engine::Valkey => Binary {
            name: "valkey-server",
            env: "VALKEY_SERVER_BIN",
            package: "valkey-server from bookworm-backports",
            install: "apt-get install -t bookworm-backports valkey-server",
        },
        Engine::Memcached => Binary {
            name: "memcached",
            env: "MEMCACHED_BIN",
            package: "memcached",
            install: "apt-get install memcached",
        },
    }
}

/// Finds the server binary of `engine`: `configured` (from `with_binary` or the
/// engine's environment variable) when set, a path as is and a bare name on
/// `path_var`; otherwise the engine's usual name on `path_var`.
pub(super) fn resolve_binary(
    engine: Engine,
    configured: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, ProviderError> {
    let binary = binary_of(engine);
    let missing = |what: String| {
        ProviderError::Permanent(format!(
            "{what}; install the {} package ({}) or set {} to the {} binary",
            binary.package, binary.install, binary.env, binary.name
        ))
    };
    let name = match configured.filter(|value| !value.is_empty()) {
        Some(value) if value.as_bytes().contains(&b'/') => {
            let path = PathBuf::from(value);
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(missing(format!(
                    "{} (the {} binary) is not an executable file",
                    path.display(),
                    binary.name
                )))
            };
        }
        Some(value) => PathBuf::from(value),
        None => PathBuf::from(binary.name),
    };
    path_var
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| missing(format!("{} was not found on PATH", name.display())))
}

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts one server detached from the broker: its own process group (so a
/// Ctrl-C to the broker does not reach it), no stdin, output to server.log.
/// Memcached takes its settings as arguments (paths, never a secret);
/// Redis OSS and Valkey read the config file written before.
pub(super) fn spawn(
    binary: &Path,
    record: &Record,
    node: &Node,
    paths: &NodePaths,
    tls: Option<&Tls>,
) -> Result<Child, ProviderError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.log)
        .map_err(|e| ProviderError::Permanent(format!("could not open {}: {e}", paths.log.display())))?;
    let errors = log
        .try_clone()
        .map_err(|e| ProviderError::Permanent(format!("could not open {}: {e}", paths.log.display())))?;
    let mut command = Command::new(binary);
    match record.engine {
        Engine::Redis | Engine::Valkey => {
            command.arg(&paths.conf);
        }
        Engine::Memcached => {
            let port = node.port.to_string();
            command.args(["-l", HOST, "-p", &port, "-U", "0", "-m", "64", "-P"]).arg(&paths.pidfile);
            if let Some(tls) = tls {
                command.arg("-Z").arg("-o").arg(memcached_tls_options(tls)?);
            }
            // memcached refuses to run as root unless told which user to be.
            if running_as_root() {
                command.args(["-u", "root"]);
            }
        }
    }
    command
        .current_dir(&paths.data)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(errors)
        .process_group(0)
        .kill_on_drop(false);
    command.spawn().map_err(|e| {
        ProviderError::Permanent(format!(
            "could not start {} for instance {}: {e}",
            binary.display(),
            record.instance_id
        ))
    })
}

pub(super) fn running_as_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs"; the effective one counts.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find(|line| line.starts_with("Uid:")).and_then(|line| line.split_whitespace().nth(2))
            == Some("0")
    })
}

/// memcached's `-o` value that turns TLS on with the root's certificate.
fn memcached_tls_options(tls: &Tls) -> Result<OsString, ProviderError> {
    let mut options = OsString::from("ssl_chain_cert=");
    for (n, path) in [&tls.cert_file, &tls.key_file].into_iter().enumerate() {
        if path.as_os_str().as_bytes().contains(&b',') {
            return Err(ProviderError::Permanent(format!(
                "{} cannot be given to memcached (its options are comma-separated): use a state \
                 directory whose path has no comma",
                path.display()
            )));
        }
        if n == 1 {
            options.push(",ssl_key=");
        }
        options.push(path);
    }
    Ok(options)
}

/// The pid of a node's server if it runs: the recorded pid, else the one
/// in the server's own pid file (which covers a start whose record was lost).
pub(super) fn live_pid(node: &Node, paths: &NodePaths) -> Option<u32> {
    node.pid
        .into_iter()
        .chain(read_pidfile(&paths.pidfile))
        .find(|&pid| is_our_server(pid, node.port, &paths.conf))
}

pub(super) fn read_pidfile(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True when `pid` is a live (not zombie) process that is one of our servers:
/// its command line names our config file (Redis before it renames itself),
/// our listen address (`redis-server 127.0.0.1:<port>` after), or our port
/// (memcached's `-p <port>`). This guards against a pid reused by another
/// process after ours died.
pub(super) fn is_our_server(pid: u32, port: u16, conf: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else { return false };
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses: hence the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    match state {
        None | Some("X") => return false,
        // A killed multi-threaded server shows its main thread as a zombie
        // while the other threads still exit, holding its port and files: it
        // is gone only once they are. (Its command line is empty by then, so
        // it cannot be checked; a pid is not reused before it is reaped.)
        Some("Z") => return task_count(&proc_dir) > 1,
        Some(_) => {}
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else { return false };
    let conf = conf.as_os_str().as_bytes();
    let port = port.to_string();
    let listen = format!("{HOST}:{port}");
    cmdline.split(|&b| b == 0).any(|arg| {
        arg == conf
            || arg == port.as_bytes()
            || arg.split(|&b| b == b' ').any(|word| word == listen.as_bytes())
    })
}

pub(super) fn task_count(proc_dir: &Path) -> usize {
    fs::read_dir(proc_dir.join("task")).map_or(0, Iterator::count)
}

/// Sends `SIGname` to `pid` with kill(1): the crate has no libc binding, and a
/// process that is already gone is fine.
pub(super) async fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = sent {
        tracing::warn!(pid, signal = name, error = %e, "could not run kill");
    }
}

/// A port nobody listens on right now. The listener is dropped before the
/// server binds the port, so someone else may take it first: `start` retries.
pub(super) fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| ProviderError::Retryable(format!("could not find a free port on {HOST}: {e}")))
}

pub(super) fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((HOST, port)).is_ok()
}
