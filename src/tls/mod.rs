//! TLS for the front door and the mesh: the mesh's own certificate authority, each
//! instance's certificate, and the rustls configurations built from them.
//!
//! The instance that founds a mesh creates its CA at first start (`ca.pem`, `ca.key`, ECDSA
//! P-256); a member that joins receives both through the join, so every member can invite and
//! can issue its own certificate again when its addresses change. Each instance keeps its own
//! key and certificate (`tls.key`, `tls.pem`), issued by that CA for its host name,
//! `localhost`, loopback, its addresses and `pimesh:<uuid>`, and issues it again at start
//! when the names no longer match, the CA changed or less than [`RENEW_BEFORE_DAYS`] remain.
//!
//! Every configuration is built with ring as its crypto provider and never touches rustls's
//! process-wide default. The verifiers are in [`verify`].

mod names;
pub mod verify;

pub use names::Names;

use crate::secret::{self, SecretError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The mesh CA's certificate in the data dir.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The mesh CA's private key in the data dir (0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// A CA being installed, certificate and key in one file (see [`MeshCa::save`]).
pub const CA_STAGED_FILE: &str = "ca.staged";
/// This instance's certificate in the data dir.
pub const CERT_FILE: &str = "tls.pem";
/// This instance's private key in the data dir (0600).
pub const KEY_FILE: &str = "tls.key";
/// Default first port tried for MQTT over TLS (MQTT's registered TLS port).
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Lifetime of an instance certificate.
pub const CERT_DAYS: i64 = 5 * 365;
/// An instance certificate with less than this left is issued again at start.
pub const RENEW_BEFORE_DAYS: u64 = 365;
/// Subject of every mesh CA. The issuer of an instance certificate is rebuilt from this name
/// and the CA key, so it must never change; meshes are told apart by their keys.
const CA_NAME: &str = "pimesh mesh CA";
/// Prefix of the URI SAN naming the instance.
pub const UUID_URI_PREFIX: &str = "pimesh:";

/// Why TLS material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] SecretError),
    #[error("{} is damaged ({why}); remove it and restart to make a new one (a new CA means every other member must be invited again)", file.display())]
    Damaged { file: PathBuf, why: String },
    #[error("cannot make a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot set up TLS client certificate checks: {0}")]
    Verifier(String),
}

/// The ring provider every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of `bytes`, lowercase hex: how a token names the mesh CA.
pub fn fingerprint(bytes: &[u8]) -> String {
    secret::to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The mesh's certificate authority.
#[derive(Clone)]
pub struct MeshCa {
    /// The certificate, PEM, exactly as created (its fingerprint identifies the mesh's CA).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshCa({})", self.fingerprint())
    }
}

impl MeshCa {
    /// A new CA with a fresh key, valid until the year 4096 (rcgen's default): a mesh lives
    /// as long as its house, and its members would all have to be invited again for a new one.
    pub fn create() -> Result<MeshCa, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params().self_signed(&key)?;
        Ok(MeshCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }

    /// A CA from its PEM texts (as a join hands them over); checks that the key is the
    /// certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<MeshCa, String> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("not a PEM key: {e}"))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert_der)
            .map_err(|e| format!("not a CA certificate: {e:?}"))?;
        let spki = key.public_key_der();
        // The anchor's SPKI is the inner SEQUENCE contents, without its own header.
        if !spki.ends_with(&anchor.subject_public_key_info) {
            return Err("the key is not the certificate's".into());
        }
        Ok(MeshCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
        })
    }

    /// The CA of the instance in `dir`, or None if it has none yet.
    pub fn load(dir: &Path) -> Result<Option<MeshCa>, TlsError> {
        let staged = dir.join(CA_STAGED_FILE);
        if let Some(text) = read(&staged)? {
            let pair = serde_json::from_str::<(String, String)>(&text).ok();
            if let Some(ca) = pair.and_then(|(cert, key)| MeshCa::from_pem(&cert, &key).ok()) {
                ca.install(dir)?;
                return Ok(Some(ca));
            }
            remove(&staged)?;
        }
        let (cert_file, key_file) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let (Some(cert), Some(key)) = (read(&cert_file)?, read(&key_file)?) else {
            return Ok(None);
        };
        MeshCa::from_pem(&cert, &key)
            .map(Some)
            .map_err(|why| TlsError::Damaged {
                file: cert_file,
                why,
            })
    }

    /// The CA of the instance in `dir`, created if it has none: at the first start of an
    /// instance, and at the first start of one from before TLS.
    pub fn load_or_create(dir: &Path) -> Result<MeshCa, TlsError> {
        if let Some(ca) = MeshCa::load(dir)? {
            return Ok(ca);
        }
        let ca = MeshCa::create()?;
        ca.save(dir)?;
        tracing::info!(fingerprint = %ca.fingerprint(), "created the mesh's certificate authority");
        Ok(ca)
    }

    /// Writes both files to `dir`. The pair goes into one staged file first (owner-only, one
    /// atomic rename), so a crash between the two files' renames never leaves a certificate
    /// with another CA's key: the next [`load`](Self::load) finishes the install.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let pair = serde_json::to_string(&(&self.cert_pem, &self.key_pem)).unwrap_or_default();
        secret::write_private(&dir.join(CA_STAGED_FILE), &pair)?;
        self.install(dir)
    }

    /// Writes the key (owner-only) and the certificate, then drops the staged pair.
    fn install(&self, dir: &Path) -> Result<(), TlsError> {
        secret::write_private(&dir.join(CA_KEY_FILE), &self.key_pem)?;
        write_public(&dir.join(CA_CERT_FILE), &self.cert_pem)?;
        remove(&dir.join(CA_STAGED_FILE))?;
        Ok(())
    }

    /// SHA-256 of the certificate (DER), hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A certificate for `names`, valid from 1975 (a Pi without a clock starts in 1970) for
    /// [`CERT_DAYS`] from `now`.
    pub fn issue(&self, names: &Names, now: UnixTime) -> Result<Identity, TlsError> {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem)?;
        let issuer = ca_params().self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("pimesh {}", names.uuid));
        params.subject_alt_names = names.sans()?;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&secret::random::<16>()));
        let now = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        params.not_after = now + time::Duration::days(CERT_DAYS);
        let cert = params.signed_by(&key, &issuer, &ca_key)?;
        Identity::from_pem(&cert.pem(), &key.serialize_pem()).map_err(|why| TlsError::Damaged {
            file: PathBuf::from(CERT_FILE),
            why,
        })
    }
}

