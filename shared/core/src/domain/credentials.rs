//! Credentials: cache users that can hold two passwords at once (so a rotation
//! adds the new one before removing the old), and what a binding returns.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Engine;

/// Where a cache listens. Kept in the instance record once the cache is
/// available (and refreshed by every operation that changes the cache), so
/// handing out credentials needs no call to the cache's backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `host:port` of every node, for clients that list Memcached servers
    /// themselves; empty where the one endpoint is all a client needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Where the replicas answer reads, for caches that have replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<HostPort>,
    /// `host:port` is a cluster-mode configuration endpoint: clients must be
    /// cluster clients, and discover the shards from it.
    #[serde(default)]
    pub cluster_mode: bool,
    /// The PEM certificate of the authority that signed the servers'
    /// certificates, when clients cannot find it in their usual trust
    /// store (laptop mode's own CA; ElastiCache's are publicly trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

impl Endpoint {
    /// A single node's endpoint: no replicas, no cluster mode.
    pub fn single(host: impl Into<String>, port: u16, tls: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls,
            nodes: vec![],
            reader: None,
            cluster_mode: false,
            ca_certificate: None,
        }
    }
}

/// A host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// A cache user: a name, one or two valid passwords, and ACL rules.
///
/// Two passwords exist only during a rotation's grace period; the first is the
/// newest. `Debug` never prints a password.
#[derive(Clone)]
pub struct CacheUser {
    pub username: String,
    pub passwords: Vec<SecretString>,
    pub access_string: String,
}

impl std::fmt::Debug for CacheUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheUser")
            .field("username", &self.username)
            .field("passwords", &format_args!("[{} redacted]", self.passwords.len()))
            .field("access_string", &self.access_string)
            .finish()
    }
}

/// The most passwords a user holds at once: ElastiCache allows two, and a
/// rotation needs exactly two.
pub const MAX_PASSWORDS: usize = 2;

/// The user the broker administers a Redis OSS or Valkey cache as, in
/// ElastiCache and on a laptop alike.
pub const ADMIN_USER: &str = "broker-admin";

/// Whether `passwords` is what a cache user can hold: one or two (see
/// [`MAX_PASSWORDS`]), none empty.
pub fn passwords_fit(passwords: &[SecretString]) -> bool {
    (1..=MAX_PASSWORDS).contains(&passwords.len()) && passwords.iter().all(|p| !p.expose_secret().is_empty())
}

impl CacheUser {
    pub fn new(username: String, password: SecretString, access_string: String) -> CacheUser {
        CacheUser { username, passwords: vec![password], access_string }
    }
}

