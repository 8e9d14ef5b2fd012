//! The CA, instance certificates and the verifiers, without sockets (rustls connections
//! driven in memory).

use super::*;
use rustls::pki_types::ServerName;
use uuid::Uuid;

fn names(ips: &[&str]) -> Names {
    Names::new(
        Uuid::from_u128(7),
        vec!["localhost".into(), "pi-kitchen".into()],
        ips.iter().map(|i| i.parse().unwrap()).collect(),
    )
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn days(n: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(now().as_secs() + n * 24 * 3600))
}

#[test]
fn an_issued_certificate_covers_its_names_until_it_nears_expiry() {
    let ca = MeshCa::create().unwrap();
    let n = names(&["127.0.0.1", "192.168.1.20"]);
    let id = ca.issue(&n, now()).unwrap();
    assert!(id.covers(&ca, &n, now()));
    assert!(id.covers(&ca, &n, days(RENEW_BEFORE_DAYS)));
    assert!(!id.covers(&ca, &n, days(CERT_DAYS as u64 + 1)), "expired");
    let moved = names(&["127.0.0.1", "192.168.1.21"]);
    assert!(!id.covers(&ca, &moved, now()), "a new address is not named");
    let renamed = Names::new(n.uuid, vec!["pi-hall".into()], n.ips.clone());
    assert!(
        !id.covers(&ca, &renamed, now()),
        "a new host name is not named"
    );
    let other = MeshCa::create().unwrap();
    assert!(!id.covers(&other, &n, now()), "issued by another CA");
}

#[test]
fn load_or_issue_keeps_a_good_certificate_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path()).unwrap();
    let again = MeshCa::load_or_create(dir.path()).unwrap();
    assert_eq!(ca.fingerprint(), again.fingerprint(), "the CA is made once");
    let n = names(&["127.0.0.1"]);
    let first = Identity::load_or_issue(dir.path(), &ca, &n, now()).unwrap();
    let same = Identity::load_or_issue(dir.path(), &ca, &n, now()).unwrap();
    assert_eq!(first.cert_der, same.cert_der, "still good: kept");
    let moved = names(&["127.0.0.1", "10.0.0.9"]);
    let renewed = Identity::load_or_issue(dir.path(), &ca, &moved, now()).unwrap();
    assert_ne!(
        renewed.cert_der, first.cert_der,
        "new address: issued again"
    );
    assert!(renewed.covers(&ca, &moved, now()));
    let near_end = UnixTime::since_unix_epoch(Duration::from_secs(
        now().as_secs() + (CERT_DAYS as u64 - 30) * 24 * 3600,
    ));
    let late = Identity::load_or_issue(dir.path(), &ca, &moved, near_end).unwrap();
    assert_ne!(late.cert_der, renewed.cert_der, "near expiry: issued again");
    let other = MeshCa::create().unwrap();
    let rejoined = Identity::load_or_issue(dir.path(), &other, &moved, now()).unwrap();
    assert!(
        rejoined.covers(&other, &moved, now()),
        "new CA: issued again"
    );
    use std::os::unix::fs::PermissionsExt;
    for (file, mode) in [(CA_KEY_FILE, 0o600), (KEY_FILE, 0o600), (CERT_FILE, 0o644)] {
        let m = std::fs::metadata(dir.path().join(file)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, mode, "{file}");
    }
}

#[test]
fn a_ca_install_cut_short_is_finished_at_the_next_load() {
    let dir = tempfile::tempdir().unwrap();
    let old = MeshCa::load_or_create(dir.path()).unwrap();
    let new = MeshCa::create().unwrap();
    new.save(dir.path()).unwrap();
    assert!(!dir.path().join(CA_STAGED_FILE).exists());
    // As if the power went after the staged pair and the key, before the certificate.
    let pair = serde_json::to_string(&(&new.cert_pem, &new.key_pem)).unwrap();
    std::fs::write(dir.path().join(CA_STAGED_FILE), pair).unwrap();
    std::fs::write(dir.path().join(CA_CERT_FILE), &old.cert_pem).unwrap();
    let loaded = MeshCa::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.fingerprint(), new.fingerprint());
    let again = MeshCa::load(dir.path()).unwrap().unwrap();
    assert_eq!(again.fingerprint(), new.fingerprint());
    assert!(!dir.path().join(CA_STAGED_FILE).exists());
}

#[test]
fn a_ca_is_refused_with_another_ca_s_key() {
    let a = MeshCa::create().unwrap();
    let b = MeshCa::create().unwrap();
    assert!(MeshCa::from_pem(&a.cert_pem, &a.key_pem).is_ok());
    let err = MeshCa::from_pem(&a.cert_pem, &b.key_pem).unwrap_err();
    assert!(err.contains("not the certificate's"), "{err}");
}