/// The parameters of every mesh CA (see [`CA_NAME`]).
fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// An instance's certificate chain (its own, then the CA's) and key.
pub struct Identity {
    /// The instance certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The instance certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", fingerprint(&self.cert_der))
    }
}

impl Identity {
    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, String> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("not a PEM key: {e}"))?;
        Ok(Identity {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
        })
    }

    /// The private key, DER.
    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Damaged {
            file: PathBuf::from(KEY_FILE),
            why: e.to_string(),
        })
    }

    /// The chain presented to peers: this certificate, then the CA's, so a joiner can find
    /// the CA its invitation names.
    fn chain(&self, ca: &MeshCa) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone(), ca.cert_der.clone()]
    }

    /// Whether this certificate was issued by `ca`, is valid at `at` and names every one of
    /// `names`.
    pub fn covers(&self, ca: &MeshCa, names: &Names, at: UnixTime) -> bool {
        let (Ok(anchor), Ok(cert)) = (
            webpki::anchor_from_trusted_cert(&ca.cert_der),
            webpki::EndEntityCert::try_from(&self.cert_der),
        ) else {
            return false;
        };
        let algs = provider().signature_verification_algorithms.all;
        cert.verify_for_usage(
            algs,
            &[anchor],
            &[],
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok()
            && names
                .server_names()
                .iter()
                .all(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
    }

    /// The instance certificate in `dir`, issued again by `ca` unless it covers `names` for
    /// at least [`RENEW_BEFORE_DAYS`] from `now`.
    pub fn load_or_issue(
        dir: &Path,
        ca: &MeshCa,
        names: &Names,
        now: UnixTime,
    ) -> Result<Identity, TlsError> {
        let (cert_file, key_file) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let later = UnixTime::since_unix_epoch(Duration::from_secs(
            now.as_secs() + RENEW_BEFORE_DAYS * 24 * 3600,
        ));
        if let (Some(cert), Some(key)) = (read(&cert_file)?, read(&key_file)?) {
            if let Ok(id) = Identity::from_pem(&cert, &key) {
                if id.covers(ca, names, later) {
                    return Ok(id);
                }
            }
        }
        let id = ca.issue(names, now)?;
        secret::write_private(&key_file, &id.key_pem)?;
        write_public(&cert_file, &id.cert_pem)?;
        tracing::info!(names = ?names.dns, addresses = ?names.ips, "issued this instance's TLS certificate");
        Ok(id)
    }
}

/// Everything TLS of a running instance: the CA and its own identity.
#[derive(Debug)]
pub struct Material {
    /// The mesh CA.
    pub ca: MeshCa,
    /// This instance's certificate.
    pub identity: Identity,
}

impl Material {
    /// The CA and instance certificate of `dir`, made or renewed as needed (see the module).
    pub fn load(dir: &Path, names: &Names) -> Result<Material, TlsError> {
        let ca = MeshCa::load_or_create(dir)?;
        let identity = Identity::load_or_issue(dir, &ca, names, UnixTime::now())?;
        Ok(Material { ca, identity })
    }

    /// The front door's configuration: our chain; client certificates optional but, when
    /// presented, issued by the mesh CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der.clone())?;
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_single_cert(self.identity.chain(&self.ca), self.identity.key()?)?;
        Ok(Arc::new(config))
    }

    /// The web page's configuration: our chain, HTTP/1.1 by ALPN, and no request for a
    /// client certificate (a browser holding some would ask its user to pick one).
    pub fn web_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.identity.chain(&self.ca), self.identity.key()?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A mesh link's configuration: the server must chain to the mesh CA; we present our
    /// own certificate.
    pub fn mesh_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let verifier = verify::MeshVerifier::trusting(self.ca.cert_der.clone());
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.identity.chain(&self.ca), self.identity.key()?)?;
        Ok(Arc::new(config))
    }
}