/// What bind and fetch-binding return under `credentials`.
pub struct Credentials {
    pub engine: Engine,
    pub engine_version: String,
    pub endpoint: Endpoint,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("engine", &self.engine)
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Credentials {
    /// The connection URI: `redis://user:pass@host:port` (`rediss://` with TLS);
    /// for Memcached `host:port`, which is what Memcached clients take.
    pub fn uri(&self) -> String {
        let hostport = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        if !self.engine.speaks_redis() {
            return hostport;
        }
        let scheme = if self.endpoint.tls { "rediss" } else { "redis" };
        match (&self.username, &self.password) {
            (Some(user), Some(pass)) => format!(
                "{scheme}://{}:{}@{hostport}",
                percent_encode(user),
                percent_encode(pass.expose_secret())
            ),
            _ => format!("{scheme}://{hostport}"),
        }
    }

    /// The JSON object returned to the platform. Platforms inject each key
    /// as an environment variable (Akkeris) or write them into a Kubernetes
    /// Secret, so besides the usual keys there are the ones applications
    /// read as they are: `REDIS_URL` / `MEMCACHED_URL`, and for Redis OSS
    /// and Valkey the `CACHE_*` variables (`CACHE_MODE` `single` or
    /// `cluster`, `CACHE_ADDRS`, `CACHE_USERNAME`, `CACHE_PASSWORD`,
    /// `CACHE_TLS_ENABLED`, and `CACHE_CA_CERT_BASE64` when the servers'
    /// CA is not a public one), string-valued as environment variables are.
    /// That CA is also under `ca_certificate`, in PEM.
    pub fn to_json(&self) -> Value {
        let uri = self.uri();
        let endpoint = &self.endpoint;
        let hostport = format!("{}:{}", endpoint.host, endpoint.port);
        let mut m = Map::new();
        m.insert("uri".into(), json!(uri));
        m.insert("host".into(), json!(endpoint.host));
        m.insert("hostname".into(), json!(endpoint.host));
        m.insert("port".into(), json!(endpoint.port));
        if let Some(user) = &self.username {
            m.insert("username".into(), json!(user));
        }
        if let Some(pass) = &self.password {
            m.insert("password".into(), json!(pass.expose_secret()));
        }
        m.insert("tls_enabled".into(), json!(endpoint.tls));
        if let Some(ca) = &endpoint.ca_certificate {
            m.insert("ca_certificate".into(), json!(ca));
        }
        m.insert("engine".into(), json!(self.engine.as_str()));
        m.insert("engine_version".into(), json!(self.engine_version));
        if !endpoint.nodes.is_empty() {
            m.insert("nodes".into(), json!(endpoint.nodes));
        }
        if !self.engine.speaks_redis() {
            m.insert("MEMCACHED_URL".into(), json!(uri));
            return Value::Object(m);
        }
        m.insert("cluster_mode".into(), json!(endpoint.cluster_mode));
        if endpoint.cluster_mode {
            m.insert("configuration_endpoint".into(), json!(hostport));
        }
        if let Some(reader) = &endpoint.reader {
            m.insert("reader_host".into(), json!(reader.host));
            m.insert("reader_port".into(), json!(reader.port));
        }
        m.insert("REDIS_URL".into(), json!(uri));
        m.insert("CACHE_MODE".into(), json!(if endpoint.cluster_mode { "cluster" } else { "single" }));
        m.insert("CACHE_ADDRS".into(), json!(hostport));
        if let Some(user) = &self.username {
            m.insert("CACHE_USERNAME".into(), json!(user));
        }
        if let Some(pass) = &self.password {
            m.insert("CACHE_PASSWORD".into(), json!(pass.expose_secret()));
        }
        m.insert("CACHE_TLS_ENABLED".into(), json!(endpoint.tls.to_string()));
        if let Some(ca) = &endpoint.ca_certificate {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());
            m.insert("CACHE_CA_CERT_BASE64".into(), json!(encoded));
        }
        Value::Object(m)
    }
}

/// Percent-encodes everything outside RFC 3986's unreserved set, so any user
/// name or password survives inside a URI.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A random password of `len` characters from letters and digits (so it needs
/// no escaping anywhere), from the operating system's generator.
pub fn generate_password(len: usize) -> SecretString {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let s: String = rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect();
    SecretString::from(s)
}

