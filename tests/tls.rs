//! MQTT over TLS with the mesh's own CA: Debian's mosquitto clients with `pimesh ca`,
//! plaintext and strangers on the TLS port, a mesh with no plaintext port at all, and the
//! member certificate a TLS login needs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// `pimesh ca` of `a`, saved in `dir`.
fn ca_file(a: &Agent, dir: &Path) -> PathBuf {
    let out = a.cli(&["ca"]);
    assert!(out.status.success(), "pimesh ca: {}", text(&out.stderr));
    let pem = text(&out.stdout);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let path = dir.join("mesh-ca.pem");
    std::fs::write(&path, pem).expect("write the CA file");
    path
}

/// `mosquitto_pub` (`tls`: the CA file, or none for plaintext) to localhost.
fn mosquitto_pub_tls(port: u16, login: &(String, String), cafile: Option<&Path>) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    if let Some(ca) = cafile {
        cmd.arg("--cafile").arg(ca);
    }
    cmd.args(["-h", "localhost", "-p", &port.to_string()])
        .args(["-u", &login.0, "-P", &login.1])
        .args(["-q", "1", "-t", "pimesh/relay-1/set", "-m", "ON"])
        .output()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed")
}

fn add_user(a: &Agent, name: &str) -> (String, String) {
    let out = a.cli(&["user", "add", name]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    (name.to_string(), text(&out.stdout).trim().to_string())
}

fn log_of(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap_or_default()
}

#[test]
fn mosquitto_clients_with_the_mesh_ca_switch_a_relay_over_tls() {
    let a = Agent::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_file(&a, tmp.path());
    let ha = add_user(&a, "homeassistant");
    let tls = a.tls_port();
    assert!(
        (8883..8983).contains(&tls),
        "the TLS port {tls} is the first free one from 8883"
    );
    let out = mosquitto_pub_tls(tls, &ha, Some(&ca));
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("relay-1 pin high", || a.pin(17).as_deref() == Some("1"));
    let out = Command::new("mosquitto_sub")
        .arg("--cafile")
        .arg(&ca)
        .args(["-h", "localhost", "-p", &tls.to_string()])
        .args(["-u", &ha.0, "-P", &ha.1])
        .args(["-t", "pimesh/relay-1", "-C", "1", "-W", "15"])
        .output()
        .expect("mosquitto_sub");
    let state: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the retained state over TLS");
    assert_eq!(state["state"], "ON");
    // The CLI from another machine: --via with --cafile.
    let via = format!("localhost:{tls}");
    let ca_s = ca.to_string_lossy().to_string();
    let out = cli(&["get", "relay-1", "--via", &via, "--cafile", &ca_s, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"ON\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn plaintext_and_foreign_cas_are_refused_on_the_tls_port() {
    let a = Agent::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_file(&a, tmp.path());
    let ha = add_user(&a, "homeassistant");
    let tls = a.tls_port();
    let out = mosquitto_pub_tls(tls, &ha, None);
    assert!(!out.status.success(), "plaintext MQTT on the TLS port");
    wait_until("the refused handshake logged", || {
        log_of(&a).contains("TLS handshake failed")
    });
    let other = tmp.path().join("other-ca.pem");
    let stranger = pimesh::tls::MeshCa::create().unwrap();
    std::fs::write(&other, &stranger.cert_pem).unwrap();
    let out = mosquitto_pub_tls(tls, &ha, Some(&other));
    assert!(!out.status.success(), "a server the other CA did not issue");
    assert!(
        text(&out.stderr).contains("certificate verify failed")
            || text(&out.stderr).contains("TLS"),
        "{}",
        text(&out.stderr)
    );
    // The agent lives and still serves TLS and plaintext.
    assert!(mosquitto_pub_tls(tls, &ha, Some(&ca)).status.success());
    mosquitto_pub(a.port, "pimesh/relay-2/set", "ON");
    wait_until("relay-2 pin high", || a.pin(27).as_deref() == Some("1"));
}

#[test]
fn a_mesh_without_plaintext_ports_forms_over_tls_and_forwards_commands() {
    let a = start_node("alpha", &node_config("a"), &["--no-plaintext"]);
    let b = start_node(
        "beta",
        &node_config("b"),
        &["--no-plaintext", "--peer", &a.addr()],
    );
    let c = start_node(
        "gamma",
        &node_config("c"),
        &["--no-plaintext", "--peer", &b.addr()],
    );
    for n in [&a, &b, &c] {
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(n.dir.join("agent.json")).unwrap())
                .unwrap();
        assert!(
            info.get("port").is_none() && info.get("mqtt5-port").is_none(),
            "{info}"
        );
        assert_eq!(info["tls-port"], n.port);
    }
    for (n, others) in [
        (&a, ["beta", "gamma"]),
        (&b, ["alpha", "gamma"]),
        (&c, ["alpha", "beta"]),
    ] {
        for other in others {
            wait_until("fully connected mesh", || n.peer_status(other) == "online");
        }
    }
    // The join handed alpha's CA to both.
    let ca = std::fs::read_to_string(a.dir.join("ca.pem")).unwrap();
    assert_eq!(std::fs::read_to_string(b.dir.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read_to_string(c.dir.join("ca.pem")).unwrap(), ca);
    // A command on gamma runs on alpha, through the TLS links.
    let out = c.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
    assert!(text(&out.stdout).contains("alpha"), "{}", text(&out.stdout));
}

#[test]
fn mesh_links_in_the_clear_still_join_over_tls() {
    let clear = format!("{}[mesh]\ntls = false\n", node_config("a"));
    let a = start_node("alpha", &clear, &[]);
    let clear_b = format!("{}[mesh]\ntls = false\n", node_config("b"));
    let b = start_node("beta", &clear_b, &["--peer", &a.addr()]);
    wait_until("beta online at alpha", || a.peer_status("beta") == "online");
    wait_until("alpha online at beta", || {
        b.peer_status("alpha") == "online"
    });
    // The peers are known by their plaintext ports; the join (TLS to such a port) still
    // handed over the CA.
    assert!(
        b.peers().iter().any(|p| p["addr"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!(":{}", a.port)))),
        "{:?}",
        b.peers()
    );
    assert_eq!(
        std::fs::read_to_string(b.dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(a.dir.join("ca.pem")).unwrap()
    );
    let out = b.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
}

#[test]
fn an_instance_from_before_tls_joins_again_to_take_the_mesh_ca() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta online at alpha", || a.peer_status("beta") == "online");
    // Beta as it was before TLS: a member (mesh.json) without a CA or certificate.
    b.stop();
    for file in ["ca.pem", "ca.key", "tls.pem", "tls.key", "test-agent.log"] {
        std::fs::remove_file(b.dir.join(file)).unwrap();
    }
    let token = invite(&a.dir, None);
    let config = b.dir.parent().unwrap().join("pimesh.toml");
    let config = config.to_string_lossy();
    let addr = a.addr();
    let again = Agent::start_in(
        &b.dir,
        b.port,
        &[
            "--name", "beta", "--config", &config, "--peer", &addr, "--join", &token,
        ],
    );
    let log = || std::fs::read_to_string(again.dir.join("test-agent.log")).unwrap_or_default();
    wait_until("beta made a CA of its own, then took alpha's", || {
        log().contains("created the mesh's certificate authority")
            && log().contains("took the mesh's certificate authority")
    });
    assert_eq!(
        std::fs::read_to_string(again.dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(a.dir.join("ca.pem")).unwrap()
    );
    wait_until("alpha online at beta", || {
        again.peer_status("alpha") == "online"
    });
    let out = again.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("alpha's light on", || a.pin(17).as_deref() == Some("1"));
}

/// Connects to `port` with `login` and returns how the CONNECT ended.
fn connack(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    login: (String, String),
) -> Result<(), String> {
    use rumqttc::{Client, Event, MqttOptions, Packet, TlsConfiguration, Transport};
    let mut opts = MqttOptions::new(format!("test-{}", free_port()), "127.0.0.1", port);
    opts.set_credentials(login.0, login.1);
    if let Some(tls) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    let (_client, mut connection) = Client::new(opts, 10);
    let end = std::time::Instant::now() + DEADLINE;
    while std::time::Instant::now() < end {
        match connection.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
    Err("no answer".into())
}

/// A TLS client trusting the mesh CA of `dir`, presenting `dir`'s own certificate if `cert`.
fn tls_client(dir: &Path, cert: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(pimesh::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if cert {
        let own = CertificateDer::from_pem_file(dir.join("tls.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
        builder.with_client_auth_cert(vec![own, ca], key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

#[test]
fn a_member_login_over_tls_needs_the_mesh_certificate() {
    let a = Agent::start(&[]);
    let tls = a.tls_port();
    let refused = connack(tls, Some(tls_client(&a.dir, false)), member_login(&a.dir));
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("NotAuthorized")),
        "{refused:?} {}",
        log_of(&a)
    );
    // The same kind of proof with the certificate, or in the clear, is let in.
    assert_eq!(
        connack(tls, Some(tls_client(&a.dir, true)), member_login(&a.dir)),
        Ok(())
    );
    assert_eq!(connack(a.port, None, member_login(&a.dir)), Ok(()));
    // A user needs no certificate.
    let ha = add_user(&a, "homeassistant");
    assert_eq!(connack(tls, Some(tls_client(&a.dir, false)), ha), Ok(()));
}