/// A client configuration that trusts only the CA certificate in `ca_pem` and checks the
/// server's name as any TLS client does (the CLI's `--cafile`).
pub fn client_config_for_ca(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration for a join: the server must present a chain holding a CA whose
/// fingerprint is `pin` (from the invitation) and be issued by it.
pub fn pinned_client_config(pin: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verify::MeshVerifier::pinned(pin)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The front door's current server configuration; a join replaces it with one from the
/// mesh's CA while connections keep being accepted.
#[derive(Debug, Default)]
pub struct ServerSlot(RwLock<Option<Arc<rustls::ServerConfig>>>);

impl ServerSlot {
    /// A slot holding `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> ServerSlot {
        ServerSlot(RwLock::new(Some(config)))
    }

    /// Replaces the configuration for connections accepted from now on.
    pub fn set(&self, config: Arc<rustls::ServerConfig>) {
        if let Ok(mut c) = self.0.write() {
            *c = Some(config);
        }
    }

    /// The configuration for a new connection.
    pub fn get(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.0.read().ok().and_then(|c| c.clone())
    }
}

/// Reads a text file, or None if it does not exist.
fn read(path: &Path) -> Result<Option<String>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io {
            file: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes a file that may not exist.
fn remove(path: &Path) -> Result<(), SecretError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SecretError::Io {
            file: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes a certificate (public) atomically: temp file, fsync, rename; readable by all.
fn write_public(path: &Path, text: &str) -> Result<(), SecretError> {
    secret::write_private(path, text)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|source| {
        SecretError::Io {
            file: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests;
