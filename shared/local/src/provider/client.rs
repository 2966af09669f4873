//! Talking to a running server: Redis connections with errors that never
//! hold a password, and Memcached's version command.

use super::*;

/// A connection to the server on `port` as `username`: over TLS, trusting
/// the root's CA only, when `tls` is given.
pub(super) async fn connect(
    port: u16,
    tls: Option<&Tls>,
    username: &str,
    password: &SecretString,
) -> Result<MultiplexedConnection, RedisError> {
    let settings =
        RedisConnectionInfo::default().set_username(username).set_password(password.expose_secret());
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let client = match tls {
        None => redis::Client::open(
            ConnectionAddr::Tcp(HOST.to_string(), port).into_connection_info()?.set_redis_settings(settings),
        )?,
        Some(tls) => redis::Client::build_with_tls(
            format!("rediss://{HOST}:{port}").into_connection_info()?.set_redis_settings(settings),
            redis::TlsCertificates { client_tls: None, root_cert: Some(tls.ca_pem.clone().into_bytes()) },
        )?,
    };
    client.get_multiplexed_async_connection_with_config(&config).await
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

/// memcached's answer to `command`: its first line, or with `until_end`
/// every line up to `END` (left out). Over TLS when `tls` is given.
pub(super) async fn memcached_ask(
    port: u16,
    tls: Option<&Tls>,
    command: &str,
    until_end: bool,
) -> io::Result<String> {
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        stream: S,
        command: &str,
        until_end: bool,
    ) -> io::Result<String> {
        let mut reader = BufReader::new(stream);
        reader.get_mut().write_all(format!("{command}\r\n").as_bytes()).await?;
        reader.get_mut().flush().await?;
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the answer ended early"));
            }
            if !until_end {
                return Ok(line);
            }
            if line.trim_end() == "END" {
                return Ok(text);
            }
            text.push_str(&line);
        }
    }
    let ask = async {
        match tls {
            None => exchange(TcpStream::connect((HOST, port)).await?, command, until_end).await,
            Some(tls) => {
                let config = tls.client_config().map_err(|e| io::Error::other(e.to_string()))?;
                exchange(tls_stream(config, port).await?, command, until_end).await
            }
        }
    };
    timeout(Duration::from_secs(2), ask)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer within 2 s")))
}

/// memcached's answer to `version`, e.g. `VERSION 1.6.18`.
pub(super) async fn memcached_version(port: u16, tls: Option<&Tls>) -> io::Result<String> {
    let line = memcached_ask(port, tls, "version", false).await?;
    if line.starts_with("VERSION ") {
        Ok(line.trim_end().to_string())
    } else {
        Err(io::Error::other(format!("unexpected answer {:?}", line.trim_end())))
    }
}
