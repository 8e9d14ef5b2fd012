//! MQTT over WebSocket, as a browser client uses it: Debian's paho-mqtt with
//! `transport="websockets"` logs in as a user, subscribes and switches a relay, over `ws` and
//! over `wss` with the mesh's CA; bad credentials are refused; broken handshakes and frames
//! end their connection and never the agent.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use support::*;

/// The WebSocket port the agent advertises in its `agent.json`.
fn ws_port(a: &Agent) -> u16 {
    let info = std::fs::read_to_string(a.dir.join("agent.json")).expect("agent.json");
    let info: serde_json::Value = serde_json::from_str(&info).expect("JSON");
    info["ws-port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("agent.json names the ws-port")
}

/// Runs `tests/support/ws_client.py` with Debian's python3-paho-mqtt (`make test` installs
/// it); returns its stdout, or panics with its stderr.
fn paho(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ws_client.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("/usr/bin/python3 with python3-paho-mqtt (apt) must be installed");
    assert!(
        out.status.success(),
        "paho over WebSocket {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// A WebSocket connection after a handshake offering `subprotocol`; the server's answer head.
fn handshake(port: u16, subprotocol: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// A client frame: FIN, `opcode`, masked (unless `masked` is false) `payload`, with a length
/// field that may claim more than is sent.
fn frame(opcode: u8, payload: &[u8], claimed: u64, masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    if claimed < 126 {
        f.push(mask_bit | claimed as u8);
    } else if claimed <= u64::from(u16::MAX) {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(claimed as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&claimed.to_be_bytes());
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if masked {
        f.extend_from_slice(&key);
    }
    f.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
    );
    f
}

/// Whether the server closes `s` within the deadline (reads end, or fail with a reset).
fn closed(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn a_browser_client_logs_in_over_websocket_and_switches_a_relay() {
    let a = Agent::start(&[]);
    let port = ws_port(&a);
    let out = a.cli(&["user", "add", "browser"]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    let p = port.to_string();

    assert_eq!(paho(&[&p, "browser", &password, "switch", "relay-1"]), "ok");
    assert_eq!(a.pin(17).as_deref(), Some("1"), "the sim relay switched");

    // Over TLS on the same port, with the mesh's CA (`pimesh ca`).
    let ca = a.dir.join("ca.pem");
    let ca = ca.to_string_lossy();
    assert_eq!(
        paho(&[&p, "browser", &password, "switch", "relay-2", &ca]),
        "ok"
    );
    assert_eq!(a.pin(27).as_deref(), Some("1"), "switched over wss");

    // Bad credentials: refused (3.1.1 return code 4 or 5), and nothing switched.
    let rc = paho(&[&p, "browser", "not-the-password", "refused", "-"]);
    assert!(rc == "4" || rc == "5", "return code {rc}");
    let rc = paho(&[&p, "nobody", "x", "refused", "-"]);
    assert!(rc == "4" || rc == "5", "return code {rc}");
}

#[test]
fn garbage_on_the_websocket_port_ends_only_its_own_connection() {
    let mut a = Agent::start(&[]);
    let port = ws_port(&a);

    // Not HTTP at all; HTTP without an upgrade; a handshake offering only another protocol.
    for junk in [
        &b"\x10\xff\xff\xff\xff\x7f\x00\x04MQTT"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0u8; 4096][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = s.write_all(junk);
        assert!(closed(s), "junk {:?} left the connection open", &junk[..8]);
    }
    let (s, head) = handshake(port, "chat");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(closed(s));

    // A good handshake chooses mqtt; then each broken frame ends its connection.
    let (s, head) = handshake(port, "mqtt");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-protocol: mqtt\r\n"),
        "{head}"
    );
    drop(s);
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "an MQTT packet that is not one",
            frame(2, b"\xff\xff\xff\xff\xff", 5, true),
        ),
        ("a text message", frame(1, b"CONNECT", 7, true)),
        (
            "a frame claiming 2^62 bytes",
            frame(2, b"\x10", 1 << 62, true),
        ),
        (
            "a message over the bound",
            frame(2, &[0x10; 300 * 1024], 300 * 1024, true),
        ),
        ("an unmasked frame", frame(2, b"\x10\x00", 2, false)),
    ];
    for (what, bytes) in cases {
        let (mut s, head) = handshake(port, "mqtt");
        assert!(head.starts_with("HTTP/1.1 101"), "{what}: {head}");
        let _ = s.write_all(&bytes);
        assert!(closed(s), "{what} left the connection open");
    }
    // A handshake that never finishes is dropped at the CONNECT deadline.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /mqtt HTTP/1.1\r\n").unwrap();
    assert!(closed(s), "a half handshake is not kept");

    assert!(a.child.try_wait().unwrap().is_none(), "the agent lives");
    let out = a.cli(&["set", "relay-1", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = a.cli(&["user", "add", "browser"]);
    let password = text(&out.stdout).trim().to_string();
    let p = port.to_string();
    assert_eq!(paho(&[&p, "browser", &password, "switch", "relay-2"]), "ok");
    let log = a.log();
    assert!(
        log.contains("WebSocket handshake failed"),
        "refusals are logged"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn with_plaintext_off_the_websocket_port_takes_wss_only() {
    let a = Agent::start(&["--no-plaintext"]);
    let port = ws_port(&a);
    let (s, head) = handshake(port, "mqtt");
    assert!(head.is_empty(), "a ws handshake was answered: {head}");
    assert!(closed(s));
    let out = a.cli(&["user", "add", "browser"]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_string();
    let ca = a.dir.join("ca.pem");
    let ca = ca.to_string_lossy();
    let p = port.to_string();
    assert_eq!(
        paho(&[&p, "browser", &password, "switch", "relay-1", &ca]),
        "ok"
    );
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    assert!(a.log().contains("takes TLS (wss) only"));
}
