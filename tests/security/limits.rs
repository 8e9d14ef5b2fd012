//! Limits that keep one client from hurting the others: idle and flooding connections, oversized
//! packets and client ids, and the number of retained messages users may keep.

use super::{add_user, log_of, pub_with, raw_connect};
use crate::support::*;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn floods_lock_out_neither_the_cli_nor_other_clients() {
    let a = Agent::start(&[]);
    let password = add_user(&a, "flood");
    // Idle connections that never send CONNECT, from another address: at most 16 are kept,
    // and they do not hold up anyone else.
    let idle: Vec<socket2::Socket> = (0..100)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&"127.0.0.2:0".parse::<SocketAddr>().ok()?.into())
                .ok()?;
            s.connect(&SocketAddr::from(([127, 0, 0, 1], a.port)).into())
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(idle.len(), 100);
    let start = Instant::now();
    assert_eq!(a.state("relay-1"), "OFF");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the CLI waited behind idle connections"
    );
    drop(idle);
    // Authenticated but idle user connections from one address take the users' slots only.
    let mut users = Vec::new();
    let mut refused_busy = false;
    for i in 0..220 {
        let (s, code) = raw_connect(
            "127.0.0.3",
            a.port,
            &format!("idle-{i}"),
            Some(("flood", &password)),
        );
        match code {
            Some(0) => users.push(s),
            Some(3) => {
                refused_busy = true;
                break;
            }
            other => panic!("connection {i}: CONNACK {other:?}"),
        }
    }
    assert!(
        refused_busy,
        "user slots were not limited ({} connected)",
        users.len()
    );
    assert_eq!(users.len(), 200);
    assert!(
        a.cli(&["set", "relay-1", "on"]).status.success(),
        "the local CLI still gets in"
    );
    drop(users);

    // One user floods commands; another user's command is still answered at once.
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(if i % 2 == 0 { "ON\n" } else { "OFF\n" });
    }
    let mut flood = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &a.port.to_string(),
            "-u",
            "flood",
            "-P",
            &password,
        ])
        .args(["-t", "pimesh/relay-3/set", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    flood
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    wait_until("the flood is slowed down", || {
        log_of(&a).contains("slowing it down")
    });
    let start = Instant::now();
    let out = Command::new(bin())
        .args([
            "set",
            "relay-2",
            "on",
            "--via",
            &format!("127.0.0.1:{}", a.port),
        ])
        .env("PIMESH_USER", "flood")
        .env("PIMESH_PASSWORD", &password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "another client waited {:?}",
        start.elapsed()
    );
    let _ = flood.kill();
    let _ = flood.wait();
}

#[test]
fn oversized_packets_and_client_ids_are_refused_and_the_agent_lives() {
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    let (_, code) = raw_connect("127.0.0.1", a.port, &"x".repeat(200), Some((&u, &p)));
    assert_eq!(code, Some(2), "identifier rejected");
    let password = add_user(&a, "big");
    let big = a.dir.join("big-payload");
    std::fs::write(&big, "x".repeat(300 * 1024)).unwrap();
    let big = big.to_string_lossy().to_string();
    let (ok, _) = pub_with(&[
        "-p",
        &a.port.to_string(),
        "-u",
        "big",
        "-P",
        &password,
        "-q",
        "1",
        "-t",
        "x/big",
        "-f",
        &big,
    ]);
    assert!(!ok, "a 300 KiB publish from a user is refused");
    wait_until("the refusal names the size", || {
        log_of(&a).contains("over the limit")
    });
    assert_eq!(a.state("relay-1"), "OFF", "the agent still answers");
}

#[test]
fn retained_messages_of_users_are_bounded_and_deleting_one_makes_room() {
    let config = format!("{}[broker]\nmax-retained = 3\n", node_config("a"));
    let a = start_node("alpha", &config, &[]);
    let password = add_user(&a, "ha");
    let port = a.port.to_string();
    let retain = |topic: &str, message: &str| {
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-V", "mqttv5", "-q", "1", "-r", "-t", topic,
            "-m", message,
        ])
    };
    for n in 1..=3 {
        assert!(retain(&format!("home/r{n}"), "kept").0);
    }
    retain("home/r4", "too many");
    wait_until("the refusal names the limit", || {
        log_of(&a).contains("\"home/r4\" is not kept: 3 retained topics")
    });
    // Deleting one (an empty retained message) makes room for another.
    assert!(
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-q", "1", "-r", "-t", "home/r1", "-n",
        ])
        .0
    );
    assert!(retain("home/r5", "kept").0);

    // A new subscriber gets exactly what was kept, then a live marker.
    let sub = Subscriber::new_as(a.port, "home/#", ("ha".into(), password.clone()));
    assert!(
        pub_with(&[
            "-p", &port, "-u", "ha", "-P", &password, "-q", "1", "-t", "home/end", "-m", "x"
        ])
        .0
    );
    let mut got = sub.take(4);
    assert_eq!(got.pop().as_deref(), Some("home/end x"), "{got:?}");
    got.sort();
    assert_eq!(got, ["home/r2 kept", "home/r3 kept", "home/r5 kept"]);
    // The agent's own retained states are not users' and still work.
    assert_eq!(a.state("a-light"), "OFF");
}