/// Runs a TLS handshake between `client` and `server` in memory.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<rustls::ServerConnection, rustls::Error> {
    let mut c =
        rustls::ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s);
        }
    }
    panic!("handshake did not finish");
}

fn material(ca: &MeshCa, ips: &[&str]) -> Material {
    Material {
        ca: ca.clone(),
        identity: ca.issue(&names(ips), now()).unwrap(),
    }
}

#[test]
fn a_pinned_join_accepts_only_the_invitation_s_ca() {
    let ca = MeshCa::create().unwrap();
    let server = material(&ca, &["127.0.0.1"]).server_config().unwrap();
    let pinned = pinned_client_config(&ca.fingerprint()).unwrap();
    // The invitation may name the inviter by an address its certificate does not carry.
    assert!(handshake(pinned.clone(), server.clone(), "10.9.9.9").is_ok());
    let other = MeshCa::create().unwrap();
    let wrong_pin = pinned_client_config(&other.fingerprint()).unwrap();
    let err = handshake(wrong_pin, server, "127.0.0.1").unwrap_err();
    assert!(
        err.to_string()
            .contains("NoCaWithTheInvitationsFingerprint"),
        "{err}"
    );
    // A server of another mesh that presents the pinned CA but is not issued by it.
    let forger = Material {
        ca: ca.clone(),
        identity: other.issue(&names(&["127.0.0.1"]), now()).unwrap(),
    };
    let forged = forger.server_config().unwrap();
    assert!(handshake(pinned, forged, "127.0.0.1").is_err());
}

#[test]
fn mesh_links_are_mutually_authenticated_by_the_mesh_ca() {
    let ca = MeshCa::create().unwrap();
    let a = material(&ca, &["127.0.0.1"]);
    let b = material(&ca, &["127.0.0.1"]);
    let server = a.server_config().unwrap();
    let link = b.mesh_client_config().unwrap();
    let s = handshake(link, server.clone(), "192.0.2.7").unwrap();
    assert!(s.peer_certificates().is_some(), "the member's certificate");
    // A client without a certificate is let in (users log in with a password) but shows none.
    let user = client_config_for_ca(ca.cert_pem.as_bytes()).unwrap();
    let s = handshake(user, server.clone(), "127.0.0.1").unwrap();
    assert!(s.peer_certificates().is_none());
    // A client certificate of another mesh is refused.
    let stranger = material(&MeshCa::create().unwrap(), &["127.0.0.1"]);
    assert!(handshake(
        stranger.mesh_client_config().unwrap(),
        server.clone(),
        "127.0.0.1"
    )
    .is_err());
    // And a member does not accept another mesh's server.
    assert!(handshake(
        b.mesh_client_config().unwrap(),
        stranger.server_config().unwrap(),
        "127.0.0.1"
    )
    .is_err());
}

#[test]
fn a_cafile_client_checks_the_server_name() {
    let ca = MeshCa::create().unwrap();
    let server = material(&ca, &["127.0.0.1"]).server_config().unwrap();
    let client = client_config_for_ca(ca.cert_pem.as_bytes()).unwrap();
    assert!(handshake(client.clone(), server.clone(), "localhost").is_ok());
    assert!(handshake(client.clone(), server.clone(), "127.0.0.1").is_ok());
    assert!(handshake(client, server, "elsewhere.example").is_err());
    assert!(client_config_for_ca(b"hello").is_err());
}

#[test]
fn the_web_page_speaks_http_1_1_and_asks_no_client_certificate() {
    let ca = MeshCa::create().unwrap();
    let web = material(&ca, &["127.0.0.1"]).web_server_config().unwrap();
    assert_eq!(web.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let mut browser = (*client_config_for_ca(ca.cert_pem.as_bytes()).unwrap()).clone();
    browser.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let s = handshake(Arc::new(browser), web, "localhost").unwrap();
    assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A client holding a certificate shows it to the front door, which asks for one, but
    // is never asked by the web page.
    let m = material(&ca, &["127.0.0.1"]);
    let holder = m.mesh_client_config().unwrap();
    let door = handshake(holder.clone(), m.server_config().unwrap(), "localhost").unwrap();
    assert!(door.peer_certificates().is_some());
    let page = handshake(holder, m.web_server_config().unwrap(), "localhost").unwrap();
    assert!(
        page.peer_certificates().is_none(),
        "the page asked for a certificate"
    );
}
