//! TLS as ElastiCache speaks it, on a laptop: one certificate authority per
//! root, made the first time a TLS cache starts, and one server certificate
//! it signs for `127.0.0.1` and `localhost`, which every server under the
//! root presents (to clients, and to other nodes of its cluster). Applications trust the CA certificate that credentials
//! carry (`ca_certificate`, `CACHE_CA_CERT_BASE64`).
//!
//! `root/_tls/` holds `ca.pem`, `server.pem` and `server.key` (the owner's
//! alone). The CA's private key is never written: it signs the server
//! certificate and is dropped, so nothing on disk can sign another. When a
//! file is missing all three are made again, and credentials issued
//! before then name the old CA (the log says so). No instance directory
//! can be named `_tls`: `dir_name` writes `_` followed by two hex digits.

use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::*;

/// The directory under the root that holds the TLS files.
const TLS_DIR: &str = "_tls";

/// The TLS files of a root, and the CA certificate that clients trust.
pub(super) struct Tls {
    pub(super) ca_file: PathBuf,
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    /// The CA certificate in PEM, as credentials carry it.
    pub(super) ca_pem: String,
    /// The client configuration trusting it, made once.
    client: OnceLock<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("ca_file", &self.ca_file).finish_non_exhaustive()
    }
}

impl Tls {
    /// The TLS files under `root`, made when any is missing.
    pub(super) fn under(root: &Path) -> Result<Tls, ProviderError> {
        let dir = root.join(TLS_DIR);
        let tls = Tls {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            ca_pem: String::new(),
            client: OnceLock::new(),
        };
        if ![&tls.ca_file, &tls.cert_file, &tls.key_file].iter().all(|p| p.exists()) {
            if tls.ca_file.exists() {
                tracing::warn!(
                    dir = %dir.display(),
                    "a TLS file is missing: making a new certificate authority; credentials issued \
                     before carry the old CA certificate and must be fetched again"
                );
            }
            create_dir(root)?;
            create_dir(&dir)?;
            let made = issue().map_err(|e| {
                ProviderError::Permanent(format!("could not make the laptop certificate authority: {e}"))
            })?;
            // The key and the certificate first: the CA file is what says
            // the set is whole.
            write_file(&tls.key_file, made.key.as_bytes())?;
            write_file(&tls.cert_file, made.cert.as_bytes())?;
            write_file(&tls.ca_file, made.ca.as_bytes())?;
            tracing::info!(ca = %tls.ca_file.display(), "made the laptop certificate authority for cache TLS");
        }
        let ca_pem = fs::read_to_string(&tls.ca_file).map_err(|e| {
            ProviderError::Permanent(format!("could not read {}: {e}", tls.ca_file.display()))
        })?;
        Ok(Tls { ca_pem, ..tls })
    }

    /// A TLS client configuration that trusts this CA only.
    pub(super) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ProviderError> {
        if let Some(config) = self.client.get() {
            return Ok(config.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                ProviderError::Permanent(format!("{} is not a PEM certificate: {e}", self.ca_file.display()))
            })?;
            roots.add(cert).map_err(|e| {
                ProviderError::Permanent(format!(
                    "{} is not a usable CA certificate: {e}",
                    self.ca_file.display()
                ))
            })?;
        }
        let config =
            Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
        Ok(self.client.get_or_init(|| config).clone())
    }
}

/// What [`issue`] makes, in PEM.
struct Issued {
    ca: String,
    cert: String,
    key: String,
}

/// A new CA and a server certificate it signs for 127.0.0.1 and localhost.
fn issue() -> Result<Issued, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "ElastiCache broker laptop CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![HOST.to_string(), "localhost".to_string()])?;
    server.distinguished_name.push(DnType::CommonName, HOST);
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // Client authentication too: cluster nodes present it to one another
    // on the cluster bus, which always asks for a client certificate.
    server.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Issued { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem() })
}

/// A TLS session to `port` on [`HOST`], checked against `config`'s CA.
pub(super) async fn tls_stream(
    config: Arc<rustls::ClientConfig>,
    port: u16,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((HOST, port)).await?;
    let name = ServerName::try_from(HOST).map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_made_once_and_the_ca_key_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let first = Tls::under(dir.path()).unwrap();
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{}", first.ca_pem);
        let again = Tls::under(dir.path()).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem, "an existing CA is kept");
        let mut names: Vec<String> = fs::read_dir(dir.path().join(TLS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.pem", "server.key", "server.pem"]);
        let key = fs::metadata(&first.key_file).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert!(first.client_config().is_ok());

        fs::remove_file(&first.cert_file).unwrap();
        let remade = Tls::under(dir.path()).unwrap();
        assert_ne!(remade.ca_pem, first.ca_pem, "a lost certificate makes a new CA");
    }
}
