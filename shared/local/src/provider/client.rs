//! Talking to a running server: Redis connections with errors that never
//! hold a password, and Memcached's version command.

use super::*;

/// A connection to the server on `port` as `username`.
pub(super) async fn connect(
    port: u16,
    username: &str,
    password: &SecretString,
) -> Result<MultiplexedConnection, RedisError> {
    let info = ConnectionAddr::Tcp(HOST.to_string(), port).into_connection_info()?.set_redis_settings(
        RedisConnectionInfo::default().set_username(username).set_password(password.expose_secret()),
    );
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await
}

/// A provider error for a failed Redis call: not reaching the server (refused,
/// timed out, dropped, still loading) is worth a retry, anything else is not.
/// Any of `passwords` the server quoted back is blanked out.
pub(super) fn redis_failure(context: &str, error: &RedisError, passwords: &[SecretString]) -> ProviderError {
    let message = redact(&format!("{context}: {error}"), passwords);
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
            )
        );
    if transient { ProviderError::Retryable(message) } else { ProviderError::Permanent(message) }
}

/// `text` with every occurrence of each password replaced by `[redacted]`.
pub(super) fn redact(text: &str, passwords: &[SecretString]) -> String {
    passwords
        .iter()
        .map(ExposeSecret::expose_secret)
        .filter(|password| !password.is_empty())
        .fold(text.to_string(), |text, password| text.replace(password, "[redacted]"))
}

/// memcached's answer to `version`, e.g. `VERSION 1.6.18`.
pub(super) async fn memcached_version(port: u16) -> io::Result<String> {
    let ask = async {
        let mut stream = TcpStream::connect((HOST, port)).await?;
        stream.write_all(b"version\r\n").await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        if line.starts_with("VERSION ") {
            Ok(line.trim_end().to_string())
        } else {
            Err(io::Error::other(format!("unexpected answer {:?}", line.trim_end())))
        }
    };
    timeout(Duration::from_secs(2), ask)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer within 2 s")))
}
