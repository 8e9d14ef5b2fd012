//! Who gets in and what they may do, with real clients against real agents: credentials on
//! every listener and the CLI's credentials here, with the raw CONNECT and `mosquitto_pub`
//! helpers the topic modules share; users and their topic rules, members by invitation only
//! (and the upgrade from a data dir made before any of this existed), limits, and malformed
//! packets in the modules below.

mod support;

#[path = "security/fuzz.rs"]
mod fuzz;
#[path = "security/limits.rs"]
mod limits;
#[path = "security/membership.rs"]
mod membership;
#[path = "security/users.rs"]
mod users;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use support::*;

/// An MQTT 3.1.1 CONNECT, by hand, so tests control every byte.
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if login.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&60u16.to_be_bytes());
    let mut field = |s: &str| {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    field(client_id);
    if let Some((u, p)) = login {
        field(u);
        field(p);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Connects from `source` (any 127.x address) and returns the stream and the CONNACK code
/// (None if the connection closed without one).
fn raw_connect(
    source: &str,
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> (TcpStream, Option<u8>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect(&dst.into()).unwrap();
    let mut stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(&connect_packet(client_id, login)).unwrap();
    let mut ack = [0u8; 4];
    let code = match stream.read_exact(&mut ack) {
        Ok(()) if ack[0] == 0x20 => Some(ack[3]),
        _ => None,
    };
    (stream, code)
}

/// `mosquitto_pub` with its arguments; returns whether it succeeded and what it printed.
fn pub_with(args: &[&str]) -> (bool, String) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1"])
        .args(args)
        .output()
        .expect("mosquitto_pub");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Adds a user on `a` and returns its generated password.
fn add_user(a: &Agent, name: &str) -> String {
    let out = a.cli(&["user", "add", name]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    assert_eq!(password.len(), 24, "a generated password is printed");
    password
}

fn log_of(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap_or_default()
}

#[test]
fn a_v5_publish_with_properties_reaches_a_v311_subscriber_and_the_agent_lives() {
    let a = Agent::start(&[]);
    let sub = Subscriber::new(a.port, "x/#");
    let (u, p) = a.credentials();
    for port in [a.mqtt5_port(), a.port] {
        let (ok, out) = pub_with(&[
            "-V",
            "mqttv5",
            "-p",
            &port.to_string(),
            "-u",
            &u,
            "-P",
            &p,
            "-t",
            "x/a",
            "-m",
            "hi",
            "-D",
            "publish",
            "user-property",
            "a",
            "b",
        ]);
        assert!(ok, "{out}");
        assert_eq!(sub.take(1), ["x/a hi"]);
    }
    assert_eq!(a.state("relay-1"), "OFF", "the agent still answers");
}

#[test]
fn clients_without_valid_credentials_are_refused_on_every_listener() {
    let a = Agent::start(&[]);
    let (u, _) = a.credentials();
    for port in [a.port, a.mqtt5_port()] {
        for version in ["mqttv311", "mqttv5"] {
            let port = port.to_string();
            let base = [
                "-V",
                version,
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "pimesh/relay-1/set",
                "-m",
                "ON",
            ];
            let (ok, out) = pub_with(&base);
            assert!(!ok, "anonymous {version} on {port}: {out}");
            let lower = out.to_lowercase();
            assert!(
                lower.contains("not authori") || lower.contains("bad user name"),
                "{out}"
            );
            let mut wrong = base.to_vec();
            wrong.extend(["-u", &u, "-P", "wrong"]);
            let (ok, out) = pub_with(&wrong);
            assert!(!ok, "wrong password {version} on {port}: {out}");
            let mut user = base.to_vec();
            user.extend(["-u", "nobody", "-P", "whatever"]);
            assert!(!pub_with(&user).0);
        }
    }
    // A hand-made CONNECT gets the documented code: 4 = bad user name or password.
    assert_eq!(raw_connect("127.0.0.1", a.port, "scanner", None).1, Some(4));
    assert_eq!(a.pin(17).as_deref(), Some("0"), "nothing switched");
    let log = log_of(&a);
    assert!(log.contains("client refused"), "{log}");
    assert!(
        log.contains("client=scanner") && log.contains("anonymous clients are not allowed"),
        "{log}"
    );
    assert!(
        log.contains("wrong password for the instance's own credentials"),
        "{log}"
    );
    assert!(log.contains("unknown user \"nobody\""), "{log}");
}

#[test]
fn anonymous_clients_are_let_in_only_when_the_config_says_so() {
    let a = Agent::start(&["--allow-anonymous"]);
    let (ok, out) = pub_with(&[
        "-p",
        &a.port.to_string(),
        "-q",
        "1",
        "-t",
        "pimesh/relay-1/set",
        "-m",
        "ON",
    ]);
    assert!(ok, "{out}");
    wait_until("relay-1 switched by an anonymous client", || {
        a.pin(17).as_deref() == Some("1")
    });
    assert!(
        log_of(&a).contains("allow-anonymous is on"),
        "a warning at start"
    );
}

#[test]
fn a_refused_cli_exits_2_and_says_how_to_authenticate() {
    let a = Agent::start(&[]);
    let out = Command::new(bin())
        .args([
            "set",
            "relay-1",
            "on",
            "--via",
            &format!("127.0.0.1:{}", a.port),
        ])
        .env_remove("PIMESH_USER")
        .env_remove("PIMESH_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("--user") && err.contains("PIMESH_PASSWORD"),
        "{err}"
    );
    // On the agent's own machine no flag is needed: systemd's STATE_DIRECTORY (or the default
    // data dir) leads the CLI to the agent and its credentials.
    let out = Command::new(bin())
        .args(["set", "relay-1", "on"])
        .env("STATE_DIRECTORY", &a.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.dir.join("credentials"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