/// Binding passwords are 40 characters of [A-Za-z0-9]: about 238 bits.
pub const PASSWORD_LEN: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_one_or_two_passwords_none_empty() {
        let p = |s: &str| SecretString::from(s.to_string());
        assert!(passwords_fit(&[p("a")]));
        assert!(passwords_fit(&[p("a"), p("b")]));
        assert!(!passwords_fit(&[]));
        assert!(!passwords_fit(&[p("a"), p("b"), p("c")]));
        assert!(!passwords_fit(&[p("a"), p("")]));
    }

    fn creds(engine: Engine, user: Option<&str>, pass: Option<&str>) -> Credentials {
        Credentials {
            engine,
            engine_version: "7.1".into(),
            endpoint: Endpoint::single("127.0.0.1", 6390, false),
            username: user.map(str::to_string),
            password: pass.map(|p| SecretString::from(p.to_string())),
        }
    }

    #[test]
    fn redis_credentials_carry_a_uri_with_user_and_password_and_redis_url() {
        let c = creds(Engine::Redis, Some("b-1"), Some("p@ss/word")).to_json();
        assert_eq!(c["uri"], "redis://b-1:p%40ss%2Fword@127.0.0.1:6390");
        assert_eq!(c["REDIS_URL"], c["uri"]);
        assert_eq!(c["host"], "127.0.0.1");
        assert_eq!(c["hostname"], "127.0.0.1");
        assert_eq!(c["port"], 6390);
        assert_eq!(c["username"], "b-1");
        assert_eq!(c["password"], "p@ss/word");
        assert_eq!(c["tls_enabled"], false);
        assert_eq!(c["engine"], "redis");
        assert_eq!(c["engine_version"], "7.1");
    }

    #[test]
    fn memcached_credentials_list_every_node() {
        let mut c = creds(Engine::Memcached, None, None);
        c.endpoint.nodes = vec!["n1:11211".into(), "n2:11211".into()];
        assert_eq!(c.to_json()["nodes"], json!(["n1:11211", "n2:11211"]));
    }

    #[test]
    fn memcached_credentials_are_host_and_port() {
        let c = creds(Engine::Memcached, None, None).to_json();
        assert_eq!(c["uri"], "127.0.0.1:6390");
        assert_eq!(c["MEMCACHED_URL"], "127.0.0.1:6390");
        assert!(c.get("password").is_none());
        assert!(c.get("REDIS_URL").is_none() && c.get("CACHE_ADDRS").is_none());
    }

    #[test]
    fn tls_endpoints_use_the_rediss_scheme_in_uri_and_redis_url() {
        let mut c = creds(Engine::Valkey, Some("u"), Some("p"));
        c.endpoint.tls = true;
        let json = c.to_json();
        assert_eq!(json["uri"], "rediss://u:p@127.0.0.1:6390");
        assert_eq!(json["REDIS_URL"], json["uri"]);
        assert_eq!(json["CACHE_TLS_ENABLED"], "true");
    }

    #[test]
    fn redis_credentials_carry_the_cache_variables_apps_read() {
        let c = creds(Engine::Redis, Some("b-1"), Some("secret-1")).to_json();
        assert_eq!(c["CACHE_MODE"], "single");
        assert_eq!(c["CACHE_ADDRS"], "127.0.0.1:6390");
        assert_eq!(c["CACHE_USERNAME"], "b-1");
        assert_eq!(c["CACHE_PASSWORD"], "secret-1");
        assert_eq!(c["CACHE_TLS_ENABLED"], "false");
        assert_eq!(c["cluster_mode"], false);
        assert!(c.get("configuration_endpoint").is_none() && c.get("reader_host").is_none(), "{c}");
    }

    #[test]
    fn a_cluster_mode_cache_names_its_configuration_endpoint_and_the_cluster_mode() {
        let mut c = creds(Engine::Valkey, Some("u"), Some("p"));
        c.endpoint = Endpoint { cluster_mode: true, ..Endpoint::single("cfg.example", 6379, true) };
        let json = c.to_json();
        assert_eq!(json["cluster_mode"], true);
        assert_eq!(json["configuration_endpoint"], "cfg.example:6379");
        assert_eq!(json["CACHE_MODE"], "cluster");
        assert_eq!(json["CACHE_ADDRS"], "cfg.example:6379");
    }

    #[test]
    fn a_private_ca_is_in_the_credentials_in_pem_and_base64() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let mut c = creds(Engine::Valkey, Some("u"), Some("p"));
        c.endpoint =
            Endpoint { ca_certificate: Some(pem.into()), ..Endpoint::single("127.0.0.1", 6390, true) };
        let json = c.to_json();
        assert_eq!(json["ca_certificate"], pem);
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(json["CACHE_CA_CERT_BASE64"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, pem.as_bytes());
        let mut m = creds(Engine::Memcached, None, None);
        m.endpoint.ca_certificate = Some(pem.into());
        let json = m.to_json();
        assert_eq!(json["ca_certificate"], pem, "Memcached clients need it too");
        assert!(json.get("CACHE_CA_CERT_BASE64").is_none(), "the CACHE_* keys are Redis OSS and Valkey's");
        let plain = creds(Engine::Valkey, Some("u"), Some("p")).to_json();
        assert!(plain.get("ca_certificate").is_none() && plain.get("CACHE_CA_CERT_BASE64").is_none());
    }

    #[test]
    fn a_cache_with_replicas_names_its_reader_endpoint() {
        let mut c = creds(Engine::Redis, Some("u"), Some("p"));
        c.endpoint.reader = Some(HostPort { host: "ro.example".into(), port: 6379 });
        let json = c.to_json();
        assert_eq!(json["reader_host"], "ro.example");
        assert_eq!(json["reader_port"], 6379);
    }

    #[test]
    fn an_endpoint_round_trips_through_a_record() {
        let e = Endpoint {
            reader: Some(HostPort { host: "r".into(), port: 2 }),
            nodes: vec!["n:1".into()],
            ..Endpoint::single("h", 1, true)
        };
        let back: Endpoint = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn debug_never_prints_a_password() {
        let c = creds(Engine::Redis, Some("b-1"), Some("hunter2hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let u = CacheUser::new("u".into(), SecretString::from("hunter2hunter2"), "~*".into());
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn generated_passwords_are_long_random_and_alphanumeric() {
        let a = generate_password(PASSWORD_LEN);
        let b = generate_password(PASSWORD_LEN);
        assert_eq!(a.expose_secret().len(), 40);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
