//! How an instance checks the server at the other end of a mesh link or a join.
//!
//! A mesh link's server must present a certificate issued by the mesh CA. Its name is not
//! checked: every member holds the CA key and could issue itself a certificate for any name,
//! so a name proves nothing among members, while a check would break links to a Pi reached
//! at an address its certificate does not name yet (a second interface, a DHCP change before
//! its restart). Who the server is, the link learns from its broker's retained hello, as
//! without TLS. What TLS adds here is that nobody outside the mesh can read or change a link.
//!
//! A joiner has no CA yet, only the SHA-256 fingerprint of it from the invitation: the server
//! must present, after its own certificate, a CA certificate with that fingerprint, and its
//! own certificate must be issued by it. Names are not checked for the same reason, and the
//! invitation's addresses may name the inviting Pi in any way the person who copied it chose.

use super::fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// Which CA a server must chain to.
#[derive(Clone, Debug)]
enum Anchor {
    /// The mesh CA we hold.
    Ca(CertificateDer<'static>),
    /// The CA whose SHA-256 fingerprint (hex) an invitation names, found in the presented chain.
    Pinned(String),
}

/// Checks a server's chain against the mesh CA, without its name (see the module).
#[derive(Debug)]
pub struct MeshVerifier {
    anchor: Anchor,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshVerifier {
    /// Servers issued by `ca`.
    pub fn trusting(ca: CertificateDer<'static>) -> MeshVerifier {
        MeshVerifier {
            anchor: Anchor::Ca(ca),
            algorithms: super::provider().signature_verification_algorithms,
        }
    }

    /// Servers issued by the CA with fingerprint `pin`, which they present themselves.
    pub fn pinned(pin: &str) -> MeshVerifier {
        MeshVerifier {
            anchor: Anchor::Pinned(pin.trim().to_ascii_lowercase()),
            algorithms: super::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for MeshVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let ca = match &self.anchor {
            Anchor::Ca(ca) => ca.clone(),
            Anchor::Pinned(pin) => intermediates
                .iter()
                .find(|c| fingerprint(c) == *pin)
                .map(|c| c.clone().into_owned())
                .ok_or_else(|| {
                    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                        std::sync::Arc::new(NoCaWithTheInvitationsFingerprint),
                    )))
                })?,
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            &[],
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server presented no CA with the invitation's fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("the server presented no CA certificate with the invitation's fingerprint: it is not a member of the invitation's mesh")]
struct NoCaWithTheInvitationsFingerprint;
