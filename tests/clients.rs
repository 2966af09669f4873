//! Clients of a binding's caches, made from its credentials as an
//! application makes them: over TLS when the credentials say so, trusting
//! only the CA they carry (`ca_certificate`), never skipping verification.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

fn certificates(credentials: &Value) -> TlsCertificates {
    let root_cert = credentials["ca_certificate"].as_str().map(|pem| pem.as_bytes().to_vec());
    TlsCertificates { client_tls: None, root_cert }
}

fn uri(credentials: &Value) -> RedisResult<&str> {
    credentials["uri"]
        .as_str()
        .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "the credentials have no uri")))
}

/// A client of the endpoint in `credentials["uri"]` (`rediss://` means TLS).
pub fn redis_client(credentials: &Value) -> RedisResult<redis::Client> {
    let uri = uri(credentials)?;
    if uri.starts_with("rediss://") {
        redis::Client::build_with_tls(uri, certificates(credentials))
    } else {
        redis::Client::open(uri)
    }
}

/// How long a test's client waits to connect and for an answer: the
/// crate's defaults (1 s, 0.5 s) are an application's, and a test shares
/// two cores with other tests' servers.
const PATIENCE: Duration = Duration::from_secs(10);

/// A connection of `client`, patient as tests on a busy machine must be.
pub async fn connection(client: &redis::Client) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PATIENCE))
        .set_response_timeout(Some(PATIENCE));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// The credentials with `uri` in place of theirs: another endpoint or
/// login, the rest (the CA) kept.
pub fn with_uri(credentials: &Value, uri: &str) -> Value {
    let mut changed = credentials.clone();
    changed["uri"] = Value::from(uri);
    changed
}

/// A connection through a cluster client that discovers the shards from the
/// configuration endpoint in the credentials.
pub async fn cluster_connection(credentials: &Value) -> RedisResult<ClusterConnection> {
    let uri = uri(credentials)?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(vec![uri])
        .connection_timeout(PATIENCE)
        .response_timeout(PATIENCE);
    if uri.starts_with("rediss://") {
        builder = builder.certs(certificates(credentials));
    }
    builder.build()?.get_async_connection().await
}

/// A session with a Memcached node (`host:port`) of the credentials: TLS
/// when they say so.
pub async fn memcached_session(credentials: &Value, host_port: &str) -> std::io::Result<Box<dyn Session>> {
    let tcp = TcpStream::connect(host_port).await?;
    if credentials["tls_enabled"] != true {
        return Ok(Box::new(tcp));
    }
    let pem =
        credentials["ca_certificate"].as_str().ok_or_else(|| std::io::Error::other("no CA certificate"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h).to_string();
    let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
    Ok(Box::new(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?))
}

/// A byte stream to a cache, plain or TLS.
pub trait Session: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Session for T {}
